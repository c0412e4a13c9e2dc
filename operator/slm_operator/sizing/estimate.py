"""Memory estimates: weights by quantization, KV cache, engine overheads. Pure functions.

All results are ints of bytes. The formulas and the source of every constant are in
docs/sizing.md; the short version:

weights (``weight_bytes``)
    none (bf16/fp16)  2 bytes x every parameter (vision tower included; tied embeddings once).
    fp8               1 byte per transformer-matrix weight + a fp32 scale per output channel;
                      embeddings, lm_head, norms, vision tower stay 16-bit (llm-compressor's
                      FP8_DYNAMIC scheme ignores lm_head).
    awq / gptq w4a16  per matrix K x N: K*N/2 (packed int4) + (K/128)*N*2 (fp16 scales) +
                      (K/128)*N/2 (packed 4-bit zeros); GPTQ adds a K x int32 g_idx.
                      Embeddings, lm_head, norms, vision stay 16-bit.
    gguf              llama.cpp's per-tensor mix (quant.gguf_tensor_types) at each ggml type's
                      bits per weight; norms F32; text-only (vision goes in a separate mmproj).
    onnx int4         onnxruntime-genai builder defaults: every MatMul (layers and lm_head,
                      a separate copy even when tied) as MatMulNBits, block 32, symmetric:
                      K*N/2 + (K/32)*N*scale_bytes, scale = fp32 on CPU, fp16 on GPU; the
                      embedding (Gather) and norms stay in the I/O dtype (fp32 CPU / fp16 GPU).
    onnx fp16         2 bytes per weight, lm_head a separate copy.

KV cache (``kv_cache_bytes``)
    2 (K and V) x kv_heads x head_dim x bytes_per_element x tokens x sequences, summed over
    layers; sliding-window layers hold min(tokens, window) tokens where the engine supports
    it (vLLM, Ollama), all tokens otherwise (ONNX Runtime GenAI). Tensor parallelism splits
    KV heads across GPUs (a head is replicated when there are more GPUs than KV heads).

engine overheads (``engine_overheads``), per device: each engine module's runtime_overhead
(engines/<engine>.py), for example
    vLLM:  CUDA context 512 MiB + CUDA graphs 512 MiB + activation peak of the profiling run
           max_num_batched_tokens x (3 x intermediate/TP + 6 x hidden) x 2 bytes plus sampler
           logits max_num_seqs x vocab x 4 bytes x 2.
    Ollama: runtime 384 MiB (+ 512 MiB CUDA context on GPU) + compute buffer
           n_ubatch(512) x 4 bytes x (vocab + 3 x intermediate).
    ONNX Runtime GenAI: runtime 384 MiB (+ 512 MiB CUDA context on GPU) + prompt logits
           min(context, 2048) x vocab x io bytes + 10 % of the weights for MatMulNBits
           pre-packing.
    llama.cpp: runtime 256 MiB (+ 512 MiB CUDA context on GPU) + the same compute buffer as
           Ollama.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from slm_operator import engines
from slm_operator.engines.vllm import CUDA_GRAPHS_BYTES
from slm_operator.sizing.catalog import GIB, GpuProduct, ModelFacts
from slm_operator.sizing.errors import InvalidQuantizationError
from slm_operator.sizing.quant import GGML_TYPES, ggml_bytes, gguf_tensor_types, normalize

# -- constants (sources in docs/sizing.md) ------------------------------------------------
AWQ_GROUP = 128            # AutoAWQ / llm-compressor W4A16 default group size
GPTQ_GROUP = 128           # GPTQ default group size
ONNX_INT4_BLOCK = 32       # onnxruntime-genai builder: int4_block_size default
__all__ = ["CUDA_GRAPHS_BYTES"]  # re-exported for autoconfig (vLLM's budget excludes graphs)


@dataclass(frozen=True)
class MemoryEstimate:
    """What one deployment replica needs.

    weights_bytes, kv_cache_bytes, overhead_bytes and total_bytes are totals over all
    devices of the replica; per_device_bytes is what one GPU must hold (equal to
    total_bytes with one GPU or on CPU). host_memory_bytes is the container RAM: the whole
    total on CPU, the engine's host process on GPU.
    """

    engine: str
    quant_format: str
    quant_type: str
    device: str                       # "gpu" | "cpu"
    context: int                      # tokens per sequence
    concurrency: int                  # sequences held at full context
    tensor_parallel: int
    weights_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int
    total_bytes: int
    per_device_bytes: int
    host_memory_bytes: int
    kv_bytes_per_token: int           # one sequence, all layers (sliding layers uncapped)
    kv_bytes_per_element: int
    overheads: dict[str, int] = field(default_factory=dict)  # per device, by part

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- weights -------------------------------------------------------------------------------


def _w4_group_bytes(k: int, n: int, group: int, *, g_idx: bool) -> int:
    groups = math.ceil(k / group)
    packed = k * n // 2
    scales = groups * n * 2
    zeros = groups * n // 2
    return packed + scales + zeros + (k * 4 if g_idx else 0)


def _int4_block_bytes(k: int, n: int, block: int, scale_bytes: int) -> int:
    return k * n // 2 + math.ceil(k / block) * n * scale_bytes


def weight_bytes(facts: ModelFacts, quant_format: str, quant_type: str | None = None, *,
                 device: str = "gpu") -> int:
    """Bytes of the model's weights as the engine loads them (≈ the artifact's file size).

    ``device`` matters for ONNX int4 only (fp32 scales and embeddings on CPU, fp16 on GPU).
    """
    fmt, qtype = normalize(quant_format, quant_type)
    sixteen = 2
    embeds = facts.embedding_params + facts.lm_head_params
    rest16 = (facts.other_params + facts.vision_params) * sixteen
    mats = [(k, n) for k, n in facts.layer_matrices.values()]

    if fmt == "none":
        return facts.params * sixteen
    if fmt == "fp8":
        linear = facts.layers * sum(k * n + n * 4 for k, n in mats)
        return linear + embeds * sixteen + rest16
    if fmt in ("awq", "gptq"):
        group = AWQ_GROUP if fmt == "awq" else GPTQ_GROUP
        linear = facts.layers * sum(_w4_group_bytes(k, n, group, g_idx=fmt == "gptq") for k, n in mats)
        return linear + embeds * sixteen + rest16
    if fmt == "gguf":
        tensors = gguf_tensor_types(
            facts.layer_matrices, layers=facts.layers, vocab=facts.vocab_size,
            hidden=facts.hidden_size, tied=facts.tied_embeddings, fused_qkv=facts.fused_qkv,
            qtype=qtype)
        matrices = sum(ggml_bytes(n, t) for _, n, t in tensors)
        norms = facts.other_params * int(GGML_TYPES["F32"][0] / 8)
        return matrices + norms
    if fmt == "onnx":
        io = 4 if device == "cpu" and qtype == "int4" else 2
        lm_head = (facts.hidden_size, facts.vocab_size)
        if qtype == "int4":
            linear = facts.layers * sum(_int4_block_bytes(k, n, ONNX_INT4_BLOCK, io) for k, n in mats)
            head = _int4_block_bytes(*lm_head, ONNX_INT4_BLOCK, io)
        else:
            linear = facts.layers * sum(k * n for k, n in mats) * 2
            head = lm_head[0] * lm_head[1] * 2
        return linear + head + facts.embedding_params * io + facts.other_params * io
    raise InvalidQuantizationError(f"No weight model for format {fmt!r}.")  # pragma: no cover


# -- KV cache ------------------------------------------------------------------------------


def kv_heads_per_device(facts: ModelFacts, tensor_parallel: int = 1) -> int:
    """KV heads one GPU holds: split across GPUs, replicated when GPUs outnumber heads."""
    return max(1, math.ceil(facts.kv_heads / tensor_parallel))


def kv_cache_bytes(facts: ModelFacts, tokens: int, sequences: int = 1, *, bytes_per_element: int = 2,
                   sliding_window_capped: bool = True, tensor_parallel: int = 1) -> int:
    """KV-cache bytes on one device for ``sequences`` sequences of ``tokens`` tokens each.

    2 x kv_heads x head_dim x bytes_per_element per token per layer (GQA-aware: kv_heads,
    not attention heads). Sliding-window layers keep at most ``sliding_window`` tokens when
    ``sliding_window_capped``. With tensor_parallel > 1 the result is per GPU.
    """
    per_token_layer = 2 * kv_heads_per_device(facts, tensor_parallel) * facts.head_dim * bytes_per_element
    window_tokens = tokens
    if sliding_window_capped and facts.sliding_window:
        window_tokens = min(tokens, facts.sliding_window)
    token_layers = facts.full_attention_layers * tokens + facts.sliding_window_layers * window_tokens
    return per_token_layer * token_layers * sequences


def kv_bytes_per_token(facts: ModelFacts, *, bytes_per_element: int = 2) -> int:
    """KV bytes one token of one sequence adds across all layers (no window cap)."""
    return 2 * facts.kv_heads * facts.head_dim * bytes_per_element * facts.layers


def kv_element_bytes(engine: str, quant_format: str, quant_type: str, device: str) -> int:
    """KV-cache element size (bytes) of `engine` (its module's hook; UnknownEngineError otherwise)."""
    return engines.get(engine).kv_element_bytes(quant_format, quant_type, device)


def sliding_window_capped(engine: str) -> bool:
    """Whether `engine` keeps only the window's tokens in sliding-window layers (its hook)."""
    return engines.get(engine).sliding_window_capped


# -- engine overheads ----------------------------------------------------------------------


def engine_overheads(facts: ModelFacts, engine: str, *, device: str, context: int,
                     weights_bytes: int, tensor_parallel: int = 1,
                     gpu: GpuProduct | None = None, io_bytes: int = 2) -> dict[str, int]:
    """Per-device overhead parts (bytes) for an engine: its module's runtime_overhead."""
    return engines.get(engine).runtime_overhead(
        facts, device=device, context=context, weights_bytes=weights_bytes,
        tensor_parallel=tensor_parallel, gpu=gpu, io_bytes=io_bytes)


# -- the whole estimate ----------------------------------------------------------------------


def estimate(facts: ModelFacts, *, engine: str, quant_format: str, quant_type: str | None = None,
             context: int, concurrency: int = 1, device: str = "gpu", tensor_parallel: int = 1,
             gpu: GpuProduct | None = None) -> MemoryEstimate:
    """Weights + KV cache + engine overheads for one replica.

    ``context`` is tokens per sequence (vLLM max_model_len, Ollama num_ctx, GenAI
    max_length); ``concurrency`` the sequences held at that length at once.
    """
    fmt, qtype = normalize(quant_format, quant_type)
    tp = max(1, tensor_parallel) if device == "gpu" else 1
    weights = weight_bytes(facts, fmt, qtype, device=device)
    kv_elem = kv_element_bytes(engine, fmt, qtype, device)
    kv_dev = kv_cache_bytes(facts, context, concurrency, bytes_per_element=kv_elem,
                            sliding_window_capped=sliding_window_capped(engine), tensor_parallel=tp)
    parts = engine_overheads(facts, engine, device=device, context=context, weights_bytes=weights,
                             tensor_parallel=tp, gpu=gpu, io_bytes=kv_elem)
    overhead_dev = sum(parts.values())
    per_device = math.ceil(weights / tp) + kv_dev + overhead_dev
    total = weights + kv_dev * tp + overhead_dev * tp
    host = total if device == "cpu" else engines.get(engine).host_base_bytes
    return MemoryEstimate(
        engine=engine, quant_format=fmt, quant_type=qtype, device=device, context=context,
        concurrency=concurrency, tensor_parallel=tp, weights_bytes=weights,
        kv_cache_bytes=kv_dev * tp, overhead_bytes=overhead_dev * tp, total_bytes=total,
        per_device_bytes=per_device, host_memory_bytes=host,
        kv_bytes_per_token=kv_bytes_per_token(facts, bytes_per_element=kv_elem),
        kv_bytes_per_element=kv_elem, overheads=parts)


# -- storage: the model-cache PVC at the quantization Job's peak ------------------------------

SOURCE_BYTES_PER_PARAM = 2   # the hub's 16-bit safetensors, one weight set (fetch.select_files)
STORAGE_HEADROOM = 1.2       # tokenizer/config files, filesystem overhead, estimate error


def gguf_f16_bytes(facts: ModelFacts) -> int:
    """llama.cpp's F16 reference GGUF: text matrices and embeddings 16-bit, norms F32, no vision."""
    norms = facts.other_params
    return (facts.text_params - norms) * 2 + norms * 4


def job_disk_parts(facts: ModelFacts, quant_format: str, quant_type: str | None = None, *,
                   device: str = "gpu") -> dict[str, int]:
    """Bytes on the model-cache PVC at the quantization Job's peak, by part.

    source      the download cache (one 16-bit weight set), kept for resumable restarts.
    reference   gguf only: the F16 GGUF the converter writes and the quantizer reads, in a
                scratch folder on the same PVC, alive until the quality check ends.
    artifact    the published artifact (quantized weights); none and fp8 publish the
                source files as hard links into the download cache (same volume): 0 more.
    """
    fmt, qtype = normalize(quant_format, quant_type)
    parts = {"source": facts.params * SOURCE_BYTES_PER_PARAM}
    if fmt == "gguf":
        parts["reference"] = gguf_f16_bytes(facts)
    if fmt not in ("none", "fp8"):
        parts["artifact"] = weight_bytes(facts, fmt, qtype, device=device)
    return parts


def storage_bytes(facts: ModelFacts, quant_format: str, quant_type: str | None = None, *,
                  device: str = "gpu") -> int:
    """The PVC default: the Job's peak (job_disk_parts) x STORAGE_HEADROOM, rounded up to GiB."""
    peak = sum(job_disk_parts(facts, quant_format, quant_type, device=device).values())
    return math.ceil(peak * STORAGE_HEADROOM / GIB) * GIB


def gib(n_bytes: int) -> str:
    """"12.3 GiB" (one decimal)."""
    return f"{n_bytes / GIB:.1f} GiB"
