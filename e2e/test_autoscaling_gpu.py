"""GPU-utilization and KV-cache autoscaling through the real Prometheus, Prometheus Operator,
prometheus-adapter (the chart's rules) and HPA controller, for vLLM pods on the KWOK GPU nodes.

What cannot exist here is a GPU, so two exporters are stand-ins speaking the real formats
(e2e/monitoring_standins.py): dcgm-exporter (a DaemonSet on the GPU nodes, its ServiceMonitor as
the GPU Operator ships it, `DCGM_FI_DEV_GPU_UTIL` attributed to the vLLM pod by its `pod`,
`namespace` and `container` labels) and vLLM's /metrics (series names from the pinned vLLM's
source), each answering on its KWOK pod's IP address. Everything else is real: Endpoints from
the KWOK pods, the operator's ServiceMonitor and HPA, Prometheus' service discovery and
relabelling (so `honorLabels: false` really produces `exported_pod`/`exported_namespace`).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.helpers import apply, kubectl, kubectl_json, restricted_pod_spec, run_operator, wait_for, wait_for_condition
from e2e.monitoring import (  # noqa: F401
    Monitoring,
    custom_metric,
    hpa_conditions,
    hpa_metric_value,
    hpa_status,
    monitoring,
    slm_crd,
)
from e2e.monitoring_standins import (
    GpuPod,
    MetricsServer,
    dcgm_exposition,
    standin_addresses,
    vllm_exposition,
    vllm_series,
)
from e2e.test_autoscaling_alerts import ENGINE_ONLY, dashboard_queries
from slm_operator.constants import METRICS_PORT

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

ROOT = Path(__file__).resolve().parents[1]
STABILIZATION_S = 30
DCGM_PORT = 9400        # dcgm-exporter's default listen port (:9400)
# Where Prometheus scrapes an engine pod: its "metrics" port, on which the pod's gateway serves
# the engine's /metrics (the operator's ServiceMonitor names that port).
VLLM_PORT = METRICS_PORT
GPU_METRIC = "slm_gpu_utilization_percent"
KV_METRIC = "vllm_kv_cache_usage_perc"


class Fleet:
    """Keeps a stand-in /metrics server on the IP of every matching KWOK pod (polled each
    second), with the values the test sets: GPU utilization per node, vLLM gauges."""

    def __init__(self, kubeconfig: str, add_address: Callable[[str], None]) -> None:
        self.kubeconfig, self.add_address = kubeconfig, add_address
        self.servers: dict[tuple[str, int], MetricsServer] = {}
        self.gpu_util = 0.0
        self.vllm_values: dict[str, float] = {}
        self.series, self.labelnames = vllm_series()
        self.holders: dict[str, GpuPod] = {}   # node -> the vLLM pod holding its GPU
        self.watch: list[tuple[str, str, int, str]] = []  # (namespace, selector, port, kind)
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.sync()
            except Exception as e:  # reported by the test if it matters
                self.errors.append(repr(e))
            self.stop.wait(1)

    def sync(self) -> None:
        holders: dict[str, GpuPod] = {}
        wanted: list[tuple[str, int, Callable[[], str]]] = []
        for ns, selector, port, kind in self.watch:
            for pod in kubectl_json(self.kubeconfig, "-n", ns, "get", "pods", "-l", selector)["items"]:
                ip, node = pod["status"].get("podIP"), pod["spec"].get("nodeName")
                if not ip or not node or pod["metadata"].get("deletionTimestamp"):
                    continue
                if kind == "vllm":
                    holders[node] = GpuPod(ns, pod["metadata"]["name"], pod["spec"]["containers"][0]["name"])
                    wanted.append((ip, port, self._vllm_render))
                else:
                    wanted.append((ip, port, self._dcgm_render(node)))
        self.holders = holders
        for ip, port, render in wanted:
            if (ip, port) not in self.servers:
                self.add_address(ip)
                self.servers[(ip, port)] = MetricsServer(ip, port, render)

    def _dcgm_render(self, node: str) -> Callable[[], str]:
        return lambda: dcgm_exposition(node, 0, self.gpu_util, self.holders.get(node))

    def _vllm_render(self) -> str:
        return vllm_exposition(self.series, self.labelnames, "phi4-mini", self.vllm_values)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for s in self.servers.values():
            s.close()


@contextmanager
def fleet(kubeconfig: str) -> Iterator[Fleet]:
    with standin_addresses() as add:
        f = Fleet(kubeconfig, add)
        f.thread.start()
        try:
            yield f
        finally:
            f.close()


def dcgm_exporter(ns: str, honor_labels: bool) -> list[dict[str, Any]]:
    """The stand-in dcgm-exporter as the GPU Operator deploys it: a DaemonSet on GPU nodes, a
    Service on :9400 and a ServiceMonitor (dcgmExporter.serviceMonitor.honorLabels)."""
    labels = {"app": "nvidia-dcgm-exporter"}
    pod = restricted_pod_spec(
        [{"name": "nvidia-dcgm-exporter", "ports": [{"name": "metrics", "containerPort": DCGM_PORT}]}],
        nodeSelector={"nvidia.com/gpu.present": "true"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    endpoint = {"port": "metrics", "path": "/metrics", "interval": "15s", "honorLabels": honor_labels}
    return [
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "nvidia-dcgm-exporter", "labels": labels},
         "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": pod}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "nvidia-dcgm-exporter", "labels": labels},
         "spec": {"selector": labels, "ports": [{"name": "metrics", "port": DCGM_PORT, "targetPort": DCGM_PORT}]}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
         "metadata": {"name": "nvidia-dcgm-exporter", "labels": labels},
         "spec": {"selector": {"matchLabels": labels}, "endpoints": [endpoint]}},
    ]


def vllm_slm(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """examples/phi4-mini-vllm-awq.yaml (vLLM on one L4 each) with autoscaling 1..2."""
    body = copy.deepcopy(yaml.safe_load((ROOT / "examples" / "phi4-mini-vllm-awq.yaml").read_text()))
    body["spec"].pop("replicas", None)
    body["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 2, "scaleDownStabilizationSeconds": STABILIZATION_S,
                                   "metrics": metrics}
    return body


def wait_desired(kc: str, ns: str, name: str, metric: str, pred: Callable[[int], bool], what: str,
                 timeout: float = 240) -> tuple[float, dict[str, Any]]:
    """Poll the HPA until pred(desiredReplicas); returns (seconds waited, status)."""
    t0 = time.monotonic()
    status = wait_for(lambda: (s := hpa_status(kc, ns, name)) and pred(s.get("desiredReplicas") or 0) and s,
                      timeout=timeout, interval=1, what=what)
    return time.monotonic() - t0, status


def test_gpu_utilization_scales_up_at_90_and_down_at_10(slm_crd: str,  # noqa: F811
                                                        make_namespace: Callable[..., str],
                                                        monitoring: Monitoring) -> None:  # noqa: F811
    kc = slm_crd
    ns, gpu_ns = make_namespace(), make_namespace()
    name = "phi4-mini"
    apply(kc, *dcgm_exporter(gpu_ns, honor_labels=True), namespace=gpu_ns)
    figures: dict[str, Any] = {}
    # A short grace before an HPA that reads nothing is Degraded (the default is 3 minutes).
    with fleet(kc) as f, run_operator(kc, [ns], env={"SLM_AUTOSCALER_METRICS_GRACE_SECONDS": "20"}) as op:
        f.watch = [(gpu_ns, "app=nvidia-dcgm-exporter", DCGM_PORT, "dcgm"),
                   (ns, "app.kubernetes.io/component=server", VLLM_PORT, "vllm")]
        f.gpu_util = 90
        f.vllm_values = {"vllm:kv_cache_usage_perc": 0.3, "vllm:num_requests_waiting": 0}
        apply(kc, vllm_slm([{"type": "GPUUtilization", "targetPercent": 60}]), namespace=ns)
        wait_for_condition(kc, "-n", ns, "slm", name, type_="Ready", timeout=180)
        pod = wait_for(lambda: next(iter(f.holders.values()), None), timeout=60, what="the vLLM pod on a GPU node")

        # dcgm-exporter's series reached Prometheus with the vLLM pod's own labels (honorLabels).
        # A new ServiceMonitor reaches Prometheus through the Operator's config Secret, which the
        # kubelet syncs into the pod's volume (about 1-2 minutes here), then the reloader.
        series = wait_for(lambda: monitoring.query(f'DCGM_FI_DEV_GPU_UTIL{{namespace="{ns}"}}'), timeout=300,
                          interval=2, what="DCGM_FI_DEV_GPU_UTIL in Prometheus")
        labels = series[0]["metric"]
        assert labels["pod"] == pod.pod and labels["container"] == pod.container, labels
        assert {"gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname"} <= set(labels), labels
        # The adapter learns a new series at its next relist (30 s here).
        wait_for(lambda: custom_metric(kc, ns, GPU_METRIC), timeout=90, interval=2, what=f"{GPU_METRIC} served")

        took, status = wait_desired(kc, ns, name, GPU_METRIC, lambda d: d >= 2, "scale-up at 90% GPU")
        figures["gpu_90_to_scale_up_s"] = round(took, 1)
        assert hpa_metric_value(status, GPU_METRIC) == 90, status
        # The dashboard panels only vLLM and dcgm-exporter answer (the others: test_autoscaling_alerts.py).
        engine_panels = [(t, e) for t, e in dashboard_queries(ns, name) if ENGINE_ONLY.match(e)]
        assert len(engine_panels) == 5, engine_panels
        f.vllm_values["vllm:num_preemptions"] = 0
        wait_for(lambda: monitoring.query(f'vllm:num_preemptions_total{{namespace="{ns}"}}'), timeout=60,
                 interval=2, what="the preemption counter")
        f.vllm_values["vllm:num_preemptions"] = 7
        wait_for(lambda: all(monitoring.query(q) for _, q in engine_panels), timeout=90, interval=3,
                 what=f"every vLLM / dcgm-exporter dashboard panel with data: {engine_panels}")
        f.gpu_util = 10
        took, status = wait_desired(kc, ns, name, GPU_METRIC, lambda d: d == 1, "scale-down at 10% GPU",
                                    timeout=STABILIZATION_S + 180)
        figures["gpu_10_to_scale_down_s"] = round(took, 1)
        assert hpa_metric_value(status, GPU_METRIC) == 10, status

        # honorLabels: false (the ServiceMonitor default): Prometheus keeps its target labels and
        # renames dcgm-exporter's to exported_pod / exported_namespace. The chart's rule then
        # finds no value for the vLLM pod, and the HPA says so (ScalingActive=False).
        # The changed ServiceMonitor takes the same path as a new one (config Secret, kubelet
        # volume sync, reloader): up to 300 s on a loaded machine, as above (CI once ran out at 120 s).
        apply(kc, *dcgm_exporter(gpu_ns, honor_labels=False)[2:], namespace=gpu_ns)
        renamed = wait_for(lambda: monitoring.query(f'DCGM_FI_DEV_GPU_UTIL{{exported_namespace="{ns}"}}'),
                           timeout=300, interval=2, what="exported_namespace series")
        labels = renamed[0]["metric"]
        assert labels["exported_pod"] == f.holders[labels["Hostname"]].pod and labels["namespace"] == gpu_ns, labels
        assert labels["pod"].startswith("nvidia-dcgm-exporter-"), labels
        status = wait_for(lambda: (s := hpa_status(kc, ns, name)) and
                          hpa_conditions(s).get("ScalingActive", {}).get("status") == "False" and s,
                          timeout=240, interval=2, what="ScalingActive=False once no pod has the metric")
        cond = hpa_conditions(status)["ScalingActive"]
        assert cond["reason"] == "FailedGetPodsMetric" and GPU_METRIC in cond["message"], cond
        figures["honor_labels_off_to_scaling_inactive"] = cond["reason"]
        # Bad input seen from the SLMDeployment: Degraded, naming the metric and the fix.
        slm_obj = wait_for_condition(kc, "-n", ns, "slm", name, type_="Degraded", timeout=120)
        deg = next(c for c in slm_obj["status"]["conditions"] if c["type"] == "Degraded")
        assert deg["reason"] == "AutoscalerMetricsUnavailable", deg
        assert GPU_METRIC in deg["message"] and "dcgm-exporter" in deg["message"], deg
        assert "ScalingActive=False" in deg["message"] and "honorLabels: true" in deg["message"], deg
        assert not f.errors, f.errors[:3]
        assert "Traceback" not in op.output()
    print(f"\nGPU-utilization autoscaling figures: {json.dumps(figures)}")


def test_kv_cache_usage_scales_up_and_down(slm_crd: str, namespace: str,  # noqa: F811
                                           monitoring: Monitoring) -> None:  # noqa: F811
    kc, ns, name = slm_crd, namespace, "phi4-mini"
    figures: dict[str, Any] = {}
    with fleet(kc) as f, run_operator(kc, [ns]):
        f.watch = [(ns, "app.kubernetes.io/component=server", VLLM_PORT, "vllm")]
        # vLLM's own gauges (names from its source): a nearly full KV cache, a short queue.
        f.vllm_values = {"vllm:kv_cache_usage_perc": 0.95, "vllm:num_requests_waiting": 1,
                         "vllm:num_requests_running": 8}
        apply(kc, vllm_slm([{"type": "KVCacheUsage", "targetPercent": 70}]), namespace=ns)
        wait_for_condition(kc, "-n", ns, "slm", name, type_="Ready", timeout=180)
        hpa = kubectl_json(kc, "-n", ns, "get", "hpa", name)
        assert hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "700m"
        wait_for(lambda: monitoring.query(f'vllm:kv_cache_usage_perc{{namespace="{ns}",service="{name}"}}'),
                 timeout=300, interval=2, what="vllm:kv_cache_usage_perc scraped from the pod's address")

        took, status = wait_desired(kc, ns, name, KV_METRIC, lambda d: d >= 2, "scale-up at 95% KV cache")
        figures["kv_95_to_scale_up_s"] = round(took, 1)
        assert hpa_metric_value(status, KV_METRIC) == pytest.approx(0.95), status
        f.vllm_values["vllm:kv_cache_usage_perc"] = 0.10
        took, status = wait_desired(kc, ns, name, KV_METRIC, lambda d: d == 1, "scale-down at 10% KV cache",
                                    timeout=STABILIZATION_S + 180)
        figures["kv_10_to_scale_down_s"] = round(took, 1)
        assert hpa_metric_value(status, KV_METRIC) == pytest.approx(0.10), status
        assert not f.errors, f.errors[:3]
    kubectl(kc, "-n", ns, "delete", "slm", name, "--wait=false")
    print(f"\nKV-cache autoscaling figures: {json.dumps(figures)}")
