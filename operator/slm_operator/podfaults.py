"""Why a child's pods are not running: pure classification of pod status into (reason, sentence).

The operator keeps a compact summary of each pod it manages (`summarise`, a few hundred bytes
instead of the pod's several KiB) and turns the pods of one child (the quantization Job or
the serving Deployment) into at most one `Fault` (`child_fault`): a stable CamelCase reason
and a sentence that names the child, the pod and what to do. No I/O here; the reconciler
decides what the fault means for the conditions.

The strings matched are the kubelet's and the scheduler's own, from the Kubernetes source:

- image pulls, container waiting reasons (pkg/kubelet/images/types.go):
  ``ErrImagePull``, ``ImagePullBackOff``, ``InvalidImageName``, ``ErrImageNeverPull``,
  ``ImageInspectError``, ``RegistryUnavailable``; ``SignatureValidationFailed``
  (k8s.io/cri-api/pkg/errors);
- crash loops (pkg/kubelet/container/sync_result.go): ``CrashLoopBackOff``,
  ``RunContainerError``;
- container start failures (pkg/kubelet/kuberuntime/kuberuntime_container.go):
  ``CreateContainerConfigError`` (a missing Secret or key), ``CreateContainerError``,
  ``PreCreateHookError``, ``PreStartHookError``, ``PostStartHookError``;
- the container runtime's termination reasons: ``OOMKilled`` (the cgroup's OOM killer),
  ``Error`` (non-zero exit), ``StartError``/``ContainerCannotRun`` (exec failed);
- evictions (pkg/kubelet/eviction/helpers.go): pod ``status.reason`` ``Evicted`` with
  ``status.message`` such as "Usage of EmptyDir volume "tmp" exceeds the limit "20Gi". ",
  "Pod ephemeral local storage usage exceeds the total limit of containers 8Gi. ",
  "Container x exceeded its local ephemeral storage limit "1Gi". " or
  "The node was low on resource: memory. ...";
- scheduling (k8s.io/api core/v1 ``PodReasonUnschedulable``): condition ``PodScheduled``
  False with reason ``Unschedulable`` and the scheduler's message ("0/1 nodes are available:
  1 Insufficient cpu. ...").

Messages quote the kubelet and the container's termination message only after trimming
(`tail`) and redaction (`redact`): a termination message can contain anything the program
printed, so credentials that look like tokens or ``key=value`` secrets are masked, and exact
secret values the caller knows are removed as well.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slm_operator import constants as c

# -- reasons (status.conditions[].reason); stable: tests and alerts match on them -------------

IMAGE_PULL_FAILED = "ImagePullFailed"
CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
OOM_KILLED = "OOMKilled"
CONTAINER_CRASHING = "ContainerCrashing"
EVICTED = "Evicted"
POD_FAILED = "PodFailed"
UNSCHEDULABLE = "Unschedulable"
# The kubelet's own reasons for a container that cannot be created or started; used as is.
START_FAILURES = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError",
                  "PreCreateHookError", "PreStartHookError", "PostStartHookError")
REASONS = (IMAGE_PULL_FAILED, CRASH_LOOP_BACK_OFF, OOM_KILLED, CONTAINER_CRASHING, EVICTED,
           POD_FAILED, UNSCHEDULABLE, *START_FAILURES)

# Container waiting reasons that mean the image cannot be had (pkg/kubelet/images/types.go,
# k8s.io/cri-api/pkg/errors).
IMAGE_PULL_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                                "ImageInspectError", "RegistryUnavailable", "SignatureValidationFailed"})

# The kubelet alternates ErrImagePull (an attempt failed) and ImagePullBackOff (waiting to try
# again, message 'Back-off pulling image "<ref>": ErrImagePull: <error>'); status names both
# as ImagePullBackOff with the underlying error, so it does not change at every retry.
_PULL_RETRY = frozenset({"ErrImagePull", "ImagePullBackOff"})
_BACKOFF_PREFIX = re.compile(r'^\s*(?:Back-off pulling image "[^"]*":?\s*)?(?:ErrImagePull:\s*)?')

KUBELET_MESSAGE_CHARS = 300    # of a kubelet/scheduler message quoted in status
TAIL_LINES = 3                 # of a termination message quoted in status
TAIL_CHARS = 300
SUMMARY_MESSAGE_CHARS = 4096   # the kubelet's own cap on one termination message
STORED_MESSAGE_CHARS = 400     # of other kubelet/scheduler messages kept in a summary
UNSCHEDULABLE_GRACE_SECONDS = 300.0

# Lower rank = reported first when several pods of a child are unwell.
_RANK = {IMAGE_PULL_FAILED: 0, **dict.fromkeys(START_FAILURES, 1), OOM_KILLED: 2, CRASH_LOOP_BACK_OFF: 3,
         CONTAINER_CRASHING: 4, EVICTED: 5, POD_FAILED: 6, UNSCHEDULABLE: 7}

PodSummary = dict[str, Any]


@dataclass(frozen=True)
class Fault:
    """What is wrong with a child, for status.

    reason: one of `REASONS` (CamelCase, stable).
    message: one sentence naming the child kind and name and the pod, ending with what to do.
    degraded: True for a fault (condition Degraded), False for a wait that is still progress
        (an Unschedulable pod within its grace period: condition Progressing).
    pod: the pod's name.
    recheck_after: seconds after which the same pods would classify differently without any
        event (the end of the Unschedulable grace period); None when nothing is time-based.
    """

    reason: str
    message: str
    degraded: bool = True
    pod: str = ""
    recheck_after: float | None = None


# -- summaries ---------------------------------------------------------------------------------


def _cut(text: Any, limit: int) -> str:
    s = str(text or "").strip()
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _state(raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Compact container state: {"waiting": reason, "message"} or {"terminated": ...} or None."""
    if not raw:
        return None
    if raw.get("waiting") is not None:
        w = raw["waiting"] or {}
        out: dict[str, Any] = {"state": "waiting", "reason": w.get("reason") or ""}
        if w.get("message"):
            out["message"] = _cut(w["message"], STORED_MESSAGE_CHARS)
        return out
    if raw.get("terminated") is not None:
        t = raw["terminated"] or {}
        out = {"state": "terminated", "reason": t.get("reason") or "", "exitCode": t.get("exitCode")}
        if t.get("signal"):
            out["signal"] = t["signal"]
        if t.get("message"):
            out["message"] = str(t["message"])[-SUMMARY_MESSAGE_CHARS:]
        if t.get("finishedAt"):
            out["finishedAt"] = t["finishedAt"]
        return out
    if raw.get("running") is not None:
        return {"state": "running"}
    return None


