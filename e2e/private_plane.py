"""A private control plane for tests that stop, restart or reconfigure the API server or etcd.

The shared cluster (e2e/cluster/up) must never be disturbed; these tests start a second one
from the same binaries with every port moved by an offset (the outage test +10000, the pressure
test +20000: e2e/cluster/README.md), no real node, its state in a temporary folder, and stop
exactly its own processes afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from e2e.helpers import CLUSTER_DIR, wait_for

# The shared plane's ports (e2e/cluster/up's defaults), moved by an offset per test module.
_PORTS = {"SLM_APISERVER_PORT": 16443, "SLM_ETCD_PORT": 12379, "SLM_ETCD_PEER_PORT": 12380,
          "SLM_KCM_PORT": 16257, "SLM_SCHEDULER_PORT": 16259, "SLM_KWOK_PORT": 16247}  # e2e/cluster/cluster.sh
# Stopped in this order: the API server's clients first, etcd last.
COMPONENTS = ("fake-provisioner", "kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")


def private_env(offset: int) -> dict[str, str]:
    """The environment `up` reads for a plane whose ports are the shared one's plus `offset`."""
    return {**{k: str(v + offset) for k, v in _PORTS.items()}, "SLM_REAL_NODE": "0"}


def up(state: Path, env: dict[str, str]) -> str:
    """Start (or reuse) the plane whose state is in `state`; returns its admin kubeconfig path.
    Fails the test with `up`'s output when it does not start within 300 s."""
    done = subprocess.run([str(CLUSTER_DIR / "up")], env={**os.environ, **env, "SLM_CLUSTER_DIR": str(state)},
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        pytest.fail(f"the private control plane did not start:\n{done.stderr[-3000:]}", pytrace=False)
    return done.stdout.strip().splitlines()[-1]


def pid(state: Path, component: str) -> int:
    """The pid `up` recorded for a component. Raises OSError/ValueError when there is none."""
    return int((state / "run" / f"{component}.pid").read_text().strip())


def gone(process: int) -> bool:
    """The process has exited (a zombie counts: `up` started it detached, its parent may not reap)."""
    try:
        return Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def port_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:`port` any more. A SIGKILLed process's leader shows as a
    zombie (`gone`) while its other threads may still hold its sockets for a moment."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stop(state: Path) -> None:
    """SIGTERM the plane's own processes, then SIGKILL what is left after 10 s (the API server
    drains watches for a minute on SIGTERM; its ports must be free for the next run)."""
    pids = []
    for component in COMPONENTS:
        with contextlib.suppress(OSError, ValueError):
            p = pid(state, component)
            os.kill(p, signal.SIGTERM)
            pids.append(p)
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: all(gone(p) for p in pids), timeout=10, interval=0.5)
    for p in pids:
        if not gone(p):
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
