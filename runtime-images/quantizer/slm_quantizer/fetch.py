"""Resolve --source to a local folder: hub download (resumable, pinned, filtered) or a mounted path.

Sources:
    hf://<org>/<name>        Hugging Face hub repo, at --revision (a commit sha, tag or branch)
    pvc://<claim>/<subpath>  a PersistentVolumeClaim mounted by the Job at <pvc_root>/<claim>
    /abs/path, file:///abs   a folder already on disk
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from slm_runtime import progress
from slm_runtime.secrets import redact

# Only what conversion needs: configs, weights, tokenizer files. No *.bin/*.pt pickles.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]


class SourceError(RuntimeError):
    """The source cannot be resolved or downloaded (message is safe to show: no token)."""


@dataclass(frozen=True)
class Fetched:
    path: Path
    resolved_revision: str | None
    bytes: int


def _folder_bytes(folder: Path, follow_links: bool = False) -> int:
    """Bytes under folder. The hub cache holds blobs plus snapshot symlinks to them: while
    downloading count the blobs; for a snapshot folder follow the links."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and (follow_links or not p.is_symlink()))


def _expected_bytes(repo: str, revision: str | None, token: str | None) -> tuple[int | None, str | None]:
    """Total size of the files we will download and the commit sha, from the hub's metadata."""
    from fnmatch import fnmatch

    from huggingface_hub import HfApi

    try:
        info = HfApi().model_info(repo, revision=revision, token=token, files_metadata=True)
    except Exception:  # metadata only feeds progress; the download reports real errors
        return None, None
    total = sum(s.size or 0 for s in info.siblings or []
                if any(fnmatch(s.rfilename, pat) for pat in ALLOW_PATTERNS))
    return total or None, info.sha


def download(repo: str, revision: str | None, cache_dir: Path, token: str | None) -> Fetched:
    """snapshot_download into cache_dir (on the output volume, so a restarted Job resumes)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # progress goes out as JSON lines instead
    cache_dir.mkdir(parents=True, exist_ok=True)
    total, sha = _expected_bytes(repo, revision, token)
    progress.emit("download", repo=repo, revision=revision, bytes=_folder_bytes(cache_dir), total=total)
    done = threading.Event()

    def report() -> None:
        while not done.wait(2.0):
            progress.emit("download", bytes=_folder_bytes(cache_dir), total=total)

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    started = time.monotonic()
    try:
        path = snapshot_download(repo_id=repo, revision=revision, cache_dir=str(cache_dir), token=token,
                                 allow_patterns=ALLOW_PATTERNS)
    except Exception as exc:
        raise SourceError(f"download of {repo}@{revision or 'default'} failed: "
                          f"{type(exc).__name__}: {redact(str(exc), token)}") from None
    finally:
        done.set()
        reporter.join()
    size = _folder_bytes(Path(path), follow_links=True)
    progress.emit("download", bytes=size, total=total or size, seconds=round(time.monotonic() - started, 2))
    return Fetched(Path(path), sha or Path(path).name, size)


def resolve(source: str, revision: str | None, *, cache_dir: Path, pvc_root: Path, token: str | None) -> Fetched:
    if source.startswith("hf://"):
        repo = source[len("hf://"):].strip("/")
        if repo.count("/") != 1:
            raise SourceError(f"hub source must be hf://<org>/<name>, got {source!r}")
        return download(repo, revision, cache_dir, token)
    if source.startswith("pvc://"):
        claim, _, sub = source[len("pvc://"):].partition("/")
        path = pvc_root / claim / sub
    elif source.startswith("file://"):
        path = Path(source[len("file://"):])
    elif source.startswith("/"):
        path = Path(source)
    else:
        raise SourceError(f"unsupported source {source!r}: use hf://org/name, pvc://claim/path or a path")
    if not (path / "config.json").is_file():
        raise SourceError(f"{path} has no config.json: not a Hugging Face model folder")
    return Fetched(path, revision, _folder_bytes(path, follow_links=True))
