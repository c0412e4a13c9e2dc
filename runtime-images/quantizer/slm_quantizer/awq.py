"""AWQ / GPTQ W4A16 through llm-compressor (GPU only), saved in compressed-tensors format for vLLM.

Calibration uses the built-in corpus (no dataset download). The reference perplexity is the
source model in bfloat16 on the GPU, measured before quantization; the check after reloads
the saved artifact, so what is verified is what vLLM will load.
"""

from __future__ import annotations

import time
from pathlib import Path

from slm_runtime import corpus, progress


class GpuRequired(RuntimeError):
    pass


# What the serving side relies on: vLLM reads the method from this config (the operator passes
# no --quantization for awq/gptq; render/engines.py ARTIFACT_QUANTIZATION).
SAVED_QUANT_METHOD = "compressed-tensors"


def check_saved_format(staging: Path) -> str:
    """The saved config.json names compressed-tensors, as the serving args assume."""
    import json

    q = json.loads((staging / "config.json").read_text()).get("quantization_config") or {}
    method = q.get("quant_method")
    if method != SAVED_QUANT_METHOD:
        raise RuntimeError(f"llm-compressor saved quant_method {method!r}, not {SAVED_QUANT_METHOD!r}: "
                           "vLLM would be started with the wrong quantization; the artifact was not written")
    return method


def _perplexity(model, tok, text: str) -> tuple[float, int]:
    import torch

    ids = tok(text, return_tensors="pt").input_ids.to(model.device)
    with torch.no_grad():
        return float(torch.exp(model(input_ids=ids, labels=ids).loss)), ids.shape[1]


def run(model_dir: Path, method: str, staging: Path, text: str, prompt: str, trust_remote_code: bool) -> dict:
    import torch

    if not torch.cuda.is_available():
        raise GpuRequired(f"{method.upper()} quantization needs an NVIDIA GPU (set target cuda and "
                          "schedule the Job on a GPU node); no CUDA device is visible")
    import llmcompressor
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.awq import AWQModifier
    from llmcompressor.modifiers.quantization import GPTQModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    timings: dict[str, float] = {}
    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map="cuda",
                                                 trust_remote_code=trust_remote_code)
    ref_ppl, n_tokens = _perplexity(model, tok, text)
    samples = [p for p in corpus.training_corpus(200_000, seed=7).split("\n\n") if len(p) > 200][:128]
    ds = Dataset.from_dict({"text": samples}).map(
        lambda row: tok(row["text"], truncation=True, max_length=512), remove_columns=["text"])
    modifier = (AWQModifier(targets=["Linear"], scheme="W4A16_ASYM", ignore=["lm_head"]) if method == "awq"
                else GPTQModifier(targets=["Linear"], scheme="W4A16", ignore=["lm_head"]))
    t = time.monotonic()
    progress.emit("quantize", type="w4a16", method=method, tool="llm-compressor")
    oneshot(model=model, dataset=ds, recipe=[modifier], max_seq_length=512, num_calibration_samples=len(samples))
    model.save_pretrained(staging, save_compressed=True)
    tok.save_pretrained(staging)
    check_saved_format(staging)
    timings["quantize"] = round(time.monotonic() - t, 2)
    del model
    torch.cuda.empty_cache()

    t = time.monotonic()
    progress.emit("verify", reference="hf-bf16")
    quant = AutoModelForCausalLM.from_pretrained(staging, device_map="cuda", trust_remote_code=trust_remote_code)
    q_ppl, _ = _perplexity(quant, tok, text)
    ids = tok(prompt, return_tensors="pt").input_ids.to(quant.device)
    out = quant.generate(ids, max_new_tokens=8, do_sample=False)
    sample = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    timings["verify"] = round(time.monotonic() - t, 2)
    return {
        "reference": {"kind": "hf-bf16", "perplexity": ref_ppl},
        "quantized_perplexity": q_ppl,
        "eval_tokens": n_tokens,
        "sample": sample,
        "timings": timings,
        "tools": {"llmcompressor": llmcompressor.__version__},
    }
