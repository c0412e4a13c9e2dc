"""Tiny language models with the real architectures of Phi-4-mini, Qwen3 and Gemma3, built at test time.

No hub download is possible in tests, so tests build their own models:

    from slm_runtime.tiny_models import tiny_model, random_model

    path = tiny_model("qwen3")                 # Path to a Hugging Face model folder (cached)
    path = tiny_model("phi3", train_steps=0)   # untrained: builds in seconds
    path = random_model("qwen3-0.6b", out_dir) # random weights, real Qwen3-0.6B shape (benchmarks)

tiny_model(arch) returns a normal HF folder (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json with a ChatML chat template, special_tokens_map.json,
generation_config.json) for `arch` in ARCHS:

    "phi3"   -> Phi3ForCausalLM   (Phi-4-mini's architecture, partial rotary 0.75)
    "qwen3"  -> Qwen3ForCausalLM  (q/k norms, tied embeddings)
    "gemma3" -> Gemma3ForCausalLM (text-only Gemma3: sliding + full attention layers)

Default shape: hidden 256, intermediate 512, 2 layers, 4 heads, 2 KV heads, head dim 64,
2,048-token byte-level BPE trained offline on slm_runtime.corpus. The model is then trained
on that corpus for `train_steps` AdamW steps of 8 x 128 tokens (default 50: about 40-90 s
per model on 2 busy cores), so perplexity on the held-out slm_runtime.corpus.eval_text()
drops from ~2,100 (untrained) to ~280-370, and a quality gate means something. More steps
overfit this small corpus (held-out perplexity rises again past ~60 steps).

Models are cached in $SLM_TINY_MODEL_CACHE or ~/.cache/slm-operator/tiny-models/<arch>-<key>,
keyed by every build parameter and this module's BUILD_VERSION; a build happens once per
machine, under a file lock (parallel test processes wait), written to a temp dir and renamed
into place, so a half-built model is never used. Treat returned folders as read-only: copy
them before changing anything.

Tokens: <unk>=0, <s>=1, </s>=2, <pad>=3, <|im_start|>=4, <|im_end|>=5. eos is </s>; the
generation config stops on both </s> and <|im_end|>.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from slm_runtime import corpus

BUILD_VERSION = "2"
ARCHS = ("phi3", "qwen3", "gemma3")
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Real shapes for random-weight benchmark models (from the published config.json files).
REAL_SHAPES: dict[str, dict[str, Any]] = {
    "qwen3-0.6b": dict(arch="qwen3", hidden=1024, intermediate=3072, layers=28, heads=16, kv_heads=8,
                       head_dim=128, vocab=151936),
    "qwen3-1.7b": dict(arch="qwen3", hidden=2048, intermediate=6144, layers=28, heads=16, kv_heads=8,
                       head_dim=128, vocab=151936),
    "gemma3-1b": dict(arch="gemma3", hidden=1152, intermediate=6912, layers=26, heads=4, kv_heads=1,
                      head_dim=256, vocab=262144),
    "phi-4-mini": dict(arch="phi3", hidden=3072, intermediate=8192, layers=32, heads=24, kv_heads=8,
                       head_dim=128, vocab=200064),
}


def cache_root() -> Path:
    env = os.environ.get("SLM_TINY_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "slm-operator" / "tiny-models"


def model_config(arch: str, *, hidden: int = 256, intermediate: int = 512, layers: int = 2, heads: int = 4,
                 kv_heads: int = 2, head_dim: int = 64, vocab: int = 2048, max_positions: int = 2048):
    """A transformers config object of the real architecture class, at the given size."""
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                  num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                  max_position_embeddings=max_positions, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    if arch == "phi3":
        # Phi-4-mini: tied embeddings, rotary on 3/4 of each head.
        return tf.Phi3Config(**common, partial_rotary_factor=0.75, tie_word_embeddings=True,
                             original_max_position_embeddings=max_positions,
                             architectures=["Phi3ForCausalLM"])
    if arch == "qwen3":
        return tf.Qwen3Config(**common, head_dim=head_dim, tie_word_embeddings=True,
                              architectures=["Qwen3ForCausalLM"])
    if arch == "gemma3":
        # Text-only Gemma3 (model_type gemma3_text): every 6th layer full attention, others sliding.
        pattern = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)]
        return tf.Gemma3TextConfig(**common, head_dim=head_dim, query_pre_attn_scalar=head_dim,
                                   sliding_window=512, layer_types=pattern, tie_word_embeddings=True,
                                   architectures=["Gemma3ForCausalLM"])
    raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHS}")


def train_tokenizer(vocab: int = 2048):
    """A byte-level BPE (GPT-2 style pre-tokenizer) trained on the built-in corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = corpus.training_corpus()
    tok.train_from_iterator(text.split("\n\n"), trainer=trainer)
    # A small corpus runs out of merges below the target size; pad with reserved special
    # tokens (as real models do) so the embedding and the tokenizer agree on the vocab size.
    missing = vocab - tok.get_vocab_size()
    if missing > 0:
        tok.add_special_tokens([f"<|reserved_{i}|>" for i in range(missing)])
    return tok


