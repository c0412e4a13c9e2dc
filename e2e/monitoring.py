"""Prometheus, Prometheus Operator and prometheus-adapter on the local control plane.

`ensure_monitoring(kubeconfig)` brings up (idempotently, shared by test sessions) the stack a
user's cluster has after installing kube-prometheus-stack and prometheus-adapter
(docs/autoscaling.md), from binaries `e2e/cluster/build` made from the pinned Go modules
(e2e/cluster/versions.env):

- Prometheus Operator's CRDs (monitoring.coreos.com) from the pinned release;
- the Operator itself as a process with the cluster's admin kubeconfig (as the operator of
  this project runs in e2e); it turns ServiceMonitors and PrometheusRules into Prometheus'
  configuration exactly as in a user's cluster;
- one `Prometheus` (namespace `monitoring`, name `slm-e2e`) whose pod runs on the real node from
  images made of the Go binaries (`quay.io/prometheus/prometheus:<v>` and the config reloader,
  the names the Operator defaults to), selecting every ServiceMonitor and PrometheusRule;
- prometheus-adapter as a process on the node's address with the chart's own rules
  (`helm template` of charts/slm-operator, observability.prometheusAdapterRules), registered as
  the APIService v1beta1.custom.metrics.k8s.io (a selectorless Service whose Endpoints name the
  node's address; the API server dials it through aggregator routing).

Timing knobs (figures in the autoscaling tests): the ServiceMonitor's scrape interval (15 s,
rendered by the operator), the adapter's relist interval (`ADAPTER_RELIST`, how soon a new
pod's series becomes a known metric) and the HPA controller's sync period (15 s, the
kube-controller-manager default).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.helpers import CLUSTER_BIN_DIR, CLUSTER_DIR, apply, kubectl, kubectl_json, wait_for
from e2e.realnode import CACHE, CONTAINERD_SOCK, REAL_NODE, STATE, node_state

REPO = CLUSTER_DIR.parent.parent
CHART = REPO / "charts" / "slm-operator"
NAMESPACE = "monitoring"
PROMETHEUS_NAME = "slm-e2e"
PROMETHEUS_POD = f"prometheus-{PROMETHEUS_NAME}-0"
ADAPTER_PORT = int(os.environ.get("SLM_ADAPTER_PORT", "16290"))
KSM_PORT = int(os.environ.get("SLM_KUBE_STATE_METRICS_PORT", "16291"))
NODE_IP = os.environ.get("SLM_NODE_IP", "10.231.0.1")
OPERATOR_WEB = f"127.0.0.1:{os.environ.get('SLM_PROMETHEUS_OPERATOR_PORT', '16280')}"
# How often the adapter re-lists Prometheus' series to learn which metrics exist (its default
# is 10m; kube-prometheus-stack's prometheus-adapter chart sets 1m). Values are always fresh:
# this only delays a new pod's first value.
ADAPTER_RELIST = os.environ.get("SLM_ADAPTER_RELIST", "30s")
# Prometheus' rule evaluation interval (its default 1m; kube-prometheus-stack: 30s).
EVALUATION_INTERVAL = "15s"
LABELS = {"app.kubernetes.io/part-of": "slm-e2e-monitoring"}


def versions() -> dict[str, str]:
    """KEY=value pairs of e2e/cluster/versions.env."""
    out = {}
    for line in (CLUSTER_DIR / "versions.env").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def prometheus_release(module_version: str) -> str:
    """Prometheus' release tag from its Go module version: v0.316.0 -> v3.16.0."""
    minor, patch = module_version.removeprefix("v0.").split(".")
    return f"v{minor[0]}.{int(minor[1:])}.{patch}"


V = versions()
PROMETHEUS_VERSION = prometheus_release(V["PROMETHEUS_VERSION"])
PROMETHEUS_IMAGE = f"quay.io/prometheus/prometheus:{PROMETHEUS_VERSION}"
RELOADER_IMAGE = f"quay.io/prometheus-operator/prometheus-config-reloader:{V['PROMETHEUS_OPERATOR_VERSION']}"
BIN = CACHE / "bin"
LOGS = STATE / "logs"
RUN = STATE / "run"
PKI = STATE / "pki"


