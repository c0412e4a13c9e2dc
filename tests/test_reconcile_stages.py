"""Each reconcile stage in-process, against an in-memory API (tests/fakekube.py): no cluster.

The stages (reconciler.py's docstring): parse -> resolve -> consumers + render -> Secrets and
prepare -> artifact (observe.observe_artifact) -> serving (observe.observe_serving) -> status.
Every pass checks that the body is only read (status comes back in the Outcome) and keeps
the returned status for the next pass, as the work queue does. The failure paths are the
field faults' ones: a write the API server refuses (422, 403) ends in status as Degraded
ApplyRejected with the server's reason, a missing Secret, a Job that fails, a refused status.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fakekube import FakeKube
from lightkube import ApiError

from slm_operator import constants as c
from slm_operator import handlers, render
from slm_operator import reconciler as reconciler_mod
from slm_operator.cache import ChildCache
from slm_operator.observe import (
    FAILED,
    GATE_FAILED,
    SUCCEEDED,
    ArtifactWant,
    ServingWant,
    lists_pods,
    observe_artifact,
    observe_serving,
)
from slm_operator.podfaults import summarise
from slm_operator.reconciler import Outcome, Reconciler, parse
from slm_operator.render import RenderContext
from slm_operator.workqueue import WorkQueue

NS = "team-a"
NAME = "m"
SPEC: dict[str, Any] = {
    "model": {"source": "hf://Qwen/Qwen3-0.6B", "revision": "main"},
    "quantization": {"format": "onnx", "type": "int4"},
    "engine": {"name": "onnxruntime"},
}


def _body(spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment",
            "metadata": {"name": NAME, "namespace": NS, "uid": "cr-uid", "generation": 1},
            "spec": copy.deepcopy(spec if spec is not None else SPEC)}


class World:
    """One SLMDeployment, the fake API, the watch cache and the reconciler."""

    def __init__(self, spec: dict[str, Any] | None = None, ctx: RenderContext | None = None) -> None:
        self.kube = FakeKube()
        self.cache = ChildCache()
        self.rec = Reconciler(self.kube, self.cache, ctx or RenderContext())  # type: ignore[arg-type]
        self.body = _body(spec)

    def run(self) -> Outcome:
        before = copy.deepcopy(self.body)
        out = asyncio.run(self.rec.reconcile(self.body))
        assert self.body == before, "reconcile only reads the body"
        assert out.status is not None and out.status["conditions"], "the status comes back in the Outcome"
        self.body = {**self.body, "status": out.status}  # kept for the next pass, as the work queue does
        return out

    def watch(self) -> None:
        self.kube.sync(self.cache)

    def cond(self, ctype: str) -> dict[str, Any]:
        return next(x for x in self.body["status"]["conditions"] if x["type"] == ctype)

    def job(self) -> dict[str, Any]:
        return next(o for (k, _, _), o in self.kube.objects.items() if k == "Job")

    def set_status(self, kind: str, name: str, status: dict[str, Any]) -> None:
        self.kube.objects[(kind, NS, name)]["status"] = status
        self.watch()

    def complete_job(self) -> str:
        job = self.job()["metadata"]["name"]
        self.set_status("Job", job, {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
        return job


def _secret(name: str, **data: str) -> dict[str, Any]:
    import base64

    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def _pod(name: str, *, job: str | None = None, component: str = "quantizer", phase: str = "Failed",
         state: dict[str, Any] | None = None, created: str = "2026-03-01T10:00:00Z",
         conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    labels = {c.L_MANAGED_BY: c.OPERATOR_NAME, c.L_COMPONENT: component, c.L_DEPLOYMENT: NAME}
    if job:
        labels["job-name"] = job
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": labels, "creationTimestamp": created},
            "spec": {"restartPolicy": "Never" if job else "Always", "containers": [{"name": "quantizer"}]},
            "status": {"phase": phase, "conditions": conditions or [], "containerStatuses": [{
                "name": "quantizer", "image": "q:1", "ready": False, "restartCount": 0,
                "state": state or {"waiting": {"reason": "ContainerCreating"}}}]}}


# -- 1. parse ---------------------------------------------------------------------------------

def test_an_invalid_spec_is_invalid_spec_and_nothing_else_is_touched() -> None:
    w = World({"model": {"revision": "main"}, "engine": {"name": "onnxruntime"}})
    w.run()
    deg = w.cond(c.DEGRADED)
    assert (deg["status"], deg["reason"]) == ("True", "InvalidSpec") and "spec.model.source" in deg["message"]
    assert w.kube.writes() == [("patch_status", "SLMDeployment/status", NAME)], "only the status"
    cr, obs = parse(_body())
    assert cr is not None and cr.metadata.name == NAME and obs is None


# -- 2. resolve ---------------------------------------------------------------------------------

def test_resolve_runs_once_and_render_takes_its_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real = reconciler_mod.resolution

    def counted(*a: Any, **kw: Any) -> Any:
        seen.append(real(*a, **kw))
        return seen[-1]

    def no_second_resolve(*a: Any, **kw: Any) -> Any:
        raise AssertionError("render resolved again: it must render from the reconciler's resolution")

    monkeypatch.setattr(reconciler_mod, "resolution", counted)
    monkeypatch.setattr(render, "resolution", no_second_resolve)
    w = World()
    w.run()
    w.watch()
    w.complete_job()
    w.run()
    assert len(seen) == 1, "one resolution per spec: the second pass reuses it (render_memo)"
    res = seen[-1]
    dep = w.kube.stored("Deployment", NS, NAME)
    assert dep is not None
    engine = next(x for x in dep["spec"]["template"]["spec"]["containers"] if x["name"] != "gateway")
    assert engine["resources"]["limits"]["cpu"] == res.cpu_limit, "the CPU limit decided by resolve"
    assert res.cpu_millicores == 2000 and res.cpu_limit == "2000m"  # sizing's integers, not re-parsed
    sizing = w.body["status"]["sizing"]
    assert sizing["resources"]["cpu"] == res.r.cpu and w.body["status"]["engine"] == res.r.engine


@pytest.mark.parametrize(("spec", "millicores", "limit"), [
    ({**SPEC, "resources": {"cpu": "500m", "memory": "2Gi"}}, 500, "500m"),            # the spec's, read once
    ({"model": {"source": "hf://acme/tiny", "revision": "v1"}, "engine": {"name": "onnxruntime"}}, 2000, "4000m"),
    ({"model": {"source": "hf://Qwen/Qwen3-0.6B", "revision": "main"}, "engine": {"name": "vllm"},
      "resources": {"gpu": {"count": 1, "product": "NVIDIA-L4"}}}, None, None),       # sizing's integers
], ids=["spec-cpu", "uncatalogued", "gpu-sizing"])
def test_resolution_gives_render_the_cpu_in_integers(spec: dict[str, Any], millicores: int | None,
                                                     limit: str | None) -> None:
    from slm_operator.resolve import resolution
    from slm_operator.sizing import autoconfigure, lookup_model

    cr, _ = parse(_body(spec))
    assert cr is not None
    res = resolution(cr.spec)
    if millicores is None:  # GPU engine: sizing gives a request and no limit; the limit is twice it
        facts = lookup_model(spec["model"]["source"])
        assert facts is not None
        d = autoconfigure(facts, engine="vllm", gpu_product="NVIDIA-L4", gpu_count=1)
        millicores = d.resources.cpu_request_millicores
        assert d.resources.cpu_limit_millicores is None
        limit = f"{2 * millicores}m"
    assert (res.cpu_millicores, res.cpu_limit) == (millicores, limit)
    assert res.r.cpu_limit in (None, limit)


@pytest.mark.parametrize(("spec", "reason", "model_reason"), [
    ({"model": {"source": "hf://meta-llama/Llama-3.2-3B-Instruct", "revision": "main"}, "engine": {"name": "ollama"}},
     "HubTokenRequired", "Not fetched: fix spec.model.tokenSecretRef first."),
    ({"model": {"source": "hf://Qwen/Qwen3-8B", "revision": "main"}, "engine": {"name": "vllm"},
      "quantization": {"format": "none"}, "resources": {"gpu": {"count": 1, "product": "Tesla-T4"}}},
     "DoesNotFit", "Not fetched: the model does not fit the hardware."),
], ids=["gated", "does-not-fit"])
def test_a_refused_resolution_renders_nothing_and_writes_only_status(
        monkeypatch: pytest.MonkeyPatch, spec: dict[str, Any], reason: str, model_reason: str) -> None:
    def no_render(*a: Any, **kw: Any) -> Any:
        raise AssertionError("a refused spec is not rendered")

    monkeypatch.setattr(reconciler_mod, "plan", no_render)
    w = World(spec)
    out = w.run()
    deg, model = w.cond(c.DEGRADED), w.cond(c.MODEL_READY)
    assert (deg["status"], deg["reason"]) == ("True", reason)
    assert (model["reason"], model["message"]) == (reason, model_reason)
    assert w.kube.calls[0] == ("patch_status", "SLMDeployment/status", NAME)
    assert w.kube.writes() == [("patch_status", "SLMDeployment/status", NAME)]
    assert [e["reason"] for e in w.kube.events] == [reason] and out.requeue_after is None
    assert w.body["status"]["sizing"]["reason"], "the sizing's reason is in status"


# -- 3. consumers and render ----------------------------------------------------------------------

KEYS = {**SPEC, "access": {"apiKeys": {"secretRef": {"name": "consumers"}}}}


def test_a_missing_consumers_secret_is_secret_not_found_after_the_prepare_objects() -> None:
    w = World(KEYS)
    out = w.run()
    deg = w.cond(c.DEGRADED)
    assert deg["reason"] == "SecretNotFound" and "spec.access.apiKeys.secretRef" in deg["message"]
    assert w.cond(c.MODEL_READY)["reason"] == "WaitingForSecret"
    applied = {k for _, k, _ in w.kube.writes()}
    assert {"NetworkPolicy", "Service", "PersistentVolumeClaim"} <= applied and "Job" not in applied
    assert out.requeue_after is not None and out.requeue_after <= reconciler_mod.SECRET_RETRY_SECONDS


def test_the_limit_store_host_comes_from_the_watched_service_not_a_get() -> None:
    w = World(KEYS)
    w.kube.put(_secret("consumers", web="key: " + "k" * 24 + "\nrequestsPerMinute: 5"))
    out = w.run()
    assert out.requeue_after == reconciler_mod.CONSUMERS_RECHECK_SECONDS, "the Secret is re-read every minute"
    store = w.kube.stored("Service", NS, f"{NAME}-limits")
    assert store is not None, "a limited consumer gets the limit store"
    w.watch()
    w.complete_job()
    w.run()
    dep = w.kube.stored("Deployment", NS, NAME)
    assert dep is not None and "redis://10.96.0.9:" in json.dumps(dep), "the gateway dials the ClusterIP"
    assert not any(verb == "get" and kind == "Service" for verb, kind, _ in w.kube.calls)


def test_a_bad_consumer_entry_is_degraded_once_serving_and_the_good_ones_stay() -> None:
    w = World(KEYS)
    w.kube.put(_secret("consumers", web="k" * 24, bad="requestsPerMinute: 5"))
    w.run()
    w.watch()
    w.complete_job()
    w.run()
    deg = w.cond(c.DEGRADED)
    assert deg["reason"] == "InvalidApiKeyEntry" and "bad (MissingKey)" in deg["message"]
    assert "k" * 24 not in json.dumps(w.body["status"]), "no key in status"


def test_the_reconciler_reads_names_from_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan that names the Job differently: the reconciler creates and then watches that name."""
    real = reconciler_mod.plan

    def renamed(*a: Any, **kw: Any) -> render.Plan:
        p = real(*a, **kw)
        assert p.job is not None
        job = {**p.job, "metadata": {**p.job["metadata"], "name": "other-job"}}
        prepare = [job if o is p.job else o for o in p.prepare]
        return dataclasses.replace(p, job=job, prepare=prepare, names={**p.names, "job": "other-job"})

    monkeypatch.setattr(reconciler_mod, "plan", renamed)
    w = World()
    w.run()
    assert w.job()["metadata"]["name"] == "other-job"
    assert w.body["status"]["quantization"]["job"] == "other-job"
    w.watch()
    w.complete_job()
    w.run()
    assert w.cond(c.MODEL_READY)["reason"] == "ArtifactReady"
    assert w.body["status"]["artifact"]["job"] == "other-job"


