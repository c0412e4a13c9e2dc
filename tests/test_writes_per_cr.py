"""Requests per SLMDeployment, counted (not timed): a regression in writes per CR fails here.

One SLMDeployment goes through its whole life against the in-memory API (tests/fakekube.py,
answering writes as the API server does: an apply returns the stored object, a status patch
the new resourceVersion), with the reconciles the operator really runs: several before the
watch delivers the children (every child event re-queues the owner), a stale body after a
status write (the watch lags), the timer that ends the status settle window, and a quiet
period. The counts asserted are the operator's whole bill for one CR (issue 19: it was about
15 requests, 11 of them patches, before):

- each child created once (Secret by one POST without a GET first; PVC, 2 NetworkPolicies,
  Service, Job, Deployment by one apply each), never re-applied when unchanged;
- 2 status writes (in progress once it has lasted the settle window, then Ready), none for
  the transient states in between (Job created -> running, Deployment created -> starting);
- 1 Event (Ready);
- nothing at all once converged.
"""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from typing import Any

import pytest
from fakekube import FakeKube

from slm_operator import constants as c
from slm_operator import reconciler as reconciler_mod
from slm_operator.cache import ChildCache
from slm_operator.podfaults import summarise
from slm_operator.reconciler import Reconciler
from slm_operator.render import RenderContext

NS, NAME = "team-a", "m"
SPEC: dict[str, Any] = {
    "model": {"source": "hf://Qwen/Qwen3-0.6B", "revision": "main"},
    "quantization": {"format": "onnx", "type": "int4"},
    "engine": {"name": "onnxruntime"},
}
SETTLE = 2.0


def _job_pod(job: str) -> dict[str, Any]:
    """The quantization Job's finished pod, with the quantizer's termination message."""
    labels = {c.L_MANAGED_BY: c.OPERATOR_NAME, c.L_COMPONENT: "quantizer", c.L_DEPLOYMENT: NAME, "job-name": job}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{job}-x", "namespace": NS, "labels": labels,
                         "creationTimestamp": "2026-03-01T10:00:00Z"},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "quantizer"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{
                "name": "quantizer", "image": "q:1", "ready": False, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                         "message": '{"result": "Ok", "totalBytes": 1000}'}}}]}}


class ServerLikeKube(FakeKube):
    """FakeKube answering as the API server does: an apply returns the stored object, a status
    patch bumps and returns the SLMDeployment's resourceVersion."""

    def __init__(self) -> None:
        super().__init__()
        self.rv = 100

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        await super().apply(obj)
        meta = obj["metadata"]
        return copy.deepcopy(self.objects[(obj["kind"], meta.get("namespace", ""), meta["name"])])

    async def patch_status(self, name: str, namespace: str, status: dict[str, Any]) -> str:  # type: ignore[override]
        await super().patch_status(name, namespace, status)
        self.rv += 1
        return str(self.rv)


class Clock:
    """time.monotonic for the reconciler's settle window, moved by the test."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Life:
    """One SLMDeployment: the server, the watch cache, the reconciler with the operator's
    settle window, and the body the watch last delivered."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.clock = Clock()
        monkeypatch.setattr(reconciler_mod.time, "monotonic", self.clock)
        self.kube = ServerLikeKube()
        self.cache = ChildCache()
        self.rec = Reconciler(self.kube, self.cache, RenderContext(), status_settle=SETTLE)  # type: ignore[arg-type]
        self.body: dict[str, Any] = {
            "apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment",
            "metadata": {"name": NAME, "namespace": NS, "uid": "cr-uid", "generation": 1,
                         "resourceVersion": "100"},
            "spec": copy.deepcopy(SPEC)}
        self.kept: dict[str, Any] | None = None  # the work queue's copy of the returned status

    def reconcile(self, *, stale: bool = False) -> reconciler_mod.Outcome:
        """One pass; the queue keeps the returned status unless `stale` (the watch delivered an
        older body meanwhile: the queue's copy is the body's own, pre-write status)."""
        body = copy.deepcopy(self.body)
        if self.kept is not None and not stale:
            body["status"] = self.kept
        out = asyncio.run(self.rec.reconcile(body))
        self.kept = out.status
        return out

    def watch(self) -> None:
        """The watch catches up: children into the cache, the CR body with its written status."""
        self.kube.sync(self.cache)
        if (NS, NAME) in self.kube.statuses:
            self.body["status"] = copy.deepcopy(self.kube.statuses[(NS, NAME)])
            self.body["metadata"]["resourceVersion"] = str(self.kube.rv)
        self.kept = None

    def set_status(self, kind: str, name: str, status: dict[str, Any]) -> None:
        self.kube.objects[(kind, NS, name)]["status"] = status

    def kind_name(self, kind: str) -> str:
        return next(n for (k, _, n) in self.kube.objects if k == kind)

    def bill(self) -> Counter[tuple[str, str]]:
        return Counter((verb, kind) for verb, kind, _ in self.kube.calls)

    def cond(self, ctype: str) -> dict[str, Any]:
        return next(x for x in (self.kept or {}).get("conditions", []) if x["type"] == ctype)