def binary(name: str) -> Path:
    """The cached binary e2e/cluster/build made (name-version)."""
    version = {"prometheus": V["PROMETHEUS_VERSION"], "prometheus-adapter": V["PROMETHEUS_ADAPTER_VERSION"],
               "kube-state-metrics": V["KUBE_STATE_METRICS_VERSION"]}.get(name, V["PROMETHEUS_OPERATOR_VERSION"])
    return BIN / f"{name}-{version}"


def missing_binaries() -> list[str]:
    """The monitoring binaries not built yet (e2e/cluster/build builds them)."""
    names = ["prometheus", "prometheus-operator", "prometheus-config-reloader", "prometheus-adapter",
             "kube-state-metrics"]
    return [n for n in names if not binary(n).exists()]


# --- processes (like e2e/cluster/up's: a pid file, a log, restarted when the flags change) ---
def _running(name: str) -> int | None:
    pidfile = RUN / f"{name}.pid"
    try:
        pid = int(pidfile.read_text())
        exe = os.readlink(f"/proc/{pid}/exe")
    except (OSError, ValueError):
        return None
    return pid if Path(exe).name.startswith(f"{name}-") else None


def _start(name: str, argv: list[str], env: dict[str, str] | None = None, fingerprint: str = "") -> None:
    """Start `argv` detached unless it already runs with the same arguments (and the same
    `fingerprint`, e.g. the hash of a file it reads)."""
    args_file = RUN / f"{name}.args"
    want = "\n".join([*argv, fingerprint])
    pid = _running(name)
    if pid is not None:
        if args_file.exists() and args_file.read_text() == want:
            return
        os.kill(pid, 15)
        for _ in range(100):
            if _running(name) is None:
                break
            time.sleep(0.1)
    RUN.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    (RUN / f"{name}.pid").write_text(str(proc.pid))
    args_file.write_text(want)


@contextmanager
def _lock() -> Iterator[None]:
    """Two test sessions set the stack up one after the other."""
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / ".monitoring.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(*argv: str, timeout: float = 300) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


# --- images: the Go binaries as one-layer images, imported into the node's containerd -------
def _import_images() -> None:
    ctr = [str(CLUSTER_BIN_DIR / "ctr"), "--address", CONTAINERD_SOCK, "-n", "k8s.io"]
    present = set(_run(*ctr, "images", "ls", "-q").split())
    for name, ref in (("prometheus", PROMETHEUS_IMAGE), ("prometheus-config-reloader", RELOADER_IMAGE)):
        if ref in present:
            continue
        archive = CACHE / "node-images" / f"{name}.oci.tar"
        archive.parent.mkdir(parents=True, exist_ok=True)
        _run("python3", str(CLUSTER_DIR / "oci_archive.py"), "--binary", str(binary(name)), "--path", f"/bin/{name}",
             "--entrypoint", f"/bin/{name}", "--name", ref, "--out", str(archive))
        try:
            _run(*ctr, "images", "import", "--no-unpack=false", str(archive))
        finally:
            archive.unlink(missing_ok=True)


# --- the chart's own files ---------------------------------------------------------------------
def chart_template(show_only: str, *sets: str) -> list[dict[str, Any]]:
    """`helm template` of charts/slm-operator with `--set`s, only the named template."""
    args = [str(CLUSTER_BIN_DIR / "helm"), "template", "slm-operator", str(CHART), "--namespace", NAMESPACE,
            "--show-only", show_only, "--kube-version", V["KUBERNETES_VERSION"]]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(_run(*args)) if d]


def adapter_config() -> str:
    """The chart's prometheus-adapter config (the ConfigMap's config.yaml), unchanged."""
    (cm,) = chart_template("templates/observability/prometheus-adapter-rules.yaml",
                           "observability.prometheusAdapterRules.enabled=true")
    return cm["data"]["config.yaml"]


def prometheus_rule() -> dict[str, Any]:
    """The chart's PrometheusRule (alerts), as `helm install` would create it."""
    (rule,) = chart_template("templates/observability/prometheus-rule.yaml",
                             "observability.prometheusRule.enabled=true")
    return rule


