"""Reconcile one SLMDeployment: plan -> apply what differs -> observe -> status.

The order follows the product: prepare objects (Secret, PVC, NetworkPolicies, Service)
first, then the quantization Job unless the artifact already exists, then — only once the
artifact is ready — the serving Deployment, HPA, PDB and ServiceMonitor. Writes happen only
when the live object (from the watch cache) differs from the desired one, so a reconcile of
an unchanged SLMDeployment sends no writes at all.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any

import pydantic

from slm_operator import api, metrics
from slm_operator import constants as c
from slm_operator.cache import ChildCache
from slm_operator.diff import needs_apply, parse_quantity
from slm_operator.kube import Kube
from slm_operator.render import Plan, RenderContext, plan
from slm_operator.render.common import artifact_path, child_names
from slm_operator.status import Cond, Observation, build_status, status_changed, transitions

log = logging.getLogger(__name__)

SECRET_RETRY_SECONDS = 20.0


@dataclass
class Outcome:
    requeue_after: float | None = None
    writes: int = 0


def _job_condition(job: dict[str, Any], ctype: str) -> bool:
    return any(x.get("type") == ctype and x.get("status") == "True"
               for x in (job.get("status") or {}).get("conditions") or [])


def _termination_summary(pods: list[dict[str, Any]]) -> dict[str, Any]:
    """The quantizer's JSON termination message, from the newest finished pod."""
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True):
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            msg = ((cs.get("state") or {}).get("terminated") or {}).get("message")
            if msg:
                try:
                    data = json.loads(msg)
                except ValueError:
                    return {"message": msg[:500]}
                return data if isinstance(data, dict) else {}
    return {}


def _artifact_facts(summary: dict[str, Any]) -> dict[str, Any]:
    """What the quantizer's termination message says about the artifact (see slm_quantizer.cli)."""
    keys = {"totalBytes": "sizeBytes", "perplexityBefore": "perplexityBefore",
            "perplexityAfter": "perplexityAfter", "increasePct": "perplexityIncreasePercent"}
    # Floats are fine in status (observations); render them as strings to keep the API integral.
    return {ours: (str(round(summary[theirs], 4)) if isinstance(summary[theirs], float) else summary[theirs])
            for theirs, ours in keys.items() if summary.get(theirs) is not None}