def summarise(pod: Mapping[str, Any]) -> PodSummary:
    """The fields of a Pod (as the API returns it) that classification needs, nothing else.

    Returns a JSON-able dict: name, namespace, owner (label slm.ai/deployment), component,
    job (label job-name), created, deleting, phase, reason, message, ready, unschedulable
    ({message, since} while PodScheduled is False/Unschedulable) and containers (init
    containers first): name, init, image, ready, restarts, memoryLimit, state, last (each
    state: {state, reason, message, exitCode}). Empty fields are left out. Accepts partial
    pods (missing status or spec) without raising.
    """
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    spec = pod.get("spec") or {}
    st = pod.get("status") or {}
    out: PodSummary = {"name": meta.get("name", ""), "namespace": meta.get("namespace", "")}
    for key, label in (("owner", c.L_DEPLOYMENT), ("component", c.L_COMPONENT), ("job", "job-name")):
        if labels.get(label):
            out[key] = labels[label]
    if meta.get("creationTimestamp"):
        out["created"] = meta["creationTimestamp"]
    if meta.get("deletionTimestamp"):
        out["deleting"] = True
    for key in ("phase", "reason"):
        if st.get(key):
            out[key] = st[key]
    if st.get("message"):
        out["message"] = _cut(st["message"], STORED_MESSAGE_CHARS)
    conds = {x.get("type"): x for x in st.get("conditions") or []}
    if (conds.get("Ready") or {}).get("status") == "True":
        out["ready"] = True
    sched = conds.get("PodScheduled") or {}
    if sched.get("status") == "False" and sched.get("reason") == UNSCHEDULABLE:
        out["unschedulable"] = {"message": _cut(sched.get("message"), STORED_MESSAGE_CHARS),
                                "since": sched.get("lastTransitionTime") or ""}
    spec_ctrs = {x.get("name"): x for x in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]}
    ctrs = []
    for init, statuses in ((True, st.get("initContainerStatuses")), (False, st.get("containerStatuses"))):
        for cs in statuses or []:
            sc = spec_ctrs.get(cs.get("name")) or {}
            entry: dict[str, Any] = {"name": cs.get("name", "")}
            if init:
                entry["init"] = True
            image = sc.get("image") or cs.get("image")
            if image:
                entry["image"] = image
            if cs.get("ready"):
                entry["ready"] = True
            if cs.get("restartCount"):
                entry["restarts"] = cs["restartCount"]
            mem = ((sc.get("resources") or {}).get("limits") or {}).get("memory")
            if mem:
                entry["memoryLimit"] = mem
            for key, raw in (("state", cs.get("state")), ("last", cs.get("lastState"))):
                s = _state(raw)
                if s:
                    entry[key] = s
            ctrs.append(entry)
    if ctrs:
        out["containers"] = ctrs
    return out


