"""--format none and --format fp8: fetch, verify, publish the Hugging Face folder as it is.

`none` is what vLLM serves unquantized (bf16/fp16 is vLLM's --dtype). `fp8` is the same
folder: vLLM quantizes BF16/FP16 weights to FP8 itself at load (`--quantization fp8`,
dynamic per-tensor scales), so nothing is converted here and the manifest says
"quantizedBy": "vllm-at-load".

Verification, on the staged folder (what the serving pod will read):
  - config.json parses; every safetensors shard the index names is present; weights are
    safetensors (pickled *.bin are never taken)
  - the tokenizer loads (transformers)
  - the parameter count, from the safetensors headers (no weights read)
  - for models under --sample-max-params (default 1e9): load on CPU in float32, check the
    logits are finite and greedily generate a few tokens; larger models skip this (a 7B model
    needs ~28 GiB in float32) and the manifest says so.
There is no perplexity gate: nothing is quantized in this Job.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from pathlib import Path
from typing import Any

from slm_runtime import progress

from . import fetch

QUANTIZED_BY = {"none": None, "fp8": "vllm-at-load"}
SAMPLE_TOKENS = 8


class InvalidModel(RuntimeError):
    """The fetched folder is not a usable model (missing shard, broken tokenizer, NaN logits)."""


class Unsupported(RuntimeError):
    """The combination cannot work (e.g. FP8 at load of an already quantized model)."""


def stage(src: Path, files: list[str], staging: Path, link: bool) -> None:
    """Put files into staging, readable by the serving pod's uid. With link (src is our own
    download cache, on the same volume) hard links: no second copy of a 16 GB model; cache files
    are only ever replaced by rename, never rewritten in place, so a shared inode cannot change
    under the artifact. A user's folder (path / pvc source) is always copied."""
    for rel in files:
        origin, target = (src / rel).resolve(), staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if not link:
                raise OSError("copy requested")
            os.link(origin, target)
        except OSError:  # a user's folder, another filesystem, or links not allowed
            shutil.copyfile(origin, target)
        os.chmod(target, 0o644)
        if target.parent != staging:
            os.chmod(target.parent, 0o755)


def safetensors_parameters(folder: Path, files: list[str]) -> int:
    """Number of parameters, summed from the safetensors headers (8-byte length + JSON)."""
    total = 0
    for rel in files:
        if not rel.endswith(".safetensors"):
            continue
        with open(folder / rel, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        for name, info in header.items():
            if name != "__metadata__":
                n = 1
                for dim in info["shape"]:
                    n *= dim
                total += n
    return total


def check_files(folder: Path, files: list[str]) -> dict[str, Any]:
    """config.json parses and the safetensors weights are all there; returns the config."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise InvalidModel(f"config.json cannot be read: {exc}") from None
    weights = [f for f in files if f.endswith(".safetensors")]
    if not weights:
        raise InvalidModel("no *.safetensors weights in the source (pickled *.bin weights are never taken)")
    for index in (f for f in files if f.endswith(".safetensors.index.json")):
        shards = set(json.loads((folder / index).read_text()).get("weight_map", {}).values())
        base = Path(index).parent.as_posix()
        missing = sorted(s for s in shards if (f"{base}/{s}" if base != "." else s) not in files)
        if missing:
            raise InvalidModel(f"{index} names shards that are not in the source: {', '.join(missing[:5])}")
    return config


def _load_tokenizer(folder: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        if not tok("Hello world").input_ids:
            raise ValueError("the tokenizer returns no ids for 'Hello world'")
    except Exception as exc:
        raise InvalidModel(f"the tokenizer does not load: {type(exc).__name__}: {exc}") from None
    return tok


def _sample(folder: Path, tok: Any, prompt: str, trust_remote_code: bool) -> str:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # progress goes out as JSON lines

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                 trust_remote_code=trust_remote_code)
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        if not torch.isfinite(logits).all():
            raise InvalidModel("the weights produce non-finite logits (NaN/inf) on a short prompt")
        out = model.generate(ids, max_new_tokens=SAMPLE_TOKENS, do_sample=False)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def run(fetched: fetch.Fetched, fmt: str, qtype: str, staging: Path, prompt: str, trust_remote_code: bool,
        sample_max_params: int, downloaded: bool) -> dict[str, Any]:
    """Verify fetched and stage it as the artifact; downloaded: fetched.path is our download cache."""
    timings: dict[str, float] = {}
    t = time.monotonic()
    checksums = fetch.verify_checksums(fetched)
    files = fetch.model_files(fetched.path)
    config = check_files(fetched.path, files)
    if fmt == "fp8" and config.get("quantization_config"):
        method = config["quantization_config"].get("quant_method", "unknown")
        raise Unsupported(f"the source is already quantized ({method}); FP8 at load needs BF16/FP16 weights: "
                          "use format none to serve it as it is")
    progress.emit("convert", action="stage", files=len(files), note="no conversion: the folder is served as is")
    stage(fetched.path, files, staging, link=downloaded)
    timings["stage"] = round(time.monotonic() - t, 2)

    t = time.monotonic()
    params = safetensors_parameters(staging, files)
    tok = _load_tokenizer(staging, trust_remote_code)
    verification: dict[str, Any] = {"checksums": checksums, "config": "parsed", "parameters": params,
                                    "tokenizer": type(tok).__name__}
    sample: str | None = None
    if params < sample_max_params:
        progress.emit("verify", action="generate", parameters=params, device="cpu")
        sample = _sample(staging, tok, prompt, trust_remote_code)
        verification["generation"] = f"{SAMPLE_TOKENS} tokens generated on CPU (float32), logits finite"
    else:
        verification["generation"] = (f"skipped: {params:,} parameters is above --sample-max-params "
                                      f"{sample_max_params:,} (CPU generation would be too slow/large)")
        progress.emit("verify", action="generate-skipped", parameters=params)
    timings["verify"] = round(time.monotonic() - t, 2)
    dtype = config.get("dtype") or config.get("torch_dtype")
    return {"sample": sample, "verification": verification, "timings": timings, "sourceDtype": dtype,
            "quantizedBy": QUANTIZED_BY[fmt], "tools": {}}


def skipped_reason(fmt: str, qtype: str) -> str:
    if fmt == "fp8":
        return "not measured: vLLM quantizes to FP8 when it loads the model; this Job does not quantize"
    return f"not measured: the model is not quantized ({qtype} weights served as they are)"

