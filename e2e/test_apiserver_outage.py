"""API server outage (issue 18 item 3, the outage part): kube-apiserver stopped mid-convergence.

On a second, private control plane (its own state dir and ports: e2e/cluster/up with
SLM_CLUSTER_DIR and the SLM_*_PORT variables, KWOK nodes only), never the shared one: other
tests run there. With 20 SLMDeployments converging, the private API server is killed (SIGKILL)
for SLM_OUTAGE_S seconds (30 in `make test`; `make chaos` adds 300), then `up` starts it again.
The operator must neither crash nor exit, reconnect by itself, and converge everything without
a restart; the writes it could not make meanwhile are made afterwards (every CR reaches Ready at
its generation, every invariant of e2e.chaos.invariants holds). KWOK does not re-report pods
Ready after an outage longer than the node grace period (a kubelet does): `_kubelet_readiness`
stands in for that. Not covered here: the etcd
latency injection and the 429 storm (API Priority and Fairness).

About 2 minutes plus the outage; the private control plane is stopped at the end (by the pids
in its own state dir).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.chaos import StatusWatch, apply_fleet, ensure_crd, fleet, invariants, operator, wait_converged
from e2e.helpers import CLUSTER_DIR, kubectl, kubectl_json, wait_for

pytestmark = pytest.mark.e2e

OUTAGE_S = float(os.environ.get("SLM_OUTAGE_S", "30"))
N_CRS = 20
# Ports of the private control plane: the shared one's plus 10000 (e2e/cluster/README.md).
PRIVATE_ENV = {
    "SLM_APISERVER_PORT": "26443", "SLM_ETCD_PORT": "22379", "SLM_ETCD_PEER_PORT": "22380",
    "SLM_KCM_PORT": "26257", "SLM_SCHEDULER_PORT": "26259", "SLM_KWOK_PORT": "26247", "SLM_REAL_NODE": "0",
}


def _up(state: Path) -> str:
    env = {**os.environ, **PRIVATE_ENV, "SLM_CLUSTER_DIR": str(state)}
    done = subprocess.run([str(CLUSTER_DIR / "up")], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    if done.returncode != 0:
        pytest.fail(f"the private control plane did not start:\n{done.stderr[-3000:]}", pytrace=False)
    return done.stdout.strip().splitlines()[-1]


def _pid(state: Path, component: str) -> int:
    return int((state / "run" / f"{component}.pid").read_text().strip())


def _kubelet_readiness(kc: str, ns: str, stop: threading.Event) -> None:
    """Do what a kubelet does after an outage and KWOK does not: report Ready again.

    During an outage longer than the node grace period (40 s) the node lifecycle controller marks
    every pod of the silent nodes Ready=False; a kubelet re-reports Ready once its node is back,
    KWOK leaves running pods as they are. So every 5 s, a Running pod on a KWOK node whose
    containers are ready but which is itself not Ready gets Ready=True (its status subresource).
    """
    while not stop.wait(5):
        with contextlib.suppress(Exception):
            for pod in kubectl_json(kc, "-n", ns, "get", "pods")["items"]:
                conds = {c["type"]: c for c in pod["status"].get("conditions") or []}
                if (pod["status"].get("phase") == "Running" and conds.get("ContainersReady", {}).get("status") == "True"
                        and conds.get("Ready", {}).get("status") == "False"):
                    ready = [{**c, "status": "True"} if c["type"] == "Ready" else c for c in conds.values()]
                    kubectl(kc, "-n", ns, "patch", "pod", pod["metadata"]["name"], "--subresource=status",
                            "--type=merge", "-p", json.dumps({"status": {"conditions": ready}}))


def _gone(pid: int) -> bool:
    """The process has exited (a zombie counts: `up` started it detached, its parent may not reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


@pytest.fixture(scope="module")
def private_plane(kubeconfig: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(kubeconfig, state dir) of a private control plane, stopped afterwards (its own pids only)."""
    state = Path(os.environ.get("SLM_OUTAGE_CLUSTER_DIR") or tmp_path_factory.mktemp("outage") / "cluster")
    try:
        kc = _up(state)
        yield kc, state
    finally:
        pids = []
        for component in ("fake-provisioner", "kwok", "kube-scheduler", "kube-controller-manager",
                          "kube-apiserver", "etcd"):
            with contextlib.suppress(OSError, ValueError):
                pid = _pid(state, component)
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
        # The API server drains watches for a minute on SIGTERM; its ports must be free for the next run.
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: all(_gone(p) for p in pids), timeout=10, interval=0.5)
        for pid in pids:
            if not _gone(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def test_operator_rides_out_an_api_server_outage(private_plane: tuple[str, Path], tmp_path: Path) -> None:
    kc, state = private_plane
    ensure_crd(kc)
    ns = f"outage-{uuid.uuid4().hex[:6]}"  # a reused state dir (SLM_OUTAGE_CLUSTER_DIR) keeps old ones
    kubectl(kc, "create", "namespace", ns)
    crs = fleet(N_CRS, prefix="out")
    names = [cr["metadata"]["name"] for cr in crs]
    with StatusWatch(kc, ns) as watch, operator(kc, [ns], log_path=tmp_path / "operator.log") as op:
        op.wait_for_output("slm-operator started", timeout=180)
        apply_fleet(kc, ns, crs)
        # Mid-convergence: some statuses written, not all CRs Ready yet.
        wait_for(lambda: any((o.get("status") or {}) for o in kubectl_json(kc, "-n", ns, "get", "slm")["items"]),
                 timeout=120, interval=0.2, what="the first status")
        apiserver = _pid(state, "kube-apiserver")
        os.kill(apiserver, signal.SIGKILL)  # abrupt (SIGTERM drains watches for a minute or more)
        wait_for(lambda: _gone(apiserver), timeout=60, what="the API server to stop")
        stopped = time.monotonic()
        time.sleep(OUTAGE_S)
        assert op.process.poll() is None, f"the operator exited during the outage:\n{op.output()[-3000:]}"
        _up(state)  # starts the API server again (the other components kept running)
        back = time.monotonic()
        stop = threading.Event()
        kubelet = threading.Thread(target=_kubelet_readiness, args=(kc, ns, stop), daemon=True)
        kubelet.start()
        try:
            took = wait_converged(kc, ns, names, timeout=600)
        finally:
            stop.set()
            kubelet.join(30)
        problems = invariants(kc, ns, names)
        assert op.process.poll() is None, "the operator exited"
        # One count per start-up (its log line is printed by two handlers: count one format).
        starts = len(re.findall(r"(?m)^\d{4}-\S+ \S+ INFO slm_operator.handlers: slm-operator started", op.output()))
    print(f"\nAPI server outage {back - stopped:.0f}s: converged {took:.1f}s after it was back, "
          f"no operator restart; {watch.events} statuses watched")
    assert starts == 1, f"the operator started {starts} times: it restarted itself"
    assert not problems, "\n".join(problems[:20])
    assert not watch.violations, "\n".join(watch.violations[:20])
