"""Reconcile one SLMDeployment, one way: resolve -> render -> apply what differs -> observe -> status.

Stages, each reading only what the one before it produced:

1. parse the body (InvalidSpec when the typed model refuses it);
2. resolve (resolve.resolution: sizing, a gated model, the artifact key, CPU in integers);
   a spec that does not fit stops here, with nothing rendered or written but status;
3. read what render needs from the API (the access.apiKeys consumers Secret, the limit
   store's ClusterIP from the watch cache) and render from the resolution (render.plan): the
   plan carries every child's name and path, the stages below read them there; stages 1-3 run
   once per spec (render_memo keeps their results by the body's fingerprint);
4. prepare objects (Secret, PVC, NetworkPolicies, Service), after checking the Secrets the
   spec names;
5. the artifact: the quantization Job, unless the artifact exists; its state becomes status
   through observe.observe_artifact (pure: previous status, Job, pods);
6. serving, only once the artifact is ready: Deployment, HPA, PDB, ServiceMonitor, pruning
   what is no longer wanted; observe.observe_serving (pure) reads the Deployment's state;
7. status: built from the observation, written only when it changed, and returned in the
   Outcome (the body is never written to; the work queue keeps the returned status).

Writes happen only when the live object (from the watch cache) differs from the desired one,
so a reconcile of an unchanged SLMDeployment sends no writes at all. What goes wrong shows
in status, never only in the log: a write the API server refuses (ApplyRejected), and the
pods of the Job or the Deployment failing (podfaults: a missing image, a crash, an OOM kill,
an eviction, a pod no node can take), each as a reason and a sentence naming the child.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import pydantic

from slm_operator import api, export, export_stage, hub, metrics, podfaults
from slm_operator import constants as c
from slm_operator.cache import ChildCache
from slm_operator.diff import needs_apply, parse_quantity
from slm_operator.kube import Kube, compact_child, refusal
from slm_operator.observe import (
    ArtifactView,
    ArtifactWant,
    ServingView,
    ServingWant,
    lists_pods,
    observe_artifact,
    observe_serving,
)
from slm_operator.render import Plan, RenderContext, plan
from slm_operator.render.common import ConsumerFacts
from slm_operator.render_memo import RenderMemo, fingerprint
from slm_operator.resolve import Resolved, resolution
from slm_operator.status import (
    Cond,
    Observation,
    build_status,
    resolved_observation,
    status_changed,
    status_patch,
    transitions,
)

log = logging.getLogger(__name__)

SECRET_RETRY_SECONDS = 20.0
CONSUMERS_RECHECK_SECONDS = 60.0  # how often a CR with access.apiKeys re-reads its consumers Secret
REJECTED_RETRY_SECONDS = 60.0  # a refused write may pass later (quota freed, webhook fixed)


@dataclass
class Outcome:
    """What one reconcile did: when to look again (seconds; None: on the next event), how
    many writes it sent, the writes the API server refused (sentences for status), and the
    status in force afterwards (the one written, or the unchanged previous one; None only when
    the reconcile raised before status)."""

    requeue_after: float | None = None
    writes: int = 0
    rejected: list[str] = dataclasses.field(default_factory=list)
    status: dict[str, Any] | None = None

    def again_after(self, seconds: float) -> None:
        """Ask for another reconcile within `seconds` (the earliest request wins)."""
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)


def parse(body: dict[str, Any]) -> tuple[api.SLMDeployment | None, Observation | None]:
    """Stage 1: (the typed SLMDeployment, None), or (None, an InvalidSpec observation naming the
    first field the typed model refuses)."""
    try:
        return api.SLMDeployment.model_validate(body), None
    except pydantic.ValidationError as e:
        obs = Observation(generation=body["metadata"].get("generation", 0))
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        obs.problem = Cond(True, "InvalidSpec", f"{field}: {first['msg']}. Fix the spec and re-apply.")
        return None, obs


def refused_observation(obs: Observation, r: Resolved) -> Observation:
    """Stage 2's end for a spec resolve refuses (catalog facts admission cannot see, as
    `slmctl validate` says: the fit, a gated model without a token, an unknown GPU label, a dtype
    the model family cannot run in): Degraded with resolve's reason, the model not fetched."""
    return dataclasses.replace(
        obs, problem=Cond(True, r.refusal, r.reason),
        model=Cond(False, r.refusal, "Not fetched: the model does not fit the hardware."
                   if r.refusal == "DoesNotFit" else f"Not fetched: fix {r.refusal_field} first."))


