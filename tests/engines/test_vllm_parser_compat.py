"""The launcher's arguments, checked by the pinned vLLM's own argument parser.

Runs in a separate venv (vLLM pins its own torch): build it with tests/engines/vllm_env.sh.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from slm_vllm import VLLM_VERSION, VllmOptions, build_args
from slm_vllm.args import FORBIDDEN_FLAGS, OWNED_FLAGS

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("SLM_CACHE", Path.home() / ".cache" / "slm-operator"))
VENV = CACHE / f"venv-vllm-{VLLM_VERSION}"


@pytest.fixture(scope="module")
def vllm_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists() or not list(VENV.glob(".complete-*")):
        pytest.skip(f"vLLM {VLLM_VERSION} venv not found at {VENV}: vLLM pins torch 2.14 and cannot share "
                    "the main .venv; create it with tests/engines/vllm_env.sh (~3.5 min, ~7 GB, once)")
    return python


def _parse(python: Path, cases: list[list[str]], flags: list[str]) -> dict:
    out = subprocess.run([str(python), str(HERE / "vllm_parser_check.py")],
                         input=json.dumps({"cases": cases, "flags": flags}), capture_output=True,
                         text=True, timeout=300, check=True, env={**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_rendered_args_parse_with_vllms_own_parser(vllm_python):
    full = VllmOptions(
        model_path="/models/phi4", served_model_name="phi-4-mini", port=8000, max_model_len=4096,
        gpu_memory_utilization="0.85", max_num_seqs=48, tensor_parallel_size=2, enable_prefix_caching=False,
        quantization="awq_marlin", dtype="float16", kv_cache_dtype="fp8", trust_remote_code=True,
        extra_args=("--enable-chunked-prefill", "--max-num-batched-tokens", "8192", "--seed=-1", "-O3"),
    )
    minimal = VllmOptions(model_path="/models/q", served_model_name="q", enable_prefix_caching=True)
    report = _parse(vllm_python, [build_args(full), build_args(minimal), ["/m", "--no-such-flag"]],
                    sorted({*FORBIDDEN_FLAGS, *OWNED_FLAGS}))
    assert report["vllm_version"] == VLLM_VERSION
    ok_full, ok_min, bad = report["results"]
    assert ok_full["ok"], ok_full
    assert ok_full["values"] == {
        "model_tag": "/models/phi4", "served_model_name": ["phi-4-mini"], "host": "0.0.0.0", "port": 8000,
        "max_model_len": 4096, "gpu_memory_utilization": 0.85, "max_num_seqs": 48,
        "tensor_parallel_size": 2, "enable_prefix_caching": False, "quantization": "awq_marlin",
        "dtype": "float16", "kv_cache_dtype": "fp8", "trust_remote_code": True,
        "disable_fastapi_docs": True, "api_key": None,
    }
    assert ok_min["ok"] and ok_min["values"]["enable_prefix_caching"] is True
    assert ok_min["values"]["trust_remote_code"] is False
    # The parser really rejects what it does not know (so the two passes above mean something).
    assert not bad["ok"] and "no-such-flag" in bad["error"]
    # Every flag the launcher refuses or owns exists in this vLLM: a renamed flag would slip past
    # the denylist, so a version bump that renames one fails here.
    assert report["missing_flags"] == []
