"""Export formats and quantize-only deployments (issue 17): quantization.tool, format mlx,
serving.enabled false, and the catalog's format support, through validate (admission's CEL
offline), render and `slmctl models`. Pure Python, a few seconds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from slm_operator import api
from slm_operator.cli import app
from slm_operator.render import render
from slm_operator.resolve import resolution
from slm_operator.sizing import formats
from slm_operator.sizing.catalog import list_models
from slm_operator.validate import validate

SHA = "0123456789abcdef0123456789abcdef01234567"


def body(spec: dict[str, Any], source: str = "hf://Qwen/Qwen3-0.6B") -> dict[str, Any]:
    return {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment", "metadata": {"name": "m"},
            "spec": {"model": {"source": source, "revision": SHA}, **spec}}


def kinds(doc: dict[str, Any]) -> list[str]:
    return [o["kind"] for o in render(api.SLMDeployment.model_validate(doc))]


def job_args(doc: dict[str, Any]) -> list[str]:
    job = next(o for o in render(api.SLMDeployment.model_validate(doc)) if o["kind"] == "Job")
    return job["spec"]["template"]["spec"]["containers"][0]["args"]


MLX_ONLY = {"quantization": {"format": "mlx", "type": "4bit"}, "serving": {"enabled": False}}


def test_mlx_needs_serving_disabled_naming_the_field_and_the_fix() -> None:
    errs = validate(body({"quantization": {"format": "mlx"}}))
    assert len(errs) == 1
    assert "quantization.format mlx is export-only" in errs[0]
    assert "serving.enabled: false" in errs[0] and "gguf or onnx" in errs[0]
    errs = validate(body({"quantization": {"format": "mlx"}, "serving": {"enabled": True}}))
    assert errs and "export-only" in errs[0]


def test_mlx_quantize_only_renders_the_job_and_nothing_that_serves() -> None:
    doc = body(MLX_ONLY)
    assert validate(doc) == []
    assert sorted(kinds(doc)) == ["Job", "NetworkPolicy", "PersistentVolumeClaim"]
    args = job_args(doc)
    assert args[args.index("--format") + 1] == "mlx" and args[args.index("--type") + 1] == "4bit"
    assert "--tool" not in args
    r = resolution(api.SLMDeployment.model_validate(doc).spec).r
    assert r.fits and r.gpu_count == 0 and "quantize-only" in r.reason


@pytest.mark.parametrize("qtype", ["4bit", "8bit"])
def test_mlx_types_and_a_wrong_type(qtype: str) -> None:
    assert validate(body({**MLX_ONLY, "quantization": {"format": "mlx", "type": qtype}})) == []
    errs = validate(body({**MLX_ONLY, "quantization": {"format": "mlx", "type": "Q4_K_M"}}))
    assert errs and "mlx takes 4bit|8bit" in errs[0]


def test_serving_disabled_with_a_servable_format_stops_after_the_job() -> None:
    served = body({"quantization": {"format": "gguf", "type": "Q4_K_M"}})
    only = body({"quantization": {"format": "gguf", "type": "Q4_K_M"}, "serving": {"enabled": False}})
    assert validate(only) == []
    assert {"Deployment", "Service"} <= set(kinds(served))
    assert sorted(kinds(only)) == ["Job", "NetworkPolicy", "PersistentVolumeClaim"]
    # The same artifact either way: a quantize-only run can be served later without rebuilding.
    spec_a = api.SLMDeployment.model_validate(served).spec
    spec_b = api.SLMDeployment.model_validate(only).spec
    assert resolution(spec_a).key == resolution(spec_b).key


def test_serving_enabled_defaults_to_true() -> None:
    spec = api.SLMDeployment.model_validate(body({})).spec
    assert spec.serving is None and api.serving_enabled(spec)


def test_onnx_tool_olive_reaches_the_job_and_changes_the_artifact_key() -> None:
    builder = body({"quantization": {"format": "onnx", "type": "int4"}}, "hf://Qwen/Qwen3-1.7B")
    olive = body({"quantization": {"format": "onnx", "type": "int4", "tool": "olive"}}, "hf://Qwen/Qwen3-1.7B")
    assert validate(olive) == []
    args = job_args(olive)
    assert args[args.index("--tool") + 1] == "olive"
    assert "--tool" not in job_args(builder)
    keys = {resolution(api.SLMDeployment.model_validate(d).spec).key for d in (builder, olive)}
    assert len(keys) == 2


@pytest.mark.parametrize(("quant", "needle"), [
    ({"format": "gguf", "tool": "olive"}, "quantization.tool applies to format onnx only"),
    ({"tool": "builder"}, "quantization.tool applies to format onnx only"),
    ({"format": "onnx", "type": "fp16", "tool": "olive"}, "quantization.tool olive makes int4 only"),
    ({"format": "onnx", "tool": "gptq"}, "tool"),
])
def test_bad_tool_is_refused_naming_the_field(quant: dict[str, Any], needle: str) -> None:
    errs = validate(body({"quantization": quant}), check_fit=False)
    assert any(needle in e for e in errs), errs


def test_catalog_refuses_a_format_the_architecture_cannot_take() -> None:
    errs = validate(body({"quantization": {"format": "onnx"}}, "hf://google/gemma-3-1b-it"), check_fit=False)
    assert any("quantization.format onnx cannot be made for model.source" in e and "format gguf" in e
               for e in errs), errs
    errs = validate(body({"quantization": {"format": "onnx", "tool": "olive"}},
                         "hf://microsoft/bitnet-b1.58-2B-4T"), check_fit=False)
    assert any("BitNetForCausalLM" in e for e in errs), errs
    # Phi3 (fused qkv/gate_up): the olive tool is refused, the builder is not.
    phi = "hf://microsoft/Phi-4-mini-instruct"
    errs = validate(body({"quantization": {"format": "onnx", "tool": "olive"}}, phi), check_fit=False)
    assert any("with tool olive cannot be made" in e and "use tool builder" in e for e in errs), errs
    assert validate(body({"quantization": {"format": "onnx", "tool": "builder"}}, phi), check_fit=False) == []
    # Gemma 3 to MLX is fine: mlx-lm has gemma3_text.
    assert validate(body(MLX_ONLY, "hf://google/gemma-3-1b-it"), check_fit=False) == []


def test_mlx_refusal_for_an_architecture_mlx_lm_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CEL refusal is built from the table: take qwen3 out of mlx-lm's set and admission says so."""
    monkeypatch.setattr(formats, "MLX_LM_MODEL_TYPES", formats.MLX_LM_MODEL_TYPES - {"qwen3"})
    formats.catalog_refusals.cache_clear()
    try:
        mlx = [r for r in formats.catalog_refusals() if r.format == "mlx"]
        assert len(mlx) == 1 and "hf://Qwen/Qwen3-0.6B" in mlx[0].sources
        assert "mlx-lm does not support Qwen3ForCausalLM" in mlx[0].reason
        rules = dict((m, r) for r, m in api.export_format_rules())
        assert any("cannot be made for model.source hf://Qwen/Qwen3-0.6B" in m for m in rules)
    finally:
        formats.catalog_refusals.cache_clear()


