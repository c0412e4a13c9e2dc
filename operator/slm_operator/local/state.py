"""The state folder of one local deployment: artifacts, API key, Secret files, logs, run record.

    $SLM_HOME/<name>/            (default ~/.local/share/slm-operator/<name>/), mode 0700
        api-key                  the generated API key (0600), one line; what the engine checks
        secrets/<secret>/<key>   files standing in for the Kubernetes Secrets the spec names
                                 (model.tokenSecretRef, access.apiKeySecretRef, ...)
        models/artifacts/<format>-<type>-<artifact key>/   the quantizer's output (manifest.json last)
        models/hf/               the hub download cache (resumable)
        ollama/                  Ollama's blob store (OLLAMA_MODELS)
        logs/quantize.log, logs/engine.log, logs/gateway.log (ollama)
        run.json                 the running engine: pids, port, URL, engine, artifact
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_HOME = Path.home() / ".local" / "share" / "slm-operator"
KEY_BYTES = 32  # 256-bit keys, URL-safe base64 (as the operator's generated Secret)


def home() -> Path:
    """$SLM_HOME, else ~/.local/share/slm-operator."""
    env = os.environ.get("SLM_HOME")
    return Path(env).expanduser() if env else DEFAULT_HOME


@dataclass(frozen=True)
class StateDir:
    """Paths of one deployment's state folder (nothing is created until ensure())."""

    root: Path

    @classmethod
    def for_name(cls, name: str) -> StateDir:
        return cls(home() / name)

    @property
    def api_key(self) -> Path:
        return self.root / "api-key"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run_file(self) -> Path:
        return self.root / "run.json"

    @property
    def ollama_models(self) -> Path:
        return self.root / "ollama"

    def secret_file(self, secret: str, key: str) -> Path:
        """Where the local stand-in of Kubernetes Secret `secret`, key `key`, is read from."""
        return self.root / "secrets" / secret / key

    def artifact(self, fmt: str, qtype: str, key: str) -> Path:
        """The artifact folder: the same name the operator gives it on the cache PVC."""
        return self.models / "artifacts" / f"{fmt}-{qtype.lower()}-{key}"

    def ensure(self) -> None:
        for d in (self.root, self.models, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)  # keys and logs: the owner only

    def ensure_api_key(self) -> bool:
        """Create the API key file (0600) if missing. True when a key was generated now."""
        if self.api_key.exists() and self.api_key.read_text().strip():
            return False
        self.ensure()
        fd = os.open(self.api_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(KEY_BYTES) + "\n")
        return True

    def read_run(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.run_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write_run(self, record: dict[str, Any]) -> None:
        tmp = self.run_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.run_file)


def all_states() -> list[StateDir]:
    """Every deployment folder under home() that has a run record or an API key."""
    root = home()
    if not root.is_dir():
        return []
    return [StateDir(p) for p in sorted(root.iterdir())
            if p.is_dir() and ((p / "run.json").exists() or (p / "api-key").exists())]
