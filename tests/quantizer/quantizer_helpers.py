"""Helpers for the quantizer tests (a uniquely named module: other test folders have a conftest too)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# Training steps for the test models: enough for perplexity to mean something, small enough
# for CI on 2 cores. SLM_TINY_TRAIN_STEPS overrides (e.g. 0 for a quick local loop).
TRAIN_STEPS = int(os.environ.get("SLM_TINY_TRAIN_STEPS", "50"))


def require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (run: bash runtime-images/install-ml-deps.sh .venv/bin/python)")


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    termination: dict
    events: list[dict]

    def stages(self) -> list[str]:
        return [e["stage"] for e in self.events]


def run_quantizer(source: str | Path, output: Path, fmt: str, qtype: str, *extra: str,
                  env: dict[str, str] | None = None, timeout: float = 600) -> Run:
    term = output.parent / f"{output.name}.termination-log"
    cmd = [sys.executable, "-m", "slm_quantizer", "--source", str(source), "--format", fmt, "--type", qtype,
           "--output", str(output), "--termination-log", str(term), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    events = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    termination = json.loads(term.read_text()) if term.exists() else {}
    return Run(proc.returncode, proc.stdout, proc.stderr, termination, events)
