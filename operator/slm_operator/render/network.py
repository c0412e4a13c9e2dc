"""Service and NetworkPolicies.

Serving pods: ingress only from `access.allowedFrom` (default: this namespace) to the API
port and from the monitoring namespace to the metrics port; egress only DNS (the model is
already on disk) and, with consumer limits, the deployment's limit store (render/limits.py).
Quantization pods: no ingress; egress DNS and HTTPS (the hub, S3), plus the
hub endpoint's port when it is not 443 (see hub.py).
"""

from __future__ import annotations

from slm_operator import constants as c
from slm_operator import hub
from slm_operator.render.common import Obj, RenderContext, Target, child_names, metadata, selector
from slm_operator.render.engines import metrics_endpoint

DNS_EGRESS: Obj = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}


def service(t: Target) -> Obj:
    ports = [{"name": "http", "port": c.API_PORT, "targetPort": "http", "protocol": "TCP"}]
    if metrics_endpoint(t).port == "metrics":
        ports.append({"name": "metrics", "port": c.METRICS_PORT, "targetPort": "metrics",
                      "protocol": "TCP"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(t, child_names(t.name, t.key)["server"], c.C_SERVER),
        "spec": {"type": "ClusterIP", "selector": selector(t, c.C_SERVER), "ports": ports},
    }


def _peers(t: Target) -> list[Obj]:
    peers: list[Obj] = []
    for p in t.spec.access.allowed_from:
        peer: Obj = {}
        if p.namespace_selector is not None:
            peer["namespaceSelector"] = {"matchLabels": dict(sorted(p.namespace_selector.items()))}
        peer["podSelector"] = {"matchLabels": dict(sorted((p.pod_selector or {}).items()))}
        peers.append(peer)
    return peers or [{"podSelector": {}}]


def server_policy(t: Target, ctx: RenderContext) -> Obj:
    metrics_port = c.API_PORT if metrics_endpoint(t).port == "http" else c.METRICS_PORT
    monitoring_peer = {"namespaceSelector": {"matchLabels": dict(ctx.monitoring_namespace_labels)}}
    egress = [DNS_EGRESS]
    if t.consumers.limits:  # the gateways reach this deployment's limit store, nothing else
        egress.append({"to": [{"podSelector": {"matchLabels": selector(t, c.C_LIMITS)}}],
                       "ports": [{"port": c.REDIS_PORT, "protocol": "TCP"}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(t, child_names(t.name, t.key)["np_server"], c.C_SERVER),
        "spec": {
            "podSelector": {"matchLabels": selector(t, c.C_SERVER)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": _peers(t), "ports": [{"port": c.API_PORT, "protocol": "TCP"}]},
                {"from": [monitoring_peer], "ports": [{"port": metrics_port, "protocol": "TCP"}]},
            ],
            "egress": egress,
        },
    }


def quantizer_policy(t: Target, ctx: RenderContext) -> Obj:
    """The quantization Job's NetworkPolicy: no ingress; egress DNS, 443 and the hub's port."""
    egress = [DNS_EGRESS, {"ports": [{"port": 443, "protocol": "TCP"}]}]
    hub_rule = hub.egress_rule(hub.effective(t.spec.model, ctx.hub))
    if hub_rule:
        egress.append(hub_rule)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(t, child_names(t.name, t.key)["np_quantizer"], c.C_QUANTIZER),
        "spec": {
            "podSelector": {"matchLabels": selector(t, c.C_QUANTIZER)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": egress,
        },
    }
