"""Pod building blocks with no knowledge of the CR: security contexts, resources, emptyDirs.

Shared by render/ (the Job, the Deployment) and engines/ (each engine's containers), so the
engine modules need nothing from render (no import cycle).
"""

from __future__ import annotations

from typing import Any

from slm_operator import constants as c

Obj = dict[str, Any]
GIB = 1 << 30


def container_security_context() -> Obj:
    """Pod Security "restricted" for one container, with a read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": c.RUN_AS,
        "runAsGroup": c.RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(cpu: str, memory: str, gpus: int, *, cpu_limit: str | None = "same",
              memory_limit: str | None = None) -> Obj:
    """Requests and limits. CPU limit defaults to the request; None leaves it unlimited."""
    req: Obj = {"cpu": cpu, "memory": memory}
    lim: Obj = {"memory": memory_limit or memory}
    if cpu_limit is not None:
        lim["cpu"] = cpu if cpu_limit == "same" else cpu_limit
    if gpus:
        req[c.GPU_RESOURCE] = str(gpus)
        lim[c.GPU_RESOURCE] = str(gpus)
    return {"requests": req, "limits": lim}


def gi(n_bytes: int) -> str:
    """Bytes as whole GiB, rounded up, at least 1Gi ("3Gi")."""
    return f"{max(1, -(-n_bytes // GIB))}Gi"


def empty_dir(name: str, n_bytes: int, *, memory: bool = False) -> Obj:
    """An emptyDir volume capped at n_bytes (rounded up to GiB); memory=True: tmpfs."""
    spec: Obj = {"sizeLimit": gi(n_bytes)}
    if memory:
        spec["medium"] = "Memory"
    return {"name": name, "emptyDir": spec}


def with_scratch(res: Obj, n_bytes: int) -> Obj:
    """Request the disk the pod's emptyDirs may fill, so the scheduler accounts for it."""
    res["requests"]["ephemeral-storage"] = gi(n_bytes)
    return res


def env(pairs: dict[str, str]) -> list[Obj]:
    """Literal env vars, sorted by name (deterministic output). Never for secrets."""
    return [{"name": k, "value": v} for k, v in sorted(pairs.items())]


def http_probes(path_ready: str, path_live: str, port: str = "http") -> Obj:
    """startup/liveness/readiness probes over HTTP (paths must not need the API key)."""
    return {
        # Model servers load weights for minutes: a startup probe guards liveness meanwhile.
        "startupProbe": {"httpGet": {"path": path_live, "port": port}, "periodSeconds": 10,
                         "failureThreshold": 180, "timeoutSeconds": 5},
        "livenessProbe": {"httpGet": {"path": path_live, "port": port}, "periodSeconds": 15,
                          "failureThreshold": 4, "timeoutSeconds": 5},
        "readinessProbe": {"httpGet": {"path": path_ready, "port": port}, "periodSeconds": 5,
                           "failureThreshold": 3, "timeoutSeconds": 5},
    }


def loopback_probes(path_ready: str, path_live: str, port: int = c.ENGINE_PORT) -> Obj:
    """startup/liveness/readiness probes for an engine listening on 127.0.0.1 only (behind the
    gateway): the kubelet's httpGet dials the pod IP, so each probe runs in the container, a GET
    over bash's /dev/tcp (bash is in every engine image; no HTTP client needed). Paths must not
    need the API key. Same periods as http_probes."""
    def probe(path: str) -> Obj:
        script = (f"exec 3<>/dev/tcp/127.0.0.1/{port} && "
                  f"printf 'GET {path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && "
                  "read -r status <&3 && [[ $status == *' 200 '* ]]")
        return {"exec": {"command": ["bash", "-c", script]}}

    return {
        "startupProbe": {**probe(path_live), "periodSeconds": 10, "failureThreshold": 180, "timeoutSeconds": 5},
        "livenessProbe": {**probe(path_live), "periodSeconds": 15, "failureThreshold": 4, "timeoutSeconds": 5},
        "readinessProbe": {**probe(path_ready), "periodSeconds": 5, "failureThreshold": 3, "timeoutSeconds": 5},
    }


def ports(metrics_separate: bool) -> list[Obj]:
    """The API port ("http"), plus a "metrics" port when metrics are served apart."""
    out = [{"name": "http", "containerPort": c.API_PORT, "protocol": "TCP"}]
    if metrics_separate:
        out.append({"name": "metrics", "containerPort": c.METRICS_PORT, "protocol": "TCP"})
    return out
