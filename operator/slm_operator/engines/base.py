"""The Engine protocol and the narrow inputs an engine module works from.

An engine sees a `ServeInput` (the resolved model, its quantization, the container's resources
and the pod's mounts) and the sizing facts it is asked about, never render's whole context or
the CR. Everything engine-specific lives in its module (engines/<name>.py); the rest of the
operator reads it through the registry (engines/__init__.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from slm_operator import constants as c
from slm_operator.engines.table import EngineRow

if TYPE_CHECKING:
    from slm_operator.sizing.catalog import GpuProduct, ModelFacts

Obj = dict[str, Any]
MIB = 1 << 20
GIB = 1 << 30
IMAGE_REGISTRY = "ghcr.io/slm-operator"
IMAGE_VERSION = "0.1.0"


@dataclass(frozen=True)
class ImageSetting:
    """An engine's default image and the chart value / operator env that override it.

    repository: the image name under ghcr.io/slm-operator; the chart's
    runtimeImages.<engine> value sets env SLM_IMAGE_<ENGINE> (upper-cased engine name)."""

    repository: str

    @property
    def default(self) -> str:
        return f"{IMAGE_REGISTRY}/{self.repository}:{IMAGE_VERSION}"


@dataclass(frozen=True)
class MetricsEndpoint:
    """Where Prometheus scrapes: the named container port ("http" = the API port, "metrics" =
    a port of its own) and path; needs_key: the path sits behind the API key (the
    ServiceMonitor then sends the key from the same Secret as a Bearer token)."""

    port: str
    path: str = "/metrics"
    needs_key: bool = False


@dataclass(frozen=True)
class QueueMetric:
    """The queue-depth signal the HPA's QueueDepth metric reads: the Prometheus series the
    engine exports and the custom-metrics API name prometheus-adapter gives it."""

    series: str
    custom_metric: str


@dataclass(frozen=True)
class ServeInput:
    """What an engine's containers are built from.

    served_name: model name clients send; model_path: the artifact folder in the pod;
    fmt/qtype: the quantization (format, type); context: tokens per sequence (from sizing);
    gpu_count: GPUs per replica; cpu_millicores: the container's CPU request;
    target: execution target "cpu" | "cuda"; options: the engine's typed options
    (spec.engine.<engine>) or None; resources: the serving container's requests/limits;
    mounts: the pod's standard mounts (/tmp, the API key folder, the model);
    artifact_bytes: the served artifact's size; trust_remote_code: spec.model.trustRemoteCode."""

    served_name: str
    model_path: str
    fmt: str
    qtype: str
    context: int
    gpu_count: int
    cpu_millicores: int
    target: str
    options: Any
    resources: Obj
    mounts: list[Obj]
    artifact_bytes: int
    image: str
    trust_remote_code: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """One serving engine. Attributes are data; methods are pure functions of their arguments.

    Sizing hooks: concurrency / context_option (what the engine's options hold up front),
    kv_element_bytes, sliding_window_capped, runtime_overhead (bytes per device by part),
    host_base_bytes (container RAM beside a GPU), tmp_bytes (/tmp sizeLimit), and the quantization
    candidates auto tries. Render hooks: containers, metrics, queue_metric, image."""

    row: EngineRow
    image: ImageSetting
    metrics: MetricsEndpoint
    queue_metric: QueueMetric | None
    kv_cache_metric: bool
    ready_path: str
    tmp_bytes: int
    host_base_bytes: int
    sidecar_memory_bytes: int
    sliding_window_capped: bool
    gpu_memory_utilization: bool
    tensor_parallel: bool
    gateway_profile: str
    loopback_port: int
    checks_own_key: bool

    def concurrency(self, options: Any) -> int: ...
    def context_option(self, options: Any) -> int | None: ...
    def kv_element_bytes(self, fmt: str, qtype: str, device: str) -> int: ...
    def runtime_overhead(self, facts: ModelFacts, *, device: str, context: int, weights_bytes: int,
                         tensor_parallel: int, gpu: GpuProduct | None, io_bytes: int) -> dict[str, int]: ...
    def quant_candidates(self, gpu: GpuProduct | None, bf16: bool) -> list[tuple[str, str]]: ...
    def smaller_quants(self, gpu: GpuProduct | None) -> list[tuple[str, str]]: ...
    def auto_refusal(self, facts: ModelFacts) -> str | None: ...
    def check_model(self, facts: ModelFacts, *, device: str, gpu: GpuProduct | None,
                    fmt: str | None, qtype: str | None) -> None: ...
    def host_cpu_millicores(self, tensor_parallel: int) -> int: ...
    def execution_target(self, options: Any, gpu_count: int) -> str: ...
    def containers(self, inp: ServeInput) -> tuple[list[Obj], list[Obj]]: ...


class EngineBase:
    """Defaults most engines share; a module overrides what differs (see docs/engines.md)."""

    row: EngineRow
    image: ImageSetting
    metrics: MetricsEndpoint = MetricsEndpoint("metrics")
    queue_metric: QueueMetric | None = None
    kv_cache_metric: bool = False
    ready_path: str = "/ready"   # answers 200 without the key once the model is loaded
    tmp_bytes: int = 1 * GIB
    host_base_bytes: int = 1 * GIB
    # The gateway container in every engine pod (render/engines.py GATEWAY_MEMORY).
    sidecar_memory_bytes: int = 256 * MIB
    sliding_window_capped: bool = True
    gpu_memory_utilization: bool = False
    tensor_parallel: bool = False
    # Behind the gateway: its --engine profile (slm_gateway's route table), the loopback port the
    # engine listens on, and whether the engine checks a key of its own (then the gateway sends the
    # pod's key upstream with --upstream-key-file).
    gateway_profile: str = ""
    loopback_port: int = c.ENGINE_PORT
    checks_own_key: bool = True

    @property
    def name(self) -> str:
        return self.row.name

    def concurrency(self, options: Any) -> int:
        return 1

    def context_option(self, options: Any) -> int | None:
        return None

    def kv_element_bytes(self, fmt: str, qtype: str, device: str) -> int:
        return 2  # 16-bit K and V

    def runtime_overhead(self, facts: ModelFacts, *, device: str, context: int, weights_bytes: int,
                         tensor_parallel: int, gpu: GpuProduct | None, io_bytes: int) -> dict[str, int]:
        return {}

    def quant_candidates(self, gpu: GpuProduct | None, bf16: bool) -> list[tuple[str, str]]:
        fmt = self.row.default_format
        return [(fmt, self.row.types(fmt)[0])]

    def smaller_quants(self, gpu: GpuProduct | None) -> list[tuple[str, str]]:
        return self.quant_candidates(gpu, True)

    def auto_refusal(self, facts: ModelFacts) -> str | None:
        return None

    def check_model(self, facts: ModelFacts, *, device: str, gpu: GpuProduct | None,
                    fmt: str | None, qtype: str | None) -> None:
        return None

    def host_cpu_millicores(self, tensor_parallel: int) -> int:
        return 2000

    def execution_target(self, options: Any, gpu_count: int) -> str:
        """"cuda" with a GPU, else "cpu" (an engine whose options name a target overrides)."""
        return "cuda" if gpu_count > 0 else "cpu"

    def containers(self, inp: ServeInput) -> tuple[list[Obj], list[Obj]]:  # pragma: no cover
        raise NotImplementedError
