"""Auto-configuration: from a model and the hardware named, choose engine, quantization,
context and resources, and say whether it fits. Pure (no Kubernetes, no network).

Entry point for the reconciler::

    decision = autoconfigure(
        facts,                      # ModelFacts from catalog.resolve_model(spec.model.source, ...)
        engine="auto",              # "auto" | an engine of engines/table.py
        quant_format=None,          # None (choose) | "none" | "gguf" | "onnx" | "awq" | "gptq" | "fp8"
        quant_type=None,            # None (format default) | "bf16" | "Q4_K_M" | "int4" | "w4a16" | ...
        gpu_product="NVIDIA-L4",    # nvidia.com/gpu.product value or alias; None = not named
        gpu_count=1,                # GPUs per replica (tensor parallel); None = 1 when a GPU is named
        cpu_only=False,             # True: no GPU
        context=None,               # tokens per sequence; None = choose
        concurrency=1,              # sequences that must fit at full context at once; None: the
                                    # engine's own default (a callable: engine name -> int)
        node_memory_bytes=None,     # CPU only: node allocatable RAM to check against (optional)
    )
    decision.fits, decision.reason, decision.resources, decision.vllm_max_model_len, ...

Rules (docs/sizing.md has the reasoning):

- Device: GPU when a GPU product or count is given, or engine/format implies vLLM; CPU when
  ``cpu_only`` or nothing points at a GPU.
- Engine "auto": a given format decides through the engine table's preference for the device
  (engines/table.py PREFERENCE: gguf on CPU -> llamacpp or ollama, whichever needs less memory,
  llamacpp on a tie; onnx -> onnxruntime; none/fp8/awq/gptq -> vllm); else GPU -> vllm;
  CPU -> onnxruntime (int4) for Micro/Small models whose architecture the onnxruntime-genai
  builder supports, GGUF Q4_K_M (llamacpp or ollama, as above) otherwise.
- Ternary GGUF types (TQ1_0, TQ2_0) only for models trained ternary (BitNet b1.58); any other
  model is refused (a model trained in 16 bits loses nearly everything at 1.58 bits). A BitNet
  model with no type named gets TQ2_0 (on auto or an engine that serves it: llama.cpp).
- Quantization omitted: vLLM tries bf16 (fp16 on GPUs below compute capability 8.0), then
  fp8 (GPUs with native FP8 only), then awq w4a16, and takes the first that fits at the
  context floor (the requested context, else min(4096, model max)). Ollama: Q4_K_M.
  ONNX Runtime: int4.
- vLLM context omitted: max_model_len is the longest (up to the model's maximum) whose KV
  cache for ``concurrency`` sequences fits; rounded down to a multiple of 1024.
- vLLM gpu_memory_utilization: the share vLLM needs (weights + activations + CUDA context +
  KV cache), at least the default 90 %, at most what leaves room for CUDA graphs and a 5 %
  reserve (never above 95 %).
- Does not fit: ``fits`` is False and ``reason`` gives the numbers and, when one exists, a
  quantization (or a GPU count) that would fit; ``alternative`` carries it as data.
- Unknown GPU product, vLLM on CPU, a format the engine cannot serve: ``SizingError``
  subclasses (their message is a sentence for a status condition).
- GPU named by count only (no product): nothing to check against; fits is True and the
  reason says the fit was not checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from slm_operator import engines
from slm_operator.engines.ggml import BITNET_ARCHITECTURES
from slm_operator.sizing.catalog import MIB, GpuProduct, ModelFacts, lookup_gpu, tier_for
from slm_operator.sizing.errors import (
    InvalidQuantizationError,
    MigSliceError,
    SizingError,
    UnsupportedDtypeError,
)
from slm_operator.sizing.estimate import (
    CUDA_GRAPHS_BYTES,
    MemoryEstimate,
    estimate,
    gib,
    storage_bytes,
    weight_bytes,
)
from slm_operator.sizing.quant import (
    FORMAT_TYPES,
    check_engine_format,
    default_type,
    label,
    normalize,
)

# Architectures trained ternary (BitNet b1.58): the only ones a TQ1_0/TQ2_0 GGUF keeps working.
TERNARY_ARCHITECTURES = BITNET_ARCHITECTURES
# Their default type: TQ2_0 (2.0625 bpw) rather than TQ1_0 (1.6875 bpw): 12 % larger, and its
# 2-bit packing needs no base-3 unpacking, the faster of the two on CPUs (llama.cpp PR 8151).
TERNARY_DEFAULT = "TQ2_0"
# Families that overflow to inf/NaN in float16 and that vLLM refuses to run in float16
# (vLLM config _FLOAT16_NOT_SUPPORTED_MODELS): they need bfloat16 (compute capability 8.0+)
# or float32. vLLM's AWQ/GPTQ kernels on GPUs without bfloat16 compute in float16 too.
FP16_UNSAFE_FAMILIES = frozenset({"gemma2", "gemma3", "gemma3_text", "plamo2", "glm4"})
BF16_GPU_EXAMPLES = "NVIDIA-L4, NVIDIA-A10G or NVIDIA-A100-SXM4-40GB"
MIN_CONTEXT = 4096            # context floor when we choose the context ourselves
DEFAULT_CPU_CONTEXT = 4096    # Ollama num_ctx / GenAI max_length default when not given
UNCHECKED_GPU_CONTEXT = 8192  # vLLM max_model_len when no GPU product is named
VLLM_DEFAULT_UTIL = 90        # vLLM's own default gpu_memory_utilization (percent)
VLLM_MAX_UTIL = 95
GPU_USABLE_FRACTION = 0.95    # 5 % reserve: fragmentation, NCCL, monitoring agents
NODE_USABLE_FRACTION = 0.90   # CPU: leave 10 % of the node's allocatable RAM
CPU_REQUEST_FACTOR, CPU_LIMIT_FACTOR = 1.10, 1.25
CPU_MILLICORES_BY_TIER = {"Micro": 2000, "Small": 4000, "Medium": 8000, "Large": 16000}
ROUND = 256 * MIB


@dataclass(frozen=True)
class Resources:
    """Per-replica container resources. cpu_limit_millicores None = no CPU limit (GPU
    engines: CFS throttling of the scheduler/tokenizer threads adds latency)."""

    cpu_request_millicores: int
    cpu_limit_millicores: int | None
    memory_request_bytes: int
    memory_limit_bytes: int
    gpu_count: int

    def to_kubernetes(self) -> dict[str, dict[str, str]]:
        """{"requests": {...}, "limits": {...}} with Kubernetes quantities."""
        requests = {"cpu": f"{self.cpu_request_millicores}m",
                    "memory": f"{math.ceil(self.memory_request_bytes / MIB)}Mi"}
        limits = {"memory": f"{math.ceil(self.memory_limit_bytes / MIB)}Mi"}
        if self.cpu_limit_millicores is not None:
            limits["cpu"] = f"{self.cpu_limit_millicores}m"
        if self.gpu_count:
            requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(self.gpu_count)
        return {"requests": requests, "limits": limits}


@dataclass(frozen=True)
class SizingDecision:
    """The outcome of autoconfigure(). Byte counts are ints."""

    model_id: str
    model_name: str
    tier: str                       # Micro | Small | Medium | Large
    params: int
    engine: str                     # vllm | ollama | onnxruntime
    quant_format: str               # none | gguf | onnx | awq | gptq | fp8
    quant_type: str                 # bf16 | fp16 | Q4_K_M | ... | int4 | w4a16 | fp8
    device: str                     # gpu | cpu
    gpu_product: str | None
    gpu_count: int                  # GPUs per replica (0 on CPU)
    context: int                    # vLLM max_model_len / Ollama num_ctx / GenAI max_length
    concurrency: int
    fits: bool
    checked: bool                   # False when there was no hardware to check against
    reason: str                     # one or two sentences for status / CLI
    estimate: MemoryEstimate
    resources: Resources
    capacity_bytes: int | None      # usable memory per GPU, or node RAM, checked against
    vllm_max_model_len: int | None
    vllm_gpu_memory_utilization_percent: int | None
    storage_bytes: int              # PVC size for source download + artifact, with headroom
    alternative: tuple[str, str, int] | None = None  # (format, type, gpu_count) that would fit
    recommendation: str = ""        # short advice (the alternative, or "ok")

    @property
    def quantization_label(self) -> str:
        return label(self.quant_format, self.quant_type)

    @property
    def vllm_gpu_memory_utilization(self) -> str | None:
        """As vLLM's flag wants it: "0.90"."""
        p = self.vllm_gpu_memory_utilization_percent
        return None if p is None else f"{p / 100:.2f}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["quantization"] = self.quantization_label
        d["vllm_gpu_memory_utilization"] = self.vllm_gpu_memory_utilization
        d["resources"]["kubernetes"] = self.resources.to_kubernetes()
        return d


