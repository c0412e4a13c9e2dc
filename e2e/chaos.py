"""Fault-injection helpers for the e2e chaos tests (issue 18 items 1, 2, 4).

- `fleet`/`apply_fleet`: N small SLMDeployments (ONNX int4 on the KWOK CPU nodes) and seeded
  edit waves that bump their generation (replicas, or the quantization type: a new artifact key,
  so a new Job and the old one pruned).
- `StatusWatch`: a `kubectl get slm -w` in the background that records every status it sees and
  flags an observedGeneration that goes backwards or runs ahead of metadata.generation.
- `converged`/`invariants`: every CR Ready at its generation; exactly one quantization Job per CR,
  for the artifact key in its status; the same set of children for every CR of the fleet, each
  owned (controller reference) by a live CR of the same name and uid; no child left whose CR is gone.
- `kill`: SIGKILL an operator started by `e2e.helpers.run_operator` (its whole process group).

Everything goes through e2e.helpers (kubectl, run_operator); nothing here talks to the API
server another way.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2e.helpers import OperatorProcess, condition_status, kubectl, kubectl_json, run_operator, wait_for

ROOT = Path(__file__).resolve().parents[1]
# Every kind the operator creates (handlers.CHILD_KINDS plus the Secrets it generates).
CHILD_KINDS = ("deployments.apps,jobs.batch,services,persistentvolumeclaims,networkpolicies,"
               "horizontalpodautoscalers.autoscaling,poddisruptionbudgets.policy,secrets")
MANAGED = "app.kubernetes.io/managed-by=slm-operator"
ARTIFACT_KEY = "slm.ai/artifact-key"
DEPLOYMENT_LABEL = "slm.ai/deployment"


def ensure_crd(kubeconfig: str) -> None:
    """Apply the project's CRD (server-side, forced) and wait until it is Established."""
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    kubectl(kubeconfig, "wait", "--for=condition=Established", "crd/slmdeployments.slm.ai", "--timeout=60s")


def fleet(n: int, prefix: str = "chaos") -> list[dict[str, Any]]:
    """n SLMDeployments named <prefix>-000...: Qwen3-0.6B as ONNX int4, 1 replica, 100m/512Mi, on CPU nodes.

    Based on examples/qwen3-0.6b-onnx-cpu.yaml (the cheapest example: no Secret, no GPU).
    """
    base = yaml.safe_load((ROOT / "examples/qwen3-0.6b-onnx-cpu.yaml").read_text())
    base["spec"]["replicas"] = 1
    # Small requests, so that 50 (up to 100 pods) fit the two KWOK CPU nodes beside other tests;
    # the quantization Jobs keep their fixed 8Gi.
    base["spec"]["resources"] = {"cpu": "100m", "memory": "512Mi"}
    out = []
    for i in range(n):
        cr = copy.deepcopy(base)
        cr["metadata"] = {"name": f"{prefix}-{i:03d}"}
        out.append(cr)
    return out


def edit_wave(crs: list[dict[str, Any]], rng: random.Random, share: float = 0.5) -> list[str]:
    """Change about `share` of the CRs in place (seeded): half of those change replicas (1 <-> 2),
    the other half the quantization type (int4 <-> fp16: a new artifact key). Returns their names."""
    changed = []
    for cr in crs:
        if rng.random() >= share:
            continue
        spec = cr["spec"]
        if rng.random() < 0.5:
            spec["replicas"] = 3 - int(spec.get("replicas", 1))
        else:
            q = spec["quantization"]
            q["type"] = "fp16" if q.get("type") == "int4" else "int4"
        changed.append(cr["metadata"]["name"])
    return changed


def apply_fleet(kubeconfig: str, namespace: str, crs: Iterable[dict[str, Any]]) -> None:
    """Apply the CRs in one kubectl call (client-side apply, as a user would)."""
    kubectl(kubeconfig, "-n", namespace, "apply", "-f", "-", input=yaml.safe_dump_all(list(crs)), timeout=180)


