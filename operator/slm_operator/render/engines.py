"""One builder per engine: the serving container(s) for vLLM, Ollama and ONNX Runtime.

Each returns the pod's containers and the extra volumes they need. API keys reach the
engine only by reference: a mounted Secret file, or (vLLM, which reads VLLM_API_KEY) an
env var with valueFrom.secretKeyRef — never a literal.
"""

from __future__ import annotations

from slm_operator import constants as c
from slm_operator.render.common import (
    SHM_BYTES_PER_GPU,
    TMP_BYTES,
    Obj,
    Target,
    artifact_path,
    container_security_context,
    empty_dir,
    engine_resources,
    gi,
    ollama_models_bytes,
    resources,
)
from slm_operator.resolve import execution_target, served_from_source


def _probes(path_ready: str, path_live: str, port: str = "http") -> Obj:
    return {
        # Model servers load weights for minutes: a startup probe guards liveness meanwhile.
        "startupProbe": {"httpGet": {"path": path_live, "port": port}, "periodSeconds": 10,
                         "failureThreshold": 180, "timeoutSeconds": 5},
        "livenessProbe": {"httpGet": {"path": path_live, "port": port}, "periodSeconds": 15,
                          "failureThreshold": 4, "timeoutSeconds": 5},
        "readinessProbe": {"httpGet": {"path": path_ready, "port": port}, "periodSeconds": 5,
                           "failureThreshold": 3, "timeoutSeconds": 5},
    }


OLLAMA_MODELS_DIR = "/var/lib/ollama-models"


def tmp_volume(t: Target) -> Obj:
    """The pod's /tmp (caches only; docs/sizing.md): its sizeLimit by engine."""
    return empty_dir("tmp", TMP_BYTES[t.r.engine])


def _with_scratch(res: Obj, n_bytes: int) -> Obj:
    """Request the disk the pod's emptyDirs may fill, so the scheduler accounts for it."""
    res["requests"]["ephemeral-storage"] = gi(n_bytes)
    return res


def _env(pairs: dict[str, str]) -> list[Obj]:
    return [{"name": k, "value": v} for k, v in sorted(pairs.items())]


def _mounts(t: Target, *, cache_read_only: bool) -> list[Obj]:
    mounts = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "api-key", "mountPath": c.API_KEY_DIR, "readOnly": True},
    ]
    if served_from_source(t.spec, t.r):
        mounts.append({"name": "source", "mountPath": c.SOURCE_MOUNT, "readOnly": True})
    else:
        mounts.append({"name": "model-cache", "mountPath": c.MODELS_MOUNT,
                       "readOnly": cache_read_only})
    return mounts


def _ports(metrics_separate: bool) -> list[Obj]:
    ports = [{"name": "http", "containerPort": c.API_PORT, "protocol": "TCP"}]
    if metrics_separate:
        ports.append({"name": "metrics", "containerPort": c.METRICS_PORT, "protocol": "TCP"})
    return ports


# What the quantization Job writes for each vLLM format, and so what vLLM must be told.
# awq/gptq: llm-compressor saves compressed-tensors, with a quantization_config in
# config.json; vLLM reads the method from there (and picks its Marlin kernels itself), and
# refuses a --quantization that names another method. fp8: the Job publishes the 16-bit
# source folder as is and vLLM quantizes at load, so it needs --quantization fp8. none: the
# source folder as is (a pre-quantized source carries its own quantization_config).
# The launcher applies the same rule to the artifact it finds (slm_vllm.artifact).
ARTIFACT_QUANTIZATION = {"awq": "compressed-tensors", "gptq": "compressed-tensors", "fp8": None, "none": None}
VLLM_QUANTIZATION_FLAG = {"fp8": "fp8"}


