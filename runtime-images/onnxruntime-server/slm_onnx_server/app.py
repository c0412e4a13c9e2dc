"""The Starlette application: OpenAI routes, probes, metrics, auth and request accounting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from jinja2 import TemplateError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import errors
from . import guidance as G
from .auth import ApiKeys, bearer_token
from .config import ServerConfig
from .metrics import Metrics
from .model import LoadedModel, load_model
from .protocol import ParsedRequest, chunk, full_response, new_id, now, parse_chat, parse_completion, usage
from .scheduler import (
    Delta,
    Failed,
    Finished,
    Job,
    QueueFull,
    Rejected,
    Scheduler,
    SchedulerStopped,
    make_scheduler,
)

log = logging.getLogger("slm_onnx_server")

ROUTES = ("/health", "/ready", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions")


class Mailbox:
    """Hands events from generation threads to the event loop with one wake-up per batch.

    A wake-up per token (call_soon_threadsafe) costs more than generating a token of a small
    model; here a thread appends, and only the first append after a drain wakes the loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._items: deque[tuple[asyncio.Queue, Any]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def post(self, queue: asyncio.Queue, event: Any) -> None:
        with self._lock:
            self._items.append((queue, event))
            if self._scheduled:
                return
            self._scheduled = True
        # RuntimeError: the loop is gone (process exit) and nobody is listening.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, deque()
            self._scheduled = False
        for queue, event in items:
            queue.put_nowait(event)


class ServerState:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.keys = ApiKeys(config.api_key_file) if config.api_key_file else None
        self.lm: LoadedModel | None = None
        self.scheduler: Scheduler | None = None
        self.draining = False
        self.load_error: str | None = None
        self.created = int(time.time())
        self._mailbox: Mailbox | None = None

    def mailbox(self, loop: asyncio.AbstractEventLoop) -> Mailbox:
        if self._mailbox is None or self._mailbox.loop is not loop:
            self._mailbox = Mailbox(loop)
        return self._mailbox

    @property
    def ready(self) -> bool:
        return self.scheduler is not None and self.scheduler.alive and not self.draining

    def start_draining(self) -> None:
        self.draining = True
        self.metrics.ready.set(0)

    def load(self) -> None:
        """Blocking: load the model and start the scheduler (run in a thread at startup)."""
        cfg = self.config
        try:
            lm = load_model(cfg.model_dir, cfg.served_model_name, cfg.device, cfg.max_model_len)
            scheduler = make_scheduler(cfg.scheduler, lm, self.metrics, cfg.max_queue, cfg.max_concurrency)
            scheduler.start()
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("model load failed")
            raise
        self.lm, self.scheduler = lm, scheduler
        self.metrics.model_info.labels(lm.name, lm.device, scheduler.name).set(1)
        if not self.draining:
            self.metrics.ready.set(1)


# ---- middleware --------------------------------------------------------------------------


class Gate:
    """Outermost ASGI layer: request id, API-key check for /v1, per-route metrics, access log."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in ROUTES else ("/v1/models" if path.startswith("/v1/models/") else "other")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.monotonic()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            keys = self.state.keys
            token = bearer_token(headers.get("authorization"))
            if path.startswith("/v1") and keys is not None and not keys.check(token):
                err = errors.unauthorized()
                self.state.metrics.errors.labels(route, err.type).inc()
                await err.response()(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            self.state.metrics.requests.labels(route, str(status)).inc()
            if route not in ("/health", "/ready", "/metrics"):
                log.info("request", extra={"request_id": request_id, "method": scope["method"], "route": route,
                                           "status": status,
                                           "duration_ms": round((time.monotonic() - started) * 1000, 1)})


# ---- handlers ----------------------------------------------------------------------------


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    state: ServerState = request.app.state.server
    if state.ready:
        return JSONResponse({"status": "ready"})
    if state.draining:
        reason = "draining"
    elif state.scheduler is not None:
        reason = "scheduler_failed"
    else:
        reason = "load_failed" if state.load_error else "loading"
    return JSONResponse({"status": reason}, status_code=503)


async def metrics(request: Request) -> Response:
    state: ServerState = request.app.state.server
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def _model_card(state: ServerState) -> dict:
    name = state.config.served_model_name
    return {"id": name, "object": "model", "created": state.created, "owned_by": "slm-operator"}


async def list_models(request: Request) -> Response:
    state: ServerState = request.app.state.server
    return JSONResponse({"object": "list", "data": [_model_card(state)]})


async def get_model(request: Request) -> Response:
    state: ServerState = request.app.state.server
    name = request.path_params["model"]
    if name != state.config.served_model_name:
        return errors.model_not_found(name).response()
    return JSONResponse(_model_card(state))


async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise errors.APIError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")
    body = b""
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise errors.APIError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise errors.invalid("We could not parse the JSON body of your request.") from None


def _prompt_ids(lm: LoadedModel, req: ParsedRequest) -> list[int]:
    if req.prompt_ids is not None:
        bad = [t for t in req.prompt_ids if not 0 <= t < lm.vocab_size]
        if bad:
            raise errors.invalid(f"Token id {bad[0]} is outside the vocabulary.", param="prompt")
        return req.prompt_ids
    if req.kind == "chat":
        try:
            text = lm.template.render(req.messages, req.tools, req.add_generation_prompt, **req.template_kwargs)
        except (TemplateError, ValueError, TypeError) as exc:
            raise errors.invalid(f"The chat template rejected the messages: {exc}", param="messages") from None
    else:
        text = req.prompt or ""
    return lm.encode(text)


def _truncate(ids: list[int], req: ParsedRequest, context: int) -> list[int]:
    """vLLM's truncate_prompt_tokens: keep k tokens (-1: the context length) from truncation_side."""
    if req.truncate is None:
        return ids
    keep = context if req.truncate == -1 else req.truncate
    if len(ids) <= keep:
        return ids
    return ids[-keep:] if req.truncation_side == "left" else ids[:keep]


async def chat_completions(request: Request) -> Response:
    return await _generate(request, "chat")


async def completions(request: Request) -> Response:
    return await _generate(request, "completion")


async def _generate(request: Request, kind: str) -> Response:
    state: ServerState = request.app.state.server
    route = request.url.path
    try:
        body = await _read_json(request, state.config.max_request_bytes)
        req = parse_chat(body) if kind == "chat" else parse_completion(body)
        if req.model != state.config.served_model_name:
            raise errors.model_not_found(req.model)
        lm, scheduler = state.lm, state.scheduler
        if state.draining:
            raise errors.unavailable("The server is shutting down.", "server_shutting_down")
        if lm is None or scheduler is None:
            raise errors.unavailable("The model is not loaded yet.", "model_not_ready")
        if req.tool_mode is not None and req.tool_mode.mode == "auto" and not G.template_supports_hermes(
                lm.template.template):
            raise errors.invalid(
                "'tool_choice': 'auto' (the default when tools are given) needs a chat template that writes "
                "Hermes <tool_call> blocks, and this model's has none; use tool_choice 'required', a named "
                "function, or 'none'.", param="tool_choice")
        why = scheduler.seed_refusal(req.sampling)
        if why:
            raise errors.invalid(f"'seed' cannot be honoured here: {why}.", param="seed")
        ids = _truncate(await asyncio.to_thread(_prompt_ids, lm, req), req, lm.context_length)
        if not ids:
            raise errors.invalid("The prompt is empty.", param="messages" if kind == "chat" else "prompt")
        room = lm.context_length - len(ids)
        max_tokens = req.sampling.max_tokens if req.sampling.max_tokens is not None else room
        if room < 1 or max_tokens > room:
            raise errors.invalid(
                f"This model's maximum context length is {lm.context_length} tokens. However, you requested "
                f"{len(ids) + max_tokens} tokens ({len(ids)} in the prompt, {max_tokens} for the completion).",
                param="messages" if kind == "chat" else "prompt", code="context_length_exceeded",
            )
        events: asyncio.Queue = asyncio.Queue()
        mailbox = state.mailbox(asyncio.get_running_loop())
        job = Job(ids, req.sampling, max_tokens, lambda event: mailbox.post(events, event))
        try:
            scheduler.submit(job)
        except QueueFull:
            raise errors.queue_full(state.config.retry_after_s) from None
        except SchedulerStopped:
            raise errors.unavailable("The server is shutting down.", "server_shutting_down") from None
        state.metrics.prompt_tokens.inc(len(ids))
    except errors.APIError as err:
        state.metrics.errors.labels(route, err.type).inc()
        return err.response()

    first: Any = None
    if req.sampling.guidance is not None:
        # llguidance builds the grammar when the generation starts; a grammar it refuses must be a
        # 400 before a stream's 200 goes out, so wait for the first event (the grammar is built).
        first = await events.get()
        if isinstance(first, Rejected):
            err = errors.invalid(first.message, param=first.param)
            state.metrics.errors.labels(route, err.type).inc()
            return err.response()
        _requeue_first(events, first)
    rid, created = new_id(kind, req.request_id), now()
    request_id = request.scope.get("state", {}).get("request_id")
    if req.stream:
        return StreamingResponse(
            _sse(state, scheduler, req, job, events, rid, created, len(ids), request_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await _collect(state, scheduler, request, req, job, events, rid, created, len(ids), request_id)


def _requeue_first(events: asyncio.Queue, first: Any) -> None:
    """Put the event taken to look at back in front of those that arrived since."""
    rest = []
    while not events.empty():
        rest.append(events.get_nowait())
    for event in (first, *rest):
        events.put_nowait(event)


def _log_done(request_id: str | None, kind: str, prompt: int, job: Job, finish: str) -> None:
    ttft = None if job.first_token_at is None else round((job.first_token_at - job.arrived) * 1000, 1)
    log.info("generation finished", extra={"request_id": request_id, "kind": kind, "prompt_tokens": prompt,
                                           "completion_tokens": job.completion_tokens, "finish_reason": finish,
                                           "ttft_ms": ttft})


async def _collect(
    state: ServerState, scheduler: Scheduler, request: Request, req: ParsedRequest, job: Job,
    events: asyncio.Queue, rid: str, created: int, prompt_tokens: int, request_id: str | None,
) -> Response:
    async def watch_disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        scheduler.cancel(job)

    watcher = asyncio.create_task(watch_disconnect())
    parts: list[str] = []
    try:
        while True:
            event = await events.get()
            if isinstance(event, Delta):
                parts.append(event.text)
            elif isinstance(event, Finished):
                break
            elif isinstance(event, Rejected):
                err = errors.invalid(event.message, param=event.param)
                state.metrics.errors.labels(request.url.path, err.type).inc()
                return err.response()
            else:
                assert isinstance(event, Failed)
                err = errors.internal(event.message)
                state.metrics.errors.labels(request.url.path, err.type).inc()
                return err.response()
    finally:
        watcher.cancel()
        if not job.done:
            scheduler.cancel(job)  # this handler was cancelled (grace period over)
    _log_done(request_id, req.kind, prompt_tokens, job, event.reason)
    if event.reason == "cancelled":
        err = errors.unavailable("The request was cancelled.", "request_cancelled")
        state.metrics.errors.labels(request.url.path, err.type).inc()
        return err.response()
    text: str | None = "".join(parts)
    calls = None
    finish = event.reason
    if req.tool_mode is not None:
        text, calls = G.parse_tool_calls(req.tool_mode, text or "")
        finish = "tool_calls" if calls else finish
    return JSONResponse(
        full_response(req, rid, created, text, finish, prompt_tokens, event.completion_tokens, calls)
    )


def _sse_line(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def _sse(
    state: ServerState, scheduler: Scheduler, req: ParsedRequest, job: Job, events: asyncio.Queue,
    rid: str, created: int, prompt_tokens: int, request_id: str | None,
) -> AsyncIterator[str]:
    # Tool calls leave whole at the end: required/named output is all calls; in auto mode the
    # grammar lets text not start with '<', so a '<' first means the output is calls.
    mode = req.tool_mode
    buffering = mode is not None and mode.mode != "auto"
    decided = mode is None or buffering
    buffered: list[str] = []
    try:
        if req.kind == "chat":
            yield _sse_line(chunk(req, rid, created, text="", role=True))
        held: Any = None
        while True:
            if held is not None:
                event, held = held, None
            else:
                event = await events.get()
            if isinstance(event, Delta):
                # Pieces that piled up while the loop was busy leave as one chunk: one write and one
                # JSON encoding instead of one per token when the process falls behind.
                text = event.text
                while not events.empty():
                    nxt = events.get_nowait()
                    if not isinstance(nxt, Delta):
                        held = nxt
                        break
                    text += nxt.text
                if not decided:
                    buffered.append(text)
                    head = "".join(buffered).lstrip()
                    if not head:
                        continue
                    decided, buffering = True, head.startswith("<")
                    text, buffered = ("", buffered) if buffering else ("".join(buffered), [])
                if buffering:
                    if text:
                        buffered.append(text)
                    continue
                yield _sse_line(chunk(req, rid, created, text=text))
                continue
            if isinstance(event, Failed | Rejected) or event.reason == "cancelled":
                if isinstance(event, Rejected):
                    err = errors.invalid(event.message, param=event.param)
                elif isinstance(event, Failed):
                    err = errors.internal(event.message)
                else:
                    err = errors.unavailable("The request was cancelled.", "request_cancelled")
                state.metrics.errors.labels("/v1/chat/completions" if req.kind == "chat" else "/v1/completions",
                                            err.type).inc()
                yield _sse_line(err.body())
                break
            _log_done(request_id, req.kind, prompt_tokens, job, event.reason)
            finish = event.reason
            if mode is not None and buffered:
                content, calls = G.parse_tool_calls(mode, "".join(buffered))
                if calls:
                    finish = "tool_calls"
                    yield _sse_line(chunk(req, rid, created, tool_calls=calls))
                else:
                    yield _sse_line(chunk(req, rid, created, text=content))
            yield _sse_line(chunk(req, rid, created, text="" if req.kind == "completion" else None,
                                  finish=finish))
            if req.include_usage:
                yield _sse_line(chunk(req, rid, created, usage_only=True,
                                      usage_block=usage(prompt_tokens, event.completion_tokens)))
            break
        yield "data: [DONE]\n\n"
    finally:
        if not job.done:
            scheduler.cancel(job)  # the client went away mid-stream


# ---- application -------------------------------------------------------------------------


def build_app(state: ServerState, *, ops_only: bool = False) -> ASGIApp:
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    if not ops_only:
        routes += [
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", get_model, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
        ]

    async def not_found(request: Request, exc: Exception) -> Response:
        code = getattr(exc, "status_code", 404)
        message = "Method not allowed." if code == 405 else f"Unknown route {request.url.path}."
        return errors.APIError(code, message, code="not_found" if code == 404 else "method_not_allowed").response()

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return errors.internal().response()

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found, 500: server_error})
    app.state.server = state
    return Gate(app, state)
