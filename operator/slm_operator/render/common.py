"""Pieces every builder shares: names, labels, owner references, security contexts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from slm_operator import api, engines
from slm_operator import constants as c
from slm_operator.engines.base import ImageSetting
from slm_operator.hub import HubDefaults
from slm_operator.podspec import (  # noqa: F401  (re-exported: render's builders use them)
    GIB,
    container_security_context,
    empty_dir,
    gi,
    resources,
)
from slm_operator.resolve import Resolution, Resolved, pvc_source

Obj = dict[str, Any]
QUANTIZER_IMAGE = ImageSetting("quantizer").default
GATEWAY_IMAGE = ImageSetting("gateway").default


def _engine_defaults() -> tuple[tuple[str, str], ...]:
    return tuple((e.row.name, e.image.default) for e in engines.all_engines())


@dataclass(frozen=True)
class Images:
    """Default images: the quantizer's, the gateway's (in every engine pod) and each engine's
    (from the registry's image settings; the chart sets them, env SLM_IMAGE_<NAME>).
    `images.<engine>` reads one engine's image."""

    quantizer: str = QUANTIZER_IMAGE
    gateway: str = GATEWAY_IMAGE
    engines: tuple[tuple[str, str], ...] = field(default_factory=_engine_defaults)

    def for_engine(self, engine: str) -> str:
        """The image of `engine`; raises engines.UnknownEngineError for an unknown name."""
        found = dict(self.engines).get(engine)
        if found is None:
            engines.row(engine)  # raises, naming the engines
            raise engines.UnknownEngineError(f"No image for engine {engine!r}.")
        return found

    def __getattr__(self, name: str) -> str:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return dict(object.__getattribute__(self, "engines"))[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass(frozen=True)
class ConsumerFacts:
    """What the operator read from the access.apiKeys Secret before rendering (render makes no
    API calls): whether some consumer has requestsPerMinute/tokensPerMinute (then the limit
    store is rendered), and the (Secret, key) pairs keyRef entries name (projected into the
    gateway's consumers folder under _refs/<secret>/<key>)."""

    limits: bool = False
    refs: tuple[tuple[str, str], ...] = ()
    # The limit store Service's ClusterIP once it exists: the gateways dial it without a DNS
    # lookup on the request path (and on clusters without cluster DNS); before, its DNS name.
    store_host: str | None = None


@dataclass(frozen=True)
class RenderContext:
    """Facts read before rendering; render itself makes no API calls."""

    images: Images = field(default_factory=Images)
    service_monitor_crd: bool = False
    monitoring_namespace_labels: tuple[tuple[str, str], ...] = (
        ("kubernetes.io/metadata.name", "monitoring"),
    )
    hub: HubDefaults = field(default_factory=HubDefaults)  # operator-wide hub endpoint / CA bundle
    consumers: ConsumerFacts = field(default_factory=ConsumerFacts)  # this CR's (dataclasses.replace)


@dataclass(frozen=True)
class Target:
    """The CR being rendered plus its resolution (resolve.Resolution, decided before render)."""

    cr: api.SLMDeployment
    resolution: Resolution
    consumers: ConsumerFacts = field(default_factory=ConsumerFacts)

    @property
    def r(self) -> Resolved:
        return self.resolution.r

    @property
    def key(self) -> str:
        """The artifact key (hash of the quantization inputs)."""
        return self.resolution.key

    @property
    def name(self) -> str:
        return self.cr.metadata.name

    @property
    def namespace(self) -> str:
        return self.cr.metadata.namespace

    @property
    def spec(self) -> api.SLMDeploymentSpec:
        return self.cr.spec


def labels(t: Target, component: str) -> dict[str, str]:
    return {
        c.L_NAME: "slm",
        c.L_INSTANCE: t.name,
        c.L_COMPONENT: component,
        c.L_MANAGED_BY: c.OPERATOR_NAME,
        c.L_PART_OF: "slm-operator",
        c.L_DEPLOYMENT: t.name,
    }


def selector(t: Target, component: str) -> dict[str, str]:
    return {c.L_DEPLOYMENT: t.name, c.L_COMPONENT: component}


def owner_reference(t: Target) -> Obj:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": t.name,
        "uid": t.cr.metadata.uid or "00000000-0000-0000-0000-000000000000",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(t: Target, name: str, component: str, *, owned: bool = True,
             annotations: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": t.namespace, "labels": labels(t, component)}
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    if owned:
        meta["ownerReferences"] = [owner_reference(t)]
    return meta


def pod_security_context() -> Obj:
    """Pod Security "restricted" at pod level (non-root, RuntimeDefault seccomp)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": c.RUN_AS,
        "runAsGroup": c.RUN_AS,
        "fsGroup": c.RUN_AS,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def child_names(name: str, key: str) -> dict[str, str]:
    return {
        "server": name,
        "api_key": f"{name}-api-key",
        "cache": f"{name}-model-cache",
        "job": f"{name}-quantize-{key}",
        "np_server": f"{name}-server",
        "np_quantizer": f"{name}-quantizer",
        "limits": f"{name}-limits",
    }


def artifact_path(t: Target) -> str:
    """Where the served model lives inside the pod."""
    pvc = pvc_source(t.spec.model.source)
    if pvc and t.r.format == "none":
        return f"{c.SOURCE_MOUNT}/{pvc[1]}".rstrip("/")
    return f"{c.MODELS_MOUNT}/artifacts/{t.r.format}-{t.r.qtype.lower()}-{t.key}"


def source_claim(t: Target) -> str | None:
    pvc = pvc_source(t.spec.model.source)
    return pvc[0] if pvc else None


def api_key_ref(t: Target) -> tuple[str, str]:
    ref = t.spec.access.api_key_secret_ref
    if ref:
        return ref.name, ref.key
    return child_names(t.name, t.key)["api_key"], "api-key"


def stable_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def engine_resources(t: Target) -> Obj:
    """The serving container's resources, from the spec or the sizing estimate; the CPU limit
    is the resolution's (resolve.Resolution.cpu_limit: twice the request where sizing sets none)."""
    return resources(t.r.cpu, t.r.memory, t.r.gpu_count, cpu_limit=t.resolution.cpu_limit,
                     memory_limit=t.r.memory_limit)


def gpu_scheduling(t: Target) -> tuple[dict[str, str], list[Obj]]:
    """nodeSelector and tolerations for the serving (and AWQ) pods."""
    node_selector = dict(t.spec.node_selector)
    tolerations = [tol.model_dump(by_alias=True, exclude_none=True) for tol in t.spec.tolerations]
    if t.r.gpu_count:
        if t.r.gpu_product:
            node_selector[c.GPU_PRODUCT_LABEL] = t.r.gpu_product
        tolerations.append({"key": c.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    return dict(sorted(node_selector.items())), tolerations


# -- working space: every emptyDir's sizeLimit, derived from the sizing estimate -----------------

JOB_TMP_BYTES = 2 * GIB   # the Job's downloads, scratch and F16 reference live on the PVC


def artifact_bytes(t: Target) -> int:
    """The served artifact's size: the weights estimate; for a model outside the catalog the
    model-cache claim's size (the artifact lives on it, so it cannot be larger)."""
    if t.r.weights_bytes:
        return t.r.weights_bytes
    from slm_operator.diff import parse_quantity

    return int(parse_quantity(t.spec.storage.size or t.r.storage_size) or 0)


