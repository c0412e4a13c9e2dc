"""Engines: the one place an engine is defined (docs/engines.md).

- table.py: which formats (and types) each engine serves, its default format, and which
  engine `auto` prefers per format and device (pure data; api.py builds the enum and the CEL
  rules from it);
- base.py: the `Engine` protocol and its narrow input (`ServeInput`);
- one module per engine (vllm, ollama, onnxruntime, llamacpp): sizing hooks, containers,
  metrics endpoint and queue metric, image setting;
- this registry: `get(name)` and `all_engines()`. An unknown name raises UnknownEngineError,
  everywhere; nothing falls through to another engine.
"""

from __future__ import annotations

from slm_operator.engines import llamacpp, ollama, onnxruntime, vllm
from slm_operator.engines.base import Engine, ServeInput
from slm_operator.engines.table import (
    AUTO,
    ENGINE_NAMES,
    ROWS,
    TERNARY_TYPES,
    UnknownEngineError,
    engines_serving,
    preferred,
    row,
)

_MODULES = (vllm, ollama, onnxruntime, llamacpp)
REGISTRY: dict[str, Engine] = {m.ENGINE.row.name: m.ENGINE for m in _MODULES}
if tuple(REGISTRY) != ENGINE_NAMES:  # a table row without its module (or out of order)
    raise ImportError(f"engines: modules {tuple(REGISTRY)} do not match the table {ENGINE_NAMES}")


def get(name: str) -> Engine:
    """The engine called `name`; raises UnknownEngineError (naming the known ones) otherwise."""
    if name not in REGISTRY:
        row(name)  # raises with the list of engines
    return REGISTRY[name]


def all_engines() -> tuple[Engine, ...]:
    """Every engine, in table order."""
    return tuple(REGISTRY.values())


__all__ = ["AUTO", "ENGINE_NAMES", "ROWS", "TERNARY_TYPES", "Engine", "ServeInput", "UnknownEngineError",
           "all_engines", "engines_serving", "get", "preferred", "row"]
