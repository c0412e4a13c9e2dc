"""Control-plane benchmark: the operator against the API server's own limit.

For each N: create N SLMDeployments (a mix of the examples' shapes: ONNX CPU with 2 replicas,
Ollama GGUF, vLLM AWQ) in a fresh namespace with the operator running, and measure the wall
time until every CR is Ready, per-CR latency (create -> serving Deployment applied, create ->
Ready), the operator's API requests per CR by verb (its own counter,
slm_operator_api_requests_total), its RSS and CPU; then a quiet period (no changes) in which
the goal is zero writes.

The limit is a plain client given the same work, without the operator: for each CR (at most
`--limit-concurrency` at a time, best of the values tried) it POSTs the CR, renders it with the
operator's own render.plan, server-side-applies every prepare object (the generated Secret with
a fixed key, the model-cache PVC, the NetworkPolicies, the Service, the quantization Job),
merge-patches the in-progress status, waits (one namespace-wide watch of Jobs) for the Job to
complete, applies the serving objects (Deployment, PDB where the shape has one), waits (one
watch of Deployments) for the replicas to be ready, merge-patches the Ready status and posts
the Ready Event. That is the operator's converged bill (each child once, two status writes,
one Event: tests/test_writes_per_cr.py), with no cache, no reconcile and no retries, so
ratio = operator wall / limit wall is the operator's overhead over the same requests.

The machine may be shared: the 1-minute load average is sampled every second of every run;
a run whose mean exceeds 2 x the core count is marked noisy, and so is the ratio of any N
with a noisy run. `--repeat R` prints medians with the [min..max] spread. `--failing F` makes
F of the N CRs fail for ever (the API server refuses their Service) to show the others are not
starved; `--operator-src` runs another checkout's operator/ (before/after); `--profile P`
records the operator with py-spy (PY_SPY=path) into P.<N>.txt (collapsed stacks).

Prints one JSON line per run and a table. Run: bench/controlplane [--n 100 1000] [--repeat 3].
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
PY_SPY = os.environ.get("PY_SPY", "py-spy")  # --profile: a py-spy binary (not a project dependency)
sys.path.insert(0, str(ROOT / "operator"))

from slm_operator import api  # noqa: E402
from slm_operator.render import RenderContext, plan  # noqa: E402
from slm_operator.status import Cond, Observation, build_status  # noqa: E402
from slm_operator.validate import defaulted  # noqa: E402

SHAPES = ["qwen3-0.6b-onnx-cpu.yaml", "gemma3-1b-ollama-gguf.yaml", "phi4-mini-vllm-awq.yaml"]
PLURALS = {"Secret": ("v1", "secrets"), "PersistentVolumeClaim": ("v1", "persistentvolumeclaims"),
           "Service": ("v1", "services"), "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies"),
           "Job": ("batch/v1", "jobs"), "Deployment": ("apps/v1", "deployments"),
           "HorizontalPodAutoscaler": ("autoscaling/v2", "horizontalpodautoscalers"),
           "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets")}


# -- cluster access ------------------------------------------------------------------------

class Kube:
    """A minimal httpx client from the admin kubeconfig (client certificates)."""

    def __init__(self, kubeconfig: str) -> None:
        cfg = yaml.safe_load(Path(kubeconfig).read_text())
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        self.tmp = tempfile.mkdtemp(prefix="slm-bench-")
        import base64

        def write(name: str, data: str) -> str:
            path = os.path.join(self.tmp, name)
            Path(path).write_bytes(base64.b64decode(data))
            return path

        import ssl

        self.server = cluster["server"]
        self.ssl = ssl.create_default_context(cafile=write("ca.crt", cluster["certificate-authority-data"]))
        self.ssl.load_cert_chain(write("client.crt", user["client-certificate-data"]),
                                 write("client.key", user["client-key-data"]))

    def sync(self) -> httpx.Client:
        return httpx.Client(base_url=self.server, verify=self.ssl, timeout=60)

    def aio(self, limit: int) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.server, verify=self.ssl, timeout=60,
                                 limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit))


def path_for(obj: dict[str, Any], ns: str, name: str | None = None) -> str:
    api_version, plural = PLURALS[obj["kind"]]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    return f"{base}/namespaces/{ns}/{plural}" + (f"/{name}" if name else "")


SLM_PATH = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{{ns}}/{api.PLURAL}"


def make_crs(n: int, ns: str) -> list[dict[str, Any]]:
    shapes = [yaml.safe_load((ROOT / "examples" / s).read_text()) for s in SHAPES]
    out = []
    for i in range(n):
        cr = json.loads(json.dumps(shapes[i % len(shapes)]))
        cr["metadata"] = {"name": f"b{i:05d}-{cr['metadata']['name'][:20]}", "namespace": ns}
        out.append(cr)
    return out


def ensure_gpu_nodes(client: httpx.Client, count: int) -> None:
    """KWOK nodes with 512 GPUs each, so GPU shapes (a Job and a replica each; one CR in three)
    schedule at any N up to 3000 even while Jobs and replicas overlap (at 128 GPUs, 1,024 in
    all, N = 3000's 1,000 replicas and Jobs still running would not fit)."""
    for i in range(count):
        node = yaml.safe_load((ROOT / "e2e/cluster/manifests/nodes.yaml").read_text().split("---")[0])
        name = f"bench-gpu-{i}"
        node["metadata"]["name"] = name
        node["metadata"]["labels"]["kubernetes.io/hostname"] = name
        for k in ("capacity", "allocatable"):
            node["status"][k].update({"nvidia.com/gpu": "512", "cpu": "2048", "memory": "16Ti", "pods": "5000",
                                      "ephemeral-storage": "100Ti"})
        r = client.patch(f"/api/v1/nodes/{name}", params={"fieldManager": "slm-bench", "force": "true"},
                         content=json.dumps(node), headers={"Content-Type": "application/apply-patch+yaml"})
        r.raise_for_status()
        client.patch(f"/api/v1/nodes/{name}/status", params={"fieldManager": "slm-bench", "force": "true"},
                     content=json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                                         "status": node["status"]}),
                     headers={"Content-Type": "application/apply-patch+yaml"}).raise_for_status()