# -- 4. Secrets and the prepare objects -------------------------------------------------------------

def test_a_missing_token_secret_waits_and_starts_no_job() -> None:
    w = World({**SPEC, "model": {**SPEC["model"], "tokenSecretRef": {"name": "hf", "key": "token"}}})
    out = w.run()
    assert w.cond(c.DEGRADED)["reason"] == "SecretNotFound" and "Secret hf" in w.cond(c.DEGRADED)["message"]
    assert out.requeue_after == reconciler_mod.SECRET_RETRY_SECONDS and not w.kube.writes("Job")
    w.kube.put(_secret("hf", other="x"))
    w.run()
    assert "has no key 'token'" in w.cond(c.DEGRADED)["message"]
    w.kube.put(_secret("hf", token="hf_secret_value_123"))
    w.run()
    assert w.kube.writes("Job") and w.cond(c.DEGRADED)["status"] == "False"
    assert w.cond(c.MODEL_READY)["reason"] == "Quantizing"


@pytest.mark.parametrize(("kind", "name", "code", "message"), [
    ("NetworkPolicy", f"{NAME}-server", 422, 'NetworkPolicy.networking.k8s.io "m-server" is invalid: spec.ingress'),
    ("PersistentVolumeClaim", f"{NAME}-model-cache", 403, 'persistentvolumeclaims "m-model-cache" is forbidden: '
     "exceeded quota: storage"),
    ("Service", NAME, 403, 'services "m" is forbidden: admission webhook "policy.example" denied the request'),
])
def test_a_refused_apply_is_degraded_apply_rejected_with_the_reason(kind: str, name: str, code: int,
                                                                    message: str) -> None:
    w = World()
    w.kube.refuse[("apply", kind)] = (code, message)
    out = w.run()
    deg = w.cond(c.DEGRADED)
    assert (deg["status"], deg["reason"]) == ("True", c.R_APPLY_REJECTED)
    assert deg["message"].startswith(f"The API server refused to apply {kind} {name} ({code}): ")
    assert message.split(":")[0] in deg["message"]
    assert out.requeue_after is not None and out.requeue_after <= reconciler_mod.REJECTED_RETRY_SECONDS
    others = {k for v, k, _ in w.kube.writes() if v != "patch_status"}
    assert "Job" in others and kind not in {k for (k, _, _) in w.kube.objects}, "the rest goes on"
    assert w.kube.events[-1]["reason"] == c.R_APPLY_REJECTED and w.kube.events[-1]["type"] == "Warning"
    del w.kube.refuse[("apply", kind)]
    w.watch()
    w.run()
    assert w.cond(c.DEGRADED)["status"] == "False", "a later pass that is accepted recovers"


