"""Generation scheduling: a bounded FIFO queue in front of onnxruntime-genai.

onnxruntime-genai calls block, so they run in threads and never on the event loop. Two
schedulers share the queue:

- ``EngineScheduler`` drives ``og.Engine`` from its single owner thread. With a
  paged-attention model (CUDA) the Engine batches continuously: a request joins the running
  batch at the next step. With a regular model (CPU int4) the Engine batches statically, so
  a new batch is admitted only when the previous one drained; several sequences still share
  each forward pass, which is what raises throughput with many clients.
- ``ThreadScheduler`` runs one ``og.Generator`` per request on a fixed number of worker
  threads: no head-of-line blocking, no batching.

Both take requests strictly in arrival order, answer 429 (``QueueFull``) when the queue is
full, and stop a generation when its client goes away.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime_genai as og

from .metrics import Metrics
from .model import LoadedModel
from .protocol import SamplingParams
from .stops import StopMatcher

log = logging.getLogger(__name__)


class QueueFull(Exception):
    pass


class SchedulerStopped(Exception):
    pass


@dataclass
class Delta:
    text: str


@dataclass
class Finished:
    reason: str  # "stop" | "length" | "cancelled"
    completion_tokens: int


@dataclass
class Failed:
    message: str


@dataclass
class Rejected:
    """The request's grammar was refused by llguidance: a 400 naming ``param``, not a 500."""

    message: str
    param: str


Event = Delta | Finished | Failed | Rejected

# onnxruntime-genai's message prefix when llguidance cannot build a request's grammar.
_GRAMMAR_ERROR = "Error creating grammar"


@dataclass(eq=False)
class Job:
    prompt_ids: list[int]
    sampling: SamplingParams
    max_tokens: int
    emit: Callable[[Event], None]  # thread-safe: hands an event to the request's coroutine
    arrived: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)
    completion_tokens: int = 0
    first_token_at: float | None = None
    last_token_at: float | None = None
    done: bool = False
    _stream: Any = None
    _stops: StopMatcher | None = None

    def start(self, lm: LoadedModel) -> None:
        self._stream = lm.tokenizer.create_stream()
        self._stops = StopMatcher(self.sampling.stop, self.sampling.include_stop_str_in_output)

    def on_token(self, token: int, lm: LoadedModel, metrics: Metrics) -> bool:
        """Record one generated token; True when a stop string ended the generation."""
        now = time.monotonic()
        if self.first_token_at is None:
            self.first_token_at = now
            metrics.ttft.observe(now - self.arrived)
        elif self.last_token_at is not None:
            metrics.tpot.observe(now - self.last_token_at)
        self.last_token_at = now
        if token in lm.eos_ids:
            return False
        if token in self.sampling.stop_token_ids and self.completion_tokens >= self.sampling.min_tokens:
            self.finish("stop", metrics)  # vLLM leaves the stop token out of the text
            return True
        self.completion_tokens += 1
        metrics.generation_tokens.inc()
        assert self._stops is not None
        text = self._stops.feed(self._stream.decode(token))
        if text:
            self.emit(Delta(text))
        if self._stops.stopped:
            self.finish("stop", metrics)
            return True
        return False

    def finish(self, reason: str, metrics: Metrics) -> None:
        if self.done:
            return
        self.done = True
        if reason != "cancelled" and self._stops is not None:
            rest = self._stops.flush()
            if rest:
                self.emit(Delta(rest))
        if reason == "cancelled":
            metrics.cancelled.inc()
        elif self.first_token_at is not None and self.last_token_at is not None:
            metrics.e2e.observe(self.last_token_at - self.arrived)
            span = self.last_token_at - self.first_token_at
            if self.completion_tokens > 1 and span > 0:
                metrics.tokens_per_second.observe((self.completion_tokens - 1) / span)
        self.emit(Finished(reason, self.completion_tokens))

    def fail(self, message: str) -> None:
        if not self.done:
            self.done = True
            self.emit(Failed(message))

    def fail_start(self, exc: Exception) -> None:
        """The generation could not start: a refused grammar is the client's error, the rest ours."""
        guided = self.sampling.guidance
        if guided is not None and _GRAMMAR_ERROR in str(exc):
            if not self.done:
                self.done = True
                self.emit(Rejected(f"The grammar for '{guided.param}' was refused: {exc}", guided.param))
            return
        log.exception("request could not start", exc_info=exc)
        self.fail(f"generation failed: {type(exc).__name__}")


