"""The serving containers, from the engine registry (engines/): render's side of the Engine
protocol. This module builds the engine's narrow input (`ServeInput`) from the CR and its
resolution; everything engine-specific is in engines/<engine>.py.

API keys reach the engine only by reference: a mounted Secret file (or an env var with
valueFrom.secretKeyRef) — never a literal.

Every engine pod also gets the gateway container (runtime-images/gateway, `python -m
slm_gateway`): the engine listens on 127.0.0.1 only, and the gateway is the only thing on the
Service's http and metrics ports. It checks the consumers' keys, refuses admin and
model-management routes, and sends the engine its own key (--upstream-key-file). Its /metrics
carries the engine's series too (fetched over loopback), so metric names do not change.
"""

from __future__ import annotations

from slm_operator import constants as c
from slm_operator import engines, podspec
from slm_operator.engines.base import MIB, MetricsEndpoint, ServeInput
from slm_operator.engines.vllm import ARTIFACT_QUANTIZATION
from slm_operator.render.common import (
    Obj,
    Target,
    artifact_bytes,
    artifact_path,
    empty_dir,
    engine_resources,
)
from slm_operator.render.limits import gateway_volume, redis_url
from slm_operator.resolve import engine_options, execution_target, served_from_source

__all__ = ["ARTIFACT_QUANTIZATION", "containers", "gateway_container", "metrics_endpoint", "serve_input",
           "tmp_volume"]

# The gateway's request and limit: aiohttp, redis-py and prometheus-client (~60 MB resident) plus
# buffers for the engine's /metrics it appends; the same figure sizing adds per pod
# (EngineBase.sidecar_memory_bytes).
GATEWAY_MEMORY = 256 * MIB
GATEWAY_CPU = "100m"  # requests schedule; the limit lets it burst
GATEWAY_CPU_LIMIT = "1"  # a CPU-bound proxy under a 250m quota would add throttling latency
# The gateway's metrics on a port of their own (they name the consumers); the engine's are appended.
GATEWAY_METRICS = MetricsEndpoint("metrics")


def tmp_volume(t: Target) -> Obj:
    """The pod's /tmp (caches only; docs/sizing.md): its sizeLimit from the engine."""
    return empty_dir("tmp", engines.get(t.r.engine).tmp_bytes)


def _mounts(t: Target) -> list[Obj]:
    mounts = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "api-key", "mountPath": c.API_KEY_DIR, "readOnly": True},
    ]
    if served_from_source(t.spec, t.r):
        mounts.append({"name": "source", "mountPath": c.SOURCE_MOUNT, "readOnly": True})
    else:
        mounts.append({"name": "model-cache", "mountPath": c.MODELS_MOUNT, "readOnly": True})
    return mounts


def serve_input(t: Target, image: str) -> ServeInput:
    """The engine's narrow input: the resolved model, quantization, resources and mounts."""
    r = t.r
    return ServeInput(
        served_name=r.served_name, model_path=artifact_path(t), fmt=r.format, qtype=r.qtype,
        context=r.context_length, gpu_count=r.gpu_count,
        cpu_millicores=t.resolution.cpu_millicores,
        target=execution_target(t.spec, r), options=engine_options(t.spec, r.engine),
        resources=engine_resources(t), mounts=_mounts(t), artifact_bytes=artifact_bytes(t),
        image=image, trust_remote_code=t.spec.model.trust_remote_code,
        extra={"gpu_memory_utilization_percent": r.gpu_memory_utilization_percent,
               "model_source": t.spec.model.source},  # vLLM: the catalog's tool/reasoning parsers
    )


