"""Time from `kubectl apply` to the first answer on the real node, split into its parts.

For each engine asked for (ONNX Runtime with onnx int4, Ollama with gguf Q8_0), in a fresh
namespace of the local control plane (or $KUBECONFIG) with its real node: start the operator,
serve a tiny Qwen3-architecture model from the local hub (e2e/hubserver.py), apply an
SLMDeployment, wait for Ready, and send chat completions through `kubectl port-forward` until
one answers. The split comes from the API objects' own timestamps (second resolution):

- operator_job_s:      SLMDeployment created -> quantization Job created
- job_image_start_s:   Job pod scheduled -> quantizer container started (image start)
- quantization_s:      quantizer container started -> finished (fetch, convert, verify)
- operator_serve_s:    quantizer finished -> serving Deployment created
- server_image_start_s: server pod scheduled -> first container started
- model_load_s:        server container started -> pod Ready (readiness probe passes)
- first_answer_s:      pod Ready -> first completion answered (measured here)
- total_s:             SLMDeployment created -> first answer

Also prints each runtime image's size. Prints one JSON line per run, then a Markdown table.

    bench/first_answer [--engine onnxruntime ollama] [--repeat 1]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from e2e.helpers import CLUSTER_BIN_DIR, CLUSTER_DIR, apply, kubectl, kubectl_json, run_operator, wait_for  # noqa: E402
from e2e.realnode import IMAGES, REAL_NODE, ensure_images, node_state, port_forward  # noqa: E402

FORMATS = {"onnxruntime": ("onnx", "int4", "onnxruntime-server"), "ollama": ("gguf", "Q8_0", "ollama")}
REPO = "slm-bench/tiny-qwen3"


def ts(value: str | None) -> float | None:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").timestamp() if value else None


def cond_time(pod: dict[str, Any], ctype: str) -> float | None:
    for c in pod["status"].get("conditions") or []:
        if c["type"] == ctype and c["status"] == "True":
            return ts(c.get("lastTransitionTime"))
    return None


def container_times(pod: dict[str, Any]) -> tuple[float | None, float | None]:
    """(started, finished) of the pod's first container (running or terminated state)."""
    cs = (pod["status"].get("containerStatuses") or [{}])[0]
    state = cs.get("state", {})
    last = cs.get("lastState", {}).get("terminated") or {}
    run = state.get("running") or {}
    term = state.get("terminated") or {}
    return ts(run.get("startedAt") or term.get("startedAt") or last.get("startedAt")), ts(term.get("finishedAt"))