# Room for N = 3000 on 4 nodes: a third of the CRs are ONNX CPU shapes (2 replicas and a Job,
# all on their claim's node), and at 512 CPUs a node ran out at N = 1000 (2 CRs Unschedulable).
CPU_NODE_CAPACITY = {"cpu": "4096", "memory": "32Ti", "pods": "5000", "ephemeral-storage": "100Ti"}


def ensure_cpu_nodes(client: httpx.Client, count: int) -> None:
    """KWOK CPU nodes (no taint) with room for the CPU shapes at any N up to 3000."""
    for i in range(count):
        name = f"bench-cpu-{i}"
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                             "labels": {"type": "kwok", "kubernetes.io/hostname": name}},
                "status": {"capacity": CPU_NODE_CAPACITY, "allocatable": CPU_NODE_CAPACITY}}
        client.patch(f"/api/v1/nodes/{name}", params={"fieldManager": "slm-bench", "force": "true"},
                     content=json.dumps(node), headers={"Content-Type": "application/apply-patch+yaml"}
                     ).raise_for_status()
        client.patch(f"/api/v1/nodes/{name}/status", params={"fieldManager": "slm-bench", "force": "true"},
                     content=json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                                         "status": node["status"]}),
                     headers={"Content-Type": "application/apply-patch+yaml"}).raise_for_status()


def remove_nodes(client: httpx.Client) -> None:
    """Delete the bench's KWOK nodes (bench-gpu-*, bench-cpu-*): left behind, they take pods
    that other tests expect on the cluster's own nodes (e2e/test_reconciler.py checks GPU pods
    land on gpu-*). Their pods go with the namespaces the bench deletes. Kept while another
    bench's namespace is still there: removing them under a running bench leaves its pods
    Pending for ever (a second bench on one cluster did that to the first)."""
    others = [n["metadata"]["name"] for n in client.get("/api/v1/namespaces").json().get("items", [])
              if n["metadata"]["name"].startswith(("bench-op-", "bench-limit-"))
              and (n.get("status") or {}).get("phase") != "Terminating"]
    if others:
        print(json.dumps({"mode": "cleanup", "nodes_kept_for": others}), flush=True)
        return
    listing = client.get("/api/v1/nodes").json()
    for node in listing.get("items", []):
        name = node["metadata"]["name"]
        if name.startswith(("bench-gpu-", "bench-cpu-")):
            client.delete(f"/api/v1/nodes/{name}")


def ensure_crd(kubeconfig: str) -> None:
    """Install the SLMDeployment CRD (crds/, server-side apply) and wait until it is Established:
    a freshly started local control plane has none."""
    kubectl = [os.environ.get("KUBECTL", "kubectl"), "--kubeconfig", kubeconfig]
    subprocess.run([*kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds")],
                   check=True, capture_output=True)
    subprocess.run([*kubectl, "wait", "--for=condition=Established", "crd/slmdeployments.slm.ai",
                    "--timeout=60s"], check=True, capture_output=True)


FAILING_PREFIX = "f"  # CRs named f... have their Service refused (make_failing); healthy ones are b...
REFUSAL = "slm-bench refuses this Service on purpose (a CR failing for ever)"


def make_failing(client: httpx.Client, ns: str) -> None:
    """A ValidatingAdmissionPolicy (in the API server, no webhook) bound to namespace `ns` that
    refuses every Service whose slm.ai/deployment label starts with FAILING_PREFIX: those CRs
    fail for ever (Degraded ApplyRejected, the server's message REFUSAL in status), the others
    are untouched. Named after the namespace; deleted with it by delete_namespace's caller."""
    name = f"slm-bench-{ns}"
    expr = (f"!(has(object.metadata.labels) && 'slm.ai/deployment' in object.metadata.labels && "
            f"object.metadata.labels['slm.ai/deployment'].startsWith('{FAILING_PREFIX}'))")
    policy = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
              "metadata": {"name": name},
              "spec": {"failurePolicy": "Fail",
                       "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                               "operations": ["CREATE", "UPDATE"],
                                                               "resources": ["services"]}]},
                       "validations": [{"expression": expr, "message": REFUSAL}]}}
    binding = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": name},
               "spec": {"policyName": name, "validationActions": ["Deny"],
                        "matchResources": {"namespaceSelector": {"matchLabels": {
                            "kubernetes.io/metadata.name": ns}}}}}
    base = "/apis/admissionregistration.k8s.io/v1"
    for plural, obj in (("validatingadmissionpolicies", policy), ("validatingadmissionpolicybindings", binding)):
        client.patch(f"{base}/{plural}/{name}", params={"fieldManager": "slm-bench", "force": "true"},
                     content=json.dumps(obj), headers={"Content-Type": "application/apply-patch+yaml"}
                     ).raise_for_status()
    # The policy takes effect when the API server's informer has it: probe until a refused
    # dry-run create says so (at most 30 s).
    probe = {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "probe", "namespace": ns, "labels": {"slm.ai/deployment": FAILING_PREFIX + "x"}},
             "spec": {"ports": [{"port": 80}]}}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = client.post(f"/api/v1/namespaces/{ns}/services", params={"dryRun": "All"}, json=probe)
        if r.status_code >= 400 and REFUSAL in r.text:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the admission policy {name} did not take effect within 30 s")


