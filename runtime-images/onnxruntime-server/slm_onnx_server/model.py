"""Loading an onnxruntime-genai model folder and choosing its execution provider."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime_genai as og

from .chat_template import ChatTemplate

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    pass


@dataclass
class LoadedModel:
    name: str
    path: Path
    model: Any  # og.Model
    tokenizer: Any  # og.Tokenizer
    template: ChatTemplate
    context_length: int
    vocab_size: int
    eos_ids: frozenset[int]
    device: str
    dynamic_batching: bool  # paged-attention build: the Engine batches continuously

    def encode(self, text: str) -> list[int]:
        return [int(t) for t in self.tokenizer.encode(text)]


def find_model_folder(model_dir: Path) -> Path:
    """The folder holding genai_config.json: model_dir itself or its only child that has one."""
    if (model_dir / "genai_config.json").is_file():
        return model_dir
    found = sorted(p.parent for p in model_dir.glob("*/genai_config.json"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelLoadError(f"no genai_config.json in {model_dir} or its subfolders")
    raise ModelLoadError(f"several model folders under {model_dir}: {[p.name for p in found]}")


def _config(folder: Path, device: str) -> tuple[Any, str]:
    config = og.Config(str(folder))
    if device == "cpu":
        config.clear_providers()
        return config, "cpu"
    if device == "cuda":
        if not og.is_cuda_available():
            raise ModelLoadError("--device cuda was asked for but the CUDA execution provider is not available")
        config.clear_providers()
        config.append_provider("cuda")
        return config, "cuda"
    # auto: the provider the builder wrote into genai_config.json (the target it was built for).
    opts = json.loads((folder / "genai_config.json").read_text())
    providers = opts["model"]["decoder"].get("session_options", {}).get("provider_options", [])
    names = [name for entry in providers for name in entry]
    if "cuda" in names and not og.is_cuda_available():
        raise ModelLoadError("the model was built for CUDA but the CUDA execution provider is not available")
    return config, (names[0] if names else "cpu")


def load_model(model_dir: Path, name: str, device: str = "auto", max_model_len: int = 0) -> LoadedModel:
    """Load the model; max_model_len > 0 caps the context below the model's own."""
    folder = find_model_folder(model_dir)
    genai = json.loads((folder / "genai_config.json").read_text())
    config, used = _config(folder, device)
    context = int(genai["model"].get("context_length") or genai.get("search", {}).get("max_length") or 2048)
    if 0 < max_model_len < context:
        # og.Engine (static batching) allocates every sequence's KV cache for search.max_length,
        # which the builder sets to the whole context: for Qwen3-0.6B's 4,096 tokens that is
        # ~0.9 GB per sequence and doubles the time per token on CPU.
        context = max_model_len
        config.overlay(json.dumps({"search": {"max_length": context}}))
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)
    eos = genai["model"].get("eos_token_id", [])
    eos_ids = frozenset(eos if isinstance(eos, list) else [eos]) | frozenset(int(t) for t in tokenizer.eos_token_ids)
    loaded = LoadedModel(
        name=name,
        path=folder,
        model=model,
        tokenizer=tokenizer,
        template=ChatTemplate(folder, tokenizer),
        context_length=context,
        vocab_size=int(genai["model"]["vocab_size"]),
        eos_ids=eos_ids,
        device=used,
        dynamic_batching="dynamic_batching" in genai.get("engine", {}),
    )
    log.info("model loaded", extra={"model": name, "device": used, "context_length": context,
                                     "dynamic_batching": loaded.dynamic_batching})
    return loaded