class Scheduler:
    """The FIFO queue and its bookkeeping; subclasses run the generations."""

    name = "base"

    def __init__(self, lm: LoadedModel, metrics: Metrics, max_queue: int, slots: int) -> None:
        self.lm = lm
        self.metrics = metrics
        self.max_queue = max_queue
        self.slots = slots
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self.running = 0
        metrics.queue_capacity.set(max_queue)
        metrics.batch_capacity.set(slots)

    # -- called from the event loop ---------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._cond:
            if self._stopping:
                raise SchedulerStopped()
            if len(self._queue) >= self.max_queue:
                raise QueueFull()
            self._queue.append(job)
            self.metrics.queue_depth.set(len(self._queue))
            self._cond.notify_all()

    def cancel(self, job: Job) -> None:
        """The client went away: drop the job if still queued, else stop its generation."""
        job.cancelled.set()
        with self._cond:
            if job in self._queue:
                self._queue.remove(job)
                self.metrics.queue_depth.set(len(self._queue))
                job.finish("cancelled", self.metrics)
            self._cond.notify_all()

    @property
    def alive(self) -> bool:
        """False once a worker thread died: the pod must stop receiving traffic."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def seed_refusal(self, sampling: SamplingParams) -> str | None:
        """Why a seed cannot be honoured for this request, or None (it can)."""
        return None

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + self.running

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self._thread_count()):
            t = threading.Thread(target=self._run_safely, name=f"{self.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads; whatever is still queued or running is cancelled."""
        with self._cond:
            self._stopping = True
            for job in self._queue:
                job.cancelled.set()
                job.finish("cancelled", self.metrics)
            self._queue.clear()
            self.metrics.queue_depth.set(0)
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)

    # -- called from worker threads ----------------------------------------------------------
    def _take(self, block: bool) -> Job | None:
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if self._queue:
                    job = self._queue.popleft()
                    self.metrics.queue_depth.set(len(self._queue))
                    self.metrics.queue_wait.observe(time.monotonic() - job.arrived)
                    self._set_running(+1)
                    return job
                if not block:
                    return None
                self._cond.wait(1.0)

    def _set_running(self, delta: int) -> None:
        self.running += delta
        self.metrics.running.set(self.running)

    def _run_safely(self) -> None:
        try:
            self._run()
        except Exception:  # a dead worker must be loud: readiness depends on it
            log.exception("scheduler thread died")
            raise

    def _thread_count(self) -> int:
        raise NotImplementedError

    def _run(self) -> None:
        raise NotImplementedError