def test_a_transient_error_raises_for_the_queue_and_writes_no_status() -> None:
    w = World()
    w.kube.fail[("apply", "Service")] = 500
    with pytest.raises(ApiError):
        asyncio.run(w.rec.reconcile(w.body))
    assert not w.kube.writes("SLMDeployment/status") and "status" not in w.body


def test_the_generated_api_key_secret_is_created_once() -> None:
    w = World()
    w.run()
    w.watch()
    w.run()
    creates = [x for x in w.kube.calls if x[0] == "create" and x[1] == "Secret"]
    assert creates == [("create", "Secret", f"{NAME}-api-key")]
    assert w.kube.stored("Secret", NS, f"{NAME}-api-key")["data"]["api-key"]


# -- 5. the artifact ---------------------------------------------------------------------------------

def test_the_job_is_created_then_running_then_done() -> None:
    w = World()
    w.run()
    job = w.job()["metadata"]["name"]
    assert w.cond(c.MODEL_READY)["reason"] == "Quantizing" and f"Job {job} started" in w.cond(c.MODEL_READY)["message"]
    assert w.body["status"]["quantization"] == {"format": "onnx", "type": "int4", "stage": "Pending", "job": job}
    assert not w.kube.writes("Deployment"), "serving waits for the artifact"
    assert w.cond(c.AVAILABLE)["reason"] == "WaitingForModel"
    w.watch()
    w.run()
    assert w.body["status"]["quantization"]["stage"] == "Running"
    assert len(w.kube.writes("Job")) == 1, "a Job is applied once"
    w.complete_job()
    w.run()
    assert w.cond(c.MODEL_READY)["reason"] == "ArtifactReady" and w.body["status"]["artifact"]["ready"] is True
    assert w.kube.writes("Deployment"), "the serving stage starts"


