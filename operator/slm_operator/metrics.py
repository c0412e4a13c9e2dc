"""Operator metrics (prometheus-client), served on --metrics-port.

The default registry also carries the process collector (RSS, CPU seconds, open fds).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("slm_operator_reconciles_total", "Reconciles by result.", ["result"])
RECONCILE_SECONDS = Histogram(
    "slm_operator_reconcile_duration_seconds", "Reconcile duration by result.", ["result"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
API_REQUESTS = Counter("slm_operator_api_requests_total",
                       "API requests the operator sent, by verb and kind.", ["verb", "kind"])
WRITES = Counter("slm_operator_api_writes_total", "Child writes (apply/create/delete) by kind.", ["kind"])
CONDITIONS = Gauge("slm_operator_slmdeployments", "SLMDeployments by condition type and status.",
                   ["condition", "status"])
QUANTIZATION_SECONDS = Histogram(
    "slm_operator_quantization_job_duration_seconds", "Quantization Job wall time by outcome.",
    ["format", "outcome"], buckets=(30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400))
QUANTIZATION_JOBS = Counter("slm_operator_quantization_jobs_total",
                            "Quantization Jobs finished, by format and outcome.", ["format", "outcome"])
SIZING_REFUSALS = Counter("slm_operator_sizing_refusals_total",
                          "SLMDeployments refused because the model does not fit.", ["engine"])
QUEUE_DEPTH = Gauge("slm_operator_workqueue_depth", "SLMDeployments waiting for a reconcile.")
PODS_CACHED = Gauge("slm_operator_pods_cached",
                    "Pods of the operator's children held as compact summaries (the pod watch).")
CONDITION = Gauge("slm_operator_slmdeployment_condition",
                  "1 when the SLMDeployment's condition has this status (per object, for alerts).",
                  ["namespace", "name", "condition", "status"])


FORMATS = ("none", "gguf", "onnx", "awq", "gptq", "fp8")
OUTCOMES = ("succeeded", "failed", "quality_gate_failed")


def initialise() -> None:
    """Create every label set at zero, so increase() sees the first event after a restart."""
    for result in ("success", "error"):
        RECONCILES.labels(result=result)
        RECONCILE_SECONDS.labels(result=result)
    for fmt in FORMATS:
        for outcome in OUTCOMES:
            QUANTIZATION_JOBS.labels(format=fmt, outcome=outcome)
