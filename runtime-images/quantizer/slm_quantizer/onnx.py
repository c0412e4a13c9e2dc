"""ONNX int4: onnxruntime-genai's model builder, checked with onnxruntime-genai itself.

The artifact folder is what onnxruntime-genai loads directly (model.onnx, model.onnx.data,
genai_config.json, tokenizer files, chat template): the ONNX Runtime server serves it as is.
The reference perplexity is the source HF model in float32 (transformers), on the same
token ids.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from slm_runtime import progress
from slm_runtime.perplexity import perplexity_from_logits

PRECISIONS = {"int4": "int4", "int8": "int8", "fp16": "fp16", "fp32": "fp32"}
# model_type values the pinned builder cannot export (see unsupported_reason()).
_GEMMA3 = {"gemma3", "gemma3_text"}


class OnnxError(RuntimeError):
    pass


def unsupported_reason(config: dict) -> str | None:
    """Why this model cannot go through the pinned builder, or None.

    onnxruntime-genai 0.18's builder reads rope settings flat from the config; Gemma3 under
    transformers 5 nests them per layer type, and the export stops with KeyError 'rope_type'.
    Refusing up front gives a clear message instead of a stack trace after minutes of work.
    """
    if config.get("model_type") in _GEMMA3:
        return ("ONNX export of Gemma3 is not supported by the pinned onnxruntime-genai builder "
                "(per-layer-type rope settings); use format gguf for Gemma3")
    return None


def build(model_dir: Path, out_dir: Path, precision: str, target: str, cache: Path) -> None:
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(model_dir), "-o", str(out_dir),
           "-p", PRECISIONS[precision], "-e", target, "-c", str(cache)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not (out_dir / "genai_config.json").is_file():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise OnnxError(f"onnxruntime-genai builder failed (exit {proc.returncode}):\n{tail}")


def evaluate(model_path: Path, text: str, prompt: str, max_new_tokens: int = 8) -> tuple[float, str, list[int]]:
    """(perplexity on text, greedy sample continuing prompt, token ids) with onnxruntime-genai."""
    import numpy as np
    import onnxruntime_genai as og

    model = og.Model(str(model_path))
    tok = og.Tokenizer(model)
    ids = [int(i) for i in tok.encode(text)]
    config = json.loads((model_path / "genai_config.json").read_text())
    window = int(config.get("model", {}).get("decoder", {}).get("sliding_window", {}).get("window_size", 0) or 0)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=max(len(ids) + 1, window), do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(np.array(ids, dtype=np.int32))
    logits = np.asarray(gen.get_output("logits"))[0]
    ppl = perplexity_from_logits(logits[: len(ids)], ids)
    del gen

    prompt_ids = tok.encode(prompt)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=max(len(prompt_ids) + max_new_tokens, window), do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(prompt_ids)
    new: list[int] = []
    while not gen.is_done() and len(new) < max_new_tokens:
        gen.generate_next_token()
        new.append(int(gen.get_next_tokens()[0]))
    return ppl, tok.decode(np.array(new, dtype=np.int32)), ids


def hf_perplexity(model_dir: Path, ids: list[int], trust_remote_code: bool) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, trust_remote_code=trust_remote_code)
    x = torch.tensor([ids])
    with torch.no_grad():
        return float(torch.exp(model(input_ids=x, labels=x).loss))


def run(model_dir: Path, precision: str, target: str, staging: Path, work: Path, text: str, prompt: str,
        trust_remote_code: bool = False) -> dict:
    import onnxruntime_genai as og

    config = json.loads((model_dir / "config.json").read_text())
    reason = unsupported_reason(config)
    if reason:
        raise OnnxError(reason)
    timings: dict[str, float] = {}
    t = time.monotonic()
    progress.emit("quantize", type=precision, target=target, tool="onnxruntime-genai builder")
    build(model_dir, staging, precision, target, work / "builder-cache")
    timings["quantize"] = round(time.monotonic() - t, 2)

    t = time.monotonic()
    progress.emit("verify", reference="hf-fp32")
    q_ppl, sample, ids = evaluate(staging, text, prompt)
    ref_ppl = hf_perplexity(model_dir, ids, trust_remote_code)
    timings["verify"] = round(time.monotonic() - t, 2)
    return {
        "reference": {"kind": "hf-fp32", "perplexity": ref_ppl},
        "quantized_perplexity": q_ppl,
        "eval_tokens": len(ids),
        "sample": sample,
        "timings": timings,
        "tools": {"onnxruntime-genai": og.__version__},
    }