def gateway_args(t: Target) -> list[str]:
    """`python -m slm_gateway` flags for this pod (no secret on the command line: keys are files)."""
    engine = engines.get(t.r.engine)
    args = [
        "--engine", engine.gateway_profile,
        "--upstream", f"http://{c.ENGINE_HOST}:{engine.loopback_port}",
        "--listen", f"0.0.0.0:{c.API_PORT}",
        "--metrics-listen", f"0.0.0.0:{c.METRICS_PORT}",
        # Limit counters are per model: every replica of this SLMDeployment shares them.
        "--scope", f"{t.cr.metadata.namespace or 'default'}/{t.name}",
        "--model", t.r.served_name,
    ]
    keys = t.spec.access.api_keys
    if keys is not None:
        args += ["--keys-dir", c.CONSUMERS_DIR]
        if t.consumers.limits:
            args += ["--redis-url", redis_url(t), "--redis-password-file", c.LIMITS_PASSWORD_FILE]
        if keys.fail_open:
            args.append("--fail-open")
    else:
        # One key (generated, or access.apiKeySecretRef): the consumer "default".
        args += ["--api-key-file", c.API_KEY_FILE]
    if engine.checks_own_key:
        args += ["--upstream-key-file", c.API_KEY_FILE]
    return args


def gateway_container(t: Target, image: str) -> Obj:
    """The gateway container: the pod's only listener, on the named ports http and metrics.

    Probes: /health (the gateway itself) for startup and liveness, /ready (the gateway asks the
    engine's readiness route over loopback) for readiness; both answer without a key."""
    mounts = [{"name": "tmp", "mountPath": "/tmp"},
              {"name": "api-key", "mountPath": c.API_KEY_DIR, "readOnly": True}]
    if t.spec.access.api_keys is not None:
        mounts.append({"name": "consumers", "mountPath": c.CONSUMERS_DIR, "readOnly": True})
        if t.consumers.limits:
            mounts.append({"name": "limits", "mountPath": c.LIMITS_DIR, "readOnly": True})
    return {
        "name": "gateway",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "slm_gateway"],
        "args": gateway_args(t),
        "env": podspec.env({"HOME": "/tmp"}),
        "ports": podspec.ports(metrics_separate=True),
        **podspec.http_probes("/ready", "/health"),
        "resources": podspec.resources(GATEWAY_CPU, f"{GATEWAY_MEMORY // MIB}Mi", 0,
                                       cpu_limit=GATEWAY_CPU_LIMIT),
        "securityContext": podspec.container_security_context(),
        "volumeMounts": mounts,
    }


def consumers_volume(t: Target) -> Obj | None:
    """The access.apiKeys Secret as the gateway's consumers folder, with each keyRef's Secret key
    projected under _refs/<secret>/<key> (optional: a missing one is the entry's KeyRefNotFound,
    not a pod stuck on its mount). The kubelet updates projected Secrets in place (rotation)."""
    keys = t.spec.access.api_keys
    if keys is None:
        return None
    sources: list[Obj] = [{"secret": {"name": keys.secret_ref.name}}]
    for secret, key in t.consumers.refs:
        sources.append({"secret": {"name": secret, "optional": True,
                                   "items": [{"key": key, "path": f"_refs/{secret}/{key}"}]}})
    return {"name": "consumers", "projected": {"defaultMode": 0o440, "sources": sources}}


def gateway_volumes(t: Target) -> list[Obj]:
    """The volumes only the gateway mounts: the consumers folder and the limit store's password."""
    return [v for v in (consumers_volume(t), gateway_volume(t)) if v]


def containers(t: Target, image: str, gateway_image: str) -> tuple[list[Obj], list[Obj]]:
    """The serving pod's containers (the engine's, then the gateway) and the extra volumes they
    need (the engine's builder's)."""
    ctrs, volumes = engines.get(t.r.engine).containers(serve_input(t, image))
    return [*ctrs, gateway_container(t, gateway_image)], [*volumes, *gateway_volumes(t)]


def metrics_endpoint(t: Target) -> MetricsEndpoint:
    """Where Prometheus scrapes: the gateway's metrics port for every engine (the gateway's
    series, then the engine's own, fetched over loopback; no key needed there)."""
    return GATEWAY_METRICS
