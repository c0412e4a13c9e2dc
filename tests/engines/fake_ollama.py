"""A small stand-in for Ollama's HTTP API (no Ollama binary can be had here: PyPI's `ollama` is a
client only, and no registry package ships the server). It mimics the routes the proxy and the
importer use, with Ollama's response shapes, including SSE streaming with real delays."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

WORDS = ["Hello", " from", " a", " tiny", " model", "."]


class FakeOllama:
    def __init__(self, models: list[str] | None = None, chunk_delay_s: float = 0.15) -> None:
        self.models = list(models or [])
        self.blobs: dict[str, bytes] = {}
        self.creates: list[dict] = []
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.chunk_delay_s = chunk_delay_s
        self.chunk_times: list[float] = []
        self.cancelled = threading.Event()

    def app(self) -> Starlette:
        async def version(_: Request) -> Response:
            return JSONResponse({"version": "0.0.0-fake"})

        async def tags(_: Request) -> Response:
            return JSONResponse({"models": [{"name": f"{m}:latest", "model": f"{m}:latest"} for m in self.models]})

        async def models(_: Request) -> Response:
            return JSONResponse({"object": "list", "data": [
                {"id": f"{m}:latest", "object": "model", "created": 0, "owned_by": "library"} for m in self.models]})

        async def chat(request: Request) -> Response:
            self.seen.append((request.method, request.url.path, dict(request.headers)))
            body = await request.json()
            if body.get("stream"):
                async def events():
                    try:
                        for i, word in enumerate(WORDS):
                            chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0,
                                     "model": body["model"], "choices": [{"index": 0, "delta": {
                                         "role": "assistant", "content": word},
                                         "finish_reason": "stop" if i == len(WORDS) - 1 else None}]}
                            self.chunk_times.append(time.monotonic())
                            yield f"data: {json.dumps(chunk)}\n\n".encode()
                            await asyncio.sleep(self.chunk_delay_s)
                        yield b"data: [DONE]\n\n"
                    except asyncio.CancelledError:
                        self.cancelled.set()
                        raise

                return StreamingResponse(events(), media_type="text/event-stream")
            return JSONResponse({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": len(WORDS), "total_tokens": 5 + len(WORDS)},
            })

        async def blob(request: Request) -> Response:
            digest = request.path_params["digest"]
            if request.method == "HEAD":
                return Response(status_code=200 if digest in self.blobs else 404)
            data = await request.body()
            if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                return JSONResponse({"error": "digest mismatch"}, 400)
            self.blobs[digest] = data
            return Response(status_code=201)

        async def create(request: Request) -> Response:
            body = await request.json()
            self.creates.append(body)
            missing = [d for d in body.get("files", {}).values() if d not in self.blobs]
            if missing:
                return JSONResponse({"error": f"blob not found: {missing}"}, 400)
            self.models.append(body["model"])
            return JSONResponse({"status": "success"})

        async def pull(_: Request) -> Response:  # must never be reached through the proxy
            self.models.append("pulled")
            return JSONResponse({"status": "success"})

        return Starlette(routes=[
            Route("/api/version", version), Route("/api/tags", tags), Route("/v1/models", models),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/api/blobs/{digest}", blob, methods=["HEAD", "POST"]),
            Route("/api/create", create, methods=["POST"]), Route("/api/pull", pull, methods=["POST"]),
        ])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app, port: int | None = None):
    """Run an ASGI app with uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
