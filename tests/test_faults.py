"""Pod faults: classification of realistic pod status (as a real kubelet reports it) into a
stable reason and a sentence naming the child, the pod index, and the reconciler's wiring
(Degraded, Events, recovery, refused writes) against a fake API.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakekube import WatchListing, WatchObj

from slm_operator import podfaults
from slm_operator.cache import ChildCache
from slm_operator.podfaults import child_fault, redact, summarise, tail

ROOT = Path(__file__).resolve().parents[1]
NS = "team-a"
IMAGE = "ghcr.io/slm-operator/onnxruntime-server:0.1.0"
QUANTIZER = "ghcr.io/slm-operator/quantizer:0.1.0"
T0 = "2026-03-01T10:00:00Z"
T1 = "2026-03-01T10:05:00Z"


def pod(name: str, *, component: str = "server", owner: str = "qwen3", job: str | None = None,
        created: str = T0, phase: str = "Running", container: str = "onnxruntime", image: str = IMAGE,
        state: dict[str, Any] | None = None, last: dict[str, Any] | None = None, restarts: int = 0,
        ready: bool = False, reason: str | None = None, message: str | None = None,
        conditions: list[dict[str, Any]] | None = None, memory: str = "8Gi") -> dict[str, Any]:
    """A pod as the API server returns it (trimmed to what a kubelet fills in)."""
    labels = {"app.kubernetes.io/managed-by": "slm-operator", "app.kubernetes.io/component": component,
              "slm.ai/deployment": owner, "app.kubernetes.io/instance": owner}
    if job:
        labels |= {"job-name": job, "batch.kubernetes.io/job-name": job}
    else:
        labels["pod-template-hash"] = "7c9f"
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions if conditions is not None else [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": created},
            {"type": "Initialized", "status": "True", "lastTransitionTime": created},
            {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": created},
        ],
        "hostIP": "10.88.0.2", "podIP": "10.244.1.7", "qosClass": "Burstable", "startTime": created,
        "containerStatuses": [{
            "name": container, "image": image, "imageID": "", "ready": ready, "restartCount": restarts,
            "started": ready, "state": state or {"waiting": {"reason": "ContainerCreating"}},
            "lastState": last or {},
        }],
    }
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels, "creationTimestamp": created,
                     "uid": f"uid-{name}", "resourceVersion": "123",
                     "ownerReferences": [{"kind": "Job" if job else "ReplicaSet", "name": job or f"{owner}-7c9f"}],
                     "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}] * 5},
        "spec": {"restartPolicy": "Never" if job else "Always", "nodeName": "real-0",
                 "containers": [{"name": container, "image": image,
                                 "env": [{"name": "HF_TOKEN",
                                          "valueFrom": {"secretKeyRef": {"name": "hf", "key": "t"}}}],
                                 "resources": {"limits": {"memory": memory, "cpu": "2"},
                                               "requests": {"memory": memory, "cpu": "1"}}}]},
        "status": status,
    }


def classify(*pods: dict[str, Any], kind: str = "Deployment", name: str = "qwen3", **kw: Any) -> podfaults.Fault | None:
    return child_fault(kind, name, [summarise(p) for p in pods], **kw)


# -- image pulls -----------------------------------------------------------------------------------

PULL_MSG = ('Back-off pulling image "ghcr.io/slm-operator/onnxruntime-server:0.1.0": ErrImagePull: failed to pull '
            'and unpack image "ghcr.io/slm-operator/onnxruntime-server:0.1.0": failed to resolve reference '
            '"ghcr.io/slm-operator/onnxruntime-server:0.1.0": failed to do request: Head '
            '"https://ghcr.io/v2/slm-operator/onnxruntime-server/manifests/0.1.0": dial tcp: lookup ghcr.io: '
            'no such host')


def test_image_pull_backoff_names_deployment_pod_image_and_fix() -> None:
    p = pod("qwen3-7c9f-abcde", phase="Pending",
            state={"waiting": {"reason": "ImagePullBackOff", "message": PULL_MSG}})
    f = classify(p)
    assert f is not None and f.reason == "ImagePullFailed" and f.degraded and f.pod == "qwen3-7c9f-abcde"
    assert f.message.startswith(f"Deployment qwen3 pod qwen3-7c9f-abcde cannot pull image {IMAGE} (ImagePullBackOff: "
                                "failed to pull and unpack image")
    assert f.message.endswith("build and load it (make images) or set the image registry (global.imageRegistry).")
    assert len(f.message) < 700


def test_err_image_pull_of_the_quantizer_names_the_job() -> None:
    p = pod("qwen3-quantize-1a2b-x7k2p", component="quantizer", job="qwen3-quantize-1a2b", phase="Pending",
            container="quantizer", image=QUANTIZER,
            state={"waiting": {"reason": "ErrImagePull",
                               "message": f'rpc error: code = NotFound desc = failed to pull and unpack image '
                                          f'"{QUANTIZER}": not found'}})
    f = classify(p, kind="Job", name="qwen3-quantize-1a2b")
    assert f is not None and f.reason == podfaults.IMAGE_PULL_FAILED
    assert f.message.startswith(f"Job qwen3-quantize-1a2b pod qwen3-quantize-1a2b-x7k2p cannot pull image {QUANTIZER}"
                                " (ImagePullBackOff: rpc error")
    # The kubelet alternates ErrImagePull and ImagePullBackOff at each retry: one sentence for both.
    backoff = copy.deepcopy(p)
    backoff["status"]["containerStatuses"][0]["state"]["waiting"] = {
        "reason": "ImagePullBackOff",
        "message": f'Back-off pulling image "{QUANTIZER}": ErrImagePull: rpc error: code = NotFound desc = failed '
                   f'to pull and unpack image "{QUANTIZER}": not found'}
    assert classify(backoff, kind="Job", name="qwen3-quantize-1a2b").message == f.message


def test_invalid_image_name_says_to_fix_the_name() -> None:
    p = pod("qwen3-7c9f-abcde", phase="Pending", image="ghcr.io/Bad:Name",
            state={"waiting": {"reason": "InvalidImageName",
                               "message": 'Failed to apply default image tag "ghcr.io/Bad:Name": couldn\'t parse '
                                          'image name: invalid reference format: repository name must be lowercase'}})
    f = classify(p)
    assert f is not None and f.reason == "ImagePullFailed" and "fix the image name" in f.message


# -- crashes -----------------------------------------------------------------------------------------

def test_crash_loop_back_off_gives_exit_code_reason_and_last_lines() -> None:
    p = pod("qwen3-7c9f-abcde", restarts=4,
            state={"waiting": {"reason": "CrashLoopBackOff",
                               "message": "back-off 1m20s restarting failed container=onnxruntime "
                                          "pod=qwen3-7c9f-abcde_team-a(uid)"}},
            last={"terminated": {"exitCode": 1, "reason": "Error", "startedAt": T0, "finishedAt": T1,
                                 "message": "loading /models/artifacts/onnx-int4-1a2b\nTraceback (most recent "
                                            "call last):\n  File \"server.py\", line 10\n"
                                            "FileNotFoundError: genai_config.json"}})
    f = classify(p)
    assert f is not None and f.reason == "CrashLoopBackOff"
    assert f.message.startswith("Deployment qwen3 pod qwen3-7c9f-abcde container onnxruntime keeps crashing "
                                "(CrashLoopBackOff), last exited with code 1 (Error): ")
    assert "FileNotFoundError: genai_config.json" in f.message and "loading /models" not in f.message, "last 3 lines"
    assert f"kubectl -n {NS} logs qwen3-7c9f-abcde -c onnxruntime --previous" in f.message


def test_running_again_after_a_crash_stays_crash_loop_until_ready() -> None:
    """Between back-offs the container runs for a moment: no Degraded flapping."""
    p = pod("qwen3-7c9f-abcde", restarts=2, state={"running": {"startedAt": T1}},
            last={"terminated": {"exitCode": 2, "reason": "Error"}})
    f = classify(p)
    assert f is not None and f.reason == "CrashLoopBackOff" and "code 2 (Error)" in f.message
    p["status"]["containerStatuses"][0]["ready"] = True
    p["status"]["conditions"][2]["status"] = "True"
    assert classify(p) is None


def test_oom_killed_in_a_crash_loop_names_the_limit() -> None:
    p = pod("qwen3-7c9f-abcde", restarts=3, memory="4Gi",
            state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            last={"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
    f = classify(p)
    assert f is not None and f.reason == "OOMKilled"
    assert ("Deployment qwen3 pod qwen3-7c9f-abcde container onnxruntime was killed for using more than its "
            "memory limit 4Gi (OOMKilled, exit code 137): raise spec.resources.memory") in f.message


def test_oom_killed_quantizer_pod() -> None:
    p = pod("qwen3-quantize-1a2b-x7k2p", component="quantizer", job="qwen3-quantize-1a2b", phase="Failed",
            container="quantizer", image=QUANTIZER,
            state={"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": T0, "finishedAt": T1}})
    f = classify(p, kind="Job", name="qwen3-quantize-1a2b")
    assert f is not None and f.reason == "OOMKilled" and f.message.startswith(
        "Job qwen3-quantize-1a2b pod qwen3-quantize-1a2b-x7k2p container quantizer was killed")


def test_job_pod_exit_non_zero_quotes_the_quantizer_message() -> None:
    msg = json.dumps({"result": "Failed", "message": "download of model.safetensors failed: 403 Forbidden"})
    p = pod("qwen3-quantize-1a2b-x7k2p", component="quantizer", job="qwen3-quantize-1a2b", phase="Failed",
            container="quantizer", image=QUANTIZER,
            state={"terminated": {"exitCode": 3, "reason": "Error", "message": msg}})
    f = classify(p, kind="Job", name="qwen3-quantize-1a2b")
    assert f is not None and f.reason == "ContainerCrashing"
    assert f.message == ("Job qwen3-quantize-1a2b pod qwen3-quantize-1a2b-x7k2p container quantizer exited with "
                         "code 3 (Error): Failed: download of model.safetensors failed: 403 Forbidden; see kubectl "
                         f"-n {NS} logs qwen3-quantize-1a2b-x7k2p -c quantizer.")
    # A moment earlier the container had exited but the pod's phase was still Running: same sentence.
    p["status"]["phase"] = "Running"
    assert classify(p, kind="Job", name="qwen3-quantize-1a2b").message == f.message
    assert podfaults.failed_attempts([summarise(p)]) == 1


def test_start_error_of_a_missing_binary() -> None:
    p = pod("qwen3-quantize-1a2b-x7k2p", component="quantizer", job="qwen3-quantize-1a2b", phase="Failed",
            container="quantizer", image=QUANTIZER,
            state={"terminated": {"exitCode": 128, "reason": "StartError",
                                  "message": 'failed to create containerd task: exec: "python3": executable file '
                                             'not found in $PATH'}})
    f = classify(p, kind="Job", name="qwen3-quantize-1a2b")
    assert f is not None and f.reason == "ContainerCrashing" and "code 128 (StartError)" in f.message


def test_create_container_config_error_keeps_the_kubelet_reason() -> None:
    p = pod("qwen3-7c9f-abcde", phase="Pending",
            state={"waiting": {"reason": "CreateContainerConfigError",
                               "message": "couldn't find key api-key in Secret team-a/qwen3-api-key"}})
    f = classify(p)
    assert f is not None and f.reason == "CreateContainerConfigError"
    assert f.message == ("Deployment qwen3 pod qwen3-7c9f-abcde container onnxruntime cannot start "
                         "(CreateContainerConfigError: couldn't find key api-key in Secret team-a/qwen3-api-key).")


# -- evictions --------------------------------------------------------------------------------------

EMPTYDIR_MSG = 'Usage of EmptyDir volume "tmp" exceeds the limit "20Gi". '
EPHEMERAL_MSG = "Pod ephemeral local storage usage exceeds the total limit of containers 8Gi. "


def _evicted(name: str, message: str, **kw: Any) -> dict[str, Any]:
    conds = [{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
              "message": message.strip()},
             {"type": "Ready", "status": "False", "reason": "PodFailed"}]
    return pod(name, phase="Failed", reason="Evicted", message=message, conditions=conds,
               state={"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown"}}, **kw)


def test_evicted_for_emptydir_quotes_the_kubelet() -> None:
    f = classify(_evicted("qwen3-7c9f-abcde", EMPTYDIR_MSG))
    assert f is not None and f.reason == "Evicted"
    assert f.message == ('Deployment qwen3 pod qwen3-7c9f-abcde was evicted by the kubelet: Usage of EmptyDir '
                         'volume "tmp" exceeds the limit "20Gi".')


def test_evicted_quantizer_for_ephemeral_storage() -> None:
    p = _evicted("qwen3-quantize-1a2b-x7k2p", EPHEMERAL_MSG, component="quantizer", job="qwen3-quantize-1a2b")
    f = classify(p, kind="Job", name="qwen3-quantize-1a2b")
    assert f is not None and f.reason == "Evicted" and "exceeds the total limit of containers 8Gi" in f.message


def test_old_eviction_is_history_once_a_newer_pod_is_ready() -> None:
    old = _evicted("qwen3-7c9f-aaaaa", EMPTYDIR_MSG, created=T0)
    starting = pod("qwen3-7c9f-bbbbb", created=T1, state={"running": {"startedAt": T1}})
    assert classify(old, starting).reason == "Evicted", "the replacement is not ready yet"
    serving = pod("qwen3-7c9f-bbbbb", created=T1, ready=True, state={"running": {"startedAt": T1}})
    assert classify(old, serving) is None


# -- scheduling -------------------------------------------------------------------------------------

SCHED_MSG = ("0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint "
             "{slm.ai/real-node: }. preemption: 0/2 nodes are available: 1 No preemption victims found for "
             "incoming pod, 1 Preemption is not helpful for scheduling.")


def _unschedulable(since: str) -> dict[str, Any]:
    conds = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": SCHED_MSG,
              "lastTransitionTime": since}]
    p = pod("qwen3-7c9f-abcde", phase="Pending", conditions=conds)
    del p["status"]["containerStatuses"]
    return p


def test_unschedulable_is_a_wait_then_a_fault() -> None:
    now = datetime(2026, 3, 1, 10, 1, 0, tzinfo=UTC)
    f = classify(_unschedulable(T0), now=now)
    assert f is not None and f.reason == "Unschedulable" and not f.degraded
    assert f.recheck_after == pytest.approx(240)
    assert f.message.startswith("Deployment qwen3 pod qwen3-7c9f-abcde cannot be scheduled: 0/2 nodes are "
                                "available: 1 Insufficient cpu")
    later = classify(_unschedulable(T0), now=now + timedelta(minutes=10))
    assert later is not None and later.degraded and later.recheck_after is None
    assert f"(since {T0}); free or add capacity" in later.message


def test_the_most_actionable_pod_fault_wins() -> None:
    pull = pod("qwen3-7c9f-zzzzz", phase="Pending", created=T0,
               state={"waiting": {"reason": "ImagePullBackOff", "message": PULL_MSG}})
    f = classify(_unschedulable(T1), pull)
    assert f is not None and f.reason == "ImagePullFailed" and f.pod == "qwen3-7c9f-zzzzz"


def test_healthy_starting_and_deleted_pods_are_no_fault() -> None:
    assert classify(pod("a", ready=True, state={"running": {"startedAt": T0}})) is None
    assert classify(pod("b", phase="Pending")) is None  # ContainerCreating
    gone = pod("c", phase="Pending", state={"waiting": {"reason": "ImagePullBackOff", "message": PULL_MSG}})
    gone["metadata"]["deletionTimestamp"] = T1
    assert classify(gone) is None
    done = pod("d", component="quantizer", job="j", phase="Succeeded",
               state={"terminated": {"exitCode": 0, "reason": "Completed", "message": "{}"}})
    assert classify(done, kind="Job", name="j") is None


# -- text hygiene -----------------------------------------------------------------------------------

def test_secrets_never_reach_a_message() -> None:
    leak = ("connecting with HF_TOKEN=hf_AbCdEfGhIjKlMnOpQrStUv\n"
            "Authorization: Bearer sk-live-0123456789abcdef\n"
            'config {"api_key": "s3cr3t-value-42", "aws": "AKIAABCDEFGHIJKLMNOP"}\n'
            "and the key is correct-horse-battery")
    p = pod("qwen3-7c9f-abcde", restarts=1, state={"waiting": {"reason": "CrashLoopBackOff"}},
            last={"terminated": {"exitCode": 1, "reason": "Error", "message": leak}})
    f = child_fault("Deployment", "qwen3", [summarise(p)], secrets=["correct-horse-battery"])
    assert f is not None
    for secret in ("hf_AbCdEfGhIjKlMnOpQrStUv", "sk-live-0123456789abcdef", "s3cr3t-value-42",
                   "AKIAABCDEFGHIJKLMNOP", "correct-horse-battery"):
        assert secret not in f.message
    assert redact("token: abc123xyz") == "token: ***"


def test_tail_keeps_the_end_and_reads_quantizer_json() -> None:
    assert tail("a\n\nb\nc\nd") == "b | c | d"
    long = tail("x" * 1000, chars=50)
    assert len(long) == 50 and long.startswith("…")
    assert tail(json.dumps({"result": "GateFailed", "message": "perplexity +12% > 5%"})) == \
        "GateFailed: perplexity +12% > 5%"
    assert tail(None) == ""


def test_summary_is_compact_and_json() -> None:
    p = pod("qwen3-7c9f-abcde", phase="Pending", state={"waiting": {"reason": "ImagePullBackOff", "message": PULL_MSG}})
    s = summarise(p)
    assert json.loads(json.dumps(s)) == s
    assert s["owner"] == "qwen3" and s["component"] == "server" and "job" not in s
    assert s["containers"][0]["memoryLimit"] == "8Gi" and "env" not in json.dumps(s)
    assert len(json.dumps(s)) < len(json.dumps(p)) / 2
    healthy = summarise(pod("qwen3-7c9f-abcde", ready=True, state={"running": {"startedAt": T0}}))
    assert len(json.dumps(healthy, separators=(",", ":"))) < 400
    assert summarise({}) == {"name": "", "namespace": ""}


# -- the pod index ----------------------------------------------------------------------------------

def test_pod_index_reports_changes_only() -> None:
    cache = ChildCache()
    a = summarise(pod("qwen3-7c9f-aaaaa"))
    assert cache.put_pod(a) is True
    assert cache.put_pod(copy.deepcopy(a)) is False, "same summary: no reconcile"
    job = summarise(pod("qwen3-quantize-1a2b-x", component="quantizer", job="qwen3-quantize-1a2b"))
    cache.put_pod(job)
    assert [p["name"] for p in cache.pods(NS, "qwen3", component="server")] == ["qwen3-7c9f-aaaaa"]
    assert [p["name"] for p in cache.pods(NS, "qwen3", job="qwen3-quantize-1a2b")] == ["qwen3-quantize-1a2b-x"]
    assert cache.put_pod({"name": "stray", "namespace": NS}) is False, "no owner label: ignored"
    b = summarise(pod("qwen3-7c9f-bbbbb"))
    changed = cache.replace_pods(NS, [a, b])
    assert changed == {(NS, "qwen3")} and cache.pod_count() == 2, "the job pod went, b came"
    assert cache.replace_pods(NS, [a, b]) == set()
    assert cache.remove_pod(NS, "qwen3-7c9f-aaaaa") == "qwen3" and cache.remove_pod(NS, "nope") is None
    assert cache.replace_pods("other-ns", []) == set() and cache.pod_count() == 1


# -- the reconciler against a fake API --------------------------------------------------------------

class FakeKube:
    """Records writes; `refuse` maps kind -> (code, message) for apply/create."""

    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.refuse: dict[str, tuple[int, str]] = {}
        self.secrets: dict[str, dict[str, Any]] = {}
        self.listed: list[dict[str, Any]] = []

    def _maybe_refuse(self, obj: dict[str, Any]) -> None:
        if obj["kind"] in self.refuse:
            from lightkube.core.exceptions import ApiError
            from lightkube.models.meta_v1 import Status

            code, message = self.refuse[obj["kind"]]
            raise ApiError(status=Status(code=code, message=message, reason="Invalid"))

    async def apply(self, obj: dict[str, Any]) -> None:
        self._maybe_refuse(obj)
        self.applied.append(obj)

    async def create(self, obj: dict[str, Any]) -> bool:
        self._maybe_refuse(obj)
        self.applied.append(obj)
        return True

    async def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        return self.secrets.get(name) if kind == "Secret" else None

    async def delete(self, *a: Any) -> None:
        pass

    async def list_pods(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        return self.listed

    async def patch_status(self, name: str, namespace: str, status: dict[str, Any]) -> None:
        self.statuses.append(status)

    async def post_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)


@pytest.fixture
def world() -> Any:
    from slm_operator.reconciler import Reconciler
    from slm_operator.render import RenderContext

    body = yaml.safe_load((ROOT / "examples/qwen3-0.6b-onnx-cpu.yaml").read_text())
    body["metadata"] |= {"namespace": NS, "uid": "cr-uid", "generation": 1}
    kube, cache = FakeKube(), ChildCache()
    rec = Reconciler(kube, cache, RenderContext())  # type: ignore[arg-type]

    class World:
        pass

    w = World()
    w.body, w.kube, w.cache, w.rec = body, kube, cache, rec
    w.name = body["metadata"]["name"]

    def run() -> Any:
        out = asyncio.run(rec.reconcile(w.body))
        w.body["status"] = out.status  # returned, not written into the body: kept as the work queue does
        return out

    def cond(ctype: str) -> dict[str, Any]:
        return next(x for x in w.body["status"]["conditions"] if x["type"] == ctype)

    def live_children() -> None:
        """Make every applied object live in the cache (as the watch would)."""
        for obj in w.kube.applied:
            if obj["kind"] != "Secret":
                w.cache.put(obj["kind"], {**obj, "metadata": {**obj["metadata"], "uid": "u"}})

    w.run, w.cond, w.live_children = run, cond, live_children
    return w


def _job(w: Any) -> dict[str, Any]:
    return next(o for o in w.kube.applied if o["kind"] == "Job")


def test_quantizer_image_pull_failure_is_degraded_with_event_then_recovers(world: Any) -> None:
    w = world
    w.run()
    w.live_children()
    job = _job(w)["metadata"]["name"]
    assert w.cond("Degraded")["status"] == "False"
    stuck = pod(f"{job}-x7k2p", owner=w.name, component="quantizer", job=job, phase="Pending",
                container="quantizer", image=QUANTIZER,
                state={"waiting": {"reason": "ImagePullBackOff", "message": PULL_MSG}})
    w.cache.put_pod(summarise(stuck))
    w.run()
    deg = w.cond("Degraded")
    assert deg["status"] == "True" and deg["reason"] == "ImagePullFailed"
    assert deg["message"].startswith(f"Job {job} pod {job}-x7k2p cannot pull image {QUANTIZER}")
    assert w.cond("Ready")["reason"] == "ImagePullFailed" and w.cond("ModelReady")["reason"] == "ImagePullFailed"
    assert (w.kube.events[-1]["type"], w.kube.events[-1]["reason"]) == ("Warning", "ImagePullFailed")
    # The image gets loaded: the pod runs.
    running = pod(f"{job}-x7k2p", owner=w.name, component="quantizer", job=job, container="quantizer",
                  image=QUANTIZER, state={"running": {"startedAt": T1}}, ready=True)
    w.cache.put_pod(summarise(running))
    w.run()
    assert w.cond("Degraded")["status"] == "False" and w.cond("Progressing")["reason"] == "Quantizing"
    assert (w.kube.events[-1]["type"], w.kube.events[-1]["reason"]) == ("Normal", "Recovered")


def test_quantizer_crash_while_retrying_then_job_failure_with_exit_code(world: Any) -> None:
    w = world
    w.run()
    w.live_children()
    job_obj = _job(w)
    job = job_obj["metadata"]["name"]
    msg = "Traceback (most recent call last):\nRuntimeError: conversion failed for layer 12"
    crashed = pod(f"{job}-aaaaa", owner=w.name, component="quantizer", job=job, phase="Failed",
                  container="quantizer", image=QUANTIZER,
                  state={"terminated": {"exitCode": 1, "reason": "Error", "message": msg}})
    w.cache.put_pod(summarise(crashed))
    live = w.cache.get("Job", NS, job)
    w.run()  # the Job controller has not counted the failure yet: the pods tell
    deg = w.cond("Degraded")
    assert deg["reason"] == "ContainerCrashing" and "exited with code 1 (Error)" in deg["message"]
    assert "RuntimeError: conversion failed for layer 12" in deg["message"]
    assert deg["message"].endswith("The Job retries (1 of 3 attempts failed).")
    live["status"] = {"failed": 3, "conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
         "message": "Job has reached the specified backoff limit"}]}
    w.cache.put("Job", live)
    w.run()
    deg = w.cond("Degraded")
    assert deg["reason"] == "QuantizationFailed"
    assert deg["message"].startswith(f"Job {job} failed (BackoffLimitExceeded: Job has reached the specified "
                                     f"backoff limit): pod {job}-aaaaa container quantizer exited with code 1 (Error)")
    assert w.body["status"]["quantization"]["stage"] == "Failed"
    assert w.kube.events[-1]["reason"] == "QuantizationFailed", "a new reason while Degraded is news"


def test_gate_failure_keeps_its_reason(world: Any) -> None:
    w = world
    w.run()
    w.live_children()
    job = _job(w)["metadata"]["name"]
    gate = json.dumps({"result": "GateFailed", "message": "perplexity rose 12.0% (limit 5%)"})
    w.cache.put_pod(summarise(pod(f"{job}-aaaaa", owner=w.name, component="quantizer", job=job, phase="Failed",
                                  container="quantizer", state={"terminated": {"exitCode": 2, "message": gate}})))
    live = w.cache.get("Job", NS, job)
    live["status"] = {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
    w.cache.put("Job", live)
    w.run()
    assert w.cond("Degraded")["reason"] == "QualityGateFailed"
    assert w.cond("Degraded")["message"] == f"Job {job} failed: perplexity rose 12.0% (limit 5%)"


def _serving(w: Any) -> None:
    """Complete the Job, so the serving Deployment is applied, and make it live."""
    w.run()
    w.live_children()
    job = _job(w)["metadata"]["name"]
    live = w.cache.get("Job", NS, job)
    live["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    w.cache.put("Job", live)
    w.run()
    w.live_children()
    assert w.cache.get("Deployment", NS, w.name) is not None


def test_serving_crash_loop_and_eviction_then_recovery(world: Any) -> None:
    w = world
    _serving(w)
    dep = w.cache.get("Deployment", NS, w.name)
    dep["status"] = {"replicas": 2, "readyReplicas": 0, "conditions": [
        {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}]}
    w.cache.put("Deployment", dep)
    crash = pod(f"{w.name}-7c9f-aaaaa", owner=w.name, restarts=3,
                state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                last={"terminated": {"exitCode": 1, "reason": "Error"}})
    w.cache.put_pod(summarise(crash))
    w.run()
    assert w.cond("Degraded")["reason"] == "CrashLoopBackOff"
    assert w.cond("Available")["reason"] == "CrashLoopBackOff"
    assert w.cond("Degraded")["message"].startswith(f"Deployment {w.name} pod {w.name}-7c9f-aaaaa container")
    w.cache.remove_pod(NS, f"{w.name}-7c9f-aaaaa")
    w.cache.put_pod(summarise(_evicted(f"{w.name}-7c9f-bbbbb", EMPTYDIR_MSG, owner=w.name)))
    w.run()
    assert w.cond("Degraded")["reason"] == "Evicted" and "EmptyDir volume" in w.cond("Degraded")["message"]
    assert w.kube.events[-1]["reason"] == "Evicted"
    w.cache.put_pod(summarise(pod(f"{w.name}-7c9f-ccccc", owner=w.name, created=T1, ready=True,
                                  state={"running": {"startedAt": T1}})))
    dep["status"] = {"replicas": 2, "readyReplicas": 2, "conditions": [{"type": "Available", "status": "True"}]}
    w.cache.put("Deployment", dep)
    w.run()
    assert w.cond("Degraded")["status"] == "False" and w.cond("Ready")["status"] == "True"


def test_unschedulable_serving_pod_is_progressing_with_a_recheck(world: Any) -> None:
    w = world
    _serving(w)
    recent = (datetime.now(UTC) - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    p = _unschedulable(recent)
    p["metadata"]["labels"]["slm.ai/deployment"] = w.name
    w.cache.put_pod(summarise(p))
    out = w.run()
    assert w.cond("Degraded")["status"] == "False"
    assert w.cond("Progressing")["status"] == "True" and w.cond("Progressing")["reason"] == "Unschedulable"
    assert "Insufficient cpu" in w.cond("Progressing")["message"]
    assert out.requeue_after is not None and 200 < out.requeue_after <= 270


def test_replica_failure_of_the_deployment_is_degraded(world: Any) -> None:
    w = world
    _serving(w)
    dep = w.cache.get("Deployment", NS, w.name)
    dep["status"] = {"conditions": [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                                     "message": 'pods "x" is forbidden: violates PodSecurity "restricted:latest"'}]}
    w.cache.put("Deployment", dep)
    w.run()
    assert w.cond("Degraded")["reason"] == "FailedCreate"
    assert 'violates PodSecurity "restricted:latest"' in w.cond("Degraded")["message"]


def test_a_refused_write_is_in_status_not_only_in_the_log(world: Any) -> None:
    w = world
    w.kube.refuse["Service"] = (422, 'Service "qwen3-small" is invalid: spec.ports[0].port: Invalid value: 0: '
                                     'must be between 1 and 65535, inclusive')
    out = w.run()  # no exception: the reconcile completes and says why
    deg = w.cond("Degraded")
    assert deg["reason"] == "ApplyRejected"
    assert deg["message"].startswith(f"The API server refused to apply Service {w.name} (422): Service")
    assert "must be between 1 and 65535" in deg["message"]
    assert out.requeue_after == 60.0
    assert w.kube.events[-1]["reason"] == "ApplyRejected"
    del w.kube.refuse["Service"]
    w.run()
    assert w.cond("Degraded")["status"] == "False"


def test_a_refused_job_is_named_in_model_ready(world: Any) -> None:
    w = world
    w.kube.refuse["Job"] = (403, 'jobs.batch "x" is forbidden: exceeded quota: compute, requested: '
                                 'limits.memory=8Gi, used: limits.memory=60Gi, limited: limits.memory=64Gi')
    w.run()
    assert w.cond("Degraded")["reason"] == "ApplyRejected"
    assert w.cond("ModelReady")["reason"] == "ApplyRejected" and "exceeded quota" in w.cond("ModelReady")["message"]


def test_transient_errors_still_raise_for_the_work_queue(world: Any) -> None:
    w = world
    w.kube.refuse["Service"] = (429, "too many requests")
    with pytest.raises(Exception, match="too many requests"):
        w.run()


def test_secret_values_from_referenced_secrets_are_masked(world: Any) -> None:
    w = world
    w.body["spec"].setdefault("access", {})["apiKeySecretRef"] = {"name": "my-key", "key": "k"}
    w.kube.secrets["my-key"] = {"data": {"k": base64.b64encode(b"plain-key-value-123").decode()}}
    w.run()
    w.live_children()
    job = _job(w)["metadata"]["name"]
    w.cache.put_pod(summarise(pod(f"{job}-aaaaa", owner=w.name, component="quantizer", job=job, phase="Failed",
                                  container="quantizer", state={"terminated": {
                                      "exitCode": 1, "reason": "Error",
                                      "message": "server said: plain-key-value-123 is wrong"}})))
    w.run()
    assert "plain-key-value-123" not in json.dumps(w.body["status"])
    assert "***" in w.cond("Degraded")["message"]


# -- the pod watch --------------------------------------------------------------------------------

class _FakeClient:
    """lightkube-like: list() then watch(); the first watch ends in 410 Gone, the second in a
    connection error."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.watches = 0

    def list(self, res: Any, *, namespace: str, labels: dict[str, str]) -> WatchListing:
        self.calls.append(("list", (namespace, dict(labels))))
        return WatchListing([pod("qwen3-7c9f-aaaaa")], rv=str(100 + len(self.calls)))

    async def watch(self, res: Any, *, namespace: str, labels: dict[str, str], resource_version: str,
                    server_timeout: int) -> Any:
        from lightkube.core.exceptions import ApiError
        from lightkube.models.meta_v1 import Status

        self.calls.append(("watch", resource_version))
        self.watches += 1
        yield "MODIFIED", WatchObj(pod("qwen3-7c9f-aaaaa", state={"waiting": {"reason": "ImagePullBackOff"}}))
        if self.watches == 1:
            raise ApiError(status=Status(code=410, message="too old resource version"))
        raise ConnectionError("reset by peer")


