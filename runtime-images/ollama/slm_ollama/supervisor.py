"""`serve`: run `ollama serve`, import the model once it answers, then stay with it until it exits.

The container's main process: SIGTERM/SIGINT are passed to Ollama and its exit code is ours, so
Kubernetes sees Ollama's lifecycle. The import runs against the same local server (OLLAMA_HOST).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from slm_ollama.importer import ModelImportError, find_gguf, plan_import, run_import

log = logging.getLogger("slm_ollama.serve")


def ollama_base_url(env: dict[str, str]) -> str:
    """OLLAMA_HOST as Ollama reads it (host, host:port or URL), as a URL for the importer."""
    host = env.get("OLLAMA_HOST", "127.0.0.1:11434").strip() or "127.0.0.1:11434"
    if "://" not in host:
        host = "http://" + host
    scheme, _, rest = host.partition("://")
    if ":" not in rest.rsplit("]", 1)[-1]:
        rest += ":11434"
    return f"{scheme}://{rest.replace('0.0.0.0', '127.0.0.1')}"


def run(ollama_bin: str, gguf_dir: Path, name: str, params: list[tuple[str, str]], wait_s: float) -> int:
    gguf = find_gguf(gguf_dir)
    plan = plan_import(name, gguf, template_from=gguf_dir, template_file=None, params=params)
    child = subprocess.Popen([ollama_bin, "serve"])  # inherits the pod's env (OLLAMA_HOST, OLLAMA_MODELS...)

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    try:
        status = run_import(ollama_base_url(dict(os.environ)), plan, wait_s=wait_s)
        caps = ", ".join(sorted(plan.capabilities)) or "none"
        print(f"slm_ollama: model {name} ready (template {plan.family or 'chosen by Ollama'}; "
              f"capabilities: {caps}): {status}", flush=True)
    except ModelImportError as err:
        print(f"slm_ollama: import failed: {err}", file=sys.stderr, flush=True)
        child.terminate()
        child.wait(timeout=30)
        return 1
    return child.wait()
