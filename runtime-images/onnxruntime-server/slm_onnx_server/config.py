"""Command-line options of the server."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerConfig:
    model_dir: Path
    served_model_name: str
    host: str = "0.0.0.0"
    port: int = 8000
    metrics_port: int = 0  # 0: /metrics, /health and /ready only on the main port
    api_key_file: Path | None = None
    device: str = "auto"
    scheduler: str = "engine"
    max_concurrency: int = 4
    max_model_len: int = 0  # 0: the model's context_length
    max_queue: int = 64
    max_request_bytes: int = 1 << 20
    grace_period_s: float = 30.0
    drain_delay_s: float = 0.0
    retry_after_s: int = 1
    log_level: str = "info"


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    p = argparse.ArgumentParser(
        prog="python -m slm_onnx_server",
        description="OpenAI-compatible HTTP server over onnxruntime-genai.",
    )
    p.add_argument("--model-dir", type=Path, required=True,
                   help="folder with genai_config.json (or with exactly one subfolder holding it)")
    p.add_argument("--served-model-name", help="model id clients send (default: the folder name)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=0,
                   help="also serve /metrics, /health and /ready on this port (0: main port only)")
    auth = p.add_mutually_exclusive_group(required=True)
    auth.add_argument("--api-key-file", type=Path,
                      help="file with the API key (one key per line; re-read when it changes)")
    auth.add_argument("--insecure-no-auth", action="store_true",
                      help="serve /v1 without authentication (development only)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: the execution provider the model was built for")
    p.add_argument("--scheduler", choices=("engine", "threads"), default="engine",
                   help="engine: og.Engine batching (continuous for paged models); threads: one Generator "
                        "per request on worker threads")
    p.add_argument("--max-concurrency", type=int, default=4,
                   help="sequences generated at once (batch size, or worker threads)")
    p.add_argument("--max-model-len", type=int, default=0,
                   help="cap on prompt + completion tokens (0: the model's context length); og.Engine sizes "
                        "each sequence's KV cache to it, so on CPU a smaller cap makes every step cheaper")
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests that may wait for a slot; more get 429 with Retry-After")
    p.add_argument("--max-request-bytes", type=int, default=1 << 20)
    p.add_argument("--grace-period-s", type=float, default=30.0,
                   help="on SIGTERM, how long in-flight requests may take to finish")
    p.add_argument("--drain-delay-s", type=float, default=0.0,
                   help="on SIGTERM, keep serving this long with /ready failing before closing the listener")
    p.add_argument("--retry-after-s", type=int, default=1)
    p.add_argument("--log-level", default="info")
    a = p.parse_args(argv)
    if a.max_concurrency < 1 or a.max_queue < 0 or a.max_model_len < 0:
        p.error("--max-concurrency must be >= 1, --max-queue and --max-model-len >= 0")
    return ServerConfig(
        model_dir=a.model_dir,
        served_model_name=a.served_model_name or a.model_dir.resolve().name,
        host=a.host,
        port=a.port,
        metrics_port=a.metrics_port,
        api_key_file=a.api_key_file,
        device=a.device,
        scheduler=a.scheduler,
        max_concurrency=a.max_concurrency,
        max_model_len=a.max_model_len,
        max_queue=a.max_queue,
        max_request_bytes=a.max_request_bytes,
        grace_period_s=a.grace_period_s,
        drain_delay_s=a.drain_delay_s,
        retry_after_s=a.retry_after_s,
        log_level=a.log_level,
    )
