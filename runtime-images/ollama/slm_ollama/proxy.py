"""Authenticating reverse proxy in front of Ollama, which has no authentication of its own.

Serves the OpenAI-compatible routes and Ollama's read/inference routes to callers holding the
API key (Bearer, compared in constant time), streams responses through unbuffered (SSE and
NDJSON), refuses model management with 403, and exposes /health, /ready and /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

log = logging.getLogger("slm_ollama.proxy")

# (method, path pattern) -> route label. Everything else is 404; MANAGEMENT is 403.
FORWARDED: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (m, re.compile(p), label) for m, p, label in (
        ("POST", r"^/v1/chat/completions$", "/v1/chat/completions"),
        ("POST", r"^/v1/completions$", "/v1/completions"),
        ("POST", r"^/v1/embeddings$", "/v1/embeddings"),
        ("GET", r"^/v1/models$", "/v1/models"),
        ("GET", r"^/v1/models/[^/]+$", "/v1/models/{model}"),
        ("POST", r"^/api/chat$", "/api/chat"),
        ("POST", r"^/api/generate$", "/api/generate"),
        ("POST", r"^/api/embed$", "/api/embed"),
        ("GET", r"^/api/tags$", "/api/tags"),
        ("POST", r"^/api/show$", "/api/show"),
        ("GET", r"^/api/version$", "/api/version"),
    )
)
MANAGEMENT = re.compile(r"^/api/(pull|push|delete|create|copy|blobs(/.*)?)$")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "authorization", "content-length"}


def error(status: int, message: str, type_: str, code: str | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    """An OpenAI-style error body, which OpenAI clients turn into their typed exceptions."""
    return JSONResponse({"error": {"message": message, "type": type_, "param": None, "code": code}},
                        status_code=status, headers=headers)


class ApiKeys:
    """The accepted key, re-read when the mounted Secret file changes (kubelet rotates it in place)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[float, int] | None = None
        self._digest: bytes | None = None

    def _load(self) -> bytes | None:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime, st.st_ino)
            if stamp != self._stamp:
                key = self.path.read_text(encoding="utf-8").strip()
                self._digest = hashlib.sha256(key.encode()).digest() if key else None
                self._stamp = stamp
        except OSError:
            self._digest, self._stamp = None, None
        return self._digest

    def check(self, authorization: str | None) -> bool:
        expected = self._load()
        if expected is None or not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Hash first so the comparison time depends on neither the key's length nor its content.
        return hmac.compare_digest(hashlib.sha256(token.strip().encode()).digest(), expected)


