"""Operator configuration from flags and environment (set by the Helm chart)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from slm_operator.hub import HubDefaults
from slm_operator.render.common import Images, RenderContext


def image_env(engine: str) -> str:
    """The env var that overrides an engine's image: SLM_IMAGE_<ENGINE upper-cased>."""
    return f"SLM_IMAGE_{engine.upper()}"


def _env_value(name: str, default: float, value: Callable[[str], float | None], expected: str) -> float:
    """`value(raw)` of env `name` (unset or blank: `default`); `value` returns None for a
    value it refuses.

    Raises:
        ValueError: naming the variable, the value and `expected` (what to set instead).
    """
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    parsed = value(raw.strip())
    if parsed is None:
        raise ValueError(f"{name}={raw!r} is not {expected}, or unset it for the default")
    return parsed


def _seconds(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value >= 0 else None  # also refuses NaN


def _seconds_env(name: str, default: float) -> float:
    """A non-negative number of seconds from env `name` (unset: `default`); ValueError otherwise."""
    return _env_value(name, default, _seconds, "a number of seconds: set it to 0 or more (e.g. 2)")


def _count_env(name: str, default: int) -> int:
    """A whole number of at least 1 from env `name` (unset: `default`); ValueError otherwise."""
    return int(_env_value(name, default, lambda raw: int(raw) if raw.isdigit() and int(raw) >= 1 else None,
                          f"a whole number of at least 1: set it to e.g. {default}"))


@dataclass(frozen=True)
class OperatorConfig:
    images: Images = field(default_factory=Images)
    namespaces: tuple[str, ...] = ()
    workers: int = 16
    monitoring_namespace: str = "monitoring"
    # Seconds an "in progress" status may wait before it is written (reconciler.Reconciler's
    # status_settle): measured by bench/controlplane, 2 s drops the transient writes (Job created
    # -> running, Deployment created -> replicas starting) on the local control plane.
    status_settle_s: float = 2.0
    # API requests in flight at once (kube.Kube's max_in_flight), watches apart: measured by
    # bench/controlplane on the local control plane (see bench/README.md).
    api_max_in_flight: int = 32
    hub: HubDefaults = field(default_factory=HubDefaults)

    @classmethod
    def from_env(cls) -> OperatorConfig:
        """Settings from SLM_* env (the chart sets them).

        Raises:
            slm_operator.hub.InvalidHubSetting: a malformed SLM_HUB_* value (the message names
                the chart value and the fix); the operator refuses to start with it.
        """
        defaults = Images()
        images = Images(
            quantizer=os.environ.get("SLM_IMAGE_QUANTIZER", defaults.quantizer),
            gateway=os.environ.get("SLM_IMAGE_GATEWAY", defaults.gateway),
            # One env per engine of the registry: SLM_IMAGE_<ENGINE> (the chart's runtimeImages).
            engines=tuple((name, os.environ.get(image_env(name), image))
                          for name, image in defaults.engines),
        )
        namespaces = tuple(n for n in os.environ.get("SLM_NAMESPACES", "").split(",") if n)
        return cls(
            images=images,
            namespaces=namespaces,
            workers=int(os.environ.get("SLM_WORKERS", "16")),
            monitoring_namespace=os.environ.get("SLM_MONITORING_NAMESPACE", "monitoring"),
            status_settle_s=_seconds_env("SLM_STATUS_SETTLE_S", 2.0),
            api_max_in_flight=_count_env("SLM_API_MAX_IN_FLIGHT", cls.api_max_in_flight),
            hub=HubDefaults.from_env(dict(os.environ)),
        )

    def render_context(self, *, service_monitor_crd: bool) -> RenderContext:
        return RenderContext(
            images=self.images,
            service_monitor_crd=service_monitor_crd,
            monitoring_namespace_labels=(("kubernetes.io/metadata.name", self.monitoring_namespace),),
            hub=self.hub,
        )