def test_pod_watch_lists_then_watches_and_relists_after_gone_or_errors() -> None:
    from slm_operator.kube import Kube

    client = _FakeClient()
    kube = Kube(client)  # type: ignore[arg-type]
    lists: list[tuple[str | None, list[str]]] = []
    events: list[tuple[str, str]] = []
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise asyncio.CancelledError

    async def go() -> asyncio.Event:
        synced = asyncio.Event()
        with pytest.raises(asyncio.CancelledError):
            await kube.watch_pods(NS, {"app.kubernetes.io/managed-by": "slm-operator"}, summarise=summarise,
                                  on_list=lambda ns, s: lists.append((ns, [p["name"] for p in s])),
                                  on_event=lambda op, s: events.append((op, s["containers"][0]["state"]["reason"])),
                                  synced=synced, sleep=sleep)
        return synced

    synced = asyncio.run(go())
    assert synced.is_set()
    assert client.calls[0] == ("list", (NS, {"app.kubernetes.io/managed-by": "slm-operator"})), "server-side selector"
    assert client.calls[1] == ("watch", "101"), "the watch resumes from the list's resourceVersion"
    assert [c[0] for c in client.calls] == ["list", "watch", "list", "watch", "list", "watch"]
    assert lists == [(NS, ["qwen3-7c9f-aaaaa"])] * 3 and events == [("MODIFIED", "ImagePullBackOff")] * 3
    assert sleeps == [1.0, 1.0], "410 relists at once; an error waits (reset to 1 s by the event before it)"


