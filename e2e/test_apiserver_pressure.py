"""Slow etcd and a 429 storm (issue 18 item 3, the rest): the operator rides out a struggling API server.

On a private control plane (ports of the shared one plus 20000, its own state dir; the pattern
of e2e/test_apiserver_outage.py, which uses +10000, so both may run at once), never the shared
one. After e2e/cluster/up started it, its kube-apiserver is restarted by this module with the
same flags except two:

- `--etcd-servers` points at `LatencyProxy`, a TCP proxy in this process that holds every chunk
  for `delay` seconds in each direction before passing it on (pure latency: chunks are not
  serialised behind each other's delay);
- `--max-requests-inflight 200 --max-mutating-requests-inflight 100` (800/400 in `up`), so that
  API Priority and Fairness gives a priority level with one nominal share a single-digit number
  of seats (the seats are split by shares: ceil(300 * 1 / ~250)).

Tests (one namespace and 20 SLMDeployments each, on the KWOK nodes):

1. `test_operator_converges_with_slow_etcd`: ETCD_DELAY_S (0.1 s each way: 200 ms more per etcd
   round trip; the API server's etcd_request_duration_seconds must show writes taking at least
   that long on average) while 20 CRs are created and then half of them edited: the operator neither
   crashes nor exits, everything converges, e2e.chaos.invariants hold and no older status is
   written over a newer one (e2e.chaos.StatusWatch).
2. `test_operator_converges_through_a_429_storm`: the operator runs as its own ServiceAccount,
   which a FlowSchema puts into a PriorityLevelConfiguration with nominalConcurrencyShares 1,
   no borrowing, and one queue of length 1: most of its concurrent requests are refused with 429.
   The API server's apiserver_flowcontrol_rejected_requests_total for that FlowSchema must rise,
   and everything must converge anyway, with the same invariants. The operator's work queue
   retries a 429 within 15 s (operator/slm_operator/workqueue.py TRANSIENT_MAX_BACKOFF_S): every
   retry delay it logs after a 429 must be at most that.

About 4 minutes on a loaded 2-core machine (the private plane's start-up included).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import e2e.private_plane as pp
from e2e.chaos import StatusWatch, apply_fleet, edit_wave, ensure_crd, fleet, invariants, operator, wait_converged
from e2e.helpers import kubectl, wait_for

pytestmark = pytest.mark.e2e

N_CRS = 20
ETCD_DELAY_S = float(os.environ.get("SLM_ETCD_DELAY_S", "0.1"))  # each way
# The shared plane's ports plus 20000 (e2e/cluster/README.md; the outage test uses +10000).
PRIVATE_ENV = pp.private_env(20000)
FLOW_SCHEMA = "slm-operator-tiny"
PRIORITY_LEVEL = "slm-operator-tiny"
SA_NAMESPACE, SA_NAME = "slm-system", "slm-operator"
TRANSIENT_MAX_BACKOFF_S = 15.0  # operator/slm_operator/workqueue.py (a retry may add up to 10% jitter)


class LatencyProxy:
    """A TCP proxy on 127.0.0.1 (an ephemeral port) to `target`, delaying each chunk by `delay`
    seconds (settable while it runs) in both directions, without serialising chunks behind each
    other's delay: a reader stamps each chunk with its due time, a writer sends it then."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.delay = 0.0
        self.chunks = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for src, dst in ((client, upstream), (upstream, client)):
                q: queue.Queue[tuple[float, bytes]] = queue.Queue()
                threading.Thread(target=self._read, args=(src, q), daemon=True).start()
                threading.Thread(target=self._write, args=(dst, q), daemon=True).start()

    def _read(self, src: socket.socket, q: queue.Queue[tuple[float, bytes]]) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            q.put((time.monotonic() + self.delay, data))
            if not data:
                return

    def _write(self, dst: socket.socket, q: queue.Queue[tuple[float, bytes]]) -> None:
        while True:
            due, data = q.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            try:
                dst.sendall(data)
                self.chunks += 1
            except OSError:
                return