def remove_failing(client: httpx.Client, ns: str) -> None:
    """Delete make_failing's policy and binding (404 is fine)."""
    base = "/apis/admissionregistration.k8s.io/v1"
    for plural in ("validatingadmissionpolicybindings", "validatingadmissionpolicies"):
        client.delete(f"{base}/{plural}/slm-bench-{ns}")


def create_namespace(client: httpx.Client, ns: str) -> None:
    client.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                             "metadata": {"name": ns}}).raise_for_status()


def delete_namespace(client: httpx.Client, ns: str, n: int = 0) -> None:
    """Delete and wait until it is gone, so the next run does not share the machine with the
    garbage collector: up to max(240 s, 1 s per CR) (measured here: about 100 s at N = 1000,
    270-320 s at N = 3000, past the fixed 240 s this replaced). Prints one JSON line,
    "mode": "cleanup", with the seconds it took and whether it finished."""
    t0 = time.monotonic()
    client.delete(f"/api/v1/namespaces/{ns}")
    deadline = t0 + max(240.0, float(n))
    gone = False
    while not gone and time.monotonic() < deadline:
        gone = client.get(f"/api/v1/namespaces/{ns}").status_code == 404
        if not gone:
            time.sleep(1)
    print(json.dumps({"mode": "cleanup", "namespace": ns, "s": round(time.monotonic() - t0, 1), "gone": gone}),
          flush=True)


# -- watching for progress -------------------------------------------------------------------

