"""The work queue's retry delays (operator/slm_operator/workqueue.py) with the real queue."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from lightkube import ApiError

from slm_operator import workqueue
from slm_operator.reconciler import Outcome
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


def _requeue_delays(error: Exception, failures: int, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Run one key through a real WorkQueue whose handler raises `error`, the key having failed
    `failures` times before; returns the delays it was requeued with."""
    delays: list[float] = []

    async def scenario() -> None:
        async def handler(body: dict[str, Any]) -> Any:
            raise error

        queue = WorkQueue(handler, workers=1, max_backoff=300.0)
        queue._failures[("ns", "a")] = failures
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
    return delays


@pytest.mark.parametrize(("error", "capped"), [
    (httpx.ConnectError("refused"), True),
    (httpx.ReadTimeout("slow"), True),
    (_api_error(503), True),
    (_api_error(429), True),
    (_plain_429(), True),
    (_api_error(422), False),       # the object is wrong: the normal backoff
    (ValueError("a bug"), False),
])
def test_transient_errors_log_one_line_and_retry_within_the_cap(error: Exception, capped: bool,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A failure because the API server was away (unreachable, 429, 5xx such as the 503 of a
    server starting up, "before all known HTTP paths have been installed") logs one warning line
    without a stack trace, and after many failures retries within TRANSIENT_MAX_BACKOFF_S (an
    outage converges soon after it ends); any other failure logs an error with its traceback on
    the first attempt and backs off towards max_backoff (300 s)."""
    caplog.set_level("INFO", logger="slm_operator.workqueue")
    _requeue_delays(error, 0, monkeypatch)
    assert workqueue._transient(error) == capped
    [record] = [r for r in caplog.records if "reconcile of ns/a failed" in r.getMessage()]
    assert (record.levelname, record.exc_info is None) == (("WARNING", True) if capped else ("ERROR", False))
    delays = _requeue_delays(error, 12, monkeypatch)  # already failed many times
    assert (delays[0] <= TRANSIENT_MAX_BACKOFF_S) == capped, delays


def test_a_started_key_runs_before_keys_never_reconciled() -> None:
    """A key whose child moved on (enqueued again after its first reconcile) is taken before
    keys still waiting for their first one; with a single FIFO the order was a, b, c, d, a
    (bench/controlplane at N=3000: Deployments applied a p50 of 210 s after their Job
    completed). New keys keep their order, and each key is reconciled once per enqueue."""
    order: list[str] = []

    async def scenario() -> None:
        queue: WorkQueue

        async def handler(body: dict[str, Any]) -> Any:
            name = body["metadata"]["name"]
            order.append(name)
            if name == "b":
                queue.enqueue(("ns", "a"))  # a's Job completed while b was being reconciled
            return Outcome()  # nothing to look at again, no status

        queue = WorkQueue(handler, workers=1)
        for name in "abcd":
            queue.update(("ns", name), {"metadata": {"namespace": "ns", "name": name}})
        queue.start()
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(order) == 5:
                break
        await queue.stop()

    asyncio.run(scenario())
    assert order == ["a", "b", "a", "c", "d"], order
