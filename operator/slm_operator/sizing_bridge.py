"""Glue between the typed spec and sizing.autoconfigure: fill what the user left out.

Concurrency for the KV-cache check is what the engine allocates up front: Ollama keeps
num_parallel slots of num_ctx each, our ONNX server `workers` generators of max_length,
and vLLM must fit at least one sequence at max_model_len (it pages the rest).
Models outside the catalog are not guessed: the operator uses explicit resources (or
stated defaults) and says in status that the fit was not checked.
"""

from __future__ import annotations

import dataclasses
import math

from slm_operator import api
from slm_operator.resolve import Resolved, served_name
from slm_operator.sizing.autoconfig import autoconfigure
from slm_operator.sizing.catalog import gated_repo, lookup_model
from slm_operator.sizing.errors import GatedModelError, SizingError

DEFAULT_FORMAT = {"vllm": "none", "ollama": "gguf", "onnxruntime": "onnx"}
GIB = 1 << 30


def _concurrency(spec: api.SLMDeploymentSpec, engine: str) -> int:
    e = spec.engine
    if engine == "ollama":
        return e.ollama.num_parallel if e.ollama else 4
    if engine == "onnxruntime":
        return e.onnxruntime.workers if e.onnxruntime else 4
    return 1


def _context(spec: api.SLMDeploymentSpec, engine: str) -> int | None:
    e = spec.engine
    opt = {"vllm": e.vllm and e.vllm.max_model_len, "ollama": e.ollama and e.ollama.num_ctx}.get(engine)
    return spec.model.context_length or opt or None


def _gi(n_bytes: int) -> str:
    return f"{max(1, math.ceil(n_bytes / GIB))}Gi"


def _unchecked(spec: api.SLMDeploymentSpec, engine: str, why: str) -> Resolved:
    res = spec.resources
    gpu = res.gpu if res and res.gpu else None
    if engine == "auto":
        engine = "vllm" if gpu and gpu.count > 0 else "onnxruntime"
    q = spec.quantization
    fmt = str(q.format) if q and q.format else DEFAULT_FORMAT[engine]
    gpu_count = gpu.count if gpu else (1 if engine == "vllm" else 0)
    cpu = res.cpu if res and res.cpu else ("4" if gpu_count else "2")
    memory = res.memory if res and res.memory else ("16Gi" if gpu_count else "8Gi")
    return Resolved(
        engine=engine, format=fmt, qtype=q.type if q and q.type else api.FORMAT_TYPES[fmt][0],
        gpu_count=gpu_count, gpu_product=gpu.product if gpu else None, cpu=cpu, memory=memory,
        context_length=_context(spec, engine) or 4096,
        gpu_memory_utilization_percent=90 if engine == "vllm" else None,
        storage_size=spec.storage.size or "50Gi", served_name=served_name(spec),
        reason=f"{why} Sizing was not checked: resources are cpu {cpu}, memory {memory}"
               f"{f', {gpu_count} GPU' if gpu_count else ''}; set spec.resources to size it yourself.",
    )


def _refused(spec: api.SLMDeploymentSpec, engine: str, e: SizingError) -> Resolved:
    fallback = _unchecked(spec, engine, "")
    return Resolved(**{**fallback.__dict__, "fits": False, "reason": str(e), "tier": None,
                       "refusal": e.condition_reason, "refusal_field": e.field})


def gated_refusal(spec: api.SLMDeploymentSpec, operator_hub_endpoint: str | None = None) -> SizingError | None:
    """A model the hub gates, named by its own repo id (not a public re-upload), needs a token.

    None when a token is given, the source is not the hub, or a mirror is named (in the spec or
    operator-wide): a private mirror decides for itself. A catalog fact admission cannot see:
    the operator reports it as Degraded, `slmctl validate` offline; the sizing stands."""
    m = spec.model
    if (m.token_secret_ref is not None or not m.source.startswith("hf://") or (m.hub and m.hub.endpoint)
            or operator_hub_endpoint):
        return None
    repo = gated_repo(m.source)
    if repo:
        return GatedModelError(
            f"{repo} is gated on the Hugging Face hub: the download needs a token. Accept the model's "
            f"licence on https://huggingface.co/{repo} with your hub account, store a read token in a "
            "Secret (kubectl create secret generic hf-token --from-literal=token=hf_...) and set "
            "model.tokenSecretRef.name to it.")
    return None


def refused(r: Resolved, e: SizingError) -> Resolved:
    """r, marked as refused for e (the sizing stands, so render is unchanged)."""
    return dataclasses.replace(r, fits=False, reason=str(e), refusal=e.condition_reason, refusal_field=e.field)


def resolve_with_sizing(spec: api.SLMDeploymentSpec) -> Resolved:
    engine = str(spec.engine.name)
    facts = lookup_model(spec.model.source)
    if facts is None:
        return _unchecked(spec, engine, f"Model {spec.model.source} is not in the sizing catalog.")
    res = spec.resources
    gpu = res.gpu if res and res.gpu else None
    q = spec.quantization
    guess_engine = engine if engine != "auto" else None
    # A type without a format (admitted when the engine's default format takes it) means that format.
    fmt = str(q.format) if q and q.format else (DEFAULT_FORMAT.get(engine) if q and q.type else None)
    try:
        d = autoconfigure(
            facts, engine=engine, quant_format=fmt,
            quant_type=q.type if q and q.type else None,
            gpu_product=gpu.product if gpu and gpu.count else None,
            gpu_count=gpu.count if gpu else None, cpu_only=bool(gpu is not None and gpu.count == 0),
            context=_context(spec, guess_engine or "vllm"),
            concurrency=_concurrency(spec, guess_engine or "vllm"))
    except SizingError as e:
        return _refused(spec, engine, e)
    k8s = d.resources.to_kubernetes()
    cpu = res.cpu if res and res.cpu else k8s["requests"]["cpu"]
    memory = res.memory if res and res.memory else k8s["requests"]["memory"]
    memory_limit = res.memory if res and res.memory else k8s["limits"]["memory"]
    cpu_limit = res.cpu if res and res.cpu else k8s["limits"].get("cpu")
    return Resolved(
        engine=d.engine, format=d.quant_format, qtype=d.quant_type, gpu_count=d.gpu_count,
        # The catalog's label value (an alias such as "L4" becomes NVIDIA-L4): it goes into the
        # nodeSelector, where only the node's own label value matches.
        gpu_product=d.gpu_product or (gpu.product if gpu else None), cpu=cpu, memory=memory,
        cpu_limit=cpu_limit, memory_limit=memory_limit,
        context_length=d.context, gpu_memory_utilization_percent=d.vllm_gpu_memory_utilization_percent,
        storage_size=spec.storage.size or _gi(d.storage_bytes), tier=d.tier, fits=d.fits, reason=d.reason,
        weights_bytes=d.estimate.weights_bytes, total_bytes=d.estimate.total_bytes,
        served_name=served_name(spec),
    )