# -- text hygiene ------------------------------------------------------------------------------

_SECRET_PATTERNS = [
    (re.compile(r"\bhf_[A-Za-z0-9]{8,}"), "hf_***"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), "sk-***"),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "AKIA***"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{6,}"), r"\1***"),
    (re.compile(r"(?i)((?:token|secret|password|passwd|api[_-]?key|access[_-]?key|authorization|credentials?)"
                r"[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]+"), r"\1***"),
]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask what looks like a credential, and every exact value in `secrets` (6+ chars).

    Patterns: Hugging Face tokens (hf_...), OpenAI-style keys (sk-...), AWS access key ids,
    "Bearer ...", and key=value / "key": "value" pairs whose key names a token, secret,
    password, API key or credential.
    """
    for value in sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True):
        text = text.replace(value, "***")
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


def tail(text: str | None, *, lines: int = TAIL_LINES, chars: int = TAIL_CHARS,
         secrets: Iterable[str] = ()) -> str:
    """The last `lines` non-empty lines of `text`, joined with " | ", at most `chars` characters
    (the end is kept), redacted. A JSON object with a "message" (the quantizer's termination
    message) gives "<result>: <message>" instead."""
    s = (text or "").strip()
    if not s:
        return ""
    if s.startswith("{"):
        try:
            data = json.loads(s)
        except ValueError:
            data = None
        if isinstance(data, dict) and data.get("message"):
            s = f"{data['result']}: {data['message']}" if data.get("result") else str(data["message"])
    kept = [ln.strip() for ln in s.splitlines() if ln.strip()][-lines:]
    out = redact(" | ".join(kept), secrets)
    return out if len(out) <= chars else "…" + out[-(chars - 1):]


def _quote(text: str | None, secrets: Iterable[str] = ()) -> str:
    """A kubelet or scheduler message, one line, trimmed, redacted, without a trailing period."""
    s = redact(" ".join((text or "").split()), secrets).rstrip(". ")
    return _cut(s, KUBELET_MESSAGE_CHARS)


# -- classification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _PodFault:
    reason: str
    text: str          # the sentence after "<Kind> <name> pod <pod> "
    terminal: bool = False
    since: str = ""    # Unschedulable: when PodScheduled became False


def _ctr_label(ctr: Mapping[str, Any]) -> str:
    return f"{'init container' if ctr.get('init') else 'container'} {ctr.get('name', '')}"


def _exit(term: Mapping[str, Any], secrets: Iterable[str]) -> str:
    """'code 1 (Error): <tail of the termination message>' for a terminated state."""
    code = term.get("exitCode")
    reason = term.get("reason") or ""
    head = f"code {code}" if code is not None else "no exit code"
    if reason:
        head += f" ({reason})"
    msg = tail(term.get("message"), secrets=secrets).rstrip(". ")
    return f"{head}: {msg}" if msg else head


def _paren(reason: str, message: str | None, secrets: Iterable[str]) -> str:
    """'(Reason: message)', or '(Reason)' without a message."""
    quoted = _quote(message, secrets)
    return f"({reason}: {quoted})" if quoted else f"({reason})"


def _logs_hint(pod: Mapping[str, Any], ctr: Mapping[str, Any], previous: bool) -> str:
    return (f"see kubectl -n {pod.get('namespace', '')} logs {pod.get('name', '')} -c {ctr.get('name', '')}"
            + (" --previous" if previous else ""))


def _exited(pod: Mapping[str, Any], ctr: Mapping[str, Any], term: Mapping[str, Any], secrets: Iterable[str]) -> str:
    """The same sentence whether the pod's phase is still Running or already Failed."""
    return f"{_ctr_label(ctr)} exited with {_exit(term, secrets)}; {_logs_hint(pod, ctr, previous=False)}."


