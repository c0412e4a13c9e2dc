"""The chart's alerts and dashboards against real data in the real Prometheus.

The PrometheusRule comes from `helm template` of the chart and is loaded by Prometheus
Operator (e2e/monitoring.py applies it unchanged). Real conditions make three alerts true:
- SLMDeploymentNotReady and SLMQuantizationFailed: a real quantization on the real node of a
  model int4 must damage (e2e.realnode.fragile_copy) fails the quality gate;
- SLMQueueDepthHighAtMaxReplicas: an ONNX server held at maxReplicas 1 with more clients than
  slots plus 8 (kube-state-metrics reports the HPA at its maximum).
The chart's alerts wait 10-15 minutes (`for:`) before firing; the test reads them in state
`pending` from the unchanged rule, and `firing` from a copy of the same rule whose `for:` is
30 s (labelled slm_e2e_for="30s"; the expressions are byte-identical).

The operator's metrics are scraped through the chart's own Service and ServiceMonitor
(templates/service.yaml, templates/servicemonitor.yaml): the operator runs here as a process,
so the Service is selectorless and its Endpoints name the node's address.

Every query of the chart's Grafana dashboard is then run with the dashboard's variables set
to this namespace and deployment, and must return data; the queries only vLLM or dcgm-exporter
can answer are run by e2e/test_autoscaling_gpu.py against its stand-ins.
"""

from __future__ import annotations

import copy
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.helpers import apply, kubectl_json, run_operator, wait_for
from e2e.monitoring import (  # noqa: F401
    NODE_IP,
    Monitoring,
    chart_template,
    dashboards,
    host_target,
    missing_binaries,
    monitoring,
    prometheus_rule,
    serving_images,
)
from e2e.realnode import RealNode, port_forward
from e2e.test_autoscaling_queue import Load
from e2e.test_realnode import FRAGILE_REPO, HUB_REPO, api_key, hub, slm, wait_ready  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

SHORT_FOR = "30s"
# Panels only vLLM or dcgm-exporter can answer (checked by test_autoscaling_gpu.py).
ENGINE_ONLY = re.compile(r"^(avg by \(pod\) \(vllm:kv_cache_usage_perc|sum\(rate\(vllm:num_preemptions_total|"
                         r"avg by \(pod\) \(DCGM_FI_DEV_GPU_UTIL|sum by \(pod\) \(\(?DCGM_FI_DEV_FB_)")


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def operator_scrape_objects(ns: str, port: int) -> list[dict[str, Any]]:
    """The chart's operator Service (without its pod selector: the operator is a process here)
    with Endpoints on the node's address, and the chart's ServiceMonitor, unchanged."""
    (svc,) = chart_template("templates/service.yaml")
    (sm,) = chart_template("templates/servicemonitor.yaml", "serviceMonitor.enabled=true")
    labels = svc["metadata"]["labels"]
    service, endpoints = host_target(svc["metadata"]["name"], ns, port, labels)
    sm["metadata"]["namespace"] = ns
    sm["spec"]["namespaceSelector"] = {"matchNames": [ns]}
    return [service, endpoints, sm]


def short_for_rule(ns: str) -> dict[str, Any]:
    """The chart's PrometheusRule with every `for:` at 30 s and a label telling its alerts apart."""
    rule = copy.deepcopy(prometheus_rule())
    rule["metadata"] = {"name": "slm-operator-short-for", "namespace": ns}
    for group in rule["spec"]["groups"]:
        group["name"] += "-short-for"
        for r in group["rules"]:
            if "for" in r:
                r["for"] = SHORT_FOR
            r.setdefault("labels", {})["slm_e2e_for"] = SHORT_FOR
    return rule


def dashboard_queries(ns: str, deployment: str) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every panel target, variables substituted as Grafana would."""
    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for p in panels:
            yield from walk(p.get("panels", []))
            for t in p.get("targets", []):
                if t.get("expr"):
                    yield p.get("title", ""), t["expr"]

    for board in dashboards().values():
        for title, expr in walk(board.get("panels", [])):
            yield title, (expr.replace("$namespace", ns).replace("$deployment", deployment)
                          .replace("$__rate_interval", "2m"))


def alerts(mon: Monitoring, ns: str) -> set[tuple[str, str, str]]:
    """{(alertname, alertstate, slm_e2e_for or "")} of this namespace's ALERTS series."""
    return {(s["metric"]["alertname"], s["metric"]["alertstate"], s["metric"].get("slm_e2e_for", ""))
            for s in mon.query(f'ALERTS{{namespace="{ns}"}}')}