def vllm_args(t: Target) -> list[str]:
    opts = t.spec.engine.vllm
    r = t.r
    max_len = opts.max_model_len if opts and opts.max_model_len else r.context_length
    util = (opts.gpu_memory_utilization_percent if opts and opts.gpu_memory_utilization_percent
            else r.gpu_memory_utilization_percent or 90)
    args = [
        # The launcher reads the key from the mounted Secret file into VLLM_API_KEY for vLLM.
        "--api-key-file", c.API_KEY_FILE,
        "--",  # the launcher's own flags end here; the rest is checked, then passed to `vllm serve`
        artifact_path(t),  # positional: vLLM 0.33 deprecates --model for `vllm serve`
        "--served-model-name", r.served_name,
        "--host", "0.0.0.0",
        "--port", str(c.API_PORT),
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
    flag = VLLM_QUANTIZATION_FLAG.get(r.format)
    if flag:
        args += ["--quantization", flag]
    if r.format == "none":
        args += ["--dtype", "bfloat16" if r.qtype == "bf16" else "float16"]
    if t.spec.model.trust_remote_code:
        args.append("--trust-remote-code")
    if opts:
        args += list(opts.extra_args)
    return args


def vllm_containers(t: Target, image: str) -> tuple[list[Obj], list[Obj]]:
    container = {
        "name": "vllm",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-m", "slm_vllm"],
        "args": vllm_args(t),
        "env": _env({"HOME": "/tmp", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                     "DO_NOT_TRACK": "1", "XDG_CACHE_HOME": "/tmp/.cache"}),
        "ports": _ports(metrics_separate=False),
        **_probes("/health", "/health"),
        "resources": _with_scratch(engine_resources(t), TMP_BYTES["vllm"]),
        "securityContext": container_security_context(),
        "volumeMounts": [*_mounts(t, cache_read_only=True), {"name": "dshm", "mountPath": "/dev/shm"}],
    }
    # vLLM's workers exchange messages (and NCCL its buffers) through /dev/shm: memory-backed,
    # so it counts against the memory limit; 1 GiB per GPU is ample for both.
    shm = SHM_BYTES_PER_GPU * max(1, t.r.gpu_count)
    return [container], [empty_dir("dshm", shm, memory=True)]


def onnxruntime_containers(t: Target, image: str) -> tuple[list[Obj], list[Obj]]:
    opts = t.spec.engine.onnxruntime
    target = execution_target(t.spec, t.r)
    args = [
        "--model-dir", artifact_path(t),
        "--served-model-name", t.r.served_name,
        "--host", "0.0.0.0",
        "--port", str(c.API_PORT),
        "--metrics-port", str(c.METRICS_PORT),
        "--api-key-file", c.API_KEY_FILE,
        "--device", target,
        "--max-concurrency", str(opts.workers if opts else 4),
        "--max-queue", str(opts.queue_size if opts else 64),
        # Each generation slot's KV cache is sized to this: the context sizing chose.
        "--max-model-len", str(t.r.context_length),
        # Finish in-flight requests inside the pod's termination grace period (60 s).
        "--grace-period-s", "45",
        # Let endpoints drop the pod before the listener closes.
        "--drain-delay-s", "5",
    ]
    container = {
        "name": "onnxruntime",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-m", "slm_onnx_server"],
        "args": args,
        "env": _env({"HOME": "/tmp"}),
        "ports": _ports(metrics_separate=True),
        **_probes("/ready", "/health"),
        "resources": _with_scratch(engine_resources(t), TMP_BYTES["onnxruntime"]),
        "securityContext": container_security_context(),
        "volumeMounts": _mounts(t, cache_read_only=True),
    }
    return [container], []


def ollama_containers(t: Target, image: str) -> tuple[list[Obj], list[Obj]]:
    """Ollama has no authentication: it listens on localhost only, behind our proxy."""
    opts = t.spec.engine.ollama
    num_ctx = opts.num_ctx if opts and opts.num_ctx else t.r.context_length
    server = {
        "name": "ollama",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-m", "slm_ollama", "serve"],
        "args": [
            "--gguf-dir", artifact_path(t),
            "--name", t.r.served_name,
            "--param", f"num_ctx={num_ctx}",
        ],
        "env": _env({
            "HOME": "/tmp",
            "OLLAMA_HOST": "127.0.0.1:11434",
            # Ollama copies the GGUF into its blob store: a volume of its own, sized from the
            # artifact (not /tmp, capped for caches).
            "OLLAMA_MODELS": OLLAMA_MODELS_DIR,
            "OLLAMA_NUM_PARALLEL": str(opts.num_parallel if opts else 4),
            "OLLAMA_KEEP_ALIVE": opts.keep_alive if opts else "-1",
            "OLLAMA_NOPRUNE": "1",
        }),
        # Ollama listens on localhost only, so probes exec its CLI instead of HTTP.
        "startupProbe": {"exec": {"command": ["ollama", "list"]}, "periodSeconds": 10,
                         "failureThreshold": 180, "timeoutSeconds": 5},
        "livenessProbe": {"exec": {"command": ["ollama", "list"]}, "periodSeconds": 30,
                          "failureThreshold": 4, "timeoutSeconds": 10},
        "readinessProbe": {"exec": {"command": ["ollama", "list"]}, "periodSeconds": 15,
                           "failureThreshold": 3, "timeoutSeconds": 10},
        "resources": _with_scratch(engine_resources(t), TMP_BYTES["ollama"] + ollama_models_bytes(t)),
        "securityContext": container_security_context(),
        "volumeMounts": [*_mounts(t, cache_read_only=True),
                         {"name": "ollama-models", "mountPath": OLLAMA_MODELS_DIR}],
    }
    proxy = {
        "name": "auth-proxy",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-m", "slm_ollama", "proxy"],
        "args": [
            "--listen", f"0.0.0.0:{c.API_PORT}",
            "--metrics-listen", f"0.0.0.0:{c.METRICS_PORT}",
            "--upstream", "http://127.0.0.1:11434",
            "--api-key-file", c.API_KEY_FILE,
            "--model", t.r.served_name,
        ],
        "env": _env({"HOME": "/tmp"}),
        "ports": _ports(metrics_separate=True),
        **_probes("/ready", "/health"),
        "resources": resources("250m", "256Mi", 0),
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                         {"name": "api-key", "mountPath": c.API_KEY_DIR, "readOnly": True}],
    }
    return [server, proxy], [empty_dir("ollama-models", ollama_models_bytes(t))]


BUILDERS = {
    "vllm": vllm_containers,
    "ollama": ollama_containers,
    "onnxruntime": onnxruntime_containers,
}

# Where each engine serves Prometheus metrics (port name, path).
METRICS_ENDPOINT = {
    "vllm": ("http", "/metrics"),
    "ollama": ("metrics", "/metrics"),
    "onnxruntime": ("metrics", "/metrics"),
}
