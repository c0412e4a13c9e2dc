"""ServiceMonitor (monitoring.coreos.com/v1), rendered only when that CRD exists."""

from __future__ import annotations

from slm_operator import constants as c
from slm_operator.render.common import Obj, RenderContext, Target, api_key_ref, child_names, metadata, selector
from slm_operator.render.engines import metrics_endpoint


def service_monitor(t: Target, ctx: RenderContext) -> Obj | None:
    if not (ctx.service_monitor_crd and t.spec.monitoring.service_monitor):
        return None
    m = metrics_endpoint(t)
    endpoint: Obj = {"port": m.port, "path": m.path, "interval": "15s"}
    if m.needs_key:
        # The engine guards /metrics with the API key: Prometheus sends it as a Bearer token,
        # read from the same Secret (ServiceMonitor and Secret share the namespace).
        name, key = api_key_ref(t)
        endpoint["authorization"] = {"type": "Bearer", "credentials": {"name": name, "key": key}}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(t, child_names(t.name, t.key)["server"], c.C_SERVER),
        "spec": {
            "selector": {"matchLabels": selector(t, c.C_SERVER)},
            "endpoints": [endpoint],
        },
    }