def _restart_apiserver(kc: str, state: Path, etcd_port: int) -> None:
    """Restart the private kube-apiserver with `up`'s flags, except --etcd-servers (the proxy)
    and lower inflight limits; its pid goes where `up` keeps it (so the fixture stops it)."""
    args = (state / "run" / "kube-apiserver.args").read_text().splitlines()
    flags = {"--etcd-servers": f"http://127.0.0.1:{etcd_port}", "--max-requests-inflight": "200",
             "--max-mutating-requests-inflight": "100"}
    for flag, value in flags.items():
        i = args.index(flag)  # ValueError names a flag `up` no longer passes: update this list
        args[i + 1] = value
    old = pp.pid(state, "kube-apiserver")
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: pp.gone(old), timeout=60, what="the private API server to stop")
    port = int(PRIVATE_ENV["SLM_APISERVER_PORT"])
    wait_for(lambda: pp.port_free(port), timeout=60, interval=0.2, what=f"127.0.0.1:{port} to be free")
    with (state / "logs" / "kube-apiserver.log").open("ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    (state / "run" / "kube-apiserver.pid").write_text(f"{proc.pid}\n")
    wait_for(lambda: kubectl(kc, "get", "--raw", "/readyz", timeout=20) == "ok", timeout=180, interval=1,
             what="the private API server (through the etcd proxy) to be ready")


@pytest.fixture(scope="module")
def plane(kubeconfig: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, LatencyProxy]]:
    """(admin kubeconfig, state dir, etcd latency proxy) of a private control plane whose API
    server talks to etcd through the proxy; stopped afterwards (its own pids only)."""
    state = Path(os.environ.get("SLM_PRESSURE_CLUSTER_DIR") or tmp_path_factory.mktemp("pressure") / "cluster")
    proxy = LatencyProxy(("127.0.0.1", int(PRIVATE_ENV["SLM_ETCD_PORT"])))
    try:
        kc = pp.up(state, PRIVATE_ENV)
        _restart_apiserver(kc, state, proxy.port)
        ensure_crd(kc)
        yield kc, state, proxy
    finally:
        pp.stop(state)
        proxy.close()


def _etcd_writes(kc: str) -> tuple[float, float]:
    """(seconds, count) summed over the API server's etcd_request_duration_seconds for creates
    and updates: their mean is the etcd round trip the API server sees."""
    total, count = 0.0, 0.0
    for line in kubectl(kc, "get", "--raw", "/metrics", timeout=60).splitlines():
        if line.startswith("etcd_request_duration_seconds_") and re.search(r'operation="(create|update)"', line):
            if line.startswith("etcd_request_duration_seconds_sum{"):
                total += float(line.rsplit(" ", 1)[1])
            elif line.startswith("etcd_request_duration_seconds_count{"):
                count += float(line.rsplit(" ", 1)[1])
    return total, count


def _starts(output: str) -> int:
    """Operator start-ups in its output (one "slm-operator started" line each)."""
    return len(re.findall(r"(?m)^.*slm-operator started: \d+ children", output))


def test_operator_converges_with_slow_etcd(plane: tuple[str, Path, LatencyProxy], tmp_path: Path) -> None:
    kc, _, proxy = plane
    ns = f"slow-{uuid.uuid4().hex[:6]}"
    kubectl(kc, "create", "namespace", ns)
    crs = fleet(N_CRS, prefix="slow")
    names = [cr["metadata"]["name"] for cr in crs]
    rng = random.Random(18)
    etcd_before = _etcd_writes(kc)
    proxy.delay = ETCD_DELAY_S
    try:
        with StatusWatch(kc, ns) as watch, operator(kc, [ns], log_path=tmp_path / "operator.log") as op:
            op.wait_for_output("slm-operator started", timeout=300)
            started = time.monotonic()
            apply_fleet(kc, ns, crs)
            first = wait_converged(kc, ns, names, timeout=900)
            changed = edit_wave(crs, rng)
            apply_fleet(kc, ns, crs)
            second = wait_converged(kc, ns, names, timeout=900)
            total = time.monotonic() - started
            problems = invariants(kc, ns, names)
            assert op.process.poll() is None, f"the operator exited:\n{op.output()[-3000:]}"
            starts = _starts(op.output())
            etcd_after = _etcd_writes(kc)
    finally:
        proxy.delay = 0.0
    writes = etcd_after[1] - etcd_before[1]
    mean_write = (etcd_after[0] - etcd_before[0]) / max(writes, 1)
    print(f"\nslow etcd (+{2 * ETCD_DELAY_S * 1000:.0f} ms per round trip, {proxy.chunks} chunks proxied): "
          f"{N_CRS} CRs converged in {first:.1f}s, {len(changed)} edits in {second:.1f}s ({total:.1f}s in all); "
          f"{watch.events} statuses watched; {writes:.0f} etcd writes, {mean_write * 1000:.0f} ms each on average")
    # A lower bound (load only adds to it): the latency really was injected.
    assert mean_write >= 2 * ETCD_DELAY_S * 0.9, f"etcd writes took {mean_write:.3f}s on average: no latency injected"
    assert starts == 1, f"the operator started {starts} times"
    assert not problems, "\n".join(problems[:20])
    assert not watch.violations, "\n".join(watch.violations[:20])


def _rejected(kc: str) -> float:
    """apiserver_flowcontrol_rejected_requests_total for FLOW_SCHEMA, summed over reasons."""
    total = 0.0
    for line in kubectl(kc, "get", "--raw", "/metrics", timeout=60).splitlines():
        if line.startswith("apiserver_flowcontrol_rejected_requests_total{") and f'flow_schema="{FLOW_SCHEMA}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _nominal_seats(kc: str) -> str:
    for line in kubectl(kc, "get", "--raw", "/metrics", timeout=60).splitlines():
        if line.startswith("apiserver_flowcontrol_nominal_limit_seats{") and PRIORITY_LEVEL in line:
            return line.rsplit(" ", 1)[1]
    return "?"


