"""The reconciler against the real local control plane: every example converges to Ready,
children are owned and restricted, drift is undone, deletion respects retainPolicy, bad
input is rejected at admission or surfaces as Degraded, and a quiet cluster costs no writes.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.helpers import (
    KubectlError,
    condition_status,
    kubectl,
    kubectl_json,
    run_operator,
    wait_for,
    wait_for_condition,
    wait_for_object,
)

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
INVALID = list(yaml.safe_load_all((ROOT / "tests/data/invalid-crs.yaml").read_text()))
CHILD_KINDS = "secrets,pvc,networkpolicies,services,jobs,deployments,hpa,pdb"


@pytest.fixture(scope="session")
def crd(kubeconfig: str) -> str:
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    kubectl(kubeconfig, "wait", "--for=condition=Established", "crd/slmdeployments.slm.ai", "--timeout=60s")
    return kubeconfig


def _example(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _local_metrics(port: int) -> list[str]:
    """The operator's metrics on 127.0.0.1:`port` only (its default, 0.0.0.0, is for a pod)."""
    return ["--metrics-port", str(port), "--metrics-address", "127.0.0.1"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(kc: str, ns: str, name: str, timeout: float = 120) -> dict[str, Any]:
    return wait_for_condition(kc, "-n", ns, "slm", name, type_="Ready", timeout=timeout)


def test_every_example_converges_with_owned_restricted_children(crd: str, namespace: str) -> None:
    kc = crd
    kubectl(kc, "-n", namespace, "create", "secret", "generic", "hf-token", "--from-literal=token=hf_e2e_dummy")
    names = [_example(p)["metadata"]["name"] for p in EXAMPLES]
    with run_operator(kc, [namespace]) as op:
        for path in EXAMPLES:
            kubectl(kc, "-n", namespace, "apply", "-f", str(path))
        for name in names:
            cr = _ready(kc, namespace, name, timeout=180)
            st = cr["status"]
            assert st["endpoint"] == f"http://{name}.{namespace}.svc:8000/v1"
            assert st["artifact"]["ready"] is True
            assert st["observedGeneration"] == cr["metadata"]["generation"]
            uid = cr["metadata"]["uid"]
            children = kubectl_json(kc, "-n", namespace, "get", CHILD_KINDS, "-l", f"slm.ai/deployment={name}")
            kinds = {o["kind"] for o in children["items"]}
            assert {"PersistentVolumeClaim", "NetworkPolicy", "Service", "Job", "Deployment"} <= kinds, kinds
            for obj in children["items"]:
                if obj["kind"] == "PersistentVolumeClaim" and cr["spec"]["storage"]["retainPolicy"] == "Retain":
                    assert not obj["metadata"].get("ownerReferences")
                    continue
                refs = obj["metadata"]["ownerReferences"]
                assert refs[0]["uid"] == uid and refs[0]["controller"] is True, obj["metadata"]["name"]
            for obj in children["items"]:
                if obj["kind"] in ("Deployment", "Job"):
                    pod = obj["spec"]["template"]["spec"]
                    assert pod["securityContext"]["runAsNonRoot"] is True
                    for ctr in pod["containers"]:
                        assert ctr["securityContext"]["capabilities"]["drop"] == ["ALL"]
                        assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
            job = next(o for o in children["items"] if o["kind"] == "Job")
            assert condition_status(job, "Complete") == "True"
            dep = next(o for o in children["items"] if o["kind"] == "Deployment")
            assert condition_status(dep, "Available") == "True"
        # The gated example gets its HPA; the secret reached the Job as a file only.
        hpa = kubectl_json(kc, "-n", namespace, "get", "hpa", "llama32-3b")
        assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Pods", "Pods"]
        job = kubectl_json(kc, "-n", namespace, "get", "jobs", "-l", "slm.ai/deployment=llama32-3b")["items"][0]
        assert "hf_e2e_dummy" not in yaml.safe_dump(job)
        # Pods really ran on the right kind of node (KWOK): GPU pods on GPU nodes.
        pods = kubectl_json(kc, "-n", namespace, "get", "pods", "-l", "slm.ai/deployment=phi4-mini,"
                            "app.kubernetes.io/component=server")["items"]
        assert pods and all(p["spec"]["nodeName"].startswith("gpu-") for p in pods)
        printed = kubectl(kc, "-n", namespace, "get", "slm")
        assert re.search(r"qwen3-small\s+onnxruntime\s+hf://Qwen/Qwen3-0.6B\s+int4\s+True\s+2/2", printed), printed
        assert "Traceback" not in op.output()


def test_edits_and_deletions_of_children_are_undone(crd: str, namespace: str) -> None:
    kc = crd
    with run_operator(kc, [namespace]):
        kubectl(kc, "-n", namespace, "apply", "-f", str(ROOT / "examples/qwen3-0.6b-onnx-cpu.yaml"))
        _ready(kc, namespace, "qwen3-small")
        kubectl(kc, "-n", namespace, "scale", "deployment/qwen3-small", "--replicas=5")
        wait_for_object(kc, "-n", namespace, "deployment", "qwen3-small",
                        predicate=lambda d: d["spec"]["replicas"] == 2, what="replicas reverted to 2")
        kubectl(kc, "-n", namespace, "delete", "service", "qwen3-small")
        wait_for(lambda: kubectl_json(kc, "-n", namespace, "get", "service", "qwen3-small"), timeout=30,
                 what="Service recreated")
        kubectl(kc, "-n", namespace, "patch", "networkpolicy", "qwen3-small-server", "--type=json",
                "-p", '[{"op": "replace", "path": "/spec/egress", "value": [{}]}]')
        wait_for_object(kc, "-n", namespace, "networkpolicy", "qwen3-small-server",
                        predicate=lambda n: n["spec"]["egress"][0].get("ports"), what="egress restored")


@pytest.mark.parametrize("policy, survives", [("Retain", True), ("Delete", False)])
def test_delete_cr_keeps_cache_only_under_retain(crd: str, namespace: str, policy: str, survives: bool) -> None:
    kc = crd
    cr = _example(ROOT / "examples/gemma3-1b-ollama-gguf.yaml")
    cr["spec"]["storage"] = {"retainPolicy": policy}
    with run_operator(kc, [namespace]):
        kubectl(kc, "-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(cr))
        _ready(kc, namespace, "gemma3-1b")
        kubectl(kc, "-n", namespace, "delete", "slm", "gemma3-1b", "--wait=true", timeout=60)
        wait_for(lambda: not kubectl_json(kc, "-n", namespace, "get", "deployments,services,jobs")["items"],
                 timeout=60, what="children garbage-collected")
        if survives:
            time.sleep(3)
            pvc = kubectl_json(kc, "-n", namespace, "get", "pvc", "gemma3-1b-model-cache")
            assert pvc["metadata"].get("deletionTimestamp") is None
        else:
            wait_for(lambda: not kubectl_json(kc, "-n", namespace, "get", "pvc")["items"], timeout=60,
                     what="model cache PVC deleted")


def test_invalid_crs_rejected_at_admission_naming_the_field(crd: str, namespace: str) -> None:
    assert len(INVALID) >= 20
    failures = []
    for doc in INVALID:
        expect = doc["metadata"]["annotations"]["test.slm.ai/expect"]
        try:
            kubectl(crd, "-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(doc))
        except KubectlError as e:
            if expect not in e.stderr:
                failures.append(f"{doc['metadata']['annotations']['test.slm.ai/case']}: {e.stderr.strip()}")
            continue
        failures.append(f"{doc['metadata']['annotations']['test.slm.ai/case']}: was admitted")
    assert not failures, "\n".join(failures)


def test_immutable_source_and_storage_class(crd: str, namespace: str) -> None:
    cr = _example(ROOT / "examples/qwen3-0.6b-onnx-cpu.yaml")
    cr["spec"]["storage"] = {"storageClassName": "standard"}
    kubectl(crd, "-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(cr))
    cr["spec"]["model"]["source"] = "hf://Qwen/Qwen3-1.7B"
    with pytest.raises(KubectlError, match=r"model\.source is immutable"):
        kubectl(crd, "-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(cr))
    cr["spec"]["model"]["source"] = "hf://Qwen/Qwen3-0.6B"
    cr["spec"]["storage"]["storageClassName"] = "fast"
    with pytest.raises(KubectlError, match=r"storage\.storageClassName is immutable"):
        kubectl(crd, "-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(cr))


def test_missing_secret_is_degraded_then_recovers(crd: str, namespace: str) -> None:
    kc = crd
    with run_operator(kc, [namespace]):
        kubectl(kc, "-n", namespace, "apply", "-f", str(ROOT / "examples/gated-llama-autoscaled.yaml"))
        cr = wait_for_condition(kc, "-n", namespace, "slm", "llama32-3b", type_="Degraded", timeout=60)
        deg = next(c for c in cr["status"]["conditions"] if c["type"] == "Degraded")
        assert deg["reason"] == "SecretNotFound" and "hf-token" in deg["message"]
        assert "spec.model.tokenSecretRef" in deg["message"]
        events = wait_for(lambda: [e for e in kubectl_json(kc, "-n", namespace, "get", "events")["items"]
                                   if e["type"] == "Warning" and e["reason"] == "SecretNotFound"],
                          timeout=30, what="a Warning event")
        assert events[0]["involvedObject"]["name"] == "llama32-3b"
        assert not kubectl_json(kc, "-n", namespace, "get", "jobs")["items"], "no Job without its token"
        kubectl(kc, "-n", namespace, "create", "secret", "generic", "hf-token", "--from-literal=token=x")
        cr = _ready(kc, namespace, "llama32-3b", timeout=120)
        assert condition_status(cr, "Degraded") == "False"


def test_quiet_cluster_costs_no_writes_even_across_restart(crd: str, namespace: str) -> None:
    kc = crd
    port = _free_port()
    with run_operator(kc, [namespace], extra_args=_local_metrics(port)):
        kubectl(kc, "-n", namespace, "apply", "-f", str(ROOT / "examples/qwen3-0.6b-onnx-cpu.yaml"))
        _ready(kc, namespace, "qwen3-small")
        time.sleep(3)
        before = _metric(port, "slm_operator_api_writes_total")
        status_before = _metric(port, 'slm_operator_api_requests_total{kind="SLMDeployment/status"')
        time.sleep(10)
        assert _metric(port, "slm_operator_api_writes_total") == before
        assert _metric(port, 'slm_operator_api_requests_total{kind="SLMDeployment/status"') == status_before
    port = _free_port()
    with run_operator(kc, [namespace], extra_args=_local_metrics(port)) as op:
        op.wait_for_output("slm-operator started", timeout=60)
        time.sleep(8)
        writes = _metric(port, "slm_operator_api_writes_total")
        status = _metric(port, 'slm_operator_api_requests_total{kind="SLMDeployment/status"')
        reconciles = _metric(port, 'slm_operator_reconciles_total{result="success"}')
        assert reconciles >= 1, "the restarted operator did look at the CR"
        assert writes == 0 and status == 0, f"restart wrote {writes} children and {status} statuses"


def test_sizing_in_the_cluster(crd: str, namespace: str) -> None:
    """Omitted resources get sized requests; a model that cannot fit is refused with numbers."""
    kc = crd
    fits = {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment", "metadata": {"name": "sized"},
            "spec": {"model": {"source": "hf://Qwen/Qwen3-1.7B", "revision": "main"}}}
    too_big = {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment", "metadata": {"name": "too-big"},
               "spec": {"model": {"source": "hf://Qwen/Qwen3-14B", "revision": "main"}, "engine": {"name": "vllm"},
                        "quantization": {"format": "none", "type": "bf16"},
                        "resources": {"gpu": {"count": 1, "product": "Tesla-T4"}}}}
    with run_operator(kc, [namespace]):
        kubectl(kc, "-n", namespace, "apply", "-f", "-", input=yaml.safe_dump_all([fits, too_big]))
        cr = _ready(kc, namespace, "sized", timeout=120)
        assert cr["status"]["engine"] in ("onnxruntime", "ollama")
        assert cr["status"]["sizing"]["tier"] == "Small"
        dep = kubectl_json(kc, "-n", namespace, "get", "deployment", "sized")
        req = dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
        from slm_operator.diff import parse_quantity

        assert parse_quantity(req["memory"]) >= 2 * 2**30, req  # 1.7B int4 + KV + runtime
        bad = wait_for_condition(kc, "-n", namespace, "slm", "too-big", type_="Degraded", timeout=60)
        deg = next(c for c in bad["status"]["conditions"] if c["type"] == "Degraded")
        assert deg["reason"] == "DoesNotFit"
        assert "GiB" in deg["message"] and "Tesla-T4" in deg["message"] and "awq" in deg["message"]
        assert not kubectl_json(kc, "-n", namespace, "get", "jobs,deployments", "-l",
                                "slm.ai/deployment=too-big")["items"], "nothing is started for a misfit"


def _degraded(kc: str, ns: str, name: str, reason: str, timeout: float = 30) -> dict[str, Any]:
    cr = wait_for_object(kc, "-n", ns, "slm", name, timeout=timeout, what=f"Degraded {reason}",
                         predicate=lambda o: any(c["type"] == "Degraded" and c["status"] == "True"
                                                 and c["reason"] == reason
                                                 for c in (o.get("status") or {}).get("conditions") or []))
    return next(c for c in cr["status"]["conditions"] if c["type"] == "Degraded")


def test_pod_fault_shows_in_status_within_seconds_and_clears(crd: str, namespace: str) -> None:
    """KWOK cannot pull images, so the kubelet's report is written by hand into a serving pod's
    status: the operator's pod watch must turn it into Degraded (reason, sentence naming the
    Deployment and the pod, a Warning Event) and back once the pod runs again."""
    kc = crd
    with run_operator(kc, [namespace]) as op:
        kubectl(kc, "-n", namespace, "apply", "-f", str(ROOT / "examples/qwen3-0.6b-onnx-cpu.yaml"))
        _ready(kc, namespace, "qwen3-small")
        pods = kubectl_json(kc, "-n", namespace, "get", "pods", "-l",
                            "slm.ai/deployment=qwen3-small,app.kubernetes.io/component=server")["items"]
        victim = pods[0]
        healthy = {"status": {"conditions": victim["status"]["conditions"],
                              "containerStatuses": victim["status"]["containerStatuses"]}}
        ctr = victim["spec"]["containers"][0]
        pull = {"status": {
            "conditions": [{**x, "status": "False"} if x["type"] in ("Ready", "ContainersReady") else x
                           for x in victim["status"]["conditions"]],
            "containerStatuses": [{
                "name": ctr["name"], "image": ctr["image"], "imageID": "", "ready": False, "restartCount": 0,
                "started": False, "state": {"waiting": {
                    "reason": "ImagePullBackOff",
                    "message": f'Back-off pulling image "{ctr["image"]}": ErrImagePull: not found'}}}]}}
        started = time.monotonic()
        kubectl(kc, "-n", namespace, "patch", "pod", victim["metadata"]["name"], "--subresource=status",
                "--type=merge", "-p", json.dumps(pull))
        deg = _degraded(kc, namespace, "qwen3-small", "ImagePullFailed", timeout=20)
        assert time.monotonic() - started < 20, "seen through the pod watch, not a periodic resync"
        assert deg["message"].startswith(f"Deployment qwen3-small pod {victim['metadata']['name']} cannot pull "
                                         f"image {ctr['image']} (ImagePullBackOff: ")
        wait_for(lambda: [e for e in kubectl_json(kc, "-n", namespace, "get", "events")["items"]
                          if e["type"] == "Warning" and e["reason"] == "ImagePullFailed"
                          and e["involvedObject"]["name"] == "qwen3-small"], timeout=20, what="a Warning Event")
        kubectl(kc, "-n", namespace, "patch", "pod", victim["metadata"]["name"], "--subresource=status",
                "--type=merge", "-p", json.dumps(healthy))
        cr = _ready(kc, namespace, "qwen3-small", timeout=30)
        assert condition_status(cr, "Degraded") == "False"
        assert "Traceback" not in op.output()


def test_a_write_the_api_server_refuses_is_in_status(crd: str, namespace: str) -> None:
    """A quota that admits no Job: the refusal (403 exceeded quota) is Degraded/ApplyRejected
    naming the Job, not only a line in the operator's log."""
    kc = crd
    kubectl(kc, "-n", namespace, "create", "quota", "no-jobs", "--hard=count/jobs.batch=0")
    with run_operator(kc, [namespace]) as op:
        kubectl(kc, "-n", namespace, "apply", "-f", str(ROOT / "examples/qwen3-0.6b-onnx-cpu.yaml"))
        deg = _degraded(kc, namespace, "qwen3-small", "ApplyRejected", timeout=60)
        assert re.match(r"The API server refused to apply Job qwen3-small-quantize-\w+ \(403\): ", deg["message"])
        assert "quota" in deg["message"]
        cr = kubectl_json(kc, "-n", namespace, "get", "slm", "qwen3-small")
        model = next(c for c in cr["status"]["conditions"] if c["type"] == "ModelReady")
        assert model["reason"] == "ApplyRejected"
        assert "Traceback" not in op.output()


def test_quantize_only_mlx_is_ready_without_serving(crd: str, namespace: str) -> None:
    """serving.enabled: false (what format mlx requires): admission refuses mlx with serving on,
    naming the field; with serving off the Job runs and the CR turns Ready (QuantizeOnly) with the
    artifact in status and no Deployment, Service or HPA."""
    kc = crd
    cr = {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment", "metadata": {"name": "export-mlx"},
          "spec": {"model": {"source": "hf://Qwen/Qwen3-0.6B", "revision": "main"},
                   "quantization": {"format": "mlx", "type": "4bit"}}}
    with pytest.raises(KubectlError, match=r"serving\.enabled"):
        kubectl(kc, "-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(cr))
    cr["spec"]["serving"] = {"enabled": False}
    with run_operator(kc, [namespace]) as op:
        kubectl(kc, "-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(cr))
        got = _ready(kc, namespace, "export-mlx", timeout=180)
        st = got["status"]
        avail = next(x for x in st["conditions"] if x["type"] == "Available")
        assert avail["status"] == "True" and avail["reason"] == "QuantizeOnly", avail
        assert st["artifact"]["ready"] is True and st["artifact"]["location"].startswith("/models/artifacts/mlx-4bit-")
        assert "endpoint" not in st
        kinds = {o["kind"] for o in kubectl_json(kc, "-n", namespace, "get", CHILD_KINDS, "-l",
                                                 "slm.ai/deployment=export-mlx")["items"]}
        assert "Job" in kinds and not kinds & {"Deployment", "Service", "HorizontalPodAutoscaler"}, kinds
        assert "Traceback" not in op.output()
