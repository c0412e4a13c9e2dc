"""The checked-in vLLM request field list equals what the pinned vLLM itself declares.

Runs vllm_request_fields.py in the vLLM venv (vLLM pins its own torch and cannot share the main
.venv; build it with tests/engines/vllm_env.sh). Importing vLLM's protocol classes takes about a
minute on two cores.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
VLLM_VERSION = json.loads((HERE / "vllm_request_fields.json").read_text())["vllm_version"]
CACHE = Path(os.environ.get("SLM_CACHE", Path.home() / ".cache" / "slm-operator"))
VENV = CACHE / f"venv-vllm-{VLLM_VERSION}"


def test_checked_in_field_list_is_the_pinned_vllms() -> None:
    from slm_vllm import VLLM_VERSION as PINNED

    assert VLLM_VERSION == PINNED, "regenerate vllm_request_fields.json for the pinned vLLM (see its script)"
    python = VENV / "bin" / "python"
    if not python.exists() or not list(VENV.glob(".complete-*")):
        pytest.skip(f"vLLM {VLLM_VERSION} venv not found at {VENV}: create it with tests/engines/vllm_env.sh "
                    "(~3.5 min, ~7 GB, once)")
    out = subprocess.run([str(python), str(HERE / "vllm_request_fields.py")], capture_output=True, text=True,
                         timeout=600, check=True, env={**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"})
    assert json.loads(out.stdout) == json.loads((HERE / "vllm_request_fields.json").read_text()), (
        "vLLM's request fields changed: regenerate tests/onnx_server/vllm_request_fields.json with the command "
        "in vllm_request_fields.py and classify the new fields in slm_onnx_server/protocol.py")
