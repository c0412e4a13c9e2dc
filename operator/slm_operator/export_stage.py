"""The reconciler's export stage (spec.export): read the credentials Secrets and the export Job,
observe (export.observe_export, pure), create the Job, remove stale ones.

Runs once the artifact passed the quality gate (the reconciler calls it after the artifact
stage, for serving and quantize-only deployments alike). Kept apart from reconciler.py so the
reconciler only calls it; the builders and the reading of the Job's result are in export.py.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from slm_operator import api, metrics, podfaults
from slm_operator import constants as c
from slm_operator.export import ExportView, export_job, is_export_child, job_name, observe_export, secret_refs
from slm_operator.observe import job_finished
from slm_operator.status import Cond

if TYPE_CHECKING:
    from slm_operator.reconciler import Outcome, Reconciler
    from slm_operator.render import Plan

log = logging.getLogger(__name__)
SECRET_RETRY_SECONDS = 20.0
FAILED_RECHECK_SECONDS = 60.0  # after ExportFailed: look at the credentials Secrets again


async def reconcile_exports(rec: Reconciler, cr: api.SLMDeployment, p: Plan, previous: dict[str, Any],
                            out: Outcome) -> ExportView | None:
    """The exports' view for status, after creating the export Job if it is missing; None when
    spec.export is empty (export Jobs left from an earlier spec are deleted then)."""
    ns, owner = cr.metadata.namespace, cr.metadata.name
    if not cr.spec.export:
        await _delete_stale(rec, cr, None, out)
        return None
    versions: dict[str, str] = {}
    for field, name in secret_refs(cr.spec):
        secret = await rec.kube.get("v1", "Secret", name, ns)
        if secret is None:
            out.again_after(SECRET_RETRY_SECONDS)
            msg = (f"Secret {name} referenced by {field} was not found in namespace {ns}: create it and the "
                   "export starts by itself.")
            return ExportView(exports=[{"target": e.target, "result": "Pending"} for e in cr.spec.export],
                              problem=Cond(True, "SecretNotFound", msg))
        versions[name] = str((secret.get("metadata") or {}).get("resourceVersion", ""))
    name = job_name(owner, p.artifact_path, cr.spec, versions)
    job = rec.cache.get("Job", ns, name)
    pods = rec.cache.pods(ns, owner, job=name) if job is not None else []
    prev = previous.get("artifact") or {}
    settled = prev.get("exportJob") == name and all(  # status already holds the finished Job's result
        e.get("result") in ("Pushed", "AlreadyPresent", "Failed") for e in prev.get("exports") or [{}])
    if job is not None and job_finished(job) and not podfaults.termination_message(pods) and not settled:
        pods = [podfaults.summarise(x) for x in await rec.kube.list_pods(ns, {"job-name": name})]
    view = observe_export(cr.spec, job, pods, previous, p.artifact_path)
    if view.create_job:
        await rec._apply_all([export_job(p.target, rec.ctx.images.quantizer, p.artifact_path, name)], out)
    await _delete_stale(rec, cr, name, out)
    if view.recheck_after is not None:
        out.again_after(view.recheck_after)
    if view.problem is not None:  # Secrets are not watched: a fixed one is picked up within a minute
        out.again_after(FAILED_RECHECK_SECONDS)
    view.job = name
    return view


async def _delete_stale(rec: Reconciler, cr: api.SLMDeployment, keep: str | None, out: Outcome) -> None:
    """Delete this CR's export Jobs other than `keep` (and their pods, in the background)."""
    ns = cr.metadata.namespace
    for kind, name, head in rec.cache.owned(ns, cr.metadata.name, cr.metadata.uid):
        if kind != "Job" or not is_export_child(head.component) or name == keep:
            continue
        try:
            await rec.kube.delete("batch/v1", "Job", name, ns)
        except Exception as e:
            if not rec._refused(e, "delete", {"kind": "Job", "metadata": {"name": name, "namespace": ns}}, out):
                raise
            continue
        rec.cache.remove("Job", ns, name)
        metrics.WRITES.labels(kind="Job").inc()
        out.writes += 1


def apply_to(obs: Any, view: ExportView | None, quantize_only: bool) -> bool:
    """Put the exports into the observation (status.artifact.exports, status.artifact.exportJob,
    Degraded ExportFailed). Returns True when a quantize-only deployment must wait for the export
    (Available False, Exporting) before it is Ready."""
    if view is None:  # no spec.export (any more): no export entries carried over from the last status
        if obs.artifact and ("exports" in obs.artifact or "exportJob" in obs.artifact):
            obs.artifact = {k: v for k, v in obs.artifact.items() if k not in ("exports", "exportJob")}
        return False
    obs.artifact = {**(obs.artifact or {}), "exports": view.exports, "exportJob": view.job}
    if view.problem is not None and obs.problem is None:
        obs.problem = view.problem
    if quantize_only and not view.done and view.problem is None:
        obs.available = Cond(False, c.R_EXPORTING, f"Quantize-only: the artifact passed the quality gate; "
                                                   f"{view.message}.")
        return True
    return False
