"""A Job pod killed half-way through a weight file: the next one continues the file with an HTTP
Range request instead of fetching it from byte 0 (issue 18 item 5; fetch._resume_blobs), and a
part that does not check out is fetched again whole. Against the local hub server (e2e/hubserver.py)
in a fresh process (huggingface_hub reads HF_ENDPOINT when it is imported). The real-node form,
a SIGKILLed quantizer pod: e2e/test_realnode_faults.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from fake_hub import FakeHub

from slm_quantizer import fetch

REPO = "slm-e2e/resume"
SIZE = 3 << 20
CUT = 1_234_567


def _repo(folder: Path) -> bytes:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    (folder / "tokenizer.json").write_text("{}")
    weights = os.urandom(SIZE)
    (folder / "model.safetensors").write_bytes(weights)
    return weights


def _download(hub: FakeHub, cache: Path) -> list[str]:
    # sys.modules["httpx"] = None: the quantizer image has no httpx (huggingface_hub uses httpx2).
    code = ("import sys; sys.modules['httpx'] = None; from pathlib import Path; from slm_quantizer import fetch; "
            "fetch.download(sys.argv[1], None, Path(sys.argv[2]), None)")
    out = subprocess.run([sys.executable, "-c", code, REPO, str(cache)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.splitlines()


def _blobs(cache: Path) -> Path:
    return cache / "models--slm-e2e--resume" / "blobs"


def test_a_killed_download_resumes_from_the_part_it_left(tmp_path: Path) -> None:
    weights = _repo(tmp_path / "repo")
    digest = hashlib.sha256(weights).hexdigest()
    cache = tmp_path / "cache"
    blobs = _blobs(cache)
    blobs.mkdir(parents=True)
    (blobs / f"{digest}{fetch.PART_SUFFIX}").write_bytes(weights[:CUT])  # what the killed pod wrote
    stale = blobs / f"{digest}.0123abcd.incomplete"  # huggingface_hub's own part from an older pod
    stale.write_bytes(b"x" * 1000)
    old = time.time() - 2 * fetch.STALE_PART_S
    os.utime(stale, (old, old))
    with FakeHub(REPO, tmp_path / "repo", None) as hub:
        lines = _download(hub, cache)
    weight_gets = [rng for path, rng in hub.file_gets if path == "model.safetensors"]
    assert weight_gets == [f"bytes={CUT}-"], weight_gets  # once, from where the part ended
    snap = next((cache / "models--slm-e2e--resume" / "snapshots").iterdir())
    assert (snap / "model.safetensors").read_bytes() == weights
    assert not stale.exists() and not list(blobs.glob(f"*{fetch.PART_SUFFIX}"))
    assert any(f'"resumedFrom": {CUT}' in line for line in lines), lines


def test_a_part_that_does_not_check_out_is_fetched_again(tmp_path: Path) -> None:
    weights = _repo(tmp_path / "repo")
    digest = hashlib.sha256(weights).hexdigest()
    cache = tmp_path / "cache"
    _blobs(cache).mkdir(parents=True)
    (_blobs(cache) / f"{digest}{fetch.PART_SUFFIX}").write_bytes(b"\0" * CUT)  # not the file's first bytes
    with FakeHub(REPO, tmp_path / "repo", None) as hub:
        _download(hub, cache)
    snap = next((cache / "models--slm-e2e--resume" / "snapshots").iterdir())
    assert (snap / "model.safetensors").read_bytes() == weights
    assert [rng for path, rng in hub.file_gets if path == "model.safetensors"] == [f"bytes={CUT}-", None]


def test_a_complete_blob_is_not_fetched_again(tmp_path: Path) -> None:
    _repo(tmp_path / "repo")
    cache = tmp_path / "cache"
    with FakeHub(REPO, tmp_path / "repo", None) as hub:
        _download(hub, cache)
        _download(hub, cache)
    assert [rng for path, rng in hub.file_gets if path == "model.safetensors"] == [None]