# Exceptions a reconcile may hit when the API server is slow or a connection drops (the machine is
# shared and busy); the work queue retries them with backoff. Any other traceback fails a test.
TRANSIENT = ("ReadTimeout", "WriteTimeout", "ConnectTimeout", "PoolTimeout", "ConnectError", "ReadError",
             "RemoteProtocolError")


def unexpected_tracebacks(output: str) -> list[str]:
    """'<log line> -> <exception>' for every logged traceback in an operator's output that is not
    a retried reconcile failing on a TRANSIENT transport error (see `operator`). A record is a
    line that starts with a timestamp plus the lines after it; its exception is the last
    unindented line of its traceback (for chained exceptions: the one raised last)."""
    records: list[list[str]] = []
    for line in output.splitlines():
        if re.match(r"^\[?\d{4}-\d\d-\d\d ", line) or not records:
            records.append([line])
        else:
            records[-1].append(line)
    bad = []
    for head, *body in records:
        if not any(b.startswith("Traceback (most recent call last):") for b in body):
            continue
        raised = [b for b in body if b and not b[0].isspace()
                  and not b.startswith(("Traceback (most recent", "The above exception", "During handling"))]
        last = raised[-1] if raised else ""
        retried = "reconcile of" in head and "failed (attempt" in head
        if not (retried and last.split(":", 1)[0].rsplit(".", 1)[-1] in TRANSIENT):
            bad.append(f"{head[:200]} -> {last[:200]}")
    return bad


@contextmanager
def operator(kubeconfig: str, namespaces: list[str] | None, **kwargs: Any) -> Iterator[OperatorProcess]:
    """`e2e.helpers.run_operator`, except that reconciles that failed on a TRANSIENT transport
    error and were retried may log their traceback; any other traceback still fails."""
    cm = run_operator(kubeconfig, namespaces, **kwargs)
    op = cm.__enter__()
    try:
        yield op
    except BaseException:
        cm.__exit__(*sys.exc_info())
        raise
    try:
        cm.__exit__(None, None, None)
    except AssertionError:
        bad = unexpected_tracebacks(op.output())
        if bad:
            raise AssertionError(f"the operator printed tracebacks (log {op.log_path}):\n"
                                 + "\n".join(bad[:10])) from None


def kill(op: OperatorProcess) -> bool:
    """SIGKILL the operator's process group; True if it was still running (a real kill)."""
    if op.process.poll() is not None:
        return False
    os.killpg(op.process.pid, signal.SIGKILL)
    op.process.wait(30)
    return True