def _service_account_kubeconfig(kc: str, path: Path) -> Path:
    """A kubeconfig for SA_NAMESPACE/SA_NAME (bound to cluster-admin: the operator's rights are
    not what is tested here), with a 2-hour token."""
    kubectl(kc, "create", "namespace", SA_NAMESPACE)
    kubectl(kc, "-n", SA_NAMESPACE, "create", "serviceaccount", SA_NAME)
    kubectl(kc, "create", "clusterrolebinding", f"{SA_NAME}-pressure", "--clusterrole=cluster-admin",
            f"--serviceaccount={SA_NAMESPACE}:{SA_NAME}")
    token = kubectl(kc, "-n", SA_NAMESPACE, "create", "token", SA_NAME, "--duration=2h").strip()
    config = yaml.safe_load(Path(kc).read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    path.write_text(yaml.safe_dump(config))
    return path


def _apf_objects() -> list[dict[str, Any]]:
    """The PriorityLevelConfiguration with one nominal share, no lending or borrowing, one queue of
    one, and the FlowSchema that sends every request of the operator's ServiceAccount there."""
    return [
        {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
         "metadata": {"name": PRIORITY_LEVEL},
         "spec": {"type": "Limited", "limited": {
             "nominalConcurrencyShares": 1, "lendablePercent": 0, "borrowingLimitPercent": 0,
             "limitResponse": {"type": "Queue", "queuing": {"queues": 1, "handSize": 1, "queueLengthLimit": 1}}}}},
        {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema", "metadata": {"name": FLOW_SCHEMA},
         "spec": {"priorityLevelConfiguration": {"name": PRIORITY_LEVEL}, "matchingPrecedence": 100,
                  "distinguisherMethod": {"type": "ByUser"},
                  "rules": [{"subjects": [{"kind": "ServiceAccount",
                                           "serviceAccount": {"name": SA_NAME, "namespace": SA_NAMESPACE}}],
                             "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                                "clusterScope": True, "namespaces": ["*"]}],
                             "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}},
    ]


def test_operator_converges_through_a_429_storm(plane: tuple[str, Path, LatencyProxy], tmp_path: Path) -> None:
    kc, _, _ = plane
    ns = f"apf-{uuid.uuid4().hex[:6]}"
    kubectl(kc, "create", "namespace", ns)
    sa_kc = _service_account_kubeconfig(kc, tmp_path / "operator.kubeconfig")
    kubectl(kc, "apply", "-f", "-", input=yaml.safe_dump_all(_apf_objects()))
    # The FlowSchema is in force once the API server reports it (status condition Dangling=False).
    wait_for(lambda: any(c.get("type") == "Dangling" and c.get("status") == "False" for c in json.loads(
        kubectl(kc, "get", "flowschema", FLOW_SCHEMA, "-o", "json")).get("status", {}).get("conditions", [])),
        timeout=60, what="the FlowSchema to be in force")
    seats = _nominal_seats(kc)
    before = _rejected(kc)
    crs = fleet(N_CRS, prefix="apf")
    names = [cr["metadata"]["name"] for cr in crs]
    with StatusWatch(kc, ns) as watch, operator(sa_kc, [ns], log_path=tmp_path / "operator.log") as op:
        op.wait_for_output("slm-operator started", timeout=300)
        started = time.monotonic()
        apply_fleet(kc, ns, crs)
        took = wait_converged(kc, ns, names, timeout=900)
        problems = invariants(kc, ns, names)
        rejected = _rejected(kc) - before
        output = op.output()
        assert op.process.poll() is None, f"the operator exited:\n{output[-3000:]}"
    seen_429 = len(re.findall(r"(?m)^\d{4}-\S+ .*HTTP/1\.1 429", output))
    # The work queue's retry lines after a 429: "... failed (attempt N, retry in X s) ... 429 ...".
    delays = [float(d) for d in re.findall(
        r"(?m)^\d{4}-\S+ .*failed \(attempt \d+, retry in ([\d.]+)s\).*(?i:429|too many)", output)]
    print(f"\n429 storm ({seats} nominal seats for the operator): {N_CRS} CRs converged in {took:.1f}s "
          f"({time.monotonic() - started:.1f}s from apply); API server rejected {rejected:.0f} of the operator's "
          f"requests, {seen_429} 429 answers in the operator's HTTP log, {len(delays)} work-queue retries after a "
          f"429 (longest delay {max(delays, default=0):.1f}s); {watch.events} statuses watched")
    assert rejected > 0, f"the API server rejected none of the operator's requests ({seats} seats): no storm"
    assert _starts(output) == 1, "the operator restarted"
    assert not problems, "\n".join(problems[:20])
    assert not watch.violations, "\n".join(watch.violations[:20])
    assert all(d <= TRANSIENT_MAX_BACKOFF_S * 1.1 for d in delays), f"a retry after a 429 waited longer: {delays}"
