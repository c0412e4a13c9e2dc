"""ONNX int4 through Microsoft Olive: Olive's GPTQ pass, run by Olive's workflow engine.

Olive's int4 recipe for a Hugging Face model on CPU and CUDA (what `olive optimize
--precision int4 --provider CPUExecutionProvider|CUDAExecutionProvider` assembles, see
olive/cli/optimize.py) is two passes:

    Gptq          PyTorch, layer-wise GPTQ with calibration text (4 bits, symmetric, group 32)
    ModelBuilder  the GPTQ-quantized model -> ONNX with MatMulNBits (onnxruntime-genai's builder)

The Gptq pass runs in Olive's workflow engine (olive.workflows.run) as Olive ships it. Olive's
ModelBuilder pass is a thin wrapper around onnxruntime-genai's builder, and the pinned pair
does not fit: olive-ai 0.13's wrapper patches onnxruntime_genai.models.quantized_model,
which onnxruntime-genai 0.18 removed (ModuleNotFoundError before any work). onnxruntime-genai
0.18 reads Olive's quantized format itself (onnxruntime_genai/models/loaders/olive.py), so
the second step calls the builder directly (onnx.build) on Olive's output: the same
program the wrapper would run, without the broken patch.

The only thing added to Olive is the calibration data: Olive defaults to downloading
wikitext-2, which a quantization Job cannot rely on, so a dataset component
(SLM_CALIBRATION_DATASET) registered with Olive's data registry cuts the given text into
fixed-length token windows.

The artifact has the same layout as the builder path (model.onnx, model.onnx.data,
genai_config.json, tokenizer files), so the ONNX Runtime server and onnx.evaluate() load it
unchanged. Raises OnnxError (from onnx.py) when Olive or the builder fails.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

from slm_runtime import progress

from .onnx import OnnxError, build, evaluate, hf_perplexity
from .onnx import unsupported_reason as builder_unsupported_reason

SLM_CALIBRATION_DATASET = "slm_calibration_text"
# Fused projections (qkv_proj, gate_up_proj): Olive's GPTQ output for them reaches
# onnxruntime-genai 0.18's builder with zero points of the wrong shape, and the model then fails
# to load ("MatMulNBits PrePack: zero_points initializer shape ... does not match"). Measured
# on the tiny Phi3; refused up front (operator side: sizing/formats.py).
_FUSED_MODEL_TYPES = {"phi3"}
# GPTQ settings: Olive's defaults for int4 (symmetric, group size 32 as ModelBuilder's
# int4_block_size default in `olive optimize`).
GROUP_SIZE = 32
CALIBRATION_SEQ_LEN = 128
CALIBRATION_MAX_SAMPLES = 32
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_REGISTERED = False


def unsupported_reason(config: dict[str, Any]) -> str | None:
    """Why the olive tool cannot make this model (beyond the builder's own refusals), or None."""
    if config.get("model_type") in _FUSED_MODEL_TYPES:
        return (f"quantization tool olive cannot make {config.get('model_type')} models (fused qkv/gate_up "
                "projections: the pinned onnxruntime-genai builder mis-shapes Olive's GPTQ zero points); "
                "use tool builder")
    return None


def _register_dataset() -> None:
    """Register SLM_CALIBRATION_DATASET with Olive's data registry (once per process)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from olive.data.registry import Registry

    @Registry.register_dataset(SLM_CALIBRATION_DATASET)
    def slm_calibration_text(model_path: str, text_file: str, seq_len: int = CALIBRATION_SEQ_LEN,
                             max_samples: int = CALIBRATION_MAX_SAMPLES) -> list[tuple[dict[str, Any], int]]:
        """Non-overlapping windows of seq_len token ids from text_file, as Olive calibration items:
        ({"input_ids": LongTensor[seq_len], "attention_mask": LongTensor[seq_len]}, 0)."""
        import torch
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_path)
        ids = tok(Path(text_file).read_text()).input_ids
        items = []
        for start in range(0, max(len(ids) - seq_len, 1), seq_len):
            window = torch.tensor(ids[start : start + seq_len], dtype=torch.long)
            items.append(({"input_ids": window, "attention_mask": torch.ones_like(window)}, 0))
            if len(items) >= max_samples:
                break
        return items

    _REGISTERED = True


def workflow_config(model_dir: Path, out_dir: Path, cache: Path, calibration_file: Path,
                    target: str) -> dict[str, Any]:
    """Olive workflow configuration (what `olive run --config` takes): Olive's Gptq pass on
    model_dir, 4 bits symmetric, group GROUP_SIZE, calibrated on calibration_file."""
    return {
        "input_model": {"type": "HfModel", "model_path": str(model_dir)},
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [
            {"device": "gpu" if target == "cuda" else "cpu", "execution_providers": [PROVIDERS[target]]}]}},
        "data_configs": [{
            "name": "calibration",
            "load_dataset_config": {"type": SLM_CALIBRATION_DATASET, "model_path": str(model_dir),
                                    "text_file": str(calibration_file)},
            "pre_process_data_config": {"type": "skip_pre_process"},
            "dataloader_config": {"type": "default_dataloader", "batch_size": 1},
        }],
        "passes": {"gptq": {"type": "Gptq", "bits": 4, "sym": False, "group_size": GROUP_SIZE,
                            "data_config": "calibration"}},
        "host": "local_system",
        "target": "local_system",
        "cache_dir": str(cache),
        "output_dir": str(out_dir),
        "log_severity_level": 3,
    }


def gptq(model_dir: Path, target: str, work: Path, calibration_text: str) -> Path:
    """Run Olive's Gptq pass; returns the folder of the GPTQ-quantized HF model (Olive format)."""
    from olive.workflows import run as olive_run

    _register_dataset()
    calibration_file = work / "calibration.txt"
    calibration_file.write_text(calibration_text)
    olive_out = work / "olive-output"
    config = workflow_config(model_dir, olive_out, work / "olive-cache", calibration_file, target)
    logging.getLogger("olive").setLevel(logging.ERROR)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            olive_run(config)
    except Exception as exc:
        raise OnnxError(f"Olive's Gptq pass failed: {type(exc).__name__}: {exc}") from exc
    found = sorted(p.parent for p in olive_out.rglob("config.json")
                   if (p.parent / "model.safetensors").is_file() or list(p.parent.glob("*.safetensors")))
    if not found:
        tail = "\n".join(log.getvalue().strip().splitlines()[-15:])
        raise OnnxError(f"Olive's Gptq pass wrote no model under {olive_out}:\n{tail}")
    return found[0]


def run(model_dir: Path, precision: str, target: str, staging: Path, work: Path, text: str, prompt: str,
        trust_remote_code: bool = False, calibration_text: str | None = None) -> dict:
    """Quantize with Olive into staging and measure perplexity (same contract as onnx.run)."""
    import importlib.metadata as md

    import onnxruntime_genai as og

    from slm_runtime import corpus

    config = json.loads((model_dir / "config.json").read_text())
    reason = builder_unsupported_reason(config) or unsupported_reason(config)
    if reason:
        raise OnnxError(reason)
    timings: dict[str, float] = {}
    t = time.monotonic()
    progress.emit("quantize", type=precision, target=target, tool="olive Gptq + onnxruntime-genai builder")
    if precision != "int4":
        raise OnnxError(f"tool olive makes int4 only (Olive's Gptq recipe); use tool builder for {precision}")
    quantized = gptq(model_dir, target, work, calibration_text or corpus.training_corpus())
    build(quantized, staging, precision, target, work / "builder-cache")
    timings["quantize"] = round(time.monotonic() - t, 2)

    t = time.monotonic()
    progress.emit("verify", reference="hf-fp32")
    try:
        q_ppl, sample, ids = evaluate(staging, text, prompt)
    except Exception as exc:  # onnxruntime-genai refusing what Olive + the builder made
        raise OnnxError(f"the Olive-made ONNX model does not load in onnxruntime-genai: {type(exc).__name__}: "
                        f"{exc}") from exc
    ref_ppl = hf_perplexity(model_dir, ids, trust_remote_code)
    timings["verify"] = round(time.monotonic() - t, 2)
    return {
        "reference": {"kind": "hf-fp32", "perplexity": ref_ppl},
        "quantized_perplexity": q_ppl,
        "eval_tokens": len(ids),
        "sample": sample,
        "timings": timings,
        "tools": {"olive-ai": md.version("olive-ai"), "onnxruntime-genai": og.__version__},
    }
