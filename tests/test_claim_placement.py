"""Several pods on one model claim (item 12): pods that mount a ReadWriteOnce claim are kept on
one node (required pod affinity: the serving replicas, a rollout's surge pod, the Job);
ReadWriteMany lets them spread. docs/sizing.md "Replicas and the model claim" states the design.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_operator import api
from slm_operator.render import render
from slm_operator.validate import defaulted

ROOT = Path(__file__).resolve().parents[1]
ONNX = {"model": {"source": "hf://Qwen/Qwen3-0.6B"}, "engine": {"name": "onnxruntime"},
        "quantization": {"format": "onnx", "type": "int4"}, "replicas": 2}
VLLM_AUTOSCALED = {"model": {"source": "hf://microsoft/Phi-4-mini-instruct"}, "engine": {"name": "vllm"},
                   "quantization": {"format": "awq"}, "resources": {"gpu": {"count": 1, "product": "NVIDIA-L4"}},
                   "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}
FROM_PVC = {"model": {"source": "pvc://models/qwen3"}, "engine": {"name": "vllm"},
            "quantization": {"format": "none"}, "resources": {"gpu": {"count": 1, "product": "NVIDIA-L4"}},
            "replicas": 2}


def _cr(spec: dict[str, Any], access: str | None = None, name: str = "m") -> api.SLMDeployment:
    spec = copy.deepcopy(spec)
    if access:
        spec["storage"] = {"accessMode": access}
    body = {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment",
            "metadata": {"name": name, "namespace": "ns", "uid": "u"}, "spec": spec}
    return api.SLMDeployment.model_validate(defaulted(body))


def _claim_pods(objs: list[dict]) -> list[tuple[str, dict, dict]]:
    """(kind, pod template labels, pod spec) of every pod that mounts a claim."""
    out = []
    for o in objs:
        if o["kind"] in ("Deployment", "Job"):
            tpl = o["spec"]["template"]
            if any("persistentVolumeClaim" in v for v in tpl["spec"]["volumes"]):
                out.append((o["kind"], tpl["metadata"]["labels"], tpl["spec"]))
    return out


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


@pytest.mark.parametrize("spec", [ONNX, VLLM_AUTOSCALED, FROM_PVC], ids=["onnx-2", "vllm-autoscaled", "pvc-source"])
def test_read_write_once_keeps_every_pod_of_the_claim_on_one_node(spec):
    pods = _claim_pods(render(_cr(spec)))
    assert pods
    for kind, _, pod in pods:
        terms = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert [t["topologyKey"] for t in terms] == ["kubernetes.io/hostname"], kind
        # The term selects every pod of the claim (Job and replicas), itself included, so the
        # first pod schedules anywhere and the rest follow it.
        for _, labels, _ in pods:
            assert _matches(terms[0]["labelSelector"], labels)
        assert "topologySpreadConstraints" not in pod


@pytest.mark.parametrize("spec", [ONNX, VLLM_AUTOSCALED], ids=["onnx-2", "vllm-autoscaled"])
def test_read_write_many_spreads_the_replicas(spec):
    objs = render(_cr(spec, "ReadWriteMany"))
    pvc = next(o for o in objs if o["kind"] == "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for kind, labels, pod in _claim_pods(objs):
        assert "affinity" not in pod, kind
        if kind == "Deployment":
            spread = pod["topologySpreadConstraints"][0]
            assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["whenUnsatisfiable"] == "ScheduleAnyway"
            assert _matches(spread["labelSelector"], labels)


def test_other_deployments_are_not_pulled_along():
    a = _claim_pods(render(_cr(ONNX, name="a")))
    b = _claim_pods(render(_cr(ONNX, name="b")))
    sel_a = a[0][2]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["labelSelector"]
    assert not any(_matches(sel_a, labels) for _, labels, _ in b)


def test_the_two_replica_example_is_placed_correctly():
    body = yaml.safe_load((ROOT / "examples" / "qwen3-0.6b-onnx-cpu.yaml").read_text())
    body["metadata"] = {**body["metadata"], "namespace": "ns", "uid": "u"}
    cr = api.SLMDeployment.model_validate(defaulted(body))
    dep = next(o for o in render(cr) if o["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    if cr.spec.storage.access_mode == "ReadWriteMany":
        assert "topologySpreadConstraints" in pod
    else:  # one node holds the claim: both replicas and the surge pod go there
        assert pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
