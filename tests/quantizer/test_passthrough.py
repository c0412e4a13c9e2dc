"""--format none / fp8: fetch + verify + publish the HF folder (no conversion), end to end."""

from __future__ import annotations

import json
import shutil

import pytest
from fake_hub import FakeHub
from quantizer_helpers import require

from slm_quantizer import passthrough
from slm_runtime import artifact


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _manifest_ok(run, out, fmt: str, qtype: str) -> dict:
    assert run.rc == 0, run.stderr[-3000:]
    manifest = artifact.read_manifest(out)
    assert manifest is not None and (manifest["format"], manifest["type"]) == (fmt, qtype)
    assert artifact.verify(out) == []
    ppl = manifest["perplexity"]
    assert (ppl["reference"], ppl["quantized"], ppl["increasePct"]) == (None, None, None)
    assert ppl["skipped"].startswith("not measured")
    assert run.termination["result"] == "Succeeded"
    assert run.termination["perplexityAfter"] is None
    assert run.termination["totalBytes"] == manifest["totalBytes"] == manifest["sourceBytes"]
    assert not [p for p in out.parent.iterdir() if ".staging-" in p.name]
    return manifest


def test_none_end_to_end(tiny, quantize, tmp_path):
    src = _copy(tiny("qwen3"), tmp_path / "src")
    (src / "pytorch_model.bin").write_bytes(b"pickle, never taken")
    (src / ".git").mkdir()
    (src / ".git" / "config.json").write_text("{}")
    out = tmp_path / "models" / "none-bf16"
    run = quantize(src, out, "none", "bf16")
    manifest = _manifest_ok(run, out, "none", "bf16")
    names = {f["path"] for f in manifest["files"]}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "pytorch_model.bin" not in names and not any(n.startswith(".git") for n in names)
    # The artifact is the source, byte for byte, and a copy (a user's folder is never hard-linked).
    for name in names:
        assert (out / name).read_bytes() == (src / name).read_bytes()
        assert (out / name).stat().st_nlink == 1
        assert (out / name).stat().st_mode & 0o044 == 0o044  # readable by the serving pod's uid
    from safetensors.torch import load_file

    params = sum(t.numel() for t in load_file(src / "model.safetensors").values())
    ver = manifest["verification"]
    assert ver["parameters"] == params
    assert ver["generation"].startswith("8 tokens generated")
    assert ver["tokenizer"] and ver["config"] == "parsed"
    assert isinstance(manifest["sample"], str) and manifest["sample"].strip()
    assert manifest["sourceDtype"] == json.loads((src / "config.json").read_text()).get("dtype")
    assert "quantizedBy" in manifest and manifest["quantizedBy"] is None
    assert {"verify", "gate", "done"} <= set(run.stages())
    again = quantize(src, out, "none", "bf16")
    assert again.rc == 0 and again.termination["result"] == "AlreadyComplete"


def test_fp8_is_fetch_only_and_quantized_by_vllm(tiny, quantize, tmp_path):
    out = tmp_path / "fp8"
    # --sample-max-params below the model's size: the CPU generation is skipped, and says so.
    run = quantize(tiny("phi3"), out, "fp8", "fp8", "--target", "cuda", "--sample-max-params", "1000")
    manifest = _manifest_ok(run, out, "fp8", "fp8")
    assert manifest["quantizedBy"] == "vllm-at-load"
    assert manifest["target"] == "cuda"
    assert "vLLM" in manifest["perplexity"]["skipped"]
    assert manifest["sample"] is None
    assert manifest["verification"]["generation"].startswith("skipped:")
    assert manifest["verification"]["parameters"] > 1000
    assert "model.safetensors" in {f["path"] for f in manifest["files"]}


def test_fp8_refuses_an_already_quantized_model(tiny, quantize, tmp_path):
    src = _copy(tiny("qwen3"), tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "awq", "bits": 4}
    (src / "config.json").write_text(json.dumps(config))
    out = tmp_path / "fp8"
    run = quantize(src, out, "fp8", "fp8")
    assert run.rc == 4 and run.termination["result"] == "Unsupported"
    assert "already quantized (awq)" in run.termination["message"]
    assert not out.exists()


def test_broken_sources_fail_with_exit_2(tiny, quantize, tmp_path):
    src = _copy(tiny("gemma3"), tmp_path / "src")
    (src / "tokenizer.json").write_text("{not json")
    out = tmp_path / "none"
    run = quantize(src, out, "none", "fp16", "--sample-max-params", "0")
    assert run.rc == 2 and run.termination["result"] == "SourceError", run.stderr[-2000:]
    assert "tokenizer does not load" in run.termination["message"]
    assert not out.exists()


def test_check_files_finds_missing_shards_and_pickles(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(passthrough.InvalidModel, match=r"no \*\.safetensors"):
        passthrough.check_files(tmp_path, ["config.json"])
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    files = ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors"]
    with pytest.raises(passthrough.InvalidModel, match="model-00002-of-00002"):
        passthrough.check_files(tmp_path, files)
    assert passthrough.check_files(tmp_path, [*files, "model-00002-of-00002.safetensors"]) == {}
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(passthrough.InvalidModel, match=r"config\.json"):
        passthrough.check_files(tmp_path, files)


def test_hub_none_verifies_published_checksums(tiny, quantize, tmp_path):
    require("huggingface_hub")
    src = tiny("qwen3")
    env = {"HF_HUB_DISABLE_TELEMETRY": "1"}
    with FakeHub("acme/tiny", src, None) as hub:
        out = tmp_path / "models" / "none"
        run = quantize("hf://acme/tiny", out, "none", "bf16", "--revision", "main", "--sample-max-params", "0",
                       env={**env, "HF_ENDPOINT": hub.url})
    manifest = _manifest_ok(run, out, "none", "bf16")
    n_files = len(manifest["files"])
    assert manifest["verification"]["checksums"] == {"verified": n_files, "notPublished": 0}
    # Linked from the download cache on the same volume: no second copy of the weights.
    assert (out / "model.safetensors").stat().st_nlink == 2

    with FakeHub("acme/tiny", src, None, wrong_checksum="model.safetensors") as hub:
        cache = tmp_path / "cache2"
        bad = quantize("hf://acme/tiny", tmp_path / "models" / "bad", "none", "bf16", "--download-dir", str(cache),
                       env={**env, "HF_ENDPOINT": hub.url})
    # The mismatching file is removed: a retry fetches it again (exit 5, retried by the Job).
    assert bad.rc == 5 and bad.termination["result"] == "SourceUnavailable"
    assert "model.safetensors: sha256 checksum mismatch" in bad.termination["message"]
    assert not (tmp_path / "models" / "bad").exists()
    # The bad file was removed from the cache, so a rerun downloads it again.
    assert not [p for p in cache.rglob("model.safetensors") if p.exists()]