def test_pod_events_reconcile_the_owner_only_on_change(monkeypatch: pytest.MonkeyPatch) -> None:
    from slm_operator import handlers

    enqueued: list[tuple[str, str]] = []

    class Q:
        def enqueue(self, key: tuple[str, str]) -> None:
            enqueued.append(key)

    monkeypatch.setattr(handlers.STATE, "cache", ChildCache(), raising=False)
    monkeypatch.setattr(handlers.STATE, "queue", Q(), raising=False)
    starting = summarise(pod("qwen3-7c9f-aaaaa"))
    handlers._pods_listed(NS, [starting])
    assert enqueued == [(NS, "qwen3")]
    handlers._pod_event("MODIFIED", starting)
    assert enqueued == [(NS, "qwen3")], "a routine kubelet update that changes nothing we use"
    handlers._pod_event("MODIFIED", summarise(pod("qwen3-7c9f-aaaaa", state={"waiting": {"reason": "ErrImagePull"}})))
    handlers._pod_event("DELETED", starting)
    assert enqueued == [(NS, "qwen3")] * 3
    handlers._pod_event("DELETED", starting)
    assert len(enqueued) == 3, "an unknown pod's deletion is nothing"


def test_messages_read_well_without_kubelet_text() -> None:
    bare = pod("qwen3-7c9f-abcde", phase="Pending", state={"waiting": {"reason": "ErrImagePull"}})
    assert "(ImagePullBackOff): build and load it" in classify(bare).message
    lost = pod("qwen3-7c9f-abcde", phase="Failed", reason="NodeLost", state={"running": {}})
    assert classify(lost).message == "Deployment qwen3 pod qwen3-7c9f-abcde failed (NodeLost)."
    dotted = pod("j-1", component="quantizer", job="j", phase="Failed",
                 state={"terminated": {"exitCode": 1, "reason": "Error", "message": "bad input.\n"}})
    assert "code 1 (Error): bad input; see kubectl" in classify(dotted, kind="Job", name="j").message


