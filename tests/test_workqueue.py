"""The work queue's retry delays (operator/slm_operator/workqueue.py) with the real queue."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from lightkube import ApiError

from slm_operator import workqueue
from slm_operator.workqueue import TRANSIENT_MAX_BACKOFF_S, WorkQueue


def _api_error(code: int) -> ApiError:
    request = httpx.Request("PATCH", "https://api/x")
    return ApiError(response=httpx.Response(code, request=request, json={
        "kind": "Status", "code": code, "message": f"code {code}", "reason": "x", "status": "Failure"}))


def _plain_429() -> httpx.HTTPStatusError:
    """API Priority and Fairness answers 429 in plain text, not as a Status: lightkube raises
    httpx's HTTPStatusError then, not an ApiError."""
    request = httpx.Request("GET", "https://api/x")
    response = httpx.Response(429, request=request, text="Too many requests, please try again later.\n")
    return httpx.HTTPStatusError("429", request=request, response=response)


@pytest.mark.parametrize(("error", "capped"), [
    (httpx.ConnectError("refused"), True),
    (httpx.ReadTimeout("slow"), True),
    (_api_error(503), True),
    (_api_error(429), True),
    (_plain_429(), True),
    (_api_error(422), False),       # the object is wrong: the normal backoff
    (ValueError("a bug"), False),
])
def test_transient_errors_retry_within_the_cap(error: Exception, capped: bool,
                                               monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """After many failures, a key that failed because the API server was away retries within
    TRANSIENT_MAX_BACKOFF_S (an outage converges soon after it ends); other errors back off to
    max_backoff. A transient failure logs one warning line without a stack trace (an API server
    starting up answers 503 "before all known HTTP paths have been installed"); any other
    failure logs an error with its traceback on the first attempt."""
    delays: list[float] = []

    async def scenario() -> None:
        async def handler(body: dict[str, Any]) -> Any:
            raise error

        queue = WorkQueue(handler, workers=1, max_backoff=300.0)
        queue._failures[("ns", "a")] = 0
        monkeypatch.setattr(queue, "enqueue_after", lambda key, delay: delays.append(delay))
        queue.start()
        queue.update(("ns", "a"), {"metadata": {"namespace": "ns", "name": "a"}})
        for _ in range(100):
            await asyncio.sleep(0.01)
            if delays:
                break
        await queue.stop()

    caplog.set_level("INFO", logger="slm_operator.workqueue")
    asyncio.run(scenario())
    assert delays, "the failed key was not requeued"
    assert workqueue._transient(error) == capped
    [record] = [r for r in caplog.records if "reconcile of ns/a failed" in r.getMessage()]
    assert (record.levelname, record.exc_info is None) == (("WARNING", True) if capped else ("ERROR", False))


@pytest.mark.parametrize(("error", "capped"), [
    (httpx.ConnectError("refused"), True),
    (_api_error(503), True),
    (_api_error(422), False),
    (ValueError("a bug"), False),
])
def test_backoff_after_many_failures(error: Exception, capped: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key that already failed 12 times: transient errors retry within TRANSIENT_MAX_BACKOFF_S,
    others back off towards max_backoff (300 s)."""
    delays: list[float] = []

    async def scenario() -> None:
        async def handler(body: dict[str, Any]) -> Any:
            raise error

        queue = WorkQueue(handler, workers=1, max_backoff=300.0)
        queue._failures[("ns", "a")] = 12  # already failed many times
        monkeypatch.setattr(queue, "enqueue_after", lambda key, delay: delays.append(delay))
        queue.start()
        queue.update(("ns", "a"), {"metadata": {"namespace": "ns", "name": "a"}})
        for _ in range(100):
            await asyncio.sleep(0.01)
            if delays:
                break
        await queue.stop()

    asyncio.run(scenario())
    assert delays, "the failed key was not requeued"
    assert (delays[0] <= TRANSIENT_MAX_BACKOFF_S) == capped, delays
