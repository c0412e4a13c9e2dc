"""Errors raised by sizing. All are ValueErrors whose message is a sentence fit for a status
condition or a CLI error line."""

from __future__ import annotations


class SizingError(ValueError):
    """Base class: the inputs cannot be sized (the message says why and what to do).

    ``condition_reason`` is the CamelCase reason of the Degraded condition the operator sets;
    ``field`` the spec field `slmctl validate` names."""

    condition_reason = "DoesNotFit"
    field = "spec"


class UnknownModelError(SizingError):
    """The model is neither in the catalog nor has a readable config.json."""


class UnsupportedModelError(SizingError):
    """The model's architecture is one the estimator does not model (e.g. mixture of experts)."""


class UnknownGpuError(SizingError):
    """The GPU product is not in the catalog's table."""

    condition_reason = "UnknownGPUProduct"
    field = "spec.resources.gpu.product"


class InvalidQuantizationError(SizingError):
    """A quantization format/type or an engine/format combination that does not exist."""

    condition_reason = "UnsupportedQuantization"
    field = "spec.quantization"


class UnsupportedDtypeError(InvalidQuantizationError):
    """The model family cannot compute in the only dtype the GPU (or the format) offers."""

    condition_reason = "UnsupportedDtype"
    field = "spec.resources.gpu.product"


class GatedModelError(SizingError):
    """The hub gates the model: a token is needed and none is given."""

    condition_reason = "HubTokenRequired"
    field = "spec.model.tokenSecretRef"


class MigSliceError(SizingError):
    """More than one MIG slice per container: CUDA sees only one."""

    condition_reason = "UnsupportedGPUCount"
    field = "spec.resources.gpu.count"
