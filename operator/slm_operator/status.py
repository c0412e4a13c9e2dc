"""Status as observation: compute conditions from what the reconciler saw (pure).

Each condition has type, status, reason (CamelCase), message (a sentence),
observedGeneration and lastTransitionTime; the time only moves when status flips, so a
reconcile that sees nothing new produces an identical status and no write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from slm_operator import constants as c

if TYPE_CHECKING:
    from slm_operator.resolve import Resolved


@dataclass
class Cond:
    status: bool
    reason: str
    message: str


@dataclass
class Observation:
    """What one reconcile learned; turned into status by `build_status`."""

    generation: int
    engine: str | None = None
    quantization: dict[str, Any] = field(default_factory=dict)
    sizing: dict[str, Any] = field(default_factory=dict)
    endpoint: str | None = None
    artifact: dict[str, Any] | None = None
    replicas_desired: int | None = None
    replicas_ready: int | None = None
    problem: Cond | None = None          # a Degraded cause (spec, secret, fit, failed job)
    model: Cond = field(default_factory=lambda: Cond(False, "Pending", "Model artifact not checked yet."))
    available: Cond = field(default_factory=lambda: Cond(False, "Pending", "Serving not started."))


def resolved_observation(generation: int, r: Resolved, name: str, namespace: str) -> Observation:
    """The observation every reconcile of a valid spec starts from: the engine, the sizing
    (status.sizing: tier, bytes, reason, context, resources) and quantization chosen by
    resolve, and the endpoint (the Service's in-cluster URL)."""
    sizing = {k: v for k, v in {
        "tier": r.tier, "weightsBytes": r.weights_bytes, "totalBytes": r.total_bytes,
        "reason": r.reason, "contextLength": r.context_length,
        "resources": {"cpu": r.cpu, "memory": r.memory, "gpus": r.gpu_count},
    }.items() if v is not None and v != ""}
    return Observation(generation=generation, engine=r.engine, sizing=sizing,
                       quantization={"format": r.format, "type": r.qtype},
                       endpoint=f"http://{name}.{namespace}.svc:{c.API_PORT}/v1")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _conditions(o: Observation) -> dict[str, Cond]:
    degraded = o.problem or Cond(False, "AsExpected", "No problems found.")
    ready = o.model.status and o.available.status and not degraded.status
    if ready:
        ready_c = Cond(True, "Ready", f"Serving at {o.endpoint}." if o.endpoint else o.available.message)
    elif degraded.status:
        ready_c = Cond(False, degraded.reason, degraded.message)
    elif not o.model.status:
        ready_c = Cond(False, o.model.reason, o.model.message)
    else:
        ready_c = Cond(False, o.available.reason, o.available.message)
    progressing = (not ready) and not degraded.status
    return {
        c.READY: ready_c,
        c.MODEL_READY: o.model,
        c.AVAILABLE: o.available,
        c.PROGRESSING: Cond(progressing, ready_c.reason if progressing else "Stable",
                            ready_c.message if progressing else "Nothing in progress."),
        c.DEGRADED: degraded,
    }


def build_status(o: Observation, previous: dict[str, Any] | None) -> dict[str, Any]:
    previous = previous or {}
    prev_conds = {x.get("type"): x for x in previous.get("conditions", []) or []}
    conditions = []
    stamp = ""  # now(), formatted once and only for a condition that needs it
    for ctype, cond in _conditions(o).items():
        status = "True" if cond.status else "False"
        old = prev_conds.get(ctype)
        since = old.get("lastTransitionTime") if old is not None and old.get("status") == status else None
        if not since:
            stamp = stamp or now()
        conditions.append({
            "type": ctype,
            "status": status,
            "reason": cond.reason,
            "message": cond.message,
            "observedGeneration": o.generation,
            "lastTransitionTime": since or stamp,
        })
    out: dict[str, Any] = {"observedGeneration": o.generation, "conditions": conditions}
    if o.engine:
        out["engine"] = o.engine
    if o.quantization:
        out["quantization"] = o.quantization
    if o.sizing:
        out["sizing"] = o.sizing
    if o.endpoint:
        out["endpoint"] = o.endpoint
    if o.artifact:
        out["artifact"] = o.artifact
    if o.replicas_desired is not None:
        ready = o.replicas_ready or 0
        out["replicas"] = {"desired": o.replicas_desired, "ready": ready,
                           "summary": f"{ready}/{o.replicas_desired}"}
    return out


def status_patch(new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that makes the status `new`: `new` itself plus null for
    each of our fields `old` has and `new` has not (a merge patch keeps keys it does not name:
    a CR switched to quantize-only would keep its old endpoint and replicas)."""
    return {**new, **{k: None for k in sorted(_OURS) if k in (old or {}) and k not in new}}


def status_changed(new: dict[str, Any], old: dict[str, Any] | None) -> bool:
    return new != {k: v for k, v in (old or {}).items() if k in new or k in _OURS}


_OURS = {"observedGeneration", "conditions", "engine", "quantization", "sizing", "endpoint",
         "artifact", "replicas"}


def transitions(new: dict[str, Any], old: dict[str, Any] | None) -> list[tuple[str, str, str, str]]:
    """(type, status, reason, message) of conditions that flipped, for Events."""
    prev = {x.get("type"): x.get("status") for x in (old or {}).get("conditions", []) or []}
    return [(x["type"], x["status"], x["reason"], x["message"]) for x in new["conditions"]
            if prev.get(x["type"]) != x["status"]]
