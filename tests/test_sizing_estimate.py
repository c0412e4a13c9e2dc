"""The memory estimator: weights per format against published file sizes, KV cache, overheads."""

from __future__ import annotations

from dataclasses import replace

import pytest

from slm_operator.sizing.catalog import facts_from_config, lookup_model
from slm_operator.sizing.estimate import (
    estimate,
    kv_bytes_per_token,
    kv_cache_bytes,
    kv_heads_per_device,
    weight_bytes,
)
from slm_operator.sizing.quant import FORMAT_TYPES, gguf_tensor_types, parse_quant

TOLERANCE = 0.05  # the bar; the GGUF model lands within 1.5 % of every file below


def model(name):
    m = lookup_model(name)
    assert m is not None
    return m


def within(estimate_bytes: int, published_gb: float) -> float:
    return abs(estimate_bytes / 1e9 - published_gb) / published_gb


# Published GGUF file sizes (decimal GB, as the hub's file listings and the quantizers' model
# cards show them). bartowski's quants use an imatrix, which changes values, not tensor types.
GGUF_FILES = [
    # bartowski/Qwen_Qwen3-4B-GGUF: Qwen_Qwen3-4B-<type>.gguf
    ("Qwen/Qwen3-4B", "Q8_0", 4.28), ("Qwen/Qwen3-4B", "Q6_K", 3.31), ("Qwen/Qwen3-4B", "Q5_K_M", 2.89),
    ("Qwen/Qwen3-4B", "Q4_K_M", 2.50), ("Qwen/Qwen3-4B", "Q4_0", 2.38),
    # bartowski/Qwen_Qwen3-8B-GGUF and Qwen/Qwen3-8B-GGUF: Qwen3-8B-<type>.gguf
    ("Qwen/Qwen3-8B", "Q8_0", 8.71), ("Qwen/Qwen3-8B", "Q6_K", 6.73), ("Qwen/Qwen3-8B", "Q4_K_M", 5.03),
    # bartowski/Qwen_Qwen3-14B-GGUF: Qwen_Qwen3-14B-<type>.gguf
    ("Qwen/Qwen3-14B", "Q8_0", 15.70), ("Qwen/Qwen3-14B", "Q6_K", 12.12), ("Qwen/Qwen3-14B", "Q5_K_M", 10.51),
    ("Qwen/Qwen3-14B", "Q4_K_M", 9.00), ("Qwen/Qwen3-14B", "Q4_0", 8.54),
    # bartowski/google_gemma-3-4b-it-GGUF: google_gemma-3-4b-it-<type>.gguf (text model only)
    ("google/gemma-3-4b-it", "Q8_0", 4.13), ("google/gemma-3-4b-it", "Q6_K", 3.19),
    ("google/gemma-3-4b-it", "Q5_K_M", 2.83), ("google/gemma-3-4b-it", "Q4_K_M", 2.49),
    # bartowski/google_gemma-3-1b-it-qat-GGUF (same shapes as gemma-3-1b-it) and
    # bartowski/google_gemma-3-1b-it-GGUF Q4_0 (722 MB); hidden 1152 forces k-quant fallbacks.
    ("google/gemma-3-1b-it", "Q8_0", 1.07), ("google/gemma-3-1b-it", "Q6_K", 1.01),
    ("google/gemma-3-1b-it", "Q5_K_M", 0.85), ("google/gemma-3-1b-it", "Q4_K_M", 0.81),
    ("google/gemma-3-1b-it", "Q4_0", 0.722),
    # bartowski/phi-4-GGUF: phi-4-<type>.gguf (fused attn_qkv / ffn_up tensors)
    ("microsoft/phi-4", "Q8_0", 15.58), ("microsoft/phi-4", "Q6_K", 12.03), ("microsoft/phi-4", "Q5_K_M", 10.60),
    ("microsoft/phi-4", "Q4_K_M", 9.05), ("microsoft/phi-4", "Q4_0", 8.41),
    # bartowski/Llama-3.2-1B-Instruct-GGUF: Llama-3.2-1B-Instruct-<type>.gguf
    ("meta-llama/Llama-3.2-1B-Instruct", "Q8_0", 1.32), ("meta-llama/Llama-3.2-1B-Instruct", "Q6_K", 1.02),
    ("meta-llama/Llama-3.2-1B-Instruct", "Q5_K_M", 0.91), ("meta-llama/Llama-3.2-1B-Instruct", "Q4_K_M", 0.81),
]


