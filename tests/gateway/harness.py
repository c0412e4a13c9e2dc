"""Test helpers: a real redis-server, the gateway in a thread, and a small OpenAI-speaking engine.

The engine stand-in speaks vLLM's wire format (the names and shapes of vLLM's OpenAI server:
chat.completion(.chunk) objects, SSE ``data:`` events ending in ``[DONE]``, a usage-only last
chunk with empty ``choices`` when ``stream_options.include_usage`` is set); it stands in only for
what cannot run here at speed (a GPU model). Every request it sees is recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

WORDS = ["Hello", " from", " a", " tiny", " model", "."]
PROMPT_TOKENS = 7


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_binary() -> str | None:
    return shutil.which("redis-server") or (os.path.exists("/usr/bin/redis-server") and "/usr/bin/redis-server") or None


@contextmanager
def redis_server():
    """A real redis-server on 127.0.0.1 (no persistence); yields (url, process)."""
    binary = redis_binary()
    assert binary, "redis-server is not installed"
    port = free_port()
    folder = tempfile.mkdtemp(prefix="slm-redis-")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", folder, "--protected-mode", "yes"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


class LoopThread:
    """An asyncio loop in a daemon thread, to run aiohttp servers beside synchronous test code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@contextmanager
def serving_many(*apps: web.Application):
    """Serve aiohttp apps on 127.0.0.1 in one loop thread (as the gateway's two ports share one
    loop); yields their base URLs."""
    lt = LoopThread()
    ports = [free_port() for _ in apps]

    async def start() -> list[web.AppRunner]:
        runners = []
        for app, port in zip(apps, ports, strict=True):
            runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
        return runners

    runners = lt.run(start())
    try:
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for runner in reversed(runners):
            lt.run(runner.cleanup())
        lt.stop()


@contextmanager
def serving_aiohttp(app: web.Application):
    """Serve one aiohttp app on 127.0.0.1 in its own loop thread; yields the base URL."""
    with serving_many(app) as (url,):
        yield url


@contextmanager
def serving_gateway(gw):
    """The gateway's main and metrics apps in one loop; yields (url, metrics_url)."""
    from slm_gateway.app import build_app, build_metrics_app

    with serving_many(build_app(gw), build_metrics_app(gw)) as (url, murl):
        yield url, murl


class FakeEngine:
    """vLLM's OpenAI wire format over a canned answer, with a delay between streamed chunks."""

    def __init__(self, chunk_delay_s: float = 0.05, words: list[str] | None = None,
                 die_after_chunks: int | None = None) -> None:
        """die_after_chunks: streamed answers drop the connection after that many chunks, with no
        last chunk of the chunked body, as a killed engine process does."""
        self.die_after_chunks = die_after_chunks
        self.chunk_delay_s = chunk_delay_s
        self.words = words or WORDS
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.chunk_times: list[float] = []
        self.cancelled = threading.Event()

    def app(self) -> web.Application:
        async def models(_: web.Request) -> web.Response:
            return web.json_response({"object": "list", "data": [{"id": "tiny", "object": "model", "created": 0,
                                                                  "owned_by": "vllm"}]})

        async def health(_: web.Request) -> web.Response:
            return web.Response(status=200)

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(text="# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 0.0\n")

        async def generate(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            self.seen.append((request.method, request.path_qs, dict(request.headers), raw))
            body = json.loads(raw)
            chat = request.path.endswith("/chat/completions")
            n = min(len(self.words), body.get("max_tokens") or body.get("max_completion_tokens") or 10 ** 6)
            words = self.words[:n]
            usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": len(words),
                     "total_tokens": PROMPT_TOKENS + len(words)}
            if not body.get("stream"):
                choice = ({"index": 0, "message": {"role": "assistant", "content": "".join(words)},
                           "finish_reason": "stop"} if chat else
                          {"index": 0, "text": "".join(words), "finish_reason": "stop"})
                return web.json_response({"id": "cmpl-1", "object": "chat.completion" if chat else "text_completion",
                                          "created": 0, "model": body.get("model"), "choices": [choice],
                                          "usage": usage})
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await resp.prepare(request)
            try:
                for i, word in enumerate(words):
                    delta = {"delta": {"content": word}} if chat else {"text": word}
                    chunk = {"id": "cmpl-1", "object": "chat.completion.chunk" if chat else "text_completion",
                             "created": 0, "model": body.get("model"),
                             "choices": [{"index": 0, **delta,
                                          "finish_reason": "stop" if i == len(words) - 1 else None}]}
                    self.chunk_times.append(time.monotonic())
                    await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    if self.die_after_chunks is not None and i + 1 >= self.die_after_chunks:
                        await asyncio.sleep(0.05)  # the chunk leaves first
                        request.transport.abort()
                        return resp
                    if self.chunk_delay_s:
                        await asyncio.sleep(self.chunk_delay_s)
                if (body.get("stream_options") or {}).get("include_usage"):
                    await resp.write(f"data: {json.dumps({'id': 'cmpl-1', 'choices': [], 'usage': usage})}\n\n"
                                     .encode())
                await resp.write(b"data: [DONE]\n\n")
            except (asyncio.CancelledError, ConnectionError):
                self.cancelled.set()
                raise
            return resp

        async def anything(request: web.Request) -> web.Response:
            self.seen.append((request.method, request.path_qs, dict(request.headers), await request.read()))
            return web.json_response({"path": request.path})

        app = web.Application()
        app.router.add_get("/v1/models", models)
        app.router.add_get("/health", health)
        app.router.add_get("/metrics", metrics)
        app.router.add_post("/v1/chat/completions", generate)
        app.router.add_post("/v1/completions", generate)
        app.router.add_route("*", "/{tail:.*}", anything)
        return app


def write_consumers(folder: Path, entries: dict[str, str]) -> None:
    """Lay out a Secret folder as the kubelet does: files in a timestamped dir behind ``..data``."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = f"..{time.time_ns()}"
    data = folder / stamp
    data.mkdir()
    for name, value in entries.items():
        (data / name).write_text(value, encoding="utf-8")
    tmp = folder / "..data_tmp"
    tmp.symlink_to(stamp)
    os.replace(tmp, folder / "..data")
    for child in folder.iterdir():
        if not child.name.startswith(".") and child.is_symlink():
            child.unlink()
    for name in entries:
        (folder / name).symlink_to(f"..data/{name}")
