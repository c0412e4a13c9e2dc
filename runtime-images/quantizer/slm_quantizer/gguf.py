"""GGUF: llama.cpp's HF converter (to an F16 reference), llama_model_quantize, llama.cpp checks.

The converter is llama.cpp's convert_hf_to_gguf.py, taken from the llama-cpp-python sdist
by install-ml-deps.sh (same llama.cpp commit as the compiled library that quantizes and
loads the result). It runs in a subprocess with one adjustment: a BPE tokenizer whose
pre-tokenizer is exactly GPT-2's (byte-level with the GPT-2 split regex) but whose token
hash the converter does not know (any self-trained tokenizer) is declared "gpt-2", which is
what that pre-tokenizer is; anything else unknown still fails as upstream intends.

BitNet b1.58 (ternary types TQ1_0 / TQ2_0): the converter's BitnetModel knows the original
BitNet layout (1bitLLM: self_attn.inner_attn_ln, mlp.ffn_layernorm, a SentencePiece
tokenizer.model). The wrapper also maps transformers' BitNetForCausalLM names
(self_attn.attn_sub_norm, mlp.ffn_sub_norm: the same tensors) and, where there is no
tokenizer.model, reads the BPE tokenizer.json as for any other model. What it cannot fix is the
feed-forward activation: llama.cpp's BITNET graph is SiLU-gated (src/models/bitnet.cpp), so a
BitNet model with another hidden_act (microsoft/bitnet-b1.58-2B-4T: relu2) is refused before
converting (bitnet_unsupported_reason) instead of producing a GGUF that computes something else.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from slm_runtime import progress
from slm_runtime.perplexity import perplexity_from_logits

# llama.cpp's file types (enum llama_ftype in llama.h).
FTYPES = {"Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q4_0": 2, "Q5_0": 8, "Q6_K": 18, "F16": 1,
          "TQ1_0": 36, "TQ2_0": 37}
GGUF_FILE = "model.gguf"
# Ternary (BitNet b1.58) types: block_tq1_0 (1.6875 bits/weight) and block_tq2_0 (2.0625
# bits/weight), 256 weights per block with one fp16 scale (ggml-common.h). Only weights that
# already are ternary survive them: a model trained as BitNet b1.58.
TERNARY_TYPES = ("TQ1_0", "TQ2_0")
# The architectures llama.cpp's converter maps to its BITNET graph (conversion/__init__.py).
BITNET_ARCHITECTURES = ("BitnetForCausalLM", "BitNetForCausalLM")
# The feed-forward activation that graph computes (src/models/bitnet.cpp: LLM_FFN_SILU).
BITNET_ACTIVATIONS = ("silu", "swish")

_CONVERT_WRAPPER = r"""
import json, runpy, sys
from pathlib import Path
convert_dir, model_dir = sys.argv[1], sys.argv[2]
sys.path.insert(0, convert_dir)
from conversion import base

def _plain_gpt2_byte_level(model_dir):
    try:
        pre = json.loads((Path(model_dir) / "tokenizer.json").read_text()).get("pre_tokenizer") or {}
    except (OSError, ValueError):
        return False
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    return len(steps) == 1 and steps[0].get("type") == "ByteLevel" and steps[0].get("use_regex", True)

_orig = base.TextModel.get_vocab_base_pre
def _get_vocab_base_pre(self, tokenizer):
    try:
        return _orig(self, tokenizer)
    except NotImplementedError:
        if _plain_gpt2_byte_level(model_dir):
            return "gpt-2"
        raise
base.TextModel.get_vocab_base_pre = _get_vocab_base_pre

# BitNet: transformers' BitNetForCausalLM names for the sub-norms, and a BPE tokenizer.json when
# there is no SentencePiece tokenizer.model.
from conversion import bitnet
_cfg = base.gguf.TensorNameMap.block_mappings_cfg
_T = base.gguf.MODEL_TENSOR
_cfg[_T.ATTN_SUB_NORM] = (*_cfg[_T.ATTN_SUB_NORM], "model.layers.{bid}.self_attn.attn_sub_norm")
_cfg[_T.FFN_SUB_NORM] = (*_cfg[_T.FFN_SUB_NORM], "model.layers.{bid}.mlp.ffn_sub_norm")
_bitnet_vocab = bitnet.BitnetModel.set_vocab
def _bitnet_set_vocab(self):
    if (Path(model_dir) / "tokenizer.model").is_file():
        return _bitnet_vocab(self)
    return self._set_vocab_gpt2()