@pytest.mark.parametrize(("name", "qtype", "published_gb"), GGUF_FILES)
def test_gguf_weights_match_published_files(name, qtype, published_gb):
    assert within(weight_bytes(model(name), "gguf", qtype), published_gb) < TOLERANCE


# 16-bit sizes: bartowski's *-bf16.gguf / *-f16.gguf (same bytes as the safetensors for text
# models), and google/gemma-3-4b-it's two safetensors shards (4.96 GB + 3.64 GB, vision included).
SIXTEEN_BIT_FILES = [
    ("Qwen/Qwen3-8B", 16.39), ("Qwen/Qwen3-14B", 29.54), ("Qwen/Qwen3-4B", 8.05),
    ("microsoft/phi-4", 29.32), ("meta-llama/Llama-3.2-1B-Instruct", 2.48), ("google/gemma-3-4b-it", 8.60),
]


@pytest.mark.parametrize(("name", "published_gb"), SIXTEEN_BIT_FILES)
def test_bf16_weights_match_published_files(name, published_gb):
    assert within(weight_bytes(model(name), "none", "bf16"), published_gb) < TOLERANCE


def test_gguf_leaves_the_vision_tower_out():
    # bartowski/google_gemma-3-4b-it-GGUF gemma-3-4b-it-bf16.gguf is 7.77 GB: the text model
    # only (the vision tower ships as a separate mmproj file).
    g = model("gemma-3-4b-it")
    assert within(g.text_params * 2, 7.77) < 0.01
    assert weight_bytes(g, "gguf", "Q8_0") < g.text_params * 1.07


LLAMA2_7B_CONFIG = {  # meta-llama/Llama-2-7b-chat-hf config.json
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}


def mistral_v02():
    # Mistral-7B-Instruct-v0.2 = v0.3's shapes with the older 32000-token vocabulary.
    v03 = model("mistralai/Mistral-7B-Instruct-v0.3")
    return replace(v03, vocab_size=32000, params=v03.params - 2 * 768 * 4096)


def test_awq_weights_match_published_files():
    # TheBloke/Mistral-7B-Instruct-v0.2-AWQ model.safetensors: 4.15 GB
    assert within(weight_bytes(mistral_v02(), "awq", "w4a16"), 4.15) < TOLERANCE
    # TheBloke/Llama-2-7B-Chat-AWQ model.safetensors: 3.89 GB
    llama2 = facts_from_config(LLAMA2_7B_CONFIG, model_id="meta-llama/Llama-2-7b-chat-hf")
    assert within(weight_bytes(llama2, "awq", "w4a16"), 3.89) < TOLERANCE


def test_gptq_weights_match_published_files():
    # TheBloke/Llama-2-7B-Chat-GPTQ (main: 4-bit, group 128) model.safetensors: 3.90 GB
    llama2 = facts_from_config(LLAMA2_7B_CONFIG)
    assert within(weight_bytes(llama2, "gptq", "w4a16"), 3.90) < TOLERANCE
    # TheBloke/Mistral-7B-Instruct-v0.2-GPTQ (main) model.safetensors: 4.16 GB
    assert within(weight_bytes(mistral_v02(), "gptq", "w4a16"), 4.16) < TOLERANCE


def test_onnx_int4_cpu_matches_published_file():
    # microsoft/Phi-3-mini-4k-instruct-onnx, cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4/
    # phi3-mini-4k-instruct-cpu-int4-rtn-block-32-acc-level-4.onnx.data: 2.72 GB. Phi-3.5-mini
    # has identical shapes (32 x 3072, MLP 8192, vocab 32064, untied).
    phi35 = model("microsoft/Phi-3.5-mini-instruct")
    assert within(weight_bytes(phi35, "onnx", "int4", device="cpu"), 2.72) < TOLERANCE


