"""A keyed work queue: one reconcile at a time per SLMDeployment, latest body wins.

Events for a key that is being reconciled mark it dirty, so it runs once more afterwards
with the newest body; errors and waits come back after a delay (exponential backoff for
errors). The handler returns a `Result`: when to look again, and the status now in force,
which the queue keeps in its copy of the body (until the watch brings a newer body), so a
reconcile that runs before the watch delivers the status patch starts from it.

Two lanes, served in order: keys reconciled before (a child moved on: a Job completed, a
Deployment became available, a timer fired) come before keys never reconciled. With one FIFO
lane a mass apply (bench/controlplane at N=3000) queued every CR's second step behind the
first step of all the others: a Job completed in seconds, and its Deployment was applied a p50
of 210 s later, once the last first pass was done, so the cluster got 3,000 Deployments in one
burst instead of as their Jobs finished. Finishing what has been started first is what a mass
apply wants; a new CR still runs whenever no started one is waiting, and a started one is
queued only on a change or its own timer, so new CRs are not starved.

This is what controller-runtime gives Go operators; kopf's event handlers give us the watch
stream and we keep this small queue on top.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from slm_operator import metrics

log = logging.getLogger(__name__)
Key = tuple[str, str]


class Result(Protocol):
    """What a handler returns (reconciler.Outcome is one): seconds until the next reconcile
    (None: on the next event) and the status in force afterwards (None: unknown)."""

    @property
    def requeue_after(self) -> float | None: ...

    @property
    def status(self) -> dict[str, Any] | None: ...


class WorkQueue:
    """Reconciles keys with `handler(body) -> Result`, `workers` at a time, one per key."""

    def __init__(self, handler: Callable[[dict[str, Any]], Awaitable[Result]], workers: int = 8,
                 max_backoff: float = 300.0) -> None:
        self.handler = handler
        self.workers = workers
        self.max_backoff = max_backoff
        self._bodies: dict[Key, str] = {}  # compact JSON: parsed only when reconciled
        # [0]: keys reconciled before; [1]: keys never reconciled (see the module docstring).
        self._lanes: tuple[deque[Key], deque[Key]] = (deque(), deque())
        self._items = asyncio.Semaphore(0)  # one per key in the lanes
        self._queued: set[Key] = set()
        self._started: set[Key] = set()  # keys a worker has taken at least once
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def update(self, key: Key, body: dict[str, Any]) -> None:
        self._bodies[key] = json.dumps(body, separators=(",", ":"))
        self.enqueue(key)

    def forget(self, key: Key) -> None:
        self._bodies.pop(key, None)
        self._started.discard(key)
        self._failures.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer:
            timer.cancel()

    def keys(self) -> list[Key]:
        """The keys whose bodies the queue holds (every SLMDeployment it has not forgotten)."""
        return list(self._bodies)

    def body(self, key: Key) -> dict[str, Any] | None:
        text = self._bodies.get(key)
        return None if text is None else json.loads(text)

    def enqueue(self, key: Key) -> None:
        if key not in self._bodies:
            return
        if key in self._active:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._lanes[0 if key in self._started else 1].append(key)
            self._items.release()
            metrics.QUEUE_DEPTH.set(len(self._queued))

    def enqueue_after(self, key: Key, delay: float) -> None:
        old = self._timers.pop(key, None)
        if old:
            old.cancel()
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self.enqueue, key)

    async def _worker(self) -> None:
        while True:
            if not self._queued and not self._active:
                _release_memory()
            await self._items.acquire()
            key = (self._lanes[0] or self._lanes[1]).popleft()
            self._queued.discard(key)
            metrics.QUEUE_DEPTH.set(len(self._queued))
            text = self._bodies.get(key)
            if text is None:
                continue
            body = json.loads(text)
            self._active.add(key)
            self._started.add(key)
            started = time.monotonic()
            try:
                result = await self.handler(body)
                delay = result.requeue_after
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if _namespace_terminating(e):
                    log.info("%s/%s: namespace is being deleted; nothing to do", key[0], key[1])
                    self._active.discard(key)
                    self.forget(key)
                    continue
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = min(self.max_backoff, 0.5 * 2 ** min(failures, 10))
                if _transient(e):
                    # The API server unreachable, slow or shedding load: it comes back as a whole,
                    # and kopf resumes its watches without a re-list (no event re-queues the key),
                    # so a long backoff would be the convergence time after an outage.
                    delay = min(delay, TRANSIENT_MAX_BACKOFF_S)
                    # The server's own words say what is wrong; a stack trace would add nothing.
                    log.warning("reconcile of %s/%s failed (attempt %d, retry in %.1fs): the API "
                                "server is unreachable or busy: %s: %s", key[0], key[1], failures,
                                delay, type(e).__name__, e)
                else:
                    log.error("reconcile of %s/%s failed (attempt %d, retry in %.1fs): %s",
                              key[0], key[1], failures, delay, e, exc_info=failures == 1)
                metrics.RECONCILES.labels(result="error").inc()
                metrics.RECONCILE_SECONDS.labels(result="error").observe(time.monotonic() - started)
            else:
                self._failures.pop(key, None)
                # Keep the status the handler returned (it wrote it) unless a newer body arrived
                # meanwhile, so the next reconcile starts from it.
                if result.status is not None and self._bodies.get(key) is text:
                    kept = json.loads(text)  # the queued body as it came, whatever the handler did to its copy
                    if kept.get("status") != result.status:
                        self._bodies[key] = json.dumps({**kept, "status": result.status}, separators=(",", ":"))
                metrics.RECONCILES.labels(result="success").inc()
                metrics.RECONCILE_SECONDS.labels(result="success").observe(time.monotonic() - started)
            finally:
                self._active.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self.enqueue(key)
            elif delay:
                self.enqueue_after(key, delay)


# Longest wait before retrying after a transport error, 429 or 5xx (seconds): measured by
# e2e/test_apiserver_outage.py, a 5-minute outage converged 90 s after the API server returned
# with the 300 s cap, because every key had backed off to 256-300 s.
TRANSIENT_MAX_BACKOFF_S = 15.0
_TRANSIENT_CODES = frozenset({429, 500, 502, 503, 504})


def _transient(e: Exception) -> bool:
    """A connection error or timeout (httpx.TransportError, or httpx2's, which lightkube uses),
    or the API server answering 429 or 5xx: the server, not the object, is the problem."""
    if isinstance(e, _transport_errors()):
        return True
    code = getattr(getattr(e, "status", None), "code", None)
    if code is None:  # an answer lightkube could not read as a Status: API Priority and Fairness's 429 is plain text
        code = getattr(getattr(e, "response", None), "status_code", None)
    return code in _TRANSIENT_CODES


def _transport_errors() -> tuple[type[BaseException], ...]:
    """TransportError of httpx and of httpx2 (lightkube's HTTP client: its ReadTimeout under a
    loaded API server was logged as an error with a stack trace, not as transient)."""
    import httpx

    errors: list[type[BaseException]] = [httpx.TransportError]
    try:
        import httpx2

        errors.append(httpx2.TransportError)
    except ImportError:  # an older lightkube on plain httpx
        pass
    return tuple(errors)


def _namespace_terminating(e: Exception) -> bool:
    """Writes into a namespace being deleted are refused; its objects are going anyway."""
    status = getattr(e, "status", None)
    return getattr(status, "reason", None) == "Forbidden" and "being terminated" in (
        getattr(status, "message", "") or "")


_last_trim = 0.0


def _release_memory(min_interval: float = 30.0) -> None:
    """Hand freed heap back to the OS when the queue drains (glibc keeps it otherwise).

    A burst of reconciles (startup, a mass apply) leaves the heap fragmented; without this the
    RSS stays at its high-water mark although the live data is much smaller.
    """
    global _last_trim
    now = time.monotonic()
    if now - _last_trim < min_interval:
        return
    _last_trim = now
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to do
        pass