def test_a_refused_job_is_named_in_model_ready() -> None:
    w = World()
    w.kube.refuse[("apply", "Job")] = (403, 'jobs.batch is forbidden: exceeded quota: count/jobs.batch')
    w.run()
    model = w.cond(c.MODEL_READY)
    assert model["reason"] == c.R_APPLY_REJECTED and "refused to apply Job" in model["message"]
    assert w.body["status"]["quantization"]["stage"] == "Pending"
    assert "job" not in w.body["status"]["quantization"], "no Job exists"
    assert w.cond(c.DEGRADED)["reason"] == c.R_APPLY_REJECTED


def test_a_failed_job_lists_its_gone_pods_and_quotes_the_quantizer() -> None:
    w = World()
    w.run()
    job = w.job()["metadata"]["name"]
    w.kube.pods.append(_pod(f"{job}-x", job=job, state={"terminated": {
        "exitCode": 1, "reason": "Error", "message": "RuntimeError: conversion failed for layer 12"}}))
    w.set_status("Job", job, {"failed": 3, "conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "backoff limit"}]})
    w.run()
    deg = w.cond(c.DEGRADED)
    assert deg["reason"] == c.R_QUANTIZATION_FAILED and "conversion failed for layer 12" in deg["message"]
    assert deg["message"].startswith(f"Job {job} failed (BackoffLimitExceeded: backoff limit): pod {job}-x")
    assert ("list", "Pod", "") in w.kube.calls, "the watch had none of the finished Job's pods"
    assert w.body["status"]["quantization"]["stage"] == "Failed" and not w.kube.writes("Deployment")


def test_a_job_pod_fault_is_degraded_naming_the_job_and_clears() -> None:
    w = World()
    w.run()
    w.watch()
    job = w.job()["metadata"]["name"]
    pulling = _pod(f"{job}-a", job=job, phase="Pending", state={"waiting": {
        "reason": "ImagePullBackOff", "message": 'Back-off pulling image "q:1"'}})
    w.cache.put_pod(summarise(pulling))
    w.run()
    deg = w.cond(c.DEGRADED)
    assert deg["reason"] == "ImagePullFailed" and f"Job {job}" in deg["message"]
    assert w.cond(c.MODEL_READY)["reason"] == "ImagePullFailed"
    assert w.kube.events[-1]["reason"] == "ImagePullFailed"
    w.cache.remove_pod(NS, f"{job}-a")
    w.run()
    assert w.cond(c.DEGRADED)["status"] == "False" and w.cond(c.MODEL_READY)["reason"] == "Quantizing"


def test_a_ready_artifact_in_status_is_not_looked_up_again() -> None:
    w = World()
    w.run()
    w.watch()
    job = w.complete_job()
    w.run()
    w.kube.objects.pop(("Job", NS, job))
    w.cache.remove("Job", NS, job)
    calls = len(w.kube.calls)
    w.run()
    assert w.cond(c.MODEL_READY)["reason"] == "ArtifactReady"
    assert not [x for x in w.kube.calls[calls:] if x[1] in ("Job", "Pod")], "no Job or pod request"


# -- 6. serving --------------------------------------------------------------------------------------

def _serving(w: World) -> None:
    w.run()
    w.watch()
    w.complete_job()
    w.run()
    w.watch()


def test_ready_once_the_deployment_is_available_and_then_no_writes() -> None:
    w = World()
    _serving(w)
    w.set_status("Deployment", NAME, {"readyReplicas": 1, "conditions": [{"type": "Available", "status": "True"}]})
    out = w.run()
    assert w.cond(c.READY)["status"] == "True" and w.body["status"]["replicas"]["summary"] == "1/1"
    assert out.writes == 1 and w.kube.events[-1]["reason"] == "Ready"
    calls = len(w.kube.calls)
    out = w.run()
    assert out.writes == 0 and w.kube.calls[calls:] == [], "an unchanged pass sends nothing"


def test_a_refused_deployment_is_the_available_reason() -> None:
    w = World()
    w.kube.refuse[("apply", "Deployment")] = (422, 'Deployment.apps "m" is invalid: spec.template.spec.containers[0]')
    _serving(w)
    avail = w.cond(c.AVAILABLE)
    assert avail["reason"] == c.R_APPLY_REJECTED and f"refused to apply Deployment {NAME} (422)" in avail["message"]
    assert w.cond(c.DEGRADED)["reason"] == c.R_APPLY_REJECTED


def test_children_no_longer_wanted_are_pruned() -> None:
    w = World()
    _serving(w)
    stale = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
             "metadata": {"name": "old-hpa", "namespace": NS, "labels": {c.L_DEPLOYMENT: NAME},
                          "ownerReferences": [{"uid": "cr-uid"}]}}
    w.kube.put(stale)
    w.watch()
    w.run()
    assert ("delete", "HorizontalPodAutoscaler", "old-hpa") in w.kube.calls
    assert w.kube.stored("HorizontalPodAutoscaler", NS, "old-hpa") is None


# -- 7. status ---------------------------------------------------------------------------------------

def test_a_refused_status_posts_one_event_and_raises() -> None:
    w = World()
    w.kube.refuse[("patch_status", "SLMDeployment/status")] = (422, "status.conditions[0].message: Too long")
    for _ in range(2):
        with pytest.raises(ApiError):
            asyncio.run(w.rec.reconcile(w.body))
    refused = [e for e in w.kube.events if e["reason"] == c.R_STATUS_REJECTED]
    assert len(refused) == 1 and "Too long" in refused[0]["message"], "one Event per message"


def test_a_cr_deleted_meanwhile_is_not_an_error() -> None:
    """The status write of a CR deleted while it was reconciled answers 404: nothing to say,
    no Event, no exception (the work queue would log a traceback and retry a gone CR)."""
    w = World()
    w.kube.refuse[("patch_status", "SLMDeployment/status")] = (404, 'slmdeployments.slm.ai "m" not found')
    out = asyncio.run(w.rec.reconcile(w.body))
    assert ("patch_status", "SLMDeployment/status", NAME) in w.kube.calls
    assert out.status == {} and not [e for e in w.kube.events if e["reason"] == c.R_STATUS_REJECTED]


# -- observation, pure ----------------------------------------------------------------------------

WANT = ArtifactWant(key="k1", fmt="onnx", qtype="int4", location="/models/artifacts/onnx-int4-k1",
                    job="m-quantize-k1", source="hf://Qwen/Qwen3-0.6B")
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def _job(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": WANT.job, "namespace": NS, "uid": "j"}, "spec": {"backoffLimit": 2},
            "status": status}


def test_observe_artifact_covers_every_state() -> None:
    v = observe_artifact({}, None, [], dataclasses.replace(WANT, job=None))
    assert v.ready and v.model.reason == "ServedFromVolume" and v.quantization == {"stage": "NotNeeded"}
    prev = {"artifact": {"key": "k1", "ready": True, "job": WANT.job, "sizeBytes": 5}}
    v = observe_artifact(prev, None, [], WANT)
    assert v.ready and v.artifact == prev["artifact"] and v.quantization == {"stage": "Done", "job": WANT.job}
    v = observe_artifact({"artifact": {**prev["artifact"], "key": "old"}}, None, [], WANT)
    assert not v.ready and v.create_job and v.quantization["stage"] == "Pending"
    done = _job(conditions=[{"type": "Complete", "status": "True"}])
    msg = json.dumps({"result": "Succeeded", "totalBytes": 1234})
    pods = [summarise(_pod("p", job=WANT.job, phase="Succeeded",
                           state={"terminated": {"exitCode": 0, "message": msg}}))]
    v = observe_artifact({}, done, pods, WANT)
    assert v.ready and v.job_outcome == SUCCEEDED and v.artifact is not None and v.artifact["sizeBytes"] == 1234
    gate = json.dumps({"result": "GateFailed", "message": "perplexity rose 12% with key sk-abcdefabcdefabcdef"})
    failed = _job(conditions=[{"type": "Failed", "status": "True"}])
    pods = [summarise(_pod("p", job=WANT.job, state={"terminated": {"exitCode": 2, "message": gate}}))]
    v = observe_artifact({}, failed, pods, WANT, secrets=["sk-abcdefabcdefabcdef"])
    assert not v.ready and v.job_outcome == GATE_FAILED and v.problem is not None
    assert v.problem.reason == "QualityGateFailed" and "sk-abcdefabcdefabcdef" not in v.problem.message
    # A permanent exit code is final before the Job's Failed condition says so.
    from slm_operator.render.workloads import QUANTIZER_PERMANENT_EXIT_CODES

    code = sorted(QUANTIZER_PERMANENT_EXIT_CODES)[0]
    pods = [summarise(_pod("p", job=WANT.job, state={"terminated": {"exitCode": code, "message": "bad type"}}))]
    v = observe_artifact({}, _job(active=1), pods, WANT)
    assert v.job_outcome == FAILED and v.problem is not None and v.problem.reason == c.R_QUANTIZATION_FAILED
    v = observe_artifact({}, _job(active=1), [], WANT)
    assert (v.ready, v.problem, v.quantization["stage"], v.model.reason) == (False, None, "Running", "Quantizing")


def test_observe_artifact_unschedulable_is_a_wait_then_a_fault() -> None:
    pending = _pod("p", job=WANT.job, phase="Pending", conditions=[{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient memory.",
        "lastTransitionTime": "2026-03-01T10:00:00Z"}])
    pods = [summarise(pending)]
    v = observe_artifact({}, _job(active=1), pods, WANT, now=T0 + timedelta(seconds=60))
    assert v.problem is None and v.model.reason == "Unschedulable" and v.recheck_after == pytest.approx(240)
    v = observe_artifact({}, _job(active=1), pods, WANT, now=T0 + timedelta(seconds=600))
    assert v.problem is not None and v.problem.reason == "Unschedulable"


def test_lists_pods_only_for_a_finished_job_the_watch_forgot() -> None:
    done = _job(conditions=[{"type": "Complete", "status": "True"}])
    assert lists_pods({}, done, [], WANT)
    assert not lists_pods({}, _job(active=1), [], WANT), "a running Job's pods come from the watch"
    assert not lists_pods({"artifact": {"key": "k1", "ready": True}}, done, [], WANT), "already in status"
    assert not lists_pods({}, done, [{"name": "p"}], WANT)


def test_observe_serving_covers_every_state() -> None:
    want = ServingWant(name="m")
    refused = "The API server refused to apply Deployment m (422): invalid."
    v = observe_serving(None, [], None, dataclasses.replace(want, rejected=("other", refused)))
    assert (v.available.reason, v.available.message, v.replicas) == (c.R_APPLY_REJECTED, refused, None)
    assert observe_serving(None, [], None, want).available.reason == "DeploymentPending"
    up = {"spec": {"replicas": 2}, "status": {"readyReplicas": 1, "conditions": [
        {"type": "Available", "status": "True"}]}}
    v = observe_serving(up, [], None, want)
    assert v.available.status and v.replicas == (2, 1) and v.problem is None
    v = observe_serving({"spec": {"replicas": 0}, "status": {}}, [], None, want)
    assert v.available.reason == "ScaledToZero"
    failing = {"spec": {"replicas": 1}, "status": {"conditions": [
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "quota exceeded."}]}}
    v = observe_serving(failing, [], None, want)
    assert v.problem is not None and v.problem.reason == c.R_FAILED_CREATE and v.available.reason == c.R_FAILED_CREATE
    stuck = {"spec": {"replicas": 1}, "status": {"conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}]}}
    v = observe_serving(stuck, [], None, want)
    assert v.problem is not None and v.problem.reason == c.R_PROGRESS_DEADLINE_EXCEEDED
    crash = _pod("m-7c9f-a", component=c.C_SERVER, phase="Running", created="2026-03-01T10:00:00Z",
                 state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}})
    crash["status"]["containerStatuses"][0] |= {"restartCount": 4, "lastState": {
        "terminated": {"exitCode": 1, "reason": "Error"}}}
    v = observe_serving(up, [summarise(crash)], None, want)
    assert v.problem is not None and v.problem.reason == "CrashLoopBackOff" and v.available.status, \
        "a crash-looping replica is Degraded while another serves"


