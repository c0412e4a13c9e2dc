"""Queue-depth autoscaling for real: ONNX server pod -> ServiceMonitor -> Prometheus ->
prometheus-adapter (the chart's rules) -> custom.metrics.k8s.io -> HPA -> more replicas.

Every part is the real one (e2e/monitoring.py): the operator renders the ServiceMonitor and
the HPA, Prometheus Operator turns the ServiceMonitor into scrape configuration, Prometheus
runs as a pod on the real node and scrapes the ONNX server pod there, the adapter serves the
value, the kube-controller-manager's HPA controller scales the Deployment, the kubelet starts
the new pod. Load comes from a bounded pool of clients on 127.0.0.1 through
`kubectl port-forward` (which pins one pod, as a laptop client would).

Figures printed: load start -> first scale-up and load stop -> scale-down, split into the
time until Prometheus held the new value (scrape interval), until the adapter served it, and
until the HPA acted (sync period; plus the stabilization window on the way down).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from e2e.helpers import apply, kubectl_json, run_operator, wait_for
from e2e.monitoring import Monitoring, custom_metric, hpa_metric_value, hpa_status, monitoring, serving_images  # noqa: F401
from e2e.realnode import RealNode, port_forward
from e2e.test_realnode import HUB_REPO, api_key, hub, slm, wait_ready  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

METRIC = "slm_onnx_queue_depth"
TARGET = 2                  # waiting requests per pod (autoscaling.metrics[].targetAverageValue)
# The server generates 4 sequences at once (--max-concurrency 4): 7 clients keep 3 waiting on the
# pod port-forward pins, so 1 replica reads 3 > 2 (-> 2 replicas) and 2 replicas read 1.5 (stay
# at 2): the bound keeps the test from reaching 3, whose scale-down takes a 5-minute policy step.
CLIENTS = 7
STABILIZATION_S = 30        # autoscaling.scaleDownStabilizationSeconds (the test's short window)


class Load:
    """`clients` threads, each sending one chat completion after another (long generations so
    that requests wait for a slot) until stopped. Counts answers and errors."""

    def __init__(self, port: int, key: str, model: str, clients: int) -> None:
        self.port, self.key, self.model = port, key, model
        self.stop_event = threading.Event()
        self.ok = 0
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=300,
                          headers={"Authorization": f"Bearer {self.key}"}) as client:
            while not self.stop_event.is_set():
                try:
                    r = client.post("/v1/chat/completions", json={
                        "model": self.model, "max_tokens": 200, "temperature": 1.0,
                        "messages": [{"role": "user", "content": "Tell me a long story."}]})
                    if r.status_code == 200:
                        self.ok += 1
                    else:
                        self.errors.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    self.errors.append(repr(e))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=300)

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Timeline:
    """Polls Prometheus, the custom metrics API and the HPA once a second and keeps the first
    time each crossed a threshold (seconds since `t0`)."""

    def __init__(self, kubeconfig: str, mon: Monitoring, ns: str, name: str) -> None:
        self.kubeconfig, self.mon, self.ns, self.name = kubeconfig, mon, ns, name
        self.samples: list[dict[str, Any]] = []

    def sample(self) -> dict[str, Any]:
        prom = self.mon.values(f'sum by (pod) ({METRIC}{{namespace="{self.ns}"}})')
        try:
            api = custom_metric(self.kubeconfig, self.ns, METRIC)
        except Exception:
            api = {}
        status = hpa_status(self.kubeconfig, self.ns, self.name)
        s = {"t": time.monotonic(), "prometheus": prom, "adapter": api, "hpa_value": hpa_metric_value(status, METRIC),
             "desired": status.get("desiredReplicas"), "current": status.get("currentReplicas"),
             "conditions": {c["type"]: c["status"] for c in status.get("conditions", [])}}
        self.samples.append(s)
        return s

    def first(self, t0: float, pred: Any) -> float | None:
        for s in self.samples:
            if s["t"] >= t0 and pred(s):
                return round(s["t"] - t0, 1)
        return None


def test_queue_depth_scales_up_and_back_down(kubeconfig: str, namespace: str, real_node: RealNode,
                                             serving_images: dict[str, str], hub: Any,  # noqa: F811
                                             monitoring: Monitoring) -> None:  # noqa: F811
    ns, name = namespace, "tiny-queue"
    body = slm(name, hub.url, hub.revision(HUB_REPO), fmt="onnx", qtype="int4", engine="onnxruntime")
    body["spec"].pop("replicas")
    body["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 3, "scaleDownStabilizationSeconds": STABILIZATION_S,
                                   "metrics": [{"type": "QueueDepth", "targetAverageValue": TARGET}]}
    with run_operator(kubeconfig, [ns]) as op:
        apply(kubeconfig, body, namespace=ns)
        wait_ready(kubeconfig, ns, name, op)

        # The operator's ServiceMonitor became a scrape target of the real Prometheus.
        sm = kubectl_json(kubeconfig, "-n", ns, "get", "servicemonitor", name)
        assert sm["spec"]["endpoints"][0]["port"] == "metrics"
        wait_for(lambda: monitoring.values(f'up{{namespace="{ns}",service="{name}"}}') and
                 all(v == 1 for v in monitoring.values(f'up{{namespace="{ns}",service="{name}"}}').values()),
                 timeout=120, interval=2, what="Prometheus scraping the ONNX server pod")
        # The adapter serves the chart's metric name for the pod, and the HPA reads it.
        wait_for(lambda: custom_metric(kubeconfig, ns, METRIC), timeout=120, interval=2,
                 what=f"{METRIC} in custom.metrics.k8s.io")
        status = wait_for(lambda: (s := hpa_status(kubeconfig, ns, name)) and hpa_metric_value(s, METRIC) is not None
                          and s, timeout=120, interval=2, what="the HPA reading the metric")
        assert hpa_metric_value(status, METRIC) == 0
        assert {c["type"]: c["status"] for c in status["conditions"]}["ScalingActive"] == "True", status

        tl = Timeline(kubeconfig, monitoring, ns, name)
        key = api_key(kubeconfig, ns, f"{name}-api-key")
        with port_forward(kubeconfig, ns, f"service/{name}", 8000) as port, \
                Load(port, key, "tiny-qwen3", CLIENTS) as load:
            t_load = time.monotonic()
            wait_for(lambda: (tl.sample()["desired"] or 0) >= 2, timeout=240, interval=1,
                     what="the HPA to ask for 2 or more replicas")
            t_up = time.monotonic()
            # The new replica becomes ready (the real kubelet starts it on the node).
            wait_for(lambda: (kubectl_json(kubeconfig, "-n", ns, "get", "deployment", name)["status"]
                              .get("readyReplicas") or 0) >= 2, timeout=300, interval=2, what="a second ready replica")
            t_ready = time.monotonic()
            tl.sample()
            load.stop()
            t_stop = time.monotonic()
            wait_for(lambda: tl.sample()["desired"] == 1, timeout=STABILIZATION_S + 180, interval=1,
                     what="the HPA to go back to 1 replica")
            t_down = time.monotonic()
        assert load.ok > 0, load.errors[:5]
        # The HPA saw the queue: its own reading above the target before scaling up ...
        up_sample = next(s for s in tl.samples if (s["desired"] or 0) >= 2)
        assert up_sample["hpa_value"] is not None and up_sample["hpa_value"] > TARGET, up_sample
        # ... the same value the adapter served from Prometheus (per pod: one pod took the load) ...
        seen = [s for s in tl.samples if s["t"] <= up_sample["t"]]
        assert max(max(s["adapter"].values(), default=0) for s in seen) >= up_sample["hpa_value"], seen[-3:]
        # ... and zero once the load stopped, then one replica again.
        last = tl.samples[-1]
        assert last["hpa_value"] == 0 and last["desired"] == 1, last
        wait_for(lambda: kubectl_json(kubeconfig, "-n", ns, "get", "deployment", name)["spec"]["replicas"] == 1,
                 timeout=60, what="the Deployment scaled to 1")

    figures = {
        "load_to_prometheus_s": tl.first(t_load, lambda s: max(s["prometheus"].values(), default=0) > TARGET),
        "load_to_adapter_s": tl.first(t_load, lambda s: max(s["adapter"].values(), default=0) > TARGET),
        "load_to_hpa_reading_s": tl.first(t_load, lambda s: (s["hpa_value"] or 0) > TARGET),
        "load_to_scale_up_s": round(t_up - t_load, 1),
        "scale_up_to_second_ready_s": round(t_ready - t_up, 1),
        "stop_to_prometheus_zero_s": tl.first(t_stop, lambda s: max(s["prometheus"].values(), default=0) == 0),
        "stop_to_hpa_zero_s": tl.first(t_stop, lambda s: s["hpa_value"] == 0),
        "stop_to_scale_down_s": round(t_down - t_stop, 1),
        "stabilization_window_s": STABILIZATION_S,
        "max_hpa_reading": max((s["hpa_value"] or 0) for s in tl.samples),
        "answers": load.ok, "errors": len(load.errors),
    }
    print(f"\nqueue-depth autoscaling figures: {json.dumps(figures)}")
