"""Resolve a spec into concrete choices: engine, quantization, resources, context.

This is the step between the typed spec and the pure render: it fills what the user left
out from the sizing estimate (sizing/), and says whether the model fits at all. It is pure
too (the catalog is data shipped with the package), so `slmctl render` gives the same
answer as the operator.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from slm_operator import api, engines
from slm_operator.sizing.autoconfig import autoconfigure
from slm_operator.sizing.catalog import gated_repo, lookup_model
from slm_operator.sizing.errors import GatedModelError, SizingError


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
    cpu_limit: str | None = None      # sizing's or the spec's; None: none given (Resolution.cpu_limit decides)
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


@dataclass(frozen=True)
class Resolution:
    """Everything decided before render, in the units render uses: the resolution, the
    artifact key, and the serving container's CPU as integers (never parsed back from `r.cpu`).

    cpu_millicores: the CPU request (sizing's integer, or the spec's quantity read once).
    cpu_limit: the CPU limit quantity: the spec's, sizing's, or twice the request when neither
    sets one (GPU engines: a generous cap, since CFS throttling of the scheduler and tokenizer
    threads adds latency, but every pod gets one).
    """

    r: Resolved
    key: str
    cpu_millicores: int
    cpu_limit: str


def served_name(spec: api.SLMDeploymentSpec) -> str:
    if spec.model.served_name:
        return spec.model.served_name
    tail = spec.model.source.rstrip("/").rsplit("/", 1)[-1]
    return tail.lower() or "model"


def resolve(spec: api.SLMDeploymentSpec) -> Resolved:
    """Engine, quantization, resources and context for a spec: the sizing (see below).

    Raises engines.UnknownEngineError for an engine no table row has (admission refuses it first).
    """
    return _sized(spec)[0]


def resolution(spec: api.SLMDeploymentSpec, operator_hub_endpoint: str | None = None) -> Resolution:
    """Resolve once for render and status: the sizing, a gated model without a token marked as
    refused (`gated_refusal`; the sizing stands, so render is the same), the artifact key and
    the CPU in millicores. Pure; `operator_hub_endpoint` is the chart's hub mirror, if any.

    Raises engines.UnknownEngineError for an engine no table row has (admission refuses it first).
    """
    r, request, limit = _sized(spec)
    gated = gated_refusal(spec, operator_hub_endpoint)
    if gated is not None and r.fits:
        r = refused(r, gated)
    return Resolution(r=r, key=artifact_key(spec, r), cpu_millicores=request,
                      cpu_limit=limit if limit is not None else f"{2 * request}m")


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
    """cuda or cpu: for the ONNX build and the engine (the engine's options may name it)."""
    return engines.get(r.engine).execution_target(engine_options(spec, r.engine), r.gpu_count)


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
    if spec.quantization and spec.quantization.tool:  # only when named: existing keys stay the same
        inputs["tool"] = spec.quantization.tool
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:8]


def needs_job(spec: api.SLMDeploymentSpec, r: Resolved) -> bool:
    """A Job fetches (and quantizes) unless the model is already on a PVC and served as is."""
    return not served_from_source(spec, r)


# -- sizing: fill what the user left out (was sizing_bridge.py) -------------------------------

GIB = 1 << 30


def engine_options(spec: api.SLMDeploymentSpec, engine: str) -> object | None:
    """spec.engine.<engine>: the engine's typed options, or None."""
    return getattr(spec.engine, engines.get(engine).row.name)


def _concurrency(spec: api.SLMDeploymentSpec, engine: str) -> int:
    """Sequences the engine holds at full context up front (its sizing hook)."""
    return engines.get(engine).concurrency(engine_options(spec, engine))


def _context(spec: api.SLMDeploymentSpec, engine: str) -> int | None:
    """model.contextLength, else the engine's own context option, else None (sizing chooses)."""
    return spec.model.context_length or engines.get(engine).context_option(engine_options(spec, engine)) or None


def _auto_context(spec: api.SLMDeploymentSpec, engine: str | None) -> int | None:
    """The context for sizing: the engine's when named; with auto, model.contextLength only."""
    return _context(spec, engine) if engine else (spec.model.context_length or None)


def _auto_concurrency(spec: api.SLMDeploymentSpec, engine: str | None) -> int | Callable[[str], int]:
    """The slots for sizing: the named engine's; with auto, a function of the engine sizing picks."""
    return _concurrency(spec, engine) if engine else (lambda chosen: _concurrency(spec, chosen))


def _millicores(quantity: str) -> int:
    """A CPU quantity from the spec (or a default) in millicores; 1 core if it does not parse
    (admission's pattern makes that unreachable for a spec)."""
    from slm_operator.diff import parse_quantity

    return int((parse_quantity(quantity) or 1) * 1000)


def _gi(n_bytes: int) -> str:
    return f"{max(1, math.ceil(n_bytes / GIB))}Gi"


