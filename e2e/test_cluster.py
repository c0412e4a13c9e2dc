"""The local control plane is a real Kubernetes: controllers, scheduler, RBAC, tokens, CEL, storage."""

from __future__ import annotations

import os
import stat
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.helpers import (
    CLUSTER_DIR,
    KubectlError,
    apply,
    condition_status,
    kubectl,
    kubectl_json,
    restricted_pod_spec,
    wait_for,
    wait_for_condition,
    wait_for_object,
)

pytestmark = pytest.mark.e2e


def _kwok_nodes(kubeconfig: str, selector: str = "type=kwok") -> set[str]:
    nodes = kubectl_json(kubeconfig, "get", "nodes", "-l", selector)["items"]
    return {n["metadata"]["name"] for n in nodes}


def test_cluster_has_ready_gpu_and_cpu_nodes(kubeconfig: str) -> None:
    nodes = {n["metadata"]["name"]: n for n in kubectl_json(kubeconfig, "get", "nodes")["items"]}
    assert {"gpu-0", "gpu-1", "cpu-0", "cpu-1"} <= set(nodes)
    for name in ("gpu-0", "gpu-1"):
        node = nodes[name]
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-L4"
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert "nvidia.com/gpu" not in nodes["cpu-0"]["status"]["allocatable"]
    for node in nodes.values():
        assert condition_status(node, "Ready") == "True", node["metadata"]["name"]


def test_deployment_pods_become_ready_on_kwok_nodes(kubeconfig: str, namespace: str) -> None:
    labels = {"app": "web"}
    apply(
        kubeconfig,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": restricted_pod_spec([{"name": "web", "resources": {"requests": {"cpu": "100m"}}}]),
                },
            },
        },
        namespace=namespace,
    )
    wait_for_object(
        kubeconfig,
        "-n",
        namespace,
        "deployment",
        "web",
        predicate=lambda d: d["status"].get("readyReplicas") == 3,
    )
    pods = kubectl_json(kubeconfig, "-n", namespace, "get", "pods", "-l", "app=web")["items"]
    assert len(pods) == 3
    kwok_nodes = _kwok_nodes(kubeconfig)
    for pod in pods:
        assert pod["spec"]["nodeName"] in kwok_nodes
        assert pod["status"]["phase"] == "Running"
        assert condition_status(pod, "Ready") == "True"
        # The ReplicaSet controller made them, owned by the Deployment's ReplicaSet.
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"


def test_job_completes(kubeconfig: str, namespace: str) -> None:
    apply(
        kubeconfig,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "quantize"},
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": restricted_pod_spec([{"name": "work"}], restartPolicy="Never")},
            },
        },
        namespace=namespace,
    )
    job = wait_for_condition(kubeconfig, "-n", namespace, "job", "quantize", type_="Complete")
    assert job["status"]["succeeded"] == 1
    pods = kubectl_json(kubeconfig, "-n", namespace, "get", "pods", "-l", "job-name=quantize")["items"]
    assert [p["status"]["phase"] for p in pods] == ["Succeeded"]


def test_deleting_an_owner_garbage_collects_its_children(kubeconfig: str, namespace: str) -> None:
    apply(
        kubeconfig,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}},
        namespace=namespace,
    )
    owner = kubectl_json(kubeconfig, "-n", namespace, "get", "configmap", "owner")
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    children: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "child-cm", "ownerReferences": [ref]}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "child-secret", "ownerReferences": [ref]},
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bystander"}},
    ]
    apply(kubeconfig, *children, namespace=namespace)

    kubectl(kubeconfig, "-n", namespace, "delete", "configmap", "owner")
    wait_for(
        lambda: (
            not kubectl(
                kubeconfig,
                "-n",
                namespace,
                "get",
                "configmap/child-cm",
                "secret/child-secret",
                "--ignore-not-found",
                "-o",
                "name",
            ).strip()
        ),
        timeout=60,
        what="the garbage collector to delete the owned ConfigMap and Secret",
    )
    assert kubectl(kubeconfig, "-n", namespace, "get", "configmap", "bystander", "-o", "name").strip()


def _token_kubeconfig(admin_kubeconfig: str, token: str, directory: Path) -> Path:
    """A kubeconfig (mode 0600) that authenticates with a bearer token instead of a client cert."""
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": admin["clusters"][0]["name"], "user": "sa"}}],
        "current-context": "sa",
    }
    path = directory / "sa.kubeconfig"
    path.touch(mode=stat.S_IRUSR | stat.S_IWUSR)
    path.write_text(yaml.safe_dump(config))
    return path


def test_serviceaccount_token_is_confined_by_its_role(kubeconfig: str, make_namespace: Callable[..., str]) -> None:
    home, other = make_namespace(), make_namespace()
    rules = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]
    apply(
        kubeconfig,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "secret-reader"},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secret-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": home}],
        },
        namespace=home,
    )
    # TokenRequest API: a short-lived, audience-bound token signed by the API server.
    token = kubectl(kubeconfig, "-n", home, "create", "token", "reader", "--duration", "10m").strip()
    assert token.count(".") == 2  # a JWT

    with tempfile.TemporaryDirectory() as tmp:
        sa_config = _token_kubeconfig(kubeconfig, token, Path(tmp))
        who = kubectl_json(str(sa_config), "auth", "whoami")
        assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{home}:reader"
        assert kubectl(str(sa_config), "-n", home, "get", "secrets", "-o", "name") is not None
        with pytest.raises(KubectlError) as denied:
            kubectl(str(sa_config), "-n", other, "get", "secrets")
        assert "forbidden" in denied.value.stderr.lower()
        assert f'cannot list resource "secrets" in API group "" in the namespace "{other}"' in denied.value.stderr
        with pytest.raises(KubectlError):
            kubectl(str(sa_config), "-n", home, "delete", "secret", "anything")
        assert not os.stat(sa_config).st_mode & (stat.S_IRWXG | stat.S_IRWXO)


