"""Reconcile one SLMDeployment: plan -> apply what differs -> observe -> status.

The order follows the product: prepare objects (Secret, PVC, NetworkPolicies, Service)
first, then the quantization Job unless the artifact already exists, then — only once the
artifact is ready — the serving Deployment, HPA, PDB and ServiceMonitor. Writes happen only
when the live object (from the watch cache) differs from the desired one, so a reconcile of
an unchanged SLMDeployment sends no writes at all.

What goes wrong shows in status, never only in the log: a write the API server refuses
(ApplyRejected), and the pods of the Job or the Deployment failing (podfaults: a missing
image, a crash, an OOM kill, an eviction, a pod no node can take), each as a reason and a
sentence naming the child, read from the pod summaries the watch keeps (no request).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any

import pydantic

from slm_operator import api, hub, metrics, podfaults
from slm_operator import constants as c
from slm_operator.autoscaler import autoscaler_problem
from slm_operator.cache import ChildCache
from slm_operator.diff import needs_apply, parse_quantity
from slm_operator.kube import Kube, refusal
from slm_operator.render import Plan, RenderContext, plan
from slm_operator.render.common import ConsumerFacts, artifact_path, child_names
from slm_operator.render.workloads import QUANTIZER_PERMANENT_EXIT_CODES
from slm_operator.resolve import gated_refusal, refused
from slm_operator.status import Cond, Observation, build_status, status_changed, transitions

log = logging.getLogger(__name__)

SECRET_RETRY_SECONDS = 20.0
CONSUMERS_RECHECK_SECONDS = 60.0  # how often a CR with access.apiKeys re-reads its consumers Secret
REJECTED_RETRY_SECONDS = 60.0  # a refused write may pass later (quota freed, webhook fixed)


@dataclass
class Outcome:
    """What one reconcile did: when to look again (seconds; None: on the next event), how
    many writes it sent, and the writes the API server refused (sentences for status)."""

    requeue_after: float | None = None
    writes: int = 0
    rejected: list[str] = dataclasses.field(default_factory=list)

    def again_after(self, seconds: float) -> None:
        """Ask for another reconcile within `seconds` (the earliest request wins)."""
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)


def _job_condition(job: dict[str, Any], ctype: str) -> bool:
    return any(x.get("type") == ctype and x.get("status") == "True"
               for x in (job.get("status") or {}).get("conditions") or [])


def _job_failed_condition(job: dict[str, Any]) -> dict[str, Any]:
    return next((x for x in (job.get("status") or {}).get("conditions") or []
                 if x.get("type") == "Failed" and x.get("status") == "True"), {})


def _termination_summary(pods: list[dict[str, Any]]) -> dict[str, Any]:
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


def _artifact_facts(summary: dict[str, Any]) -> dict[str, Any]:
    """What the quantizer's termination message says about the artifact (see slm_quantizer.cli)."""
    keys = {"totalBytes": "sizeBytes", "perplexityBefore": "perplexityBefore",
            "perplexityAfter": "perplexityAfter", "increasePct": "perplexityIncreasePercent"}
    # Floats are fine in status (observations); render them as strings to keep the API integral.
    return {ours: (str(round(summary[theirs], 4)) if isinstance(summary[theirs], float) else summary[theirs])
            for theirs, ours in keys.items() if summary.get(theirs) is not None}


# Pod faults after which the Job controller starts another pod (up to backoffLimit).
_RETRIED = (podfaults.CONTAINER_CRASHING, podfaults.OOM_KILLED, podfaults.EVICTED, podfaults.POD_FAILED)


def _decoded(value: str) -> str:
    try:
        return base64.b64decode(value).decode("utf-8", "ignore").strip()
    except ValueError:
        return ""


def _key_ref_names(entries: list[tuple[str, str]]) -> set[str]:
    """The Secret names the entries' keyRef fields name (a malformed entry names none)."""
    import yaml

    out: set[str] = set()
    for _, raw in entries:
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            continue
        ref = value.get("keyRef") if isinstance(value, dict) else None
        if isinstance(ref, dict) and isinstance(ref.get("name"), str):
            out.add(ref["name"])
    return out


