"""The Helm chart on the local control plane, under the chart's own identity.

The operator pod the chart creates only pretends to run (KWOK), so the operator runs here as
a subprocess with the chart's arguments and environment (read from the installed
Deployment) and a kubeconfig holding the chart ServiceAccount's token, not admin. Then:
- sufficiency: every example reaches Ready and the operator's log holds no 403/Forbidden;
- least privilege: `kubectl auth can-i` as that identity says no to what it has no business
  doing (list Secrets, read Secrets outside its namespaces, RBAC writes, impersonation ...);
- GitOps: the operator's field manager appears in managedFields only on the status
  subresource, and the Argo CD health check maps the live objects as documented;
- lifecycle: `helm upgrade` with changed values rolls out and reaches the operator without
  recreating SLMDeployments; `helm uninstall` leaves the CRD and the SLMDeployments.
SLM_E2E_CAPTURE_ARGOCD=1 also writes the objects to tests/data/argocd/ (for the Lua tests).
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.helpers import (
    CLUSTER_BIN_DIR,
    KubectlError,
    OperatorProcess,
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
CHART = ROOT / "charts" / "slm-operator"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
HEALTH_LUA = ROOT / "docs" / "argocd" / "health.lua"
CAPTURE_DIR = ROOT / "tests" / "data" / "argocd"
CRD = "slmdeployments.slm.ai"
# An RBAC denial ("... is forbidden: User "system:serviceaccount:..." cannot list resource ..."), or
# kopf's fallback when it may not list/watch something. Not a 403 from admission (e.g. a write into
# a namespace being deleted by another test, which says "because it is being terminated").
FORBIDDEN_IN_LOG = re.compile(r'forbidden: User "[^"]*" cannot|Not enough permissions')


# --- helpers -----------------------------------------------------------------------------------


def _helm_bin() -> str:
    path = CLUSTER_BIN_DIR / "helm"
    if not path.exists():
        pytest.skip(f"no helm at {path}: run e2e/cluster/build helm")
    return str(path)


def helm(kc: str, *args: str, timeout: float = 240) -> str:
    done = subprocess.run([_helm_bin(), "--kubeconfig", kc, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _adopt_crd(kc: str, release: str, namespace: str) -> None:
    """Let this release take over a CRD applied earlier by kubectl or by another release.

    Helm refuses to install over objects it does not own; the CRD is cluster-wide and shared by
    the other e2e tests (and kept by `helm uninstall`), so it is re-labelled for each release.
    """
    try:
        kubectl(kc, "get", "crd", CRD, "-o", "name")
    except KubectlError:
        return
    kubectl(kc, "label", "--overwrite", "crd", CRD, "app.kubernetes.io/managed-by=Helm")
    kubectl(kc, "annotate", "--overwrite", "crd", CRD, f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}")


def _sa_kubeconfig(kc: str, namespace: str, sa: str, path: Path) -> str:
    """A kubeconfig for the chart's ServiceAccount (a bound token), same server and CA."""
    admin = json.loads(kubectl(kc, "config", "view", "--raw", "--minify", "-o", "json"))
    cluster = admin["clusters"][0]["cluster"]
    token = kubectl(kc, "-n", namespace, "create", "token", sa, "--duration=2h").strip()
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": namespace}}],
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return str(path)


def _can_i(kc: str, *args: str) -> bool:
    done = subprocess.run(["kubectl", "--kubeconfig", kc, "auth", "can-i", *args], capture_output=True,
                          text=True, timeout=30, check=False)
    answer = done.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {args}: {done.stdout} {done.stderr}"
    return answer == "yes"


