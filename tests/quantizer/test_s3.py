"""s3:// sources against a real S3 API on 127.0.0.1 (moto's server, IAM auth on)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from quantizer_helpers import require
from s3_server import S3Server, write_credentials

from slm_quantizer import fetch
from slm_runtime import artifact

EXTRA = {"llm/qwen3/pytorch_model.bin": b"pickle: never downloaded",
         "llm/qwen3/.cache/huggingface/config.json": b"{}",
         "llm/other/config.json": b"{}"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    require("boto3", "torch", "transformers")
    from quantizer_helpers import TRAIN_STEPS

    from slm_runtime.tiny_models import tiny_model

    model = tiny_model("qwen3", train_steps=TRAIN_STEPS)
    with S3Server() as server:
        server.upload_folder(model, "models", "llm/qwen3/", EXTRA)
        server.enforce_auth()
        server.model = model
        yield server


def _creds(s3, folder: Path, **override: str) -> Path:
    key_id, secret = s3.credentials
    d = write_credentials(folder, override.get("key_id", key_id), override.get("secret", secret), s3.url)
    return d


def _leaks(run, secret: str) -> bool:
    return secret in run.stdout + run.stderr + json.dumps(run.termination)


def test_s3_none_end_to_end(s3, quantize, tmp_path):
    creds = _creds(s3, tmp_path / "creds")
    out = tmp_path / "models" / "artifacts" / "none-bf16"
    run = quantize("s3://models/llm/qwen3", out, "none", "bf16", "--s3-credentials-dir", str(creds))
    assert run.rc == 0, run.stderr[-3000:]
    manifest = artifact.read_manifest(out)
    assert artifact.verify(out) == []
    names = {f["path"] for f in manifest["files"]}
    model_files = {p.name for p in s3.model.iterdir() if p.is_file()}
    assert names == model_files  # no pickle, no hidden folder, nothing from another prefix
    for name in names:
        assert (out / name).read_bytes() == (s3.model / name).read_bytes()
    assert manifest["source"] == "s3://models/llm/qwen3"
    assert manifest["resolvedRevision"].startswith("s3-etags-sha256:")
    # Single-part uploads: the ETag is the md5, so every file was checked.
    assert manifest["verification"]["checksums"] == {"verified": len(names), "notPublished": 0}
    assert manifest["sample"]
    assert not _leaks(run, s3.credentials[1])
    assert s3.credentials[1] not in (out / "manifest.json").read_text()
    downloads = [e for e in run.events if e["stage"] == "download"]
    assert downloads[0]["bytes"] == 0 and downloads[-1]["bytes"] == downloads[-1]["total"] == manifest["sourceBytes"]

    # A rerun into another artifact with the same download cache fetches nothing again.
    again = quantize("s3://models/llm/qwen3", out.parent / "fp8", "fp8", "fp8", "--s3-credentials-dir", str(creds),
                     "--sample-max-params", "0")
    assert again.rc == 0, again.stderr[-3000:]
    first = next(e for e in again.events if e["stage"] == "download")
    assert first["bytes"] == first["total"] > 0
    assert artifact.read_manifest(out.parent / "fp8")["quantizedBy"] == "vllm-at-load"


def test_s3_resume_refetches_truncated_and_rejects_corrupt(s3, tmp_path):
    creds = _creds(s3, tmp_path / "creds")
    cache = tmp_path / "cache"
    got = fetch.resolve("s3://models/llm/qwen3/", None, cache_dir=cache, pvc_root=tmp_path, token=None,
                        s3_credentials_dir=creds)
    weights = got.path / "model.safetensors"
    good = weights.read_bytes()
    (got.path / "stale.json").write_text("{}")  # gone from the bucket: removed on the next run
    weights.write_bytes(good[: len(good) // 2])  # a killed download: wrong size, fetched again
    got = fetch.resolve("s3://models/llm/qwen3", None, cache_dir=cache, pvc_root=tmp_path, token=None,
                        s3_credentials_dir=creds)
    assert weights.read_bytes() == good and not (got.path / "stale.json").exists()
    assert fetch.verify_checksums(got)["verified"] == len(fetch.model_files(got.path))
    # Same size, different bytes: the size check keeps it, the md5 check catches and removes it.
    weights.write_bytes(bytes(len(good)))
    got = fetch.resolve("s3://models/llm/qwen3", None, cache_dir=cache, pvc_root=tmp_path, token=None,
                        s3_credentials_dir=creds)
    with pytest.raises(fetch.SourceError, match=r"model\.safetensors: md5 checksum mismatch"):
        fetch.verify_checksums(got)
    assert not weights.exists()


@pytest.mark.parametrize("case", ["wrong-secret", "unknown-key"])
def test_s3_bad_credentials_exit_2_without_the_secret(s3, quantize, tmp_path, case):
    secret = "wrongSECRET/0123456789abcdefghijklmnopqrstuv"
    creds = (_creds(s3, tmp_path / "creds", secret=secret) if case == "wrong-secret"
             else _creds(s3, tmp_path / "creds", key_id="AKIAUNKNOWN000000000", secret=secret))
    out = tmp_path / "artifact"
    run = quantize("s3://models/llm/qwen3", out, "none", "bf16", "--s3-credentials-dir", str(creds))
    assert run.rc == 2 and run.termination["result"] == "SourceError"
    code = "SignatureDoesNotMatch" if case == "wrong-secret" else "InvalidAccessKeyId"
    assert code in run.termination["message"] and "credentials Secret" in run.termination["message"]
    assert not _leaks(run, secret) and not _leaks(run, s3.credentials[1])
    assert not out.exists()


def test_s3_credentials_folder_problems(s3, quantize, tmp_path):
    run = quantize("s3://models/llm/qwen3", tmp_path / "a", "none", "bf16",
                   "--s3-credentials-dir", str(tmp_path / "missing"))
    assert run.rc == 2 and "does not exist" in run.termination["message"]
    creds = _creds(s3, tmp_path / "creds")
    (creds / "AWS_SECRET_ACCESS_KEY").unlink()
    run = quantize("s3://models/llm/qwen3", tmp_path / "a", "none", "bf16", "--s3-credentials-dir", str(creds))
    assert run.rc == 2 and "lacks AWS_SECRET_ACCESS_KEY" in run.termination["message"]
    # No model under the prefix: a clear source error, not an empty artifact.
    run = quantize("s3://models/nothing-here", tmp_path / "a", "none", "bf16",
                   "--s3-credentials-dir", str(_creds(s3, tmp_path / "c2")))
    assert run.rc == 2 and "has no config.json" in run.termination["message"]
    assert not (tmp_path / "a").exists()