def failed_attempts(pods: Sequence[Mapping[str, Any]]) -> int:
    """How many of a Job's pods have failed (phase Failed, or a container that exited non-zero
    before the phase caught up): the Job's status.failed, known a moment earlier."""
    return sum(1 for p in pods if p.get("phase") == "Failed" or any(
        (c.get("state") or {}).get("state") == "terminated" and (c.get("state") or {}).get("exitCode") not in (0, None)
        for c in p.get("containers") or []))


def _oom(pod: Mapping[str, Any], ctr: Mapping[str, Any], term: Mapping[str, Any]) -> _PodFault:
    limit = f" {ctr['memoryLimit']}" if ctr.get("memoryLimit") else ""
    code = term.get("exitCode")
    return _PodFault(OOM_KILLED, f"{_ctr_label(ctr)} was killed for using more than its memory limit{limit} "
                     f"(OOMKilled, exit code {code if code is not None else 137}): raise spec.resources.memory, "
                     "or serve a smaller model or quantization.")


def classify_pod(pod: Mapping[str, Any], *, restart_always: bool,
                 secrets: Iterable[str] = ()) -> _PodFault | None:
    """The fault of one pod summary, or None when it is fine or merely starting.

    restart_always: the pod restarts its containers (a Deployment's pods); False for a Job's
    pods (restartPolicy Never), where a non-zero exit is final for that pod.
    """
    if pod.get("deleting"):
        return None
    if pod.get("phase") == "Failed":
        reason = pod.get("reason") or ""
        if reason == EVICTED:
            return _PodFault(EVICTED, f"was evicted by the kubelet: {_quote(pod.get('message'), secrets)}.",
                             terminal=True)
        for ctr in pod.get("containers") or []:
            term = ctr.get("state") or {}
            if term.get("state") == "terminated" and term.get("reason") == OOM_KILLED:
                f = _oom(pod, ctr, term)
                return _PodFault(f.reason, f.text, terminal=True)
        for ctr in pod.get("containers") or []:
            term = ctr.get("state") or {}
            if term.get("state") == "terminated" and term.get("exitCode") not in (0, None):
                return _PodFault(CONTAINER_CRASHING, _exited(pod, ctr, term, secrets), terminal=True)
        if reason:
            return _PodFault(POD_FAILED, f"failed {_paren(reason, pod.get('message'), secrets)}.", terminal=True)
        detail = _quote(pod.get("message"), secrets) or "no reason given"
        return _PodFault(POD_FAILED, f"failed ({detail}).", terminal=True)
    if pod.get("phase") == "Succeeded":
        return None
    for ctr in pod.get("containers") or []:
        st, last = ctr.get("state") or {}, ctr.get("last") or {}
        wreason = st.get("reason", "") if st.get("state") == "waiting" else ""
        if wreason in IMAGE_PULL_WAITING:
            hint = ("fix the image name (chart values images.*)" if wreason == "InvalidImageName" else
                    "build and load it (make images) or set the image registry (global.imageRegistry)")
            label, message = wreason, st.get("message")
            if wreason in _PULL_RETRY:  # one stable sentence while the kubelet alternates the two
                label, message = "ImagePullBackOff", _BACKOFF_PREFIX.sub("", message or "")
            return _PodFault(IMAGE_PULL_FAILED, f"cannot pull image {ctr.get('image', '?')} "
                             f"{_paren(label, message, secrets)}: {hint}.")
        if wreason in START_FAILURES:
            return _PodFault(wreason, f"{_ctr_label(ctr)} cannot start {_paren(wreason, st.get('message'), secrets)}.")
    for ctr in pod.get("containers") or []:
        st, last = ctr.get("state") or {}, ctr.get("last") or {}
        if st.get("state") == "terminated" and st.get("exitCode") not in (0, None):
            if st.get("reason") == OOM_KILLED:
                return _oom(pod, ctr, st)
            return _PodFault(CONTAINER_CRASHING, _exited(pod, ctr, st, secrets), terminal=not restart_always)
        crashed_before = (last.get("state") == "terminated" and not ctr.get("ready")
                          and (last.get("exitCode") not in (0, None) or last.get("reason") == OOM_KILLED))
        looping = st.get("state") == "waiting" and st.get("reason") == CRASH_LOOP_BACK_OFF
        if looping or (restart_always and crashed_before and st.get("state") in ("running", "waiting")):
            if last.get("reason") == OOM_KILLED:
                return _oom(pod, ctr, last)
            if last.get("state") == "terminated":
                return _PodFault(CRASH_LOOP_BACK_OFF, f"{_ctr_label(ctr)} keeps crashing (CrashLoopBackOff), last "
                                 f"exited with {_exit(last, secrets)}; {_logs_hint(pod, ctr, previous=True)}.")
            return _PodFault(CRASH_LOOP_BACK_OFF, f"{_ctr_label(ctr)} keeps crashing (CrashLoopBackOff); "
                             f"{_logs_hint(pod, ctr, previous=True)}.")
    unsched = pod.get("unschedulable")
    if unsched:
        return _PodFault(UNSCHEDULABLE, f"cannot be scheduled: {_quote(unsched.get('message'), secrets)}",
                         since=unsched.get("since") or "")
    return None