CEL_MESSAGE = "minReplicas must not exceed maxReplicas"


def test_crd_cel_rule_rejects_a_violating_object(kubeconfig: str, namespace: str) -> None:
    group = f"e2e{uuid.uuid4().hex[:6]}.slm.ai"  # CRDs are cluster-wide: a group per run
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"scalers.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "scalers", "singular": "scaler", "kind": "Scaler", "listKind": "ScalerList"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "minReplicas": {"type": "integer", "minimum": 0},
                                        "maxReplicas": {"type": "integer", "minimum": 1},
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.minReplicas <= self.maxReplicas",
                                            "message": CEL_MESSAGE,
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    apply(kubeconfig, crd)
    try:
        kubectl(kubeconfig, "wait", "--for=condition=Established", f"crd/scalers.{group}", "--timeout=30s")

        def scaler(name: str, low: int, high: int) -> dict[str, Any]:
            return {
                "apiVersion": f"{group}/v1",
                "kind": "Scaler",
                "metadata": {"name": name},
                "spec": {"minReplicas": low, "maxReplicas": high},
            }

        # Discovery of the new group can lag a moment behind Established.
        wait_for(
            lambda: apply(kubeconfig, scaler("fine", 1, 3), namespace=namespace),
            timeout=30,
            what="a valid Scaler to be accepted",
        )
        with pytest.raises(KubectlError) as rejected:
            apply(kubeconfig, scaler("inverted", 5, 2), namespace=namespace)
        assert CEL_MESSAGE in rejected.value.stderr
        assert "Invalid value" in rejected.value.stderr
        assert not kubectl(
            kubeconfig,
            "-n",
            namespace,
            "get",
            f"scalers.{group}",
            "inverted",
            "--ignore-not-found",
            "-o",
            "name",
        ).strip()
    finally:
        kubectl(kubeconfig, "delete", "crd", f"scalers.{group}", "--wait=false", "--ignore-not-found")


def _gpu_pod(name: str, node_label: str, tolerate: bool) -> dict[str, Any]:
    extra: dict[str, Any] = {"restartPolicy": "Never", "nodeSelector": {"slm.ai/e2e-node": node_label}}
    if tolerate:
        extra["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    container = {"name": "engine", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": restricted_pod_spec([container], **extra),
    }


def test_gpu_pod_lands_on_a_gpu_node_only_with_the_toleration(kubeconfig: str, namespace: str) -> None:
    # A GPU node of this test's own, shaped like gpu-0 (other sessions may fill the shared ones).
    nodes = yaml.safe_load_all((CLUSTER_DIR / "manifests" / "nodes.yaml").read_text())
    node = next(n for n in nodes if n["metadata"]["name"] == "gpu-0")
    name = f"e2e-gpu-{uuid.uuid4().hex[:6]}"
    node["metadata"]["name"] = name
    node["metadata"]["labels"].update({"kubernetes.io/hostname": name, "slm.ai/e2e-node": name})
    apply(kubeconfig, node)
    try:
        wait_for_condition(kubeconfig, "node", name, type_="Ready")
        apply(
            kubeconfig,
            _gpu_pod("tolerant", name, tolerate=True),
            _gpu_pod("intolerant", name, tolerate=False),
            namespace=namespace,
        )
        pod = wait_for_condition(kubeconfig, "-n", namespace, "pod", "tolerant", type_="Ready")
        assert pod["spec"]["nodeName"] == name
        assert pod["status"]["phase"] == "Running"

        # Without the toleration the node's nvidia.com/gpu taint refuses it.
        refused = wait_for_condition(
            kubeconfig, "-n", namespace, "pod", "intolerant", type_="PodScheduled", status="False"
        )
        assert not refused["spec"].get("nodeName")
        message = next(c["message"] for c in refused["status"]["conditions"] if c["type"] == "PodScheduled")
        assert "untolerated taint" in message, message

        # The node's single GPU is taken: a second tolerant pod must wait.
        apply(kubeconfig, _gpu_pod("second", name, tolerate=True), namespace=namespace)
        waiting = wait_for_condition(kubeconfig, "-n", namespace, "pod", "second", type_="PodScheduled", status="False")
        assert "Insufficient nvidia.com/gpu" in str(waiting["status"]["conditions"])
    finally:
        kubectl(kubeconfig, "delete", "node", name, "--wait=false", "--ignore-not-found")


def test_pvc_of_the_default_class_is_bound_and_its_volume_reclaimed(kubeconfig: str, namespace: str) -> None:
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "models"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "3Gi"}}},
    }
    apply(kubeconfig, pvc, namespace=namespace)
    # The in-tree PV controller binds claims one at a time: allow for a backlog on a shared cluster.
    claim = wait_for_object(
        kubeconfig,
        "-n",
        namespace,
        "pvc",
        "models",
        predicate=lambda c: c["status"].get("phase") == "Bound",
        timeout=240,
    )
    assert claim["spec"]["storageClassName"] == "standard"  # the default class was filled in
    volume_name = claim["spec"]["volumeName"]
    volume = kubectl_json(kubeconfig, "get", "pv", volume_name)
    assert volume["spec"]["capacity"]["storage"] == "3Gi"
    assert volume["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
    assert volume["status"]["phase"] == "Bound"

    kubectl(kubeconfig, "-n", namespace, "delete", "pvc", "models")
    wait_for(
        lambda: not kubectl(kubeconfig, "get", "pv", volume_name, "--ignore-not-found", "-o", "name").strip(),
        timeout=240,
        what="the released volume to be deleted",
    )
