"""HA standby: the work queue stops while kopf's peering has this replica paused.

kopf pauses a replica that sees a live peer of higher (or equal) priority: it stops the
replica's watch streams, so no new events arrive. The operator's own work queue
(`slm_operator.workqueue`) does not know about that pause; without this module a replica that
worked and then paused (a higher-priority replica came back) kept reconciling:

- items already queued, and every key whose requeue timer fired (waits, backoffs, the 60 s
  consumers recheck) ran again;
- the operator's own child and pod watches kept running and enqueued the owner on every change;
- worst, those reconciles used the bodies cached at the pause, so after an edit of the CR they
  wrote the old spec's children and a status with the old observedGeneration (status patches
  carry no resourceVersion), fighting the active replica.

The fix, in two parts:

1. `install()` (called by `main` before `kopf.run`) wraps kopf's peering processor so that
   each peering toggle kopf turns on or off ("Pausing operations in favour of ..." /
   "Resuming operations ...") is mirrored in `GATE`. kopf creates one toggle per peering
   object (one per watched namespace for a namespaced operator, one for a cluster-wide one);
   the replica is paused while any of them is on. Mirrored here because kopf exposes its
   pause state to no handler.
2. `gated(queue, handler)` wraps the work queue's handler: while paused, a key that reaches a
   worker is not reconciled but forgotten (its cached body and timer dropped, so neither a
   timer nor a pod event brings it back); at the moment of pausing every key the queue saw is
   forgotten as well. The operator's own SLMDeployment watch (`slm_operator.handlers`) keeps
   running while paused (a few reads, no writes); on resume it lists every SLMDeployment again,
   which refills the queue with fresh bodies. Until kopf's first peering event is mirrored the
   replica counts as paused (`PENDING`): kopf starts its own toggles on, too.

A reconcile already running when the pause comes finishes (reconciles are idempotent and
short); nothing starts after it. Tested in tests/test_peering.py (the gate, against the pinned
kopf's processor) and e2e/test_ha_failover.py (two replicas, kills, an edit while paused).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

Key = tuple[str, str]
Handler = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclasses.dataclass(frozen=True)
class Skipped:
    """The work queue's handler result for a key skipped while paused (workqueue.Result):
    no requeue, no status known."""

    requeue_after: float | None = None
    status: dict[str, Any] | None = None


class _Forgetting(Protocol):
    def forget(self, key: Key) -> None: ...


class PauseGate:
    """Whether kopf's peering has this replica paused, and what to do when it pauses.

    `toggles` maps each kopf peering toggle's name (e.g. "slm-operator@team-a") to its state
    (True: paused by that peering object). `on_pause` callbacks run once on each transition to
    paused, `on_resume` callbacks on each transition back (synchronously, in the event loop).
    """

    def __init__(self) -> None:
        self.toggles: dict[str, bool] = {}
        self.on_pause: list[Callable[[], None]] = []
        self.on_resume: list[Callable[[], None]] = []
        self.pauses = 0  # transitions to paused (for tests and logs)
        self.engaged = False  # register() ran: handlers.startup gates the work queue with this gate

    @property
    def paused(self) -> bool:
        """True while any peering object has this replica paused."""
        return any(self.toggles.values())

    def set(self, name: str, state: bool) -> None:
        """Record one toggle's state; run the on_pause callbacks when this pauses the replica."""
        was = self.paused
        self.toggles[name] = bool(state)
        self._transition(was)

    def drop(self, name: str) -> None:
        """Forget one toggle (e.g. PENDING once kopf's own toggles are mirrored)."""
        was = self.paused
        self.toggles.pop(name, None)
        self._transition(was)

    def _transition(self, was: bool) -> None:
        if self.paused and not was:
            self.pauses += 1
            for callback in list(self.on_pause):
                callback()
        elif was and not self.paused:
            for callback in list(self.on_resume):
                callback()


# The toggle `register` sets before kopf runs: a replica in a peering is paused until kopf's
# peering has spoken (kopf pre-activates its own toggles the same way, but they reach the gate
# only with the first peering event).
PENDING = "peering not observed yet"


GATE = PauseGate()


class _MirroredToggle:
    """A kopf Toggle whose turn_to is mirrored into a PauseGate; everything else delegates."""

    def __init__(self, toggle: Any, gate: PauseGate) -> None:
        self._toggle = toggle
        self._gate = gate
        gate.set(self._name(), toggle.is_on())
        gate.drop(PENDING)

    def _name(self) -> str:
        return str(getattr(self._toggle, "name", None) or id(self._toggle))

    def is_on(self) -> bool:
        return bool(self._toggle.is_on())

    def is_off(self) -> bool:
        return bool(self._toggle.is_off())

    async def turn_to(self, state: bool) -> None:
        await self._toggle.turn_to(state)
        self._gate.set(self._name(), state)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._toggle, name)


def install(gate: PauseGate = GATE) -> None:
    """Mirror kopf's peering pause into `gate` (idempotent). Call before kopf.run.

    Wraps `kopf._core.engines.peering.process_peering_event`, which kopf's orchestrator binds
    (functools.partial, at the time each peering object is first seen) with the toggle it pauses
    the replica by. Raises RuntimeError naming the kopf version if that function or its
    `conflicts_found` argument is gone (a kopf upgrade changed the internals: update this module).
    """
    import inspect

    import kopf
    from kopf._core.engines import peering

    original = peering.process_peering_event
    if getattr(original, "_slm_gate", None) is gate:
        return
    if "conflicts_found" not in inspect.signature(original).parameters:
        raise RuntimeError(f"kopf {getattr(kopf, '__version__', '?')}: process_peering_event has no "
                           "conflicts_found argument; slm_operator.peering must follow kopf's peering code")

    @functools.wraps(original)
    async def process_peering_event(*args: Any, conflicts_found: Any = None, **kwargs: Any) -> None:
        if conflicts_found is not None and not isinstance(conflicts_found, _MirroredToggle):
            conflicts_found = _MirroredToggle(conflicts_found, gate)
        await original(*args, conflicts_found=conflicts_found, **kwargs)

    process_peering_event._slm_gate = gate  # type: ignore[attr-defined]
    peering.process_peering_event = process_peering_event


def gated(queue: _Forgetting, handler: Handler, gate: PauseGate = GATE) -> Handler:
    """The work queue's handler, not run while `gate` is paused (see the module docstring).

    `queue` needs `forget(key)`; keys are (namespace, name) from the body's metadata. Returns
    the handler's result, or `Skipped()` (no requeue, no status) for a skipped key.
    """
    seen: set[Key] = set()

    def forget_all() -> None:
        for key in list(seen):
            queue.forget(key)
        if seen:
            log.info("peering paused this replica: %d SLMDeployments dropped from its work queue until it "
                     "resumes", len(seen))
        seen.clear()

    gate.on_pause.append(forget_all)

    async def run(body: dict[str, Any]) -> Any:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if gate.paused:
            queue.forget(key)
            return Skipped()
        seen.add(key)
        return await handler(body)

    return run


def register(gate: PauseGate = GATE) -> None:
    """Install the mirror and engage `gate` (call before kopf.run): the replica is paused
    (PENDING) until kopf's first peering event is mirrored, and `slm_operator.handlers.startup`
    gates the work queue with it (`gated`) and lists SLMDeployments again on each resume.
    """
    install(gate)
    gate.engaged = True
    gate.set(PENDING, True)
