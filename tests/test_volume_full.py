"""A quantization that fills its model-cache volume (issue 18 item 6): observe_artifact turns the
quantizer's DiskFull summary into Degraded InsufficientStorage naming the claim and the size to
ask for; the Job carries its claim's size so the reconciler reruns it once the claim is larger.
The whole path on a real node with a fixed-capacity volume: e2e/test_realnode_full_disk.py."""

from __future__ import annotations

import json

from slm_operator import constants as c
from slm_operator.observe import FAILED, ArtifactWant, observe_artifact, size_quantity
from slm_operator.podfaults import summarise

WANT = ArtifactWant(key="k1", fmt="gguf", qtype="Q4_K_M", location="/models/artifacts/gguf-q4-k1",
                    job="m-quantize-k1", source="hf://Qwen/Qwen3-0.6B", claim="m-model-cache")
SUMMARY = {"result": "DiskFull", "message": "the model-cache volume is full (55 MiB in all, 40 MiB free once "
           "the partial artifact was removed): this gguf quantization needs about 130 MiB for a 36 MiB source",
           "bytesCapacity": 57_671_680, "bytesFree": 41_943_040, "sourceBytes": 37_748_736,
           "bytesNeeded": 135_895_450}


def _pod(exit_code: int, message: str) -> dict:
    return summarise({"metadata": {"name": "p", "namespace": "ns", "labels": {"job-name": WANT.job},
                                   "creationTimestamp": "2026-03-01T10:00:00Z"},
                      "spec": {"containers": [{"name": "quantize"}]},
                      "status": {"phase": "Failed", "containerStatuses": [{
                          "name": "quantize", "state": {"terminated": {"exitCode": exit_code, "message": message}}}]}})


def test_a_full_volume_is_degraded_insufficient_storage_naming_claim_and_size() -> None:
    job = {"metadata": {"name": WANT.job, "namespace": "ns", "uid": "j"}, "spec": {"backoffLimit": 2},
           "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}]}}
    v = observe_artifact({}, job, [_pod(7, json.dumps(SUMMARY))], WANT)
    assert v.volume_full and v.job_outcome == FAILED and not v.ready
    assert v.problem is not None and v.problem.reason == c.R_INSUFFICIENT_STORAGE == v.model.reason
    msg = v.problem.message
    assert "m-model-cache" in msg and "spec.storage.size to at least 130Mi" in msg
    assert "needs about 130 MiB" in msg and "No partial artifact" in msg
    # Exit 7 is permanent: final before the Job's Failed condition arrives.
    running = {**job, "status": {"active": 1}}
    assert observe_artifact({}, running, [_pod(7, json.dumps(SUMMARY))], WANT).volume_full


def test_other_failures_are_not_volume_full() -> None:
    job = {"metadata": {"name": WANT.job, "namespace": "ns", "uid": "j"}, "spec": {"backoffLimit": 2},
           "status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    v = observe_artifact({}, job, [_pod(6, json.dumps({"result": "ConversionFailed", "message": "x"}))], WANT)
    assert not v.volume_full and v.problem is not None and v.problem.reason == c.R_QUANTIZATION_FAILED


def test_size_quantity_rounds_up() -> None:
    assert [size_quantity(n) for n in (1, 1 << 20, (1 << 20) + 1, 1 << 30, (1 << 30) + 1)] == \
        ["1Mi", "1Mi", "2Mi", "1Gi", "2Gi"]


def test_the_job_records_its_claim_size() -> None:
    """The Job's A_CLAIM_SIZE annotation is the claim's request when it was made (what the
    reconciler compares the grown claim's capacity with); its name does not depend on it."""
    from test_render import ONNX, cr

    from slm_operator.render import plan

    small = plan(cr({**ONNX, "storage": {"size": "1Gi"}}))
    big = plan(cr({**ONNX, "storage": {"size": "2Gi"}}))
    assert small.job["metadata"]["annotations"][c.A_CLAIM_SIZE] == "1Gi"
    assert big.job["metadata"]["annotations"][c.A_CLAIM_SIZE] == "2Gi"
    assert small.job["metadata"]["name"] == big.job["metadata"]["name"]