def _unchecked(spec: api.SLMDeploymentSpec, engine: str, why: str) -> Resolved:
    res = spec.resources
    gpu = res.gpu if res and res.gpu else None
    if engine == engines.AUTO:
        # No catalog facts to compare: a named format's first engine, else the device's first.
        q0 = spec.quantization
        if q0 and q0.format:
            device = "gpu" if gpu and gpu.count > 0 else "cpu"
            engine = (engines.preferred(str(q0.format), device, q0.type)
                      or engines.engines_serving(str(q0.format), q0.type))[0]
        else:
            # engine auto for a model outside the catalog (nothing to compare): the device's first.
            engine = engines.table.AUTO_DEVICE_ORDER["gpu" if gpu and gpu.count > 0 else "cpu"][0]
    row = engines.row(engine)
    q = spec.quantization
    fmt = str(q.format) if q and q.format else row.default_format
    gpu_count = gpu.count if gpu else (1 if row.devices == ("gpu",) else 0)
    cpu = res.cpu if res and res.cpu else ("4" if gpu_count else "2")
    memory = res.memory if res and res.memory else ("16Gi" if gpu_count else "8Gi")
    return Resolved(
        engine=engine, format=fmt, qtype=q.type if q and q.type else api.FORMAT_TYPES[fmt][0],
        gpu_count=gpu_count, gpu_product=gpu.product if gpu else None, cpu=cpu, memory=memory,
        context_length=_context(spec, engine) or 4096,
        gpu_memory_utilization_percent=90 if engines.get(engine).gpu_memory_utilization else None,
        storage_size=spec.storage.size or "50Gi", served_name=served_name(spec),
        reason=f"{why} Sizing was not checked: resources are cpu {cpu}, memory {memory}"
               f"{f', {gpu_count} GPU' if gpu_count else ''}; set spec.resources to size it yourself.",
    )


def _export_only(spec: api.SLMDeploymentSpec, facts: object | None) -> Resolved:
    """An export-only format (mlx; admission requires serving.enabled: false): nothing is
    served, so no engine is sized; the Job runs on CPU. `engine` is the first CPU engine, a
    placeholder only (no serving object is rendered). Storage: sizing.formats.export_storage_bytes."""
    from slm_operator.sizing.formats import export_storage_bytes

    q = spec.quantization
    assert q is not None and q.format is not None
    res = spec.resources
    fmt = str(q.format)
    engine = engines.table.AUTO_DEVICE_ORDER["cpu"][0]
    cpu = res.cpu if res and res.cpu else "2"
    memory = res.memory if res and res.memory else "8Gi"
    storage = export_storage_bytes(facts)
    return Resolved(
        engine=engine, format=fmt, qtype=q.type or api.FORMAT_TYPES[fmt][0], gpu_count=0, gpu_product=None,
        cpu=cpu, memory=memory, context_length=4096, gpu_memory_utilization_percent=None,
        storage_size=spec.storage.size or (_gi(storage) if storage else "50Gi"), served_name=served_name(spec),
        reason=f"quantize-only: format {fmt} is exported, not served (serving.enabled: false); the "
               f"quantization Job runs on CPU with cpu {cpu}, memory {memory}")


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
    """The sizing's resolution (as `resolve`)."""
    return _sized(spec)[0]


# Sizing is pure in the spec and costs about a millisecond (the catalog lookup and the trials
# of autoconfigure); a CR is resolved on every reconcile, several times while it converges, and
# it was 5 % of the operator's CPU at N = 1000 (py-spy, bench/controlplane). Results are frozen
# dataclasses, so sharing them is safe. Bounded: the most recently used specs.
SIZED_MEMO_SIZE = 1024
_sized_memo: OrderedDict[str, tuple[Resolved, int, str | None]] = OrderedDict()


def _sized(spec: api.SLMDeploymentSpec) -> tuple[Resolved, int, str | None]:
    """(resolution, CPU request in millicores, CPU limit quantity or None) from the sizing; the
    CPU comes from sizing's integers, or from the spec's quantity, never from the rendered string.
    Memoized by the spec's JSON (SIZED_MEMO_SIZE entries); raises as `_sized_uncached`."""
    key = spec.model_dump_json()
    hit = _sized_memo.get(key)
    if hit is not None:
        with contextlib.suppress(KeyError):  # evicted meanwhile by another thread (slmctl, tests)
            _sized_memo.move_to_end(key)
        return hit
    out = _sized_uncached(spec)
    _sized_memo[key] = out
    while len(_sized_memo) > SIZED_MEMO_SIZE:
        with contextlib.suppress(KeyError):
            _sized_memo.popitem(last=False)
    return out


def _sized_uncached(spec: api.SLMDeploymentSpec) -> tuple[Resolved, int, str | None]:
    """`_sized` without the memo. Raises engines.UnknownEngineError for an engine no table row has."""
    engine = str(spec.engine.name)
    facts = lookup_model(spec.model.source)
    q = spec.quantization
    if q and q.format and str(q.format) in api.EXPORT_FORMAT_TYPES:
        r = _export_only(spec, facts)
        return r, _millicores(r.cpu), None
    if facts is None:
        r = _unchecked(spec, engine, f"Model {spec.model.source} is not in the sizing catalog.")
        return r, _millicores(r.cpu), None
    res = spec.resources
    gpu = res.gpu if res and res.gpu else None
    q = spec.quantization
    guess_engine = engine if engine != engines.AUTO else None
    # A type without a format (admitted when the engine's default format takes it) means that format.
    fmt = str(q.format) if q and q.format else (engines.row(engine).default_format if q and q.type and guess_engine
                                                else None)
    try:
        d = autoconfigure(
            facts, engine=engine, quant_format=fmt,
            quant_type=q.type if q and q.type else None,
            gpu_product=gpu.product if gpu and gpu.count else None,
            gpu_count=gpu.count if gpu else None, cpu_only=bool(gpu is not None and gpu.count == 0),
            context=_auto_context(spec, guess_engine),
            concurrency=_auto_concurrency(spec, guess_engine))
    except SizingError as e:
        r = _refused(spec, engine, e)
        return r, _millicores(r.cpu), None
    k8s = d.resources.to_kubernetes()
    cpu = res.cpu if res and res.cpu else k8s["requests"]["cpu"]
    memory = res.memory if res and res.memory else k8s["requests"]["memory"]
    memory_limit = res.memory if res and res.memory else k8s["limits"]["memory"]
    cpu_limit = res.cpu if res and res.cpu else k8s["limits"].get("cpu")
    request = _millicores(res.cpu) if res and res.cpu else d.resources.cpu_request_millicores
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
    ), request, cpu_limit
