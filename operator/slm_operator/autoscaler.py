"""What the HorizontalPodAutoscaler's own conditions say about its metrics.

An HPA whose metric nobody serves (no prometheus-adapter rule, no dcgm-exporter, a label off by
one) does not fail loudly: it reports `ScalingActive=False` (reason `FailedGetPodsMetric`,
`FailedGetResourceMetric`, ...) and holds its replicas. `autoscaler_problem()` turns that into
a Degraded cause that names the metric and what to install, once the condition has lasted past
a grace period (a new HPA reads nothing until the first scrape and the adapter's next relist).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from slm_operator.render.scaling import GPU_UTIL_METRIC, KV_CACHE_METRIC, QUEUE_METRIC
from slm_operator.status import Cond

R_AUTOSCALER_METRICS_UNAVAILABLE = "AutoscalerMetricsUnavailable"
# Scrape interval (15 s) + adapter relist (30 s-1 m recommended) + HPA sync (15 s), with margin;
# SLM_AUTOSCALER_METRICS_GRACE_SECONDS overrides it (the e2e tests use a short one).
GRACE_SECONDS = float(os.environ.get("SLM_AUTOSCALER_METRICS_GRACE_SECONDS", "180"))

_ADAPTER_RULES = ("the chart's prometheus-adapter rules (observability.prometheusAdapterRules) loaded by "
                  "prometheus-adapter, and a Prometheus that scrapes the ServiceMonitor the operator renders "
                  "(Prometheus Operator); see docs/autoscaling.md")
FIXES: dict[str, str] = {
    GPU_UTIL_METRIC: ("install NVIDIA dcgm-exporter with Kubernetes pod attribution, scraped with "
                      "honorLabels: true (GPU Operator: dcgmExporter.serviceMonitor.honorLabels=true), and "
                      "the chart's prometheus-adapter rule for DCGM_FI_DEV_GPU_UTIL "
                      "(observability.prometheusAdapterRules); see docs/autoscaling.md"),
    KV_CACHE_METRIC: _ADAPTER_RULES,
    **{m: _ADAPTER_RULES for m in QUEUE_METRIC.values()},
    "cpu": "install metrics-server (it serves metrics.k8s.io)",
}
_FAILED_GET = ("FailedGetPodsMetric", "FailedGetResourceMetric", "FailedGetObjectMetric",
               "FailedGetExternalMetric", "FailedGetContainerResourceMetric")


def _metric_names(hpa: dict[str, Any]) -> list[str]:
    out = []
    for m in (hpa.get("spec") or {}).get("metrics") or []:
        body = m.get({"Pods": "pods", "Object": "object", "External": "external"}.get(m.get("type", ""), ""))
        if body:
            out.append(body["metric"]["name"])
        elif m.get("type") in ("Resource", "ContainerResource"):
            out.append(m[m["type"][0].lower() + m["type"][1:]]["name"])
    return out


def autoscaler_problem(hpa: dict[str, Any] | None, now: datetime | None = None,
                       grace: float = GRACE_SECONDS) -> tuple[Cond | None, float | None]:
    """(Degraded cause or None, seconds after which to look again or None).

    The cause when the HPA's ScalingActive has been False for a metric-read reason for longer
    than `grace` seconds: reason AutoscalerMetricsUnavailable, a sentence naming the HPA, the
    metric(s) its condition message mentions (else all of its metrics), the HPA's own reason
    and message, and the fix for each metric. Before the grace ends: (None, the rest of it).
    """
    if not hpa:
        return None, None
    conds = {x.get("type"): x for x in (hpa.get("status") or {}).get("conditions") or []}
    active = conds.get("ScalingActive") or {}
    if active.get("status") != "False" or active.get("reason") not in _FAILED_GET:
        return None, None
    now = now or datetime.now(UTC)
    since = active.get("lastTransitionTime")
    if since:
        waited = (now - datetime.fromisoformat(since.replace("Z", "+00:00"))).total_seconds()
        if waited < grace:
            return None, max(1.0, grace - waited)
    message = " ".join(str(active.get("message") or "").split())
    names = _metric_names(hpa)
    named = [n for n in names if n in message] or names
    fixes = "; ".join(dict.fromkeys(f"for {n}: {FIXES.get(n, _ADAPTER_RULES)}" for n in named))
    replicas = (hpa.get("status") or {}).get("currentReplicas")
    held = f" It holds {replicas} replica(s) until then." if replicas is not None else ""
    hpa_name = (hpa.get("metadata") or {}).get("name", "")
    return Cond(True, R_AUTOSCALER_METRICS_UNAVAILABLE,
                f"HorizontalPodAutoscaler {hpa_name} cannot read {', '.join(named)} "
                f"(ScalingActive=False, {active.get('reason')}: {message}). To fix, {fixes}.{held}"), None
