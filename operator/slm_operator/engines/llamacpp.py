"""llama.cpp: GGUF (including the ternary BitNet types TQ1_0/TQ2_0) served by llama.cpp's own
OpenAI-compatible server, `llama-server` (runtime-images/llamacpp).

Flags and endpoints are llama.cpp's own (tools/server/README.md and common/arg.cpp of the
llama.cpp the pinned llama-cpp-python sdist vendors):
- --api-key-file FNAME: keys, one per line, from the mounted Secret file; every route but
  /health and /v1/health then needs `Authorization: Bearer <key>` (server-http.cpp,
  get_public_endpoints). So /metrics needs the key too: the ServiceMonitor sends it.
- --ctx-size is the KV cache of all slots together; with an explicit --parallel the cache is
  not unified and each slot gets ctx-size / parallel tokens, so ctx-size = context x parallel.
- --metrics enables /metrics (Prometheus text, names prefixed `llamacpp:`;
  server-task.cpp): the queue signal is llamacpp:requests_deferred (requests waiting for a
  free slot), beside llamacpp:requests_processing (slots busy).
- /health answers 503 while the model loads and 200 once it is ready: the probes.
- --no-webui (no browser UI), --no-slots (no /slots: it shows each slot's prompt).
"""

from __future__ import annotations

from typing import Any

from slm_operator import constants as c
from slm_operator import podspec
from slm_operator.engines import ggml
from slm_operator.engines.base import (
    GIB,
    MIB,
    ImageSetting,
    MetricsEndpoint,
    Obj,
    QueueMetric,
    ServeInput,
)
from slm_operator.engines.table import row

# One C++ process (static libllama/libggml) and its HTTP threads: an allowance, smaller than
# Ollama's Go server plus runner (no measurement here yet; docs/engines.md).
RUNTIME_BASE_BYTES = 256 * MIB
DEFAULT_PARALLEL = 4          # llama-server's slot count when --parallel is auto
GGUF_FILE = "model.gguf"      # what the quantizer publishes (runtime-images/quantizer gguf.py)
ALL_LAYERS = "999"            # --n-gpu-layers: more than any model has = every layer on the GPU


def server_args(inp: ServeInput, *, host: str = "0.0.0.0", port: int = c.API_PORT,
                key_file: str = c.API_KEY_FILE) -> list[str]:
    """`llama-server` flags for one replica (no secret on the command line: the key is a file).

    host/port/key_file: all interfaces on the API port by default (`slmctl compose`); the pod passes
    loopback (behind the gateway), `slmctl up` its own."""
    parallel = inp.options.parallel if inp.options else DEFAULT_PARALLEL
    threads = max(1, inp.cpu_millicores // 1000)
    args = [
        "--model", f"{inp.model_path}/{GGUF_FILE}",
        "--alias", inp.served_name,
        "--host", host,
        "--port", str(port),
        "--api-key-file", key_file,
        # Each of the `parallel` slots holds `context` tokens (sizing budgeted exactly that).
        "--ctx-size", str(inp.context * parallel),
        "--parallel", str(parallel),
        "--threads", str(threads),
        "--metrics",
        "--no-webui",
        "--no-slots",
        # The model's own (Jinja) chat template: without it llama-server refuses `tools`. On by
        # default in the pinned llama.cpp, explicit so LLAMA_ARG_JINJA or a new default cannot drop it.
        "--jinja",
    ]
    if inp.gpu_count:
        args += ["--n-gpu-layers", ALL_LAYERS]
    return args


class LlamaCpp(ggml.GgmlEngine):
    row = row("llamacpp")
    gateway_profile = "llamacpp"
    runtime_base_bytes = RUNTIME_BASE_BYTES
    image = ImageSetting("llamacpp")
    metrics = MetricsEndpoint("http", "/metrics", needs_key=True)
    queue_metric = QueueMetric("llamacpp:requests_deferred", "llamacpp_requests_deferred")
    ready_path = "/health"  # 503 while the model loads, 200 once ready; public (no key)
    tmp_bytes = 1 * GIB
    host_base_bytes = 1 * GIB
    sliding_window_capped = True  # llama.cpp's SWA cache (--swa-full off by default)

    def concurrency(self, options: Any) -> int:
        return options.parallel if options else DEFAULT_PARALLEL

    def containers(self, inp: ServeInput) -> tuple[list[Obj], list[Obj]]:
        container = {
            "name": "llama-server",
            "image": inp.image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["llama-server"],
            # Loopback only: the gateway container is the pod's only listener.
            "args": server_args(inp, host=c.ENGINE_HOST, port=c.ENGINE_PORT),
            "env": podspec.env({"HOME": "/tmp"}),
            # No ports: llama-server is on loopback behind the gateway; probes run in the container.
            **podspec.loopback_probes(self.ready_path, "/health"),
            "resources": podspec.with_scratch(inp.resources, self.tmp_bytes),
            "securityContext": podspec.container_security_context(),
            "volumeMounts": inp.mounts,
        }
        return [container], []


ENGINE = LlamaCpp()
