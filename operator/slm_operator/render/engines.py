"""The serving containers, from the engine registry (engines/): render's side of the Engine
protocol. This module builds the engine's narrow input (`ServeInput`) from the CR and its
resolution; everything engine-specific is in engines/<engine>.py.

API keys reach the engine only by reference: a mounted Secret file (or an env var with
valueFrom.secretKeyRef) — never a literal.
"""

from __future__ import annotations

from slm_operator import constants as c
from slm_operator import engines
from slm_operator.engines.base import MetricsEndpoint, ServeInput
from slm_operator.engines.vllm import ARTIFACT_QUANTIZATION
from slm_operator.render.common import (
    Obj,
    Target,
    artifact_bytes,
    artifact_path,
    empty_dir,
    engine_resources,
)
from slm_operator.resolve import engine_options, execution_target, served_from_source

__all__ = ["ARTIFACT_QUANTIZATION", "containers", "metrics_endpoint", "serve_input", "tmp_volume"]


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
    from slm_operator.diff import parse_quantity

    r = t.r
    return ServeInput(
        served_name=r.served_name, model_path=artifact_path(t), fmt=r.format, qtype=r.qtype,
        context=r.context_length, gpu_count=r.gpu_count,
        cpu_millicores=int((parse_quantity(r.cpu) or 1) * 1000),
        target=execution_target(t.spec, r), options=engine_options(t.spec, r.engine),
        resources=engine_resources(t), mounts=_mounts(t), artifact_bytes=artifact_bytes(t),
        image=image, trust_remote_code=t.spec.model.trust_remote_code,
        extra={"gpu_memory_utilization_percent": r.gpu_memory_utilization_percent},
    )


def containers(t: Target, image: str) -> tuple[list[Obj], list[Obj]]:
    """The serving pod's containers and the extra volumes they need (the engine's builder)."""
    return engines.get(t.r.engine).containers(serve_input(t, image))


def metrics_endpoint(t: Target) -> MetricsEndpoint:
    """Where Prometheus scrapes the engine (port name, path, whether the API key is needed)."""
    return engines.get(t.r.engine).metrics
