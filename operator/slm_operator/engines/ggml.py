"""What the two llama.cpp-based engines (Ollama, llama.cpp's llama-server) share: ggml's
compute buffer and the model graphs llama.cpp has.

Source: the llama.cpp the pinned llama-cpp-python sdist vendors. Its BITNET graph
(src/models/bitnet.cpp) is the SiLU-gated BitNet b1.58 of 1bitLLM (convert_hf_to_gguf.py maps
BitnetForCausalLM and BitNetForCausalLM to it); microsoft/bitnet-b1.58-2B-4T uses a squared-ReLU
feed-forward (config.json hidden_act "relu2"), which that graph does not compute: converting it
would give a different model (Microsoft's bitnet.cpp serves it; not shipped here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slm_operator.engines.base import MIB, EngineBase

if TYPE_CHECKING:
    from slm_operator.sizing.catalog import GpuProduct, ModelFacts

LLAMA_CPP_UBATCH = 512  # llama.cpp default n_ubatch
BITNET_ARCHITECTURES = frozenset({"BitnetForCausalLM", "BitNetForCausalLM"})
BITNET_ACTIVATIONS = frozenset({"silu"})


def compute_buffer(facts: ModelFacts) -> int:
    """llama.cpp's compute buffer: one micro-batch of logits and FFN activations in f32 (bytes)."""
    return LLAMA_CPP_UBATCH * 4 * (facts.vocab_size + 3 * facts.intermediate_size)


def check_graph(facts: ModelFacts) -> None:
    """Raise UnsupportedModelError (field spec.model.source) for a model llama.cpp's graphs
    would compute wrongly or cannot hold: a BitNet model whose feed-forward is not SiLU-gated,
    or whose embeddings are untied (the BITNET graph's output is the token embedding: no place
    for a separate lm_head; the quantizer refuses the same, runtime-images/quantizer gguf.py)."""
    if facts.architecture not in BITNET_ARCHITECTURES:
        return
    why = None
    if facts.hidden_act not in BITNET_ACTIVATIONS:
        why = (f"a BitNet model with a {facts.hidden_act} feed-forward; llama.cpp's BitNet graph is "
               "SiLU-gated, so a GGUF of it would compute a different model (it needs Microsoft's "
               "bitnet.cpp, not shipped here)")
    elif not facts.tied_embeddings:
        why = ("a BitNet model with untied embeddings (config.json tie_word_embeddings false); llama.cpp's "
               "BitNet graph has no place for a separate lm_head")
    if why:
        from slm_operator.sizing.errors import UnsupportedModelError

        e = UnsupportedModelError(
            f"{facts.name} is {why}: serve a BitNet b1.58 model with a SiLU-gated feed-forward and tied "
            "embeddings with engine llamacpp, or another model.")
        e.condition_reason, e.field = "UnsupportedModel", "spec.model.source"
        raise e


class GgmlEngine(EngineBase):
    """The sizing hooks both GGUF engines share (one llama.cpp runtime underneath); a module sets
    runtime_base_bytes, its server process's own allowance (bytes)."""

    runtime_base_bytes: int
    cuda_context_bytes: int = 512 * MIB

    def runtime_overhead(self, facts: ModelFacts, *, device: str, context: int, weights_bytes: int,
                         tensor_parallel: int, gpu: GpuProduct | None, io_bytes: int) -> dict[str, int]:
        parts = {"runtime": self.runtime_base_bytes}
        if device == "gpu":
            parts["cuda_context"] = self.cuda_context_bytes
        parts["compute_buffer"] = compute_buffer(facts)
        return parts

    def check_model(self, facts: ModelFacts, *, device: str, gpu: GpuProduct | None,
                    fmt: str | None, qtype: str | None) -> None:
        check_graph(facts)

    def smaller_quants(self, gpu: GpuProduct | None) -> list[tuple[str, str]]:
        return [("gguf", "Q4_K_M"), ("gguf", "Q4_0")]
