"""Prometheus metrics of the server (one registry per process; names prefixed slm_onnx_)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
_TOKEN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
_RATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.requests = Counter(
            "slm_onnx_requests", "HTTP requests by route and status code.", ["route", "status"], registry=r
        )
        self.errors = Counter(
            "slm_onnx_request_errors", "Requests answered with an error, by error type.", ["route", "type"],
            registry=r,
        )
        self.cancelled = Counter(
            "slm_onnx_requests_cancelled", "Generations stopped because the client went away.", registry=r
        )
        self.prompt_tokens = Counter("slm_onnx_prompt_tokens", "Prompt tokens processed.", registry=r)
        self.generation_tokens = Counter("slm_onnx_generation_tokens", "Tokens generated.", registry=r)
        self.ttft = Histogram(
            "slm_onnx_time_to_first_token_seconds", "Time from arrival to the first generated token.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.tpot = Histogram(
            "slm_onnx_time_per_output_token_seconds", "Time between generated tokens of a request.",
            buckets=_TOKEN_BUCKETS, registry=r,
        )
        self.tokens_per_second = Histogram(
            "slm_onnx_request_tokens_per_second", "Generation speed of each request after its first token.",
            buckets=_RATE_BUCKETS, registry=r,
        )
        self.e2e = Histogram(
            "slm_onnx_e2e_request_latency_seconds", "Time from arrival to the last generated token.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.queue_wait = Histogram(
            "slm_onnx_queue_wait_seconds", "Time a request waited in the queue before generation.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge("slm_onnx_queue_depth", "Requests waiting for a generation slot.", registry=r)
        self.running = Gauge("slm_onnx_running_requests", "Requests being generated now.", registry=r)
        self.queue_capacity = Gauge(
            "slm_onnx_queue_capacity", "Most requests that may wait before new ones get 429.", registry=r
        )
        self.batch_capacity = Gauge(
            "slm_onnx_max_concurrent_generations", "Generation slots (batch size or worker threads).",
            registry=r,
        )
        self.ready = Gauge("slm_onnx_ready", "1 when the model is loaded and the server is not draining.",
                           registry=r)
        self.model_info = Gauge(
            "slm_onnx_model_info", "The served model (value is always 1).", ["model", "device", "scheduler"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