def one_run(kc: str, engine: str, hub: Any, revision: str) -> dict[str, Any]:
    fmt, qtype, _ = FORMATS[engine]
    ns = f"bench-first-{uuid.uuid4().hex[:6]}"
    kubectl(kc, "create", "namespace", ns)
    kubectl(kc, "label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    wait_for(lambda: kubectl(kc, "-n", ns, "get", "serviceaccount", "default", "-o", "name"), timeout=30)
    name = "tiny"
    try:
        with run_operator(kc, [ns]):
            apply(kc, {
                "apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment", "metadata": {"name": name},
                "spec": {"model": {"source": f"hf://{REPO}", "revision": revision, "hub": {"endpoint": hub.url},
                                   "contextLength": 512},
                         "quantization": {"format": fmt, "type": qtype}, "engine": {"name": engine},
                         "replicas": 1, "resources": {"cpu": "500m", "memory": "2Gi"},
                         "storage": {"size": "1Gi"}, **REAL_NODE}}, namespace=ns)

            def ready() -> bool:
                obj = kubectl_json(kc, "-n", ns, "get", "slmdeployment", name)
                conds = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
                if conds.get("Degraded", {}).get("status") == "True":
                    raise SystemExit(f"{engine}: Degraded: {conds['Degraded']['message']}")
                return conds.get("Ready", {}).get("status") == "True"

            wait_for(ready, timeout=1200, interval=1, what=f"{engine} Ready")
            key = base64.b64decode(kubectl_json(kc, "-n", ns, "get", "secret", f"{name}-api-key")["data"]["api-key"])
            import httpx

            body = {"model": "tiny-qwen3", "messages": [{"role": "user", "content": "Say hello."}],
                    "max_tokens": 8}
            with port_forward(kc, ns, f"service/{name}", 8000) as port:
                def answer() -> bool:
                    r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=120,
                                   headers={"Authorization": f"Bearer {key.decode()}"})
                    return r.status_code == 200

                wait_for(answer, timeout=300, interval=0.5, what="a first answer")
                answered = time.time()

            cr = kubectl_json(kc, "-n", ns, "get", "slmdeployment", name)
            jobs = kubectl_json(kc, "-n", ns, "get", "jobs")["items"]
            deps = kubectl_json(kc, "-n", ns, "get", "deployments")["items"]
            pods = kubectl_json(kc, "-n", ns, "get", "pods")["items"]
            job_pod = next(p for p in pods if "job-name" in p["metadata"].get("labels", {}))
            srv_pod = next(p for p in pods if "job-name" not in p["metadata"].get("labels", {}))
            created = ts(cr["metadata"]["creationTimestamp"])
            job_created = ts(jobs[0]["metadata"]["creationTimestamp"])
            q_start, q_end = container_times(job_pod)
            dep_created = ts(deps[0]["metadata"]["creationTimestamp"])
            s_start, _ = container_times(srv_pod)
            s_ready = cond_time(srv_pod, "Ready")

            def d(a: float | None, b: float | None) -> float | None:
                return round(b - a, 1) if a is not None and b is not None else None

            return {"engine": engine, "format": f"{fmt} {qtype}",
                    "operator_job_s": d(created, job_created),
                    "job_image_start_s": d(cond_time(job_pod, "PodScheduled"), q_start),
                    "quantization_s": d(q_start, q_end),
                    "operator_serve_s": d(q_end, dep_created),
                    "server_image_start_s": d(cond_time(srv_pod, "PodScheduled"), s_start),
                    "model_load_s": d(s_start, s_ready),
                    "first_answer_s": d(s_ready, answered),
                    "total_s": d(created, answered),
                    "load1": round(os.getloadavg()[0], 2)}
    finally:
        kubectl(kc, "delete", "namespace", ns, "--wait=false")


def image_sizes() -> dict[str, str]:
    out = {}
    for name, ref in IMAGES.items():
        done = subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", ref],
                              capture_output=True, text=True, check=False)
        if done.returncode == 0:
            out[name] = f"{int(done.stdout.strip()) / 1e6:.0f} MB"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="apply -> first answer on the real node, split")
    ap.add_argument("--engine", nargs="+", default=["onnxruntime", "ollama"], choices=sorted(FORMATS))
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    os.environ["PATH"] = f"{CLUSTER_BIN_DIR}{os.pathsep}{os.environ['PATH']}"
    kc = os.environ.get("KUBECONFIG") or subprocess.run(
        [str(CLUSTER_DIR / "up")], capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    node = node_state(kc)
    if isinstance(node, str):
        raise SystemExit(node)
    ensure_images(["quantizer", *(FORMATS[e][2] for e in a.engine)])
    from e2e.hubserver import HubServer
    from slm_runtime.tiny_models import tiny_model

    rows = []
    with HubServer(host=node.address, port=0) as hub:
        revision = hub.add_repo(REPO, tiny_model("qwen3"))
        for _ in range(a.repeat):
            for engine in a.engine:
                row = one_run(kc, engine, hub, revision)
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(json.dumps({"image_sizes": image_sizes()}))
    keys = [k for k in rows[0] if k not in ("engine", "format")]
    print("\n| engine | format | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for r in rows:
        print(f"| {r['engine']} | {r['format']} | " + " | ".join(str(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
