"""Pytest wiring for e2e tests: the cluster (session), a fresh namespace per test.

The cluster is the one SLM_E2E_KUBECONFIG names, or else the local control plane from
e2e/cluster (built if needed, started or reused by `up`). It is left running afterwards: other
test sessions may share it and the next `up` reuses it in a second; SLM_E2E_DOWN=1 stops it at
the end of a session that started it (`e2e/cluster/down` stops it any time). The cluster's
binaries directory (kubectl, helm, ...) is put first on PATH for subprocesses.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest

from e2e.helpers import CLUSTER_BIN_DIR, CLUSTER_DIR, kubectl, wait_for
from e2e.realnode import RealNode, node_state


def _run_cluster_script(name: str, timeout: float) -> str:
    """Run e2e/cluster/<name>; its progress (stderr) shows in pytest's output on failure."""
    done = subprocess.run([str(CLUSTER_DIR / name)], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        pytest.fail(f"e2e/cluster/{name} failed ({done.returncode}):\n{done.stderr[-6000:]}", pytrace=False)
    print(done.stderr[-2000:])
    return done.stdout


def _cluster_running() -> bool:
    return subprocess.run([str(CLUSTER_DIR / "status")], capture_output=True, check=False).returncode == 0


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the control plane's binaries before any e2e test runs, outside the per-test timeout.

    A no-op in about a second when they are cached; the first build takes tens of minutes
    (its progress goes to the terminal).
    """
    if os.environ.get("SLM_E2E_KUBECONFIG") or shutil.which("go") is None:
        return
    if not any(item.get_closest_marker("e2e") for item in session.items):
        return
    if not _cluster_running():
        subprocess.run([str(CLUSTER_DIR / "build")], check=False, timeout=3 * 3600)
    if any(item.get_closest_marker("realnode") for item in session.items) and shutil.which("podman"):
        # The runtime images on a Debian base (cached by their inputs: seconds when unchanged);
        # a failure shows in the tests that need them.
        from e2e.realnode import build_images

        try:
            build_images(["quantizer", "onnxruntime-server", "ollama", "llamacpp", "gateway"])
        except Exception as e:
            print(f"building the runtime images failed: {e}")


@pytest.fixture(scope="session")
def kubeconfig() -> Iterator[str]:
    os.environ["PATH"] = f"{CLUSTER_BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"
    given = os.environ.get("SLM_E2E_KUBECONFIG")
    if given:
        if shutil.which("kubectl") is None:
            pytest.skip("SLM_E2E_KUBECONFIG is set but no kubectl is on PATH (run e2e/cluster/build)")
        yield given
        return

    was_running = _cluster_running()
    if not was_running:
        if shutil.which("go") is None and not (CLUSTER_BIN_DIR / "kube-apiserver").exists():
            pytest.skip("no Go toolchain to build the local control plane and no cached binaries")
        # Normally done already by pytest_collection_finish; then a no-op.
        _run_cluster_script("build", timeout=600)
    path = _run_cluster_script("up", timeout=300).strip().splitlines()[-1]
    try:
        yield path
    finally:
        if not was_running and os.environ.get("SLM_E2E_DOWN") == "1":
            subprocess.run([str(CLUSTER_DIR / "down")], capture_output=True, timeout=120, check=False)


@pytest.fixture
def make_namespace(kubeconfig: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """Factory: make_namespace(pod_security="restricted") -> a fresh namespace, deleted after the test.

    Pod Security "restricted" is enforced by default (pass pod_security=None to leave it off).
    Returns once the namespace's default ServiceAccount exists (pods need it).
    """
    created: list[str] = []
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")

    def make(pod_security: str | None = "restricted") -> str:
        name = f"{stem}-{uuid.uuid4().hex[:6]}"
        kubectl(kubeconfig, "create", "namespace", name)
        created.append(name)
        labels = ["slm.ai/e2e=true"]
        if pod_security:
            labels.append(f"pod-security.kubernetes.io/enforce={pod_security}")
        kubectl(kubeconfig, "label", "namespace", name, *labels)
        wait_for(
            lambda: kubectl(kubeconfig, "-n", name, "get", "serviceaccount", "default", "-o", "name"),
            timeout=30,
            what=f"the default ServiceAccount in {name}",
        )
        return name

    yield make
    for name in created:
        kubectl(kubeconfig, "delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.fixture
def namespace(make_namespace: Callable[..., str]) -> str:
    """A fresh namespace (Pod Security "restricted" enforced), deleted after the test."""
    return make_namespace()


@pytest.fixture(scope="session")
def real_node(kubeconfig: str) -> RealNode:
    """The local cluster's real node (kubelet + containerd), or a skip that says why there is none."""
    state = node_state(kubeconfig)
    if isinstance(state, str):
        pytest.skip(state)
    return state