def dashboards() -> dict[str, Any]:
    """The chart's Grafana dashboards: {ConfigMap key: parsed dashboard JSON}."""
    out = {}
    for cm in chart_template("templates/observability/grafana-dashboard.yaml",
                             "observability.grafanaDashboard.enabled=true"):
        for key, text in cm.get("data", {}).items():
            if key.endswith(".json"):
                out[key] = json.loads(text)
    return out


# --- the stack -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Monitoring:
    """The running stack: Prometheus' address (the pod's IP on the node's bridge, reachable from
    this host) and the namespace its objects live in."""

    prometheus_url: str
    namespace: str = NAMESPACE

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; returns `data.result` (vector samples: {"metric", "value"}).
        Raises RuntimeError with Prometheus' error on a bad query."""
        url = f"{self.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=30) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"query {expr!r}: {body}")
        return body["data"]["result"]

    def values(self, expr: str) -> dict[str, float]:
        """{label set as k=v,... : value} of an instant query."""
        return {",".join(f"{k}={v}" for k, v in sorted(s["metric"].items())): float(s["value"][1])
                for s in self.query(expr)}

    def get(self, path: str) -> Any:
        """GET an API path (e.g. /api/v1/targets); returns `data`."""
        with urllib.request.urlopen(f"{self.prometheus_url}{path}", timeout=30) as r:
            return json.load(r)["data"]


def _base_objects() -> list[dict[str, Any]]:
    meta = {"namespace": NAMESPACE, "labels": LABELS}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": {
            **LABELS, "pod-security.kubernetes.io/enforce": "restricted"}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "prometheus", **meta},
         "automountServiceAccountToken": True},
        # What kube-prometheus-stack grants its Prometheus: discovery and /metrics.
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "slm-e2e-prometheus", "labels": LABELS},
         "rules": [
             {"apiGroups": [""], "resources": ["nodes", "nodes/metrics", "services", "endpoints", "pods"],
              "verbs": ["get", "list", "watch"]},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
             {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
             {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "slm-e2e-prometheus", "labels": LABELS},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "slm-e2e-prometheus"},
         "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": NAMESPACE}]},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus",
         "metadata": {"name": PROMETHEUS_NAME, **meta},
         "spec": {
             "image": PROMETHEUS_IMAGE, "version": PROMETHEUS_VERSION, "replicas": 1,
             "serviceAccountName": "prometheus",
             # Every ServiceMonitor and PrometheusRule in every namespace (kube-prometheus-stack
             # selects on its release label instead; docs/autoscaling.md).
             "serviceMonitorSelector": {}, "serviceMonitorNamespaceSelector": {},
             "podMonitorSelector": {}, "podMonitorNamespaceSelector": {},
             "ruleSelector": {}, "ruleNamespaceSelector": {},
             "scrapeInterval": "15s", "evaluationInterval": EVALUATION_INTERVAL,
             "retention": "6h",
             "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
             "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534, "fsGroup": 65534,
                                 "seccompProfile": {"type": "RuntimeDefault"}},
             **REAL_NODE,
         }},
    ]


def host_target(name: str, namespace: str, port: int, labels: dict[str, str],
                port_name: str = "metrics") -> list[dict[str, Any]]:
    """A selectorless Service + Endpoints naming a process on this host (on the node's address,
    which pods on the real node reach): how Prometheus' service discovery finds it."""
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace, "labels": labels},
         "spec": {"ports": [{"name": port_name, "port": port, "targetPort": port}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": namespace, "labels": labels},
         "subsets": [{"addresses": [{"ip": NODE_IP}], "ports": [{"name": port_name, "port": port}]}]},
    ]


def _ksm_objects() -> list[dict[str, Any]]:
    """kube-state-metrics' Service and ServiceMonitor as kube-prometheus-stack has them
    (honorLabels: its series name the object's namespace, not the exporter's)."""
    labels = {**LABELS, "app.kubernetes.io/name": "kube-state-metrics"}
    return [*host_target("kube-state-metrics", NAMESPACE, KSM_PORT, labels, "http"),
            {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
             "metadata": {"name": "kube-state-metrics", "namespace": NAMESPACE, "labels": labels},
             "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "kube-state-metrics"}},
                      "endpoints": [{"port": "http", "honorLabels": True, "interval": "15s"}]}}]


