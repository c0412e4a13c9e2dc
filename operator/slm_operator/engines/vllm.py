"""vLLM: 16-bit, AWQ/GPTQ and FP8 safetensors on GPUs, behind the project's vLLM launcher.

The launcher (runtime-images/vllm, `python -m slm_vllm`) reads the API key from the mounted
Secret file into VLLM_API_KEY, checks the flags, then execs `vllm serve`. Metrics on the API
port (/metrics, outside vLLM's key check); queue depth vllm:num_requests_waiting.
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
from slm_operator.engines.vllm_parsers import parser_flags

if TYPE_CHECKING:
    from slm_operator.sizing.catalog import GpuProduct, ModelFacts

# -- sizing constants (sources in docs/sizing.md) --------------------------------------------
CUDA_CONTEXT_BYTES = 512 * MIB        # CUDA context + cuBLAS/NCCL workspaces ("non-torch memory")
CUDA_GRAPHS_BYTES = 512 * MIB         # vLLM "Graph capturing finished ... took 0.3-0.9 GiB"
VLLM_BATCHED_TOKENS_SMALL_GPU = 2048  # vLLM V1 default max_num_batched_tokens, OpenAI server
VLLM_BATCHED_TOKENS_LARGE_GPU = 8192  # ... on >= 70 GiB GPUs other than A100
VLLM_MAX_NUM_SEQS_SMALL_GPU = 256
VLLM_MAX_NUM_SEQS_LARGE_GPU = 1024
# Compute capability each vLLM weight format needs (vLLM quantization get_min_capability).
MIN_CC = {"awq": (7, 5), "gptq": (6, 0), "fp8": (8, 0), "none": (7, 0)}
SHM_BYTES_PER_GPU = 1 * GIB

# What the quantization Job writes for each vLLM format, and so what vLLM must be told.
# awq/gptq: llm-compressor saves compressed-tensors, with a quantization_config in
# config.json; vLLM reads the method from there (and picks its Marlin kernels itself), and
# refuses a --quantization that names another method. fp8: the Job publishes the 16-bit
# source folder as is and vLLM quantizes at load, so it needs --quantization fp8. none: the
# source folder as is (a pre-quantized source carries its own quantization_config).
# The launcher applies the same rule to the artifact it finds (slm_vllm.artifact).
ARTIFACT_QUANTIZATION = {"awq": "compressed-tensors", "gptq": "compressed-tensors", "fp8": None, "none": None}
VLLM_QUANTIZATION_FLAG = {"fp8": "fp8"}


def vllm_batch_defaults(gpu: GpuProduct | None) -> tuple[int, int]:
    """vLLM V1's default (max_num_batched_tokens, max_num_seqs) for its OpenAI server."""
    if gpu is not None and gpu.memory_bytes >= 70 * GIB and "A100" not in gpu.product.upper():
        return VLLM_BATCHED_TOKENS_LARGE_GPU, VLLM_MAX_NUM_SEQS_LARGE_GPU
    return VLLM_BATCHED_TOKENS_SMALL_GPU, VLLM_MAX_NUM_SEQS_SMALL_GPU


def vllm_args(inp: ServeInput) -> list[str]:
    """`python -m slm_vllm` arguments: the launcher's own, `--`, then `vllm serve` flags."""
    opts = inp.options
    max_len = opts.max_model_len if opts and opts.max_model_len else inp.context
    util = (opts.gpu_memory_utilization_percent if opts and opts.gpu_memory_utilization_percent
            else inp.extra.get("gpu_memory_utilization_percent") or 90)
    args = [
        # The launcher reads the key from the mounted Secret file into VLLM_API_KEY for vLLM.
        "--api-key-file", c.API_KEY_FILE,
        "--",  # the launcher's own flags end here; the rest is checked, then passed to `vllm serve`
        inp.model_path,  # positional: vLLM 0.33 deprecates --model for `vllm serve`
        "--served-model-name", inp.served_name,
        # Loopback only: the gateway container is the pod's only listener (vLLM's --api-key
        # guards /v1 alone; the key stays as a second lock).
        "--host", c.ENGINE_HOST,
        "--port", str(c.ENGINE_PORT),
        "--max-model-len", str(max_len),
        "--gpu-memory-utilization", f"{util / 100:.2f}",
        "--max-num-seqs", str(opts.max_num_seqs if opts else 64),
        "--tensor-parallel-size", str(opts.tensor_parallel_size if opts else 1),
        # /docs and /openapi.json sit outside vLLM's API-key check.
        "--disable-fastapi-docs",
    ]
    if opts is None or opts.enable_prefix_caching:
        args.append("--enable-prefix-caching")
    if opts and opts.kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", opts.kv_cache_dtype]
    flag = VLLM_QUANTIZATION_FLAG.get(inp.fmt)
    if flag:
        args += ["--quantization", flag]
    if inp.fmt == "none":
        args += ["--dtype", "bfloat16" if inp.qtype == "bf16" else "float16"]
    if inp.trust_remote_code:
        args.append("--trust-remote-code")
    # Tool calling / reasoning for the model's own chat template (the catalog's parser, or the
    # spec's): without them vLLM refuses `tools` with tool_choice "auto".
    from slm_operator.sizing.catalog import lookup_model  # sizing imports this module

    source = inp.extra.get("model_source")
    args += parser_flags(lookup_model(source) if source else None, opts)
    if opts:
        args += list(opts.extra_args)
    return args


