"""ONNX Runtime: onnxruntime-genai folders (int4, fp16) on CPU or CUDA, served by the project's
OpenAI-compatible server (runtime-images/onnxruntime-server, `python -m slm_onnx_server`).

The server listens on 127.0.0.1 behind the gateway container, checks the key from the mounted
Secret file itself (the gateway sends it), serves /ready, /health and /metrics without it (queue
depth slm_onnx_queue_depth; the gateway appends them to its own /metrics).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slm_operator import constants as c
from slm_operator import podspec
from slm_operator.engines.base import (
    GIB,
    MIB,
    EngineBase,
    ImageSetting,
    MetricsEndpoint,
    Obj,
    QueueMetric,
    ServeInput,
)
from slm_operator.engines.table import row

if TYPE_CHECKING:
    from slm_operator.sizing.catalog import GpuProduct, ModelFacts

RUNTIME_BASE_BYTES = 384 * MIB        # interpreter, onnxruntime and genai libraries
CUDA_CONTEXT_BYTES = 512 * MIB
ONNX_PROMPT_LOGITS_TOKENS = 2048      # prompt tokens whose logits we budget in one prefill
ONNX_PREPACK_FRACTION = 0.10          # MatMulNBits pre-packed weight copies (allowance)

# Architectures onnxruntime-genai's model builder converts (src/python/py/models/builder.py).
ONNX_BUILDER_ARCHITECTURES = frozenset({
    "LlamaForCausalLM", "MistralForCausalLM", "Phi3ForCausalLM", "PhiForCausalLM",
    "Qwen2ForCausalLM", "Qwen3ForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM",
    "GraniteForCausalLM", "OlmoForCausalLM", "NemotronForCausalLM", "SmolLM3ForCausalLM",
})
# Families the project's quantizer refuses to export to ONNX (the pinned onnxruntime-genai
# builder fails on Gemma3's per-layer-type rope settings; runtime-images/quantizer onnx.py).
ONNX_REFUSED_FAMILIES = frozenset({"gemma3", "gemma3_text"})


class OnnxRuntime(EngineBase):
    row = row("onnxruntime")
    gateway_profile = "onnx"
    image = ImageSetting("onnxruntime-server")
    metrics = MetricsEndpoint("metrics")
    queue_metric = QueueMetric("slm_onnx_queue_depth", "slm_onnx_queue_depth")
    tmp_bytes = 1 * GIB
    host_base_bytes = 2 * GIB
    sliding_window_capped = False  # GenAI keeps max_length tokens in every layer

    def concurrency(self, options: Any) -> int:
        return options.workers if options else 4  # `workers` generators of max_length each

    def kv_element_bytes(self, fmt: str, qtype: str, device: str) -> int:
        # onnxruntime-genai int4 on CPU keeps fp32 inputs/outputs, and so an fp32 KV cache.
        return 4 if device == "cpu" and qtype == "int4" else 2

    def runtime_overhead(self, facts: ModelFacts, *, device: str, context: int, weights_bytes: int,
                         tensor_parallel: int, gpu: GpuProduct | None, io_bytes: int) -> dict[str, int]:
        parts = {"runtime": RUNTIME_BASE_BYTES}
        if device == "gpu":
            parts["cuda_context"] = CUDA_CONTEXT_BYTES
        parts["activations"] = min(context, ONNX_PROMPT_LOGITS_TOKENS) * facts.vocab_size * io_bytes
        parts["prepack"] = int(weights_bytes * ONNX_PREPACK_FRACTION)
        return parts

    def execution_target(self, options: Any, gpu_count: int) -> str:
        if options is not None and options.target:
            return options.target  # engine.onnxruntime.target wins
        return super().execution_target(options, gpu_count)

    def auto_refusal(self, facts: ModelFacts) -> str | None:
        if facts.architecture not in ONNX_BUILDER_ARCHITECTURES:
            return "its architecture is not one the ONNX builder converts"
        if facts.tier not in ("Micro", "Small"):
            return f"a {facts.tier} model"
        return None

    def check_model(self, facts: ModelFacts, *, device: str, gpu: GpuProduct | None,
                    fmt: str | None, qtype: str | None) -> None:
        from slm_operator.sizing.errors import InvalidQuantizationError

        family = facts.family.lower()
        if family in ONNX_REFUSED_FAMILIES:
            raise InvalidQuantizationError(
                f"{facts.name} ({family}) cannot be exported to ONNX by the quantizer (its builder does not "
                "handle this family's rope settings): use engine ollama with quantization.format gguf, or "
                "vllm on a GPU.")

    def containers(self, inp: ServeInput) -> tuple[list[Obj], list[Obj]]:
        opts = inp.options
        args = [
            "--model-dir", inp.model_path,
            "--served-model-name", inp.served_name,
            # Loopback only, /metrics on the same port: the gateway fronts both.
            "--host", c.ENGINE_HOST,
            "--port", str(c.ENGINE_PORT),
            "--api-key-file", c.API_KEY_FILE,
            "--device", inp.target,
            "--max-concurrency", str(opts.workers if opts else 4),
            "--max-queue", str(opts.queue_size if opts else 64),
            # Each generation slot's KV cache is sized to this: the context sizing chose.
            "--max-model-len", str(inp.context),
            # Finish in-flight requests inside the pod's termination grace period (60 s).
            "--grace-period-s", "45",
            # Let endpoints drop the pod before the listener closes.
            "--drain-delay-s", "5",
        ]
        container = {
            "name": "onnxruntime",
            "image": inp.image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["python3", "-m", "slm_onnx_server"],
            "args": args,
            "env": podspec.env({"HOME": "/tmp"}),
            # No ports: the server is on loopback behind the gateway; probes run in the container.
            **podspec.loopback_probes("/ready", "/health"),
            "resources": podspec.with_scratch(inp.resources, self.tmp_bytes),
            "securityContext": podspec.container_security_context(),
            "volumeMounts": inp.mounts,
        }
        return [container], []


ENGINE = OnnxRuntime()
