"""Atomic artifacts: manifest as the COMPLETE marker, killed runs, reruns, tampering."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from quantizer_helpers import require

from slm_runtime import artifact
from slm_runtime.progress import TERMINATION_LIMIT, write_termination_message


def _publish(dest, files: dict[str, bytes]) -> dict:
    with artifact.ArtifactWriter(dest) as w:
        for name, data in files.items():
            (w.staging / name).parent.mkdir(parents=True, exist_ok=True)
            (w.staging / name).write_bytes(data)
        return w.publish({"format": "test", "type": "x"})


def test_publish_writes_manifest_with_checksums(tmp_path):
    dest = tmp_path / "a"
    manifest = _publish(dest, {"w.bin": b"abc", "sub/t.json": b"{}"})
    assert artifact.read_manifest(dest) == manifest
    assert {f["path"]: f["size"] for f in manifest["files"]} == {"sub/t.json": 2, "w.bin": 3}
    assert manifest["files"][1]["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert manifest["totalBytes"] == 5
    assert oct(dest.stat().st_mode & 0o777) == "0o755"
    assert artifact.verify(dest) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.lock", "a"]


def test_verify_detects_changed_missing_and_extra_files(tmp_path):
    dest = tmp_path / "a"
    _publish(dest, {"w.bin": b"abc", "x.bin": b"12345"})
    (dest / "w.bin").write_bytes(b"abd")
    (dest / "x.bin").unlink()
    (dest / "extra").write_text("?")
    problems = artifact.verify(dest)
    assert "w.bin: sha256 mismatch" in problems
    assert "x.bin: missing" in problems
    assert "extra: not in manifest" in problems


def test_failed_build_leaves_nothing(tmp_path):
    dest = tmp_path / "a"
    with pytest.raises(RuntimeError), artifact.ArtifactWriter(dest) as w:
        (w.staging / "half.bin").write_bytes(b"x" * 100)
        raise RuntimeError("killed half way")
    assert not dest.exists()
    assert not list(tmp_path.glob(".a.staging-*"))


def test_leftovers_of_a_killed_run_are_never_complete(tmp_path):
    dest = tmp_path / "a"
    # What SIGKILL leaves: a staging folder (even one with a manifest inside) and no artifact.
    stale = tmp_path / ".a.staging-abc123"
    stale.mkdir()
    (stale / "model.gguf").write_bytes(b"GGUF half")
    (stale / "manifest.json").write_text(json.dumps({"complete": True, "files": []}))
    assert artifact.read_manifest(dest) is None
    # A destination folder without a manifest (not ours, or damaged) is not trusted either.
    dest.mkdir()
    (dest / "model.gguf").write_bytes(b"junk")
    assert artifact.read_manifest(dest) is None
    with artifact.ArtifactWriter(dest) as w:
        assert w.complete is None
        assert not stale.exists(), "the next run clears stale staging folders"
        assert not dest.exists(), "an incomplete destination is moved aside"
        (w.staging / "model.gguf").write_bytes(b"GGUF good")
        w.publish({"format": "gguf"})
    assert artifact.verify(dest) == []


def test_termination_message_fits_the_kubernetes_limit(tmp_path):
    path = tmp_path / "term"
    write_termination_message(path, {"result": "Failed", "message": "x" * 10_000})
    data = json.loads(path.read_text())
    assert len(path.read_bytes()) <= TERMINATION_LIMIT
    assert data["result"] == "Failed" and data["message"].endswith("...")


@pytest.mark.slow
def test_killed_quantizer_then_rerun_then_noop(tiny, quantize, tmp_path):
    require("onnxruntime_genai")
    src = tiny("qwen3")
    out = tmp_path / "artifact"
    cmd = [sys.executable, "-m", "slm_quantizer", "--source", str(src), "--format", "onnx", "--type", "int4",
           "--output", str(out), "--termination-log", str(tmp_path / "term")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # kill it in the middle of the quantize stage
        if '"stage": "quantize"' in line:
            break
    time.sleep(2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    assert artifact.read_manifest(out) is None
    assert list(tmp_path.glob(".artifact.staging-*")), "the killed run left its staging folder"

    run = quantize(src, out, "onnx", "int4")
    assert run.rc == 0, run.stderr[-2000:]
    assert artifact.verify(out) == []
    assert not list(tmp_path.glob(".artifact.staging-*"))
    manifest_mtime = (out / "manifest.json").stat().st_mtime_ns

    started = time.monotonic()
    again = quantize(src, out, "onnx", "int4")
    assert again.rc == 0
    assert again.termination["result"] == "AlreadyComplete"
    assert "quantize" not in again.stages()
    assert (out / "manifest.json").stat().st_mtime_ns == manifest_mtime
    assert time.monotonic() - started < 30
