"""Helpers for e2e tests against the local control plane (or any cluster named by a kubeconfig).

API calls go through kubectl subprocesses (the cluster's own client, on PATH once the
`kubeconfig` fixture ran) or through lightkube (`lightkube_client`). The operator under test
runs as a subprocess (`run_operator`) with its output captured and checked for tracebacks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from lightkube import Client, KubeConfig

T = TypeVar("T")

E2E_DIR = Path(__file__).resolve().parent
CLUSTER_DIR = E2E_DIR / "cluster"
# Where e2e/cluster/build links the pinned binaries under their plain names (kubectl, helm...).
CLUSTER_BIN_DIR = Path(os.environ.get("SLM_CACHE", Path.home() / ".cache" / "slm-operator")) / "bin" / "active"

# A pod-level security context that passes Pod Security "restricted".
RESTRICTED_POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
}
# Never pulled: KWOK nodes only pretend to run containers.
FAKE_IMAGE = "registry.invalid/slm-e2e/pause:1"


class KubectlError(RuntimeError):
    """kubectl exited non-zero; `stderr` holds its message."""

    def __init__(self, args: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"kubectl {' '.join(args)} failed ({returncode}): {stderr.strip()}")
        self.returncode = returncode
        self.stderr = stderr


def kubectl(kubeconfig: str | os.PathLike[str], *args: str, input: str | None = None, timeout: float = 60) -> str:
    """Run kubectl against the cluster and return its stdout; raise KubectlError on failure."""
    argv = ["kubectl", "--kubeconfig", os.fspath(kubeconfig), *args]
    done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise KubectlError(list(args), done.returncode, done.stderr)
    return done.stdout


def kubectl_json(kubeconfig: str | os.PathLike[str], *args: str) -> dict[str, Any]:
    """`kubectl ... -o json`, parsed."""
    return json.loads(kubectl(kubeconfig, *args, "-o", "json"))


def apply(kubeconfig: str | os.PathLike[str], *objects: Mapping[str, Any], namespace: str | None = None) -> str:
    """Server-side apply the given manifests (dicts); returns kubectl's output."""
    args = ["apply", "--server-side", "--field-manager", "slm-e2e", "-f", "-"]
    if namespace:
        args += ["--namespace", namespace]
    return kubectl(kubeconfig, *args, input=yaml.safe_dump_all([dict(o) for o in objects]))


def lightkube_client(kubeconfig: str | os.PathLike[str], namespace: str | None = None) -> Client:
    """A lightkube client for the cluster the kubeconfig names."""
    return Client(config=KubeConfig.from_file(kubeconfig), namespace=namespace, field_manager="slm-e2e")


def wait_for(condition: Callable[[], T], timeout: float = 60, interval: float = 0.25, what: str = "") -> T:
    """Call `condition` until it returns something truthy and return that.

    Exceptions count as "not yet" (the object may not exist yet); after `timeout` seconds a
    TimeoutError names `what`, the last value and the last exception.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            last = condition()
            error = None
            if last:
                return last  # type: ignore[return-value]
        except Exception as exc:  # keep polling; report it if time runs out
            error = exc
        if time.monotonic() >= deadline:
            detail = f"last error: {error!r}" if error else f"last value: {last!r}"
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or condition!r}; {detail}")
        time.sleep(interval)


def wait_for_object(
    kubeconfig: str | os.PathLike[str],
    *get_args: str,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 60,
    what: str = "",
) -> dict[str, Any]:
    """Poll `kubectl get <get_args> -o json` until `predicate(obj)` holds; return that object."""

    def check() -> dict[str, Any] | None:
        obj = kubectl_json(kubeconfig, "get", *get_args)
        return obj if predicate(obj) else None

    return wait_for(check, timeout, what=what or f"{' '.join(get_args)} to match")


def wait_for_condition(
    kubeconfig: str | os.PathLike[str], *get_args: str, type_: str, status: str = "True", timeout: float = 60
) -> dict[str, Any]:
    """Poll until the object's condition `type_` has `status`; return the object."""
    return wait_for_object(
        kubeconfig,
        *get_args,
        predicate=lambda obj: condition_status(obj, type_) == status,
        timeout=timeout,
        what=f"{' '.join(get_args)} condition {type_}={status}",
    )


def condition_status(obj: Mapping[str, Any], type_: str) -> str | None:
    """The status ("True"/"False"/"Unknown") of condition `type_` in obj.status.conditions."""
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond.get("status")
    return None


def restricted_pod_spec(containers: Iterable[Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
    """A pod spec whose containers get the restricted security context (image defaults to FAKE_IMAGE)."""
    full = [{"image": FAKE_IMAGE, "securityContext": RESTRICTED_CONTAINER_SECURITY, **dict(c)} for c in containers]
    return {"securityContext": RESTRICTED_POD_SECURITY, "containers": full, **extra}


@dataclass
class OperatorProcess:
    """A running operator subprocess; its combined stdout/stderr go to `log_path`."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 60) -> None:
        """Wait until `text` appears in the output (fails early if the operator exits)."""

        def seen() -> bool:
            if text in self.output():
                return True
            if self.process.poll() is not None:
                raise AssertionError(f"operator exited ({self.process.returncode}):\n{self.output()[-5000:]}")
            return False

        wait_for(seen, timeout, what=f"{text!r} in the operator output")


def _stop(process: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM the operator's process group, then SIGKILL after `grace` seconds."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def run_operator(
    kubeconfig: str | os.PathLike[str],
    namespaces: list[str] | None,
    extra_args: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
) -> Iterator[OperatorProcess]:
    """Run `python -m slm_operator.main` against the cluster for the duration of the block.

    namespaces=None watches all namespaces. On a clean exit from the block the operator is
    stopped (SIGTERM, SIGKILL after 10 s) and its output must hold no Python traceback.
    """
    argv = [sys.executable, "-m", "slm_operator.main"]
    if namespaces is None:
        argv.append("--all-namespaces")
    else:
        for ns in namespaces:
            argv += ["--namespace", ns]
    argv += list(extra_args)
    proc_env = {**os.environ, "KUBECONFIG": os.fspath(kubeconfig), "PYTHONUNBUFFERED": "1", **(env or {})}
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="slm-operator-", suffix=".log")
        os.close(fd)
        log_path = name
    path = Path(log_path)
    with path.open("wb") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=proc_env,
            start_new_session=True,  # its own process group, so stopping it reaches any children
        )
    handle = OperatorProcess(process, path)
    try:
        yield handle
    finally:
        _stop(process)
    output = handle.output()
    assert "Traceback" not in output, f"the operator printed a traceback (log {path}):\n{output[-8000:]}"
