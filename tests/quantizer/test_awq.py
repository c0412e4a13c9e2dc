"""AWQ / GPTQ W4A16 with llm-compressor: needs an NVIDIA GPU; on CPU the quantizer must refuse clearly."""

from __future__ import annotations

import pytest
from quantizer_helpers import require

from slm_runtime import artifact


def _cuda() -> bool:
    require("torch")
    import torch

    return torch.cuda.is_available()


@pytest.mark.slow
def test_awq_refused_without_gpu(tiny, quantize, tmp_path):
    if _cuda():
        pytest.skip("a GPU is present: the refusal path does not apply")
    out = tmp_path / "artifact"
    run = quantize(tiny("qwen3"), out, "awq", "w4a16", "--target", "cuda")
    assert run.rc == 4
    assert run.termination["result"] == "Unsupported"
    assert "GPU" in run.termination["message"]
    assert not out.exists()


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("method", ["awq", "gptq"])
def test_w4a16_on_gpu(tiny, quantize, tmp_path, method):
    if not _cuda():
        pytest.skip("no CUDA device visible (torch.cuda.is_available() is False): AWQ/GPTQ need an NVIDIA GPU")
    require("llmcompressor")
    out = tmp_path / "artifact"
    run = quantize(tiny("qwen3"), out, method, "w4a16", "--target", "cuda", "--max-ppl-increase-pct", "25")
    assert run.rc == 0, run.stderr[-3000:]
    assert artifact.verify(out) == []
    manifest = artifact.read_manifest(out)
    assert manifest is not None and manifest["perplexity"]["referenceKind"] == "hf-bf16"