bitnet.BitnetModel.set_vocab = _bitnet_set_vocab
sys.argv = ["convert_hf_to_gguf.py", *sys.argv[2:]]
runpy.run_path(str(Path(convert_dir) / "convert_hf_to_gguf.py"), run_name="__main__")
"""


class GgufError(RuntimeError):
    pass


def is_bitnet(config: dict) -> bool:
    """Whether config.json names a BitNet b1.58 architecture llama.cpp converts (BITNET_ARCHITECTURES)."""
    return any(a in BITNET_ARCHITECTURES for a in config.get("architectures") or [])


def unsupported_reason(config: dict, qtype: str) -> str | None:
    """Why llama.cpp cannot make a faithful GGUF of this model at qtype, or None.

    config: the model's config.json. A ternary type needs a BitNet b1.58 model (any other model's
    weights are not ternary: TQ1_0/TQ2_0 would destroy them); a BitNet model needs the activation
    llama.cpp's BITNET graph computes (BITNET_ACTIVATIONS) and tied embeddings (the graph's output
    is the token embedding; src/models/bitnet.cpp), whatever the type.
    """
    archs = ", ".join(config.get("architectures") or []) or "none"
    if qtype in TERNARY_TYPES and not is_bitnet(config):
        return (f"quantization type {qtype} (--type; spec.quantization.type) is ternary: it is only for "
                f"BitNet b1.58 models ({', '.join(BITNET_ARCHITECTURES)}), whose weights are trained as "
                f"-1/0/+1; this model's config.json architectures is {archs}. Use Q4_K_M, Q5_K_M or Q8_0 "
                f"for it, or a BitNet b1.58 model for {qtype}")
    act = str(config.get("hidden_act", "silu")).lower()
    if is_bitnet(config) and act not in BITNET_ACTIVATIONS:
        return (f"this BitNet model's config.json hidden_act is {act!r}; llama.cpp's BitNet graph (llama-cpp-"
                f"python {_llama_cpp_version()}) computes a SiLU-gated feed-forward, so its GGUF would "
                f"compute a different model. BitNet b1.58 models with hidden_act silu convert (the "
                f"1bitLLM bitnet_b1_58 family); microsoft/bitnet-b1.58-2B-4T (relu2) needs Microsoft's "
                f"bitnet.cpp, which this project does not ship")
    if is_bitnet(config) and config.get("tie_word_embeddings") is False:
        return ("this BitNet model's config.json tie_word_embeddings is false (a separate lm_head); "
                "llama.cpp's BitNet graph computes the output with the token embedding and its converter "
                "has no place for lm_head.weight. BitNet b1.58 models with tied embeddings convert")
    return None


def _llama_cpp_version() -> str:
    import importlib.metadata as md

    try:
        return md.version("llama-cpp-python")
    except md.PackageNotFoundError:
        return "unknown"


def converter_dir() -> Path:
    """Where install-ml-deps.sh put llama.cpp's converter ($SLM_LLAMA_CPP_CONVERT_DIR overrides)."""
    env = os.environ.get("SLM_LLAMA_CPP_CONVERT_DIR")
    if env:
        return Path(env)
    import llama_cpp

    return Path(sys.prefix) / "share" / "slm-llama-cpp" / llama_cpp.__version__


def convert(model_dir: Path, out_file: Path, outtype: str = "f16") -> None:
    """HF folder -> GGUF at outtype (f16/f32/bf16) with a neutral model name.

    The neutral name matters: a name containing e.g. "phi3" makes llama.cpp expect the
    original Phi-3 special tokens when loading.
    """
    conv = converter_dir()
    if not (conv / "convert_hf_to_gguf.py").is_file():
        raise GgufError(f"llama.cpp converter not found in {conv} (run runtime-images/install-ml-deps.sh)")
    cmd = [sys.executable, "-c", _CONVERT_WRAPPER, str(conv), str(model_dir), "--outfile", str(out_file),
           "--outtype", outtype, "--model-name", "model"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not out_file.is_file():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise GgufError(f"llama.cpp conversion failed (exit {proc.returncode}):\n{tail}")


def quantize(src: Path, dst: Path, qtype: str) -> None:
    """llama_model_quantize through llama-cpp-python's ctypes binding."""
    import llama_cpp

    if qtype not in FTYPES:
        raise GgufError(f"unsupported GGUF type {qtype}; supported: {', '.join(sorted(FTYPES))}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[qtype]
    params.nthread = os.cpu_count() or 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0 or not dst.is_file():
        raise GgufError(f"llama_model_quantize to {qtype} failed (code {rc})")


def evaluate(gguf_file: Path, text: str, prompt: str, max_new_tokens: int = 8) -> tuple[float, str, int]:
    """(perplexity on text, greedy sample continuing prompt, tokens evaluated) with llama.cpp."""
    from llama_cpp import Llama

    probe = Llama(model_path=str(gguf_file), n_ctx=64, vocab_only=True, verbose=False)
    ids = probe.tokenize(text.encode(), add_bos=True)
    del probe
    n_ctx = max(512, len(ids) + max_new_tokens + 16)
    llm = Llama(model_path=str(gguf_file), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                verbose=False, seed=0, n_threads=os.cpu_count() or 1)
    llm.eval(ids)
    ppl = perplexity_from_logits(llm.scores[: len(ids)], ids)
    llm.reset()
    out = llm.create_completion(prompt, max_tokens=max_new_tokens, temperature=0.0)
    return ppl, out["choices"][0]["text"], len(ids)


def run(model_dir: Path, qtype: str, staging: Path, work: Path, text: str, prompt: str) -> dict:
    """Convert, quantize and check; writes staging/model.gguf. Returns the manifest fields."""
    import llama_cpp

    timings: dict[str, float] = {}
    reference = work / "reference-f16.gguf"
    t = time.monotonic()
    progress.emit("convert", to="gguf-f16")
    convert(model_dir, reference, "f16")
    timings["convert"] = round(time.monotonic() - t, 2)

    t = time.monotonic()
    progress.emit("quantize", type=qtype)
    out = staging / GGUF_FILE
    quantize(reference, out, qtype)
    timings["quantize"] = round(time.monotonic() - t, 2)

    t = time.monotonic()
    progress.emit("verify", reference="gguf-f16")
    ref_ppl, _, n_tokens = evaluate(reference, text, prompt)
    q_ppl, sample, _ = evaluate(out, text, prompt)
    timings["verify"] = round(time.monotonic() - t, 2)
    return {
        "files_main": GGUF_FILE,
        "reference": {"kind": "gguf-f16", "perplexity": ref_ppl, "bytes": reference.stat().st_size},
        "quantized_perplexity": q_ppl,
        "eval_tokens": n_tokens,
        "sample": sample,
        "timings": timings,
        "tools": {"llama-cpp-python": llama_cpp.__version__},
    }
