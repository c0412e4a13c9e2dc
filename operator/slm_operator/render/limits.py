"""The limit store: one Redis for an SLMDeployment whose consumers have request or token limits.

The gateways of every replica keep their per-consumer counters there (runtime-images/gateway,
slm_gateway/limiter.py: one Lua call per request, the time taken from Redis), so a limit holds
across replicas. Rendered only when some entry of the access.apiKeys Secret has
requestsPerMinute or tokensPerMinute (ConsumerFacts.limits, read by the operator).

Redis is Debian's redis-server from the gateway image (no image from outside the project). It
keeps nothing on disk (counters live a minute or two), runs as the non-root user with a
read-only root filesystem, requires a password generated once by the operator (read from the
mounted Secret, never from the command line), and its NetworkPolicy admits only this
deployment's serving pods. One store per SLMDeployment rather than per namespace: it is owned
by the CR (garbage-collected with it) and no two deployments' gateways share a password.
"""

from __future__ import annotations

from slm_operator import constants as c
from slm_operator import podspec
from slm_operator.render.common import Obj, Target, child_names, metadata, pod_security_context, selector

REDIS_MEMORY = "128Mi"
# Counters are two small keys per consumer and kind with a TTL; this bound leaves the container
# limit headroom for Redis's own allocations. volatile-ttl evicts the keys closest to expiry.
REDIS_MAXMEMORY = "64mb"
# The password becomes Redis's requirepass through its config on stdin ("redis-server -"), so it
# is never in a process's command line.
REDIS_SCRIPT = (
    'printf "requirepass %s\\n" "$(cat ' + c.LIMITS_PASSWORD_FILE + ')" | exec redis-server - '
    f"--port {c.REDIS_PORT} --bind 0.0.0.0 --protected-mode yes --save '' --appendonly no "
    f"--dir /tmp --maxmemory {REDIS_MAXMEMORY} --maxmemory-policy volatile-ttl"
)


def limits_secret(t: Target) -> Obj | None:
    """The store's password: rendered without data; the operator fills it once, on create."""
    if not t.consumers.limits:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(t, child_names(t.name, t.key)["limits"], c.C_LIMITS,
                             annotations={c.A_GENERATED: "true", c.A_GENERATED_KEY: "password"}),
        "type": "Opaque",
    }


def _volume(t: Target) -> Obj:
    return {"name": "limits", "secret": {"secretName": child_names(t.name, t.key)["limits"], "defaultMode": 0o440,
                                         "items": [{"key": "password", "path": "password"}]}}


def gateway_volume(t: Target) -> Obj | None:
    """The password volume the serving pod mounts (None without limits)."""
    return _volume(t) if t.consumers.limits else None


def redis_url(t: Target) -> str:
    """The store's Service by ClusterIP when the operator has seen it (ConsumerFacts.store_host), else by name."""
    host = t.consumers.store_host or child_names(t.name, t.key)["limits"]
    return f"redis://{host}:{c.REDIS_PORT}/0"


def limits_deployment(t: Target, image: str) -> Obj | None:
    """Redis, one replica (the counters are soft state: a restart forgets at most a minute)."""
    if not t.consumers.limits:
        return None
    spec = t.spec
    container = {
        "name": "redis",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", REDIS_SCRIPT],
        "ports": [{"name": "redis", "containerPort": c.REDIS_PORT, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 5, "timeoutSeconds": 2},
        "livenessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 20, "timeoutSeconds": 5,
                          "failureThreshold": 3},
        "resources": podspec.resources("100m", REDIS_MEMORY, 0, cpu_limit="1"),
        "securityContext": podspec.container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                         {"name": "limits", "mountPath": c.LIMITS_DIR, "readOnly": True}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod: Obj = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [podspec.empty_dir("tmp", 1 << 30), _volume(t)],
    }
    if spec.node_selector:
        pod["nodeSelector"] = dict(sorted(spec.node_selector.items()))
    if spec.tolerations:
        pod["tolerations"] = [tol.model_dump(by_alias=True, exclude_none=True) for tol in spec.tolerations]
    name = child_names(t.name, t.key)["limits"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(t, name, c.C_LIMITS),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector(t, c.C_LIMITS)},
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 3,
            "template": {"metadata": {"labels": metadata(t, "", c.C_LIMITS)["labels"]}, "spec": pod},
        },
    }


def limits_service(t: Target) -> Obj | None:
    if not t.consumers.limits:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(t, child_names(t.name, t.key)["limits"], c.C_LIMITS),
        "spec": {"type": "ClusterIP", "selector": selector(t, c.C_LIMITS),
                 "ports": [{"name": "redis", "port": c.REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}]},
    }


def limits_policy(t: Target) -> Obj | None:
    """Ingress only from this deployment's serving pods (their gateways); no egress."""
    if not t.consumers.limits:
        return None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(t, child_names(t.name, t.key)["limits"], c.C_LIMITS),
        "spec": {
            "podSelector": {"matchLabels": selector(t, c.C_LIMITS)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": selector(t, c.C_SERVER)}}],
                         "ports": [{"port": c.REDIS_PORT, "protocol": "TCP"}]}],
            "egress": [],
        },
    }
