"""ServiceMonitor (monitoring.coreos.com/v1), rendered only when that CRD exists."""

from __future__ import annotations

from slm_operator import constants as c
from slm_operator.render.common import Obj, RenderContext, Target, child_names, metadata, selector
from slm_operator.render.engines import METRICS_ENDPOINT


def service_monitor(t: Target, ctx: RenderContext) -> Obj | None:
    if not (ctx.service_monitor_crd and t.spec.monitoring.service_monitor):
        return None
    port, path = METRICS_ENDPOINT[t.r.engine]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(t, child_names(t.name, t.key)["server"], c.C_SERVER),
        "spec": {
            "selector": {"matchLabels": selector(t, c.C_SERVER)},
            "endpoints": [{"port": port, "path": path, "interval": "15s"}],
        },
    }