def _adapter_objects() -> list[dict[str, Any]]:
    node_ip = NODE_IP
    ca = base64.b64encode((PKI / "ca.crt").read_bytes()).decode()
    return [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "prometheus-adapter", "namespace": NAMESPACE, "labels": LABELS},
         "spec": {"ports": [{"name": "https", "port": 443, "targetPort": ADAPTER_PORT}]}},
        {"apiVersion": "v1", "kind": "Endpoints",
         "metadata": {"name": "prometheus-adapter", "namespace": NAMESPACE, "labels": LABELS},
         "subsets": [{"addresses": [{"ip": node_ip}], "ports": [{"name": "https", "port": ADAPTER_PORT}]}]},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
         "metadata": {"name": "v1beta1.custom.metrics.k8s.io", "labels": LABELS},
         "spec": {"group": "custom.metrics.k8s.io", "version": "v1beta1", "caBundle": ca,
                  "groupPriorityMinimum": 100, "versionPriority": 100,
                  "service": {"name": "prometheus-adapter", "namespace": NAMESPACE, "port": 443}}},
    ]


def ensure_monitoring(kubeconfig: str) -> Monitoring:
    """Bring the stack up (or reuse it) and return it once Prometheus answers and the
    custom-metrics API is Available. Raises RuntimeError naming what is missing."""
    state = node_state(kubeconfig)
    if isinstance(state, str):
        raise RuntimeError(f"Prometheus runs on the real node: {state}")
    missing = [m for m in missing_binaries() if m != "kube-state-metrics"]
    if missing:
        raise RuntimeError(f"not built: {' '.join(missing)} (run e2e/cluster/build)")
    with _lock():
        crds = CACHE / "share" / f"prometheus-operator-crds-{V['PROMETHEUS_OPERATOR_VERSION']}.yaml"
        kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "--field-manager", "slm-e2e-monitoring",
                "-f", str(crds), timeout=120)
        kubectl(kubeconfig, "wait", "--for=condition=Established", "crd", "prometheuses.monitoring.coreos.com",
                "servicemonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com", "--timeout=60s")
        _import_images()
        admin = str(STATE / "kubeconfig")
        _start("prometheus-operator", [
            str(binary("prometheus-operator")), f"--prometheus-config-reloader={RELOADER_IMAGE}",
            f"--web.listen-address={OPERATOR_WEB}", "--log-level=info"], env={"KUBECONFIG": admin})
        # kube-state-metrics is needed by the alerts and dashboards only (not by the HPAs).
        if binary("kube-state-metrics").exists():
            _start("kube-state-metrics", [
                str(binary("kube-state-metrics")), f"--kubeconfig={admin}", f"--host={NODE_IP}", f"--port={KSM_PORT}",
                "--telemetry-host=127.0.0.1", f"--telemetry-port={KSM_PORT + 1}",
                "--resources=deployments,horizontalpodautoscalers,pods,jobs"])
        apply(kubeconfig, *_base_objects())
        apply(kubeconfig, *_ksm_objects())
        apply(kubeconfig, prometheus_rule(), namespace=NAMESPACE)

        def prometheus_ip() -> str | None:
            try:
                pod = kubectl_json(kubeconfig, "-n", NAMESPACE, "get", "pod", PROMETHEUS_POD)
            except Exception:
                return None
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
            return pod["status"].get("podIP") if ready else None

        ip = wait_for(prometheus_ip, timeout=300, interval=2, what=f"{PROMETHEUS_POD} Ready")
        mon = Monitoring(f"http://{ip}:9090")

        config = RUN / "prometheus-adapter-config.yaml"
        text = adapter_config()
        if not config.exists() or config.read_text() != text:
            config.write_text(text)
        node_ip = NODE_IP
        _start("prometheus-adapter", [
            str(binary("prometheus-adapter")), f"--prometheus-url={mon.prometheus_url}",
            f"--config={config}", f"--metrics-relist-interval={ADAPTER_RELIST}",
            f"--bind-address={node_ip}", f"--secure-port={ADAPTER_PORT}",
            f"--tls-cert-file={PKI / 'prometheus-adapter.crt'}",
            f"--tls-private-key-file={PKI / 'prometheus-adapter.key'}",
            f"--lister-kubeconfig={admin}", f"--authentication-kubeconfig={admin}",
            f"--authorization-kubeconfig={admin}", "--v=1"],
            # a changed rule file restarts the adapter
            fingerprint=hashlib.sha256(text.encode()).hexdigest())
        apply(kubeconfig, *_adapter_objects())
        wait_for(lambda: _apiservice_available(kubeconfig), timeout=120, interval=1,
                 what="APIService v1beta1.custom.metrics.k8s.io Available")
        return mon


