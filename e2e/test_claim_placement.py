"""Item 12 on the test's own KWOK nodes: the rendered serving pods of a ReadWriteOnce model claim
all land on one node (the scheduler honours the pod affinity render gives them); with
ReadWriteMany they spread over the CPU nodes. The claim itself is swapped for an emptyDir (KWOK
has no storage); the placement rules, labels and resources are render's own."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from e2e.helpers import FAKE_IMAGE, apply, kubectl_json, wait_for
from slm_operator import api
from slm_operator.render import render
from slm_operator.validate import defaulted

pytestmark = pytest.mark.e2e

SPEC = {"model": {"source": "hf://Qwen/Qwen3-0.6B"}, "engine": {"name": "onnxruntime"},
        "quantization": {"format": "onnx", "type": "int4"}, "replicas": 4}


def _deployment(name: str, namespace: str, access: str) -> dict[str, Any]:
    spec = {**copy.deepcopy(SPEC), "storage": {"accessMode": access}}
    body = {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment",
            "metadata": {"name": name, "namespace": namespace, "uid": "u"}, "spec": spec}
    dep = next(o for o in render(api.SLMDeployment.model_validate(defaulted(body))) if o["kind"] == "Deployment")
    dep["metadata"].pop("ownerReferences", None)
    pod = dep["spec"]["template"]["spec"]
    pod["volumes"] = [{"name": v["name"], "emptyDir": {}} if "emptyDir" not in v else v for v in pod["volumes"]]
    for c in pod["containers"]:
        c["image"] = FAKE_IMAGE
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            c.pop(probe, None)
    return dep


def _nodes_of(kubeconfig: str, namespace: str, name: str, want: int) -> list[str]:
    def placed() -> list[str] | None:
        pods = kubectl_json(kubeconfig, "-n", namespace, "get", "pods", "-l", f"slm.ai/deployment={name}")["items"]
        nodes = [p["spec"].get("nodeName") for p in pods if not p["metadata"].get("deletionTimestamp")]
        return nodes if len(nodes) == want and all(nodes) else None

    return wait_for(placed, timeout=120, what=f"{want} scheduled pods of {name}")


def test_read_write_once_replicas_share_the_claims_node(kubeconfig: str, namespace: str) -> None:
    apply(kubeconfig, _deployment("rwo", namespace, "ReadWriteOnce"), namespace=namespace)
    nodes = _nodes_of(kubeconfig, namespace, "rwo", 4)
    assert len(set(nodes)) == 1, nodes
    assert nodes[0].startswith("cpu-")


def test_read_write_many_replicas_spread(kubeconfig: str, namespace: str) -> None:
    apply(kubeconfig, _deployment("rwx", namespace, "ReadWriteMany"), namespace=namespace)
    nodes = _nodes_of(kubeconfig, namespace, "rwx", 4)
    assert len(set(nodes)) == 2, nodes  # both CPU nodes (the GPU nodes are tainted)