class Progress:
    """Watches SLMDeployments and Deployments in a namespace; records first-seen times."""

    def __init__(self, kube: Kube, ns: str) -> None:
        self.kube, self.ns = kube, ns
        self.ready: dict[str, float] = {}
        self.served: dict[str, float] = {}
        self.degraded: dict[str, str] = {}  # name -> the Degraded message (ApplyRejected only)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._watch, args=(p, f), daemon=True) for p, f in (
            (SLM_PATH.format(ns=ns), self._on_slm), (f"/apis/apps/v1/namespaces/{ns}/deployments", self._on_dep))]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()

    def _on_slm(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c["type"] == "Ready" and c["status"] == "True":
                self.ready.setdefault(name, time.monotonic())
            if c["type"] == "Degraded" and c["status"] == "True" and c.get("reason") == "ApplyRejected":
                self.degraded[name] = c.get("message", "")

    def _on_dep(self, obj: dict[str, Any]) -> None:
        owner = (obj["metadata"].get("labels") or {}).get("slm.ai/deployment")
        if owner:
            self.served.setdefault(owner, time.monotonic())

    def _watch(self, path: str, fn: Any) -> None:
        rv = ""
        with self.kube.sync() as client:
            while not self._stop.is_set():
                try:
                    if not rv:
                        listing = client.get(path).json()
                        for item in listing.get("items", []):
                            fn(item)
                        rv = listing["metadata"]["resourceVersion"]  # KeyError: not a list (429, 5xx)
                    with client.stream("GET", path, params={"watch": "1", "resourceVersion": rv,
                                                            "timeoutSeconds": "30"}, timeout=None) as r:
                        for line in r.iter_lines():
                            if self._stop.is_set():
                                return
                            ev = json.loads(line)
                            if ev.get("type") in (None, "ERROR"):  # a Status (410 Gone, 429, ...)
                                rv = ""
                                break
                            rv = ev["object"]["metadata"]["resourceVersion"]
                            fn(ev["object"])
                except (httpx.HTTPError, ValueError, KeyError):
                    time.sleep(0.2)


CLUSTER_RUN = Path(os.environ.get("SLM_CLUSTER_DIR")
                   or Path(os.environ.get("SLM_CACHE") or Path.home() / ".cache/slm-operator") / "cluster") / "run"
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # /proc/stat cpu: user nice system irq softirq steal (not idle, iowait)


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy since boot (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return sum(int(fields[i]) for i in BUSY_FIELDS) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds used so far by the bench's own processes: the process trees of this process
    (the operator, py-spy) and of the local control plane's components (their pid files under
    `$SLM_CLUSTER_DIR/run`, as e2e/cluster/up writes them). Children a process has reaped count
    with it (cutime, cstime)."""
    roots = {os.getpid()}
    for f in CLUSTER_RUN.glob("*.pid") if CLUSTER_RUN.is_dir() else []:
        with contextlib.suppress(OSError, ValueError, IndexError):
            roots.add(int(f.read_text().split()[0]))
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we read
        parent[int(d.name)] = int(fields[1])
        cpu[int(d.name)] = sum(int(x) for x in fields[11:15]) / ticks
    total = 0.0
    for pid, used in cpu.items():
        p, seen = pid, 0
        while p not in roots and p > 1 and seen < 64:
            p, seen = parent.get(p, 0), seen + 1
        if p in roots:
            total += used
    return total


class LoadSampler:
    """Samples the 1-minute load average (/proc/loadavg) every second during a run, and the CPU
    taken by other work: the machine's busy CPU seconds minus the bench's own (`own_cpu_s`).

    The machine may be shared: a ratio measured while other work kept the load above
    NOISY_LOAD_FACTOR x the core count compares two runs that had different machines, so it is
    marked noisy (see `noisy`). On 2 cores the bench's own control plane keeps the load near or
    above that line at N >= 1000; `other_cpu_pct` (other work's share of all cores' time, %)
    tells whether the load was the bench's own."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.other_cpu_pct = 0.0

    def __enter__(self) -> LoadSampler:
        self._t0, self._busy0, self._own0 = time.monotonic(), machine_busy_s(), own_cpu_s()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        span = (time.monotonic() - self._t0) * (os.cpu_count() or 1)
        other = (machine_busy_s() - self._busy0) - (own_cpu_s() - self._own0)
        self.other_cpu_pct = round(max(0.0, 100 * other / span), 1) if span > 0 else 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(1.0)

    @property
    def mean(self) -> float:
        return round(sum(self.samples) / len(self.samples), 2) if self.samples else 0.0

    @property
    def peak(self) -> float:
        return round(max(self.samples), 2) if self.samples else 0.0


NOISY_LOAD_FACTOR = 2.0  # the rule: above 2x the core count, the ratio is not trusted


def noisy(load_mean: float, cores: int | None = None) -> bool:
    """True when the mean 1-minute load average of a run exceeded 2 x the core count."""
    return load_mean > NOISY_LOAD_FACTOR * (cores or os.cpu_count() or 1)


# -- the operator run -------------------------------------------------------------------------

def proc_stats(pid: int) -> tuple[int, float]:
    """(RSS bytes, CPU seconds) of a process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r'^slm_operator_api_requests_total\{kind="([^"]+)",verb="([^"]+)"\} (\S+)', line)
        if m:
            out[f"{m.group(2)}:{m.group(1)}"] = out.get(f"{m.group(2)}:{m.group(1)}", 0) + float(m.group(3))
            continue
        m = re.match(r'^slm_operator_api_requests_total\{verb="([^"]+)",kind="([^"]+)"\} (\S+)', line)
        if m:
            out[f"{m.group(1)}:{m.group(2)}"] = out.get(f"{m.group(1)}:{m.group(2)}", 0) + float(m.group(3))
    return out


def reconciles(port: int) -> float:
    """The operator's reconciles so far (slm_operator_reconciles_total, every result)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(float(m.group(1)) for m in re.finditer(r'^slm_operator_reconciles_total\{[^}]*\} (\S+)$', text, re.M))


def settled(port: int, step: float = 1.0, limit: float = 10.0) -> dict[str, float]:
    """The operator's request counters once they stopped moving for `step` seconds (at most
    `limit` seconds): the quiet period starts after convergence has finished, not when the
    last CR turned Ready (its Ready Event follows its status write by milliseconds)."""
    last = scrape(port)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(step)
        now = scrape(port)
        if now == last:
            break
        last = now
    return last


def by_verb(counts: dict[str, float]) -> dict[str, float]:
    verbs: dict[str, float] = {}
    for key, v in counts.items():
        verbs[key.split(":")[0]] = verbs.get(key.split(":")[0], 0) + v
    return verbs


def diff(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b) if b.get(k, 0) - a.get(k, 0)}


def writes(counts: dict[str, float]) -> float:
    return sum(v for k, v in counts.items() if k.split(":")[0] in ("create", "patch", "update", "delete"))


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def create_all(kube: Kube, crs: list[dict[str, Any]], ns: str, concurrency: int) -> dict[str, float]:
    """POST the CRs with the same concurrency the limit client uses; returns create times."""
    created: dict[str, float] = {}
    sem = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, cr: dict[str, Any]) -> None:
        async with sem:
            (await client.post(SLM_PATH.format(ns=ns), json=cr)).raise_for_status()
            created[cr["metadata"]["name"]] = time.monotonic()

    async with kube.aio(concurrency) as client:
        await asyncio.gather(*(one(client, cr) for cr in crs))
    return created


