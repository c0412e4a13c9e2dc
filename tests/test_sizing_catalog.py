"""The sizing catalog: data consistency, lookups, tiers, config.json parsing, GPU table."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from slm_operator.sizing import catalog
from slm_operator.sizing.catalog import (
    facts_from_config,
    fetch_config,
    lookup_gpu,
    lookup_model,
    resolve_model,
    tier_for,
)
from slm_operator.sizing.errors import UnknownGpuError, UnknownModelError, UnsupportedModelError

ARCH_FIELDS = ("layers", "hidden_size", "intermediate_size", "attention_heads", "kv_heads", "head_dim",
               "vocab_size", "max_context", "tied_embeddings", "sliding_window", "sliding_window_layers")


def model(name: str) -> catalog.ModelFacts:
    m = lookup_model(name)
    assert m is not None, name
    return m


# -- data consistency -------------------------------------------------------------------------


@pytest.mark.parametrize("m", catalog.list_models(), ids=lambda m: m.name)
def test_param_count_matches_the_shapes(m):
    # A typo in layers/hidden/heads/intermediate/vocab moves the derived count far more than
    # the norms and q/k-norm vectors the generic formula leaves out (< 0.05 %).
    assert abs(m.derived_params - m.params) / m.params < 0.0005


@pytest.mark.parametrize("m", catalog.list_models(), ids=lambda m: m.name)
def test_catalog_rows_are_sane(m):
    assert m.attention_heads % m.kv_heads == 0
    assert 0 <= m.sliding_window_layers <= m.layers
    assert (m.sliding_window is None) == (m.sliding_window_layers == 0)
    assert m.id.count("/") == 1


def test_required_models_are_present():
    for name in ("microsoft/Phi-4-mini-instruct", "Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B", "Qwen/Qwen3-4B",
                 "Qwen/Qwen3-8B", "Qwen/Qwen3-14B", "Qwen/Qwen3-32B", "google/gemma-3-1b-it",
                 "google/gemma-3-4b-it", "google/gemma-3-12b-it", "google/gemma-3-27b-it"):
        assert lookup_model(name) is not None, name


def test_known_published_parameter_counts():
    # Counts the hub shows for the safetensors of these repositories.
    assert model("meta-llama/Llama-3.2-1B-Instruct").params == 1_235_814_400
    assert model("mistralai/Mistral-7B-Instruct-v0.3").params == 7_248_023_552
    assert model("google/gemma-3-4b-it").params == 4_300_079_472
    assert model("google/gemma-3-12b-it").params == 12_187_325_040


def test_gemma3_sliding_window_layout():
    # 5 local : 1 global, i.e. every 6th layer global.
    assert model("gemma-3-27b-it").sliding_window == 1024
    assert model("gemma-3-27b-it").full_attention_layers == 10
    assert model("gemma-3-1b-it").sliding_window == 512
    assert model("gemma-3-1b-it").sliding_window_layers == 22


# -- tiers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "tier"), [
    ("Qwen3-0.6B", "Micro"), ("gemma-3-1b-it", "Micro"), ("Llama-3.2-1B-Instruct", "Micro"),
    ("Qwen3-1.7B", "Small"), ("Phi-4-mini-instruct", "Small"), ("gemma-3-12b-it", "Small"),
    ("Qwen3-14B", "Medium"), ("phi-4", "Medium"), ("gemma-3-27b-it", "Medium"), ("Qwen3-32B", "Large"),
])
def test_tiers(name, tier):
    assert model(name).tier == tier


def test_tier_boundaries():
    assert tier_for(1_499_999_999) == "Micro"
    assert tier_for(1_500_000_000) == "Small"
    assert tier_for(13_999_999_999) == "Small"
    assert tier_for(14_000_000_000) == "Medium"
    assert tier_for(30_500_000_000) == "Medium"
    assert tier_for(31_000_000_000) == "Large"


# -- lookups ----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [
    "hf://Qwen/Qwen3-8B", "Qwen/Qwen3-8B", "hf://qwen/qwen3-8b", "QWEN/QWEN3-8B", "hf://Qwen/Qwen3-8B@main",
    "Qwen/Qwen3-8B-AWQ", "Qwen/Qwen3-8B-GGUF", "bartowski/Qwen_Qwen3-8B-GGUF", "unsloth/Qwen3-8B-GGUF",
    "qwen3-8b", "https://huggingface.co/Qwen/Qwen3-8B",
])
def test_lookup_model_spellings(source):
    assert model(source).id == "Qwen/Qwen3-8B"


def test_lookup_gemma_reupload():
    assert model("bartowski/google_gemma-3-4b-it-GGUF").id == "google/gemma-3-4b-it"


@pytest.mark.parametrize("source", ["hf://someone/unknown-model", "pvc://models/qwen", "s3://bucket/x", "nothing"])
def test_lookup_model_unknown_is_none(source):
    assert lookup_model(source) is None


def test_resolve_model_unknown_errors_clearly():
    with pytest.raises(UnknownModelError, match="not in the sizing catalog"):
        resolve_model("hf://someone/unknown-model", fetch=False)
    with pytest.raises(UnknownModelError, match="pvc://models/x"):
        resolve_model("pvc://models/x")


def test_resolve_model_prefers_catalog_without_network():
    assert resolve_model("hf://google/gemma-3-1b-it", fetch=False).source == "catalog"


# -- config.json --------------------------------------------------------------------------------

QWEN3_8B_CONFIG = {  # Qwen/Qwen3-8B config.json (the fields that matter, as on the hub)
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 4096,
    "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 40960,
    "tie_word_embeddings": False, "sliding_window": None, "use_sliding_window": False,
    "max_window_layers": 36, "torch_dtype": "bfloat16", "rms_norm_eps": 1e-06,
}

# google/gemma-3-4b-it config.json: the text_config omits what equals Gemma3TextConfig's
# defaults (heads 8, kv heads 4, head_dim 256, vocab 262208, 131072 positions, pattern 6).
GEMMA3_4B_CONFIG = {
    "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
    "boi_token_index": 255999, "eoi_token_index": 256000, "image_token_index": 262144,
    "mm_tokens_per_image": 256,
    "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                    "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024},
    "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
                      "model_type": "siglip_vision_model", "num_attention_heads": 16,
                      "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": False},
}

GEMMA3_1B_CONFIG = {  # google/gemma-3-1b-it config.json
    "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": 1152,
    "intermediate_size": 6912, "num_hidden_layers": 26, "num_attention_heads": 4,
    "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 262144, "max_position_embeddings": 32768,
    "sliding_window": 512, "sliding_window_pattern": 6, "query_pre_attn_scalar": 256,
}


def _same_architecture(a: catalog.ModelFacts, b: catalog.ModelFacts) -> None:
    for f in ARCH_FIELDS:
        assert getattr(a, f) == getattr(b, f), f
    assert abs(a.params - b.params) / b.params < 0.0005


def test_facts_from_qwen3_config_match_catalog():
    facts = facts_from_config(QWEN3_8B_CONFIG, model_id="Qwen/Qwen3-8B")
    _same_architecture(facts, model("Qwen/Qwen3-8B"))
    assert facts.source == "config.json"
    assert facts.name == "Qwen3-8B"


def test_facts_from_sparse_gemma3_text_config_use_class_defaults():
    facts = facts_from_config(GEMMA3_4B_CONFIG, model_id="google/gemma-3-4b-it")
    _same_architecture(facts, model("google/gemma-3-4b-it"))
    assert facts.vision_params == model("google/gemma-3-4b-it").vision_params
    assert facts.architecture == "Gemma3ForConditionalGeneration"


def test_facts_from_gemma3_1b_config_pattern_and_layer_types():
    facts = facts_from_config(GEMMA3_1B_CONFIG, model_id="google/gemma-3-1b-it")
    _same_architecture(facts, model("gemma-3-1b-it"))
    # Newer transformers write an explicit layer_types list instead of the pattern.
    types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(26)]
    cfg = {k: v for k, v in GEMMA3_1B_CONFIG.items() if k != "sliding_window_pattern"} | {"layer_types": types}
    assert facts_from_config(cfg).sliding_window_layers == 22


def test_facts_from_config_mistral_v01_style_window_applies_to_all_layers():
    cfg = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096,
           "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 32768,
           "sliding_window": 4096}
    facts = facts_from_config(cfg)
    assert (facts.sliding_window, facts.sliding_window_layers) == (4096, 32)
    assert facts.head_dim == 128  # hidden / heads when head_dim is absent
    assert not facts.tied_embeddings  # MistralConfig's default


def test_facts_from_config_window_not_smaller_than_context_is_ignored():
    cfg = {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": 3072,
           "intermediate_size": 8192, "num_hidden_layers": 32, "num_attention_heads": 24,
           "num_key_value_heads": 8, "vocab_size": 200064, "max_position_embeddings": 131072,
           "sliding_window": 262144, "tie_word_embeddings": True}
    facts = facts_from_config(cfg, model_id="microsoft/Phi-4-mini-instruct")
    _same_architecture(facts, model("Phi-4-mini-instruct"))


def test_facts_from_config_refuses_moe_and_missing_fields():
    moe = dict(QWEN3_8B_CONFIG, num_experts=128, architectures=["Qwen3MoeForCausalLM"])
    with pytest.raises(UnsupportedModelError, match="mixture-of-experts"):
        facts_from_config(moe)
    broken = {k: v for k, v in QWEN3_8B_CONFIG.items() if k != "intermediate_size"}
    with pytest.raises(UnsupportedModelError, match="intermediate_size"):
        facts_from_config(broken)


def test_facts_from_config_notes_prequantized_checkpoints():
    cfg = dict(QWEN3_8B_CONFIG, quantization_config={"quant_method": "awq", "bits": 4, "group_size": 128})
    assert facts_from_config(cfg).quantized_as == "awq"


def _fake_hub_cache(root: Path, repo: str, config: dict) -> None:
    """The huggingface_hub cache layout: models--org--name/{refs/main, snapshots/<sha>/config.json}."""
    base = root / ("models--" + repo.replace("/", "--"))
    sha = "0123456789abcdef0123456789abcdef01234567"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(sha)
    snap = base / "snapshots" / sha
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(config))


def test_fetch_config_reads_through_huggingface_hub(tmp_path):
    _fake_hub_cache(tmp_path, "acme/Tiny-Qwen", QWEN3_8B_CONFIG)
    cfg = fetch_config("acme/Tiny-Qwen", cache_dir=str(tmp_path), local_files_only=True)
    assert cfg["num_hidden_layers"] == 36
    facts = facts_from_config(cfg, model_id="acme/Tiny-Qwen")
    assert facts.tier == "Small" and facts.id == "acme/Tiny-Qwen"


def test_fetch_config_failure_is_clear_and_hides_the_token(tmp_path):
    with pytest.raises(UnknownModelError) as err:
        fetch_config("acme/absent", token="hf_SECRETSECRET", cache_dir=str(tmp_path), local_files_only=True)
    assert "acme/absent" in str(err.value)
    assert "hf_SECRETSECRET" not in str(err.value)


# -- GPUs --------------------------------------------------------------------------------------


def test_lookup_gpu_by_label_and_alias():
    l4 = lookup_gpu("NVIDIA-L4")
    assert l4.memory_mib == 23034 and l4.fp8 and l4.bf16
    assert lookup_gpu("l4") == l4
    t4 = lookup_gpu("T4")
    assert t4.product == "Tesla-T4" and not t4.bf16 and not t4.fp8
    assert lookup_gpu("NVIDIA-H100-80GB-HBM3").cc == (9, 0)


def test_lookup_gpu_mig_slice():
    mig = lookup_gpu("NVIDIA-A100-SXM4-40GB-MIG-3g.20gb")
    assert mig.mig_profile == "3g.20gb"
    assert 18 * 1024 < mig.memory_mib <= 19968  # a 3g.20gb slice exposes 19968 MiB
    assert mig.aliases == ()
    assert mig.compute_capability == "8.0"


def test_lookup_gpu_unknown_lists_known():
    with pytest.raises(UnknownGpuError, match="NVIDIA-L4"):
        lookup_gpu("NVIDIA-Imaginary-9000")


def test_gpu_table_covers_common_products():
    products = {g.product for g in catalog.list_gpus()}
    assert {"NVIDIA-L4", "NVIDIA-A10G", "Tesla-T4", "NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-SXM4-80GB",
            "NVIDIA-H100-80GB-HBM3", "NVIDIA-L40S", "NVIDIA-GeForce-RTX-4090"} <= products
    for g in catalog.list_gpus():
        assert g.bandwidth_gbps > 0 and g.memory_mib > 8 * 1024
        assert g.fp8 == (g.cc >= (8, 9))


def test_replace_keeps_facts_frozen():
    m = model("Qwen3-8B")
    with pytest.raises(AttributeError):
        m.layers = 1  # type: ignore[misc]
    assert replace(m, kv_heads=32).kv_heads == 32
