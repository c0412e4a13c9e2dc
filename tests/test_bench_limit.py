"""bench/controlplane's limit client retries what a real client retries (429, 5xx, connection
errors) and nothing else: at N=1000 the API server answered 504 under load and a limit that
gave up on the first one never converged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

import bench.controlplane as bench

ROOT = Path(__file__).resolve().parents[1]



def _run(answers: list[int | Exception], **kw: object) -> tuple[httpx.Response, int, list[float]]:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        a = queue.pop(0)
        if isinstance(a, Exception):
            raise a
        return httpx.Response(a, headers={"Retry-After": "3"} if a == 429 else {}, json={})

    async def go() -> tuple[httpx.Response, int]:
        retries = [0]
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="https://x") as client:
            r = await bench.send(client, "PATCH", "/p", retries, sleep=sleep, **kw)
        return r, retries[0]

    r, retries = asyncio.run(go())
    return r, retries, sleeps


def test_transient_answers_are_retried_with_backoff_and_retry_after() -> None:
    r, retries, sleeps = _run([504, httpx.ConnectError("reset"), 429, 200])
    assert r.status_code == 200 and retries == 3
    assert sleeps == [0.5, 1.0, 3.0], "doubling back-off; Retry-After wins when the server sends it"


def test_an_accepted_conflict_is_returned_and_a_refusal_raises() -> None:
    r, retries, _ = _run([409], ok=(409,))
    assert r.status_code == 409 and retries == 0
    with pytest.raises(httpx.HTTPStatusError):
        _run([422])


def test_a_server_that_stays_overloaded_ends_the_run_with_an_error() -> None:
    with pytest.raises(RuntimeError, match="still transient after 12 tries"):
        _run([503] * 12)