def run_operator(kube: Kube, kubeconfig: str, n: int, quiet: float, workers: int, *,
                 operator_src: Path = ROOT / "operator", timeout: float | None = None,
                 profile: str = "", failing: int = 0) -> dict[str, Any]:
    """One operator run: N CRs (the first `failing` of them with a child the API server refuses
    for ever, see make_failing), the operator from `operator_src` (another checkout's operator/
    directory for a before/after comparison), py-spy recording into `profile` (an SVG flame
    graph's path) when given. Returns the row (times in seconds, RSS in MB/KB)."""
    ns = f"bench-op-{n}-{int(time.time()) % 100000}"
    with kube.sync() as client:
        create_namespace(client, ns)
        crs = make_crs(n, ns)
        port = 19000 + n % 1000
        log = open(tempfile.mktemp(prefix="slm-bench-operator-", suffix=".log"), "wb")  # noqa: SIM115
        if failing:
            make_failing(client, ns)
            for cr in crs[:failing]:
                cr["metadata"]["name"] = FAILING_PREFIX + cr["metadata"]["name"][1:]
        op = subprocess.Popen([sys.executable, "-m", "slm_operator.main", "--namespace", ns, "--metrics-port",
                               str(port), "--metrics-address", "127.0.0.1",
                               "--workers", str(workers)], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "KUBECONFIG": kubeconfig,
                                   "PYTHONPATH": f"{operator_src}{os.pathsep}{ROOT / 'operator'}"})
        spy = None
        try:
            # Convergence is timed from a started operator (its caches filled, its watches
            # opening), as the limit has no start-up: its log says "slm-operator started".
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and b"slm-operator started" not in Path(log.name).read_bytes():
                if op.poll() is not None:
                    raise RuntimeError(f"the operator exited ({op.returncode}); see {log.name}")
                time.sleep(0.2)
            scrape(port)
            time.sleep(2)
            rss0, cpu0 = proc_stats(op.pid)
            m0 = scrape(port)
            n0 = reconciles(port)
            prog = Progress(kube, ns)
            prog.start()
            if profile:
                spy = subprocess.Popen([PY_SPY, "record", "--pid", str(op.pid), "--rate", "50", "--nonblocking",
                                        "--format", "raw", "--output", profile],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            healthy = n - failing
            with LoadSampler() as load:
                t0 = time.monotonic()
                created = asyncio.run(create_all(kube, crs, ns, 32))
                deadline = t0 + (timeout or max(300, n * 1.5))
                while time.monotonic() < deadline and (
                        len(prog.ready) < healthy or len(prog.degraded) < failing):
                    time.sleep(0.2)
                wall = time.monotonic() - t0
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            converged = len(prog.ready)
            m1 = settled(port)
            n1 = reconciles(port)
            rss1, cpu1 = proc_stats(op.pid)
            # RSS every 10 s of the quiet period: flat means no growth while nothing changes.
            quiet_rss = [rss1]
            end = time.monotonic() + quiet
            while time.monotonic() < end:
                time.sleep(min(10.0, max(0.0, end - time.monotonic())))
                quiet_rss.append(proc_stats(op.pid)[0])
            m2 = scrape(port)
            rss2, cpu2 = proc_stats(op.pid)
            prog.stop()
        finally:
            op.send_signal(signal.SIGTERM)
            try:
                op.wait(20)
            except subprocess.TimeoutExpired:
                op.kill()
            if failing:
                remove_failing(client, ns)
            delete_namespace(client, ns, n)
    refusals = sorted(set(prog.degraded.values()))
    served = [prog.served[k] - created[k] for k in created if k in prog.served]
    ready = [prog.ready[k] - created[k] for k in created if k in prog.ready]
    conv = diff(m0, m1)
    return {
        "mode": "operator", "n": n, "failing": failing, "degraded": len(prog.degraded),
        "converged": converged, "wall_s": round(wall, 2), "refusals": refusals[:3], "log": log.name,
        "load_mean": load.mean, "load_peak": load.peak, "other_cpu_pct": load.other_cpu_pct,
        "cores": os.cpu_count(),
        "served_p50_s": round(pct(served, 50), 2), "served_p99_s": round(pct(served, 99), 2),
        "ready_p50_s": round(pct(ready, 50), 2), "ready_p99_s": round(pct(ready, 99), 2),
        "requests_per_cr": {k: round(v / n, 2) for k, v in sorted(by_verb(conv).items())},
        "reconciles_per_cr": round((n1 - n0) / n, 2),
        "quiet_s": quiet, "quiet_writes": writes(diff(m1, m2)), "quiet_requests": sum(diff(m1, m2).values()),
        "rss_start_mb": round(rss0 / 2**20, 1), "rss_converged_mb": round(rss1 / 2**20, 1),
        # RSS growth per CR is measured after the quiet period (the heap has settled by then).
        "rss_after_quiet_mb": round(rss2 / 2**20, 1), "rss_per_cr_kb": round((rss2 - rss0) / n / 1024, 1),
        "rss_quiet_min_mb": round(min(quiet_rss) / 2**20, 1), "rss_quiet_max_mb": round(max(quiet_rss) / 2**20, 1),
        "cpu_s_converge": round(cpu1 - cpu0, 2), "cpu_s_quiet": round(cpu2 - cpu1, 2),
    }


# -- the limit: the same manifests by a plain SSA client ---------------------------------------

class Signals:
    """One watch per kind (Jobs, Deployments) for the whole namespace, as a controller would."""

    def __init__(self) -> None:
        self.job_done: dict[str, asyncio.Event] = {}
        self.dep_ready: dict[str, asyncio.Event] = {}

    def event(self, table: dict[str, asyncio.Event], name: str) -> asyncio.Event:
        return table.setdefault(name, asyncio.Event())

    async def watch(self, client: httpx.AsyncClient, path: str, on: Any) -> None:
        rv = ""
        while True:
            try:
                if not rv:
                    listing = (await client.get(path)).json()
                    for item in listing.get("items", []):
                        on(item)
                    rv = listing["metadata"]["resourceVersion"]
                async with client.stream("GET", path, params={"watch": "1", "resourceVersion": rv,
                                                              "allowWatchBookmarks": "true"}, timeout=None) as r:
                    async for line in r.aiter_lines():
                        ev = json.loads(line)
                        if ev.get("type") in (None, "ERROR"):
                            rv = ""
                            break
                        rv = ev["object"]["metadata"]["resourceVersion"]
                        if ev["type"] != "BOOKMARK":
                            on(ev["object"])
            except (httpx.HTTPError, ValueError):
                await asyncio.sleep(0.2)

    def on_job(self, job: dict[str, Any]) -> None:
        if any(c["type"] == "Complete" and c["status"] == "True"
               for c in (job.get("status") or {}).get("conditions") or []):
            self.event(self.job_done, job["metadata"]["name"]).set()

    def on_dep(self, dep: dict[str, Any]) -> None:
        if (dep.get("status") or {}).get("readyReplicas", 0) >= (dep["spec"].get("replicas") or 1):
            self.event(self.dep_ready, dep["metadata"]["name"]).set()


# Answers a real client retries (client-go retries 429 and 5xx answers that carry Retry-After;
# kube-apiserver answers 504 when a request outlives its own timeout under load, 429 from
# API Priority and Fairness): a limit that gave up on the first one never converged at N=1000.
TRANSIENT = {429, 500, 502, 503, 504}
RETRY_TRIES = 12


async def send(client: httpx.AsyncClient, method: str, path: str, retries: list[int], *,
               ok: tuple[int, ...] = (), sleep: Any = asyncio.sleep, **kw: Any) -> httpx.Response:
    """One request of the limit, retried on TRANSIENT answers and connection errors (Retry-After
    honoured, else 0.5 s doubling to 8 s; at most RETRY_TRIES tries; retries[0] counts them).
    Returns the answer (2xx, or a status in `ok`); raises httpx.HTTPStatusError for any other,
    RuntimeError when it is still transient after the last try."""
    delay = 0.5
    for _ in range(RETRY_TRIES):
        try:
            r = await client.request(method, path, **kw)
        except httpx.TransportError:
            r = None
        if r is not None and r.status_code not in TRANSIENT:
            if r.status_code not in ok:
                r.raise_for_status()
            return r
        retries[0] += 1
        after = r.headers.get("Retry-After", "") if r is not None else ""
        await sleep(min(float(after), 8.0) if after.isdigit() else delay)
        delay = min(delay * 2, 8.0)
    raise RuntimeError(f"{method} {path}: still transient after {RETRY_TRIES} tries")


async def limit_one(client: httpx.AsyncClient, cr: dict[str, Any], ns: str, sem: asyncio.Semaphore,
                    sig: Signals, done: dict[str, float], retries: list[int]) -> None:
    hdr = {"Content-Type": "application/apply-patch+yaml"}
    params = {"fieldManager": "slm-bench-limit", "force": "true"}
    cr_path = f"{SLM_PATH.format(ns=ns)}/{cr['metadata']['name']}"
    merge = {"Content-Type": "application/merge-patch+json"}
    async with sem:
        r = await send(client, "POST", SLM_PATH.format(ns=ns), retries, ok=(409,), json=cr)
        if r.status_code == 409:  # a retried POST whose first try was stored after all
            r = await send(client, "GET", cr_path, retries)
        meta = r.json()["metadata"]
        # The spec as sent (the operator's own defaults) with the server's metadata (uid, for
        # the owner references): independent of fields a newer CRD may default.
        p = plan(api.SLMDeployment.model_validate(defaulted({**cr, "metadata": meta})), RenderContext())
        for obj in p.prepare:
            if obj["kind"] == "Secret":
                obj = {**obj, "data": {"api-key": "YmVuY2g="}}
            await send(client, "PATCH", path_for(obj, ns, obj["metadata"]["name"]), retries, params=params,
                       headers=hdr, content=json.dumps(obj))
        status = build_status(Observation(generation=1, engine=p.resolved.engine), None)
        await send(client, "PATCH", f"{cr_path}/status", retries, json={"status": status}, headers=merge)
    if p.job:
        await sig.event(sig.job_done, p.job["metadata"]["name"]).wait()
    async with sem:
        for obj in p.serve:
            await send(client, "PATCH", path_for(obj, ns, obj["metadata"]["name"]), retries, params=params,
                       headers=hdr, content=json.dumps(obj))
    await sig.event(sig.dep_ready, p.serve[0]["metadata"]["name"]).wait()
    o = Observation(generation=1, engine=p.resolved.engine, endpoint="x")
    o.model = Cond(True, "ArtifactReady", "ok.")
    o.available = Cond(True, "MinimumReplicasAvailable", "ok.")
    async with sem:
        await send(client, "PATCH", f"{cr_path}/status", retries, json={"status": build_status(o, status)},
                   headers=merge)
        # The operator's one Event per CR (Ready), so both sides send the same requests.
        await send(client, "POST", f"/api/v1/namespaces/{ns}/events", retries, json={
            "apiVersion": "v1", "kind": "Event", "metadata": {"generateName": f"{meta['name']}.", "namespace": ns},
            "involvedObject": {"apiVersion": api.API_VERSION, "kind": api.KIND, "name": meta["name"],
                               "namespace": ns, "uid": meta["uid"]},
            "type": "Normal", "reason": "Ready", "message": "Serving.", "source": {"component": "slm-bench-limit"}})
    done[cr["metadata"]["name"]] = time.monotonic()


def run_limit(kube: Kube, n: int, concurrency: int) -> dict[str, Any]:
    ns = f"bench-limit-{n}-{int(time.time()) % 100000}"
    with kube.sync() as client:
        create_namespace(client, ns)
    crs = make_crs(n, ns)
    done: dict[str, float] = {}
    retries = [0]

    async def main() -> float:
        sem = asyncio.Semaphore(concurrency)
        sig = Signals()
        async with kube.aio(concurrency + 4) as client:
            watches = [asyncio.create_task(sig.watch(client, f"/apis/batch/v1/namespaces/{ns}/jobs", sig.on_job)),
                       asyncio.create_task(sig.watch(client, f"/apis/apps/v1/namespaces/{ns}/deployments",
                                                     sig.on_dep))]
            t0 = time.monotonic()
            await asyncio.gather(*(limit_one(client, cr, ns, sem, sig, done, retries) for cr in crs))
            wall = time.monotonic() - t0
            for w in watches:
                w.cancel()
            return wall

    cpu0 = time.process_time()
    try:
        with LoadSampler() as load:
            wall = asyncio.run(main())
        # The limit's own CPU (this process: rendering, HTTP, JSON), to set beside the operator's
        # cpu_s_converge: on a machine the cluster saturates, a client's CPU is the API server's loss.
        cpu = time.process_time() - cpu0
    finally:
        with kube.sync() as client:
            delete_namespace(client, ns, n)
    return {"mode": "limit", "n": n, "concurrency": concurrency, "converged": len(done), "wall_s": round(wall, 2),
            "retries": retries[0], "cpu_s": round(cpu, 2), "load_mean": load.mean, "load_peak": load.peak,
            "other_cpu_pct": load.other_cpu_pct}


def median(values: list[float]) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def summarise_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repeated runs of one N, with the spread (min..max) of each figure, and the
    verdict on the load: noisy when any run's mean load exceeded 2x the core count."""
    out: dict[str, Any] = {"n": runs[0]["n"], "runs": len(runs)}
    for key in ("wall_s", "limit_wall_s", "ratio", "ready_p50_s", "ready_p99_s", "served_p50_s",
                "rss_per_cr_kb", "cpu_s_converge", "limit_cpu_s", "reconciles_per_cr", "quiet_writes", "load_mean",
                "converged"):
        vals = [float(r[key]) for r in runs if r.get(key) is not None]
        out[key] = round(median(vals), 2)
        out[f"{key}_spread"] = [round(min(vals), 2), round(max(vals), 2)] if vals else []
    verbs: dict[str, list[float]] = {}
    for r in runs:
        for verb, v in r["requests_per_cr"].items():
            verbs.setdefault(verb, []).append(v)
    out["requests_per_cr"] = {verb: round(median(vs + [0.0] * (len(runs) - len(vs))), 2) for verb, vs in verbs.items()}
    out["noisy"] = any(r["noisy"] for r in runs)
    out["load_peak"] = max(r["load_peak"] for r in runs)
    out["other_cpu_pct"] = max(r["other_cpu_pct"] for r in runs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100, 500, 1000])
    ap.add_argument("--quiet", type=float, default=300, help="quiet period after convergence (seconds)")
    ap.add_argument("--workers", type=int, default=16, help="operator reconcile workers")
    ap.add_argument("--limit-concurrency", type=int, nargs="+", default=[8, 32, 64])
    ap.add_argument("--repeat", type=int, default=1, help="runs per N; the table shows medians and spreads")
    ap.add_argument("--timeout", type=float, default=0, help="seconds to wait for convergence (0: max(300, 1.5 N))")
    ap.add_argument("--failing", type=int, default=0,
                    help="of the N CRs, this many have a Service the API server refuses for ever")
    ap.add_argument("--operator-src", type=Path, default=ROOT / "operator",
                    help="the operator/ directory to run (another checkout's, for a before/after)")
    ap.add_argument("--profile", default="", help="py-spy raw profile of the operator (first run per N) here")
    ap.add_argument("--no-limit", action="store_true", help="operator runs only (no ratio)")
    ap.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG", ""))
    args = ap.parse_args()
    if args.profile and not shutil.which(PY_SPY):
        ap.error(f"--profile needs py-spy: {PY_SPY!r} is not an executable (pip install py-spy, or set PY_SPY "
                 "to its path)")
    if args.failing >= min(args.n):
        ap.error(f"--failing {args.failing} must be smaller than every --n (healthy CRs are needed)")
    kubeconfig = args.kubeconfig or subprocess.run([str(ROOT / "e2e/cluster/up")], capture_output=True, text=True,
                                                   check=True).stdout.strip().splitlines()[-1]
    kube = Kube(kubeconfig)
    ensure_crd(kubeconfig)
    with kube.sync() as client:
        client.get("/readyz").raise_for_status()
        ensure_gpu_nodes(client, 8)
        ensure_cpu_nodes(client, 4)
    cores = os.cpu_count() or 1
    summaries = []
    try:
        summaries = run_all(args, kube, kubeconfig, cores)
    finally:
        with kube.sync() as client:
            remove_nodes(client)
    print_table(args, summaries, cores)