@dataclass
class StatusWatch:
    """Record every SLMDeployment status seen in a namespace (a background `kubectl get -w`).

    `violations` lists each event whose status.observedGeneration is lower than one seen before
    for the same CR (an older status written over a newer one) or higher than its
    metadata.generation. Use as a context manager; the watch restarts if kubectl exits.
    """

    kubeconfig: str
    namespace: str
    events: int = 0
    violations: list[str] = field(default_factory=list)
    _seen: dict[tuple[str, str], int] = field(default_factory=dict)  # (name, uid) -> highest observedGeneration
    _stop: threading.Event = field(default_factory=threading.Event)
    _proc: subprocess.Popen[str] | None = None
    _thread: threading.Thread | None = None

    def __enter__(self) -> StatusWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
        if self._thread:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._proc = subprocess.Popen(
                ["kubectl", "--kubeconfig", self.kubeconfig, "-n", self.namespace, "get", "slmdeployments.slm.ai",
                 "--watch", "--output-watch-events", "-o", "json"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            decoder, buf = json.JSONDecoder(), ""
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                buf += line
                while buf.strip():
                    try:
                        obj, end = decoder.raw_decode(buf.lstrip())
                    except json.JSONDecodeError:
                        break
                    buf = buf.lstrip()[end:]
                    self._observe(obj.get("object") or {})
            self._proc.wait()
            self._stop.wait(0.5)

    def _observe(self, cr: dict[str, Any]) -> None:
        meta, status = cr.get("metadata") or {}, cr.get("status") or {}
        if "observedGeneration" not in status:
            return
        self.events += 1
        key = (meta.get("name", ""), meta.get("uid", ""))
        seen, gen = int(status["observedGeneration"]), int(meta.get("generation") or 0)
        before = self._seen.get(key, 0)
        if seen < before:
            self.violations.append(f"{key[0]}: observedGeneration went back from {before} to {seen} "
                                   f"(resourceVersion {meta.get('resourceVersion')})")
        if seen > gen:
            self.violations.append(f"{key[0]}: observedGeneration {seen} ahead of generation {gen}")
        self._seen[key] = max(before, seen)


def converged(kubeconfig: str, namespace: str, names: Iterable[str]) -> bool:
    """Every named CR is Ready=True with status.observedGeneration == metadata.generation."""
    items = {o["metadata"]["name"]: o for o in kubectl_json(kubeconfig, "-n", namespace, "get", "slm")["items"]}
    for name in names:
        cr = items.get(name)
        if cr is None or condition_status(cr, "Ready") != "True":
            return False
        if (cr.get("status") or {}).get("observedGeneration") != cr["metadata"].get("generation"):
            return False
    return True


def wait_converged(kubeconfig: str, namespace: str, names: list[str], timeout: float) -> float:
    """Wait until `converged`; return the seconds it took (TimeoutError lists the CRs not there)."""
    started = time.monotonic()
    try:
        wait_for(lambda: converged(kubeconfig, namespace, names), timeout=timeout, interval=1.0,
                 what=f"{len(names)} SLMDeployments Ready at their generation")
    except TimeoutError as e:
        items = kubectl_json(kubeconfig, "-n", namespace, "get", "slm")["items"]
        late = [f"{o['metadata']['name']} gen {o['metadata'].get('generation')} status "
                f"{json.dumps(o.get('status'))[:400]}"
                for o in items if o["metadata"]["name"] in names and (
                    condition_status(o, "Ready") != "True"
                    or (o.get("status") or {}).get("observedGeneration") != o["metadata"].get("generation"))]
        raise TimeoutError(f"{e}\nnot converged:\n" + "\n".join(late[:10])) from None
    return time.monotonic() - started


def invariants(kubeconfig: str, namespace: str, names: list[str]) -> list[str]:
    """What is wrong with the namespace's CRs and children; [] when every invariant holds.

    - each CR: Ready at its generation, and exactly one quantization Job (label slm.ai/deployment,
      annotation slm.ai/artifact-key) whose key is status.artifact.key;
    - exactly one Deployment, Service and Job per CR, a PodDisruptionBudget iff replicas > 1, and
      the same multiset of child kinds for every CR with the same replicas (a missing or duplicate
      child shows as a different one);
    - every managed child carries a controller ownerReference to the live CR its slm.ai/deployment
      label names, with that CR's uid (the Retain model cache PVC has none by design, but its CR
      must exist); no managed child belongs to a CR that is gone.
    """
    problems: list[str] = []
    crs = {o["metadata"]["name"]: o for o in kubectl_json(kubeconfig, "-n", namespace, "get", "slm")["items"]}
    children = kubectl_json(kubeconfig, "-n", namespace, "get", CHILD_KINDS, "-l", MANAGED)["items"]
    by_owner: dict[str, list[dict[str, Any]]] = {}
    for obj in children:
        meta = obj["metadata"]
        what = f"{obj['kind']} {meta['name']}"
        owner = (meta.get("labels") or {}).get(DEPLOYMENT_LABEL)
        cr = crs.get(owner or "")
        if cr is None:
            problems.append(f"orphan: {what} (label {DEPLOYMENT_LABEL}={owner!r}: no such SLMDeployment)")
            continue
        by_owner.setdefault(owner, []).append(obj)
        refs = [r for r in meta.get("ownerReferences") or [] if r.get("controller")]
        if obj["kind"] == "PersistentVolumeClaim" and not refs:
            continue  # retainPolicy Retain (the default): the cache outlives the CR on purpose
        if len(refs) != 1 or refs[0].get("uid") != cr["metadata"]["uid"] or refs[0].get("name") != owner:
            problems.append(f"orphan: {what} is not controlled by SLMDeployment {owner} "
                            f"(uid {cr['metadata']['uid']}): {refs}")
    shapes: dict[int, Counter[tuple[tuple[str, int], ...]]] = {}  # by spec.replicas (2+: a PDB too)
    for name in names:
        cr = crs.get(name)
        if cr is None:
            problems.append(f"{name}: the SLMDeployment is gone")
            continue
        status = cr.get("status") or {}
        if condition_status(cr, "Ready") != "True":
            problems.append(f"{name}: not Ready: {json.dumps(status.get('conditions'))[:400]}")
        if status.get("observedGeneration") != cr["metadata"].get("generation"):
            problems.append(f"{name}: status.observedGeneration {status.get('observedGeneration')} "
                            f"!= generation {cr['metadata'].get('generation')}")
        mine = by_owner.get(name, [])
        jobs = [o for o in mine if o["kind"] == "Job"]
        key = (status.get("artifact") or {}).get("key")
        keys = Counter((o["metadata"].get("annotations") or {}).get(ARTIFACT_KEY) for o in jobs)
        if keys != Counter({key: 1}):
            problems.append(f"{name}: quantization Jobs by artifact key {dict(keys)}; want exactly one, "
                            f"for {key!r}")
        kinds = Counter(o["kind"] for o in mine)
        replicas = int(cr["spec"].get("replicas") or 1)
        shapes.setdefault(replicas, Counter())[tuple(sorted(kinds.items()))] += 1
        want = {"Deployment": 1, "Service": 1, "Job": 1, "PodDisruptionBudget": int(replicas > 1)}
        problems += [f"{name}: {kinds.get(k, 0)} {k} (want {n})" for k, n in want.items() if kinds.get(k, 0) != n]
        named = Counter((o["kind"], o["metadata"]["name"]) for o in mine)
        problems += [f"{name}: {k} {n} listed {c} times" for (k, n), c in named.items() if c > 1]
    for replicas, seen in shapes.items():
        if len(seen) > 1:
            problems.append(f"CRs with {replicas} replicas differ in their children's kinds (a missing or "
                            f"duplicate child): {dict(seen)}")
    return problems


# kopf's default peering lifetime (kopf.OperatorSettings().peering.lifetime; the chart keeps it):
# a replica killed without leaving the peering is presumed dead this many seconds after its
# last keep-alive.
PEERING_LIFETIME_S = 60


def paused(op: OperatorProcess) -> bool:
    """Is this kopf peer standing by? (kopf starts a peer paused and logs each pause and resume.)"""
    out = op.output()
    return out.rfind("Pausing operations") >= out.rfind("Resuming operations")


def chart_ha_operator(namespace: str, release: str = "slm-ha") -> tuple[list[str], dict[str, str], list[Any]]:
    """What the chart runs with replicaCount=2, watching `namespace`: the StatefulSet container's
    args (without the metrics and liveness ports: both replicas run on this host), its literal env, and the
    peering objects to create (the chart's KopfPeering). Rendered with `helm template`."""
    from e2e.helpers import CLUSTER_BIN_DIR

    values = ["--set", "replicaCount=2", "--set", "rbac.scope=namespaces", "--set", f"watchNamespaces={{{namespace}}}"]
    done = subprocess.run([str(CLUSTER_BIN_DIR / "helm"), "template", release, str(ROOT / "charts/slm-operator"),
                           "--kube-version", "1.32.0", *values], capture_output=True, text=True, timeout=120,
                          check=True)
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    assert sts["spec"]["replicas"] == 2 and sts["spec"].get("podManagementPolicy") == "Parallel", sts["spec"]
    ctr = sts["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in ctr.get("env", []) if "value" in e}
    prio = [e for e in ctr.get("env", []) if e["name"] == "SLM_PRIORITY"]
    assert prio and "pod-index" in prio[0]["valueFrom"]["fieldRef"]["fieldPath"], "the chart no longer sets " \
        "SLM_PRIORITY from the pod index: update this helper"
    args = [a for a in ctr["args"] if not a.startswith(("--metrics-port=", "--liveness="))]
    peerings = [d for d in docs if d["kind"] in ("KopfPeering", "ClusterKopfPeering")]
    return args, env, peerings