# -- the work queue and the handler: the status travels back as a value ------------------------------------

def test_the_queue_keeps_the_returned_status_for_the_next_pass() -> None:
    bodies: list[dict[str, Any]] = []

    async def handler(body: dict[str, Any]) -> Outcome:
        bodies.append(body)
        body["spec"] = "mutated"  # a handler that writes into its body changes nothing queued
        return Outcome(status={"conditions": [{"type": "Ready", "status": str(len(bodies))}]})

    async def main() -> None:
        q = WorkQueue(handler, workers=1)
        q.start()
        q.update((NS, NAME), _body())
        for _ in range(2000):  # up to 20 s on a loaded machine
            if bodies:
                break
            await asyncio.sleep(0.01)
        kept = q.body((NS, NAME))
        assert kept is not None and kept["status"]["conditions"][0]["status"] == "1"
        assert kept["spec"] == SPEC
        q.enqueue((NS, NAME))
        for _ in range(2000):  # up to 20 s on a loaded machine
            if len(bodies) == 2:
                break
            await asyncio.sleep(0.01)
        await q.stop()

    asyncio.run(main())
    assert len(bodies) == 2 and bodies[1]["status"]["conditions"][0]["status"] == "1", "started from it"


def test_the_condition_metrics_come_from_the_returned_status(monkeypatch: pytest.MonkeyPatch) -> None:
    status = {"conditions": [{"type": c.READY, "status": "True"}, {"type": c.DEGRADED, "status": "False"}]}

    class Fixed:
        async def reconcile(self, body: dict[str, Any]) -> Outcome:
            return Outcome(requeue_after=7.0, status=status)

    monkeypatch.setattr(handlers.STATE, "reconciler", Fixed(), raising=False)
    monkeypatch.setattr(handlers.STATE, "conditions", {}, raising=False)
    body = _body()
    out = asyncio.run(handlers._reconcile(body))
    assert out.requeue_after == 7.0 and "status" not in body
    assert handlers.STATE.conditions[(NS, NAME)] == {c.READY: "True", c.DEGRADED: "False"}


