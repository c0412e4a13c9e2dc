"""With the podFailurePolicy, a permanent quantizer exit fails the Job at once (reason
PodFailurePolicy, not BackoffLimitExceeded); the operator still reads the quantizer's JSON
termination message: QualityGateFailed keeps its reason, other failures quote the exit."""

from __future__ import annotations

import json
from typing import Any

from test_faults import NS, _job, pod, world  # noqa: F401  (world is a fixture)

from slm_operator.podfaults import summarise


def _fail(w: Any, code: int, message: str) -> str:
    job = _job(w)["metadata"]["name"]
    w.cache.put_pod(summarise(pod(f"{job}-aaaaa", owner=w.name, component="quantizer", job=job, phase="Failed",
                                  container="quantize",
                                  state={"terminated": {"exitCode": code, "reason": "Error", "message": message}})))
    live = w.cache.get("Job", NS, job)
    live["status"] = {"conditions": [{
        "type": "Failed", "status": "True", "reason": "PodFailurePolicy",
        "message": f"Container quantize for pod {NS}/{job}-aaaaa failed with exit code {code} matching FailJob "
                   "rule at index 0"}]}
    w.cache.put("Job", live)
    w.run()
    return job


def test_gate_failure_under_the_pod_failure_policy(world: Any) -> None:  # noqa: F811
    w = world
    w.run()
    w.live_children()
    gate = json.dumps({"result": "GateFailed", "message": "perplexity rose 12.0% (limit 5%)"})
    job = _fail(w, 3, gate)
    assert w.cond("Degraded")["reason"] == "QualityGateFailed"
    assert w.cond("Degraded")["message"] == f"Job {job} failed: perplexity rose 12.0% (limit 5%)"


def test_permanent_source_error_under_the_pod_failure_policy(world: Any) -> None:  # noqa: F811
    w = world
    w.run()
    w.live_children()
    msg = json.dumps({"result": "SourceError", "message": "download of a/b@main failed: RepositoryNotFoundError"})
    job = _fail(w, 2, msg)
    deg = w.cond("Degraded")
    assert deg["reason"] == "QuantizationFailed"
    assert deg["message"].startswith(f"Job {job} failed (PodFailurePolicy: ")
    assert "exit code 2" in deg["message"]