def run_all(args: argparse.Namespace, kube: Kube, kubeconfig: str, cores: int) -> list[dict[str, Any]]:
    """Every N, --repeat times: operator run, limit runs, a summary per N (also printed)."""
    summaries = []
    for n in args.n:
        runs = []
        for i in range(args.repeat):
            op = run_operator(kube, kubeconfig, n, args.quiet, args.workers, operator_src=args.operator_src,
                              timeout=args.timeout or None, failing=args.failing,
                              profile=f"{args.profile}.{n}.txt" if args.profile and i == 0 else "")
            print(json.dumps(op), flush=True)
            op["noisy"] = noisy(op["load_mean"], cores)
            if not args.no_limit:
                limits = []
                for c in args.limit_concurrency:
                    lim = run_limit(kube, n, c)
                    print(json.dumps(lim), flush=True)
                    limits.append(lim)
                    op["noisy"] = op["noisy"] or noisy(lim["load_mean"], cores)
                best = min(limits, key=lambda r: r["wall_s"])
                op["limit_wall_s"], op["limit_concurrency"] = best["wall_s"], best["concurrency"]
                op["ratio"] = round(op["wall_s"] / best["wall_s"], 2)
                op["limit_cpu_s"] = best["cpu_s"]
                op["load_peak"] = max([op["load_peak"]] + [x["load_peak"] for x in limits])
                op["other_cpu_pct"] = max([op["other_cpu_pct"]] + [x["other_cpu_pct"] for x in limits])
            print(json.dumps({**op, "mode": "run"}), flush=True)
            runs.append(op)
        summary = summarise_runs(runs)
        print(json.dumps({**summary, "mode": "summary"}), flush=True)
        summaries.append(summary)
    return summaries


