"""The operator's own SLMDeployment watch (slm_operator.handlers): bodies into the work queue,
deletions, deletions missed while the watch was down, and the HA pause/resume around it."""

from __future__ import annotations

from typing import Any

import pytest

from slm_operator import handlers, peering
from slm_operator.workqueue import WorkQueue

NS = "team-a"


def cr(name: str, ns: str = NS, generation: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "generation": generation,
                         "managedFields": [{"manager": "kubectl"}]}, "spec": {"model": {}}}


class Forgetful:
    def __init__(self) -> None:
        self.forgotten: list[tuple[str, str]] = []

    def forget(self, namespace: str, name: str) -> None:
        self.forgotten.append((namespace, name))


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch) -> Forgetful:
    async def handler(body: dict[str, Any]) -> Any:
        raise AssertionError("not started")

    rec = Forgetful()
    monkeypatch.setattr(handlers.STATE, "queue", WorkQueue(handler), raising=False)
    monkeypatch.setattr(handlers.STATE, "reconciler", rec, raising=False)
    monkeypatch.setattr(handlers.STATE, "conditions", {}, raising=False)
    return rec


def test_the_transform_names_the_kind_and_drops_managed_fields() -> None:
    out = handlers.SLM_BODY(cr("a"))
    assert out["apiVersion"] == "slm.ai/v1alpha1" and out["kind"] == "SLMDeployment"
    assert "managedFields" not in out["metadata"]


def test_events_queue_bodies_and_a_deletion_forgets_everything(state: Forgetful) -> None:
    q = handlers.STATE.queue
    handlers._slm_event("ADDED", cr("a"))
    handlers._slm_event("MODIFIED", cr("a", generation=2))
    assert q.keys() == [(NS, "a")] and q.body((NS, "a"))["metadata"]["generation"] == 2
    handlers.STATE.conditions[(NS, "a")] = {"Ready": "True"}
    handlers._slm_event("DELETED", cr("a", generation=2))
    assert q.keys() == [] and state.forgotten == [(NS, "a")] and (NS, "a") not in handlers.STATE.conditions


def test_a_relist_forgets_what_was_deleted_while_the_watch_was_down(state: Forgetful) -> None:
    """kopf never told a handler about an object deleted during a disconnect; the relist does."""
    q = handlers.STATE.queue
    for name in ("a", "b"):
        handlers._slm_event("ADDED", cr(name))
    handlers._slm_event("ADDED", cr("c", ns="team-b"))
    handlers.STATE.conditions[(NS, "gone-before-queued")] = {"Ready": "False"}
    handlers._slmdeployments_listed(NS, [cr("b", generation=3)])
    assert sorted(q.keys()) == [(NS, "b"), ("team-b", "c")], "another namespace's list leaves team-b alone"
    assert q.body((NS, "b"))["metadata"]["generation"] == 3
    assert sorted(state.forgotten) == [(NS, "a"), (NS, "gone-before-queued")]
    handlers._slmdeployments_listed(None, [])  # a cluster-wide list
    assert q.keys() == []


def test_peering_starts_paused_until_kopf_speaks_and_resuming_runs_the_callbacks() -> None:
    """A replica in a peering must not reconcile before kopf's peering decided it is the
    active one (kopf pre-activates its toggles; they reach the gate with the first event)."""
    from kopf._core.engines import peering as kopf_peering

    gate = peering.PauseGate()
    resumed: list[int] = []
    gate.on_resume.append(lambda: resumed.append(1))
    original = kopf_peering.process_peering_event
    try:
        peering.register(gate)
        assert gate.engaged and gate.paused, "paused before any peering event"

        class Toggle:
            name = "slm@ns"

            def __init__(self, on: bool) -> None:
                self.on = on

            def is_on(self) -> bool:
                return self.on

        peering._MirroredToggle(Toggle(True), gate)  # kopf: another peer has priority
        assert gate.paused and resumed == [] and peering.PENDING not in gate.toggles
        gate.set("slm@ns", False)
        assert not gate.paused and resumed == [1]
    finally:
        kopf_peering.process_peering_event = original


def test_no_kopf_resource_handler_is_registered() -> None:
    """kopf runs start-up, clean-up and peering only: a resource handler would bring back its
    per-event cost (and a second watch of SLMDeployments)."""
    import kopf

    registry = kopf.get_default_registry()
    assert not registry._watching.get_all_handlers() and not registry._changing.get_all_handlers()