def test_one_cr_converges_with_each_child_written_once_and_two_status_writes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    life = Life(monkeypatch)
    first = life.reconcile()                     # the CR is added: children, the Job
    assert first.requeue_after is not None and first.requeue_after <= SETTLE, "the settle timer is set"
    for _ in range(3):                           # child events before the watch delivers them
        life.reconcile()
    life.watch()
    job = life.kind_name("Job")
    life.set_status("Job", job, {"active": 1, "startTime": "2026-03-01T10:00:00Z"})
    life.watch()
    life.clock.t += 0.5
    life.reconcile()                             # Job running: still in progress, still deferred
    assert not life.kube.status_patches, "transient states within the settle window are not written"
    life.clock.t += SETTLE
    life.reconcile()                             # the settle timer: in progress, written once
    assert len(life.kube.status_patches) == 1
    assert life.cond(c.MODEL_READY)["reason"] == "Quantizing"
    life.reconcile(stale=True)                   # the watch delivers the pre-write body late
    life.watch()
    life.set_status("Job", job, {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    life.cache.put_pod(summarise(_job_pod(job)))  # the pod watch has the Job's pod: no pod list
    life.clock.t += 30
    life.reconcile()                             # artifact ready: serving objects applied
    life.reconcile()                             # their events, before the watch
    life.watch()
    life.reconcile()                             # Deployment created, replicas starting: deferred
    assert len(life.kube.status_patches) == 1, "replicas starting is transient: not written"
    life.set_status("Deployment", NAME, {"replicas": 1, "readyReplicas": 1,
                                         "conditions": [{"type": "Available", "status": "True"}]})
    life.watch()
    life.clock.t += 0.5
    life.reconcile()                             # Ready: written at once
    assert life.cond(c.READY)["status"] == "True"
    life.reconcile(stale=True)                   # the late body again
    life.watch()

    bill = life.bill()
    children = {k: v for k, v in bill.items() if k[1] not in ("SLMDeployment/status", "Event")}
    assert children == {("create", "Secret"): 1, ("apply", "PersistentVolumeClaim"): 1,
                        ("apply", "NetworkPolicy"): 2, ("apply", "Service"): 1, ("apply", "Job"): 1,
                        ("apply", "Deployment"): 1}, \
        "each child written once, no GET of the generated Secret for a new CR"
    assert bill[("patch_status", "SLMDeployment/status")] == 2
    assert bill[("create", "Event")] == 1 and life.kube.events[-1]["reason"] == "Ready"
    assert sum(bill.values()) == 10

    calls = len(life.kube.calls)
    for _ in range(5):                           # quiet: resyncs and timers
        life.clock.t += 60
        life.reconcile()
    assert life.kube.calls[calls:] == [], "a converged CR sends nothing"


def test_a_restart_reads_the_secret_and_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    life = Life(monkeypatch)
    life.reconcile()
    life.clock.t += SETTLE
    life.reconcile()
    life.watch()
    # A fresh operator: new reconciler and cache (the prefill lists the children).
    life.cache = ChildCache()
    life.kube.sync(life.cache)
    life.rec = Reconciler(life.kube, life.cache, RenderContext(), status_settle=SETTLE)  # type: ignore[arg-type]
    calls = len(life.kube.calls)
    life.reconcile()
    assert [x[:2] for x in life.kube.calls[calls:]] == [("get", "Secret")], \
        "a CR with status is not new: its Secret is read, never created again"


def test_without_a_settle_window_every_change_is_written_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    life = Life(monkeypatch)
    life.rec.status_settle = 0.0
    life.reconcile()
    assert len(life.kube.status_patches) == 1 and life.kept is not None
    assert life.kept["quantization"]["stage"] == "Pending"


def test_a_problem_is_written_at_once_even_within_the_settle_window(monkeypatch: pytest.MonkeyPatch) -> None:
    life = Life(monkeypatch)
    life.kube.refuse[("apply", "Job")] = (403, "jobs.batch is forbidden: exceeded quota: count/jobs.batch")
    life.reconcile()
    assert len(life.kube.status_patches) == 1
    assert life.cond(c.DEGRADED)["reason"] == c.R_APPLY_REJECTED
    assert "exceeded quota" in life.cond(c.DEGRADED)["message"]


def test_a_timeout_of_lightkubes_http_client_is_transient() -> None:
    """lightkube sends through httpx2: its ReadTimeout (a loaded API server) is retried quietly
    like httpx's, not logged as an error with a stack trace per CR."""
    import httpx
    import httpx2

    from slm_operator.workqueue import _transient

    assert _transient(httpx2.ReadTimeout("timed out")) and _transient(httpx.ConnectError("refused"))
    assert not _transient(ValueError("a bug"))


@pytest.mark.parametrize("raw", ["two", "-1", "nan"])
def test_a_bad_settle_window_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    from slm_operator.settings import OperatorConfig

    monkeypatch.setenv("SLM_STATUS_SETTLE_S", raw)
    with pytest.raises(ValueError, match=r"SLM_STATUS_SETTLE_S=.* is not a number of seconds: set it to 0 or more"):
        OperatorConfig.from_env()
    monkeypatch.setenv("SLM_STATUS_SETTLE_S", "0.5")
    assert OperatorConfig.from_env().status_settle_s == 0.5
