"""The HA standby gate (slm_operator.peering) against the pinned kopf and the real work queue."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from typing import Any

import pytest

from slm_operator import peering
from slm_operator.workqueue import WorkQueue


def _body(name: str, generation: int = 1) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "generation": generation}}


def test_a_paused_replica_reconciles_nothing_and_forgets_what_it_held() -> None:
    async def scenario() -> tuple[list[tuple[str, int]], dict[str, Any] | None]:
        gate = peering.PauseGate()
        ran: list[tuple[str, int]] = []

        async def handler(body: dict[str, Any]) -> peering.Skipped:
            ran.append((body["metadata"]["name"], body["metadata"]["generation"]))
            # a requeue timer, as waits and the consumers recheck have (workqueue.Result's shape)
            return peering.Skipped(requeue_after=0.05)

        queue = WorkQueue(handler, workers=2)
        queue.handler = peering.gated(queue, queue.handler, gate)
        queue.start()
        queue.update(("ns", "a"), _body("a"))
        for _ in range(50):
            await asyncio.sleep(0.01)
            if ran:
                break
        gate.set("slm@ns", True)             # a higher-priority peer appeared
        ran.clear()
        queue.enqueue(("ns", "a"))            # a pod event for its pods
        await asyncio.sleep(0.3)              # the requeue timer would have fired several times
        held = queue.body(("ns", "a"))
        gate.set("slm@ns", False)             # resumed: kopf lists again, fresh bodies arrive
        queue.update(("ns", "a"), _body("a", generation=2))
        for _ in range(50):
            await asyncio.sleep(0.01)
            if ran:
                break
        await queue.stop()
        return ran, held

    ran, held = asyncio.run(scenario())
    assert held is None, "the paused replica still held the body it would reconcile with"
    assert ran and ran[0] == ("a", 2), f"after resuming, the first reconcile uses the fresh body: {ran}"


def test_pause_is_any_peering_object_and_counts_transitions() -> None:
    gate = peering.PauseGate()
    calls: list[int] = []
    gate.on_pause.append(lambda: calls.append(1))
    assert not gate.paused
    gate.set("slm@a", True)
    gate.set("slm@b", True)   # already paused: no second callback
    gate.set("slm@a", False)
    assert gate.paused and calls == [1] and gate.pauses == 1
    gate.set("slm@b", False)
    assert not gate.paused


def test_the_mirror_follows_kopfs_own_peering_processor() -> None:
    """The pinned kopf's process_peering_event turns its toggle on for a higher-priority peer;
    the installed wrapper must see it (a kopf upgrade that changes this fails here)."""
    from kopf._cogs.aiokits import aiotoggles
    from kopf._cogs.configs import configuration
    from kopf._core.engines import peering as kopf_peering

    gate = peering.PauseGate()
    original = kopf_peering.process_peering_event
    try:
        peering.install(gate)
        peering.install(gate)  # idempotent
        assert kopf_peering.process_peering_event.__wrapped__ is original  # type: ignore[attr-defined]

        async def scenario() -> None:
            toggles = aiotoggles.ToggleSet(any)
            toggle = await toggles.make_toggle(True, name="slm@ns")  # kopf starts a peer paused
            settings = configuration.OperatorSettings()
            settings.peering.name, settings.peering.priority = "slm", 0
            now = datetime.datetime.now(datetime.UTC).isoformat()
            event = {"type": "MODIFIED", "object": {"metadata": {"name": "slm"}, "status": {
                "other@host": {"priority": 1, "lastseen": now, "lifetime": 60}}}}

            async def process(raw: dict[str, Any]) -> None:
                # It sleeps until the peer's deadline after deciding: the decision is what counts.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(kopf_peering.process_peering_event(
                        raw_event=raw, namespace="ns", resource=None, identity="me@host",
                        settings=settings, autoclean=False, conflicts_found=toggle), 0.3)

            await process(event)
            assert gate.paused and toggle.is_on()
            gone = {"type": "MODIFIED", "object": {"metadata": {"name": "slm"}, "status": {}}}
            await process(gone)
            assert not gate.paused and toggle.is_off()

        asyncio.run(scenario())
    finally:
        kopf_peering.process_peering_event = original


def test_install_refuses_a_kopf_without_the_toggle_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    from kopf._core.engines import peering as kopf_peering

    async def changed(*, raw_event: Any) -> None:  # what a kopf upgrade might leave
        return None

    monkeypatch.setattr(kopf_peering, "process_peering_event", changed)
    with pytest.raises(RuntimeError, match="conflicts_found"):
        peering.install(peering.PauseGate())
