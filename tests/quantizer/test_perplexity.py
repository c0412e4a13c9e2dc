"""Perplexity arithmetic shared by the GGUF and ONNX checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slm_runtime.perplexity import perplexity_from_logits, relative_increase_pct


def test_uniform_logits_give_vocab_size():
    assert perplexity_from_logits(np.zeros((5, 2048)), [1, 2, 3, 4, 5]) == pytest.approx(2048)


def test_confident_right_predictions_give_one():
    ids = [3, 1, 2, 0]
    logits = np.full((4, 4), -1e4)
    for pos, nxt in enumerate(ids[1:]):
        logits[pos, nxt] = 0.0
    assert perplexity_from_logits(logits, ids) == pytest.approx(1.0)


def test_known_value_and_increase():
    logits = np.log(np.array([[0.5, 0.5], [0.25, 0.75], [1, 1]]))
    ids = [0, 1, 0]  # p(1)=0.5 then p(0)=0.25
    assert perplexity_from_logits(logits, ids) == pytest.approx(math.exp(-(math.log(0.5) + math.log(0.25)) / 2))
    assert relative_increase_pct(100.0, 103.0) == pytest.approx(3.0)
    assert relative_increase_pct(100.0, 99.0) < 0
    with pytest.raises(ValueError):
        perplexity_from_logits(np.zeros((1, 4)), [1])