def _save_tokenizer(tok, out: Path) -> None:
    """Save tokenizer files; tokenizer_class GPT2Tokenizer says what it is (a byte-level BPE),
    which llama.cpp's converter reads to pick the vocab type (as for Phi-4-mini)."""
    _fast_tokenizer(tok).save_pretrained(out)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "GPT2Tokenizer"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


def _fast_tokenizer(tok):
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 2048
    return fast


def _train(model, ids: list[int], steps: int, seq_len: int, batch: int, seed: int) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    data = torch.tensor(ids, dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=max(steps, 1), pct_start=0.1)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(data) - seq_len - 1, (batch,), generator=gen)
        x = torch.stack([data[s : s + seq_len] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    model.eval()


def perplexity_hf(model_dir: Path | str, text: str | None = None) -> float:
    """Perplexity of an HF model folder on text (default: the held-out eval text)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = tok(text or corpus.eval_text(), return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    return float(torch.exp(loss))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _key(params: dict[str, Any]) -> str:
    import transformers

    blob = json.dumps({**params, "v": BUILD_VERSION, "tf": transformers.__version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def tiny_model(arch: str, *, train_steps: int = 50, seed: int = 0, seq_len: int = 128, batch: int = 8,
               vocab: int = 2048, hidden: int = 256, intermediate: int = 512, layers: int = 2,
               heads: int = 4, kv_heads: int = 2, head_dim: int = 64) -> Path:
    """Build (once, cached) and return the folder of a briefly trained tiny model of `arch`."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHS}")
    shape = dict(hidden=hidden, intermediate=intermediate, layers=layers, heads=heads, kv_heads=kv_heads,
                 head_dim=head_dim, vocab=vocab)
    params = dict(arch=arch, train_steps=train_steps, seed=seed, seq_len=seq_len, batch=batch, **shape)
    dest = cache_root() / f"{arch}-{_key(params)}"
    if (dest / "build-info.json").exists():
        return dest
    with _locked(cache_root() / f".{dest.name}.lock"):
        if (dest / "build-info.json").exists():
            return dest
        import torch
        from transformers import AutoModelForCausalLM, GenerationConfig

        started = time.monotonic()
        torch.manual_seed(seed)
        tok = train_tokenizer(vocab)
        model = AutoModelForCausalLM.from_config(model_config(arch, **shape), dtype=torch.float32)
        # Paragraph breaks stay "\n\n": the eval text has them too, so they must be learned.
        ids = tok.encode(corpus.training_corpus()).ids
        trained_at = time.monotonic()
        _train(model, ids, train_steps, seq_len, batch, seed)
        train_s = time.monotonic() - trained_at
        model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=[2, 5], pad_token_id=3,
                                                   do_sample=False, max_new_tokens=32)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=cache_root()))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            _save_tokenizer(tok, tmp)
            info = dict(params=params, build_seconds=round(time.monotonic() - started, 1),
                        train_seconds=round(train_s, 1), eval_perplexity=round(perplexity_hf(tmp), 2))
            (tmp / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest


def random_model(shape: str, out_dir: Path | str, *, layers: int | None = None, dtype: str = "bfloat16",
                 seed: int = 0) -> Path:
    """Write a random-weight model of a real shape (REAL_SHAPES) to out_dir, for benchmarks.

    The tokenizer is the tiny 2,048-token one (it only emits ids below 2,048; the embedding
    keeps the real vocabulary size so the compute matches the real model). `layers` overrides
    the depth for a cheaper model of the same width.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    spec = dict(REAL_SHAPES[shape])
    arch = spec.pop("arch")
    if layers is not None:
        spec["layers"] = layers
    torch.manual_seed(seed)
    config = model_config(arch, max_positions=4096, **spec)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=[2, 5], pad_token_id=3)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    _save_tokenizer(train_tokenizer(), out)
    return out