def _parse_time(ts: str) -> datetime | None:
    try:
        return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def child_fault(kind: str, name: str, pods: Sequence[Mapping[str, Any]], *, now: datetime | None = None,
                unschedulable_grace: float = UNSCHEDULABLE_GRACE_SECONDS,
                secrets: Iterable[str] = ()) -> Fault | None:
    """The one fault to report for a child (kind "Job" or "Deployment") from its pods' summaries.

    Pods being deleted are ignored. A finished, failed pod of a Deployment (an evicted one,
    which stays listed until garbage-collected) counts only while no pod created after it is
    Ready; for a Job every failed pod counts (the caller asks only while the Job is active).
    Among several unwell pods the most actionable reason wins (image pulls first, then start
    failures, OOM kills, crash loops, exits, evictions, other failures, scheduling), then the
    newest pod. An Unschedulable pod is a wait (degraded=False, recheck_after = the rest of
    `unschedulable_grace` seconds since PodScheduled turned False) and then a fault.
    Returns None when every pod is fine or starting.
    """
    now = now or datetime.now(UTC)
    restart_always = kind != "Job"
    live = [p for p in pods if not p.get("deleting")]
    found: list[tuple[str, str, _PodFault]] = []
    for pod in live:
        f = classify_pod(pod, restart_always=restart_always, secrets=secrets)
        if f is None:
            continue
        created = pod.get("created") or ""
        if f.terminal and restart_always and any(
                q.get("ready") and (q.get("created") or "") > created for q in live):
            continue
        found.append((created, pod.get("name", ""), f))
    if not found:
        return None
    # Most actionable reason first; within a reason the newest pod, then the name (stable sorts).
    found.sort(key=lambda x: x[1])
    found.sort(key=lambda x: x[0], reverse=True)
    found.sort(key=lambda x: _RANK.get(x[2].reason, 9))
    _, pod_name, f = found[0]
    prefix = f"{kind} {name} pod {pod_name}"
    if f.reason != UNSCHEDULABLE:
        return Fault(f.reason, f"{prefix} {f.text}", pod=pod_name)
    since = _parse_time(f.since)
    waited = (now - since).total_seconds() if since else 0.0
    if waited >= unschedulable_grace:
        return Fault(UNSCHEDULABLE, f"{prefix} {f.text} (since {f.since}); free or add capacity that fits "
                     "its requests, or lower spec.resources.", pod=pod_name)
    return Fault(UNSCHEDULABLE, f"{prefix} {f.text}; waiting for a node that fits (for example from a "
                 "cluster autoscaler).", degraded=False, pod=pod_name,
                 recheck_after=max(1.0, unschedulable_grace - waited))


def _newest_first(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(pods, key=lambda p: p.get("created") or "", reverse=True)


def pod_failure(pods: Sequence[Mapping[str, Any]], *, secrets: Iterable[str] = ()) -> str:
    """For a Job that failed: 'pod P <what happened>' from its newest failed pod, or ''.

    Used after the Job's Failed condition, whatever the pods' phases (the Job controller may
    already have killed a running pod at its deadline).
    """
    failed = [p for p in pods if p.get("phase") == "Failed"] or list(pods)
    for pod in _newest_first(failed):
        f = classify_pod({**pod, "deleting": False}, restart_always=False, secrets=secrets)
        if f is not None:
            return f"pod {pod.get('name', '')} {f.text}"
    return ""


def termination_message(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """The newest non-empty termination message among pod summaries (current state first,
    then the last state), or None."""
    for pod in _newest_first(pods):
        for ctr in pod.get("containers") or []:
            for key in ("state", "last"):
                s = ctr.get(key) or {}
                if s.get("state") == "terminated" and s.get("message"):
                    return str(s["message"])
    return None
