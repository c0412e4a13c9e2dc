"""Glue between the typed spec and the sizing package (replaced by sizing.autoconfig)."""

from __future__ import annotations

from slm_operator import api
from slm_operator.resolve import Resolved, served_name

DEFAULT_FORMAT = {"vllm": "none", "ollama": "gguf", "onnxruntime": "onnx"}


def resolve_with_sizing(spec: api.SLMDeploymentSpec) -> Resolved:
    res = spec.resources
    gpu = res.gpu if res and res.gpu else None
    engine = str(spec.engine.name)
    if engine == "auto":
        engine = "vllm" if gpu and gpu.count > 0 else "onnxruntime"
    q = spec.quantization
    fmt = str(q.format) if q and q.format else DEFAULT_FORMAT[engine]
    qtype = q.type if q and q.type else api.FORMAT_TYPES[fmt][0]
    gpu_count = gpu.count if gpu else (1 if engine == "vllm" else 0)
    return Resolved(
        engine=engine, format=fmt, qtype=qtype, gpu_count=gpu_count,
        gpu_product=gpu.product if gpu else None,
        cpu=(res.cpu if res and res.cpu else ("4" if gpu_count else "2")),
        memory=(res.memory if res and res.memory else ("16Gi" if gpu_count else "4Gi")),
        context_length=spec.model.context_length or 4096,
        gpu_memory_utilization_percent=90 if engine == "vllm" else None,
        storage_size=spec.storage.size or "20Gi",
        served_name=served_name(spec),
    )
