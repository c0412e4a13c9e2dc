"""The launcher's typed options: what the operator may set on `vllm serve`, and nothing else.

Plain dataclasses and the standard library only, so the operator (and tests) can import this
without vLLM, torch or pydantic installed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

VLLM_VERSION = "0.33.0"  # the version the image pins and tests/engines/ checks against

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_TOKEN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")


class OptionsError(ValueError):
    """The options are not valid; the message says which key and why."""


@dataclass(frozen=True)
class VllmOptions:
    model_path: str
    served_model_name: str
    host: str = "0.0.0.0"
    port: int = 8000
    max_model_len: int | None = None
    # A string such as "0.90" (the CRD keeps floats out of specs); a number is accepted too.
    gpu_memory_utilization: str | float | None = None
    max_num_seqs: int | None = None
    tensor_parallel_size: int = 1
    # None leaves vLLM's default; True/False render --enable-prefix-caching / --no-enable-prefix-caching.
    enable_prefix_caching: bool | None = None
    quantization: str | None = None
    dtype: str | None = None
    kv_cache_dtype: str | None = None
    trust_remote_code: bool = False
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        _validate(self)


def _int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise OptionsError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


def _validate(o: VllmOptions) -> None:
    if not isinstance(o.model_path, str) or not o.model_path.startswith("/"):
        raise OptionsError(f"model_path must be an absolute path to a local model, got {o.model_path!r}")
    if not isinstance(o.served_model_name, str) or not _NAME.match(o.served_model_name):
        raise OptionsError(f"served_model_name {o.served_model_name!r} must match {_NAME.pattern}")
    if not isinstance(o.host, str) or not o.host or any(ch.isspace() for ch in o.host):
        raise OptionsError(f"host must be a host name or address, got {o.host!r}")
    # vLLM's own parser rejects ports below 1024 (FlexibleArgumentParser.check_port).
    _int("port", o.port, 1024, 65535)
    if o.max_model_len is not None:
        _int("max_model_len", o.max_model_len, 16, 10_000_000)
    if o.max_num_seqs is not None:
        _int("max_num_seqs", o.max_num_seqs, 1, 65536)
    _int("tensor_parallel_size", o.tensor_parallel_size, 1, 64)
    if o.gpu_memory_utilization is not None:
        gmu = o.gpu_memory_utilization
        try:
            value = float(gmu) if not isinstance(gmu, bool) else float("nan")
        except (TypeError, ValueError):
            value = float("nan")
        if not 0.0 < value <= 1.0:
            raise OptionsError(f"gpu_memory_utilization must be in (0, 1], got {gmu!r}")
    for name in ("quantization", "kv_cache_dtype"):
        value = getattr(o, name)
        if value is not None and (not isinstance(value, str) or not _TOKEN.match(value)):
            raise OptionsError(f"{name} must be a lower-case name such as 'awq_marlin' or 'fp8', got {value!r}")
    if o.dtype is not None and o.dtype not in DTYPES:
        raise OptionsError(f"dtype must be one of {', '.join(DTYPES)}, got {o.dtype!r}")
    for name in ("enable_prefix_caching", "trust_remote_code"):
        value = getattr(o, name)
        if value is not None and not isinstance(value, bool):
            raise OptionsError(f"{name} must be true or false, got {value!r}")
    if not all(isinstance(a, str) for a in o.extra_args):
        raise OptionsError("extra_args must be a list of strings")


def options_from_mapping(data: dict[str, Any]) -> VllmOptions:
    """Build options from a parsed config file; unknown keys are an error (typos must not pass)."""
    if not isinstance(data, dict):
        raise OptionsError("the config must be a mapping of option names to values")
    known = {f.name for f in fields(VllmOptions)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise OptionsError(f"unknown option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for required in ("model_path", "served_model_name"):
        if required not in data:
            raise OptionsError(f"{required} is required")
    values = dict(data)
    extra = values.get("extra_args", ())
    if not isinstance(extra, list | tuple):
        raise OptionsError("extra_args must be a list of strings")
    values["extra_args"] = tuple(extra)
    try:
        return VllmOptions(**values)
    except TypeError as err:  # a wrong type that dataclass construction itself rejects
        raise OptionsError(str(err)) from err


def load_options(path: str | Path) -> VllmOptions:
    """Read options from a JSON file, or YAML when the name ends in .yaml/.yml (PyYAML needed)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml  # vLLM's image has PyYAML (a vLLM dependency); JSON needs nothing

        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise OptionsError(f"{path}: not valid JSON: {err}") from err
    return options_from_mapping(data)