class ThreadScheduler(Scheduler):
    name = "threads"

    def _thread_count(self) -> int:
        return self.slots

    def _run(self) -> None:
        while (job := self._take(block=True)) is not None:
            try:
                self._generate(job)
            except Exception as exc:
                log.exception("generation failed")
                job.fail(f"generation failed: {type(exc).__name__}")
            finally:
                with self._cond:
                    self._set_running(-1)

    def _generate(self, job: Job) -> None:
        lm, s = self.lm, job.sampling
        job.start(lm)
        params = og.GeneratorParams(lm.model)
        total = len(job.prompt_ids) + job.max_tokens
        options: dict[str, Any] = {"max_length": total, "do_sample": s.sampled}
        if s.sampled:
            options.update(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
        if s.seed is not None:
            options["random_seed"] = s.seed % (2**31)
        if s.repetition_penalty != 1.0:
            options["repetition_penalty"] = s.repetition_penalty
        if s.ignore_eos:
            options["min_length"] = total
        elif s.min_tokens:
            options["min_length"] = len(job.prompt_ids) + s.min_tokens
        params.set_search_options(**options)
        try:
            if s.guidance is not None:
                params.set_guidance(s.guidance.kind, s.guidance.data)
            generator = og.Generator(lm.model, params)
            generator.append_tokens(np.asarray(job.prompt_ids, dtype=np.int32))
        except Exception as exc:
            job.fail_start(exc)
            return
        last = None
        while not generator.is_done():
            if job.cancelled.is_set() or self._stopping:
                job.finish("cancelled", self.metrics)
                return
            generator.generate_next_token()
            last = int(generator.get_next_tokens()[0])
            if job.on_token(last, lm, self.metrics):
                return
        job.finish("stop" if last in lm.eos_ids else "length", self.metrics)


_FINISH = {
    og.FinishReason.EOS: "stop",
    og.FinishReason.STOP_STRING: "stop",
    og.FinishReason.MAX_GENERATED_TOKENS: "length",
    og.FinishReason.MAX_SESSION_TOKENS: "length",
    og.FinishReason.CANCELLED: "cancelled",
}


@dataclass(eq=False)
class _Active:
    job: Job
    request: Any  # og.Request
    turn: int
    cancel_sent: bool = False


class EngineScheduler(Scheduler):
    name = "engine"

    def _thread_count(self) -> int:
        return 1  # the Engine may only be used from the thread that owns it

    def seed_refusal(self, sampling: SamplingParams) -> str | None:
        """Why a seed cannot be honoured for this request, or None."""
        if sampling.seed is not None and sampling.sampled and not self.lm.dynamic_batching:
            return ("onnxruntime-genai's Engine takes a per-request seed only on models built with paged "
                    "attention (CUDA); use temperature 0, drop the seed, or run the server with --scheduler threads")
        return None

    def _run(self) -> None:
        engine = og.Engine(self.lm.model)
        buffer = engine.create_event_buffer(max(64, 4 * self.slots))
        caps = engine.get_capabilities()
        log.info("engine started", extra={"continuous_batching": self.lm.dynamic_batching, "slots": self.slots,
                                          "engine_max_batch": caps.configured_max_batch_size})
        active: dict[int, _Active] = {}
        while True:
            # Admission: continuous batching takes new requests at every step; a static batch
            # only once the previous one drained (the Engine would hold them back anyway).
            while len(active) < self.slots and (self.lm.dynamic_batching or not active or self._admitting):
                job = self._take(block=not active)
                if job is None:
                    break
                self._admitting = True
                try:
                    entry = self._begin(engine, job)
                except Exception as exc:
                    job.fail_start(exc)
                    with self._cond:
                        self._set_running(-1)
                    continue
                active[id(entry.request)] = entry
            self._admitting = False
            if self._stopping and not active:
                return
            if not active:
                continue
            for entry in active.values():
                if (entry.job.cancelled.is_set() or self._stopping) and not entry.cancel_sent:
                    entry.request.cancel_turn(entry.turn)
                    entry.cancel_sent = True
            try:
                engine.run(buffer)
            except Exception as exc:
                log.exception("engine step failed; failing the batch and starting a new engine")
                for entry in active.values():
                    entry.job.fail(f"generation failed: {type(exc).__name__}")
                with self._cond:
                    self._set_running(-len(active))
                active.clear()
                engine = og.Engine(self.lm.model)
                buffer = engine.create_event_buffer(max(64, 4 * self.slots))
                continue
            for i in range(len(buffer)):
                self._handle(buffer[i], active)

    _admitting = False

    def _begin(self, engine: Any, job: Job) -> _Active:
        s = job.sampling
        job.start(self.lm)
        request = engine.create_request()
        options = og.TurnOptions(request)
        options.set_max_generated_tokens(job.max_tokens)
        options.set_do_sample(s.sampled)
        if s.sampled:
            options.set_temperature(s.temperature)
            options.set_top_p(s.top_p)
            options.set_top_k(s.top_k)
            # A per-turn seed needs paged attention; the app refuses a sampled seeded request
            # otherwise, and a greedy one needs no seed.
            if s.seed is not None and self.lm.dynamic_batching:
                options.set_seed(s.seed % (2**63))
        if s.repetition_penalty != 1.0:
            options.set_repetition_penalty(s.repetition_penalty)
        if s.ignore_eos:
            options.set_min_generated_tokens(job.max_tokens)
        elif s.min_tokens:
            options.set_min_generated_tokens(s.min_tokens)
        if s.guidance is not None:
            # Per turn: guided and free requests share the batch (onnxruntime-genai 0.18).
            options.set_guidance(s.guidance.kind, s.guidance.data)
        turn = request.begin_turn(np.asarray(job.prompt_ids, dtype=np.int32), options)
        return _Active(job, request, turn)

    def _handle(self, event: Any, active: dict[int, _Active]) -> None:
        entry = active.get(id(event.request))
        if entry is None:
            return
        flags = int(event.flags)
        job = entry.job
        wanted = flags & int(og.EngineEventFlags.TOKEN) and not job.done and not entry.cancel_sent
        if wanted and job.on_token(int(event.token), self.lm, self.metrics):
            entry.request.cancel_turn(entry.turn)  # a stop string matched: free the slot
            entry.cancel_sent = True
        failed = flags & int(og.EngineEventFlags.FAILED)
        if flags & int(og.EngineEventFlags.TURN_FINISHED) or failed:
            if failed:
                job.fail(f"generation failed: {event.error_code.name}")
            else:
                job.finish(_FINISH.get(event.finish_reason, "stop"), self.metrics)
            del active[id(event.request)]
            with self._cond:
                self._set_running(-1)


def make_scheduler(kind: str, lm: LoadedModel, metrics: Metrics, max_queue: int, slots: int) -> Scheduler:
    if kind == "threads":
        return ThreadScheduler(lm, metrics, max_queue, slots)
    return EngineScheduler(lm, metrics, max_queue, slots)
