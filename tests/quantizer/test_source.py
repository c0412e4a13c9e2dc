"""Sources and secrets: hub download through a local fake hub, token files, pvc paths."""

from __future__ import annotations

import json

import pytest
from fake_hub import COMMIT, FakeHub
from quantizer_helpers import require

from slm_quantizer import fetch
from slm_runtime.secrets import SecretFileError, read_secret_file

TOKEN = "hf_testtoken_0123456789abcdef"


def test_token_file_is_read_and_validated(tmp_path):
    f = tmp_path / "token"
    f.write_text(f"  {TOKEN}\n")
    assert read_secret_file(f) == TOKEN
    assert read_secret_file(None) is None
    with pytest.raises(SecretFileError, match="does not exist"):
        read_secret_file(tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretFileError, match="empty"):
        read_secret_file(tmp_path / "empty")


def test_pvc_and_path_sources(tmp_path):
    model = tmp_path / "claims" / "models-pvc" / "qwen"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    got = fetch.resolve("pvc://models-pvc/qwen", "v1", cache_dir=tmp_path / "c", pvc_root=tmp_path / "claims",
                        token=None)
    assert got.path == model and got.bytes == 2
    assert fetch.resolve(str(model), None, cache_dir=tmp_path, pvc_root=tmp_path, token=None).path == model
    with pytest.raises(fetch.SourceError, match=r"no config\.json"):
        fetch.resolve(str(tmp_path), None, cache_dir=tmp_path, pvc_root=tmp_path, token=None)
    with pytest.raises(fetch.SourceError, match="unsupported source"):
        fetch.resolve("gs://bucket/x", None, cache_dir=tmp_path, pvc_root=tmp_path, token=None)


def test_missing_token_file_fails_clearly(quantize, tmp_path):
    run = quantize("hf://acme/tiny", tmp_path / "a", "gguf", "Q4_K_M", "--token-file", str(tmp_path / "nope"))
    assert run.rc == 2
    assert run.termination["result"] == "SourceError"
    assert "does not exist" in run.termination["message"]


@pytest.mark.slow
def test_hub_download_with_token_never_printed(tiny, quantize, tmp_path):
    require("onnxruntime_genai")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    out = tmp_path / "models" / "artifact"
    with FakeHub("acme/tiny", tiny("qwen3"), TOKEN) as hub:
        run = quantize("hf://acme/tiny", out, "onnx", "int4", "--revision", "main", "--token-file", str(token_file),
                       env={"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1"})
        # Wrong token: the hub refuses, the Job fails with a clear message and no token in it.
        bad = tmp_path / "bad-token"
        bad.write_text("hf_wrong_" + TOKEN)
        denied = quantize("hf://acme/tiny", tmp_path / "models" / "other", "onnx", "int4",
                          "--token-file", str(bad), "--download-dir", str(tmp_path / "empty-cache"),
                          env={"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1"})
    assert run.rc == 0, run.stderr[-3000:]
    files = [p for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p]
    assert any(p.endswith("model.safetensors") for p in files)
    assert all(a == f"Bearer {TOKEN}" for _, p, a in hub.requests if p.startswith("/acme/tiny/"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resolvedRevision"] == COMMIT and manifest["source"] == "hf://acme/tiny"
    downloads = [e for e in run.events if e["stage"] == "download"]
    assert downloads and downloads[-1]["bytes"] == downloads[-1]["total"] > 0
    assert denied.rc == 2 and denied.termination["result"] == "SourceError"
    for r in (run, denied):
        blob = r.stdout + r.stderr + json.dumps(r.termination)
        assert TOKEN not in blob
    assert TOKEN not in (out / "manifest.json").read_text()