class VLLM(EngineBase):
    row = row("vllm")
    gateway_profile = "vllm"
    image = ImageSetting("vllm")
    metrics = MetricsEndpoint("http")
    queue_metric = QueueMetric("vllm:num_requests_waiting", "vllm_num_requests_waiting")
    kv_cache_metric = True
    ready_path = "/health"
    tmp_bytes = 4 * GIB               # torch/triton compile caches (docs/sizing.md)
    host_base_bytes = 4 * GIB         # interpreter, torch/CUDA libraries, tokenizer, staging
    sliding_window_capped = True      # hybrid KV-cache manager
    gpu_memory_utilization = True
    tensor_parallel = True

    def concurrency(self, options: Any) -> int:
        return 1  # vLLM pages the KV cache: at least one sequence at max_model_len must fit

    def context_option(self, options: Any) -> int | None:
        return options.max_model_len if options else None

    def runtime_overhead(self, facts: ModelFacts, *, device: str, context: int, weights_bytes: int,
                         tensor_parallel: int, gpu: GpuProduct | None, io_bytes: int) -> dict[str, int]:
        tokens, seqs = vllm_batch_defaults(gpu)
        act = tokens * (3 * facts.intermediate_size // tensor_parallel + 6 * facts.hidden_size) * 2
        sampler = seqs * facts.vocab_size * 4 * 2
        return {"cuda_context": CUDA_CONTEXT_BYTES, "cuda_graphs": CUDA_GRAPHS_BYTES,
                "activations": act + sampler}

    def quant_candidates(self, gpu: GpuProduct | None, bf16: bool) -> list[tuple[str, str]]:
        out = [("none", "bf16" if bf16 else "fp16")]
        if gpu is not None:
            if gpu.fp8:
                out.append(("fp8", "fp8"))
            if gpu.cc >= MIN_CC["awq"]:
                out.append(("awq", "w4a16"))
        return out

    def smaller_quants(self, gpu: GpuProduct | None) -> list[tuple[str, str]]:
        out = []
        if gpu is None or gpu.fp8:
            out.append(("fp8", "fp8"))
        if gpu is None or gpu.cc >= MIN_CC["awq"]:
            out.append(("awq", "w4a16"))
        return out

    def check_model(self, facts: ModelFacts, *, device: str, gpu: GpuProduct | None,
                    fmt: str | None, qtype: str | None) -> None:
        from slm_operator.sizing.autoconfig import BF16_GPU_EXAMPLES, FP16_UNSAFE_FAMILIES
        from slm_operator.sizing.errors import UnsupportedDtypeError

        family = facts.family.lower()
        if family in FP16_UNSAFE_FAMILIES and gpu is not None and not gpu.bf16:
            raise UnsupportedDtypeError(
                f"{facts.name} ({family}) overflows to inf/NaN in float16, and vLLM refuses float16 for this "
                f"family. {gpu.product} (compute capability {gpu.compute_capability}) has no bfloat16, and "
                "vLLM's AWQ/GPTQ kernels there compute in float16 too: set resources.gpu.product to a GPU with "
                f"compute capability 8.0 or newer ({BF16_GPU_EXAMPLES}), or serve it on CPU with engine ollama "
                "(gguf).")

    def check_quant(self, fmt: str, qtype: str, gpu: GpuProduct | None) -> None:
        """The GPU's compute capability must run the weight format's kernels."""
        from slm_operator.sizing.errors import InvalidQuantizationError
        from slm_operator.sizing.quant import label

        if gpu is not None and gpu.cc < MIN_CC[fmt]:
            raise InvalidQuantizationError(
                f"{label(fmt, qtype)} needs compute capability {'.'.join(map(str, MIN_CC[fmt]))} "
                f"in vLLM; {gpu.product} has {gpu.compute_capability}.")

    def host_cpu_millicores(self, tensor_parallel: int) -> int:
        return 2000 + 2000 * tensor_parallel

    def containers(self, inp: ServeInput) -> tuple[list[Obj], list[Obj]]:
        container = {
            "name": "vllm",
            "image": inp.image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["python3", "-m", "slm_vllm"],
            "args": vllm_args(inp),
            "env": podspec.env({"HOME": "/tmp", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                                "DO_NOT_TRACK": "1", "XDG_CACHE_HOME": "/tmp/.cache"}),
            # No ports: vLLM is on loopback behind the gateway; probes run in the container.
            **podspec.loopback_probes(self.ready_path, "/health"),
            "resources": podspec.with_scratch(inp.resources, self.tmp_bytes),
            "securityContext": podspec.container_security_context(),
            "volumeMounts": [*inp.mounts, {"name": "dshm", "mountPath": "/dev/shm"}],
        }
        # vLLM's workers exchange messages (and NCCL its buffers) through /dev/shm: memory-backed,
        # so it counts against the memory limit; 1 GiB per GPU is ample for both.
        shm = SHM_BYTES_PER_GPU * max(1, inp.gpu_count)
        return [container], [podspec.empty_dir("dshm", shm, memory=True)]


ENGINE = VLLM()