def artifact_want(p: Plan) -> ArtifactWant:
    """The artifact the plan wants, with the plan's Job name and artifact path."""
    t = p.target
    return ArtifactWant(key=t.key, fmt=t.r.format, qtype=t.r.qtype, location=p.artifact_path,
                        job=p.names["job"] if p.job is not None else None, source=t.spec.model.source,
                        claim=p.names["cache"])

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



class Reconciler:
    """The stages above over a `Kube` (API requests), a `ChildCache` (the watch's children
    and pod summaries) and the operator-wide render facts (`RenderContext`)."""

    def __init__(self, kube: Kube, cache: ChildCache, ctx: RenderContext, *, status_settle: float = 0.0) -> None:
        """`status_settle` (seconds, 0: off): how long a status that only says "in progress"
        (Ready and Degraded both False) may wait before it is written, so that a state the next
        observation replaces within that window (Job created -> running, Deployment created ->
        replicas starting) costs no write; Ready, Degraded and every other status are written at
        once. settings.OperatorConfig.status_settle_s gives the operator's value."""
        self.kube = kube
        self.cache = cache
        self.ctx = ctx
        self.status_settle = status_settle
        self._known_secrets: set[tuple[str, str, str]] = set()
        self._recorded_jobs: set[str] = set()  # Job uids already counted in the metrics
        # Jobs that finished before this process started were counted by the process that saw
        # them finish (or by none, if none ran then): a restart must not count them again.
        self._started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._status_refusals: set[tuple[str, str]] = set()  # (CR uid, message) already posted
        # (namespace, name) -> (resourceVersion, compact JSON status) of status writes the watch
        # has not delivered yet: a body older than the write starts from what was written.
        self._written: dict[tuple[str, str], tuple[int, str]] = {}
        self._deferred: dict[tuple[str, str], float] = {}  # key -> monotonic time first deferred
        self.memo = RenderMemo()  # stages 1-3 of the SLMDeployments reconciled most recently

    async def reconcile(self, body: dict[str, Any]) -> Outcome:
        """One pass over one SLMDeployment (its body from the watch; only read, never written).

        Returns the Outcome, whose `status` is the status now in force. Raises on transient
        API errors (the work queue retries with back-off); refused writes end in status."""
        out = Outcome()
        previous = self._latest_status(body)
        obs = await self._observe(body, previous, out)
        out.status = await self._write_status(body, obs, previous, out)
        return out

    def _latest_status(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body's status, or the one this operator wrote last when the body predates that
        write (its resourceVersion is older: the watch lags), so no write is sent twice."""
        meta = body["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        written = self._written.get(key)
        if written is not None:
            rv = _rv(meta.get("resourceVersion"))
            if rv is not None and rv >= written[0]:
                del self._written[key]  # the watch has caught up
            else:
                return json.loads(written[1])
        return body.get("status") or {}

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is kept for a deleted SLMDeployment."""
        self._written.pop((namespace, name), None)
        self._deferred.pop((namespace, name), None)

    async def _observe(self, body: dict[str, Any], previous: dict[str, Any], out: Outcome) -> Observation:
        """Stages 1-6: what status should say."""
        key = fingerprint(body)
        kept = self.memo.resolved(key, self.ctx.hub.endpoint)
        if kept is not None:
            cr, res = kept
        else:
            parsed, invalid = parse(body)
            if parsed is None:
                assert invalid is not None
                return invalid
            cr, res = parsed, resolution(parsed.spec, self.ctx.hub.endpoint)
            self.memo.keep_resolved(key, self.ctx.hub.endpoint, cr, res)
        meta = cr.metadata
        obs = resolved_observation(body["metadata"].get("generation", 0), res.r, meta.name, meta.namespace)
        if not res.r.fits:
            metrics.SIZING_REFUSALS.labels(engine=res.r.engine).inc()
            return refused_observation(obs, res.r)

        # access.apiKeys: read before rendering (whether a limit store is needed, which keyRef
        # Secrets to project); malformed entries are reported, the good ones keep working.
        secret_values: list[str] = []  # masked in any message quoted from a pod
        facts, consumers_missing, consumers_invalid = await self._consumers(cr, secret_values)
        if cr.spec.access.api_keys is not None:
            # The consumers Secret is not ours (no watch): look again so its edits reach status
            # (InvalidApiKeyEntry), and a consumer given a limit gets the limit store, within a minute.
            out.again_after(CONSUMERS_RECHECK_SECONDS)
        if facts.limits:
            facts = dataclasses.replace(facts, store_host=self._store_host(cr))
        ctx = dataclasses.replace(self.ctx, consumers=facts)
        p = self.memo.plan(key, ctx)
        if p is None:
            p = plan(cr, ctx, res)
            self.memo.keep_plan(key, ctx, p)

        missing = await self._check_secrets(cr, secret_values) or consumers_missing
        await self._apply_all([o for o in p.prepare if o["kind"] != "Job"], out, fresh=not previous)
        if missing:
            obs.problem = Cond(True, "SecretNotFound", missing)
            obs.model = Cond(False, "WaitingForSecret", missing)
            out.again_after(SECRET_RETRY_SECONDS)
            return self._with_rejections(obs, out)

        art = await self._artifact(p, previous, out, secret_values)
        obs.model, obs.problem = art.model, art.problem
        obs.quantization = {**obs.quantization, **art.quantization}
        if art.artifact is not None:
            obs.artifact = art.artifact
        quantize_only = not api.serving_enabled(cr.spec)
        if quantize_only:
            obs.endpoint = None  # nothing is served: no URL to hand out
        if not art.ready:
            obs.available = Cond(False, "WaitingForModel", "Quantize-only (serving.enabled is false): ready once the "
                                 "artifact passes the quality gate." if quantize_only else "The serving Deployment "
                                 "starts once the model artifact is ready.")
            return self._with_rejections(obs, out)
        exports = await export_stage.reconcile_exports(self, cr, p, previous, out)  # spec.export, after the gate
        if quantize_only:
            # The artifact is the product (status.artifact: location, size, checksum,
            # perplexities); serving objects left from when serving was on are pruned.
            await self._prune(cr, p, out)
            if export_stage.apply_to(obs, exports, quantize_only):
                return self._with_rejections(obs, out)
            obs.available = Cond(True, c.R_QUANTIZE_ONLY, "Quantize-only (serving.enabled is false): the artifact "
                                 "passed the quality gate and is ready; nothing is served.")
            return self._with_rejections(obs, out)
        export_stage.apply_to(obs, exports, quantize_only)
        serving = await self._serve(cr, p, out, secret_values)
        obs.available = serving.available
        if serving.replicas is not None:
            obs.replicas_desired, obs.replicas_ready = serving.replicas
        obs.problem = obs.problem or serving.problem
        if consumers_invalid and obs.problem is None:
            obs.problem = Cond(True, "InvalidApiKeyEntry", consumers_invalid)
        return self._with_rejections(obs, out)

    @staticmethod
    def _with_rejections(obs: Observation, out: Outcome) -> Observation:
        """A refused write outranks every other problem: nothing after it can be right."""
        if out.rejected:
            more = f" (and {len(out.rejected) - 1} more refused writes)" if len(out.rejected) > 1 else ""
            obs.problem = Cond(True, c.R_APPLY_REJECTED, out.rejected[0] + more)
            out.again_after(REJECTED_RETRY_SECONDS)
        return obs

    def _store_host(self, cr: api.SLMDeployment) -> str | None:
        """The limit store Service's ClusterIP, from the watch cache (found by its component
        label among this CR's children, not by a name made up here); None until it exists."""
        ns = cr.metadata.namespace
        for kind, name, head in self.cache.owned(ns, cr.metadata.name, cr.metadata.uid):
            if kind == "Service" and head.component == c.C_LIMITS:
                obj = self.cache.get(kind, ns, name) or {}
                ip = (obj.get("spec") or {}).get("clusterIP")
                return ip if ip and ip != "None" else None
        return None

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
        facts = ConsumerFacts(limits=limits, refs=tuple(sorted(set(asked))))  # store_host: _store_host
        if not table.rejected:
            return facts, None, None
        listed = "; ".join(f"{r.entry} ({r.reason}): {r.message}" for r in table.rejected)
        return facts, None, (f"Secret {name} (spec.access.apiKeys): {len(table.rejected)} entr"
                             f"{'y was' if len(table.rejected) == 1 else 'ies were'} rejected, the other "
                             f"consumers keep working: {listed}. Fix the entries in the Secret; the gateway "
                             "picks the change up within a minute.")

    async def _ensure_generated_secret(self, obj: dict[str, Any], out: Outcome, fresh: bool = False) -> None:
        """Create-once: the random key is written on creation and never rotated by us.

        Remembered per owner uid: a Secret garbage-collected with a deleted SLMDeployment is
        made again for a re-created one of the same name (found on a real node: its pods
        waited on a missing Secret mount). `fresh`: the SLMDeployment has no status yet (new),
        so its Secret is created without a GET first (an existing one answers 409 and is kept);
        otherwise (a restart) it is read first, so a restart sends no writes."""
        meta = obj["metadata"]
        owner = next((o.get("uid", "") for o in meta.get("ownerReferences") or []), "")
        key = (meta["namespace"], meta["name"], owner)
        if key in self._known_secrets:
            return
        if fresh or await self.kube.get("v1", "Secret", key[1], key[0]) is None:
            value = base64.b64encode(secrets.token_urlsafe(32).encode()).decode()
            data_key = (meta.get("annotations") or {}).get(c.A_GENERATED_KEY, "api-key")
            try:
                created = await self.kube.create({**obj, "data": {data_key: value}})
            except Exception as e:
                if not self._refused(e, "create", obj, out):
                    raise
                return
            if created is not False:
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

    async def _apply_all(self, objs: list[dict[str, Any]], out: Outcome, fresh: bool = False) -> None:
        """Apply each object that differs from its cached live copy (Secrets: create once; see
        _ensure_generated_secret for `fresh`), all at once: they do not depend on each other, and
        one round trip instead of one per child is most of a reconcile's time when the API server
        is slow. The server's answer goes into the cache at once, so a reconcile before the watch
        event sees the child and sends nothing. Refused writes end in `out.rejected` (in `objs`
        order); any other error is raised after every write has finished (the work queue retries)."""
        results = await asyncio.gather(*(self._apply_one(obj, out, fresh) for obj in objs), return_exceptions=True)
        error: BaseException | None = None
        for obj, result in zip(objs, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, Exception):
                if not self._refused(result, "apply", obj, out) and error is None:
                    error = result
            elif isinstance(result, BaseException):
                raise result
            elif result:
                metrics.WRITES.labels(kind=obj["kind"]).inc()
                out.writes += 1
        if error is not None:
            raise error

    async def _apply_one(self, obj: dict[str, Any], out: Outcome, fresh: bool) -> bool:
        """One child of _apply_all: True when it was written (Secrets count their own write)."""
        kind = obj["kind"]
        if kind == "Secret":
            await self._ensure_generated_secret(obj, out, fresh)
            return False
        live = self.cache.get(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
        if kind == "Job" and live is not None:
            return False  # Job templates are immutable; a new artifact key means a new Job
        if kind == "PersistentVolumeClaim" and live is not None and not self._pvc_grows(obj, live):
            return False  # never shrink a claim; other PVC fields are immutable
        if not needs_apply(obj, live):
            return False
        stored = await self.kube.apply(obj)
        if isinstance(stored, dict) and (stored.get("metadata") or {}).get("name"):
            self.cache.put(kind, compact_child(kind, stored))
        return True

    @staticmethod
    def _pvc_grows(want: dict[str, Any], live: dict[str, Any]) -> bool:
        w = parse_quantity(want["spec"]["resources"]["requests"]["storage"])
        h = parse_quantity(((live.get("spec") or {}).get("resources") or {}).get("requests", {})
                           .get("storage", "0"))
        return w is not None and h is not None and w > h
    async def _prune(self, cr: api.SLMDeployment, p: Plan, out: Outcome) -> None:
        """Delete children this CR no longer wants (an HPA turned off, an old Job)."""
        wanted = {(o["kind"], o["metadata"]["name"]) for o in p.all()}
        ns = cr.metadata.namespace
        for kind, name, head in self.cache.owned(ns, cr.metadata.name, cr.metadata.uid):
            if (kind, name) in wanted or kind == "PersistentVolumeClaim" or export.is_export_child(head.component):
                continue  # export Jobs: the export stage keeps or deletes them
            try:
                await self.kube.delete(head.api_version, kind, name, ns)
            except Exception as e:
                if not self._refused(e, "delete", {"kind": kind, "metadata": {"name": name, "namespace": ns}}, out):
                    raise
                continue
            metrics.WRITES.labels(kind=kind).inc()
            out.writes += 1
    # -- artifact ------------------------------------------------------------------------

    async def _artifact(self, p: Plan, previous: dict[str, Any], out: Outcome,
                        secret_values: list[str]) -> ArtifactView:
        """Stage 5: read the Job and its pods (watch cache; one pod list only for a finished
        Job whose pods the watch no longer has), observe, then create the Job if there is none
        and count a finished one once."""
        want = artifact_want(p)
        ns, owner = p.target.namespace, p.target.name
        job = self.cache.get("Job", ns, want.job) if want.job else None
        pods = self.cache.pods(ns, owner, job=want.job) if want.job and job is not None else []
        if lists_pods(previous, job, pods, want):
            pods = [podfaults.summarise(x) for x in await self.kube.list_pods(ns, {"job-name": want.job or ""})]
        if job is not None:  # a rerun's Job has the old one's name: its pods may linger a moment
            made = job["metadata"].get("creationTimestamp") or ""
            pods = [x for x in pods if x.get("created", made) >= made]
        view = observe_artifact(previous, job, pods, want, secrets=secret_values)
        if view.volume_full and job is not None:
            view = await self._rerun_when_claim_grew(p, job, view, out)
        if view.recheck_after is not None:
            out.again_after(view.recheck_after)
        if job is not None and view.job_outcome is not None:
            self._record_job_metrics(job, want.fmt, view.job_outcome)
        if view.create_job and p.job is not None:
            rejected = len(out.rejected)
            await self._apply_all([p.job], out)
            if len(out.rejected) > rejected:
                view = dataclasses.replace(view, model=Cond(False, c.R_APPLY_REJECTED, out.rejected[-1]),
                                           quantization={"stage": "Pending"})
        return view

    async def _rerun_when_claim_grew(self, p: Plan, job: dict[str, Any], view: ArtifactView,
                                     out: Outcome) -> ArtifactView:
        """A Job that filled the model-cache volume: once the claim holds more than when the Job
        was made (its A_CLAIM_SIZE annotation), delete the Job so that the next pass makes it
        again; while the claim is still growing, say so and look again in 10 s."""
        ns, name = p.target.namespace, p.names["cache"]
        claim = self.cache.get("PersistentVolumeClaim", ns, name) or await self.kube.get(
            "v1", "PersistentVolumeClaim", name, ns)
        made = (job["metadata"].get("annotations") or {}).get(c.A_CLAIM_SIZE)
        if claim is None or made is None:
            return view
        capacity = ((claim.get("status") or {}).get("capacity") or {}).get("storage")
        asked = claim["spec"]["resources"]["requests"]["storage"]
        if capacity and parse_quantity(capacity) > parse_quantity(made):
            await self.kube.delete("batch/v1", "Job", job["metadata"]["name"], ns)
            out.again_after(2.0)
            msg = f"The claim {name} grew from {made} to {capacity}: Job {job['metadata']['name']} reruns."
            return dataclasses.replace(view, problem=None, volume_full=False, model=Cond(False, "Quantizing", msg),
                                       quantization={"stage": "Pending", "job": job["metadata"]["name"]})
        if parse_quantity(asked) > parse_quantity(made):
            out.again_after(10.0)
            grow = f" The claim {name} is growing to {asked} (now {capacity or made}); the Job reruns then."
            problem = view.problem or view.model
            return dataclasses.replace(view, problem=dataclasses.replace(problem, message=problem.message + grow),
                                       model=dataclasses.replace(view.model, message=view.model.message + grow))
        return view

    def _record_job_metrics(self, job: dict[str, Any], fmt: str, outcome: str) -> None:
        uid = job["metadata"].get("uid", "")
        if uid in self._recorded_jobs:
            return
        self._recorded_jobs.add(uid)
        if not finished_since(job, self._started_at):
            return
        metrics.QUANTIZATION_JOBS.labels(format=fmt, outcome=outcome).inc()
        st = job.get("status") or {}
        start, end = st.get("startTime"), st.get("completionTime")
        if start and end:
            from datetime import datetime

            fmt_ts = "%Y-%m-%dT%H:%M:%SZ"
            seconds = (datetime.strptime(end, fmt_ts) - datetime.strptime(start, fmt_ts)).total_seconds()
            metrics.QUANTIZATION_SECONDS.labels(format=fmt, outcome=outcome).observe(seconds)

    # -- serving -------------------------------------------------------------------------

    async def _serve(self, cr: api.SLMDeployment, p: Plan, out: Outcome, secret_values: list[str]) -> ServingView:
        """Stage 6: apply the serving objects, prune what is no longer wanted, observe the
        Deployment (named by the plan) from the watch cache."""
        await self._apply_all(p.serve, out)
        await self._prune(cr, p, out)
        ns, name = cr.metadata.namespace, p.names["server"]
        autoscaling = cr.spec.autoscaling is not None
        view = observe_serving(
            self.cache.get("Deployment", ns, name),
            self.cache.pods(ns, cr.metadata.name, component=c.C_SERVER),
            self.cache.get("HorizontalPodAutoscaler", ns, name) if autoscaling else None,
            ServingWant(name=name, autoscaling=autoscaling, rejected=tuple(out.rejected)),
            secrets=secret_values)
        if view.recheck_after is not None:
            out.again_after(view.recheck_after)
        return view

    # -- status --------------------------------------------------------------------------

    async def _write_status(self, body: dict[str, Any], obs: Observation, old: dict[str, Any],
                            out: Outcome) -> dict[str, Any]:
        """Stage 7: the status from `obs`, patched only when it differs from `old`, with at most
        one Event for the change. Returns the status now in force (the new one, or `old`)."""
        new = build_status(obs, old)
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if not status_changed(new, old):
            self._deferred.pop(key, None)
            return old
        if self.status_settle > 0 and in_progress(new):
            now_ = time.monotonic()
            since = self._deferred.setdefault(key, now_)
            if now_ - since < self.status_settle:
                out.again_after(self.status_settle - (now_ - since))
                return old
        self._deferred.pop(key, None)
        try:
            rv = await self.kube.patch_status(meta["name"], meta["namespace"], status_patch(new, old))
        except Exception as e:
            r = refusal(e)
            if r is not None and r[0] == 404:  # deleted while we reconciled: its delete event follows
                log.info("%s/%s was deleted meanwhile; its status is not written", key[0], key[1])
                return old
            if r is not None:  # can't say it in status: say it in an Event (once per message)
                key = (meta.get("uid") or "", r[1])
                if key not in self._status_refusals:
                    self._status_refusals.add(key)
                    await self.kube.post_event(_event(body, "Warning", c.R_STATUS_REJECTED,
                                                      f"The API server refused this status ({r[0]}): {r[1]}"))
            raise
        rv_int = _rv(rv)
        if rv_int is not None:
            self._written[key] = (rv_int, json.dumps(new, separators=(",", ":")))
        out.writes += 1
        event = _transition_event(transitions(new, old), first=not old) or _reason_change_event(new, old)
        if event:
            await self.kube.post_event(_event(body, *event))
        return new


def _rv(value: Any) -> int | None:
    """A resourceVersion as an integer (etcd's revision), None when it is not one: the order
    is then unknown and nothing is compared."""
    return int(value) if isinstance(value, str) and value.isdigit() else None


def in_progress(status: dict[str, Any]) -> bool:
    """True when the status says only "in progress": Ready and Degraded both False (a state
    the next observation usually replaces within seconds)."""
    conds = {x.get("type"): x.get("status") for x in status.get("conditions") or []}
    return conds.get(c.READY) == "False" and conds.get(c.DEGRADED) == "False"


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


def finished_since(job: dict[str, Any], since: str) -> bool:
    """Whether the finished `job` (a Job body) finished at or after `since` (RFC 3339 UTC with
    seconds, as the API server writes timestamps, so the strings compare in time order).

    The finish time is status.completionTime (set on success) or the lastTransitionTime of the
    Complete or Failed condition (a failed Job has no completionTime; batch/v1 JobStatus). A Job
    without either counts as finished now (True): it is better counted once than never."""
    st = job.get("status") or {}
    times = [st.get("completionTime")] + [cond.get("lastTransitionTime") for cond in st.get("conditions") or []
                                         if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True"]
    finished = [t for t in times if t]
    return not finished or min(finished) >= since