def test_onnx_int4_gpu_is_smaller_than_cpu():
    # fp16 scales and embeddings on CUDA, fp32 on CPU (onnxruntime-genai builder I/O dtype).
    m = model("Phi-4-mini-instruct")
    cpu, gpu = weight_bytes(m, "onnx", "int4", device="cpu"), weight_bytes(m, "onnx", "int4", device="gpu")
    assert gpu < cpu
    assert cpu - gpu >= m.embedding_params * 2  # the fp32 embedding table alone


def test_fp8_keeps_embeddings_in_16_bit():
    m = model("Qwen3-8B")
    fp8 = weight_bytes(m, "fp8", "fp8")
    assert fp8 >= m.linear_params + (m.embedding_params + m.lm_head_params) * 2
    assert fp8 < m.linear_params * 1.01 + (m.embedding_params + m.lm_head_params) * 2 + m.other_params * 2


@pytest.mark.parametrize("name", ["Qwen3-0.6B", "Qwen3-8B", "gemma-3-1b-it", "gemma-3-27b-it",
                                  "Phi-4-mini-instruct", "SmolLM2-1.7B-Instruct"])
def test_formats_order_by_size(name):
    m = model(name)
    w = {q: weight_bytes(m, *parse_quant(q)) for q in ("bf16", "fp8", "awq", "Q8_0", "Q6_K", "Q5_K_M",
                                                        "Q4_K_M", "Q4_0")}
    assert w["Q4_0"] <= w["Q4_K_M"] < w["Q5_K_M"] < w["Q6_K"] < w["Q8_0"] < w["bf16"]
    assert w["awq"] < w["fp8"] < w["bf16"]


@pytest.mark.parametrize(("fmt", "types"), FORMAT_TYPES.items())
def test_every_format_type_is_estimated(fmt, types):
    for t in types:
        assert weight_bytes(model("Qwen3-1.7B"), fmt, t) > 0


def test_gguf_mix_rules():
    g1 = model("gemma-3-1b-it")
    types = {name: t for name, _, t in gguf_tensor_types(
        g1.layer_matrices, layers=g1.layers, vocab=g1.vocab_size, hidden=g1.hidden_size,
        tied=True, fused_qkv=False, qtype="Q4_K_M")}
    assert types["token_embd"] == "Q8_0"      # tied output role, 1152 % 256 != 0
    assert types["blk.3.attn_q"] == "Q5_0"    # Q4_K fallback for 1152-wide rows
    assert types["blk.0.attn_output"] == "Q4_K"  # 1024-wide rows quantize normally
    assert types["blk.0.ffn_down"] == "Q6_K"  # use_more_bits layer
    assert types["blk.3.ffn_down"] == "Q4_K"
    q8 = model("Qwen3-8B")
    mix = gguf_tensor_types(q8.layer_matrices, layers=36, vocab=q8.vocab_size, hidden=4096,
                            tied=False, fused_qkv=False, qtype="Q4_K_M")
    downs = [t for name, _, t in mix if name.endswith("ffn_down")]
    assert downs.count("Q6_K") == 18  # half the layers get more bits
    assert dict((n, t) for n, _, t in mix)["output"] == "Q6_K"
    phi = model("Phi-4-mini-instruct")
    fused = {n: t for n, _, t in gguf_tensor_types(phi.layer_matrices, layers=32, vocab=phi.vocab_size,
                                                    hidden=3072, tied=True, fused_qkv=True, qtype="Q4_K_M")}
    assert fused["blk.0.attn_qkv"] == "Q5_K" and "blk.0.attn_v" not in fused


# -- KV cache ------------------------------------------------------------------------------------


def test_kv_cache_formula_gqa():
    m = model("Qwen3-8B")  # 36 layers, 8 KV heads of 128
    assert kv_bytes_per_token(m) == 2 * 36 * 8 * 128 * 2 == 147_456
    assert kv_cache_bytes(m, 32768, 4) == 147_456 * 32768 * 4
    # Without grouped-query attention (32 KV heads) the cache would be 4x larger.
    assert kv_cache_bytes(replace(m, kv_heads=32), 32768, 4) == 4 * kv_cache_bytes(m, 32768, 4)