def _one_line(text: Any, limit: int = 400) -> str:
    s = podfaults.redact(" ".join(str(text or "").split())).rstrip(". ")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _permanently_failed(pods: list[dict[str, Any]]) -> bool:
    """True when a Job pod failed with one of the quantizer's permanent exit codes, which the
    Job's podFailurePolicy turns into FailJob (render.workloads.QUANTIZER_PERMANENT_EXIT_CODES)."""
    for pod in pods:  # restartPolicy Never: a terminated container is final whatever the phase says yet
        for ctr in pod.get("containers") or []:
            st = ctr.get("state") or {}
            if st.get("state") == "terminated" and st.get("exitCode") in QUANTIZER_PERMANENT_EXIT_CODES:
                return True
    return False


def _retries(job: dict[str, Any], pods: list[dict[str, Any]]) -> str:
    """' The Job retries (1 of 3 attempts failed).' from the failed pods (or the Job's status,
    whichever knows more) and the Job's backoffLimit; '' when no retry is left."""
    failed = max((job.get("status") or {}).get("failed") or 0, podfaults.failed_attempts(pods))
    limit = (job.get("spec") or {}).get("backoffLimit")
    if limit is None or not failed or failed > limit:
        return ""
    return f" The Job retries ({failed} of {limit + 1} attempts failed)."


def _job_failure_message(job: dict[str, Any], job_name: str, pods: list[dict[str, Any]],
                         secret_values: list[str]) -> str:
    """'Job J failed (BackoffLimitExceeded: ...): pod P container C exited with code 1 (Error): ...'"""
    cond = _job_failed_condition(job)
    why = cond.get("reason") or "Failed"
    if cond.get("message"):
        why += f": {_one_line(cond['message'], 200)}"
    detail = podfaults.pod_failure(pods, secrets=secret_values)
    if not detail:
        detail = f"see kubectl -n {job['metadata'].get('namespace', '')} logs job/{job_name}."
    return f"Job {job_name} failed ({why}): {detail}"


