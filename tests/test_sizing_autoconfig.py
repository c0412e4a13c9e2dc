"""Auto-configuration: engine and quantization choice, vLLM context/utilization, refusals."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from slm_operator.sizing.autoconfig import autoconfigure
from slm_operator.sizing.catalog import GIB, lookup_gpu, lookup_model
from slm_operator.sizing.errors import InvalidQuantizationError, SizingError, UnknownGpuError
from slm_operator.sizing.estimate import estimate


def model(name):
    m = lookup_model(name)
    assert m is not None
    return m


# -- the refusal path -----------------------------------------------------------------------


def test_qwen3_14b_16bit_on_one_16gb_gpu_is_refused_with_a_fitting_suggestion():
    d = autoconfigure(model("Qwen3-14B"), engine="vllm", quant_format="none", quant_type="bf16",
                      gpu_product="Tesla-T4", gpu_count=1)
    assert not d.fits and d.checked
    assert d.quant_type == "fp16"  # T4 (compute capability 7.5) has no bf16
    assert d.estimate.per_device_bytes > lookup_gpu("Tesla-T4").memory_bytes
    assert d.alternative == ("awq", "w4a16", 1)
    for needle in ("Qwen3-14B", "fp16", "27.5 GiB of weights", "Tesla-T4", "15.0 GiB", "awq (w4a16)", "fits"):
        assert needle in d.reason, needle
    assert "awq" in d.recommendation
    # The suggestion is true: asking for it fits.
    again = autoconfigure(model("Qwen3-14B"), quant_format="awq", gpu_product="Tesla-T4")
    assert again.fits and again.engine == "vllm"


def test_refusal_suggests_more_gpus_when_no_quantization_fits():
    d = autoconfigure(model("Qwen3-14B"), quant_format="none", gpu_product="T4", context=32768, concurrency=4)
    assert not d.fits
    assert d.alternative is not None and d.alternative[2] > 1
    assert f"on {d.alternative[2]} x Tesla-T4" in d.reason


def test_refusal_on_cpu_node_memory():
    g = model("gemma-3-27b-it")
    small = autoconfigure(g, cpu_only=True, node_memory_bytes=16 * GIB)
    assert not small.fits and small.engine == "llamacpp"
    assert "16.0 GiB" in small.reason
    big = autoconfigure(g, cpu_only=True, node_memory_bytes=64 * GIB)
    assert big.fits and big.checked


# -- automatic choices ----------------------------------------------------------------------


@pytest.mark.parametrize(("gpu", "expected"), [
    ("NVIDIA-H100-80GB-HBM3", ("none", "bf16")),   # plenty of memory: no quantization
    ("NVIDIA-L4", ("fp8", "fp8")),                 # 22.5 GiB, native FP8
    ("NVIDIA-A10G", ("awq", "w4a16")),             # 22.5 GiB, no FP8 tensor cores
    ("Tesla-T4", ("awq", "w4a16")),
])
def test_auto_quantization_for_qwen3_14b(gpu, expected):
    d = autoconfigure(model("Qwen3-14B"), gpu_product=gpu)
    assert d.fits and d.engine == "vllm"
    assert (d.quant_format, d.quant_type) == expected
    if expected[0] != "none":
        assert "would need" in d.reason  # says why it did not keep 16-bit


def test_auto_engine_on_cpu():
    assert autoconfigure(model("Phi-4-mini-instruct"), cpu_only=True).engine == "onnxruntime"
    assert autoconfigure(model("Qwen3-0.6B")).engine == "onnxruntime"  # no hardware named: CPU
    medium = autoconfigure(model("Qwen3-14B"), cpu_only=True)
    # GGUF on CPU: llama.cpp, which needs less memory than Ollama (both have the gateway
    # container now); the reason says which engine and why.
    assert (medium.engine, medium.quant_format, medium.quant_type) == ("llamacpp", "gguf", "Q4_K_M")
    assert "llama.cpp" in medium.reason and "Ollama" in medium.reason and "smallest estimate" in medium.reason
    odd = replace(model("Qwen3-4B"), architecture="FancyNewForCausalLM")
    assert autoconfigure(odd, cpu_only=True).engine == "llamacpp"
    assert "ONNX builder" in autoconfigure(odd, cpu_only=True).reason


def test_format_decides_engine():
    d = autoconfigure(model("Qwen3-4B"), quant_format="gguf")
    assert d.engine == "llamacpp" and "llama.cpp for gguf on CPU" in d.reason
    # On a GPU the table prefers Ollama for GGUF (the llama.cpp image is a CPU build by default).
    assert autoconfigure(model("Qwen3-4B"), quant_format="gguf", gpu_product="L4").engine == "ollama"
    assert autoconfigure(model("Qwen3-4B"), quant_format="onnx").engine == "onnxruntime"
    d = autoconfigure(model("Qwen3-4B"), quant_format="awq", gpu_product="L4")
    assert (d.engine, d.quant_type) == ("vllm", "w4a16")


def test_vllm_context_is_the_longest_that_fits():
    m, gpu = model("Qwen3-8B"), lookup_gpu("NVIDIA-L4")
    d = autoconfigure(m, gpu_product="NVIDIA-L4", concurrency=4)
    assert d.fits and d.vllm_max_model_len == d.context
    assert d.context % 1024 == 0 or d.context == m.max_context
    assert d.estimate.concurrency == 4
    assert d.estimate.per_device_bytes <= d.capacity_bytes
    longer = estimate(m, engine="vllm", quant_format=d.quant_format, quant_type=d.quant_type,
                      context=d.context + 1024, concurrency=4, gpu=gpu)
    assert d.context == m.max_context or longer.per_device_bytes > d.capacity_bytes


def test_vllm_full_context_when_it_fits():
    d = autoconfigure(model("Qwen3-1.7B"), gpu_product="NVIDIA-A100-SXM4-80GB", concurrency=8)
    assert d.vllm_max_model_len == 40960
    assert d.vllm_gpu_memory_utilization == "0.90"


def test_gemma3_window_lets_long_context_fit():
    d = autoconfigure(model("gemma-3-4b-it"), gpu_product="NVIDIA-L4")
    assert d.fits and d.vllm_max_model_len == 131072  # 29 of 34 layers hold only 1024 tokens


def test_vllm_utilization_rises_above_default_when_needed_and_stays_bounded():
    d = autoconfigure(model("Qwen3-8B"), gpu_product="NVIDIA-L4", quant_format="none", context=4096,
                      concurrency=8)
    assert d.fits
    assert 90 < d.vllm_gpu_memory_utilization_percent <= 95
    for gpu in ("T4", "L4", "H100", "A100-80GB"):
        p = autoconfigure(model("Qwen3-4B"), gpu_product=gpu).vllm_gpu_memory_utilization_percent
        assert 90 <= p <= 95


def test_explicit_context_is_kept():
    d = autoconfigure(model("Qwen3-8B"), gpu_product="H100", context=16384, concurrency=16)
    assert d.fits and d.context == d.vllm_max_model_len == 16384
    assert d.estimate.kv_cache_bytes == 147_456 * 16384 * 16


def test_unnamed_gpu_product_is_not_checked():
    d = autoconfigure(model("Qwen3-8B"), gpu_count=1)
    assert d.fits and not d.checked and d.engine == "vllm"
    assert "not checked" in d.reason


# -- resources ---------------------------------------------------------------------------------


def test_cpu_resources_come_from_the_estimate():
    d = autoconfigure(model("Qwen3-4B"), cpu_only=True)
    r = d.resources
    assert r.gpu_count == 0
    assert r.memory_request_bytes >= d.estimate.total_bytes
    assert r.memory_limit_bytes >= r.memory_request_bytes
    assert r.cpu_limit_millicores == r.cpu_request_millicores == 4000  # Small tier
    k8s = r.to_kubernetes()
    assert "nvidia.com/gpu" not in k8s["requests"]
    assert k8s["requests"]["memory"].endswith("Mi")


def test_gpu_resources():
    d = autoconfigure(model("Qwen3-32B"), gpu_product="H100", gpu_count=2, quant_format="none")
    assert d.fits and d.gpu_count == 2
    k8s = d.resources.to_kubernetes()
    assert k8s["requests"]["nvidia.com/gpu"] == k8s["limits"]["nvidia.com/gpu"] == "2"
    assert "cpu" not in k8s["limits"]
    assert d.resources.memory_limit_bytes > d.estimate.weights_bytes  # room for the load's page cache
    assert d.storage_bytes >= d.estimate.weights_bytes


def test_decision_serialises():
    d = autoconfigure(model("gemma-3-1b-it"), gpu_product="L4")
    doc = json.loads(json.dumps(d.to_dict()))
    assert doc["tier"] == "Micro" and doc["fits"] is True
    assert doc["estimate"]["weights_bytes"] == d.estimate.weights_bytes


# -- errors ------------------------------------------------------------------------------------


def test_errors_are_sizing_errors():
    m = model("Qwen3-8B")
    with pytest.raises(SizingError, match="vLLM needs a GPU"):
        autoconfigure(m, engine="vllm", cpu_only=True)
    with pytest.raises(UnknownGpuError):
        autoconfigure(m, gpu_product="NVIDIA-Imaginary-9000")
    with pytest.raises(InvalidQuantizationError, match="ollama"):
        autoconfigure(m, engine="ollama", quant_format="awq")
    with pytest.raises(InvalidQuantizationError):
        autoconfigure(m, quant_format="gguf", quant_type="Q3_K_S")
    with pytest.raises(SizingError, match="attention heads"):
        autoconfigure(m, gpu_product="L4", gpu_count=3)
    with pytest.raises(SizingError, match="40960"):
        autoconfigure(m, gpu_product="L4", context=131072)
    with pytest.raises(InvalidQuantizationError, match="compute capability"):
        autoconfigure(m, quant_format="fp8", gpu_product="T4")
    with pytest.raises(SizingError):
        autoconfigure(m, cpu_only=True, gpu_product="L4")
