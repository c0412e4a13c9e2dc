"""End to end: ONNX int4 through Olive (GPTQ pass + builder) and MLX 4/8-bit through mlx-lm on
tiny trained models, each through the perplexity gate. About 3 min on 2 busy cores (Olive's
GPTQ is the slow part, ~2 min; MLX ~15 s per run)."""

from __future__ import annotations

import json

import pytest
from quantizer_helpers import require

from slm_runtime import artifact

pytestmark = pytest.mark.slow


def _gate_passed(run, out, fmt: str, qtype: str) -> dict:
    assert run.rc == 0, run.stderr[-3000:]
    manifest = artifact.read_manifest(out)
    assert manifest is not None
    assert (manifest["format"], manifest["type"]) == (fmt, qtype)
    assert artifact.verify(out) == []
    ppl = manifest["perplexity"]
    assert ppl["reference"] > 1 and ppl["quantized"] > 1
    assert ppl["increasePct"] <= ppl["gatePct"]
    assert manifest["totalBytes"] < manifest["sourceBytes"]
    assert run.termination["result"] == "Succeeded"
    # One checksum for the whole artifact: the manifest's sha256 (it lists every file's sha256).
    assert run.termination["manifestSha256"] == artifact.sha256_file(out / "manifest.json")
    assert run.termination["totalBytes"] == manifest["totalBytes"]
    assert {"quantize", "verify", "gate", "done"} <= set(run.stages())
    return manifest


def test_onnx_int4_olive(tiny, quantize, tmp_path):
    require("olive", "onnxruntime_genai")
    import onnxruntime_genai as og

    out = tmp_path / "artifact"
    run = quantize(tiny("qwen3"), out, "onnx", "int4", "--tool", "olive")
    manifest = _gate_passed(run, out, "onnx", "int4")
    assert manifest["tool"] == "olive"
    assert "olive-ai" in manifest["tools"]
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json"} <= {
        f["path"] for f in manifest["files"]}
    quantize_event = next(e for e in run.events if e["stage"] == "quantize")
    assert "olive" in quantize_event["tool"]
    # GPTQ's packed weights reach the ONNX graph as MatMulNBits (4-bit) nodes.
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "model.onnx"), load_external_data=False).graph.node}
    assert "MatMulNBits" in ops
    model = og.Model(str(out))
    assert og.Tokenizer(model).encode("The old clockmaker").size > 0
    print(f"\nolive int4: {json.dumps(manifest['perplexity'])} timings {manifest['timings']}")


def test_onnx_olive_refuses_phi3_naming_the_way_out(tiny, quantize, tmp_path):
    """Olive's GPTQ output for Phi3's fused projections does not load after the 0.18 builder
    (MatMulNBits zero_points shape): refused up front, Unsupported (exit 4), pointing to builder."""
    out = tmp_path / "artifact"
    run = quantize(tiny("phi3"), out, "onnx", "int4", "--tool", "olive")
    assert run.rc == 4, run.stderr[-2000:]
    assert run.termination["result"] == "Unsupported"
    assert "use tool builder" in run.termination["message"]
    assert not out.exists()


def test_onnx_default_tool_is_recorded(tiny, quantize, tmp_path):
    """Without --tool the ONNX path is the default tool, and the manifest says which."""
    require("onnxruntime_genai")
    from slm_quantizer.cli import DEFAULT_ONNX_TOOL

    out = tmp_path / "artifact"
    run = quantize(tiny("qwen3"), out, "onnx", "int8")
    manifest = _gate_passed(run, out, "onnx", "int8")
    assert manifest["tool"] == DEFAULT_ONNX_TOOL


@pytest.mark.parametrize(("arch", "qtype", "bits"), [("qwen3", "4bit", 4), ("phi3", "8bit", 8)])
def test_mlx(tiny, quantize, tmp_path, arch, qtype, bits):
    require("mlx", "mlx_lm")
    out = tmp_path / "artifact"
    run = quantize(tiny(arch), out, "mlx", qtype)
    manifest = _gate_passed(run, out, "mlx", qtype)
    assert manifest["perplexity"]["referenceKind"] == "mlx-fp32"
    assert {"mlx", "mlx-lm"} <= set(manifest["tools"])
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"]["bits"] == bits
    # The artifact loads in mlx-lm and generates (what a Mac does with it).
    from slm_quantizer.mlx import keep_nofile_limit

    with keep_nofile_limit():
        from mlx_lm import generate, load

    model, tok = load(str(out))
    assert isinstance(generate(model, tok, prompt="The baker", max_tokens=3, verbose=False), str)
    print(f"\n{arch} mlx {qtype}: {json.dumps(manifest['perplexity'])} bytes {manifest['sourceBytes']}"
          f" -> {manifest['totalBytes']}")


def test_mlx_tool_error_is_conversion_failed_naming_mlx_lm(tiny, quantize, tmp_path):
    """mlx-lm 0.32.2's Gemma3 code indexes layer sliding_window_pattern - 1 (5): the 2-layer tiny
    Gemma3 makes it fail. That is the tool's own error: ConversionFailed (exit 6), naming mlx-lm."""
    require("mlx", "mlx_lm")
    out = tmp_path / "artifact"
    run = quantize(tiny("gemma3"), out, "mlx", "4bit")
    assert run.rc == 6, run.stderr[-2000:]
    assert run.termination["result"] == "ConversionFailed"
    assert "mlx-lm" in run.termination["message"] and "IndexError" in run.termination["message"]
    assert not out.exists()


def test_mlx_gate_fails_and_writes_nothing(tiny, quantize, tmp_path):
    require("mlx", "mlx_lm")
    out = tmp_path / "artifact"
    run = quantize(tiny("qwen3"), out, "mlx", "4bit", "--max-ppl-increase-pct", "-50")
    assert run.rc == 3, run.stderr[-2000:]
    assert run.termination["result"] == "GateFailed"
    assert not out.exists()


def test_mlx_unknown_architecture_refused(tiny, quantize, tmp_path):
    """A model_type mlx-lm has no module for: Unsupported (exit 4), naming mlx-lm and the way out."""
    require("mlx", "mlx_lm")
    import shutil

    src = tmp_path / "src"
    shutil.copytree(tiny("qwen3"), src)
    config = json.loads((src / "config.json").read_text())
    config["model_type"] = "not_a_real_arch"
    (src / "config.json").write_text(json.dumps(config))
    out = tmp_path / "artifact"
    run = quantize(src, out, "mlx", "4bit")
    assert run.rc == 4, run.stderr[-2000:]
    assert run.termination["result"] == "Unsupported"
    assert "mlx-lm" in run.termination["message"] and "not_a_real_arch" in run.termination["message"]
    assert not out.exists()


@pytest.mark.parametrize(("argv", "needle"), [
    (["--format", "gguf", "--type", "Q4_K_M", "--tool", "olive"], "--format onnx only"),
    (["--format", "onnx", "--type", "fp16", "--tool", "olive"], "int4 only"),
    (["--format", "mlx", "--type", "Q4_K_M"], "4bit"),
])
def test_bad_tool_and_type_arguments(argv, needle, capsys):
    from slm_quantizer.cli import parse_args

    with pytest.raises(SystemExit) as exc:
        parse_args(["--source", "/x", "--output", "/tmp/o", *argv])
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err
