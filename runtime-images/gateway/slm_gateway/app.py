"""The gateway: an aiohttp reverse proxy on the Service port, in front of an engine on 127.0.0.1.

Order of checks for a request on the main port:
  /health, /ready (GET/HEAD)            -> answered by the gateway (kubelet probes), no key
  missing or unknown Bearer key         -> 401 authentication_error
  refused route (model management, ...) -> 403 permission_error
  route the engine does not serve here  -> 404 invalid_request_error
  route outside the consumer's list     -> 403 permission_error
  over requests/tokens per minute       -> 429 (type requests|tokens, code rate_limit_exceeded) + Retry-After
  shared store down (fail closed)       -> 503 server_error
  otherwise forwarded; the response streams back as the engine writes it.

Errors have OpenAI's shape ({"error": {message, type, param, code}}), which OpenAI clients turn
into their typed exceptions. The metrics port serves /metrics (the gateway's series followed by
the engine's own, fetched from loopback) and /gateway/consumers (accepted names, rejected entries).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from slm_gateway.consumers import Consumer, KeyTable, digest, read_folder, read_single_key
from slm_gateway.limiter import Limiter, LimitStoreError
from slm_gateway.metrics import UNKNOWN, GatewayMetrics
from slm_gateway.routes import GENERATION, PROBES, PROFILES, Profile
from slm_gateway.usage import UsageMeter, prepare_body

log = logging.getLogger("slm_gateway")

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
                        "transfer-encoding", "upgrade", "host", "authorization", "content-length",
                        "accept-encoding"})
# The engine's readiness route, per engine (Ollama's /api/tags also tells whether the model is loaded).
READY_PATHS = {"vllm": "/health", "ollama": "/api/tags", "onnx": "/ready", "llamacpp": "/health"}
ENGINE_METRICS_PATHS = {"vllm": "/metrics", "onnx": "/metrics", "llamacpp": "/metrics"}


@dataclass
class GatewayConfig:
    """Where the engine is and where the keys are. Exactly one of keys_dir / api_key_file is set.

    ``scope`` names the limit counters in the shared store (one per model, e.g. "ns/name");
    ``fail_open`` lets requests through when the store is down (default: refuse with 503);
    ``recheck_s`` is how often, at most, the key files are checked for a change (seconds).
    """

    engine: str
    upstream: str
    keys_dir: Path | None = None
    api_key_file: Path | None = None
    redis_url: str | None = None
    redis_password: str | None = None
    scope: str = "default"
    fail_open: bool = False
    recheck_s: float = 1.0
    model: str | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    connect_timeout_s: float = 5.0
    read_timeout_s: float | None = None  # generations can be long; a stuck engine shows in the metrics
    # The engine's own key (engines that insist on one: the ONNX server, llama-server, vLLM's
    # --api-key), sent as Bearer on every forwarded request; the client's key never reaches it.
    upstream_key_file: Path | None = None

    @property
    def profile(self) -> Profile:
        try:
            return PROFILES[self.engine]
        except KeyError:
            raise ValueError(f"engine {self.engine!r} is not one of {', '.join(sorted(PROFILES))}") from None


def error(status: int, message: str, type_: str, code: str | None = None,
          headers: dict[str, str] | None = None) -> web.Response:
    """An OpenAI-style error response."""
    body = json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


class Keys:
    """The current KeyTable, re-read when the mounted files change (checked at most every ``recheck_s``)."""

    def __init__(self, cfg: GatewayConfig, metrics: GatewayMetrics) -> None:
        if (cfg.keys_dir is None) == (cfg.api_key_file is None):
            raise ValueError("give exactly one of --keys-dir (per-consumer Secret) or --api-key-file (one key)")
        self.cfg, self.metrics = cfg, metrics
        self.table = KeyTable()
        self._stamp: object = None
        self._checked = float("-inf")
        self.reload()

    def _current_stamp(self) -> object:
        if self.cfg.api_key_file is not None:
            try:
                st = self.cfg.api_key_file.stat()
                return st.st_mtime_ns, st.st_ino, st.st_size
            except OSError:
                return None
        folder = self.cfg.keys_dir
        assert folder is not None
        try:
            # kubelet swaps the ..data link to a new timestamped folder on every Secret update.
            return "link", os.readlink(folder / "..data")
        except OSError:
            pass
        stamp = []
        for root, _dirs, files in os.walk(folder):
            for f in files:
                with contextlib.suppress(OSError):
                    st = os.stat(os.path.join(root, f))
                    stamp.append((root, f, st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(sorted(stamp))

    def reload(self) -> bool:
        """Re-read the keys when their files changed; True when the table was replaced."""
        self._checked = time.monotonic()
        stamp = self._current_stamp()
        if stamp == self._stamp and self._stamp is not None:
            return False
        self._stamp = stamp
        if self.cfg.api_key_file is not None:
            table = read_single_key(self.cfg.api_key_file)
        else:
            try:
                table = read_folder(self.cfg.keys_dir, store=self.cfg.redis_url is not None)  # type: ignore[arg-type]
            except OSError as err:
                log.warning("cannot read the consumer Secret folder: %s", type(err).__name__)
                table = KeyTable()
        old = {(r.entry, r.reason) for r in self.table.rejected}
        for entry, reason in old - {(r.entry, r.reason) for r in table.rejected}:
            self.metrics.rejected.remove(entry, reason)
        for r in table.rejected:
            self.metrics.rejected.labels(r.entry, r.reason).set(1)
            log.warning("rejected consumer entry: %s", r.message)
        self.metrics.track_consumers([c.name for c in self.table.consumers], [c.name for c in table.consumers])
        self.metrics.consumers.labels("accepted").set(len(table.by_digest))
        self.metrics.consumers.labels("rejected").set(len(table.rejected))
        self.metrics.reloads.inc()
        self.table = table
        log.info("consumers: %d accepted (%s), %d rejected", len(table.by_digest),
                 ", ".join(c.name for c in table.consumers), len(table.rejected))
        return True

    def lookup(self, authorization: str | None) -> tuple[Consumer | None, str]:
        """(consumer, "") for a known Bearer key, else (None, "missing"|"invalid")."""
        if time.monotonic() - self._checked >= self.cfg.recheck_s:
            self.reload()
        if not authorization:
            return None, "missing"
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None, "missing"
        # A digest lookup: timing reveals nothing about a key without a SHA-256 preimage.
        consumer = self.table.by_digest.get(digest(token))
        return (consumer, "") if consumer else (None, "invalid")


def _kind(content_type: str) -> str:
    ct = content_type.split(";")[0].strip().lower()
    if ct == "text/event-stream":
        return "sse"
    if ct in ("application/x-ndjson", "application/jsonl"):
        return "ndjson"
    return "json"


class Gateway:
    """The main-port handler and its shared state (HTTP session to the engine, keys, limiter)."""

    def __init__(self, cfg: GatewayConfig, metrics: GatewayMetrics | None = None,
                 limiter: Limiter | None = None) -> None:
        self.cfg = cfg
        self.profile = cfg.profile
        self.metrics = metrics or GatewayMetrics()
        self.keys = Keys(cfg, self.metrics)
        self.limiter = limiter
        if self.limiter is None and cfg.redis_url:
            self.limiter = Limiter.from_url(cfg.redis_url, cfg.scope, password=cfg.redis_password)
        self._session: aiohttp.ClientSession | None = None
        # Tokens counted on this replica and not yet in the store, by consumer: they ride on the
        # consumer's next admit, or are flushed within ``debit_flush_s`` (bounds the lag other
        # replicas see).
        self.pending_tokens: dict[str, int] = {}
        self.debit_flush_s = 1.0
        self._flusher: asyncio.Task | None = None
        self._upstream_key: tuple[object, dict[str, str]] = (None, {})

    def upstream_auth(self) -> dict[str, str]:
        """{"Authorization": "Bearer <engine key>"} when --upstream-key-file is set (re-read when the
        mounted file changes), else {}."""
        path = self.cfg.upstream_key_file
        if path is None:
            return {}
        try:
            st = path.stat()
            stamp: object = (st.st_mtime_ns, st.st_ino, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._upstream_key[0]:
            try:
                lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            except OSError:
                lines = []
            self._upstream_key = (stamp, {"Authorization": f"Bearer {lines[0]}"} if lines else {})
        return self._upstream_key[1]

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                base_url=self.cfg.upstream.rstrip("/"), auto_decompress=False,
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None, connect=self.cfg.connect_timeout_s,
                                              sock_read=self.cfg.read_timeout_s))
        return self._session

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush_debits()
        if self._session is not None:
            await self._session.close()
        if self.limiter is not None:
            await self.limiter.close()

    # --- probes -----------------------------------------------------------------------------
    async def ready(self) -> web.Response:
        path = READY_PATHS[self.profile.engine]
        try:
            async with self.session.get(path, headers=self.upstream_auth(),
                                        timeout=aiohttp.ClientTimeout(total=3)) as r:
                body = await r.read()
        except (TimeoutError, aiohttp.ClientError) as err:
            return web.json_response({"status": "upstream unreachable", "detail": type(err).__name__}, status=503)
        if r.status != 200:
            return web.json_response({"status": f"upstream answered {r.status}"}, status=503)
        if self.profile.engine == "ollama" and self.cfg.model:
            try:
                models = json.loads(body).get("models", [])
            except (ValueError, AttributeError):
                models = []
            names = {m.get("name") for m in models} | {m.get("model") for m in models}
            if self.cfg.model not in names and f"{self.cfg.model}:latest" not in names:
                return web.json_response({"status": f"model {self.cfg.model} not loaded yet"}, status=503)
        return web.json_response({"status": "ready"})

    # --- the main handler -------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        path, method = request.path, request.method
        m = self.metrics
        if path in PROBES and method in ("GET", "HEAD"):
            return web.json_response({"status": "ok"}) if path == "/health" else await self.ready()
        consumer, why = self.keys.lookup(request.headers.get("Authorization"))
        verdict, label = self.profile.classify(method, path)
        if consumer is None:
            m.auth_failures.labels(why).inc()
            m.requests.labels(UNKNOWN, label, "401").inc()
            return error(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                         "authentication_error", "invalid_api_key", {"WWW-Authenticate": "Bearer"})
        name = consumer.name
        if verdict == "refused":
            m.requests.labels(name, label, "403").inc()
            what = "models are managed by the operator" if label == "management" else "it administers the server"
            code = "model_management_disabled" if label == "management" else "admin_route_disabled"
            return error(403, f"{path} is disabled: {what}", "permission_error", code)
        if verdict == "unknown":
            m.requests.labels(name, label, "404").inc()
            return error(404, f"{method} {path} is not served here", "invalid_request_error", "not_found")
        if not consumer.allows(path):
            m.requests.labels(name, label, "403").inc()
            return error(403, f"consumer {name!r} may not call {path}", "permission_error", "route_not_allowed")
        if consumer.limited:
            refused = await self._admit(consumer, label)
            if refused is not None:
                return refused
        if request.content_length is not None and request.content_length > self.cfg.max_body_bytes:
            m.requests.labels(name, label, "413").inc()
            return error(413, f"request body over {self.cfg.max_body_bytes} bytes", "invalid_request_error")
        body = await request.read()
        injected = False
        if method == "POST" and label in GENERATION:
            body, injected = prepare_body(label, body, consumer.max_tokens)
        return await self._forward(request, consumer, label, body, injected)

    async def _admit(self, consumer: Consumer, label: str) -> web.Response | None:
        m = self.metrics
        assert self.limiter is not None  # consumers with limits are rejected without a store
        debit = self.pending_tokens.pop(consumer.name, 0)
        try:
            decision = await self.limiter.admit(consumer.name, consumer.requests_per_minute,
                                                consumer.tokens_per_minute, debit=debit)
        except LimitStoreError as err:
            if debit:
                self.pending_tokens[consumer.name] = self.pending_tokens.get(consumer.name, 0) + debit
            log.warning("limit store error (%s): %s", err, "letting the request through" if self.cfg.fail_open
                        else "refusing the request")
            if self.cfg.fail_open:
                m.limit_store_errors.labels("allowed").inc()
                return None
            m.limit_store_errors.labels("refused").inc()
            m.requests.labels(consumer.name, label, "503").inc()
            return error(503, "the rate-limit store is unavailable; retry shortly", "server_error",
                         "rate_limit_store_unavailable", {"Retry-After": "1"})
        if decision.allowed:
            return None
        m.rate_limited.labels(consumer.name, decision.limit).inc()
        m.requests.labels(consumer.name, label, "429").inc()
        limit = consumer.requests_per_minute if decision.limit == "requests" else consumer.tokens_per_minute
        return error(429, f"Rate limit reached for consumer {consumer.name!r} on {decision.limit} per min: limit "
                     f"{limit}. Please try again in {decision.retry_after_s}s.", decision.limit,
                     "rate_limit_exceeded", {"Retry-After": str(decision.retry_after_s)})

    async def _forward(self, request: web.Request, consumer: Consumer, label: str, body: bytes,
                       injected: bool) -> web.StreamResponse:
        m = self.metrics
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Accept-Encoding"] = "identity"  # plain bytes, so usage can be read on the way
        headers.update(self.upstream_auth())
        start = time.perf_counter()
        m.in_flight.inc()
        try:
            upstream = await self.session.request(request.method, request.rel_url.path_qs, data=body or None,
                                                  headers=headers, allow_redirects=False)
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            m.in_flight.dec()
            m.upstream_errors.labels(label).inc()
            m.requests.labels(consumer.name, label, "502").inc()
            log.warning("upstream error on %s: %s", label, type(err).__name__)
            return error(502, "the model server is not reachable", "server_error", "upstream_unavailable")
        m.upstream_latency.labels(label).observe(time.perf_counter() - start)
        m.requests.labels(consumer.name, label, str(upstream.status)).inc()
        meter = UsageMeter(_kind(upstream.headers.get("Content-Type", "")), injected) \
            if label in GENERATION or label == "/v1/embeddings" else None
        length = upstream.headers.get("Content-Length")
        if length is not None and int(length) <= self.cfg.max_body_bytes and (meter is None or meter.kind == "json"):
            # A whole answer of known length: read it and send headers and body in one write.
            try:
                data = await upstream.read()
            except (aiohttp.ClientError, TimeoutError) as err:
                upstream.close()
                m.in_flight.dec()
                m.upstream_errors.labels(label).inc()
                log.warning("upstream error on %s: %s", label, type(err).__name__)
                return error(502, "the model server broke off its answer", "server_error", "upstream_unavailable")
            finally:
                upstream.release()
            m.in_flight.dec()
            m.duration.labels(label).observe(time.perf_counter() - start)
            if meter is not None:
                meter.feed(data)
                meter.finish()
                self._account(consumer, meter)
            headers = [(k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP]
            return web.Response(body=data, status=upstream.status, reason=upstream.reason, headers=headers)
        out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for k, v in upstream.headers.items():
            if k.lower() not in HOP_BY_HOP:
                out.headers.add(k, v)
        try:
            await out.prepare(request)
            try:
                # iter_any passes on what arrived, as it arrived: no re-chunking, so each event the
                # engine flushes reaches the client at once.
                async for chunk in upstream.content.iter_any():
                    data = meter.feed(chunk) if meter is not None else chunk
                    if data:
                        await out.write(data)
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, TimeoutError) as err:
                await self._broke_off(request, out, upstream, label, err)
                return out
            if meter is not None and (tail := meter.finish()):
                await out.write(tail)
            await out.write_eof()
        except (ConnectionError, aiohttp.ClientError, asyncio.CancelledError) as err:
            # The client went away (or the engine broke off): closing the engine's connection
            # stops the generation there.
            log.info("stream on %s ended early: %s", label, type(err).__name__)
            upstream.close()
            if isinstance(err, asyncio.CancelledError):
                raise
        finally:
            upstream.release()
            m.in_flight.dec()
            m.duration.labels(label).observe(time.perf_counter() - start)
            if meter is not None:
                self._account(consumer, meter)
        return out

    async def _broke_off(self, request: web.Request, out: web.StreamResponse, upstream: aiohttp.ClientResponse,
                         label: str, err: BaseException) -> None:
        """The engine broke off a streamed answer (it crashed or was killed mid-stream). A
        clean end would read as a complete answer, so: an SSE stream gets an error event in
        the shape vLLM sends mid-stream errors (`data: {"error": {...}}`, which the openai
        client raises as APIError) and ends; any other stream is cut without its last chunk,
        which every HTTP client reports as an incomplete body."""
        upstream.close()
        m = self.metrics
        m.upstream_errors.labels(label).inc()
        log.warning("the engine broke off its answer on %s: %s", label, type(err).__name__)
        if _kind(upstream.headers.get("Content-Type", "")) == "sse":
            event = {"error": {"message": "the model server broke off its answer", "type": "server_error",
                               "code": "upstream_unavailable"}}
            with contextlib.suppress(ConnectionError):
                await out.write(f"data: {json.dumps(event)}\n\n".encode())
                await out.write_eof()
        elif request.transport is not None:
            request.transport.abort()

    def _account(self, consumer: Consumer, meter: UsageMeter) -> None:
        prompt, completion = meter.tokens
        if prompt:
            self.metrics.tokens.labels(consumer.name, "prompt").inc(prompt)
        if completion:
            self.metrics.tokens.labels(consumer.name, "completion").inc(completion)
        if consumer.tokens_per_minute is not None and self.limiter is not None and prompt + completion:
            self.pending_tokens[consumer.name] = self.pending_tokens.get(consumer.name, 0) + prompt + completion
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.debit_flush_s)
        await self.flush_debits()

    async def flush_debits(self) -> None:
        """Add every consumer's pending tokens to the store (kept for the next try when it fails)."""
        if self.limiter is None:
            return
        for name in list(self.pending_tokens):
            tokens = self.pending_tokens.pop(name, 0)
            if not tokens:
                continue
            try:
                await self.limiter.debit(name, tokens)
            except LimitStoreError as err:
                self.pending_tokens[name] = self.pending_tokens.get(name, 0) + tokens
                self.metrics.limit_store_errors.labels("debit_delayed").inc()
                log.warning("could not count %d tokens of %s yet: %s", tokens, name, err)

    # --- metrics port -----------------------------------------------------------------------
    async def metrics_endpoint(self, _: web.Request) -> web.Response:
        text = generate_latest(self.metrics.registry)
        path = ENGINE_METRICS_PATHS.get(self.profile.engine)
        if path:
            # The engine listens on loopback only: its series (vllm:num_requests_waiting, ...)
            # are scraped through here, after the gateway's own.
            try:
                async with self.session.get(path, headers=self.upstream_auth(),
                                            timeout=aiohttp.ClientTimeout(total=5)) as r:
                    if r.status == 200:
                        text += await r.read()
            except (TimeoutError, aiohttp.ClientError):
                pass
        return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def consumers_endpoint(self, _: web.Request) -> web.Response:
        t = self.keys.table
        return web.json_response({
            "accepted": [c.name for c in t.consumers],
            "rejected": [{"entry": r.entry, "reason": r.reason, "message": r.message} for r in t.rejected]})


def build_app(gw: Gateway, *, serve_metrics: bool = False) -> web.Application:
    """The main-port app; with ``serve_metrics`` the metrics routes are on it too (tests only:
    the consumer names in the metrics are not for every caller)."""
    app = web.Application(client_max_size=gw.cfg.max_body_bytes + 1)
    if serve_metrics:
        app.router.add_get("/metrics", gw.metrics_endpoint)
        app.router.add_get("/gateway/consumers", gw.consumers_endpoint)
    app.router.add_route("*", "/{tail:.*}", gw.handle)

    async def cleanup(_: web.Application) -> None:
        await gw.close()

    app.on_cleanup.append(cleanup)
    return app


def build_metrics_app(gw: Gateway) -> web.Application:
    app = web.Application()
    app.router.add_get("/metrics", gw.metrics_endpoint)
    app.router.add_get("/gateway/consumers", gw.consumers_endpoint)
    return app
