"""Exactly one weight set is fetched (item 5: Mistral repos ship consolidated.safetensors beside
the sharded model-*.safetensors), from every kind of source, and the bytes reported are those
of the one set (what the PVC sizing counts: one 16-bit copy of the parameters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fake_hub import FakeHub

from slm_quantizer import fetch

SHARDS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


def mistral_like(folder: Path) -> Path:
    """A Mistral-family layout: transformers shards + index, consolidated copy, extra folders."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    (folder / "params.json").write_text("{}")
    (folder / "tokenizer.json").write_text("{}")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": SHARDS[0], "b": SHARDS[1]}}))
    for i, name in enumerate(SHARDS):
        (folder / name).write_bytes(bytes([i]) * 1000)  # distinct contents: distinct blobs
    (folder / "consolidated.safetensors").write_bytes(b"c" * 2000)  # the same weights again
    (folder / "original").mkdir()
    (folder / "original" / "model.safetensors").write_bytes(b"o" * 2000)
    (folder / "pytorch_model.bin").write_bytes(b"p" * 2000)
    return folder


def test_select_files_takes_one_weight_set():
    listing = ["config.json", "consolidated.safetensors", *SHARDS, "model.safetensors.index.json",
               "original/model.safetensors", "onnx/model.onnx", "tokenizer.json", ".git/x.json"]
    assert fetch.select_files(listing) == ["config.json", *SHARDS, "model.safetensors.index.json", "tokenizer.json"]
    # One file: model.safetensors; a per-dtype variant beside it is another copy.
    assert fetch.select_files(["config.json", "model.safetensors", "model.fp32.safetensors"]) == \
        ["config.json", "model.safetensors"]
    # A folder with only another set (no transformers names) still gets that one set.
    only = ["config.json", "consolidated.safetensors"]
    assert fetch.select_files(only) == only


def test_local_source_counts_one_set(tmp_path):
    folder = mistral_like(tmp_path / "m")
    got = fetch.resolve(str(folder), None, cache_dir=tmp_path / "c", pvc_root=tmp_path, token=None)
    assert fetch.model_files(folder) == ["config.json", *SHARDS, "model.safetensors.index.json", "params.json",
                                         "tokenizer.json"]
    assert got.bytes == sum((folder / f).stat().st_size for f in fetch.model_files(folder))
    assert got.bytes < 2000 + 1000  # not the consolidated copy, not original/


def test_hub_download_fetches_one_set(tmp_path):
    folder = mistral_like(tmp_path / "repo")
    code = ("import json, sys; from pathlib import Path; from slm_quantizer import fetch; "
            "f = fetch.download('mistralai/tiny', None, Path(sys.argv[1]), None); "
            "print(json.dumps({'bytes': f.bytes, 'files': fetch.model_files(f.path)}))")
    with FakeHub("mistralai/tiny", folder, None) as hub:
        # A fresh process: huggingface_hub reads HF_ENDPOINT when it is imported.
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cache")], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    fetched = sorted(p.split("/resolve/", 1)[1].split("/", 1)[1] for m, p, _ in hub.requests
                     if m == "GET" and "/resolve/" in p)
    assert "consolidated.safetensors" not in fetched and "original/model.safetensors" not in fetched
    assert set(SHARDS) <= set(fetched)
    small = ("config.json", "model.safetensors.index.json", "params.json", "tokenizer.json")
    assert got["bytes"] == 2 * 1000 + sum(len((folder / f).read_bytes()) for f in small)
    assert got["files"] == ["config.json", *SHARDS, "model.safetensors.index.json", "params.json", "tokenizer.json"]
