"""`slmctl estimate` / `slmctl models`, registered onto a local Typer app."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from slm_operator.cli_sizing import register
from slm_operator.sizing.catalog import list_gpus, list_models

REQUIRED_JSON_KEYS = {"weights_bytes", "kv_cache_bytes", "overhead_bytes", "total_bytes", "tier", "fits",
                      "recommendation", "engine", "quantization"}


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer()
    register(a)
    return a


def run(app, *args: str):
    return CliRunner().invoke(app, list(args))


def run_json(app, *args: str) -> dict:
    res = run(app, *args, "-o", "json")
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_estimate_table_refusal(app):
    res = run(app, "estimate", "Qwen/Qwen3-14B", "--quant", "bf16", "--gpu", "Tesla-T4")
    assert res.exit_code == 0, res.output
    for needle in ("Qwen3-14B", "Medium", "Weights", "KV cache", "Fits", "no", "awq (w4a16)"):
        assert needle in res.output, needle


def test_estimate_json_has_the_documented_keys(app):
    doc = run_json(app, "estimate", "hf://Qwen/Qwen3-14B", "--quant", "bf16", "--gpu", "T4")
    assert set(doc) >= REQUIRED_JSON_KEYS
    assert doc["fits"] is False and doc["tier"] == "Medium"
    assert doc["total_bytes"] == doc["weights_bytes"] + doc["kv_cache_bytes"] + doc["overhead_bytes"]
    assert doc["alternative"] == {"quant_format": "awq", "quant_type": "w4a16", "gpu_count": 1}
    assert "awq" in doc["recommendation"]


@pytest.mark.parametrize(("quant", "engine", "fmt", "qtype"), [
    ("Q4_K_M", "llamacpp", "gguf", "Q4_K_M"), ("q4_k_m", "llamacpp", "gguf", "Q4_K_M"),
    ("Q8_0", "llamacpp", "gguf", "Q8_0"), ("int4", "onnxruntime", "onnx", "int4"),
    ("awq", "vllm", "awq", "w4a16"), ("fp8", "vllm", "fp8", "fp8"), ("bf16", "vllm", "none", "bf16"),
])
def test_estimate_quant_short_names(app, quant, engine, fmt, qtype):
    hw = ["--gpu", "L4"] if engine == "vllm" else ["--cpu"]
    doc = run_json(app, "estimate", "qwen3-4b", "--quant", quant, *hw)
    assert (doc["engine"], doc["quant_format"], doc["quant_type"]) == (engine, fmt, qtype)
    assert doc["weights_bytes"] > 0


def test_estimate_gpu_count_context_concurrency(app):
    doc = run_json(app, "estimate", "Qwen/Qwen3-32B", "--gpu", "NVIDIA-H100-80GB-HBM3:2", "--quant", "bf16",
                   "--context", "16384", "--concurrency", "8")
    assert doc["gpu_count"] == 2 and doc["context"] == 16384 and doc["concurrency"] == 8
    assert doc["vllm"]["max_model_len"] == 16384
    assert doc["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert doc["fits"] is True


def test_estimate_cpu_with_node_memory(app):
    doc = run_json(app, "estimate", "google/gemma-3-27b-it", "--cpu", "--node-memory", "16")
    assert doc["engine"] == "llamacpp" and doc["fits"] is False and doc["checked"] is True


@pytest.mark.parametrize(("args", "message"), [
    (["estimate", "someone/unknown-model", "--offline"], "not in the sizing catalog"),
    (["estimate", "Qwen3-8B", "--gpu", "L4", "--cpu"], "exclude each other"),
    (["estimate", "Qwen3-8B", "--quant", "Q3_K_S"], "Unknown quantization"),
    (["estimate", "Qwen3-8B", "--gpu", "NVIDIA-Imaginary-9000"], "not in the sizing catalog"),
    (["estimate", "Qwen3-8B", "--engine", "ollama", "--quant", "awq"], "does not serve"),
])
def test_estimate_errors_exit_1(app, args, message):
    res = run(app, *args)
    assert res.exit_code == 1
    assert message in " ".join(res.output.split())


def test_models_table_and_json(app):
    res = run(app, "models")
    assert res.exit_code == 0
    assert "Qwen/Qwen3-8B" in res.output and "Micro" in res.output
    rows = json.loads(run(app, "models", "-o", "json").output)
    assert len(rows) == len(list_models())
    assert {r["id"] for r in rows} >= {"microsoft/Phi-4-mini-instruct", "google/gemma-3-27b-it"}


def test_models_gpus(app):
    res = run(app, "models", "--gpus")
    assert res.exit_code == 0 and "NVIDIA-L4" in res.output
    rows = json.loads(run(app, "models", "--gpus", "-o", "json").output)
    assert len(rows) == len(list_gpus())