@dataclass
class ProxyMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("slm_proxy_requests_total", "Requests by route, method and status code",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("slm_proxy_upstream_latency_seconds",
                                 "Time from forwarding a request to Ollama's response headers", ["route"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
                                 registry=r)
        self.duration = Histogram("slm_proxy_request_duration_seconds",
                                  "Time until the last byte of the response (streams included)", ["route"],
                                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=r)
        self.in_flight = Gauge("slm_proxy_in_flight_requests", "Requests being forwarded now", registry=r)
        self.upstream_errors = Counter("slm_proxy_upstream_errors_total",
                                       "Requests that failed to reach Ollama", ["route"], registry=r)
        self.auth_failures = Counter("slm_proxy_auth_failures_total", "Requests refused for a missing or "
                                     "wrong API key", registry=r)


@dataclass
class ProxyConfig:
    upstream: str
    api_key_file: Path
    model: str | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    connect_timeout_s: float = 5.0
    read_timeout_s: float | None = None  # generations can be long; a stuck upstream shows in metrics


def _route(method: str, path: str) -> str | None:
    for m, pattern, label in FORWARDED:
        if m == method and pattern.match(path):
            return label
    return None


def build_app(cfg: ProxyConfig, metrics: ProxyMetrics | None = None, *, serve_metrics: bool = True) -> Starlette:
    metrics = metrics or ProxyMetrics()
    keys = ApiKeys(cfg.api_key_file)
    state: dict[str, httpx.AsyncClient] = {}

    def client() -> httpx.AsyncClient:
        if "c" not in state:
            state["c"] = httpx.AsyncClient(
                base_url=cfg.upstream,
                timeout=httpx.Timeout(cfg.read_timeout_s, connect=cfg.connect_timeout_s),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
            )
        return state["c"]

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(_: Request) -> Response:
        try:
            r = await client().get("/api/tags", timeout=3.0)
        except httpx.HTTPError as err:
            return JSONResponse({"status": "upstream unreachable", "detail": type(err).__name__}, 503)
        if r.status_code != 200:
            return JSONResponse({"status": f"upstream answered {r.status_code}"}, 503)
        names = {m.get("name") for m in r.json().get("models", [])} | {
            m.get("model") for m in r.json().get("models", [])}
        if cfg.model and cfg.model not in names and f"{cfg.model}:latest" not in names:
            return JSONResponse({"status": f"model {cfg.model} not loaded yet"}, 503)
        return JSONResponse({"status": "ready"})

    async def metrics_endpoint(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def forward(request: Request) -> Response:
        path, method = request.url.path, request.method
        if MANAGEMENT.match(path):
            metrics.requests.labels("management", method, "403").inc()
            return error(403, f"{path} is disabled: models are managed by the operator", "permission_error",
                         "model_management_disabled")
        label = _route(method, path)
        if label is None:
            metrics.requests.labels("other", method, "404").inc()
            return error(404, f"{method} {path} is not served here", "invalid_request_error", "not_found")
        if not keys.check(request.headers.get("authorization")):
            metrics.auth_failures.inc()
            metrics.requests.labels(label, method, "401").inc()
            return error(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                         "authentication_error", "invalid_api_key", {"WWW-Authenticate": "Bearer"})
        body = await request.body()
        if len(body) > cfg.max_body_bytes:
            metrics.requests.labels(label, method, "413").inc()
            return error(413, f"request body over {cfg.max_body_bytes} bytes", "invalid_request_error")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream_req = client().build_request(method, path, params=request.query_params, content=body,
                                              headers=headers)
        start = time.perf_counter()
        metrics.in_flight.inc()
        try:
            upstream = await client().send(upstream_req, stream=True)
        except httpx.HTTPError as err:
            metrics.in_flight.dec()
            metrics.upstream_errors.labels(label).inc()
            metrics.requests.labels(label, method, "502").inc()
            log.warning("upstream error on %s: %s", label, type(err).__name__)
            return error(502, "the model server is not reachable", "server_error", "upstream_unavailable")
        metrics.latency.labels(label).observe(time.perf_counter() - start)
        metrics.requests.labels(label, method, str(upstream.status_code)).inc()

        async def done() -> None:
            await upstream.aclose()
            metrics.in_flight.dec()
            metrics.duration.labels(label).observe(time.perf_counter() - start)

        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        # aiter_raw passes bytes as they come (no re-chunking, no decompression), so SSE events
        # reach the client as soon as Ollama writes them; a client disconnect cancels the
        # iteration and closes the upstream response, which stops the generation.
        return StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code, headers=out_headers,
                                 background=BackgroundTask(done))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette):
        yield
        if "c" in state:
            await state["c"].aclose()

    routes = [Route("/health", health, methods=["GET"]), Route("/ready", ready, methods=["GET"])]
    if serve_metrics:
        routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    routes.append(Route("/{path:path}", forward, methods=["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]))
    return Starlette(routes=routes, lifespan=lifespan)


def metrics_app(metrics: ProxyMetrics) -> Starlette:
    async def endpoint(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/metrics", endpoint, methods=["GET"])])


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


async def serve(cfg: ProxyConfig, listen: str, metrics_listen: str | None) -> None:
    import uvicorn

    metrics = ProxyMetrics()
    app = build_app(cfg, metrics, serve_metrics=metrics_listen is None)
    host, port = _host_port(listen)
    servers = [uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False,
                                             timeout_graceful_shutdown=30))]
    if metrics_listen:
        mhost, mport = _host_port(metrics_listen)
        servers.append(uvicorn.Server(uvicorn.Config(metrics_app(metrics), host=mhost, port=mport,
                                                     log_level="warning", access_log=False)))
    if not cfg.api_key_file.is_file():
        raise SystemExit(f"API key file {cfg.api_key_file} not found: refusing to start")
    await asyncio.gather(*(s.serve() for s in servers))
