"""autoscaler_problem: the HPA's own ScalingActive=False becomes a Degraded cause naming the
metric and the fix, after a grace period; healthy or young HPAs give none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from slm_operator.autoscaler import GRACE_SECONDS, R_AUTOSCALER_METRICS_UNAVAILABLE, autoscaler_problem

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
# The message kube-controller-manager writes when the adapter serves no such metric.
MESSAGE = ("the HPA was unable to compute the replica count: unable to get metric "
           "slm_gpu_utilization_percent: unable to fetch metrics from custom metrics API: the server "
           "could not find the metric slm_gpu_utilization_percent for pods")


def hpa(active: str = "False", reason: str = "FailedGetPodsMetric", age_s: float = 600,
        message: str = MESSAGE) -> dict[str, Any]:
    since = (NOW - timedelta(seconds=age_s)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {"name": "phi4-mini"},
        "spec": {"metrics": [
            {"type": "Pods", "pods": {"metric": {"name": "slm_gpu_utilization_percent"},
                                      "target": {"type": "AverageValue", "averageValue": "60"}}},
            {"type": "Pods", "pods": {"metric": {"name": "vllm_num_requests_waiting"},
                                      "target": {"type": "AverageValue", "averageValue": "4"}}}]},
        "status": {"currentReplicas": 1, "conditions": [
            {"type": "AbleToScale", "status": "True", "reason": "SucceededGetScale"},
            {"type": "ScalingActive", "status": active, "reason": reason, "message": message,
             "lastTransitionTime": since}]},
    }


def test_unserved_gpu_metric_is_degraded_naming_metric_and_fix() -> None:
    cond, again = autoscaler_problem(hpa(), now=NOW)
    assert again is None and cond is not None and cond.status is True
    assert cond.reason == R_AUTOSCALER_METRICS_UNAVAILABLE
    msg = cond.message
    assert msg.startswith("HorizontalPodAutoscaler phi4-mini cannot read slm_gpu_utilization_percent (")
    assert "vllm_num_requests_waiting" not in msg  # only the metric the HPA names
    assert "ScalingActive=False, FailedGetPodsMetric" in msg
    assert "dcgm-exporter" in msg and "honorLabels: true" in msg and "prometheus-adapter rule" in msg
    assert msg.endswith("It holds 1 replica(s) until then.")


def test_within_grace_no_cause_but_a_recheck() -> None:
    cond, again = autoscaler_problem(hpa(age_s=30), now=NOW)
    assert cond is None and again == GRACE_SECONDS - 30


def test_healthy_missing_or_other_reasons_give_nothing() -> None:
    assert autoscaler_problem(None) == (None, None)
    assert autoscaler_problem(hpa(active="True", reason="ValidMetricFound"), now=NOW) == (None, None)
    # ScalingDisabled (replicas 0) is the user's choice, not a missing metric.
    assert autoscaler_problem(hpa(reason="ScalingDisabled"), now=NOW) == (None, None)


def test_message_naming_no_metric_lists_all() -> None:
    cond, _ = autoscaler_problem(hpa(message="unable to fetch metrics"), now=NOW)
    assert cond is not None
    assert "slm_gpu_utilization_percent, vllm_num_requests_waiting" in cond.message
    assert "metrics-server" not in cond.message