def test_alerts_fire_and_dashboards_have_data(kubeconfig: str, namespace: str, real_node: RealNode,
                                              serving_images: dict[str, str], hub: Any,  # noqa: F811
                                              monitoring: Monitoring) -> None:  # noqa: F811
    kc, ns = kubeconfig, namespace
    assert not [m for m in missing_binaries() if m == "kube-state-metrics"], \
        "kube-state-metrics is not built (e2e/cluster/build): the HPA alert and the replica panels need it"
    port = free_port(NODE_IP)
    apply(kc, *operator_scrape_objects(ns, port), short_for_rule(ns), namespace=ns)

    gate = slm("tiny-gate", hub.url, hub.revision(FRAGILE_REPO), fmt="onnx", qtype="int4", engine="onnxruntime",
               repo=FRAGILE_REPO)
    busy = slm("tiny-busy", hub.url, hub.revision(HUB_REPO), fmt="onnx", qtype="int4", engine="onnxruntime")
    busy["spec"].pop("replicas")
    busy["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 1,
                                   "metrics": [{"type": "QueueDepth", "targetAverageValue": 2}]}
    # A model that cannot fit its GPU: a sizing refusal (the dashboard's refusals panel).
    too_big = {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment", "metadata": {"name": "too-big"},
               "spec": {"model": {"source": "hf://Qwen/Qwen3-14B", "revision": "main"}, "engine": {"name": "vllm"},
                        "quantization": {"format": "none", "type": "bf16"},
                        "resources": {"gpu": {"count": 1, "product": "Tesla-T4"}}}}
    want_firing = {"SLMDeploymentNotReady", "SLMQuantizationFailed", "SLMQueueDepthHighAtMaxReplicas"}
    with run_operator(kc, [ns], extra_args=["--metrics-port", str(port), "--metrics-address", NODE_IP]) as op:
        # Scraped before any Job can fail: increase() needs the counter's 0 sample first. A
        # failure counted before Prometheus' first scrape reads as a series that starts at 1, whose
        # increase is 0, and the alert never fires (a new ServiceMonitor takes Operator -> config
        # Secret -> kubelet volume sync -> reloader, up to minutes, which is longer than the gate's
        # Job once took in CI).
        wait_for(lambda: monitoring.query(f'up{{namespace="{ns}",job=~".*slm-operator.*"}} == 1'), timeout=300,
                 interval=2, what="Prometheus scraping the operator through the chart's ServiceMonitor")
        apply(kc, gate, busy, too_big, namespace=ns)
        wait_ready(kc, ns, "tiny-busy", op)
        key = api_key(kc, ns, "tiny-busy-api-key")
        with port_forward(kc, ns, "service/tiny-busy", 8000) as fwd, Load(fwd, key, "tiny-qwen3", 16) as load:
            t0 = time.monotonic()
            last: list[Any] = []

            def all_firing() -> Any:
                last[:] = [alerts(monitoring, ns)]  # kept: a timeout names what had fired by then
                a = last[0]
                return a and want_firing <= {n for n, st, f in a if st == "firing" and f == SHORT_FOR} and a

            try:
                seen = wait_for(all_firing, timeout=600, interval=5, what=f"{sorted(want_firing)} firing")
            except TimeoutError as e:
                gate_conditions = [(c["type"], c["status"], c.get("reason"))
                                   for c in kubectl_json(kc, "-n", ns, "get", "slmdeployment", "tiny-gate")
                                   .get("status", {}).get("conditions", [])]
                raise AssertionError(f"{e}; the alerts by then (name, state, for): {last}; "
                                     f"tiny-gate's conditions: {gate_conditions}") from e
            firing_after_s = time.monotonic() - t0
            # The unchanged chart rule: the same conditions, waiting out its own `for:`.
            assert ("SLMDeploymentNotReady", "pending", "") in seen, seen
            assert ("SLMQueueDepthHighAtMaxReplicas", "pending", "") in seen, seen
            assert ("SLMQuantizationFailed", "firing", "") in seen, seen   # no `for:` in the chart

            empty = []
            for title, expr in dashboard_queries(ns, "tiny-busy"):
                if ENGINE_ONLY.match(expr):
                    continue
                if not monitoring.query(expr):
                    empty.append((title, expr))
            load.stop()
        assert load.ok > 0, load.errors[:5]
        assert not empty, "dashboard queries without data:\n" + "\n".join(f"{t}: {e}" for t, e in empty)
    print(f"\nalerts: {sorted(seen)}; all three firing (for: {SHORT_FOR}) {firing_after_s:.0f}s after load start")
