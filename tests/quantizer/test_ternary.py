"""BitNet b1.58 through the real GGUF pipeline: a tiny BitNetForCausalLM trained ternary ->
llama.cpp's converter -> TQ1_0 / TQ2_0 -> the perplexity gate; and the refusals (exit 4) of a
ternary type on a model that is not BitNet, and of a BitNet model llama.cpp would compute wrongly."""

from __future__ import annotations

import json

import pytest
from quantizer_helpers import require

from slm_runtime import artifact


def _gguf_module():
    from slm_quantizer import gguf

    return gguf


def test_unsupported_reason_names_the_field_and_the_fix():
    gguf = _gguf_module()
    qwen = {"architectures": ["Qwen3ForCausalLM"], "hidden_act": "silu"}
    msg = gguf.unsupported_reason(qwen, "TQ2_0")
    assert msg and "spec.quantization.type" in msg and "Qwen3ForCausalLM" in msg and "Q4_K_M" in msg
    assert gguf.unsupported_reason(qwen, "Q4_K_M") is None
    bitnet = {"architectures": ["BitNetForCausalLM"], "hidden_act": "silu"}
    assert gguf.unsupported_reason(bitnet, "TQ1_0") is None
    assert gguf.unsupported_reason(bitnet, "Q4_K_M") is None  # a BitNet model may also be served at Q4_K_M
    assert gguf.unsupported_reason({"architectures": ["BitnetForCausalLM"]}, "TQ2_0") is None  # 1bitLLM layout
    relu2 = gguf.unsupported_reason({**bitnet, "hidden_act": "relu2"}, "TQ1_0")
    assert relu2 and "hidden_act" in relu2 and "'relu2'" in relu2 and "bitnet-b1.58-2B-4T" in relu2
    untied = gguf.unsupported_reason({**bitnet, "tie_word_embeddings": False}, "TQ2_0")
    assert untied and "tie_word_embeddings" in untied
    # llama.h's enum llama_ftype values.
    assert (gguf.FTYPES["TQ1_0"], gguf.FTYPES["TQ2_0"]) == (36, 37)


def test_ternary_types_are_gguf_types_of_the_cli():
    from slm_quantizer import cli

    args = cli.parse_args(["--source", "x", "--format", "gguf", "--type", "tq1_0", "--output", "/tmp/x"])
    assert args.type == "TQ1_0"
    with pytest.raises(SystemExit):
        cli.parse_args(["--source", "x", "--format", "onnx", "--type", "TQ2_0", "--output", "/tmp/x"])


@pytest.mark.slow
@pytest.mark.parametrize("qtype", ["TQ1_0", "TQ2_0"])
def test_bitnet_ternary_gguf(tiny_bitnet, quantize, tmp_path, qtype):
    require("llama_cpp")
    out = tmp_path / "artifact"
    run = quantize(tiny_bitnet, out, "gguf", qtype)
    assert run.rc == 0, run.stderr[-3000:]
    manifest = artifact.read_manifest(out)
    assert manifest is not None and (manifest["format"], manifest["type"]) == ("gguf", qtype)
    assert artifact.verify(out) == []
    ppl = manifest["perplexity"]
    # The F16 reference is already ternary (the converter ternarizes BitNet weights), so a ternary
    # type loses only the fp16 rounding of its per-block scale: far below the default 5% gate.
    assert ppl["referenceKind"] == "gguf-f16" and 0 <= abs(ppl["increasePct"]) < 1.0
    # The converted model computes what training optimised: llama.cpp's perplexity of the F16
    # GGUF matches PyTorch's perplexity of the ternary (straight-through) model.
    trained = json.loads((tiny_bitnet / "build-info.json").read_text())["eval_perplexity_ternary"]
    assert ppl["reference"] == pytest.approx(trained, rel=0.02)
    assert ppl["reference"] < 1000  # trained: an untrained 2,048-token model sits near 2,100
    # The ternary weights are packed: the file is a fraction of the F16 reference.
    assert manifest["totalBytes"] < ppl["referenceBytes"] / 3
    from gguf import GGUFReader

    reader = GGUFReader(str(out / "model.gguf"))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == qtype and types["blk.1.ffn_down.weight"] == qtype
    assert types["blk.0.attn_sub_norm.weight"] == "F32" and types["blk.0.ffn_sub_norm.weight"] == "F32"
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "bitnet"
    print(f"\nbitnet {qtype}: {json.dumps(ppl)} bytes {manifest['sourceBytes']} -> {manifest['totalBytes']}"
          f" timings {manifest['timings']}")


@pytest.mark.slow
def test_ternary_type_on_a_model_that_is_not_bitnet_is_refused(tiny, quantize, tmp_path):
    require("llama_cpp")
    out = tmp_path / "artifact"
    run = quantize(tiny("qwen3"), out, "gguf", "TQ1_0")
    assert run.rc == 4, run.stderr[-2000:]
    assert run.termination["result"] == "Unsupported"
    assert "spec.quantization.type" in run.termination["message"]
    assert "Qwen3ForCausalLM" in run.termination["message"]
    assert not out.exists()


@pytest.mark.slow
def test_bitnet_with_an_activation_llama_cpp_does_not_compute_is_refused(tiny_bitnet, quantize, tmp_path):
    require("llama_cpp")
    from slm_runtime.tiny_bitnet import with_config

    src = with_config(tiny_bitnet, tmp_path / "relu2", hidden_act="relu2")  # as microsoft/bitnet-b1.58-2B-4T
    out = tmp_path / "artifact"
    run = quantize(src, out, "gguf", "TQ2_0")
    assert run.rc == 4, run.stderr[-2000:]
    assert run.termination["result"] == "Unsupported" and "hidden_act" in run.termination["message"]
    assert not out.exists()