def test_kv_cache_multi_head_attention_model():
    m = model("SmolLM2-1.7B-Instruct")  # MHA: 32 KV heads of 64 over 24 layers
    assert not m.uses_gqa
    assert kv_cache_bytes(m, 8192) == 2 * 24 * 32 * 64 * 2 * 8192


def test_kv_cache_long_context():
    m = model("Llama-3.2-3B-Instruct")
    assert kv_cache_bytes(m, 131072) == 2 * 28 * 8 * 128 * 2 * 131072 == 14 * (1 << 30)


def test_kv_cache_gemma3_sliding_window():
    g = model("gemma-3-27b-it")  # 52 local layers (window 1024) + 10 global, 16 KV heads of 128
    per_layer_token = 2 * 16 * 128 * 2
    capped = kv_cache_bytes(g, 131072)
    assert capped == per_layer_token * (10 * 131072 + 52 * 1024)
    uncapped = kv_cache_bytes(g, 131072, sliding_window_capped=False)
    assert uncapped == per_layer_token * 62 * 131072
    assert capped < uncapped / 5
    # Within the window the cap changes nothing.
    assert kv_cache_bytes(g, 1024) == kv_cache_bytes(g, 1024, sliding_window_capped=False)


def test_kv_cache_tensor_parallel_splits_and_replicates_heads():
    m = model("Qwen3-14B")  # 8 KV heads
    assert kv_cache_bytes(m, 4096, tensor_parallel=2) * 2 == kv_cache_bytes(m, 4096)
    g = model("gemma-3-1b-it")  # 1 KV head: replicated on every GPU
    assert kv_heads_per_device(g, 2) == 1
    assert kv_cache_bytes(g, 4096, tensor_parallel=2) == kv_cache_bytes(g, 4096)


# -- whole estimates -------------------------------------------------------------------------------


def test_estimate_adds_up_vllm():
    m = model("Qwen3-8B")
    e = estimate(m, engine="vllm", quant_format="none", quant_type="bf16", context=8192, concurrency=2)
    assert e.total_bytes == e.weights_bytes + e.kv_cache_bytes + e.overhead_bytes
    assert e.per_device_bytes == e.total_bytes
    assert e.kv_cache_bytes == kv_cache_bytes(m, 8192, 2)
    assert set(e.overheads) == {"cuda_context", "cuda_graphs", "activations"}
    assert e.host_memory_bytes < e.total_bytes  # the GPU holds the model, not the container


def test_estimate_tensor_parallel_per_device():
    m = model("Qwen3-32B")
    one = estimate(m, engine="vllm", quant_format="none", context=4096)
    two = estimate(m, engine="vllm", quant_format="none", context=4096, tensor_parallel=2)
    assert two.weights_bytes == one.weights_bytes
    assert two.per_device_bytes < one.per_device_bytes * 0.6


def test_estimate_cpu_engines():
    m = model("Phi-4-mini-instruct")
    onnx = estimate(m, engine="onnxruntime", quant_format="onnx", quant_type="int4", context=4096, device="cpu")
    assert onnx.kv_bytes_per_element == 4  # fp32 KV cache on CPU
    assert onnx.kv_cache_bytes == kv_cache_bytes(m, 4096, bytes_per_element=4)
    assert onnx.host_memory_bytes == onnx.total_bytes
    gguf = estimate(m, engine="ollama", quant_format="gguf", quant_type="Q4_K_M", context=4096, device="cpu")
    assert gguf.kv_bytes_per_element == 2
    assert {"runtime", "compute_buffer"} <= set(gguf.overheads)
    assert gguf.total_bytes < onnx.total_bytes


def test_estimate_ollama_caps_gemma_window_onnx_does_not():
    g = model("gemma-3-4b-it")
    ollama = estimate(g, engine="ollama", quant_format="gguf", context=32768, device="cpu")
    onnx = estimate(g, engine="onnxruntime", quant_format="onnx", quant_type="fp16", context=32768, device="gpu")
    assert ollama.kv_cache_bytes == kv_cache_bytes(g, 32768)
    assert onnx.kv_cache_bytes == kv_cache_bytes(g, 32768, sliding_window_capped=False)