class Reconciler:
    def __init__(self, kube: Kube, cache: ChildCache, ctx: RenderContext) -> None:
        self.kube = kube
        self.cache = cache
        self.ctx = ctx
        self._known_secrets: set[tuple[str, str, str]] = set()
        self._recorded_jobs: set[str] = set()  # Job uids already counted in the metrics
        self._status_refusals: set[tuple[str, str]] = set()  # (CR uid, message) already posted

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

        # access.apiKeys: read before rendering (whether a limit store is needed, which keyRef
        # Secrets to project); malformed entries are reported, the good ones keep working.
        consumer_values: list[str] = []
        facts, consumers_missing, consumers_invalid = await self._consumers(cr, consumer_values)
        if cr.spec.access.api_keys is not None:
            # The consumers Secret is not ours (no watch): look again so its edits reach status
            # (InvalidApiKeyEntry), and a consumer given a limit gets the limit store, within a minute.
            out.again_after(CONSUMERS_RECHECK_SECONDS)
        p = plan(cr, dataclasses.replace(self.ctx, consumers=facts))
        r = p.resolved
        obs = Observation(generation=generation, engine=r.engine)
        obs.sizing = {k: v for k, v in {
            "tier": r.tier, "weightsBytes": r.weights_bytes, "totalBytes": r.total_bytes,
            "reason": r.reason, "contextLength": r.context_length,
            "resources": {"cpu": r.cpu, "memory": r.memory, "gpus": r.gpu_count},
        }.items() if v is not None and v != ""}
        obs.quantization = {"format": r.format, "type": r.qtype}
        obs.endpoint = f"http://{meta['name']}.{meta['namespace']}.svc:{c.API_PORT}/v1"
        gated = gated_refusal(cr.spec, self.ctx.hub.endpoint)
        if gated is not None and r.fits:
            r = refused(r, gated)

        if not r.fits:
            metrics.SIZING_REFUSALS.labels(engine=r.engine).inc()
            # Catalog facts admission cannot see (slmctl validate says the same): the fit, a gated
            # model without a token, an unknown GPU label, a dtype the model family cannot run in.
            obs.problem = Cond(True, r.refusal, r.reason)
            obs.model = Cond(False, r.refusal, "Not fetched: the model does not fit the hardware."
                             if r.refusal == "DoesNotFit" else f"Not fetched: fix {r.refusal_field} first.")
            await self._write_status(body, obs, old_status, out)
            return out

        secret_values: list[str] = []  # masked in any message quoted from a pod
        secret_values.extend(consumer_values)
        missing = await self._check_secrets(cr, secret_values) or consumers_missing
        await self._apply_all([o for o in p.prepare if o["kind"] != "Job"], out)
        if missing:
            obs.problem = Cond(True, "SecretNotFound", missing)
            obs.model = Cond(False, "WaitingForSecret", missing)
            out.again_after(SECRET_RETRY_SECONDS)
            self._note_rejections(obs, out)
            await self._write_status(body, obs, old_status, out)
            return out

        ready = await self._artifact(cr, p, obs, old_status, out, secret_values)
        if ready:
            await self._apply_all(p.serve, out)
            await self._prune(cr, p, out)
            self._observe_serving(cr, obs, out, secret_values)
            if consumers_invalid and obs.problem is None:
                obs.problem = Cond(True, "InvalidApiKeyEntry", consumers_invalid)
        else:
            obs.available = Cond(False, "WaitingForModel", "The serving Deployment starts once the model "
                                 "artifact is ready.")
        self._note_rejections(obs, out)
        await self._write_status(body, obs, old_status, out)
        return out

    @staticmethod
    def _note_rejections(obs: Observation, out: Outcome) -> None:
        """A refused write outranks every other problem: nothing after it can be right."""
        if out.rejected:
            more = f" (and {len(out.rejected) - 1} more refused writes)" if len(out.rejected) > 1 else ""
            obs.problem = Cond(True, c.R_APPLY_REJECTED, out.rejected[0] + more)
            out.again_after(REJECTED_RETRY_SECONDS)

    # -- secrets -------------------------------------------------------------------------

    async def _check_secrets(self, cr: api.SLMDeployment, values: list[str] | None = None) -> str | None:
        """None when every Secret the spec names exists with its key, else a sentence saying which
        and how to fix it. The referenced values are appended to `values` (decoded), so that
        messages quoted from pods can be checked against them."""
        ns = cr.metadata.namespace
        refs: list[tuple[str, api.SecretKeyRef]] = []
        if cr.spec.model.token_secret_ref:
            refs.append(("spec.model.tokenSecretRef", cr.spec.model.token_secret_ref))
        if cr.spec.access.api_key_secret_ref:
            refs.append(("spec.access.apiKeySecretRef", cr.spec.access.api_key_secret_ref))
        if cr.spec.model.s3_credentials_secret_ref:
            name = cr.spec.model.s3_credentials_secret_ref.name
            refs.append(("spec.model.s3CredentialsSecretRef", api.SecretKeyRef(name=name, key="AWS_ACCESS_KEY_ID")))
        # The hub CA bundle (spec.model.hub.caBundleSecretRef or the chart's hub.caBundleSecretName):
        # missing, the Job pod would sit in ContainerCreating on a failed mount.
        refs += hub.secret_refs(cr.spec.model, self.ctx.hub)
        for field, ref in refs:
            secret = await self.kube.get("v1", "Secret", ref.name, ns)
            if secret is None:
                return (f"Secret {ref.name} referenced by {field} was not found in namespace {ns}: "
                        f"create it (kubectl -n {ns} create secret generic {ref.name} "
                        f"--from-file={ref.key}=...) and the deployment resumes by itself.")
            data = secret.get("data") or {}
            if ref.key not in data:
                return (f"Secret {ref.name} referenced by {field} has no key {ref.key!r}: add the key "
                        f"or set {field}.key to an existing one.")
            if values is not None:
                values.extend(_decoded(v) for v in data.values() if isinstance(v, str))
        return None

    async def _consumers(self, cr: api.SLMDeployment,
                         values: list[str]) -> tuple[ConsumerFacts, str | None, str | None]:
        """Parse the access.apiKeys Secret with the gateway's own parser (slm_gateway.consumers).

        Returns (facts for render, a SecretNotFound sentence or None, an InvalidApiKeyEntry
        sentence naming the Secret and each rejected entry with its reason, or None). The keys
        read are appended to `values` (messages quoted from pods are masked against them)."""
        keys = cr.spec.access.api_keys
        if keys is None:
            return ConsumerFacts(), None, None
        from slm_gateway.consumers import build_table

        ns, name = cr.metadata.namespace, keys.secret_ref.name
        secret = await self.kube.get("v1", "Secret", name, ns)
        if secret is None:
            return ConsumerFacts(), (
                f"Secret {name} referenced by spec.access.apiKeys.secretRef was not found in namespace {ns}: "
                f"create it (one entry per consumer: kubectl -n {ns} create secret generic {name} "
                f"--from-literal=<consumer>=<key>) and the deployment resumes by itself."), None
        entries = [(k, _decoded(v)) for k, v in sorted((secret.get("data") or {}).items()) if isinstance(v, str)]
        entries += [(k, str(v)) for k, v in sorted((secret.get("stringData") or {}).items())]
        refs: dict[tuple[str, str], str | None] = {}
        for ref_name in sorted({r for r in _key_ref_names(entries)}):
            ref_secret = await self.kube.get("v1", "Secret", ref_name, ns)
            for k, v in ((ref_secret or {}).get("data") or {}).items():
                refs[(ref_name, k)] = _decoded(v) if isinstance(v, str) else None
        asked: list[tuple[str, str]] = []

        def read_ref(secret_name: str, key: str) -> str | None:
            asked.append((secret_name, key))
            return refs.get((secret_name, key))

        table = build_table(entries, store=True, read_ref=read_ref)
        values.extend(v for _, v in entries)
        values.extend(v for v in refs.values() if v)
        limits = any(con.limited for con in table.consumers)
        store_host = None
        if limits:
            svc = await self.kube.get("v1", "Service", child_names(cr.metadata.name, "")["limits"], ns)
            ip = ((svc or {}).get("spec") or {}).get("clusterIP")
            store_host = ip if ip and ip != "None" else None
        facts = ConsumerFacts(limits=limits, refs=tuple(sorted(set(asked))), store_host=store_host)
        if not table.rejected:
            return facts, None, None
        listed = "; ".join(f"{r.entry} ({r.reason}): {r.message}" for r in table.rejected)
        return facts, None, (f"Secret {name} (spec.access.apiKeys): {len(table.rejected)} entr"
                             f"{'y was' if len(table.rejected) == 1 else 'ies were'} rejected, the other "
                             f"consumers keep working: {listed}. Fix the entries in the Secret; the gateway "
                             "picks the change up within a minute.")

    async def _ensure_generated_secret(self, obj: dict[str, Any], out: Outcome) -> None:
        """Create-once: the random key is written on creation and never rotated by us.

        Remembered per owner uid: a Secret garbage-collected with a deleted SLMDeployment is
        made again for a re-created one of the same name (found on a real node: its pods
        waited on a missing Secret mount)."""
        meta = obj["metadata"]
        owner = next((o.get("uid", "") for o in meta.get("ownerReferences") or []), "")
        key = (meta["namespace"], meta["name"], owner)
        if key in self._known_secrets:
            return
        if await self.kube.get("v1", "Secret", key[1], key[0]) is None:
            value = base64.b64encode(secrets.token_urlsafe(32).encode()).decode()
            data_key = (meta.get("annotations") or {}).get(c.A_GENERATED_KEY, "api-key")
            try:
                await self.kube.create({**obj, "data": {data_key: value}})
            except Exception as e:
                if not self._refused(e, "create", obj, out):
                    raise
                return
            metrics.WRITES.labels(kind="Secret").inc()
            out.writes += 1
        self._known_secrets.add(key)

    @staticmethod
    def _refused(e: Exception, verb: str, obj: dict[str, Any], out: Outcome) -> bool:
        """Record a write the API server refused for good (4xx) as a sentence for status; False
        for anything else (a transient error: the caller re-raises, the work queue retries)."""
        r = refusal(e)
        if r is None:
            return False
        code, message = r
        meta = obj["metadata"]
        text = (f"The API server refused to {verb} {obj['kind']} {meta['name']} ({code}): "
                f"{podfaults.redact(' '.join(message.split()))[:600].rstrip('.')}.")
        log.warning("%s/%s: %s", meta.get("namespace"), meta["name"], text)
        out.rejected.append(text)
        return True

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
                try:
                    await self.kube.apply(obj)
                except Exception as e:
                    if not self._refused(e, "apply", obj, out):
                        raise
                    continue
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
            try:
                await self.kube.delete(obj["apiVersion"], kind, name, cr.metadata.namespace)
            except Exception as e:
                if not self._refused(e, "delete", {**obj, "kind": kind}, out):
                    raise
                continue
            metrics.WRITES.labels(kind=kind).inc()
            out.writes += 1

    # -- artifact ------------------------------------------------------------------------

    async def _artifact(self, cr: api.SLMDeployment, p: Plan, obs: Observation,
                        old_status: dict[str, Any], out: Outcome, secret_values: list[str]) -> bool:
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
            rejected = len(out.rejected)
            await self._apply_all([p.job], out)
            if len(out.rejected) > rejected:
                obs.model = Cond(False, c.R_APPLY_REJECTED, out.rejected[-1])
                obs.quantization = {**obs.quantization, "stage": "Pending"}
                return False
            obs.model = Cond(False, "Quantizing", f"Job {job_name} started: fetch, {t.r.format} "
                             f"{t.r.qtype}, verify.")
            obs.quantization = {**obs.quantization, "stage": "Pending", "job": job_name}
            return False
        if _job_condition(live, "Complete"):
            summary = _termination_summary(await self._job_pods(t.namespace, t.name, job_name))
            self._record_job_metrics(live, t.r.format, "succeeded")
            obs.artifact = {**base, "ready": True, "job": job_name, **_artifact_facts(summary)}
            obs.model = Cond(True, "ArtifactReady", f"{t.r.format} {t.r.qtype} artifact at {location}.")
            obs.quantization = {**obs.quantization, "stage": "Done", "job": job_name}
            return True
        # A pod that exited with a permanent code fails the Job at once (its podFailurePolicy);
        # the Job's Failed condition follows a moment later. Report the final reason now, not a
        # "retrying" crash in between.
        if _job_condition(live, "Failed") or _permanently_failed(self.cache.pods(t.namespace, t.name, job=job_name)):
            pods = await self._job_pods(t.namespace, t.name, job_name)
            summary = _termination_summary(pods)
            gate = summary.get("result") == "GateFailed"
            self._record_job_metrics(live, t.r.format, "quality_gate_failed" if gate else "failed")
            if gate:
                reason = "QualityGateFailed"
                detail = podfaults.redact(str(summary.get("message") or "see the Job's pod logs"),
                                          secret_values)[:400]
                msg = f"Job {job_name} failed: {detail}"
            else:
                reason = c.R_QUANTIZATION_FAILED
                msg = _job_failure_message(live, job_name, pods, secret_values)
            obs.problem = Cond(True, reason, msg)
            obs.model = Cond(False, reason, msg)
            obs.quantization = {**obs.quantization, "stage": "Failed", "job": job_name}
            return False
        running = Cond(False, "Quantizing", f"Job {job_name} is running: fetch, {t.r.format} "
                       f"{t.r.qtype}, verify.")
        obs.model = running
        obs.quantization = {**obs.quantization, "stage": "Running", "job": job_name}
        pods = self.cache.pods(t.namespace, t.name, job=job_name)
        fault = podfaults.child_fault("Job", job_name, pods, secrets=secret_values)
        if fault is not None:
            if fault.degraded and fault.reason in _RETRIED:
                fault = dataclasses.replace(fault, message=fault.message + _retries(live, pods))
            self._note_fault(fault, obs, out)
        return False

    async def _job_pods(self, namespace: str, owner: str, job_name: str) -> list[dict[str, Any]]:
        """The Job's pod summaries from the watch; one list request only if the watch has none
        (not synced yet, or pods already garbage-collected)."""
        pods = self.cache.pods(namespace, owner, job=job_name)
        if pods:
            return pods
        return [podfaults.summarise(p) for p in await self.kube.list_pods(namespace, {"job-name": job_name})]

    @staticmethod
    def _note_fault(fault: podfaults.Fault, obs: Observation, out: Outcome) -> None:
        """A fault of the Job's pods: Degraded (reason, sentence) and the reason the model is not
        ready; a wait (Unschedulable within its grace period) only the latter, which status
        shows as Progressing. Either way, look again when time alone could change it."""
        if fault.recheck_after is not None:
            out.again_after(fault.recheck_after)
        if fault.degraded and obs.problem is None:
            obs.problem = Cond(True, fault.reason, fault.message)
        obs.model = Cond(False, fault.reason, fault.message)

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

    def _observe_serving(self, cr: api.SLMDeployment, obs: Observation, out: Outcome | None = None,
                         secret_values: list[str] | None = None) -> None:
        out = out or Outcome()
        name = child_names(cr.metadata.name, "")["server"]
        dep = self.cache.get("Deployment", cr.metadata.namespace, name)
        if dep is None:
            if not any(f" Deployment {name} " in r for r in out.rejected):
                obs.available = Cond(False, "DeploymentPending", f"Deployment {name} is being created.")
            else:
                obs.available = Cond(False, c.R_APPLY_REJECTED, out.rejected[0])
            return
        spec, st = dep.get("spec") or {}, dep.get("status") or {}
        desired = spec.get("replicas", 1)
        ready = st.get("readyReplicas", 0) or 0
        obs.replicas_desired, obs.replicas_ready = desired, ready
        conds = {x.get("type"): x for x in st.get("conditions") or []}
        available = (conds.get("Available") or {}).get("status") == "True"
        if available and ready >= 1:
            obs.available = Cond(True, "MinimumReplicasAvailable", f"{ready}/{desired} replicas ready.")
        elif desired == 0:
            obs.available = Cond(False, "ScaledToZero", "replicas is 0.")
        else:
            obs.available = Cond(False, "ReplicasNotReady", f"{ready}/{desired} replicas ready: the model "
                                 "server is starting (loading weights can take minutes).")
        fault = podfaults.child_fault("Deployment", name,
                                      self.cache.pods(cr.metadata.namespace, cr.metadata.name,
                                                      component=c.C_SERVER),
                                      secrets=secret_values or ())
        if fault is not None and fault.recheck_after is not None:
            out.again_after(fault.recheck_after)
        # A fault is Degraded even while other replicas serve (a stuck rollout, one replica
        # crash-looping); a wait (Unschedulable, within its grace) only explains missing replicas.
        if fault is not None and (fault.degraded or not obs.available.status):
            if fault.degraded and obs.problem is None:
                obs.problem = Cond(True, fault.reason, fault.message)
            if not obs.available.status:
                obs.available = Cond(False, fault.reason, fault.message)
            return
        failure = conds.get("ReplicaFailure") or {}
        if failure.get("status") == "True" and obs.problem is None:
            msg = (f"Deployment {name} cannot create pods ({failure.get('reason') or 'FailedCreate'}: "
                   f"{_one_line(failure.get('message'))}).")
            obs.problem = Cond(True, c.R_FAILED_CREATE, msg)
            if not obs.available.status:
                obs.available = Cond(False, c.R_FAILED_CREATE, msg)
            return
        # An HPA that cannot read its metric holds its replicas silently: say so (its own
        # ScalingActive=False, past a grace for the first scrape and adapter relist).
        if cr.spec.autoscaling is not None and obs.problem is None:
            cause, again = autoscaler_problem(self.cache.get("HorizontalPodAutoscaler", cr.metadata.namespace, name))
            if again is not None:
                out.again_after(again)
            if cause is not None:
                obs.problem = cause
        progress = conds.get("Progressing") or {}
        if (progress.get("status") == "False" and progress.get("reason") == "ProgressDeadlineExceeded"
                and obs.problem is None):
            msg = (f"Deployment {name} made no progress within its deadline ({ready}/{desired} replicas "
                   f"ready): {_one_line(progress.get('message'))}.")
            obs.problem = Cond(True, c.R_PROGRESS_DEADLINE_EXCEEDED, msg)

    # -- status --------------------------------------------------------------------------

    async def _write_status(self, body: dict[str, Any], obs: Observation, old: dict[str, Any],
                            out: Outcome) -> None:
        new = build_status(obs, old)
        if not status_changed(new, old):
            return
        meta = body["metadata"]
        try:
            await self.kube.patch_status(meta["name"], meta["namespace"], new)
        except Exception as e:
            r = refusal(e)
            if r is not None:  # can't say it in status: say it in an Event (once per message)
                key = (meta.get("uid") or "", r[1])
                if key not in self._status_refusals:
                    self._status_refusals.add(key)
                    await self.kube.post_event(_event(body, "Warning", c.R_STATUS_REJECTED,
                                                      f"The API server refused this status ({r[0]}): {r[1]}"))
            raise
        out.writes += 1
        body["status"] = new  # later reconciles from the same cached body see it
        event = _transition_event(transitions(new, old), first=not old) or _reason_change_event(new, old)
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


def _reason_change_event(new: dict[str, Any], old: dict[str, Any] | None) -> tuple[str, str, str] | None:
    """A Warning when Degraded stays True but for a different reason (the image is there now,
    but the container crashes): a new problem is news even without a status flip."""
    def degraded(status: dict[str, Any] | None) -> dict[str, Any]:
        return next((x for x in (status or {}).get("conditions", []) or [] if x.get("type") == c.DEGRADED), {})

    now_, before = degraded(new), degraded(old)
    if now_.get("status") == "True" and before.get("status") == "True" and now_.get("reason") != before.get("reason"):
        return ("Warning", now_["reason"], now_["message"])
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
