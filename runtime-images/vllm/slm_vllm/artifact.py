"""What the model folder says about its own quantization, and the `--quantization` that agrees.

vLLM reads `quantization_config` from the model's config.json and refuses a `--quantization`
that names another method (e.g. `awq_marlin` for a compressed-tensors artifact, which is what
this project's AWQ/GPTQ Job writes). So the rule is: when the folder names its method, vLLM
is told nothing and reads it; `--quantization` is only for quantizing at load (fp8 of a
16-bit folder). The operator renders by this rule; the launcher applies it to the folder it
finds, so a pod rendered by an older operator, or a folder replaced under it, still starts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from slm_vllm.args import flag_name

# vLLM's own overrides: a folder of one method that vLLM serves with a faster kernel of the
# same format when asked (vLLM's `override_quantization_method`). Anything else is a mismatch.
COMPATIBLE = {
    "awq": {"awq", "awq_marlin", "marlin"},
    "gptq": {"gptq", "gptq_marlin", "marlin"},
    "fp8": {"fp8"},
    "compressed-tensors": {"compressed-tensors"},
}


def folder_quantization(model: str | Path) -> str | None:
    """quant_method from <model>/config.json (None: no quantization_config, or no folder)."""
    try:
        config = json.loads((Path(model) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    q = config.get("quantization_config") or (config.get("text_config") or {}).get("quantization_config")
    if not isinstance(q, dict):
        return None
    method = q.get("quant_method") or q.get("format")
    return str(method).lower() if method else None


def model_arg(args: Sequence[str]) -> str | None:
    """The positional model path of a `vllm serve` argument list (or --model's value)."""
    for i, arg in enumerate(args):
        if arg == "--model" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--model="):
            return arg.split("=", 1)[1]
    return args[0] if args and not args[0].startswith("-") else None


def _quantization_flag(args: Sequence[str]) -> tuple[int, int, str] | None:
    """(start, length, value) of --quantization / -q in args, or None."""
    for i, arg in enumerate(args):
        if arg == "-q" or flag_name(arg) == "quantization":
            if "=" in arg:
                return i, 1, arg.split("=", 1)[1]
            if i + 1 < len(args):
                return i, 2, args[i + 1]
    return None


def agree_with_folder(args: Sequence[str]) -> tuple[list[str], str | None]:
    """(args, note): drop a --quantization the folder's own quantization_config contradicts.

    The folder is what was verified and what vLLM will read; a flag naming another method
    can only make vLLM refuse to start. A flag vLLM accepts for that folder is left alone.
    """
    args = list(args)
    model = model_arg(args)
    found = _quantization_flag(args)
    if model is None or found is None:
        return args, None
    method = folder_quantization(model)
    start, length, value = found
    if method is None or value.lower() in COMPATIBLE.get(method, {method}):
        return args, None
    del args[start:start + length]
    return args, (f"dropped --quantization {value}: {model}/config.json says quant_method {method!r}, "
                  "which vLLM reads from the folder")


# config.json keys vLLM derives the longest context from (the smallest present wins).
_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_sequence_length",
                "max_seq_length", "seq_len")


def folder_max_len(model: str | Path) -> int | None:
    """The context vLLM derives from the folder's config, when it is plain (no rope scaling)."""
    try:
        config = json.loads((Path(model) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    text = config.get("text_config") or config
    if text.get("rope_scaling") or (text.get("rope_parameters") or {}).get("rope_type", "default") != "default":
        return None  # scaled rope: vLLM's own arithmetic; leave the flag to it
    lengths = [int(v) for k in _LENGTH_KEYS if isinstance(v := text.get(k), int) and v > 0]
    return min(lengths) if lengths else None


def fit_max_len(args: Sequence[str]) -> tuple[list[str], str | None]:
    """(args, note): lower a --max-model-len above what the folder supports (vLLM refuses it).

    The operator's sizing caps the context at the model's maximum for catalog models; a model
    outside the catalog gets a default the folder may not support.
    """
    args = list(args)
    model = model_arg(args)
    limit = folder_max_len(model) if model else None
    if limit is None:
        return args, None
    for i, arg in enumerate(args):
        if flag_name(arg) != "max-model-len":
            continue
        inline = "=" in arg
        raw = arg.split("=", 1)[1] if inline else (args[i + 1] if i + 1 < len(args) else "")
        try:
            value = int(raw)
        except ValueError:
            return args, None  # "1k" and friends: vLLM's own parser decides
        if value <= limit:
            return args, None
        if inline:
            args[i] = f"--max-model-len={limit}"
        else:
            args[i + 1] = str(limit)
        return args, f"lowered --max-model-len {value} to {limit}: {model}/config.json supports no more"
    return args, None