def _apiservice_available(kubeconfig: str) -> bool:
    obj = kubectl_json(kubeconfig, "get", "apiservice", "v1beta1.custom.metrics.k8s.io")
    return any(c["type"] == "Available" and c["status"] == "True" for c in obj["status"].get("conditions", []))


def custom_metric(kubeconfig: str, namespace: str, metric: str, selector: str = "") -> dict[str, float]:
    """custom.metrics.k8s.io for the pods of a namespace: {pod: value} (the HPA's own read)."""
    path = f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/*/{metric}"
    if selector:
        path += f"?labelSelector={urllib.parse.quote(selector)}"
    body = json.loads(kubectl(kubeconfig, "get", "--raw", path))
    return {i["describedObject"]["name"]: quantity(i["value"]) for i in body["items"]}


def hpa_status(kubeconfig: str, ns: str, name: str) -> dict[str, Any]:
    """The HPA's status (empty before its first sync)."""
    return kubectl_json(kubeconfig, "-n", ns, "get", "hpa", name).get("status", {})


def hpa_metric_value(status: dict[str, Any], metric: str) -> float | None:
    """The HPA's own reading of a Pods metric (status.currentMetrics[].pods.current.averageValue)."""
    for m in status.get("currentMetrics") or []:
        if m.get("type") == "Pods" and m["pods"]["metric"]["name"] == metric:
            return quantity(m["pods"]["current"]["averageValue"])
    return None


def hpa_conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{type: condition} of an HPA status (AbleToScale, ScalingActive, ScalingLimited)."""
    return {c["type"]: c for c in status.get("conditions") or []}


def quantity(q: str) -> float:
    """A Kubernetes quantity as a float: "1500m" -> 1.5, "2" -> 2.0, "3k" -> 3000."""
    factors = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "u": 1e-6, "n": 1e-9}
    if q and q[-1] in factors:
        return float(q[:-1]) * factors[q[-1]]
    return float(q)


@pytest.fixture(scope="session")
def monitoring(kubeconfig: str) -> Monitoring:
    """The stack, up (session-wide; it stays up for later sessions). Skips with the reason when
    the cluster has no real node (Prometheus runs there); fails when the stack does not come up."""
    state = node_state(kubeconfig)
    if isinstance(state, str):
        pytest.skip(f"Prometheus runs as a pod on the real node: {state}")
    try:
        return ensure_monitoring(kubeconfig)
    except (RuntimeError, TimeoutError) as e:
        pytest.fail(f"the monitoring stack did not come up: {e}", pytrace=False)


@pytest.fixture(scope="session")
def serving_images(kubeconfig: str) -> dict[str, str]:
    """The quantizer, ONNX server and gateway images imported into the real node (cached)."""
    from e2e.realnode import ensure_images

    return ensure_images(["quantizer", "onnxruntime-server", "gateway"])


@pytest.fixture(scope="session")
def slm_crd(kubeconfig: str) -> str:
    """The SLMDeployment CRD installed (crds/), Established."""
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl(kubeconfig, "wait", "--for=condition=Established", "crd/slmdeployments.slm.ai", "--timeout=60s")
    return kubeconfig