class Reconciler:
    def __init__(self, kube: Kube, cache: ChildCache, ctx: RenderContext) -> None:
        self.kube = kube
        self.cache = cache
        self.ctx = ctx
        self._known_secrets: set[tuple[str, str]] = set()
        self._recorded_jobs: set[str] = set()  # Job uids already counted in the metrics

    async def reconcile(self, body: dict[str, Any]) -> Outcome:
        meta = body["metadata"]
        generation = meta.get("generation", 0)
        old_status = body.get("status") or {}
        out = Outcome()
        try:
            cr = api.SLMDeployment.model_validate(body)
        except pydantic.ValidationError as e:
            obs = Observation(generation=generation)
            first = e.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            obs.problem = Cond(True, "InvalidSpec", f"{field}: {first['msg']}. Fix the spec and re-apply.")
            await self._write_status(body, obs, old_status, out)
            return out

        p = plan(cr, self.ctx)
        r = p.resolved
        obs = Observation(generation=generation, engine=r.engine)
        obs.sizing = {k: v for k, v in {
            "tier": r.tier, "weightsBytes": r.weights_bytes, "totalBytes": r.total_bytes,
            "reason": r.reason, "contextLength": r.context_length,
            "resources": {"cpu": r.cpu, "memory": r.memory, "gpus": r.gpu_count},
        }.items() if v is not None and v != ""}
        obs.quantization = {"format": r.format, "type": r.qtype}
        obs.endpoint = f"http://{meta['name']}.{meta['namespace']}.svc:{c.API_PORT}/v1"

        if not r.fits:
            metrics.SIZING_REFUSALS.labels(engine=r.engine).inc()
            obs.problem = Cond(True, "DoesNotFit", r.reason)
            obs.model = Cond(False, "DoesNotFit", "Not fetched: the model does not fit the hardware.")
            await self._write_status(body, obs, old_status, out)
            return out

        missing = await self._check_secrets(cr)
        await self._apply_all([o for o in p.prepare if o["kind"] != "Job"], out)
        if missing:
            obs.problem = Cond(True, "SecretNotFound", missing)
            obs.model = Cond(False, "WaitingForSecret", missing)
            out.requeue_after = SECRET_RETRY_SECONDS
            await self._write_status(body, obs, old_status, out)
            return out

        ready = await self._artifact(cr, p, obs, old_status, out)
        if ready:
            await self._apply_all(p.serve, out)
            await self._prune(cr, p, out)
            self._observe_serving(cr, obs)
        else:
            obs.available = Cond(False, "WaitingForModel", "The serving Deployment starts once the model "
                                 "artifact is ready.")
        await self._write_status(body, obs, old_status, out)
        return out

    # -- secrets -------------------------------------------------------------------------

    async def _check_secrets(self, cr: api.SLMDeployment) -> str | None:
        ns = cr.metadata.namespace
        refs: list[tuple[str, api.SecretKeyRef]] = []
        if cr.spec.model.token_secret_ref:
            refs.append(("spec.model.tokenSecretRef", cr.spec.model.token_secret_ref))
        if cr.spec.access.api_key_secret_ref:
            refs.append(("spec.access.apiKeySecretRef", cr.spec.access.api_key_secret_ref))
        if cr.spec.model.s3_credentials_secret_ref:
            name = cr.spec.model.s3_credentials_secret_ref.name
            refs.append(("spec.model.s3CredentialsSecretRef", api.SecretKeyRef(name=name, key="AWS_ACCESS_KEY_ID")))
        for field, ref in refs:
            secret = await self.kube.get("v1", "Secret", ref.name, ns)
            if secret is None:
                return (f"Secret {ref.name} referenced by {field} was not found in namespace {ns}: "
                        f"create it (kubectl -n {ns} create secret generic {ref.name} "
                        f"--from-file={ref.key}=...) and the deployment resumes by itself.")
            if ref.key not in (secret.get("data") or {}):
                return (f"Secret {ref.name} referenced by {field} has no key {ref.key!r}: add the key "
                        f"or set {field}.key to an existing one.")
        return None

    async def _ensure_generated_secret(self, obj: dict[str, Any], out: Outcome) -> None:
        """Create-once: the random key is written on creation and never rotated by us."""
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if key in self._known_secrets:
            return
        if await self.kube.get("v1", "Secret", key[1], key[0]) is None:
            value = base64.b64encode(secrets.token_urlsafe(32).encode()).decode()
            await self.kube.create({**obj, "data": {"api-key": value}})
            metrics.WRITES.labels(kind="Secret").inc()
            out.writes += 1
        self._known_secrets.add(key)

    # -- apply ---------------------------------------------------------------------------

    async def _apply_all(self, objs: list[dict[str, Any]], out: Outcome) -> None:
        for obj in objs:
            kind = obj["kind"]
            if kind == "Secret":
                await self._ensure_generated_secret(obj, out)
                continue
            live = self.cache.get(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
            if kind == "Job" and live is not None:
                continue  # Job templates are immutable; a new artifact key means a new Job
            if kind == "PersistentVolumeClaim" and live is not None and not self._pvc_grows(obj, live):
                continue  # never shrink a claim; other PVC fields are immutable
            if needs_apply(obj, live):
                await self.kube.apply(obj)
                metrics.WRITES.labels(kind=kind).inc()
                out.writes += 1

    @staticmethod
    def _pvc_grows(want: dict[str, Any], live: dict[str, Any]) -> bool:
        w = parse_quantity(want["spec"]["resources"]["requests"]["storage"])
        h = parse_quantity(((live.get("spec") or {}).get("resources") or {}).get("requests", {})
                           .get("storage", "0"))
        return w is not None and h is not None and w > h

    async def _prune(self, cr: api.SLMDeployment, p: Plan, out: Outcome) -> None:
        """Delete children this CR no longer wants (an HPA turned off, an old Job)."""
        wanted = {(o["kind"], o["metadata"]["name"]) for o in p.all()}
        for kind, obj in self.cache.owned_by(cr.metadata.namespace, cr.metadata.name, cr.metadata.uid):
            name = obj["metadata"]["name"]
            if (kind, name) in wanted or kind == "PersistentVolumeClaim":
                continue
            await self.kube.delete(obj["apiVersion"], kind, name, cr.metadata.namespace)
            metrics.WRITES.labels(kind=kind).inc()
            out.writes += 1

    # -- artifact ------------------------------------------------------------------------

    async def _artifact(self, cr: api.SLMDeployment, p: Plan, obs: Observation,
                        old_status: dict[str, Any], out: Outcome) -> bool:
        t = p.target
        location = artifact_path(t)
        base = {"key": t.key, "format": t.r.format, "type": t.r.qtype, "location": location}
        if p.job is None:
            obs.artifact = {**base, "ready": True}
            obs.model = Cond(True, "ServedFromVolume", f"Serving {cr.spec.model.source} as is.")
            obs.quantization = {**obs.quantization, "stage": "NotNeeded"}
            return True
        prev = old_status.get("artifact") or {}
        if prev.get("key") == t.key and prev.get("ready"):
            obs.artifact = prev
            obs.model = Cond(True, "ArtifactReady", f"{t.r.format} {t.r.qtype} artifact at {location}.")
            obs.quantization = {**obs.quantization, "stage": "Done", **(
                {"job": prev["job"]} if prev.get("job") else {})}
            return True
        job_name = child_names(t.name, t.key)["job"]
        live = self.cache.get("Job", t.namespace, job_name)
        if live is None:
            await self._apply_all([p.job], out)
            obs.model = Cond(False, "Quantizing", f"Job {job_name} started: fetch, {t.r.format} "
                             f"{t.r.qtype}, verify.")
            obs.quantization = {**obs.quantization, "stage": "Pending", "job": job_name}
            return False
        if _job_condition(live, "Complete"):
            summary = _termination_summary(await self.kube.list_pods(t.namespace, {"job-name": job_name}))
            self._record_job_metrics(live, t.r.format, "succeeded")
            obs.artifact = {**base, "ready": True, "job": job_name, **_artifact_facts(summary)}
            obs.model = Cond(True, "ArtifactReady", f"{t.r.format} {t.r.qtype} artifact at {location}.")
            obs.quantization = {**obs.quantization, "stage": "Done", "job": job_name}
            return True
        if _job_condition(live, "Failed"):
            summary = _termination_summary(await self.kube.list_pods(t.namespace, {"job-name": job_name}))
            gate = summary.get("result") == "GateFailed"
            self._record_job_metrics(live, t.r.format, "quality_gate_failed" if gate else "failed")
            reason = "QualityGateFailed" if gate else "QuantizationFailed"
            detail = str(summary.get("message") or "see the Job's pod logs")[:400]
            msg = f"Job {job_name} failed: {detail}"
            obs.problem = Cond(True, reason, msg)
            obs.model = Cond(False, reason, msg)
            obs.quantization = {**obs.quantization, "stage": "Failed", "job": job_name}
            return False
        obs.model = Cond(False, "Quantizing", f"Job {job_name} is running: fetch, {t.r.format} "
                         f"{t.r.qtype}, verify.")
        obs.quantization = {**obs.quantization, "stage": "Running", "job": job_name}
        return False

    def _record_job_metrics(self, job: dict[str, Any], fmt: str, outcome: str) -> None:
        uid = job["metadata"].get("uid", "")
        if uid in self._recorded_jobs:
            return
        self._recorded_jobs.add(uid)
        metrics.QUANTIZATION_JOBS.labels(format=fmt, outcome=outcome).inc()
        st = job.get("status") or {}
        start, end = st.get("startTime"), st.get("completionTime")
        if start and end:
            from datetime import datetime

            fmt_ts = "%Y-%m-%dT%H:%M:%SZ"
            seconds = (datetime.strptime(end, fmt_ts) - datetime.strptime(start, fmt_ts)).total_seconds()
            metrics.QUANTIZATION_SECONDS.labels(format=fmt, outcome=outcome).observe(seconds)

    # -- serving -------------------------------------------------------------------------

    def _observe_serving(self, cr: api.SLMDeployment, obs: Observation) -> None:
        name = child_names(cr.metadata.name, "")["server"]
        dep = self.cache.get("Deployment", cr.metadata.namespace, name)
        if dep is None:
            obs.available = Cond(False, "DeploymentPending", f"Deployment {name} is being created.")
            return
        spec, st = dep.get("spec") or {}, dep.get("status") or {}
        desired = spec.get("replicas", 1)
        ready = st.get("readyReplicas", 0) or 0
        obs.replicas_desired, obs.replicas_ready = desired, ready
        available = any(x.get("type") == "Available" and x.get("status") == "True"
                        for x in st.get("conditions") or [])
        if available and ready >= 1:
            obs.available = Cond(True, "MinimumReplicasAvailable", f"{ready}/{desired} replicas ready.")
        elif desired == 0:
            obs.available = Cond(False, "ScaledToZero", "replicas is 0.")
        else:
            obs.available = Cond(False, "ReplicasNotReady", f"{ready}/{desired} replicas ready: the model "
                                 "server is starting (loading weights can take minutes).")

    # -- status --------------------------------------------------------------------------

    async def _write_status(self, body: dict[str, Any], obs: Observation, old: dict[str, Any],
                            out: Outcome) -> None:
        new = build_status(obs, old)
        if not status_changed(new, old):
            return
        meta = body["metadata"]
        await self.kube.patch_status(meta["name"], meta["namespace"], new)
        out.writes += 1
        body["status"] = new  # later reconciles from the same cached body see it
        event = _transition_event(transitions(new, old), first=not old)
        if event:
            await self.kube.post_event(_event(body, *event))


def _transition_event(flips: list[tuple[str, str, str, str]], *, first: bool) -> tuple[str, str, str] | None:
    """At most one Event per status change: a new problem (Warning), Ready (Normal), recovery
    (Normal) or readiness lost (Warning). The first status of a new CR is no news unless bad."""
    by_type = {ctype: (status, reason, message) for ctype, status, reason, message in flips}
    deg, ready = by_type.get(c.DEGRADED), by_type.get(c.READY)
    if deg and deg[0] == "True":
        return ("Warning", deg[1], deg[2])
    if ready and ready[0] == "True":
        return ("Normal", ready[1], ready[2])
    if first:
        return None
    if deg:
        return ("Normal", "Recovered", "The earlier problem is resolved.")
    if ready:
        return ("Warning", ready[1], ready[2])
    return None


def _event(body: dict[str, Any], etype: str, reason: str, message: str) -> dict[str, Any]:
    from slm_operator.status import now

    meta = body["metadata"]
    ts = now()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": api.API_VERSION, "kind": api.KIND, "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid")},
        "type": etype,
        "reason": reason,
        "message": message[:1000],
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
        "source": {"component": c.OPERATOR_NAME},
        "reportingComponent": c.OPERATOR_NAME,
    }