def _chart_operator(kc: str, namespace: str, name: str) -> tuple[list[str], dict[str, str]]:
    """The args and literal env of the operator container the chart installed."""
    workload = kubectl_json(kc, "-n", namespace, "get", "deployments,statefulsets", "-l",
                            f"app.kubernetes.io/instance={name},app.kubernetes.io/component=operator")["items"]
    assert len(workload) == 1, workload
    c = workload[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    # Free local ports instead of the pod's 8080/8081 (other tests may run operators here too).
    args = [a for a in c["args"] if not a.startswith(("--metrics-port=", "--liveness="))]
    args += [f"--metrics-port={_free_port()}", f"--liveness=http://127.0.0.1:{_free_port()}/healthz"]
    return args, env


def _assert_no_denials(op: OperatorProcess) -> None:
    denied = [line for line in op.output().splitlines() if FORBIDDEN_IN_LOG.search(line)]
    assert not denied, "the chart's RBAC denied the operator something:\n" + "\n".join(denied[:20])


def _paused(op: OperatorProcess) -> bool:
    """Is this kopf peer standing by? (kopf starts paused; it logs each resume and pause.)"""
    out = op.output()
    return out.rfind("Pausing operations") >= out.rfind("Resuming operations")


def run_health(obj: dict[str, Any]) -> dict[str, str]:
    """docs/argocd/health.lua on a live object, as Argo CD runs it (obj global, returns hs)."""
    lupa = pytest.importorskip("lupa", reason="lupa (dev extra) runs the Argo CD health check")
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(HEALTH_LUA.read_text())
    return {"status": hs["status"], "message": hs["message"]}


def _capture(obj: dict[str, Any], health: str, what: str) -> None:
    assert run_health(obj)["status"] == health, (what, run_health(obj), obj.get("status"))
    if os.environ.get("SLM_E2E_CAPTURE_ARGOCD") != "1":
        return
    clean = copy.deepcopy(obj)
    for key in ("managedFields", "resourceVersion", "uid", "creationTimestamp"):
        clean["metadata"].pop(key, None)
    clean["metadata"]["namespace"] = "team-a"
    text = json.dumps(clean, indent=2, sort_keys=True).replace(obj["metadata"]["namespace"], "team-a")
    CAPTURE_DIR.mkdir(parents=True, exist_ok=True)
    (CAPTURE_DIR / f"{health.lower()}-{what}.json").write_text(text + "\n")


def _example(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


class Release:
    """One `helm install` of the chart (uninstalled at the end)."""

    def __init__(self, kc: str, namespace: str, values: dict[str, Any], tmp: Path) -> None:
        self.kc, self.namespace, self.tmp = kc, namespace, tmp
        self.name = f"slm-e2e-{uuid.uuid4().hex[:6]}"
        self.fullname = f"{self.name}-slm-operator"
        self.values_file = tmp / f"{self.name}.yaml"
        self.values_file.write_text(yaml.safe_dump(values))

    def install(self) -> None:
        _adopt_crd(self.kc, self.name, self.namespace)
        helm(self.kc, "install", self.name, str(CHART), "-n", self.namespace, "-f", str(self.values_file),
             "--wait", "--timeout", "180s")

    def upgrade(self, *sets: str) -> None:
        helm(self.kc, "upgrade", self.name, str(CHART), "-n", self.namespace, "--reuse-values", *sets,
             "--wait", "--timeout", "180s")

    def uninstall(self) -> None:
        helm(self.kc, "uninstall", self.name, "-n", self.namespace, "--wait", "--timeout", "120s")

    def identity(self) -> str:
        return _sa_kubeconfig(self.kc, self.namespace, self.fullname, self.tmp / f"{self.name}-sa.kubeconfig")


@pytest.fixture
def release(kubeconfig: str, tmp_path: Path) -> Iterator[Callable[..., Release]]:
    made: list[Release] = []

    def make(namespace: str, values: dict[str, Any]) -> Release:
        r = Release(kubeconfig, namespace, values, tmp_path)
        r.install()
        made.append(r)
        return r

    yield make
    for r in made:
        subprocess.run([_helm_bin(), "--kubeconfig", kubeconfig, "uninstall", r.name, "-n", r.namespace],
                       capture_output=True, timeout=120, check=False)


def _apply_examples(kc: str, ns: str) -> list[str]:
    kubectl(kc, "-n", ns, "create", "secret", "generic", "hf-token", "--from-literal=token=hf_e2e_dummy")
    for path in EXAMPLES:
        kubectl(kc, "-n", ns, "apply", "--server-side", "--field-manager=argocd-controller", "-f", str(path))
    return [_example(p)["metadata"]["name"] for p in EXAMPLES]


def _ready(kc: str, ns: str, name: str, timeout: float = 180) -> dict[str, Any]:
    return wait_for_condition(kc, "-n", ns, "slm", name, type_="Ready", timeout=timeout)


def _operator_managed_fields(kc: str, ns: str, name: str) -> list[dict[str, Any]]:
    obj = kubectl_json(kc, "-n", ns, "get", "slm", name, "--show-managed-fields")
    return [m for m in obj["metadata"]["managedFields"] if m["manager"] == "slm-operator"]


# --- tests -------------------------------------------------------------------------------------


def _wait_for_quiet_cluster(kc: str, mine: str) -> None:
    """A cluster-wide operator works on every SLMDeployment in the cluster: wait (a while) until
    other tests' (being deleted with their namespaces) are gone, so that this test neither
    waits behind them nor writes into namespaces that are being terminated."""
    def quiet() -> bool:
        items = kubectl_json(kc, "get", "slmdeployments.slm.ai", "--all-namespaces")["items"]
        return not [o for o in items if o["metadata"]["namespace"] != mine]

    try:
        wait_for(quiet, timeout=300, interval=2, what="SLMDeployments of other tests to go")
    except TimeoutError as e:
        print(f"going on with a busy cluster: {e}")


def test_cluster_scope_chart_identity_runs_examples_and_uninstall_keeps_crs(
        kubeconfig: str, make_namespace: Callable[..., str], release: Callable[..., Release]) -> None:
    kc = kubeconfig
    system, ns = make_namespace(), make_namespace()  # both enforce Pod Security "restricted"
    rel = release(system, {})
    # The chart's pod passed "restricted" admission and the Deployment rolled out (KWOK runs it).
    dep = kubectl_json(kc, "-n", system, "get", "deployment", rel.fullname)
    assert dep["status"].get("readyReplicas") == 1
    sa = rel.identity()

    # Least privilege, cluster scope: it may read a Secret by name anywhere (a spec may name one),
    # but never list/watch them, never touch RBAC, never impersonate, never write a spec.
    assert _can_i(sa, "get", "secrets", "-n", ns)
    for args in (["list", "secrets", "--all-namespaces"], ["watch", "secrets", "-n", ns],
                 ["list", "secrets", "-n", "kube-system"], ["update", "secrets", "-n", ns],
                 ["delete", "secrets", "-n", ns], ["create", "clusterrolebindings"],
                 ["create", "rolebindings", "-n", ns], ["escalate", "clusterroles"], ["bind", "clusterroles"],
                 ["impersonate", "serviceaccounts", "-n", ns], ["create", "pods", "-n", ns],
                 ["create", "pods/exec", "-n", ns], ["update", "slmdeployments.slm.ai", "-n", ns],
                 ["patch", "slmdeployments.slm.ai", "-n", ns], ["delete", "persistentvolumeclaims", "-n", ns],
                 ["list", "nodes"], ["create", "customresourcedefinitions"], ["get", "configmaps", "-n", ns],
                 ["create", "serviceaccounts/token", "-n", ns]):
        assert not _can_i(sa, *args), f"the operator's identity can {' '.join(args)}"

    args, env = _chart_operator(kc, system, rel.name)
    assert "--all-namespaces" in args
    _wait_for_quiet_cluster(kc, ns)
    with run_operator(sa, [], extra_args=args, env=env) as op:
        op.wait_for_output("slm-operator started", timeout=90)
        names = _apply_examples(kc, ns)
        for name in names:
            cr = _ready(kc, ns, name)
            _capture(cr, "Healthy", name)
            # GitOps: the operator wrote only the status subresource.
            mine = _operator_managed_fields(kc, ns, name)
            assert mine and {m.get("subresource") for m in mine} == {"status"}, mine
            assert not cr["metadata"].get("finalizers")
            assert not [a for a in cr["metadata"].get("annotations", {}) if "kopf" in a]
        _assert_no_denials(op)
    uids = {n: kubectl_json(kc, "-n", ns, "get", "slm", n)["metadata"]["uid"] for n in names}

    # helm uninstall: the CRD and every SLMDeployment stay; the operator's RBAC goes.
    rel.uninstall()
    crd = kubectl_json(kc, "get", "crd", CRD)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert {n: kubectl_json(kc, "-n", ns, "get", "slm", n)["metadata"]["uid"] for n in names} == uids
    with pytest.raises(KubectlError):
        kubectl(kc, "get", "clusterrole", rel.fullname)


def test_namespace_scope_chart_identity_is_confined_to_its_namespaces(
        kubeconfig: str, make_namespace: Callable[..., str], release: Callable[..., Release]) -> None:
    kc = kubeconfig
    system, ns, other = make_namespace(), make_namespace(), make_namespace()
    rel = release(system, {"rbac": {"scope": "namespaces"}, "watchNamespaces": [ns]})
    sa = rel.identity()

    assert _can_i(sa, "get", "secrets", "-n", ns)
    assert _can_i(sa, "create", "deployments.apps", "-n", ns)
    for args in (["get", "secrets", "-n", "kube-system"], ["get", "secrets", "-n", other],
                 ["get", "secrets", "-n", system], ["list", "secrets", "-n", ns],
                 ["list", "secrets", "--all-namespaces"], ["create", "deployments.apps", "-n", other],
                 ["list", "slmdeployments.slm.ai", "--all-namespaces"], ["list", "pods", "-n", other],
                 ["create", "clusterrolebindings"], ["create", "rolebindings", "-n", ns],
                 ["impersonate", "users"], ["patch", "slmdeployments.slm.ai", "-n", ns]):
        assert not _can_i(sa, *args), f"the operator's identity can {' '.join(args)}"

    args, env = _chart_operator(kc, system, rel.name)
    assert f"--namespace={ns}" in args and "--all-namespaces" not in args
    with run_operator(sa, [], extra_args=args, env=env) as op:
        op.wait_for_output("slm-operator started", timeout=90)
        names = _apply_examples(kc, ns)
        # Out of scope: an SLMDeployment in another namespace is left alone.
        kubectl(kc, "-n", other, "apply", "-f", str(ROOT / "examples/qwen3-0.6b-onnx-cpu.yaml"))
        for name in names:
            _ready(kc, ns, name)

        # The other health states, for the Argo CD check (captured from this live run).
        gated = _example(ROOT / "examples/gated-llama-autoscaled.yaml")
        gated["metadata"]["name"] = "llama-missing-token"
        gated["spec"]["model"]["tokenSecretRef"]["name"] = "hf-token-missing"
        stuck = _example(ROOT / "examples/qwen3-0.6b-onnx-cpu.yaml")
        stuck["metadata"]["name"] = "qwen3-unschedulable"
        # Too big for any node: the quantization Job (one core) runs, the serving pod cannot be
        # placed. (A nodeSelector no node has would stop the Job too: it takes the spec's.)
        stuck["spec"]["resources"] = {"cpu": "100", "memory": "8Gi"}
        idle = _example(ROOT / "examples/qwen3-0.6b-onnx-cpu.yaml")
        idle["metadata"]["name"] = "qwen3-idle"
        idle["spec"]["replicas"] = 0
        for obj in (gated, stuck, idle):
            kubectl(kc, "-n", ns, "apply", "-f", "-", input=yaml.safe_dump(obj))
        cr = wait_for_condition(kc, "-n", ns, "slm", "llama-missing-token", type_="Degraded", timeout=60)
        _capture(cr, "Degraded", "secret-not-found")
        # The serving pod cannot be placed: Progressing with the scheduler's reason (Unschedulable)
        # during the grace a cluster autoscaler gets, not yet Degraded.
        cr = wait_for_object(kc, "-n", ns, "slm", "qwen3-unschedulable", timeout=120,
                             what="replicas not ready",
                             predicate=lambda o: any(c["type"] == "Available" and c["status"] == "False"
                                                     and c["reason"] in ("ReplicasNotReady", "Unschedulable")
                                                     for c in o.get("status", {}).get("conditions", [])))
        _capture(cr, "Progressing", "replicas-not-ready")
        cr = wait_for_object(kc, "-n", ns, "slm", "qwen3-idle", timeout=120, what="scaled to zero",
                             predicate=lambda o: any(c["type"] == "Available" and c["reason"] == "ScaledToZero"
                                                     for c in o.get("status", {}).get("conditions", [])))
        _capture(cr, "Suspended", "scaled-to-zero")

        assert "status" not in kubectl_json(kc, "-n", other, "get", "slm", "qwen3-small")
        assert not kubectl_json(kc, "-n", other, "get", "deployments,jobs,services")["items"]
        _assert_no_denials(op)
        for name in names:
            mine = _operator_managed_fields(kc, ns, name)
            assert mine and {m.get("subresource") for m in mine} == {"status"}, mine
        onnx = kubectl_json(kc, "-n", ns, "get", "deployment", "qwen3-small")
        assert onnx["spec"]["template"]["spec"]["containers"][0]["image"] == (
            "ghcr.io/slm-operator/onnxruntime-server:0.1.0")
    uids = {n: kubectl_json(kc, "-n", ns, "get", "slm", n)["metadata"]["uid"] for n in names}

    # helm upgrade with changed values: the operator gets them; SLMDeployments are not recreated.
    rel.upgrade("--set", "operator.workers=4", "--set", "runtimeImages.onnxruntime.tag=0.1.1",
                "--set", "global.imageRegistry=registry.internal:5000")
    args, env = _chart_operator(kc, system, rel.name)
    assert "--workers=4" in args
    new_image = "registry.internal:5000/slm-operator/onnxruntime-server:0.1.1"
    assert env["SLM_IMAGE_ONNXRUNTIME"] == new_image
    with run_operator(rel.identity(), [], extra_args=args, env=env) as op:
        op.wait_for_output("slm-operator started", timeout=90)
        wait_for_object(kc, "-n", ns, "deployment", "qwen3-small", timeout=120, what="the new runtime image",
                        predicate=lambda d: d["spec"]["template"]["spec"]["containers"][0]["image"] == new_image)
        _ready(kc, ns, "qwen3-small")
        _assert_no_denials(op)
    assert {n: kubectl_json(kc, "-n", ns, "get", "slm", n)["metadata"]["uid"] for n in names} == uids


def test_quantizing_status_capture(kubeconfig: str, make_namespace: Callable[..., str],
                                   release: Callable[..., Release]) -> None:
    """The short window while the quantization Job runs is Progressing (Quantizing)."""
    kc = kubeconfig
    system, ns = make_namespace(), make_namespace()
    rel = release(system, {"rbac": {"scope": "namespaces"}, "watchNamespaces": [ns]})
    args, env = _chart_operator(kc, system, rel.name)
    with run_operator(rel.identity(), [], extra_args=args, env=env) as op:
        op.wait_for_output("slm-operator started", timeout=90)
        kubectl(kc, "-n", ns, "apply", "-f", str(ROOT / "examples/gemma3-1b-ollama-gguf.yaml"))
        seen: list[dict[str, Any]] = []

        def quantizing() -> bool:
            obj = kubectl_json(kc, "-n", ns, "get", "slm", "gemma3-1b")
            for c in obj.get("status", {}).get("conditions", []):
                if c["type"] == "ModelReady" and c["reason"] == "Quantizing":
                    seen.append(obj)
                    return True
            return condition_status(obj, "Ready") == "True"

        wait_for(quantizing, timeout=120, interval=0.05, what="a status")
        if not seen:
            pytest.skip("the quantization Job finished before a status showed it (KWOK is fast)")
        _capture(seen[0], "Progressing", "quantizing")
        _ready(kc, ns, "gemma3-1b")
        _assert_no_denials(op)


def test_helm_test_hook(kubeconfig: str, make_namespace: Callable[..., str],
                        release: Callable[..., Release]) -> None:
    nodes = kubectl_json(kubeconfig, "get", "nodes")["items"]
    # The chart's pods tolerate no taint: only untainted nodes can run them (the local real
    # node is tainted so that only the real-node tests land there).
    open_nodes = [n for n in nodes if not any(t.get("effect") == "NoSchedule" for t in n["spec"].get("taints") or [])]
    if all(n["metadata"].get("annotations", {}).get("kwok.x-k8s.io/node") == "fake" for n in open_nodes):
        pytest.skip("every node the chart's pods can land on is a KWOK node: the `helm test` pod would "
                    "only be simulated (a bare pod stays Running under KWOK), which proves nothing about "
                    "the operator answering; tests/test_chart.py checks the hook's manifest instead")
    rel = release(make_namespace(), {})  # a real cluster (SLM_E2E_KUBECONFIG) that can pull the image
    out = helm(kubeconfig, "test", rel.name, "-n", rel.namespace, "--timeout", "180s")
    assert "Succeeded" in out, out


def test_two_replicas_peer_and_fail_over(kubeconfig: str, make_namespace: Callable[..., str],
                                          release: Callable[..., Release]) -> None:
    """replicaCount=2: exactly one replica works; when it stops, the other takes over."""
    kc = kubeconfig
    system, ns = make_namespace(), make_namespace()
    rel = release(system, {"replicaCount": 2, "rbac": {"scope": "namespaces"}, "watchNamespaces": [ns]})
    sts = kubectl_json(kc, "-n", system, "get", "statefulset", rel.fullname)
    assert sts["status"].get("readyReplicas") == 2
    pods = kubectl_json(kc, "-n", system, "get", "pods", "-l", f"app.kubernetes.io/instance={rel.name}")["items"]
    assert sorted(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"] for p in pods) == ["0", "1"]
    args, env = _chart_operator(kc, system, rel.name)
    assert f"--peering={rel.fullname}" in args
    args1, _ = _chart_operator(kc, system, rel.name)  # its own local ports
    sa = rel.identity()
    # The pods get SLM_PRIORITY from their StatefulSet index (0 and 1); so do these two.
    with run_operator(sa, [], extra_args=args, env={**env, "SLM_PRIORITY": "0"}) as standby, \
            run_operator(sa, [], extra_args=args1, env={**env, "SLM_PRIORITY": "1"}) as active:
        # Both register in the peering; the lower priority stands by (kopf starts paused and
        # logs "Resuming" only when it may work), the higher one works.
        def settled() -> bool:
            peers = kubectl_json(kc, "-n", ns, "get", "kopfpeerings.kopf.dev", rel.fullname).get("status") or {}
            prios = sorted(p.get("priority") for p in peers.values() if p.get("lifetime", 0) > 0)
            return prios == [0, 1] and _paused(standby) and not _paused(active)

        wait_for(settled, timeout=60, interval=0.5, what="one active and one standby replica")
        kubectl(kc, "-n", ns, "apply", "-f", str(ROOT / "examples/qwen3-0.6b-onnx-cpu.yaml"))
        _ready(kc, ns, "qwen3-small")
        assert _paused(standby), "the standby worked while the active replica was alive"
        # A clean stop (rollout, drain) leaves the peering at once: the standby resumes.
        active.process.terminate()
        active.process.wait(30)
        wait_for(lambda: not _paused(standby), timeout=30, interval=0.5, what="the standby to resume")
        kubectl(kc, "-n", ns, "apply", "-f", str(ROOT / "examples/gemma3-1b-ollama-gguf.yaml"))
        _ready(kc, ns, "gemma3-1b")
        _assert_no_denials(standby)
        _assert_no_denials(active)
