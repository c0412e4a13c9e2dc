"""Quantization formats and types, and the bytes each one takes per weight.

Names used across the operator (the CRD's spec.quantization):

===========  =============================  ====================================
format       types                          engine (engines/table.py is the source)
===========  =============================  ====================================
none         bf16, fp16                     vllm
fp8          fp8                            vllm
awq          w4a16                          vllm
gptq         w4a16                          vllm
gguf         Q4_K_M, Q5_K_M, Q8_0, Q6_K,    llamacpp, ollama
             Q4_0
gguf         TQ1_0, TQ2_0 (ternary)         llamacpp (BitNet b1.58 models only)
onnx         int4, fp16                     onnxruntime (onnxruntime-genai)
===========  =============================  ====================================

``parse_quant`` turns the CLI's short names ("Q4_K_M", "q4_k_m", "awq", "int4", "fp8",
"bf16") into a (format, type) pair; ``normalize`` validates and canonicalises a pair.

GGUF files are a per-tensor mix of ggml block types; ``gguf_tensor_types`` reproduces
llama.cpp's choice (src/llama-quant.cpp, ``llama_tensor_get_type``) for the mixes above. The
bits per weight of each ggml type follow from its block layout (ggml/src/ggml-common.h):

- Q8_0: 32 int8 + one fp16 scale = 34 bytes / 32 weights = 8.5 bpw
- Q6_K: 256 weights in 210 bytes = 6.5625 bpw
- Q5_K: 176 bytes / 256 = 5.5 bpw; Q4_K: 144 / 256 = 4.5 bpw
- Q5_1: 24 / 32 = 6.0; Q5_0: 22 / 32 = 5.5; Q4_1: 20 / 32 = 5.0; Q4_0: 18 / 32 = 4.5 bpw
- TQ1_0 (ternary, base-3 packed): fp16 scale + 256/64 + (256 - 4*256/64)/5 = 54 bytes / 256
  = 1.6875 bpw; TQ2_0 (ternary, 2 bits each): 64 + 2 = 66 bytes / 256 = 2.0625 bpw
  (block_tq1_0 / block_tq2_0; gguf-py GGML_QUANT_SIZES TQ1_0 (256, 54), TQ2_0 (256, 66)).
"""

from __future__ import annotations

from slm_operator.engines import table
from slm_operator.sizing.errors import InvalidQuantizationError

# One table for the API (admission rules) and sizing: formats and their types, default first.
FORMAT_TYPES = table.FORMAT_TYPES
ENGINES = table.ENGINE_NAMES
ENGINE_FORMATS: dict[str, tuple[str, ...]] = {r.name: r.formats for r in table.ROWS}

# ggml type -> (bits per weight, block length a row must be a multiple of)
GGML_TYPES: dict[str, tuple[float, int]] = {
    "F32": (32.0, 1), "F16": (16.0, 1),
    "Q8_0": (8.5, 32), "Q6_K": (6.5625, 256), "Q5_K": (5.5, 256), "Q4_K": (4.5, 256),
    "Q5_1": (6.0, 32), "Q5_0": (5.5, 32), "Q4_1": (5.0, 32), "Q4_0": (4.5, 32),
    "TQ1_0": (1.6875, 256), "TQ2_0": (2.0625, 256),
}
# llama.cpp's substitutes when a row length is not a multiple of the k-quant block (256),
# e.g. gemma-3-1b's hidden size 1152 (llama-quant.cpp, "convert_incompatible_tensor").
_GGML_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "TQ1_0": "Q4_0", "TQ2_0": "Q4_0"}
_GGUF_BASE = {"Q4_K_M": "Q4_K", "Q5_K_M": "Q5_K", "Q6_K": "Q6_K", "Q8_0": "Q8_0", "Q4_0": "Q4_0",
              "TQ1_0": "TQ1_0", "TQ2_0": "TQ2_0"}

_SHORT_NAMES: dict[str, tuple[str, str]] = {
    "bf16": ("none", "bf16"), "fp16": ("none", "fp16"), "none": ("none", "bf16"),
    "fp8": ("fp8", "fp8"),
    "awq": ("awq", "w4a16"), "gptq": ("gptq", "w4a16"),
    "int4": ("onnx", "int4"), "onnx": ("onnx", "int4"), "onnx-int4": ("onnx", "int4"),
    "onnx-fp16": ("onnx", "fp16"),
}


def default_type(fmt: str, *, bf16_supported: bool = True) -> str:
    if fmt == "none":
        return "bf16" if bf16_supported else "fp16"
    return FORMAT_TYPES[fmt][0]


def normalize(fmt: str, qtype: str | None) -> tuple[str, str]:
    """Validate and canonicalise (format, type); a missing type takes the format's default."""
    f = fmt.strip().lower()
    if f not in FORMAT_TYPES:
        raise InvalidQuantizationError(
            f"Unknown quantization format {fmt!r}; use one of {', '.join(FORMAT_TYPES)}.")
    if not qtype:
        return f, default_type(f)
    for t in FORMAT_TYPES[f]:
        if t.lower() == qtype.strip().lower():
            return f, t
    raise InvalidQuantizationError(
        f"Quantization type {qtype!r} is not valid for format {f!r}; use one of "
        f"{', '.join(FORMAT_TYPES[f])}.")


def parse_quant(name: str) -> tuple[str, str]:
    """(format, type) for a CLI short name: Q4_K_M / q4_k_m / awq / gptq / int4 / fp8 / bf16 /
    fp16, or an explicit "format:type" such as "onnx:fp16"."""
    s = name.strip()
    if ":" in s:
        fmt, qtype = s.split(":", 1)
        return normalize(fmt, qtype)
    low = s.lower()
    if low in _SHORT_NAMES:
        return _SHORT_NAMES[low]
    for t in FORMAT_TYPES["gguf"]:
        if t.lower() == low or f"gguf-{t.lower()}" == low:
            return "gguf", t
    if low in FORMAT_TYPES:
        return normalize(low, None)
    known = ", ".join([*FORMAT_TYPES["gguf"], *_SHORT_NAMES])
    raise InvalidQuantizationError(f"Unknown quantization {name!r}; use one of: {known}.")


