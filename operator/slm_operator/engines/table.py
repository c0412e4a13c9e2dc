"""The engine table: pure data, the one place that says which engine serves what.

Read by api.py (the engine enum and the CEL rules), sizing (which engine `auto` prefers),
render (through the registry) and docs/engines.md. No imports from the rest of the operator.

Sources: vLLM serves 16-bit safetensors, AWQ/GPTQ (compressed-tensors) and FP8; Ollama and
llama.cpp serve GGUF; the project's ONNX Runtime server serves onnxruntime-genai folders.
llama.cpp's ternary types TQ1_0 and TQ2_0 (ggml-common.h block_tq1_0 / block_tq2_0) load only
in llama.cpp itself here: the pinned Ollama's importer accepts a fixed list of GGUF file types
that does not include them.
"""

from __future__ import annotations

from dataclasses import dataclass

# Valid types per quantization format; the first one is the default.
FORMAT_TYPES: dict[str, tuple[str, ...]] = {
    "none": ("bf16", "fp16"),
    "gguf": ("Q4_K_M", "Q5_K_M", "Q8_0", "Q6_K", "Q4_0", "TQ1_0", "TQ2_0"),
    "onnx": ("int4", "fp16"),
    "awq": ("w4a16",),
    "gptq": ("w4a16",),
    "fp8": ("fp8",),
}
# llama.cpp's ternary (BitNet b1.58) GGUF types: only for models trained ternary.
TERNARY_TYPES: tuple[str, ...] = ("TQ1_0", "TQ2_0")
_GGUF_CLASSIC = tuple(t for t in FORMAT_TYPES["gguf"] if t not in TERNARY_TYPES)


@dataclass(frozen=True)
class EngineRow:
    """One engine: its name in the API, the formats (and types of each) it serves, its default
    format, and the devices it runs on ("gpu", "cpu")."""

    name: str
    title: str
    serves: tuple[tuple[str, tuple[str, ...]], ...]
    default_format: str
    devices: tuple[str, ...]

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(f for f, _ in self.serves)

    def types(self, fmt: str) -> tuple[str, ...]:
        """The types of `fmt` this engine serves (empty when it does not serve the format)."""
        return dict(self.serves).get(fmt, ())


def _all(*formats: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((f, FORMAT_TYPES[f]) for f in formats)


ROWS: tuple[EngineRow, ...] = (
    EngineRow("vllm", "vLLM", _all("none", "awq", "gptq", "fp8"), "none", ("gpu",)),
    EngineRow("ollama", "Ollama", (("gguf", _GGUF_CLASSIC),), "gguf", ("cpu", "gpu")),
    EngineRow("onnxruntime", "ONNX Runtime", _all("onnx"), "onnx", ("cpu", "gpu")),
    EngineRow("llamacpp", "llama.cpp", _all("gguf"), "gguf", ("cpu", "gpu")),
)
AUTO = "auto"
ENGINE_NAMES: tuple[str, ...] = tuple(r.name for r in ROWS)
_BY_NAME = {r.name: r for r in ROWS}

# Which engines `engine: auto` may choose for a format on a device, best first. Where two
# engines are listed, sizing estimates both and takes the one that needs less memory, the first
# on a tie (status.sizing.reason says which and why). GGUF on CPU: llama.cpp or Ollama
# (llama.cpp checks the API key itself, so no proxy container, and maps the GGUF from the model
# cache instead of copying it into a blob store); on a GPU only Ollama (the llama.cpp image is a
# CPU build unless built with its CUDA argument; engine llamacpp names it explicitly).
PREFERENCE: dict[tuple[str, str], tuple[str, ...]] = {
    ("none", "gpu"): ("vllm",), ("awq", "gpu"): ("vllm",), ("gptq", "gpu"): ("vllm",),
    ("fp8", "gpu"): ("vllm",),
    ("gguf", "cpu"): ("llamacpp", "ollama"), ("gguf", "gpu"): ("ollama",),
    ("onnx", "cpu"): ("onnxruntime",), ("onnx", "gpu"): ("onnxruntime",),
}

# engine auto without a format: the engines to try per device, in order. An engine may pass a
# model on (its auto_refusal: ONNX Runtime for architectures its builder does not convert);
# engines of one format are compared by memory as above.
AUTO_DEVICE_ORDER: dict[str, tuple[str, ...]] = {
    "gpu": ("vllm",),
    "cpu": ("onnxruntime", *PREFERENCE[("gguf", "cpu")]),
}


class UnknownEngineError(ValueError):
    """An engine name no row of the table has (never falls through to another engine)."""


def row(name: str) -> EngineRow:
    """The table row of engine `name`; raises UnknownEngineError naming the known engines."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownEngineError(
            f"Unknown engine {name!r}: engine.name must be one of {', '.join(ENGINE_NAMES)} or auto."
        ) from None


def engines_serving(fmt: str, qtype: str | None = None) -> tuple[str, ...]:
    """Engines that serve `fmt` (and `qtype`, when given), in table order."""
    return tuple(r.name for r in ROWS
                 if fmt in r.formats and (qtype is None or qtype in r.types(fmt)))


def preferred(fmt: str, device: str, qtype: str | None = None) -> tuple[str, ...]:
    """Engines `auto` may choose for fmt/qtype on device, best first (may be empty)."""
    return tuple(e for e in PREFERENCE.get((fmt, device), ())
                 if qtype is None or qtype in row(e).types(fmt))


def serves_words(sep: str = ", ") -> str:
    """"vllm serves none|awq|gptq|fp8, ollama serves gguf, ..." for error messages."""
    return sep.join(f"{r.name} serves {'|'.join(r.formats)}" for r in ROWS)
