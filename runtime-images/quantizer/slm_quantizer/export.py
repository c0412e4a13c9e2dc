"""python -m slm_quantizer export: push a finished, gated artifact to S3, a Hub repo or an OCI registry.

The export Job runs this after the quantization Job's quality gate passed: the artifact folder
on the model-cache volume (mounted read-only) is complete (manifest.json present) and every file
is checked against the manifest's sha256 before anything is pushed. Targets (one per
``spec.export[]`` entry of the SLMDeployment):

- ``s3://bucket/prefix``: objects ``<prefix>/<key>/<file>``, manifest.json last (see export_s3.py);
- ``hf://org/name``: a commit on branch ``<key>`` of that model repo (export_hf.py);
- ``oci://host[:port]/repository``: an ORAS-style OCI artifact tagged ``<key>`` (export_oci.py).

``<key>`` is the artifact key (8 hex, a hash of everything that determines the artifact's bytes),
so each distinct artifact lands at its own prefix, branch or tag, and a rerun for the same key
finds the artifact already there (compared by the manifest's sha256) and pushes nothing.

Credentials are files of a mounted Secret, one folder per target (never args or env):
S3 ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (optional ``AWS_SESSION_TOKEN``,
``AWS_REGION``, ``AWS_ENDPOINT_URL``); Hub ``HF_TOKEN`` (optional ``HF_ENDPOINT``); OCI
``.dockerconfigjson`` (a kubernetes.io/dockerconfigjson Secret) or ``username`` and ``password``
(kubernetes.io/basic-auth).

Arguments: ``--artifact DIR --key KEY --targets JSON`` where JSON is a list of
``{"target": URL, "credentialsDir": DIR or null, "plainHTTP": bool}`` (paths only, no secret).
Exit codes: 0 every target holds the artifact; 2 a target refused (credentials, permissions, no
such bucket or repo: permanent); 5 a transient failure (network, 5xx: retried); 1 unexpected.
The JSON termination message (``--termination-log``)::

  {"result": "Exported|ExportFailed|Failed", "message", "key", "artifact", "manifestSha256",
   "exports": [{"target", "result": "Pushed|AlreadyPresent|Failed", "url", "revision" (hf commit),
                "digest" (oci manifest digest), "checksum": "sha256:<manifest sha256>",
                "pushedAt" (RFC 3339, UTC), "files" (pushed now), "bytes" (pushed now), "message"}]}
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slm_runtime import artifact, progress
from slm_runtime.secrets import SecretFileError, redact

EXIT_FAILED, EXIT_REFUSED, EXIT_TRANSIENT = 1, 2, 5
SCHEMES = ("s3://", "hf://", "oci://")
MESSAGE_LIMIT = 400  # characters per target message: the termination message holds 4096 bytes


class ExportError(RuntimeError):
    """A push failed (message safe to show: the server's words, never a secret).

    transient: a retry may succeed (connection trouble, throttling, 5xx); False when the same
    inputs fail the same way (credentials refused, no such bucket or repository)."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class LocalArtifact:
    """A complete artifact on the volume: its folder, manifest (parsed), manifest bytes' sha256
    (hex, the artifact's checksum) and key (8 hex)."""

    folder: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    key: str

    @property
    def files(self) -> list[dict[str, Any]]:
        """The manifest's file entries: {"path": relative '/' path, "size": bytes, "sha256": hex}."""
        return list(self.manifest["files"])


def load_artifact(folder: Path, key: str) -> LocalArtifact:
    """Read and verify the artifact (every file's size and sha256 against manifest.json).

    Raises ExportError (permanent) when it is incomplete or a file does not match."""
    manifest = artifact.read_manifest(folder)
    if manifest is None:
        raise ExportError(f"{folder} holds no complete artifact (no valid manifest.json): the quantization "
                          "Job has not finished it")
    problems = artifact.verify(folder)
    if problems:
        raise ExportError(f"artifact {folder} does not match its manifest, nothing was pushed: {problems[0]}")
    return LocalArtifact(folder, manifest, artifact.sha256_file(folder / artifact.MANIFEST), key)


def http_client_module() -> Any:
    """The HTTP client module huggingface_hub uses: httpx2 (huggingface_hub 2.x, the image has only
    it), else httpx (the same API)."""
    try:
        import httpx2

        return httpx2
    except ImportError:  # pragma: no cover - an environment with httpx only
        import httpx

        return httpx


def now() -> str:
    """The current time, RFC 3339 UTC to the second (the form Kubernetes status uses)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_file_secret(folder: Path | None, name: str) -> str | None:
    """The stripped content of folder/name, None when the folder or the file is absent.

    Raises SecretFileError when the file exists but cannot be read."""
    if folder is None:
        return None
    f = Path(folder) / name
    if not f.is_file():
        return None
    try:
        return f.read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise SecretFileError(f"credential file {f} cannot be read: {exc.strerror}") from None


def secret_values(folder: Path | None) -> list[str]:
    """Every value in a credentials folder (to redact from messages); [] when there is none."""
    if folder is None or not Path(folder).is_dir():
        return []
    out = []
    for f in Path(folder).iterdir():
        if f.is_file() and not f.name.startswith(".."):
            try:
                text = f.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                continue
            if text:
                out.append(text)
                out.extend(_json_strings(text))
    return out


def _json_strings(text: str) -> list[str]:
    """The string values inside a JSON document (a .dockerconfigjson's auth and password)."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    found: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, str) and len(v) >= 4:
            found.append(v)

    walk(data)
    return found


def pusher_for(target: str) -> Callable[..., dict[str, Any]]:
    """The push function for a target URL's scheme. Raises ExportError for an unknown scheme."""
    if target.startswith("s3://"):
        from . import export_s3

        return export_s3.push
    if target.startswith("hf://"):
        from . import export_hf

        return export_hf.push
    if target.startswith("oci://"):
        from . import export_oci

        return export_oci.push
    raise ExportError(f"export target {target!r} has an unknown scheme: use s3://BUCKET/PREFIX, hf://ORG/NAME or "
                      "oci://HOST[:PORT]/REPOSITORY")


def export_one(art: LocalArtifact, spec: dict[str, Any]) -> dict[str, Any]:
    """Push the artifact to one target; the result entry (never raises)."""
    target = spec["target"]
    creds = Path(spec["credentialsDir"]) if spec.get("credentialsDir") else None
    secrets = secret_values(creds)
    entry: dict[str, Any] = {"target": target, "checksum": f"sha256:{art.manifest_sha256}"}
    progress.emit("export", target=target, state="started")
    try:
        done = pusher_for(target)(art, target, creds, plain_http=bool(spec.get("plainHTTP")))
        entry.update(done)
        entry.setdefault("pushedAt", now())
    except ExportError as exc:
        entry.update(result="Failed", transient=exc.transient, message=_short(redact(str(exc), *secrets)))
    except SecretFileError as exc:
        entry.update(result="Failed", transient=False, message=_short(redact(str(exc), *secrets)))
    except Exception as exc:  # an unexpected library error: shown, redacted, retried
        entry.update(result="Failed", transient=True,
                     message=_short(redact(f"{type(exc).__name__}: {exc}", *secrets)))
    progress.emit("export", **{k: v for k, v in entry.items() if k != "checksum"})
    return entry


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT - 1] + "…"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The export subcommand's arguments (see the module docstring)."""
    p = argparse.ArgumentParser(prog="slm_quantizer export", description=__doc__.splitlines()[0])
    p.add_argument("--artifact", required=True, type=Path, help="the artifact folder, e.g. /models/artifacts/<key>")
    p.add_argument("--key", required=True, help="the artifact key: the S3 sub-prefix, Hub branch and OCI tag")
    p.add_argument("--targets", required=True,
                   help='JSON list of {"target": URL, "credentialsDir": DIR|null, "plainHTTP": bool}')
    p.add_argument("--termination-log", default="/dev/termination-log")
    args = p.parse_args(argv)
    try:
        targets = json.loads(args.targets)
    except ValueError as exc:
        p.error(f"--targets is not JSON: {exc}")
    if not isinstance(targets, list) or not targets or not all(
            isinstance(t, dict) and isinstance(t.get("target"), str) for t in targets):
        p.error('--targets must be a non-empty JSON list of {"target": URL, ...}')
    if not re.fullmatch(r"[a-z0-9][-_.a-z0-9]{0,127}", args.key):
        p.error(f"--key {args.key!r} must be 1 to 128 lower-case letters, digits, '-', '_' and '.' (the "
                "artifact's folder name: an S3 sub-prefix, a hub branch and an OCI tag)")
    args.targets = targets
    return args


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    """Push to every target: (the termination summary, the exit code)."""
    base = {"key": args.key, "artifact": str(args.artifact)}
    try:
        art = load_artifact(args.artifact, args.key)
    except ExportError as exc:
        return {**base, "result": "ExportFailed", "message": str(exc), "exports": []}, EXIT_REFUSED
    exports = [export_one(art, spec) for spec in args.targets]
    failed = [e for e in exports if e["result"] == "Failed"]
    summary = {**base, "manifestSha256": art.manifest_sha256, "exports": exports}
    if not failed:
        pushed = sum(1 for e in exports if e["result"] == "Pushed")
        return {**summary, "result": "Exported",
                "message": f"{len(exports)} target(s) hold artifact {args.key} ({pushed} pushed now)"}, 0
    first = failed[0]
    code = EXIT_TRANSIENT if all(e.get("transient") for e in failed) else EXIT_REFUSED
    return {**summary, "result": "ExportFailed",
            "message": f"export to {first['target']} failed: {first['message']}"}, code


def _fit(summary: dict[str, Any], limit: int = 4000) -> None:
    """Shorten per-target messages (then drop files/bytes) until the JSON fits the termination
    message's 4096 bytes: with 8 targets, full messages would not."""
    def size() -> int:
        return len(json.dumps(summary, sort_keys=True, separators=(",", ":")).encode())

    for cap in (200, 100, 40):
        if size() <= limit:
            return
        for e in summary.get("exports", []):
            if isinstance(e.get("message"), str) and len(e["message"]) > cap:
                e["message"] = e["message"][:cap - 1] + "…"
        summary["message"] = str(summary.get("message", ""))[:cap]
    for e in summary.get("exports", []):
        e.pop("files", None)
        e.pop("bytes", None)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m slm_quantizer export``: writes the termination message, returns the exit code."""
    args = parse_args(argv)
    try:
        summary, code = run(args)
    except Exception as exc:  # a bug here: redacted like the rest, retried
        secrets = [v for t in args.targets for v in secret_values(
            Path(t["credentialsDir"]) if t.get("credentialsDir") else None)]
        summary = {"key": args.key, "artifact": str(args.artifact), "result": "Failed",
                   "message": _short(redact(f"{type(exc).__name__}: {exc}", *secrets)), "exports": []}
        code = EXIT_FAILED
    for e in summary.get("exports", []):
        e.pop("transient", None)
    _fit(summary)
    progress.emit("done", result=summary["result"], message=summary["message"])
    progress.write_termination_message(args.termination_log, summary)
    if code:
        print(f"slm_quantizer export: {summary['result']}: {summary['message']}", file=sys.stderr)
    return code
