"""Concurrency, back-pressure, cancellation and graceful shutdown of the real server."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from onnx_server_harness import API_KEY, MODEL_NAME, Server, long_generation, start_server

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {API_KEY}"}
PROMPT = [{"role": "user", "content": "Tell me a story about the sea."}]


def _metric(server: Server, name: str) -> float:
    text = httpx.get(server.ops + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def _sixteen_clients(server: Server) -> list:
    client = server.async_client()

    async def one(i: int):
        if i % 2:
            stream = await client.chat.completions.create(
                model=MODEL_NAME, messages=PROMPT, max_tokens=24, stream=True,
                stream_options={"include_usage": True})
            chunks = [c async for c in stream]
            return chunks[-1].usage.completion_tokens
        resp = await client.chat.completions.create(model=MODEL_NAME, messages=PROMPT, max_tokens=24)
        return resp.usage.completion_tokens

    try:
        return await asyncio.gather(*(one(i) for i in range(16)))
    finally:
        await client.close()


def test_sixteen_concurrent_clients_all_succeed(server: Server) -> None:
    results = asyncio.run(_sixteen_clients(server))
    assert len(results) == 16 and all(0 < n <= 24 for n in results)
    assert _metric(server, "slm_onnx_queue_depth ") == 0
    assert _metric(server, "slm_onnx_running_requests ") == 0


@pytest.fixture(scope="module")
def small_server(onnx_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One generation slot (Generator worker thread) and room for one waiting request."""
    srv = start_server(onnx_model_dir, tmp_path_factory.mktemp("small"), "--scheduler", "threads",
                       "--max-concurrency", "1", "--max-queue", "1", "--retry-after-s", "2")
    yield srv
    assert srv.stop() == 0, srv.log()
    assert "Traceback" not in srv.log(), srv.log()


def test_threads_scheduler_serves(small_server: Server) -> None:
    resp = small_server.client().chat.completions.create(model=MODEL_NAME, messages=PROMPT, max_tokens=8,
                                                         temperature=0.8, top_p=0.9, seed=7)
    assert 0 < resp.usage.completion_tokens <= 8
    exact = small_server.client().completions.create(model=MODEL_NAME, prompt="The sea", max_tokens=11,
                                                     extra_body={"ignore_eos": True})
    assert exact.usage.completion_tokens == 11


def test_full_queue_answers_429_with_retry_after(small_server: Server, onnx_model_dir: Path) -> None:
    client = small_server.client()
    outcomes: list[object] = []

    def long_request() -> None:
        try:
            outcomes.append(client.completions.create(
                model=MODEL_NAME, prompt="The sea", max_tokens=long_generation(onnx_model_dir),
                extra_body={"ignore_eos": True}))
        except openai.APIError as exc:
            outcomes.append(exc)

    # one slot and one queue place: of six simultaneous requests, some must be turned away
    threads = [threading.Thread(target=long_request) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rejected = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    served = [o for o in outcomes if isinstance(o, openai.types.Completion)]
    assert len(rejected) + len(served) == 6, outcomes
    assert rejected and served
    assert rejected[0].status_code == 429 and rejected[0].code == "queue_full"
    assert rejected[0].response.headers["retry-after"] == "2"
    assert _metric(small_server, 'slm_onnx_requests_total{route="/v1/completions",status="429"}') >= 1


def test_client_disconnect_cancels_generation(small_server: Server, onnx_model_dir: Path) -> None:
    before = _metric(small_server, "slm_onnx_requests_cancelled_total")
    body = {"model": MODEL_NAME, "messages": PROMPT, "max_tokens": long_generation(onnx_model_dir),
            "ignore_eos": True, "stream": True}
    url = small_server.v1 + "/chat/completions"
    # leaving the block after the first event closes the connection mid-stream
    with httpx.Client(timeout=60) as client, client.stream("POST", url, json=body, headers=AUTH) as r:
        assert r.status_code == 200
        first = next(r.iter_lines())
        assert first.startswith("data: ")
    deadline = time.monotonic() + 10
    while _metric(small_server, "slm_onnx_requests_cancelled_total") <= before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _metric(small_server, "slm_onnx_requests_cancelled_total") == before + 1
    # the slot is free again: a new request is served
    resp = small_server.client().completions.create(model=MODEL_NAME, prompt="The", max_tokens=3)
    assert resp.usage.completion_tokens <= 3


def test_client_timeout_cancels_non_streamed_generation(small_server: Server, onnx_model_dir: Path) -> None:
    before = _metric(small_server, "slm_onnx_requests_cancelled_total")
    body = {"model": MODEL_NAME, "prompt": "The sea", "max_tokens": long_generation(onnx_model_dir),
            "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
        httpx.post(small_server.v1 + "/completions", json=body, headers=AUTH, timeout=0.05)
    deadline = time.monotonic() + 10
    while _metric(small_server, "slm_onnx_requests_cancelled_total") <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _metric(small_server, "slm_onnx_requests_cancelled_total") == before + 1


def test_sigterm_finishes_in_flight_request(onnx_model_dir: Path, tmp_path: Path) -> None:
    srv = start_server(onnx_model_dir, tmp_path, "--grace-period-s", "60", "--drain-delay-s", "1.5")
    max_tokens = long_generation(onnx_model_dir)
    body = {"model": MODEL_NAME, "prompt": "The sea", "max_tokens": max_tokens, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    url = srv.v1 + "/completions"
    with httpx.Client(timeout=120) as client, client.stream("POST", url, json=body, headers=AUTH) as r:
        lines = r.iter_lines()
        first = next(lines)
        assert first.startswith("data: {")
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # draining: readiness fails at once and new work is refused while the endpoint goes away
        ready = httpx.get(srv.base + "/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        refused = httpx.post(url, json={"model": MODEL_NAME, "prompt": "x", "max_tokens": 1}, headers=AUTH)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "server_shutting_down"
        rest = [line for line in lines if line]
    # the request that was in flight ran to its end
    assert rest[-1] == "data: [DONE]"
    final = json.loads(rest[-2].removeprefix("data: "))
    assert final["usage"]["completion_tokens"] == max_tokens
    assert json.loads(rest[-3].removeprefix("data: "))["choices"][0]["finish_reason"] == "length"
    assert srv.proc.wait(30) == 0, srv.log()
    with pytest.raises(httpx.ConnectError):
        httpx.get(srv.base + "/health", timeout=2)
    assert "shutting down: draining" in srv.log() and "Traceback" not in srv.log()
