"""Resolve a spec into concrete choices: engine, quantization, resources, context.

This is the step between the typed spec and the pure render: it fills what the user left
out from the sizing estimate (sizing/), and says whether the model fits at all. It is pure
too (the catalog is data shipped with the package), so `slmctl render` gives the same
answer as the operator.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from slm_operator import api


@dataclass(frozen=True)
class Resolved:
    engine: str
    format: str
    qtype: str
    gpu_count: int
    gpu_product: str | None
    cpu: str
    memory: str
    context_length: int
    gpu_memory_utilization_percent: int | None
    storage_size: str
    cpu_limit: str | None = None      # None: no CPU limit (GPU engines: throttling adds latency)
    memory_limit: str | None = None   # None: same as the request
    tier: str | None = None
    fits: bool = True
    reason: str = ""
    weights_bytes: int | None = None
    total_bytes: int | None = None
    served_name: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    # When fits is False: the Degraded condition's reason and the spec field to fix.
    refusal: str = "DoesNotFit"
    refusal_field: str = "spec"


def served_name(spec: api.SLMDeploymentSpec) -> str:
    if spec.model.served_name:
        return spec.model.served_name
    tail = spec.model.source.rstrip("/").rsplit("/", 1)[-1]
    return tail.lower() or "model"


def resolve(spec: api.SLMDeploymentSpec) -> Resolved:
    from slm_operator.sizing_bridge import resolve_with_sizing

    return resolve_with_sizing(spec)


def pvc_source(source: str) -> tuple[str, str] | None:
    """(claim, path inside it) for pvc://CLAIM/PATH sources, else None."""
    if not source.startswith("pvc://"):
        return None
    claim, _, path = source[len("pvc://"):].partition("/")
    return claim, path


def served_from_source(spec: api.SLMDeploymentSpec, r: Resolved) -> bool:
    """A model on the user's PVC served as is: no Job, no cache PVC, the claim is mounted."""
    return pvc_source(spec.model.source) is not None and r.format == "none"


def execution_target(spec: api.SLMDeploymentSpec, r: Resolved) -> str:
    """cuda or cpu: for the ONNX build and the ONNX server (engine.onnxruntime.target wins)."""
    if spec.engine.onnxruntime and spec.engine.onnxruntime.target:
        return spec.engine.onnxruntime.target
    return "cuda" if r.gpu_count > 0 else "cpu"


def artifact_key(spec: api.SLMDeploymentSpec, r: Resolved) -> str:
    """Short hash of everything that determines the quantized artifact's bytes."""
    target = execution_target(spec, r)
    gate = spec.quantization.max_perplexity_increase_percent if spec.quantization else 10
    inputs = {
        "source": spec.model.source,
        "revision": spec.model.revision,
        "format": r.format,
        "type": r.qtype,
        "target": target if r.format == "onnx" else "",
        "trustRemoteCode": spec.model.trust_remote_code,
        "gate": gate,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:8]


def needs_job(spec: api.SLMDeploymentSpec, r: Resolved) -> bool:
    """A Job fetches (and quantizes) unless the model is already on a PVC and served as is."""
    return not served_from_source(spec, r)