def check_engine_format(engine: str, fmt: str, qtype: str | None = None) -> None:
    """Raise InvalidQuantizationError when `engine` does not serve fmt (or fmt's qtype), naming
    the engines that do; an unknown engine raises too (never a fall-through)."""
    if engine not in ENGINE_FORMATS:
        raise InvalidQuantizationError(
            f"Unknown engine {engine!r}; use {', '.join(ENGINES)} or auto.")
    row = table.row(engine)
    if fmt not in row.formats:
        raise InvalidQuantizationError(
            f"Engine {engine} does not serve {fmt!r} models; it serves "
            f"{', '.join(row.formats)} (use engine {' or '.join(table.engines_serving(fmt))} for {fmt}).")
    if qtype is not None and qtype not in row.types(fmt):
        e = InvalidQuantizationError(
            f"Engine {engine} does not serve {fmt} {qtype}: set quantization.type to one of "
            f"{', '.join(row.types(fmt))}, or engine.name to {' or '.join(table.engines_serving(fmt, qtype))}.")
        e.field = "spec.quantization.type"
        raise e


def label(fmt: str, qtype: str) -> str:
    """Human label: "bf16", "fp8", "awq (w4a16)", "gguf Q4_K_M", "onnx int4"."""
    if fmt == "none" or fmt == qtype:
        return qtype
    if fmt in ("awq", "gptq"):
        return f"{fmt} ({qtype})"
    return f"{fmt} {qtype}"


# -- GGUF per-tensor mix ----------------------------------------------------------------------


def _use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits(): first and last eighth of the layers, and every third between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _fit_block(ggml_type: str, row: int) -> str:
    t = ggml_type
    if row % GGML_TYPES[t][1] != 0:
        t = _GGML_FALLBACK.get(t, "F16")
        if row % GGML_TYPES[t][1] != 0:
            t = "F16"
    return t


def gguf_tensor_types(matrices: dict[str, tuple[int, int]], *, layers: int, vocab: int, hidden: int,
                      tied: bool, fused_qkv: bool, qtype: str) -> list[tuple[str, int, str]]:
    """(tensor, element count, ggml type) for every matrix of a GGUF file of mix ``qtype``.

    ``matrices`` maps q/k/v/o/gate/up/down to (input, output) features, as
    ModelFacts.layer_matrices gives them. Norm vectors (F32) are not listed.

    Rules (llama.cpp llama_tensor_get_type, for these mixes):
    - output.weight, or token_embd.weight when tied (it then serves as the output):
      Q8_0 for the Q8_0 mix, else Q6_K (Q8_0 when the row is not a multiple of 256);
    - token_embd.weight when untied: the mix's base type;
    - token_embd.weight when untied in a ternary mix (TQ1_0 / TQ2_0): Q4_K;
    - Q4_K_M / Q5_K_M: attn_v and ffn_down use Q6_K in the layers where use_more_bits();
      a fused attn_qkv (Phi-3 family) uses Q5_K (Q4_K_M) / Q6_K (Q5_K_M);
    - everything else: the base type (Q4_K, Q5_K, Q6_K, Q8_0, Q4_0);
    - a row length that is not a multiple of the type's block falls back to Q5_0/Q5_1/Q8_0
      (Q4_0 for the ternary types).
    """
    if qtype not in _GGUF_BASE:
        raise InvalidQuantizationError(f"Unknown GGUF type {qtype!r}.")
    base = _GGUF_BASE[qtype]
    mixed = qtype in ("Q4_K_M", "Q5_K_M")
    out: list[tuple[str, int, str]] = []

    out_type = "Q8_0" if base == "Q8_0" or hidden % 256 else "Q6_K"
    if tied:
        out.append(("token_embd", vocab * hidden, out_type))
    else:
        embd = "Q4_K" if qtype in table.TERNARY_TYPES else base
        out.append(("token_embd", vocab * hidden, _fit_block(embd, hidden)))
        out.append(("output", vocab * hidden, out_type))

    q_in, q_out = matrices["q"]
    kv_out = matrices["k"][1]
    h_in, inter = matrices["gate"]
    for i in range(layers):
        more = mixed and _use_more_bits(i, layers)
        if fused_qkv:
            qkv_type = {"Q4_K_M": "Q5_K", "Q5_K_M": "Q6_K"}.get(qtype, base)
            tensors = [("attn_qkv", q_in, q_out + 2 * kv_out, qkv_type)]
        else:
            tensors = [("attn_q", q_in, q_out, base), ("attn_k", q_in, kv_out, base),
                       ("attn_v", q_in, kv_out, "Q6_K" if more else base)]
        o_in, o_out = matrices["o"]
        tensors.append(("attn_output", o_in, o_out, base))
        if fused_qkv:
            tensors.append(("ffn_up", h_in, 2 * inter, base))
        else:
            tensors += [("ffn_gate", h_in, inter, base), ("ffn_up", h_in, inter, base)]
        d_in, d_out = matrices["down"]
        tensors.append(("ffn_down", d_in, d_out, "Q6_K" if more else base))
        for name, rows_in, cols_out, t in tensors:
            out.append((f"blk.{i}.{name}", rows_in * cols_out, _fit_block(t, rows_in)))
    return out


def ggml_bytes(n_elements: int, ggml_type: str) -> int:
    return round(n_elements * GGML_TYPES[ggml_type][0] / 8)