# -- quantize-only (serving.enabled: false) ---------------------------------------------------------

def test_quantize_only_is_ready_with_the_artifact_and_serves_nothing() -> None:
    """serving.enabled false: the Job and the gate run; Ready once the artifact is, with no
    Deployment, Service or HPA and no endpoint; serving objects left from before are pruned."""
    spec = {**copy.deepcopy(SPEC), "serving": {"enabled": False},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 2, "metrics": [{"type": "CPU", "targetPercent": 70}]}}
    w = World(spec)
    w.run()
    assert w.cond(c.AVAILABLE)["reason"] == "WaitingForModel" and "Quantize-only" in w.cond(c.AVAILABLE)["message"]
    assert w.cond(c.READY)["status"] == "False"
    left = {"apiVersion": "apps/v1", "kind": "Deployment",  # from when serving was on
            "metadata": {"name": NAME, "namespace": NS, "labels": {c.L_DEPLOYMENT: NAME},
                         "ownerReferences": [{"uid": "cr-uid"}]}}
    w.kube.put(left)
    w.watch()
    w.complete_job()
    w.run()
    assert w.cond(c.READY)["status"] == "True" and w.cond(c.AVAILABLE)["reason"] == c.R_QUANTIZE_ONLY
    assert "nothing is served" in w.cond(c.READY)["message"]
    assert w.body["status"]["artifact"]["ready"] is True and "endpoint" not in w.body["status"]
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler"):
        assert not [x for x in w.kube.writes(kind) if x[0] != "delete"], kind
    assert ("delete", "Deployment", NAME) in w.kube.calls and w.kube.stored("Deployment", NS, NAME) is None
    w.cache.remove("Deployment", NS, NAME)  # the watch's DELETED event (FakeKube.sync only adds)
    out = w.run()
    assert out.writes == 0, "a quiet quantize-only CR costs no writes"


