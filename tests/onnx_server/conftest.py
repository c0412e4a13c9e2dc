"""Fixtures: a tiny Qwen3 converted to ONNX int4 at test time, and the real server as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from onnx_server_harness import Server, start_server


def _require(*modules: str) -> None:
    for name in modules:
        try:
            __import__(name)
        except ImportError:
            pytest.skip(f"{name} is not installed (install the serve and quantize extras and "
                        f"runtime-images/install-ml-deps.sh)")


@pytest.fixture(scope="session")
def onnx_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen3 (briefly trained, slm_runtime.tiny_models) built to int4 ONNX for CPU.

    SLM_ONNX_SERVER_TEST_MODEL=<folder with genai_config.json> runs the tests against an
    existing ONNX model instead (a real one, or a faster throwaway while developing).
    """
    override = os.environ.get("SLM_ONNX_SERVER_TEST_MODEL")
    if override:
        return Path(override)
    _require("onnxruntime_genai", "onnx_ir", "torch", "transformers")
    from slm_runtime.tiny_models import tiny_model

    # A short training is enough here: the server needs the real architecture and tokenizer,
    # and words in the output for the stop-string test, not a good perplexity.
    hf_dir = tiny_model("qwen3", train_steps=100)
    out = tmp_path_factory.mktemp("onnx") / "tiny-qwen3-int4"
    cache = out.parent / "builder-cache"
    subprocess.run(
        [sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", str(hf_dir), "-o", str(out),
         "-p", "int4", "-e", "cpu", "-c", str(cache)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600,
    )
    return out


@pytest.fixture(scope="module")
def server(onnx_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default server: og.Engine scheduler, batch of 4, queue of 64."""
    srv = start_server(onnx_model_dir, tmp_path_factory.mktemp("server"))
    yield srv
    assert srv.stop() == 0, srv.log()
    assert "Traceback" not in srv.log(), srv.log()
