"""Fixtures: tiny trained models (built once per machine, cached) and a quantizer runner."""

from __future__ import annotations

import pytest
from quantizer_helpers import TRAIN_STEPS, require, run_quantizer


@pytest.fixture(scope="session")
def tiny():
    """tiny(arch) -> Path of the cached tiny model folder for phi3 / qwen3 / gemma3."""
    require("torch", "transformers", "tokenizers")
    from slm_runtime.tiny_models import tiny_model

    return lambda arch: tiny_model(arch, train_steps=TRAIN_STEPS)


@pytest.fixture(scope="session")
def tiny_bitnet():
    """Path of the cached tiny BitNet b1.58 model (BitNetForCausalLM, trained ternary)."""
    require("torch", "transformers", "tokenizers")
    from slm_runtime.tiny_bitnet import tiny_bitnet_model

    return tiny_bitnet_model(train_steps=TRAIN_STEPS)


@pytest.fixture
def quantize():
    return run_quantizer
