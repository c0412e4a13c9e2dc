"""Control-plane benchmark: the operator against the API server's own limit.

For each N: create N SLMDeployments (a mix of the examples' shapes) in a fresh namespace
with the operator running, and measure the wall time until every CR is Ready, per-CR
latency (create -> serving Deployment applied, create -> Ready), the operator's API
requests per CR by verb (its own counter), its RSS and CPU; then a quiet period (no
changes) in which the goal is zero writes. Then the limit: the very same rendered
manifests and statuses applied by a plain server-side-apply client (httpx, HTTP/1.1 keep-
alive, best concurrency found) doing the same steps — prepare objects, wait for the Job
to complete, serving objects, status — and the ratio operator/limit.

Prints a table and one JSON line per run. Run: bench/controlplane [--n 100 500 1000].
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
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
    """KWOK nodes with 128 GPUs each, so GPU shapes (a Job and a replica each) schedule at any N."""
    for i in range(count):
        node = yaml.safe_load((ROOT / "e2e/cluster/manifests/nodes.yaml").read_text().split("---")[0])
        name = f"bench-gpu-{i}"
        node["metadata"]["name"] = name
        node["metadata"]["labels"]["kubernetes.io/hostname"] = name
        for k in ("capacity", "allocatable"):
            node["status"][k].update({"nvidia.com/gpu": "128", "cpu": "2048", "memory": "16Ti", "pods": "1000"})
        r = client.patch(f"/api/v1/nodes/{name}", params={"fieldManager": "slm-bench", "force": "true"},
                         content=json.dumps(node), headers={"Content-Type": "application/apply-patch+yaml"})
        r.raise_for_status()
        client.patch(f"/api/v1/nodes/{name}/status", params={"fieldManager": "slm-bench", "force": "true"},
                     content=json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                                         "status": node["status"]}),
                     headers={"Content-Type": "application/apply-patch+yaml"}).raise_for_status()


def ensure_cpu_nodes(client: httpx.Client, count: int) -> None:
    for i in range(count):
        name = f"bench-cpu-{i}"
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                             "labels": {"type": "kwok", "kubernetes.io/hostname": name}},
                "status": {"capacity": {"cpu": "512", "memory": "4Ti", "pods": "1000"},
                           "allocatable": {"cpu": "512", "memory": "4Ti", "pods": "1000"}}}
        client.patch(f"/api/v1/nodes/{name}", params={"fieldManager": "slm-bench", "force": "true"},
                     content=json.dumps(node), headers={"Content-Type": "application/apply-patch+yaml"}
                     ).raise_for_status()
        client.patch(f"/api/v1/nodes/{name}/status", params={"fieldManager": "slm-bench", "force": "true"},
                     content=json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                                         "status": node["status"]}),
                     headers={"Content-Type": "application/apply-patch+yaml"}).raise_for_status()


def create_namespace(client: httpx.Client, ns: str) -> None:
    client.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                             "metadata": {"name": ns}}).raise_for_status()


def delete_namespace(client: httpx.Client, ns: str, wait: float = 600) -> None:
    """Delete and wait until it is gone, so the next run does not share the machine with GC."""
    client.delete(f"/api/v1/namespaces/{ns}")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and client.get(f"/api/v1/namespaces/{ns}").status_code != 404:
        time.sleep(1)


# -- watching for progress -------------------------------------------------------------------

class Progress:
    """Watches SLMDeployments and Deployments in a namespace; records first-seen times."""

    def __init__(self, kube: Kube, ns: str) -> None:
        self.kube, self.ns = kube, ns
        self.ready: dict[str, float] = {}
        self.served: dict[str, float] = {}
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
                        rv = listing["metadata"]["resourceVersion"]
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
                except (httpx.HTTPError, ValueError):
                    time.sleep(0.2)


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


def run_operator(kube: Kube, kubeconfig: str, n: int, quiet: float, workers: int) -> dict[str, Any]:
    ns = f"bench-op-{n}-{int(time.time()) % 100000}"
    with kube.sync() as client:
        create_namespace(client, ns)
        crs = make_crs(n, ns)
        port = 19000 + n % 1000
        log = open(tempfile.mktemp(prefix="slm-bench-operator-", suffix=".log"), "wb")  # noqa: SIM115
        op = subprocess.Popen([sys.executable, "-m", "slm_operator.main", "--namespace", ns, "--metrics-port",
                               str(port), "--workers", str(workers)], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "KUBECONFIG": kubeconfig, "PYTHONPATH": str(ROOT / "operator")})
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    scrape(port)
                    break
                except OSError:
                    time.sleep(0.2)
            time.sleep(2)
            rss0, cpu0 = proc_stats(op.pid)
            m0 = scrape(port)
            prog = Progress(kube, ns)
            prog.start()
            t0 = time.monotonic()
            created = asyncio.run(create_all(kube, crs, ns, 32))
            deadline = t0 + max(300, n * 1.5)
            while len(prog.ready) < n and time.monotonic() < deadline:
                time.sleep(0.2)
            wall = time.monotonic() - t0
            converged = len(prog.ready)
            m1 = scrape(port)
            rss1, cpu1 = proc_stats(op.pid)
            time.sleep(quiet)
            m2 = scrape(port)
            rss2, cpu2 = proc_stats(op.pid)
            prog.stop()
        finally:
            op.send_signal(signal.SIGTERM)
            try:
                op.wait(20)
            except subprocess.TimeoutExpired:
                op.kill()
            delete_namespace(client, ns)
    served = [prog.served[k] - created[k] for k in created if k in prog.served]
    ready = [prog.ready[k] - created[k] for k in created if k in prog.ready]
    conv = diff(m0, m1)
    return {
        "mode": "operator", "n": n, "converged": converged, "wall_s": round(wall, 2),
        "served_p50_s": round(pct(served, 50), 2), "served_p99_s": round(pct(served, 99), 2),
        "ready_p50_s": round(pct(ready, 50), 2), "ready_p99_s": round(pct(ready, 99), 2),
        "requests_per_cr": {k: round(v / n, 2) for k, v in sorted(by_verb(conv).items())},
        "quiet_s": quiet, "quiet_writes": writes(diff(m1, m2)), "quiet_requests": sum(diff(m1, m2).values()),
        "rss_start_mb": round(rss0 / 2**20, 1), "rss_converged_mb": round(rss1 / 2**20, 1),
        # RSS growth per CR is measured after the quiet period (the heap has settled by then).
        "rss_after_quiet_mb": round(rss2 / 2**20, 1), "rss_per_cr_kb": round((rss2 - rss0) / n / 1024, 1),
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


async def limit_one(client: httpx.AsyncClient, cr: dict[str, Any], ns: str, sem: asyncio.Semaphore,
                    sig: Signals, done: dict[str, float]) -> None:
    hdr = {"Content-Type": "application/apply-patch+yaml"}
    params = {"fieldManager": "slm-bench-limit", "force": "true"}
    status_path = f"{SLM_PATH.format(ns=ns)}/{cr['metadata']['name']}/status"
    merge = {"Content-Type": "application/merge-patch+json"}
    async with sem:
        r = await client.post(SLM_PATH.format(ns=ns), json=cr)
        r.raise_for_status()
        p = plan(api.SLMDeployment.model_validate(defaulted(r.json())), RenderContext())
        for obj in p.prepare:
            if obj["kind"] == "Secret":
                obj = {**obj, "data": {"api-key": "YmVuY2g="}}
            (await client.patch(path_for(obj, ns, obj["metadata"]["name"]), params=params, headers=hdr,
                                content=json.dumps(obj))).raise_for_status()
        status = build_status(Observation(generation=1, engine=p.resolved.engine), None)
        await client.patch(status_path, json={"status": status}, headers=merge)
    if p.job:
        await sig.event(sig.job_done, p.job["metadata"]["name"]).wait()
    async with sem:
        for obj in p.serve:
            (await client.patch(path_for(obj, ns, obj["metadata"]["name"]), params=params, headers=hdr,
                                content=json.dumps(obj))).raise_for_status()
    await sig.event(sig.dep_ready, p.serve[0]["metadata"]["name"]).wait()
    o = Observation(generation=1, engine=p.resolved.engine, endpoint="x")
    o.model = Cond(True, "ArtifactReady", "ok.")
    o.available = Cond(True, "MinimumReplicasAvailable", "ok.")
    async with sem:
        await client.patch(status_path, json={"status": build_status(o, status)}, headers=merge)
    done[cr["metadata"]["name"]] = time.monotonic()


def run_limit(kube: Kube, n: int, concurrency: int) -> dict[str, Any]:
    ns = f"bench-limit-{n}-{int(time.time()) % 100000}"
    with kube.sync() as client:
        create_namespace(client, ns)
    crs = make_crs(n, ns)
    done: dict[str, float] = {}

    async def main() -> float:
        sem = asyncio.Semaphore(concurrency)
        sig = Signals()
        async with kube.aio(concurrency + 4) as client:
            watches = [asyncio.create_task(sig.watch(client, f"/apis/batch/v1/namespaces/{ns}/jobs", sig.on_job)),
                       asyncio.create_task(sig.watch(client, f"/apis/apps/v1/namespaces/{ns}/deployments",
                                                     sig.on_dep))]
            t0 = time.monotonic()
            await asyncio.gather(*(limit_one(client, cr, ns, sem, sig, done) for cr in crs))
            wall = time.monotonic() - t0
            for w in watches:
                w.cancel()
            return wall

    try:
        wall = asyncio.run(main())
    finally:
        with kube.sync() as client:
            delete_namespace(client, ns)
    return {"mode": "limit", "n": n, "concurrency": concurrency, "converged": len(done), "wall_s": round(wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100, 500, 1000])
    ap.add_argument("--quiet", type=float, default=300, help="quiet period after convergence (seconds)")
    ap.add_argument("--workers", type=int, default=16, help="operator reconcile workers")
    ap.add_argument("--limit-concurrency", type=int, nargs="+", default=[8, 32, 64])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG", ""))
    args = ap.parse_args()
    kubeconfig = args.kubeconfig or subprocess.run([str(ROOT / "e2e/cluster/up")], capture_output=True, text=True,
                                                   check=True).stdout.strip().splitlines()[-1]
    kube = Kube(kubeconfig)
    with kube.sync() as client:
        client.get("/readyz").raise_for_status()
        ensure_gpu_nodes(client, 8)
        ensure_cpu_nodes(client, 4)
    rows = []
    for n in args.n:
        for _ in range(args.repeat):
            op = run_operator(kube, kubeconfig, n, args.quiet, args.workers)
            print(json.dumps(op), flush=True)
            limits = []
            for c in args.limit_concurrency:
                lim = run_limit(kube, n, c)
                print(json.dumps(lim), flush=True)
                limits.append(lim)
            best = min(limits, key=lambda r: r["wall_s"])
            op["limit_wall_s"], op["limit_concurrency"] = best["wall_s"], best["concurrency"]
            op["ratio"] = round(op["wall_s"] / best["wall_s"], 2)
            print(json.dumps({**op, "mode": "summary"}), flush=True)
            rows.append(op)
    head = ["N", "ready", "operator s", "limit s", "ratio", "served p50/p99 s", "ready p50/p99 s",
            "req/CR", "quiet writes", "RSS MB (start/conv/quiet)", "RSS KB/CR", "CPU s"]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        print(f"| {r['n']} | {r['converged']} | {r['wall_s']} | {r['limit_wall_s']} (c={r['limit_concurrency']}) | "
              f"{r['ratio']} | {r['served_p50_s']}/{r['served_p99_s']} | {r['ready_p50_s']}/{r['ready_p99_s']} | "
              f"{sum(r['requests_per_cr'].values()):.1f} {r['requests_per_cr']} | {r['quiet_writes']:.0f} | "
              f"{r['rss_start_mb']}/{r['rss_converged_mb']}/{r['rss_after_quiet_mb']} | {r['rss_per_cr_kb']} | "
              f"{r['cpu_s_converge']} |")


if __name__ == "__main__":
    main()
