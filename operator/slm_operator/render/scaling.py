"""HorizontalPodAutoscaler (autoscaling/v2) and PodDisruptionBudget.

Metric names are those the chart's prometheus-adapter rules expose (docs/autoscaling.md):
GPU utilization comes from dcgm-exporter (DCGM_FI_DEV_GPU_UTIL, attributed to the pod),
queue depth from each engine's queue metric (engines/<engine>.py queue_metric: vLLM
vllm:num_requests_waiting, our ONNX server slm_onnx_queue_depth, llama.cpp
llamacpp:requests_deferred), KV-cache usage from vLLM (vllm:kv_cache_usage_perc, 0..1).
"""

from __future__ import annotations

from slm_operator import api, engines
from slm_operator import constants as c
from slm_operator.render.common import Obj, Target, child_names, metadata, selector

# Custom-metrics API names (prometheus-adapter renames colons away).
GPU_UTIL_METRIC = "slm_gpu_utilization_percent"
# engine -> its queue metric's custom-metrics name (engines with a queue signal only).
QUEUE_METRIC = {e.row.name: e.queue_metric.custom_metric for e in engines.all_engines() if e.queue_metric}
KV_CACHE_METRIC = "vllm_kv_cache_usage_perc"


def default_metrics(engine: str) -> list[api.ScalingMetric]:
    """Queue depth where the engine exports one (it tracks latency); CPU otherwise (Ollama)."""
    if engines.get(engine).queue_metric is not None:
        return [api.ScalingMetric(type=api.MetricType.QUEUE_DEPTH, target_average_value=4)]
    return [api.ScalingMetric(type=api.MetricType.CPU, target_percent=70)]


def _pods_metric(name: str, average: str) -> Obj:
    return {"type": "Pods", "pods": {"metric": {"name": name},
                                     "target": {"type": "AverageValue", "averageValue": average}}}


def hpa_metric(m: api.ScalingMetric, engine: str) -> Obj:
    if m.type == "CPU":
        return {"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": m.target_percent}}}
    if m.type == "GPUUtilization":
        return _pods_metric(GPU_UTIL_METRIC, str(m.target_percent))
    if m.type == "KVCacheUsage":
        # vLLM reports a 0..1 fraction: 70 percent is 700m.
        return _pods_metric(KV_CACHE_METRIC, f"{(m.target_percent or 0) * 10}m")
    queue = engines.get(engine).queue_metric
    if queue is None:  # admission refuses QueueDepth for such engines (api.autoscaling_engine_rules)
        raise ValueError(f"autoscaling QueueDepth: engine {engine} exports no queue metric")
    return _pods_metric(queue.custom_metric, str(m.target_average_value))


def hpa(t: Target) -> Obj | None:
    a = t.spec.autoscaling
    if a is None:
        return None
    metrics = a.metrics or default_metrics(t.r.engine)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(t, child_names(t.name, t.key)["server"], c.C_SERVER),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": child_names(t.name, t.key)["server"]},
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": [hpa_metric(m, t.r.engine) for m in metrics],
            "behavior": {
                # A new replica takes minutes to load a model: add capacity early and in
                # steps, remove it slowly.
                "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
                    {"type": "Pods", "value": 2, "periodSeconds": 60},
                    {"type": "Percent", "value": 100, "periodSeconds": 60}]},
                "scaleDown": {"stabilizationWindowSeconds": a.scale_down_stabilization_seconds,
                              "selectPolicy": "Min",
                              "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}]},
            },
        },
    }


def effective_min_replicas(t: Target) -> int:
    if t.spec.autoscaling:
        return t.spec.autoscaling.min_replicas
    return 1 if t.spec.replicas is None else t.spec.replicas


def pdb(t: Target) -> Obj | None:
    """Only with two or more replicas: a PDB on a single replica would block node drains."""
    if effective_min_replicas(t) < 2:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(t, child_names(t.name, t.key)["server"], c.C_SERVER),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(t, c.C_SERVER)}},
    }
