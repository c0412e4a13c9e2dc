"""Operator configuration from flags and environment (set by the Helm chart)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from slm_operator.hub import HubDefaults
from slm_operator.render.common import Images, RenderContext


def image_env(engine: str) -> str:
    """The env var that overrides an engine's image: SLM_IMAGE_<ENGINE upper-cased>."""
    return f"SLM_IMAGE_{engine.upper()}"


@dataclass(frozen=True)
class OperatorConfig:
    images: Images = field(default_factory=Images)
    namespaces: tuple[str, ...] = ()
    workers: int = 16
    monitoring_namespace: str = "monitoring"
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
            hub=HubDefaults.from_env(dict(os.environ)),
        )

    def render_context(self, *, service_monitor_crd: bool) -> RenderContext:
        return RenderContext(
            images=self.images,
            service_monitor_crd=service_monitor_crd,
            monitoring_namespace_labels=(("kubernetes.io/metadata.name", self.monitoring_namespace),),
            hub=self.hub,
        )
