"""Ollama: GGUF on CPU (or GPU), behind the gateway.

Ollama has no authentication of its own: it listens on 127.0.0.1 only, and the gateway container
(render/engines.py, runtime-images/gateway) checks the key, refuses the model-management routes,
forwards to it and serves Prometheus metrics on the metrics port. The server container
(`slm_ollama serve`) imports the GGUF from the model cache into Ollama's blob store.
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
    ServeInput,
)
from slm_operator.engines.table import row

OLLAMA_PORT = 11434  # Ollama's default port, on loopback behind the gateway

RUNTIME_BASE_BYTES = 384 * MIB       # the Go server and its llama runner process
MODELS_DIR = "/var/lib/ollama-models"
WORKING_HEADROOM = 1.2


def models_bytes(artifact_bytes: int) -> int:
    """OLLAMA_MODELS: Ollama copies the whole GGUF into its blob store, plus its manifests."""
    return int(artifact_bytes * WORKING_HEADROOM) + GIB


class Ollama(ggml.GgmlEngine):
    row = row("ollama")
    gateway_profile = "ollama"
    loopback_port = OLLAMA_PORT
    checks_own_key = False  # Ollama has no key: the gateway is its only guard
    runtime_base_bytes = RUNTIME_BASE_BYTES
    image = ImageSetting("ollama")
    metrics = MetricsEndpoint("metrics")
    queue_metric = None   # the gateway counts requests in flight, not a queue: CPU is the default signal
    tmp_bytes = 1 * GIB
    host_base_bytes = 1 * GIB
    sliding_window_capped = True  # llama.cpp's SWA cache

    def concurrency(self, options: Any) -> int:
        return options.num_parallel if options else 4  # num_parallel slots of num_ctx each

    def context_option(self, options: Any) -> int | None:
        return options.num_ctx if options else None

    def containers(self, inp: ServeInput) -> tuple[list[Obj], list[Obj]]:
        opts = inp.options
        num_ctx = opts.num_ctx if opts and opts.num_ctx else inp.context
        blob_bytes = models_bytes(inp.artifact_bytes)
        server = {
            "name": "ollama",
            "image": inp.image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["python3", "-m", "slm_ollama", "serve"],
            "args": [
                "--gguf-dir", inp.model_path,
                "--name", inp.served_name,
                "--param", f"num_ctx={num_ctx}",
            ],
            "env": podspec.env({
                "HOME": "/tmp",
                "OLLAMA_HOST": f"{c.ENGINE_HOST}:{OLLAMA_PORT}",
                # Ollama copies the GGUF into its blob store: a volume of its own, sized from the
                # artifact (not /tmp, capped for caches).
                "OLLAMA_MODELS": MODELS_DIR,
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
            "resources": podspec.with_scratch(inp.resources, self.tmp_bytes + blob_bytes),
            "securityContext": podspec.container_security_context(),
            "volumeMounts": [*inp.mounts, {"name": "ollama-models", "mountPath": MODELS_DIR}],
        }
        return [server], [podspec.empty_dir("ollama-models", blob_bytes)]


ENGINE = Ollama()
