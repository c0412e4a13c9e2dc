"""Errors raised by sizing. All are ValueErrors whose message is a sentence fit for a status
condition or a CLI error line."""

from __future__ import annotations


class SizingError(ValueError):
    """Base class: the inputs cannot be sized (the message says why and what to do)."""


class UnknownModelError(SizingError):
    """The model is neither in the catalog nor has a readable config.json."""


class UnsupportedModelError(SizingError):
    """The model's architecture is one the estimator does not model (e.g. mixture of experts)."""


class UnknownGpuError(SizingError):
    """The GPU product is not in the catalog's table."""


class InvalidQuantizationError(SizingError):
    """A quantization format/type or an engine/format combination that does not exist."""
