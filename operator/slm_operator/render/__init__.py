"""Pure render: SLMDeployment (+ facts) -> the desired child objects, in apply order.

No API calls, deterministic output. `slmctl render` prints exactly this; the reconciler
applies it. Builders live one concern per module (engines, workloads, network, scaling,
storage, monitoring).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from slm_operator import api
from slm_operator.render.common import Images, Obj, RenderContext, Target, artifact_path, child_names
from slm_operator.render.limits import limits_deployment, limits_policy, limits_secret, limits_service
from slm_operator.render.monitoring import service_monitor
from slm_operator.render.network import quantizer_policy, server_policy, service
from slm_operator.render.scaling import hpa, pdb
from slm_operator.render.storage import api_key_secret, cache_pvc
from slm_operator.render.workloads import quantize_job, serving_deployment
from slm_operator.resolve import Resolution, Resolved, needs_job, resolution

__all__ = ["Images", "Plan", "RenderContext", "plan", "render"]

KIND_ORDER = ["Secret", "PersistentVolumeClaim", "NetworkPolicy", "Service", "Job", "Deployment",
              "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor"]


@dataclass(frozen=True)
class Plan:
    """What one SLMDeployment needs: the resolution and the objects, split by stage, and the
    names and paths the builders gave them (the reconciler reads them here, never recomputes)."""

    target: Target
    prepare: list[Obj]   # safe to apply at once: Secret, PVC, policies, Service, Job
    serve: list[Obj]     # applied once the model artifact is ready: Deployment, HPA, PDB, ...
    job: Obj | None
    names: Mapping[str, str]  # child_names: server (Deployment, Service), job, cache, limits, ...
    artifact_path: str        # where the served model lives inside the serving pod

    @property
    def resolved(self) -> Resolved:
        return self.target.r

    def all(self) -> list[Obj]:
        return self.prepare + self.serve


def plan(cr: api.SLMDeployment, ctx: RenderContext | None = None, resolved: Resolution | None = None) -> Plan:
    """The children of `cr` from its resolution (resolve.resolution; resolved here when not
    given: the reconciler resolves first and passes it, `slmctl render` does not)."""
    ctx = ctx or RenderContext()
    res = resolved if resolved is not None else resolution(cr.spec, ctx.hub.endpoint)
    r = res.r
    t = Target(cr=cr, resolution=res, consumers=ctx.consumers)
    job = quantize_job(t, ctx.images.quantizer, ctx.hub) if needs_job(cr.spec, r) else None
    if not api.serving_enabled(cr.spec):
        # Quantize-only (serving.enabled: false): the volume, the Job and its egress policy; no
        # Deployment, Service, HPA, PDB, gateway limits or monitoring.
        prepare = [o for o in (cache_pvc(t), quantizer_policy(t, ctx) if job else None, job) if o]
        return Plan(target=t, prepare=prepare, serve=[], job=job, names=child_names(t.name, t.key),
                    artifact_path=artifact_path(t))
    prepare = [o for o in (api_key_secret(t), limits_secret(t), cache_pvc(t), server_policy(t, ctx),
                           quantizer_policy(t, ctx) if job else None, limits_policy(t), service(t),
                           limits_service(t), job, limits_deployment(t, ctx.images.gateway)) if o]
    image = cr.spec.engine.image or ctx.images.for_engine(r.engine)
    replicas = None if cr.spec.autoscaling else (1 if cr.spec.replicas is None else cr.spec.replicas)
    serve = [o for o in (serving_deployment(t, image, replicas, ctx.images.gateway), hpa(t), pdb(t),
                         service_monitor(t, ctx)) if o]
    return Plan(target=t, prepare=prepare, serve=serve, job=job, names=child_names(t.name, t.key),
                artifact_path=artifact_path(t))


def render(cr: api.SLMDeployment, ctx: RenderContext | None = None) -> list[Obj]:
    """Every child object, in apply order (as if the artifact were ready)."""
    objs = plan(cr, ctx).all()
    return sorted(objs, key=lambda o: KIND_ORDER.index(o["kind"]))
