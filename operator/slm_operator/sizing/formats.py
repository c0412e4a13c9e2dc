"""Which artifact formats, and which tools, each model architecture can be converted to.

The conversions the quantization Job runs (runtime-images/quantizer) and the architectures
each tool accepts, at the pinned versions:

- gguf (llama.cpp's convert_hf_to_gguf.py + llama-quantize, llama-cpp-python 0.3.36): every
  catalog architecture; the ternary TQ1_0/TQ2_0 types only for BitNet b1.58.
- onnx / builder (onnxruntime-genai 0.18's model builder): the architectures listed in its
  builder.py (ONNX_BUILDER_ARCHITECTURES below holds the catalog's). Gemma 3 is in that list
  but the pinned builder stops with KeyError 'rope_type' under transformers 5 (per-layer-type
  rope settings), so the quantizer refuses it (slm_quantizer.onnx.unsupported_reason).
- onnx / olive (olive-ai 0.13's Gptq pass, then the builder): the builder's architectures.
- mlx (mlx-lm 0.32.2 on mlx-cpu): the model_type values that have a module in mlx_lm/models
  or an entry in mlx_lm.utils.MODEL_REMAPPING (MLX_LM_MODEL_TYPES holds the catalog's).

tests/test_catalog_formats.py checks these tables against the installed tools when they are
installed, so an upgrade that changes support fails a test instead of drifting.

Public: ``support(architecture) -> dict[format, tuple[tools]]``, ``refusal(architecture,
fmt, tool) -> str | None``, ``catalog_refusals()`` (what admission refuses per model.source)
and ``ARCHITECTURE_MODEL_TYPE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

# Hugging Face architectures[0] -> config.json model_type, for the catalog's architectures.
ARCHITECTURE_MODEL_TYPE: dict[str, str] = {
    "Phi3ForCausalLM": "phi3",
    "Qwen3ForCausalLM": "qwen3",
    "Gemma3ForCausalLM": "gemma3_text",
    "Gemma3ForConditionalGeneration": "gemma3",
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "BitNetForCausalLM": "bitnet",
}
# Catalog architectures onnxruntime-genai 0.18's builder lists (Gemma 3 listed, refused below).
ONNX_BUILDER_ARCHITECTURES = frozenset({
    "Phi3ForCausalLM", "Qwen3ForCausalLM", "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration",
    "LlamaForCausalLM", "MistralForCausalLM",
})
ONNX_BROKEN = {
    "Gemma3ForCausalLM": "the pinned onnxruntime-genai builder cannot export Gemma3 under transformers 5 "
                         "(per-layer-type rope settings); use format gguf",
    "Gemma3ForConditionalGeneration": "the pinned onnxruntime-genai builder cannot export Gemma3 under "
                                      "transformers 5 (per-layer-type rope settings); use format gguf",
}
# onnx tool olive: Olive's GPTQ output for fused projections (Phi3's qkv_proj, gate_up_proj)
# reaches the 0.18 builder with mis-shaped zero points and the model does not load (measured on
# the tiny Phi3; slm_quantizer.olive refuses it too).
OLIVE_REFUSED = {"Phi3ForCausalLM": "Olive's GPTQ output for Phi3's fused qkv/gate_up projections does not load "
                                    "after the pinned onnxruntime-genai builder; use tool builder"}
# Catalog model_types mlx-lm 0.32.2 loads (mistral through its remapping to llama).
MLX_LM_MODEL_TYPES = frozenset({"phi3", "qwen3", "gemma3_text", "gemma3", "llama", "mistral", "bitnet"})
TOOLS: dict[str, tuple[str, ...]] = {"gguf": ("llama.cpp",), "onnx": ("builder", "olive"), "mlx": ("mlx-lm",)}


def refusal(architecture: str, fmt: str, tool: str | None = None) -> str | None:
    """Why `architecture` cannot be converted to `fmt` (with `tool`, for onnx), or None when it
    can or when the table does not know the architecture (the Job then decides)."""
    if architecture not in ARCHITECTURE_MODEL_TYPE:
        return None
    if fmt == "onnx":
        if architecture not in ONNX_BUILDER_ARCHITECTURES:
            return (f"onnxruntime-genai's builder does not support {architecture} "
                    f"(nor does Olive, which uses it); use format gguf")
        if architecture in ONNX_BROKEN:
            return ONNX_BROKEN[architecture]
        if tool == "olive":
            return OLIVE_REFUSED.get(architecture)
        return None
    if fmt == "mlx" and ARCHITECTURE_MODEL_TYPE[architecture] not in MLX_LM_MODEL_TYPES:
        return (f"mlx-lm does not support {architecture} (model_type "
                f"{ARCHITECTURE_MODEL_TYPE[architecture]}); use format gguf or onnx")
    return None


def support(architecture: str) -> dict[str, tuple[str, ...]]:
    """The conversion formats (gguf, onnx, mlx) `architecture` can be made into, each with the
    tools that can make it; empty for an architecture the table does not know."""
    if architecture not in ARCHITECTURE_MODEL_TYPE:
        return {}
    out = {}
    for fmt, tools in TOOLS.items():
        usable = tuple(t for t in tools if refusal(architecture, fmt, t if len(tools) > 1 else None) is None)
        if usable:
            out[fmt] = usable
    return out


@dataclass(frozen=True)
class CatalogRefusal:
    """A format (and tool) the catalog knows these model sources cannot be converted to."""

    format: str
    tool: str | None
    sources: tuple[str, ...]  # hf://ORG/NAME as model.source spells them (catalog ids)
    reason: str


@cache
def catalog_refusals() -> tuple[CatalogRefusal, ...]:
    """Refusals grouped by (format, reason), over the catalog's models; what admission's CEL
    refuses by model.source."""
    from slm_operator.sizing.catalog import list_models

    groups: dict[tuple[str, str | None, str], list[str]] = {}
    for model in list_models():
        for fmt, tools in TOOLS.items():
            reason = refusal(model.architecture, fmt)
            if reason:
                groups.setdefault((fmt, None, reason), []).append(f"hf://{model.id}")
                continue
            for tool in tools if len(tools) > 1 else ():
                reason = refusal(model.architecture, fmt, tool)
                if reason:
                    groups.setdefault((fmt, tool, reason), []).append(f"hf://{model.id}")
    return tuple(CatalogRefusal(fmt, tool, tuple(srcs), reason) for (fmt, tool, reason), srcs in groups.items())


def export_storage_bytes(facts: object | None) -> int | None:
    """Volume bytes for an export-only artifact (mlx): the bf16 source download (2 bytes per
    parameter) plus the artifact, at most as large as the source in 8bit (mlx 8bit: ~8.5 bits
    per weight), plus 10% headroom; None when the model's facts are unknown."""
    params = getattr(facts, "params", None)
    if not params:
        return None
    return int(params * 2 * 2 * 1.1)