def test_every_catalog_model_has_its_formats() -> None:
    for m in list_models():
        support = formats.support(m.architecture)
        assert "gguf" in support and "mlx" in support, m.id
        assert ("onnx" in support) == (m.family not in ("gemma3", "bitnet")), m.id
    assert formats.support("SomethingNewForCausalLM") == {}
    assert formats.refusal("SomethingNewForCausalLM", "mlx") is None  # unknown: the Job decides


def test_slmctl_models_shows_formats_and_tools() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0
    assert "onnx (builder|olive)" in res.output
    rows = {r["id"]: r for r in json.loads(runner.invoke(app, ["models", "-o", "json"]).output)}
    assert rows["Qwen/Qwen3-0.6B"]["formats"] == {"gguf": ["llama.cpp"], "onnx": ["builder", "olive"],
                                                  "mlx": ["mlx-lm"]}
    assert "onnx" not in rows["google/gemma-3-1b-it"]["formats"]
    assert rows["microsoft/Phi-4-mini-instruct"]["formats"]["onnx"] == ["builder"]


@pytest.mark.skipif(importlib.util.find_spec("mlx_lm") is None, reason="needs mlx-lm (install-ml-deps.sh)")
def test_mlx_table_matches_the_installed_mlx_lm() -> None:
    from slm_quantizer.mlx import supported_model_types

    known = supported_model_types()  # imports mlx-lm without lowering this process's file limit
    for arch, model_type in formats.ARCHITECTURE_MODEL_TYPE.items():
        assert (model_type in known) == (model_type in formats.MLX_LM_MODEL_TYPES), arch


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime_genai") is None, reason="needs onnxruntime-genai")
def test_onnx_table_matches_the_installed_builder() -> None:
    spec = importlib.util.find_spec("onnxruntime_genai.models.builder")
    assert spec is not None and spec.origin
    text = Path(spec.origin).read_text()
    for arch in formats.ARCHITECTURE_MODEL_TYPE:
        assert (f'"{arch}"' in text) == (arch in formats.ONNX_BUILDER_ARCHITECTURES), arch
