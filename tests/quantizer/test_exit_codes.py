"""The quantizer's exit codes tell permanent from transient failures, and the Job's
podFailurePolicy (render) fails at once on exactly the permanent ones (item 7)."""

from __future__ import annotations

import json

import pytest

from slm_operator.render.workloads import QUANTIZER_PERMANENT_EXIT_CODES, pod_failure_policy
from slm_quantizer import cli, fetch, gguf, onnx, passthrough, s3
from slm_runtime.secrets import SecretFileError


def _main(monkeypatch, tmp_path, exc: BaseException) -> tuple[int, dict]:
    def boom(args):
        raise exc

    monkeypatch.setattr(cli, "run", boom)
    log = tmp_path / "termination-log"
    rc = cli.main(["--source", "hf://a/b", "--format", "gguf", "--type", "Q4_K_M", "--output",
                   str(tmp_path / "out"), "--termination-log", str(log)])
    return rc, json.loads(log.read_text())


class _Response:
    def __init__(self, status: int) -> None:
        self.status_code = status


class _HTTPError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"{status}")
        self.response = _Response(status)


class RepositoryNotFoundError(Exception):
    pass


class RevisionNotFoundError(Exception):
    pass


CASES = [
    (cli.GateFailed("perplexity rose 12%"), "GateFailed", 3),
    (cli.Unsupported("trust remote code"), "Unsupported", 4),
    (passthrough.Unsupported("already quantized"), "Unsupported", 4),
    (fetch.SourceError("hub source must be hf://<org>/<name>"), "SourceError", 2),
    (fetch.SourceError("download failed: 404", transient=False), "SourceError", 2),
    (SecretFileError("token file is empty"), "SourceError", 2),
    (passthrough.InvalidModel("missing shard"), "SourceError", 2),
    (fetch.SourceError("download failed: connection reset", transient=True), "SourceUnavailable", 5),
    (gguf.GgufError("llama.cpp conversion failed (exit 1)"), "ConversionFailed", 6),
    (onnx.OnnxError("onnxruntime-genai builder failed (exit 1)"), "ConversionFailed", 6),
    (RuntimeError("something unexpected"), "Failed", 1),
    (OSError(28, "No space left on device"), "DiskFull", 7),
    (gguf.GgufError("llama.cpp quantize failed (exit 1): write error: No space left on device"), "DiskFull", 7),
    (fetch.SourceError("download failed: [Errno 28] No space left on device", transient=True), "DiskFull", 7),
    (gguf.GgufError("convert_hf_to_gguf.py failed (exit 1): OSError: 65536 requested and 6416 written"),
     "DiskFull", 7),
]


@pytest.mark.parametrize(("exc", "result", "code"), CASES, ids=[c[1] + "-" + type(c[0]).__name__ for c in CASES])
def test_each_failure_has_its_exit_code_and_result(monkeypatch, tmp_path, exc, result, code):
    rc, summary = _main(monkeypatch, tmp_path, exc)
    assert (rc, summary["result"]) == (code, result)
    assert cli.EXIT_CODES[result] == code
    assert (code in cli.PERMANENT_EXIT_CODES) == (result in ("GateFailed", "Unsupported", "SourceError",
                                                               "ConversionFailed", "DiskFull"))


def test_download_errors_are_classified():
    assert not fetch.transient_download_error(RepositoryNotFoundError("401"))
    assert not fetch.transient_download_error(RevisionNotFoundError("no-such-branch"))
    for status in (401, 403, 404):
        assert not fetch.transient_download_error(_HTTPError(status)), status
    for status in (408, 429, 500, 502, 503):
        assert fetch.transient_download_error(_HTTPError(status)), status
    assert fetch.transient_download_error(ConnectionResetError("reset by peer"))
    assert fetch.transient_download_error(TimeoutError("read timed out"))


def test_s3_errors_are_classified():
    class ClientError(Exception):
        def __init__(self, code: str) -> None:
            super().__init__(code)
            self.response = {"Error": {"Code": code}}

    for code in ("AccessDenied", "NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        assert not s3._error(ClientError(code), "listing", {}).transient, code
    for code in ("SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"):
        assert s3._error(ClientError(code), "listing", {}).transient, code
    assert s3._error(ConnectionError("endpoint unreachable"), "listing", {}).transient


def test_the_job_fails_at_once_on_exactly_the_permanent_codes():
    assert sorted(QUANTIZER_PERMANENT_EXIT_CODES) == sorted(cli.PERMANENT_EXIT_CODES)
    rules = pod_failure_policy()["rules"]
    fail = next(r for r in rules if r["action"] == "FailJob")
    assert fail["onExitCodes"] == {"containerName": "quantize", "operator": "In",
                                   "values": sorted(cli.PERMANENT_EXIT_CODES)}
    retried = set(cli.EXIT_CODES.values()) - set(cli.PERMANENT_EXIT_CODES)
    assert retried == {cli.EXIT_FAILED, cli.EXIT_SOURCE_UNAVAILABLE}
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules


def test_a_full_volume_says_what_it_holds_and_what_the_job_needs(monkeypatch, tmp_path):
    """DiskFull, whatever raised it, carries the volume's capacity and free bytes, the source's
    bytes (the download cache) and the estimate of what the Job needs (diskspace.bytes_needed)."""
    cache = tmp_path / ".hf-cache" / "blobs"
    cache.mkdir(parents=True)
    (cache / "weights").write_bytes(b"x" * 1000)
    (cache / "link").symlink_to(cache / "weights")  # the hub's snapshot links are not counted twice
    rc, summary = _main(monkeypatch, tmp_path, OSError(28, "No space left on device"))
    assert (rc, summary["result"]) == (7, "DiskFull")
    assert summary["sourceBytes"] == 1000
    assert summary["bytesNeeded"] == 3600  # gguf: source + F16 reference + artifact, x1.2
    assert 0 < summary["bytesFree"] <= summary["bytesCapacity"]
    assert "volume is full" in summary["message"] and "needs about 1 MiB" in summary["message"]


def test_disk_full_is_recognised_through_wrapping():
    from slm_quantizer import diskspace

    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as inner:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed") from inner
    except RuntimeError as outer:
        assert diskspace.is_disk_full(outer)
    assert not diskspace.is_disk_full(OSError(13, "Permission denied"))
    assert diskspace.bytes_needed(100, "none") == 120 and diskspace.bytes_needed(100, "onnx") == 240
