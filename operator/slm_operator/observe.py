"""Observation: what the children's state says, as status pieces (pure).

Two functions, no API calls, no clock unless `now` is left out:

- `observe_artifact(previous status, Job, pods, want)`: the model artifact and the
  quantization Job (not needed, being made, made, failed, stuck on a pod fault);
- `observe_serving(Deployment, pods, HPA, want)`: the serving Deployment's replicas and faults.

The reconciler reads the objects (from the watch cache; a pod list only when the watch has
none of a finished Job's pods), calls these, and does what they ask (create the Job, count
it once, look again later). Pod summaries are podfaults.summarise's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slm_operator import constants as c
from slm_operator import podfaults
from slm_operator.autoscaler import autoscaler_problem
from slm_operator.render.workloads import QUANTIZER_PERMANENT_EXIT_CODES
from slm_operator.status import Cond

Pods = Sequence[Mapping[str, Any]]

# Pod faults after which the Job controller starts another pod (up to backoffLimit).
RETRIED = (podfaults.CONTAINER_CRASHING, podfaults.OOM_KILLED, podfaults.EVICTED, podfaults.POD_FAILED)

# Job outcomes, as counted in slm_operator_quantization_jobs_total{outcome}.
SUCCEEDED, FAILED, GATE_FAILED = "succeeded", "failed", "quality_gate_failed"


@dataclass(frozen=True)
class ArtifactWant:
    """The artifact the plan wants (render.Plan's names and paths, never recomputed).

    key: the artifact key; fmt/qtype: quantization format and type; location: the path in the
    serving pod; job: the quantization Job's name, None when the model is served from the
    user's claim as is (no Job); source: spec.model.source (for the message)."""

    key: str
    fmt: str
    qtype: str
    location: str
    job: str | None
    source: str
    claim: str = ""  # the model-cache PVC's name (named when the volume fills)


@dataclass(frozen=True)
class ArtifactView:
    """The artifact's status pieces.

    ready: the serving stage may start. model: the ModelReady condition. quantization: the
    status.quantization fields this adds (stage, job). artifact: status.artifact, or None to
    leave it out. problem: a Degraded cause or None. create_job: no Job exists yet (the caller
    creates want.job). job_outcome: SUCCEEDED/FAILED/GATE_FAILED when the Job has finished (the
    caller counts it once per Job uid). recheck_after: seconds after which time alone could
    change this view (an Unschedulable pod's grace), else None. volume_full: the Job failed
    because the model-cache volume filled (the caller reruns it once the claim is larger).
    """

    ready: bool
    model: Cond
    quantization: dict[str, Any]
    artifact: dict[str, Any] | None = None
    problem: Cond | None = None
    create_job: bool = False
    job_outcome: str | None = None
    recheck_after: float | None = None
    volume_full: bool = False


def job_condition(job: Mapping[str, Any], ctype: str) -> bool:
    """True when the Job's condition `ctype` (Complete, Failed, ...) has status True."""
    return any(x.get("type") == ctype and x.get("status") == "True"
               for x in (job.get("status") or {}).get("conditions") or [])


def job_finished(job: Mapping[str, Any]) -> bool:
    """The Job is Complete or Failed: its pods may be gone from the watch (then list them)."""
    return job_condition(job, "Complete") or job_condition(job, "Failed")


def _job_failed_condition(job: Mapping[str, Any]) -> Mapping[str, Any]:
    return next((x for x in (job.get("status") or {}).get("conditions") or []
                 if x.get("type") == "Failed" and x.get("status") == "True"), {})


def termination_summary(pods: Pods) -> dict[str, Any]:
    """The quantizer's JSON termination message, from the newest finished pod.

    pods: pod summaries (podfaults.summarise). Returns the parsed JSON object, {"message":
    <first 500 chars>} for a message that is not JSON, or {} when there is none.
    """
    msg = podfaults.termination_message(pods)
    if not msg:
        return {}
    try:
        data = json.loads(msg)
    except ValueError:
        return {"message": msg[:500]}
    return data if isinstance(data, dict) else {}


def artifact_facts(summary: Mapping[str, Any]) -> dict[str, Any]:
    """What the quantizer's termination message says about the artifact (see slm_quantizer.cli)."""
    keys = {"totalBytes": "sizeBytes", "perplexityBefore": "perplexityBefore",
            "perplexityAfter": "perplexityAfter", "increasePct": "perplexityIncreasePercent", "tool": "tool"}
    # Floats are fine in status (observations); render them as strings to keep the API integral.
    facts = {ours: (str(round(summary[theirs], 4)) if isinstance(summary[theirs], float) else summary[theirs])
             for theirs, ours in keys.items() if summary.get(theirs) is not None}
    if isinstance(summary.get("manifestSha256"), str):  # one checksum for the whole artifact
        facts["checksum"] = f"sha256:{summary['manifestSha256']}"
    return facts


def size_quantity(n_bytes: int) -> str:
    """The smallest whole Mi (below 1 GiB) or Gi quantity holding `n_bytes`: "96Mi", "3Gi"."""
    mib = -(-n_bytes // (1 << 20))
    return f"{mib}Mi" if mib < 1024 else f"{-(-mib // 1024)}Gi"


def volume_full_message(job_name: str, claim: str, summary: Mapping[str, Any]) -> str:
    """The Degraded sentence for a Job that filled its model-cache volume (the quantizer's
    DiskFull summary: bytesNeeded, its message): the claim, the quantizer's words, the size to
    ask for, and what happens next."""
    needed = summary.get("bytesNeeded")
    ask = (f"Raise spec.storage.size to at least {size_quantity(int(needed))}" if isinstance(needed, int)
           and needed > 0 else "Raise spec.storage.size")
    return (f"Job {job_name} failed: {one_line(summary.get('message'), 300)}. {ask}: the claim {claim} grows "
            "in place when its StorageClass allows volume expansion, and the quantization reruns once it "
            "has grown. No partial artifact was left; the download stays for the rerun")


def one_line(text: Any, limit: int = 400) -> str:
    """`text` on one line, secrets redacted, without a trailing full stop, at most `limit` chars."""
    s = podfaults.redact(" ".join(str(text or "").split())).rstrip(". ")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def permanently_failed(pods: Pods) -> bool:
    """True when a Job pod failed with one of the quantizer's permanent exit codes, which the
    Job's podFailurePolicy turns into FailJob (render.workloads.QUANTIZER_PERMANENT_EXIT_CODES)."""
    for pod in pods:  # restartPolicy Never: a terminated container is final whatever the phase says yet
        for ctr in pod.get("containers") or []:
            st = ctr.get("state") or {}
            if st.get("state") == "terminated" and st.get("exitCode") in QUANTIZER_PERMANENT_EXIT_CODES:
                return True
    return False


def retries(job: Mapping[str, Any], pods: Pods) -> str:
    """' The Job retries (1 of 3 attempts failed).' from the failed pods (or the Job's status,
    whichever knows more) and the Job's backoffLimit; '' when no retry is left."""
    failed = max((job.get("status") or {}).get("failed") or 0, podfaults.failed_attempts(pods))
    limit = (job.get("spec") or {}).get("backoffLimit")
    if limit is None or not failed or failed > limit:
        return ""
    return f" The Job retries ({failed} of {limit + 1} attempts failed)."


def job_failure_message(job: Mapping[str, Any], job_name: str, pods: Pods, secret_values: Iterable[str]) -> str:
    """'Job J failed (BackoffLimitExceeded: ...): pod P container C exited with code 1 (Error): ...'"""
    cond = _job_failed_condition(job)
    why = cond.get("reason") or "Failed"
    if cond.get("message"):
        why += f": {one_line(cond['message'], 200)}"
    detail = podfaults.pod_failure(pods, secrets=secret_values)
    if not detail:
        detail = f"see kubectl -n {job['metadata'].get('namespace', '')} logs job/{job_name}."
    return f"Job {job_name} failed ({why}): {detail}"


def _already_ready(previous: Mapping[str, Any], want: ArtifactWant) -> bool:
    prev = previous.get("artifact") or {}
    return bool(prev.get("key") == want.key and prev.get("ready"))


def lists_pods(previous: Mapping[str, Any], job: Mapping[str, Any] | None, pods: Pods, want: ArtifactWant) -> bool:
    """Whether the caller should list the Job's pods from the API before `observe_artifact`:
    the watch has none of them, and the Job has finished with a result not in status yet (its
    termination message says why; its pods may be garbage-collected from the watch already)."""
    return (want.job is not None and job is not None and not pods and job_finished(job)
            and not _already_ready(previous, want))


def observe_artifact(previous: Mapping[str, Any], job: Mapping[str, Any] | None, pods: Pods,
                     want: ArtifactWant, *, secrets: Iterable[str] = (),
                     now: datetime | None = None) -> ArtifactView:
    """The artifact's status from the previous status (an artifact once ready for this key
    stays ready: its Job may be gone), the quantization Job (None: not created yet) and the
    Job's pod summaries. `secrets`: values masked in messages quoted from pods; `now`: for the
    Unschedulable grace (default: the clock)."""
    base = {"key": want.key, "format": want.fmt, "type": want.qtype, "location": want.location}
    ready_model = Cond(True, "ArtifactReady", f"{want.fmt} {want.qtype} artifact at {want.location}.")
    if want.job is None:
        return ArtifactView(ready=True, artifact={**base, "ready": True}, quantization={"stage": "NotNeeded"},
                            model=Cond(True, "ServedFromVolume", f"Serving {want.source} as is."))
    if _already_ready(previous, want):
        prev = previous["artifact"]
        return ArtifactView(ready=True, artifact=dict(prev), model=ready_model,
                            quantization={"stage": "Done", **({"job": prev["job"]} if prev.get("job") else {})})
    name = want.job
    if job is None:
        return ArtifactView(ready=False, create_job=True, quantization={"stage": "Pending", "job": name},
                            model=Cond(False, "Quantizing", f"Job {name} started: fetch, {want.fmt} "
                                       f"{want.qtype}, verify."))
    if job_condition(job, "Complete"):
        summary = termination_summary(pods)
        return ArtifactView(ready=True, artifact={**base, "ready": True, "job": name, **artifact_facts(summary)},
                            model=ready_model, quantization={"stage": "Done", "job": name}, job_outcome=SUCCEEDED)
    # A pod that exited with a permanent code fails the Job at once (its podFailurePolicy); the
    # Job's Failed condition follows a moment later. Report the final reason now, not a
    # "retrying" crash in between.
    if job_condition(job, "Failed") or permanently_failed(pods):
        summary = termination_summary(pods)
        if summary.get("result") == "GateFailed":
            reason, outcome = "QualityGateFailed", GATE_FAILED
            detail = podfaults.redact(str(summary.get("message") or "see the Job's pod logs"), secrets)[:400]
            msg = f"Job {name} failed: {detail}"
        elif summary.get("result") == "DiskFull":
            msg = volume_full_message(name, want.claim, summary)
            return ArtifactView(ready=False, problem=Cond(True, c.R_INSUFFICIENT_STORAGE, msg),
                                model=Cond(False, c.R_INSUFFICIENT_STORAGE, msg),
                                quantization={"stage": "Failed", "job": name}, job_outcome=FAILED,
                                volume_full=True)
        else:
            reason, outcome = c.R_QUANTIZATION_FAILED, FAILED
            msg = job_failure_message(job, name, pods, secrets)
        return ArtifactView(ready=False, problem=Cond(True, reason, msg), model=Cond(False, reason, msg),
                            quantization={"stage": "Failed", "job": name}, job_outcome=outcome)
    running = ArtifactView(ready=False, quantization={"stage": "Running", "job": name},
                           model=Cond(False, "Quantizing", f"Job {name} is running: fetch, {want.fmt} "
                                      f"{want.qtype}, verify."))
    fault = podfaults.child_fault("Job", name, pods, secrets=secrets, now=now)
    if fault is None:
        return running
    if fault.degraded and fault.reason in RETRIED:
        fault = dataclasses.replace(fault, message=fault.message + retries(job, pods))
    # A fault of the Job's pods: Degraded (reason, sentence) and the reason the model is not
    # ready; a wait (Unschedulable within its grace period) only the latter, which status shows
    # as Progressing.
    return dataclasses.replace(running, model=Cond(False, fault.reason, fault.message),
                               problem=Cond(True, fault.reason, fault.message) if fault.degraded else None,
                               recheck_after=fault.recheck_after)


@dataclass(frozen=True)
class ServingWant:
    """The serving Deployment the plan wants: its name (render.Plan.names["server"]), whether
    spec.autoscaling is set (then its HPA is read), and the refused writes of this reconcile
    (sentences; one naming the Deployment explains why it is missing)."""

    name: str
    autoscaling: bool = False
    rejected: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServingView:
    """The serving Deployment's status pieces: the Available condition, a Degraded cause or
    None, (desired, ready) replicas or None when there is no Deployment yet, and the seconds
    after which time alone could change this view (None: only an event)."""

    available: Cond
    problem: Cond | None = None
    replicas: tuple[int, int] | None = None
    recheck_after: float | None = None


def _earliest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def observe_serving(dep: Mapping[str, Any] | None, pods: Pods, hpa: Mapping[str, Any] | None,
                    want: ServingWant, *, secrets: Iterable[str] = (),
                    now: datetime | None = None) -> ServingView:
    """The serving Deployment's status from the Deployment (None: not there yet), its pods'
    summaries and its HPA (read only with autoscaling). The Degraded cause, in order: a pod
    fault, ReplicaFailure (FailedCreate), an HPA that cannot read its metric, a rollout past its
    progress deadline."""
    name = want.name
    if dep is None:
        refused = next((r for r in want.rejected if f" Deployment {name} " in r), None)
        if refused is not None:
            return ServingView(available=Cond(False, c.R_APPLY_REJECTED, refused))
        return ServingView(available=Cond(False, "DeploymentPending", f"Deployment {name} is being created."))
    spec, st = dep.get("spec") or {}, dep.get("status") or {}
    desired = spec.get("replicas", 1)
    ready = st.get("readyReplicas", 0) or 0
    conds = {x.get("type"): x for x in st.get("conditions") or []}
    if (conds.get("Available") or {}).get("status") == "True" and ready >= 1:
        available = Cond(True, "MinimumReplicasAvailable", f"{ready}/{desired} replicas ready.")
    elif desired == 0:
        available = Cond(False, "ScaledToZero", "replicas is 0.")
    else:
        available = Cond(False, "ReplicasNotReady", f"{ready}/{desired} replicas ready: the model "
                         "server is starting (loading weights can take minutes).")
    view = ServingView(available=available, replicas=(desired, ready))
    fault = podfaults.child_fault("Deployment", name, pods, secrets=secrets, now=now)
    if fault is not None:
        view = dataclasses.replace(view, recheck_after=fault.recheck_after)
    # A fault is Degraded even while other replicas serve (a stuck rollout, one replica
    # crash-looping); a wait (Unschedulable, within its grace) only explains missing replicas.
    if fault is not None and (fault.degraded or not available.status):
        return dataclasses.replace(
            view, problem=Cond(True, fault.reason, fault.message) if fault.degraded else None,
            available=available if available.status else Cond(False, fault.reason, fault.message))
    failure = conds.get("ReplicaFailure") or {}
    if failure.get("status") == "True":
        msg = (f"Deployment {name} cannot create pods ({failure.get('reason') or 'FailedCreate'}: "
               f"{one_line(failure.get('message'))}).")
        return dataclasses.replace(view, problem=Cond(True, c.R_FAILED_CREATE, msg),
                                   available=available if available.status else Cond(False, c.R_FAILED_CREATE, msg))
    # An HPA that cannot read its metric holds its replicas silently: say so (its own
    # ScalingActive=False, past a grace for the first scrape and adapter relist).
    if want.autoscaling:
        cause, again = autoscaler_problem(dict(hpa) if hpa is not None else None, now)
        view = dataclasses.replace(view, recheck_after=_earliest(view.recheck_after, again))
        if cause is not None:
            return dataclasses.replace(view, problem=cause)
    progress = conds.get("Progressing") or {}
    if progress.get("status") == "False" and progress.get("reason") == "ProgressDeadlineExceeded":
        msg = (f"Deployment {name} made no progress within its deadline ({ready}/{desired} replicas "
               f"ready): {one_line(progress.get('message'))}.")
        return dataclasses.replace(view, problem=Cond(True, c.R_PROGRESS_DEADLINE_EXCEEDED, msg))
    return view
