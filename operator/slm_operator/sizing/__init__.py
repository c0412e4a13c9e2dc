"""Model sizing: catalog, memory estimates, and auto-configuration (see docs/sizing.md).

The names most callers need are re-exported here.
"""

from slm_operator.sizing.autoconfig import Resources, SizingDecision, autoconfigure
from slm_operator.sizing.catalog import (
    GpuProduct,
    ModelFacts,
    facts_from_config,
    fetch_config,
    hub_repo_id,
    list_gpus,
    list_models,
    lookup_gpu,
    lookup_model,
    resolve_model,
    tier_for,
)
from slm_operator.sizing.errors import (
    GatedModelError,
    InvalidQuantizationError,
    MigSliceError,
    SizingError,
    UnknownGpuError,
    UnknownModelError,
    UnsupportedDtypeError,
    UnsupportedModelError,
)
from slm_operator.sizing.estimate import MemoryEstimate, estimate, kv_cache_bytes, weight_bytes
from slm_operator.sizing.quant import parse_quant

__all__ = [
    "GatedModelError", "GpuProduct", "InvalidQuantizationError", "MemoryEstimate", "MigSliceError",
    "ModelFacts", "Resources", "SizingDecision", "SizingError", "UnknownGpuError",
    "UnknownModelError", "UnsupportedDtypeError", "UnsupportedModelError", "autoconfigure",
    "estimate", "facts_from_config", "fetch_config", "hub_repo_id", "kv_cache_bytes", "list_gpus",
    "list_models", "lookup_gpu", "lookup_model", "parse_quant", "resolve_model", "tier_for",
    "weight_bytes",
]