@dataclass(frozen=True)
class _Trial:
    est: MemoryEstimate
    fits: bool
    context: int
    util: int | None
    capacity: int | None


def _round_up(n: int, step: int = ROUND) -> int:
    return max(step, math.ceil(n / step) * step)


def _gpu_capacity(gpu: GpuProduct) -> int:
    return int(gpu.memory_bytes * GPU_USABLE_FRACTION)


def _vllm_util(per_device: int, gpu: GpuProduct) -> tuple[int, int]:
    """(chosen, maximum) gpu_memory_utilization percent for a per-device need.

    CUDA graphs are captured outside vLLM's budget, so the budget excludes them and the
    maximum leaves them room under the usable capacity."""
    mem = gpu.memory_bytes
    needed = math.ceil(100 * (per_device - CUDA_GRAPHS_BYTES) / mem)
    most = min(VLLM_MAX_UTIL, math.floor(100 * (_gpu_capacity(gpu) - CUDA_GRAPHS_BYTES) / mem))
    return min(max(needed, VLLM_DEFAULT_UTIL), most), most


def _trial(facts: ModelFacts, engine: str, fmt: str, qtype: str, device: str, tp: int,
           gpu: GpuProduct | None, context: int, concurrency: int,
           node_memory: int | None) -> _Trial:
    est = estimate(facts, engine=engine, quant_format=fmt, quant_type=qtype, context=context,
                   concurrency=concurrency, device=device, tensor_parallel=tp, gpu=gpu)
    if device == "cpu":
        cap = int(node_memory * NODE_USABLE_FRACTION) if node_memory else None
        return _Trial(est, cap is None or est.total_bytes <= cap, context, None, cap)
    if gpu is None:
        return _Trial(est, True, context, VLLM_DEFAULT_UTIL if _budgeted(engine) else None, None)
    cap = _gpu_capacity(gpu)
    fits = est.per_device_bytes <= cap
    util = None
    if _budgeted(engine):
        util, _ = _vllm_util(est.per_device_bytes, gpu)
    return _Trial(est, fits, context, util, cap)