def test_switching_to_quantize_only_removes_the_endpoint_and_replicas_from_status() -> None:
    """A merge patch keeps keys it does not name: the status patch names the fields that went
    away (endpoint, replicas) as null, so the API server removes them."""
    from slm_operator.status import status_patch

    old = {"observedGeneration": 1, "conditions": [], "endpoint": "http://m.ns.svc:8000/v1",
           "replicas": {"desired": 1, "ready": 1, "summary": "1/1"}, "userField": "kept"}
    new = {"observedGeneration": 2, "conditions": []}
    assert status_patch(new, old) == {**new, "endpoint": None, "replicas": None}
    w = World({**copy.deepcopy(SPEC), "serving": {"enabled": False}})
    w.body = {**w.body, "status": old}
    w.run()
    patch = w.kube.status_patches[-1]
    assert patch["endpoint"] is None and patch["replicas"] is None, patch


def test_artifact_facts_carry_size_checksum_tool_and_perplexities() -> None:
    from slm_operator.observe import artifact_facts

    facts = artifact_facts({"totalBytes": 123, "perplexityBefore": 10.123456, "perplexityAfter": 10.5,
                            "increasePct": 3.72, "manifestSha256": "ab" * 32, "tool": "olive", "stage": "x"})
    assert facts == {"sizeBytes": 123, "perplexityBefore": "10.1235", "perplexityAfter": "10.5",
                     "perplexityIncreasePercent": "3.72", "tool": "olive", "checksum": "sha256:" + "ab" * 32}