def print_table(args: argparse.Namespace, summaries: list[dict[str, Any]], cores: int) -> None:
    """The Markdown table of the summaries (medians, spreads, the noisy mark)."""
    head = ["N", "runs", "ready", "operator s", "limit s", "ratio", "ready p50/p99 s", "req/CR by verb",
            "quiet writes", "RSS KB/CR", "CPU s (limit's)", "load mean (peak)", "other work %"]
    print(f"\nmedians of --repeat runs, [min..max] spread; cores {cores}; a ratio is 'noisy' when a run's mean "
          f"1-min load average exceeded {NOISY_LOAD_FACTOR:g} x {cores} = {NOISY_LOAD_FACTOR * cores:g}; "
          "'other work %': the largest share of all cores' time taken by processes outside the bench and "
          "its control plane")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in summaries:
        ratio = "-" if args.no_limit else f"{r['ratio']} {r['ratio_spread']}" + (" **noisy**" if r["noisy"] else "")
        limit = "-" if args.no_limit else f"{r['limit_wall_s']} {r['limit_wall_s_spread']}"
        limit_cpu = "" if args.no_limit else f" ({r['limit_cpu_s']})"
        print(f"| {r['n']} | {r['runs']} | {r['converged']:.0f} | {r['wall_s']} {r['wall_s_spread']} | {limit} | "
              f"{ratio} | {r['ready_p50_s']}/{r['ready_p99_s']} | "
              f"{sum(r['requests_per_cr'].values()):.1f} {r['requests_per_cr']} | {r['quiet_writes']:.0f} | "
              f"{r['rss_per_cr_kb']} {r['rss_per_cr_kb_spread']} | {r['cpu_s_converge']}{limit_cpu} | "
              f"{r['load_mean']} ({r['load_peak']}) | {r['other_cpu_pct']} |")


if __name__ == "__main__":
    main()
