"""A tiny BitNet b1.58 model (transformers' BitNetForCausalLM), trained ternary at test time.

No hub download is possible in tests, so the ternary path (convert -> TQ1_0/TQ2_0 GGUF ->
quality gate -> llama-server) gets its own model:

    from slm_runtime.tiny_bitnet import tiny_bitnet_model
    path = tiny_bitnet_model()        # Path to a Hugging Face folder (cached per machine)

The folder is what a BitNet b1.58 checkpoint with full-precision latent weights looks like:
config.json with architectures ["BitNetForCausalLM"] (model_type "bitnet"), model.safetensors,
and the tiny byte-level BPE tokenizer of slm_runtime.tiny_models. Shape: hidden 256,
intermediate 512, 2 layers, 4 heads, 2 KV heads (head dim 64), tied embeddings, vocabulary 2,048.

Activation: SiLU-gated FFN (hidden_act "silu"), the BitNet b1.58 graph llama.cpp implements
(src/models/bitnet.cpp: LLM_FFN_SILU, LLM_FFN_PAR). transformers' BitNet default is "relu2"
(microsoft/bitnet-b1.58-2B-4T), which the pinned llama.cpp does not compute.

Training is quantization-aware, as BitNet b1.58 is trained: every linear weight of the decoder
(q/k/v/o, gate/up/down) is used in the forward pass as its ternary version
round(clamp(W / mean|W|, -1, 1)) * mean|W| (absmean scale per tensor, the formula llama.cpp's
converter applies: conversion/bitnet.py weight_quant), with a straight-through gradient to the
latent full-precision weight. The latent weights are saved; the converter ternarizes them the
same way, so the GGUF computes what training optimised. Activations stay full precision (as
llama.cpp's BITNET graph computes them). 50 AdamW steps bring the held-out perplexity of the
ternary model from ~2,100 to a few hundred.

Cached in $SLM_TINY_MODEL_CACHE or ~/.cache/slm-operator/tiny-models/bitnet-<key> (key: every
build parameter, this module's BUILD_VERSION, the transformers version), built once under a file
lock and renamed into place, like slm_runtime.tiny_models.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from slm_runtime import corpus
from slm_runtime.tiny_models import _key, _locked, _save_tokenizer, _train, cache_root, train_tokenizer

BUILD_VERSION = "1"
# The decoder's linear layers that BitNet b1.58 makes ternary (BitLinear); embeddings and norms
# stay full precision (llama.cpp's converter ternarizes exactly these: ATTN_Q/K/V/OUT, FFN_*).
TERNARY_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def bitnet_config(*, hidden: int = 256, intermediate: int = 512, layers: int = 2, heads: int = 4,
                  kv_heads: int = 2, vocab: int = 2048, max_positions: int = 2048, hidden_act: str = "silu"):
    """transformers.BitNetConfig of the tiny model (BitNetForCausalLM, tied embeddings)."""
    import transformers as tf

    return tf.BitNetConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                           num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                           max_position_embeddings=max_positions, hidden_act=hidden_act, rms_norm_eps=1e-5,
                           bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=True,
                           architectures=["BitNetForCausalLM"])


def ternarize(weight):
    """BitNet b1.58 absmean ternarization of a weight tensor: values in {-s, 0, s}, s = mean|W|."""
    scale = weight.abs().mean().clamp(min=1e-5)
    return (weight / scale).round().clamp(-1, 1) * scale


def _ternary_ste():
    """A torch parametrization: the forward pass sees ternarize(W); gradients reach W unchanged."""
    import torch

    class TernarySTE(torch.nn.Module):
        def forward(self, weight):
            return weight + (ternarize(weight) - weight).detach()

    return TernarySTE()


def _ternary_linears(model) -> list:
    return [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in TERNARY_LINEARS]


def perplexity_ternary(model, tok, text: str | None = None) -> float:
    """Held-out perplexity of a (parametrized, ternary) model with the tiny tokenizer."""
    import torch

    ids = torch.tensor([tok.encode(text or corpus.eval_text()).ids])
    with torch.no_grad():
        return float(torch.exp(model(input_ids=ids, labels=ids).loss))


def tiny_bitnet_model(*, train_steps: int = 50, seed: int = 0, seq_len: int = 128, batch: int = 8,
                      vocab: int = 2048, hidden: int = 256, intermediate: int = 512, layers: int = 2,
                      heads: int = 4, kv_heads: int = 2) -> Path:
    """Build (once, cached) and return the folder of a tiny BitNet b1.58 model trained ternary."""
    shape = dict(hidden=hidden, intermediate=intermediate, layers=layers, heads=heads, kv_heads=kv_heads,
                 vocab=vocab)
    params = dict(arch="bitnet", train_steps=train_steps, seed=seed, seq_len=seq_len, batch=batch,
                  bitnet_build=BUILD_VERSION, **shape)
    dest = cache_root() / f"bitnet-{_key(params)}"
    if (dest / "build-info.json").exists():
        return dest
    with _locked(cache_root() / f".{dest.name}.lock"):
        if (dest / "build-info.json").exists():
            return dest
        import torch
        from torch.nn.utils import parametrize
        from transformers import AutoModelForCausalLM, GenerationConfig

        started = time.monotonic()
        torch.manual_seed(seed)
        tok = train_tokenizer(vocab)
        model = AutoModelForCausalLM.from_config(bitnet_config(**shape), dtype=torch.float32)
        linears = _ternary_linears(model)
        for lin in linears:
            parametrize.register_parametrization(lin, "weight", _ternary_ste())
        ids = tok.encode(corpus.training_corpus()).ids
        trained_at = time.monotonic()
        _train(model, ids, train_steps, seq_len, batch, seed)
        train_s = time.monotonic() - trained_at
        ppl = perplexity_ternary(model, tok)
        for lin in linears:  # keep the latent weights: the converter ternarizes them as training did
            parametrize.remove_parametrizations(lin, "weight", leave_parametrized=False)
        model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=[2, 5], pad_token_id=3,
                                                   do_sample=False, max_new_tokens=32)
        cache_root().mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=cache_root()))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            _save_tokenizer(tok, tmp)
            info = dict(params=params, build_seconds=round(time.monotonic() - started, 1),
                        train_seconds=round(train_s, 1), eval_perplexity_ternary=round(ppl, 2))
            (tmp / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest


def with_config(src: Path | str, out_dir: Path | str, **changes) -> Path:
    """A copy of model folder src with config.json fields changed (e.g. hidden_act="relu2")."""
    out = Path(out_dir)
    shutil.copytree(src, out, dirs_exist_ok=True)
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(changes)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return out
