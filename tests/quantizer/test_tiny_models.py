"""The tiny test models: real architecture classes, a 2,048-token tokenizer with a chat template, trained."""

from __future__ import annotations

import json

import pytest

EXPECTED = {"phi3": "Phi3ForCausalLM", "qwen3": "Qwen3ForCausalLM", "gemma3": "Gemma3ForCausalLM"}


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(EXPECTED))
def test_tiny_model_is_real_architecture_and_trained(tiny, arch):
    from transformers import AutoTokenizer

    path = tiny(arch)
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == [EXPECTED[arch]]
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_key_value_heads"]) == (256, 2, 2)
    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok) == config["vocab_size"] == 2048
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hello"}], tokenize=False,
                                     add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    info = json.loads((path / "build-info.json").read_text())
    # An untrained model scores about the vocabulary size; training must have cut that well down.
    assert info["eval_perplexity"] < 1000, info
    print(f"\n{arch}: eval perplexity {info['eval_perplexity']} after {info['params']['train_steps']} steps "
          f"({info['train_seconds']} s)")


def test_random_model_config_has_real_shape():
    pytest.importorskip("transformers", reason="needs transformers (install-ml-deps.sh)")
    from slm_runtime.tiny_models import REAL_SHAPES, model_config

    spec = dict(REAL_SHAPES["qwen3-0.6b"])
    config = model_config(spec.pop("arch"), **spec)
    assert type(config).__name__ == "Qwen3Config"
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size, config.head_dim) == (1024, 28, 151936, 128)
