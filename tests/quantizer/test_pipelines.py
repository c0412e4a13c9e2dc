"""End to end: real GGUF and ONNX int4 pipelines on tiny trained Phi3 / Qwen3 / Gemma3 models."""

from __future__ import annotations

import json

import pytest
from quantizer_helpers import require

from slm_runtime import artifact

pytestmark = pytest.mark.slow


def _check_success(run, out, fmt: str, qtype: str, source_dir) -> dict:
    assert run.rc == 0, run.stderr[-3000:]
    manifest = artifact.read_manifest(out)
    assert manifest is not None
    assert (manifest["format"], manifest["type"]) == (fmt, qtype)
    assert artifact.verify(out) == []
    ppl = manifest["perplexity"]
    assert ppl["reference"] > 1 and ppl["quantized"] > 1
    assert ppl["increasePct"] <= ppl["gatePct"]
    assert isinstance(manifest["sample"], str)
    assert manifest["totalBytes"] < manifest["sourceBytes"]
    assert {"download", "total"} <= set(manifest["timings"])
    assert run.termination["result"] == "Succeeded"
    assert run.termination["perplexityAfter"] == ppl["quantized"]
    assert {"verify", "gate", "done"} <= set(run.stages())
    # No staging or scratch folders left next to the artifact.
    assert not [p for p in out.parent.iterdir() if ".staging-" in p.name]
    return manifest


@pytest.mark.parametrize(("arch", "qtype"), [
    ("phi3", "Q4_K_M"), ("qwen3", "Q4_K_M"), ("gemma3", "Q4_K_M"),
    ("qwen3", "Q8_0"), ("phi3", "Q5_K_M"), ("gemma3", "Q8_0"),
])
def test_gguf(tiny, quantize, tmp_path, arch, qtype):
    require("llama_cpp")
    src = tiny(arch)
    out = tmp_path / "artifact"
    run = quantize(src, out, "gguf", qtype, "--max-ppl-increase-pct", "10")
    manifest = _check_success(run, out, "gguf", qtype, src)
    assert [f["path"] for f in manifest["files"]] == ["model.gguf"]
    assert (out / "model.gguf").read_bytes()[:4] == b"GGUF"
    assert manifest["perplexity"]["referenceKind"] == "gguf-f16"
    assert "llama-cpp-python" in manifest["tools"]
    print(f"\n{arch} {qtype}: {json.dumps(manifest['perplexity'])} bytes {manifest['sourceBytes']}"
          f" -> {manifest['totalBytes']} timings {manifest['timings']}")


@pytest.mark.parametrize("arch", ["phi3", "qwen3"])
def test_onnx_int4(tiny, quantize, tmp_path, arch):
    require("onnxruntime_genai")
    import onnxruntime_genai as og

    src = tiny(arch)
    out = tmp_path / "artifact"
    run = quantize(src, out, "onnx", "int4")
    manifest = _check_success(run, out, "onnx", "int4", src)
    assert {"model.onnx", "genai_config.json", "tokenizer.json"} <= {f["path"] for f in manifest["files"]}
    assert manifest["perplexity"]["referenceKind"] == "hf-fp32"
    # The artifact is directly loadable by onnxruntime-genai (what the ONNX server does).
    model = og.Model(str(out))
    tok = og.Tokenizer(model)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=32, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(tok.encode("The old clockmaker"))
    gen.generate_next_token()
    assert 0 <= int(gen.get_next_tokens()[0]) < 2048
    print(f"\n{arch} onnx int4: {json.dumps(manifest['perplexity'])} bytes {manifest['sourceBytes']}"
          f" -> {manifest['totalBytes']} timings {manifest['timings']}")


def test_onnx_gemma3_refused_clearly(tiny, quantize, tmp_path):
    out = tmp_path / "artifact"
    run = quantize(tiny("gemma3"), out, "onnx", "int4")
    assert run.rc == 4
    assert run.termination["result"] == "Unsupported"
    assert "gguf" in run.termination["message"]
    assert not out.exists()


def test_gate_fails_and_writes_nothing(tiny, quantize, tmp_path):
    require("onnxruntime_genai")
    out = tmp_path / "artifact"
    # An absurd gate: the quantized model must be 50% better than the original.
    run = quantize(tiny("qwen3"), out, "onnx", "int4", "--max-ppl-increase-pct", "-50")
    assert run.rc == 3, run.stderr[-2000:]
    assert run.termination["result"] == "GateFailed"
    assert "gate" in run.termination["message"]
    assert "GateFailed" in run.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]
