"""MLX 4-bit / 8-bit: mlx-lm's converter, checked with MLX itself on CPU (mlx-cpu on Linux).

The artifact is what `mlx_lm.load()` / `mlx_lm.generate` on Apple silicon read directly:
config.json (with a "quantization" block: group_size, bits), model.safetensors (MLX affine
quantized weights), the tokenizer files and the chat template. No in-cluster engine serves
it: it is an export-only format, handed to devices.

Perplexity, both sides in MLX on CPU, on the same token ids: the reference is the source HF
folder loaded by mlx-lm unquantized (float32), the candidate the converted artifact. Group
size GROUP_SIZE is mlx-lm's default (64), falling back to 32 when a weight's input dimension
is not a multiple of 64.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from slm_runtime import progress
from slm_runtime.perplexity import perplexity_from_logits

BITS = {"4bit": 4, "8bit": 8}
GROUP_SIZE = 64


class MlxError(RuntimeError):
    """mlx-lm refused or failed to convert the model (its own error text is in the message)."""


@contextlib.contextmanager
def keep_nofile_limit() -> Iterator[None]:
    """Import mlx-lm inside this. mlx_lm.utils calls resource.setrlimit(RLIMIT_NOFILE, (2048,
    4096)) for the whole process when it is imported (mlx-lm 0.32.2, mlx_lm/utils.py). A lowered
    hard limit cannot be raised again without CAP_SYS_RESOURCE, and every later child inherits
    it: podman then fails to start containers ("error setting rlimit type 7"). Inside this
    block such a call may only raise the soft limit (what mlx-lm wants, for models of many
    files); the hard limit is never lowered."""
    real = resource.setrlimit

    def raise_only(which: int, limits: tuple[int, int]) -> None:
        if which != resource.RLIMIT_NOFILE:
            real(which, limits)
            return
        soft, hard = resource.getrlimit(which)
        wanted = limits[0] if hard == resource.RLIM_INFINITY else min(limits[0], hard)
        if wanted > soft:
            real(which, (wanted, hard))

    resource.setrlimit = raise_only
    try:
        yield
    finally:
        resource.setrlimit = real


def supported_model_types() -> set[str]:
    """model_type values the installed mlx-lm can load (its models/ modules plus its remapping)."""
    import pkgutil

    with keep_nofile_limit():
        import mlx_lm.models
        from mlx_lm.utils import MODEL_REMAPPING

    names = {m.name for m in pkgutil.iter_modules(mlx_lm.models.__path__)}
    return names | set(MODEL_REMAPPING)


def unsupported_reason(config: dict[str, Any]) -> str | None:
    """Why mlx-lm cannot convert this model (an architecture it does not know), or None."""
    model_type = config.get("model_type")
    try:
        known = supported_model_types()
    except ImportError:
        return None  # mlx-lm not installed: the conversion itself reports that
    if model_type not in known:
        return (f"mlx-lm {md.version('mlx-lm')} does not support model_type {model_type!r}; "
                "choose format gguf or onnx for this model")
    return None


def _group_size(model_dir: Path) -> int:
    import json

    config = json.loads((model_dir / "config.json").read_text())
    dims = [config.get("hidden_size", 0), config.get("intermediate_size", 0)]
    return GROUP_SIZE if all(d % GROUP_SIZE == 0 for d in dims) else 32


def convert(model_dir: Path, out_dir: Path, qtype: str, trust_remote_code: bool = False) -> None:
    """mlx_lm.convert(model_dir -> out_dir, quantized to BITS[qtype]); out_dir must not exist."""
    with keep_nofile_limit():
        from mlx_lm import convert as mlx_convert

    try:
        mlx_convert(str(model_dir), str(out_dir), quantize=True, q_bits=BITS[qtype],
                    q_group_size=_group_size(model_dir), trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise MlxError(f"mlx-lm convert failed: {type(exc).__name__}: {exc}") from exc
    if not (out_dir / "config.json").is_file() or not list(out_dir.glob("*.safetensors")):
        raise MlxError(f"mlx-lm convert wrote no model into {out_dir}")


def evaluate(model_path: Path, text: str, prompt: str | None = None, max_new_tokens: int = 8,
             ids: list[int] | None = None) -> tuple[float, str, list[int]]:
    """(perplexity on text, greedy sample continuing prompt, token ids), MLX on CPU.

    ids: score these token ids instead of tokenizing text (the reference uses the
    candidate's ids, so both sides see exactly the same tokens)."""
    import mlx.core as mx
    import numpy as np

    with keep_nofile_limit():
        from mlx_lm import generate, load

    mx.set_default_device(mx.cpu)
    model, tok = load(str(model_path))
    if ids is None:
        ids = [int(i) for i in tok.encode(text)]
    logits = model(mx.array([ids]))[0].astype(mx.float32)
    ppl = perplexity_from_logits(np.array(logits), ids)
    sample = ""
    if prompt is not None:
        sample = generate(model, tok, prompt=prompt, max_tokens=max_new_tokens, verbose=False)
    return ppl, sample, ids


def run(model_dir: Path, qtype: str, staging: Path, work: Path, text: str, prompt: str,
        trust_remote_code: bool = False) -> dict:
    """Convert into staging (files moved from a scratch folder) and measure perplexity both sides."""
    import shutil

    timings: dict[str, float] = {}
    t = time.monotonic()
    progress.emit("quantize", type=qtype, tool="mlx-lm", device="cpu")
    out = work / "mlx"
    convert(model_dir, out, qtype, trust_remote_code)
    for item in out.iterdir():
        shutil.move(str(item), staging / item.name)
    timings["quantize"] = round(time.monotonic() - t, 2)

    t = time.monotonic()
    progress.emit("verify", reference="mlx-fp32")
    try:
        q_ppl, sample, ids = evaluate(staging, text, prompt)
        ref_ppl, _, _ = evaluate(model_dir, text, ids=ids)
    except Exception as exc:  # mlx-lm's own error, e.g. a layer layout its model code does not expect
        raise MlxError(f"mlx-lm could not run the model to measure perplexity: {type(exc).__name__}: "
                       f"{exc}") from exc
    timings["verify"] = round(time.monotonic() - t, 2)
    return {
        "reference": {"kind": "mlx-fp32", "perplexity": ref_ppl},
        "quantized_perplexity": q_ppl,
        "eval_tokens": len(ids),
        "sample": sample,
        "timings": timings,
        "tools": {"mlx-lm": md.version("mlx-lm"), "mlx": md.version("mlx")},
    }