def test_recreated_deployment_gets_its_api_key_secret_again(world: Any) -> None:
    """Deleting an SLMDeployment garbage-collects its generated key Secret; a new one of the same
    name must get a new Secret (seen on the real node: pods waited on a missing Secret mount)."""
    w = world
    w.run()
    secrets = [o for o in w.kube.applied if o["kind"] == "Secret"]
    assert len(secrets) == 1
    w.kube.secrets[secrets[0]["metadata"]["name"]] = secrets[0]
    w.run()
    assert len([o for o in w.kube.applied if o["kind"] == "Secret"]) == 1, "created once per CR"
    # Deleted (the Secret goes with it) and created again: a new uid.
    w.kube.secrets.clear()
    w.body = {**w.body, "metadata": {**w.body["metadata"], "uid": "cr-uid-2"}, "status": {}}
    w.run()
    again = [o for o in w.kube.applied if o["kind"] == "Secret"]
    assert len(again) == 2 and again[1]["metadata"]["ownerReferences"][0]["uid"] == "cr-uid-2"


def test_gate_failure_is_final_before_the_job_condition_says_so(world: Any) -> None:
    """The quantizer exits 3 (GateFailed, a permanent code): the Job's podFailurePolicy fails it
    at once, so the reason is QualityGateFailed from the pod, not a "retrying" crash in between
    (seen on the real node: the Failed condition lags the pod by a moment)."""
    w = world
    w.run()
    w.live_children()
    job = _job(w)["metadata"]["name"]
    gate = json.dumps({"result": "GateFailed", "message": "perplexity rose 2395.3% (315.8 -> 7879.2)"})
    w.cache.put_pod(summarise(pod(f"{job}-aaaaa", owner=w.name, component="quantizer", job=job, phase="Failed",
                                  container="quantize", state={"terminated": {"exitCode": 3, "message": gate}})))
    w.run()  # the live Job has no Failed condition yet
    assert w.cond("Degraded")["reason"] == "QualityGateFailed"
    assert "retries" not in w.cond("Degraded")["message"]
    # A transient exit (1) is still reported as a crash the Job retries.
    w2_job_pod = pod(f"{job}-aaaaa", owner=w.name, component="quantizer", job=job, phase="Failed",
                     container="quantize", state={"terminated": {"exitCode": 1, "message": "{}"}})
    w.cache.put_pod(summarise(w2_job_pod))
    w.run()
    assert w.cond("Degraded")["reason"] == "ContainerCrashing"
