"""Perplexity from next-token logits, shared by the llama.cpp and ONNX Runtime checks."""

from __future__ import annotations

import math

import numpy as np


def perplexity_from_logits(logits: np.ndarray, ids: list[int] | np.ndarray) -> float:
    """exp(mean negative log-likelihood) of ids[1:] given logits[:-1] (shape [len(ids), vocab])."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) < 2:
        raise ValueError("perplexity needs at least two tokens")
    logits = np.asarray(logits, dtype=np.float64)[: len(ids) - 1]
    logits = logits - logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    nll = -log_probs[np.arange(len(ids) - 1), ids[1:]]
    return float(math.exp(nll.mean()))


def relative_increase_pct(before: float, after: float) -> float:
    """Percent change from before to after (negative: the quantized model scored better)."""
    return (after - before) / before * 100.0