def _budgeted(engine: str) -> bool:
    """The engine takes a GPU memory budget and pages its KV cache into it (vLLM): sizing then
    chooses the budget and the longest context that fits."""
    return engines.get(engine).gpu_memory_utilization


def _longest_context(facts: ModelFacts, engine: str, fmt: str, qtype: str, tp: int,
                     gpu: GpuProduct, concurrency: int) -> _Trial:
    """The longest vLLM context (<= model max, multiple of 1024) that fits, or the floor trial."""
    args = (facts, engine, fmt, qtype, "gpu", tp, gpu)
    top = _trial(*args, facts.max_context, concurrency, None)
    if top.fits:
        return top
    floor = min(MIN_CONTEXT, facts.max_context)
    low = _trial(*args, floor, concurrency, None)
    if not low.fits:
        return low
    lo, hi = floor, facts.max_context  # lo fits, hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _trial(*args, mid, concurrency, None).fits:
            lo = mid
        else:
            hi = mid
    best = max(floor, lo // 1024 * 1024)
    return _trial(*args, best, concurrency, None)


def _evaluate(facts, engine, fmt, qtype, device, tp, gpu, context, concurrency, node_memory) -> _Trial:
    if device == "gpu" and _budgeted(engine) and gpu is not None and context is None:
        return _longest_context(facts, engine, fmt, qtype, tp, gpu, concurrency)
    if context is None:
        context = min(UNCHECKED_GPU_CONTEXT if _budgeted(engine) else DEFAULT_CPU_CONTEXT, facts.max_context)
    return _trial(facts, engine, fmt, qtype, device, tp, gpu, context, concurrency, node_memory)


def _resources(facts: ModelFacts, engine: str, device: str, tp: int, est: MemoryEstimate) -> Resources:
    if device == "cpu":
        cpu = CPU_MILLICORES_BY_TIER[facts.tier]
        return Resources(cpu, cpu, _round_up(int(est.total_bytes * CPU_REQUEST_FACTOR)),
                         _round_up(int(est.total_bytes * CPU_LIMIT_FACTOR)), 0)
    cpu = engines.get(engine).host_cpu_millicores(tp)
    base = engines.get(engine).host_base_bytes
    # The model load streams the weights through the page cache, which counts against the
    # container's memory limit; the limit leaves room for it, the request does not.
    return Resources(cpu, None, _round_up(base + est.weights_bytes // 10),
                     _round_up(base + est.weights_bytes), tp)


def _storage(facts: ModelFacts, est: MemoryEstimate) -> int:
    # The Job's peak on the PVC, per format (estimate.job_disk_parts, docs/sizing.md).
    return storage_bytes(facts, est.quant_format, est.quant_type, device=est.device)


def _seqs(n: int) -> str:
    return f"{n} sequence" + ("" if n == 1 else "s")


def _hardware(device: str, tp: int, gpu: GpuProduct | None) -> str:
    if device == "cpu":
        return "CPU"
    return f"{tp} x {gpu.product}" if gpu else f"{tp} GPU(s) of unnamed product"


def _breakdown(facts: ModelFacts, t: _Trial) -> str:
    e = t.est
    unit = "per GPU" if e.device == "gpu" else "of RAM"
    return (f"{gib(math.ceil(e.weights_bytes / e.tensor_parallel))} of weights + "
            f"{gib(e.kv_cache_bytes // e.tensor_parallel)} of KV cache ({t.context} tokens x "
            f"{_seqs(e.concurrency)}) + {gib(e.overhead_bytes // e.tensor_parallel)} engine overhead "
            f"= {gib(e.per_device_bytes)} {unit}")


def _device(engine: str, fmt_in: str | None, cpu_only: bool, gpu: GpuProduct | None,
            gpu_count: int | None) -> str:
    """gpu when a GPU is named or the engine/format runs only on GPUs; else cpu."""
    if cpu_only:
        return "cpu"
    gpu_only = (engine != engines.AUTO and engines.row(engine).devices == ("gpu",)) or (
        fmt_in is not None and all(engines.row(e).devices == ("gpu",) for e in engines.engines_serving(fmt_in)))
    return "gpu" if gpu is not None or (gpu_count or 0) > 0 or gpu_only else "cpu"


def _slots(concurrency: int | Callable[[str], int] | None, engine: str) -> int:
    if concurrency is None:
        return engines.get(engine).concurrency(None)
    return concurrency(engine) if callable(concurrency) else concurrency


# Why auto preferred one engine of a format (status.sizing.reason): every engine pod carries the
# same gateway sidecar, so the estimates alone decide.
SMALLEST = "the smallest estimate"


def _closest_fit(facts: ModelFacts, choices: tuple[str, ...], fmt: str, qtype: str, device: str,
                 gpu: GpuProduct | None, context: int | None, concurrency, node_memory: int | None
                 ) -> tuple[str, str]:
    """Among engines serving the same format, the first unless a later one needs less memory
    (its estimate plus any sidecar container); returns (engine, why) for the reason."""
    if len(choices) == 1:
        return choices[0], ""
    need = {}
    for e in choices:
        t = _evaluate(facts, e, fmt, qtype, device, 1 if device == "gpu" else 0, gpu, context,
                      _slots(concurrency, e), node_memory)
        need[e] = t.est.per_device_bytes + engines.get(e).sidecar_memory_bytes
    best = min(choices, key=lambda e: (need[e], choices.index(e)))
    others = ", ".join(f"{gib(need[e])} with {engines.row(e).title}" for e in choices if e != best)
    return best, f"{gib(need[best])} with {engines.row(best).title} vs {others}"


def _auto_engine(facts: ModelFacts, device: str, fmt_in: str | None, quant_type: str | None,
                 gpu: GpuProduct | None, context: int | None, concurrency, node_memory: int | None
                 ) -> tuple[str, str]:
    """engine auto: (engine, the note for the reason), from the engine table's preferences."""
    if fmt_in:
        choices = engines.preferred(fmt_in, device, quant_type) or engines.engines_serving(fmt_in, quant_type)
        if not choices:
            raise InvalidQuantizationError(
                f"No engine serves {fmt_in} {quant_type} on {device.upper()}; "
                f"{engines.table.serves_words()}.")
        qtype = quant_type or FORMAT_TYPES[fmt_in][0]
        engine, why = _closest_fit(facts, choices, fmt_in, qtype, device, gpu, context, concurrency, node_memory)
        title = engines.row(engine).title
        if why:
            return engine, (f"engine auto: {title} for {fmt_in} on {device.upper()} "
                            f"({why}: {SMALLEST})")
        if len(engines.engines_serving(fmt_in)) > 1:  # the type narrowed the format's engines
            return engine, f"engine auto: {title}, the only engine that serves {fmt_in} {qtype}"
        return engine, ""
    passed: list[str] = []
    order = engines.table.AUTO_DEVICE_ORDER[device]
    for i, name in enumerate(order):
        refusal = engines.get(name).auto_refusal(facts)
        if refusal:
            passed.append(refusal)
            continue
        fmt = engines.row(name).default_format
        same = tuple(e for e in order[i:] if engines.row(e).default_format == fmt)
        qtype = engines.get(name).quant_candidates(gpu, True)[0][1]
        engine, why = _closest_fit(facts, same, fmt, qtype, device, gpu, context, concurrency, node_memory)
        title = engines.row(engine).title
        if device == "gpu":
            return engine, f"engine auto: {title} for a GPU"
        if not passed:
            return engine, f"engine auto: {title} {qtype} for a {facts.tier} model on CPU"
        note = f"engine auto: {title} {fmt.upper()} {qtype} on CPU ({'; '.join(passed)}"
        return engine, note + (f"; {why}: {SMALLEST})" if why else ")")
    raise SizingError(f"No engine takes {facts.name} on {device.upper()}: {'; '.join(passed)}.")


def autoconfigure(facts: ModelFacts, *, engine: str | None = "auto", quant_format: str | None = None,
                  quant_type: str | None = None, gpu_product: str | None = None,
                  gpu_count: int | None = None, cpu_only: bool = False, context: int | None = None,
                  concurrency: int | Callable[[str], int] | None = 1,
                  node_memory_bytes: int | None = None) -> SizingDecision:
    """Choose engine, quantization, context and resources; see the module docstring.

    concurrency: sequences held at full context; None = the chosen engine's default; a callable
    maps the chosen engine's name to it (the spec's options for that engine)."""
    engine = (engine or engines.AUTO).strip().lower()
    if engine != engines.AUTO and engine not in engines.ENGINE_NAMES:
        raise SizingError(f"Unknown engine {engine!r}; use auto, {', '.join(engines.ENGINE_NAMES)}.")
    if isinstance(concurrency, int) and concurrency < 1:
        raise SizingError("concurrency must be at least 1.")
    fmt_in = quant_format.strip().lower() if quant_format else None
    if fmt_in is not None and fmt_in not in FORMAT_TYPES:
        normalize(fmt_in, None)  # raises with the list of formats
    gpu = lookup_gpu(gpu_product) if gpu_product else None
    if cpu_only and (gpu is not None or (gpu_count or 0) > 0):
        raise SizingError("cpu-only was asked together with a GPU; choose one.")
    device = _device(engine, fmt_in, cpu_only, gpu, gpu_count)
    _check_ternary(facts, fmt_in, quant_type)
    if (facts.architecture in TERNARY_ARCHITECTURES and quant_type is None and fmt_in in (None, "gguf")
            and (engine == engines.AUTO or TERNARY_DEFAULT in engines.row(engine).types("gguf"))):
        # A model trained ternary is served in a ternary GGUF unless a type is named.
        fmt_in, quant_type = "gguf", TERNARY_DEFAULT

    notes: list[str] = []
    if engine == engines.AUTO:
        engine, note = _auto_engine(facts, device, fmt_in, quant_type, gpu, context, concurrency,
                                    node_memory_bytes)
        if note:
            notes.append(note)
    eng = engines.get(engine)
    concurrency = _slots(concurrency, engine)
    if device not in eng.row.devices:
        cpu_engines = " or ".join(r.name for r in engines.ROWS if "cpu" in r.devices)
        raise SizingError(f"{eng.row.title} needs a GPU: name a GPU product/count, or use engine "
                          f"{cpu_engines} on CPU.")
    tp = max(1, gpu_count or 1) if device == "gpu" else 0
    if gpu is not None and gpu.mig_profile and tp > 1:
        raise MigSliceError(
            f"{gpu.product} is one MIG slice and a container sees only one MIG device, so "
            f"resources.gpu.count {tp} cannot be served (no tensor parallelism across slices): set "
            "resources.gpu.count to 1 and pick a larger slice or a whole GPU if the model does not fit.")
    _check_family(facts, engine, device, gpu, fmt_in, quant_type)
    if eng.tensor_parallel and facts.attention_heads % tp:
        raise _error(SizingError(
            f"{eng.row.title} tensor parallelism needs the attention heads ({facts.attention_heads}) to divide "
            f"evenly across {tp} GPUs; set resources.gpu.count to a number that divides them."),
            "UnsupportedGPUCount", "spec.resources.gpu.count")
    if context is not None and not 256 <= context <= facts.max_context:
        raise _error(SizingError(
            f"Context {context} is outside 256..{facts.max_context} (the maximum of {facts.name}); set "
            f"model.contextLength (or the engine's own option) to at most {facts.max_context}."),
            "ContextTooLong", "spec.model.contextLength")

    if gpu is not None and gpu.shared:
        notes.append(f"{gpu.product} is shared with other pods (time-slicing or MPS): the fit below assumes "
                     "this pod has the whole GPU memory")
    bf16 = gpu.bf16 if gpu else True
    if fmt_in:
        fmt, qtype = normalize(fmt_in, quant_type or default_type(fmt_in, bf16_supported=bf16))
        check_engine_format(engine, fmt, qtype)
        if fmt == "none" and qtype == "bf16" and not bf16 and gpu is not None:
            qtype = "fp16"
            notes.append(f"{gpu.product} has no bf16 (compute capability {gpu.compute_capability}); serving fp16")
        candidates = [(fmt, qtype)]
    else:
        candidates = eng.quant_candidates(gpu, bf16)

    check_quant = getattr(eng, "check_quant", None)
    if check_quant is not None:
        check_quant(*candidates[0], gpu)

    floor_ctx = context if context is not None else min(MIN_CONTEXT, facts.max_context)
    trials = [(c, _evaluate(facts, engine, c[0], c[1], device, tp, gpu, context, concurrency,
                            node_memory_bytes)) for c in candidates]
    chosen_idx = next((i for i, (_, t) in enumerate(trials) if t.fits), len(trials) - 1)
    (fmt, qtype), trial = trials[chosen_idx]
    if not fmt_in and chosen_idx > 0:
        first = trials[0][1]
        notes.append(f"{label(*candidates[0])} would need {gib(first.est.per_device_bytes)} per GPU at "
                     f"{floor_ctx} tokens, over the {gib(first.capacity or 0)} usable; chose {label(fmt, qtype)}")

    est = trial.est
    checked = trial.capacity is not None
    alternative = None
    if trial.fits:
        reason = _fit_reason(facts, engine, fmt, qtype, device, tp, gpu, trial, checked)
        recommendation = "ok" if checked else "fit not checked: name a GPU product or the node memory"
    else:
        alt_trial, alternative, alt_longest = _find_alternative(
            facts, engine, fmt, qtype, device, tp, gpu, context, trial.context, concurrency,
            node_memory_bytes)
        reason = _refusal(facts, fmt, qtype, device, tp, gpu, trial, alt_trial, alternative, alt_longest)
        recommendation = (f"use {label(alternative[0], alternative[1])}"
                          + (f" on {alternative[2]} GPUs" if alternative[2] > max(tp, 1) else "")
                          if alternative else "no quantization or GPU count in reach fits")
    if notes:
        reason = "; ".join(notes) + ". " + reason

    budgeted = _budgeted(engine)
    return SizingDecision(
        model_id=facts.id, model_name=facts.name, tier=tier_for(facts.params), params=facts.params,
        engine=engine, quant_format=fmt, quant_type=qtype, device=device,
        gpu_product=gpu.product if gpu else None, gpu_count=tp, context=trial.context,
        concurrency=concurrency, fits=trial.fits, checked=checked, reason=reason, estimate=est,
        resources=_resources(facts, engine, device, tp, est), capacity_bytes=trial.capacity,
        vllm_max_model_len=trial.context if budgeted else None,
        vllm_gpu_memory_utilization_percent=trial.util if budgeted else None,
        storage_bytes=_storage(facts, est), alternative=alternative, recommendation=recommendation)


def _check_ternary(facts: ModelFacts, fmt: str | None, qtype: str | None) -> None:
    """TQ1_0 / TQ2_0 keep a model's quality only when it was trained ternary (BitNet b1.58)."""
    if not qtype or qtype.upper() not in engines.TERNARY_TYPES or facts.architecture in TERNARY_ARCHITECTURES:
        return
    e = InvalidQuantizationError(
        f"quantization.type {qtype.upper()} is a ternary (1.58-bit) GGUF type for models trained ternary "
        f"(BitNet b1.58, architecture {', '.join(sorted(TERNARY_ARCHITECTURES))}); {facts.name} is "
        f"{facts.architecture}, trained in 16 bits, and would lose nearly all its quality: use Q4_K_M "
        f"(served by {' or '.join(engines.engines_serving('gguf', 'Q4_K_M'))}), or a BitNet b1.58 model "
        f"such as microsoft/bitnet-b1.58-2B-4T (served by "
        f"{' or '.join(engines.engines_serving('gguf', qtype.upper()))}).")
    e.field = "spec.quantization.type"
    raise e


def _error(e: SizingError, reason: str, field: str) -> SizingError:
    e.condition_reason, e.field = reason, field
    return e


def _check_family(facts: ModelFacts, engine: str, device: str, gpu: GpuProduct | None,
                  fmt: str | None, qtype: str | None) -> None:
    """Refuse what the model's family cannot do, before any memory arithmetic: the engine's own
    checks (engines/<engine>.py check_model), then float16 on families that overflow in it."""
    eng = engines.get(engine)
    eng.check_model(facts, device=device, gpu=gpu, fmt=fmt, qtype=qtype)
    family = facts.family.lower()
    if family not in FP16_UNSAFE_FAMILIES:
        return
    why = (f"{facts.name} ({family}) overflows to inf/NaN in float16, and vLLM refuses float16 for this "
           "family")
    if qtype and qtype.lower() == "fp16" and fmt in ("none", "onnx"):
        err = UnsupportedDtypeError(f"{why}: use quantization.type bf16 (format none) on a GPU with "
                                    f"bfloat16 such as {BF16_GPU_EXAMPLES}, or gguf/int4 on CPU.")
        err.field = "spec.quantization.type"
        raise err


def _fit_reason(facts, engine, fmt, qtype, device, tp, gpu, trial: _Trial, checked: bool) -> str:
    head = f"{facts.name} ({facts.tier}) in {label(fmt, qtype)} on {_hardware(device, tp, gpu)}: "
    body = _breakdown(facts, trial)
    if checked:
        body += f", within the {gib(trial.capacity or 0)} usable"
    else:
        body += " (fit not checked: no GPU product or node memory given)"
    if _budgeted(engine):
        body += f"; vLLM max_model_len {trial.context}, gpu_memory_utilization {(trial.util or 90) / 100:.2f}"
    return head + body + "."


def _refusal(facts, fmt, qtype, device, tp, gpu, trial: _Trial, alt: _Trial | None,
             alternative: tuple[str, str, int] | None, alt_longest: int | None) -> str:
    if device == "gpu" and gpu is not None:
        have = (f"{_hardware(device, tp, gpu)} has {gib(gpu.memory_bytes)} per GPU "
                f"({gib(trial.capacity or 0)} usable)")
    else:
        node = int((trial.capacity or 0) / NODE_USABLE_FRACTION)
        have = f"the node has {gib(node)} ({gib(trial.capacity or 0)} usable)"
    msg = f"{facts.name} in {label(fmt, qtype)} needs {_breakdown(facts, trial)}, but {have}"
    if alternative and alt is not None:
        afmt, atype, acount = alternative
        where = f" on {acount} x {gpu.product}" if gpu is not None and acount != max(tp, 1) else ""
        msg += (f"; {label(afmt, atype)}{where} needs {gib(alt.est.per_device_bytes)}"
                f"{' per GPU' if device == 'gpu' else ''} and fits")
        if alt_longest and alt_longest > alt.context:
            msg += f" (with a context up to {alt_longest} tokens)"
    else:
        msg += "; no quantization or GPU count tried fits"
    return msg + "."


def _find_alternative(facts, engine, fmt, qtype, device, tp, gpu, context, tried_context, concurrency,
                      node_memory):
    """A smaller quantization on the same hardware, else more GPUs.

    Returns (trial at the refused context, (format, type, gpu count), longest vLLM context
    with that choice or None); (None, None, None) when nothing in reach fits."""
    options = engines.get(engine).smaller_quants(gpu)

    def attempt(afmt: str, atype: str, count: int):
        t = _trial(facts, engine, afmt, atype, device, count, gpu, tried_context, concurrency, node_memory)
        if not t.fits:
            return None
        longest = None
        if context is None and _budgeted(engine) and gpu is not None:
            longest = _longest_context(facts, engine, afmt, atype, count, gpu, concurrency).context
        return t, (afmt, atype, count), longest

    current = weight_bytes_of(facts, fmt, qtype, device)
    for afmt, atype in options:
        if (afmt, atype) != (fmt, qtype) and weight_bytes_of(facts, afmt, atype, device) < current:
            found = attempt(afmt, atype, tp)
            if found:
                return found
    if device == "gpu" and engines.get(engine).tensor_parallel and gpu is not None:
        for count in (2, 4, 8):
            if count <= tp or facts.attention_heads % count:
                continue
            for afmt, atype in [(fmt, qtype), *options]:
                found = attempt(afmt, atype, count)
                if found:
                    return found
    return None, None, None


def weight_bytes_of(facts: ModelFacts, fmt: str, qtype: str, device: str) -> int:
    return weight_bytes(facts, fmt, qtype, device=device)
