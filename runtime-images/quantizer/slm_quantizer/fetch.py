"""Resolve --source to a local folder: hub download (resumable, pinned, filtered) or a mounted path.

Sources:
    hf://<org>/<name>        Hugging Face hub repo, at --revision (a commit sha, tag or branch)
    s3://<bucket>/<prefix>   an S3-compatible bucket (see s3.py; credentials from mounted files)
    pvc://<claim>/<subpath>  a PersistentVolumeClaim mounted by the Job at <pvc_root>/<claim>
    /abs/path, file:///abs   a folder already on disk
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from slm_runtime import progress
from slm_runtime.secrets import redact

# Only what conversion needs: configs, weights, tokenizer files. No *.bin/*.pt pickles.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]
# Exactly one weight set: the one transformers (and vLLM, llama.cpp's converter, the ONNX
# builder) loads from the folder's top level: model.safetensors, or the shards its index
# names (model-00001-of-00004.safetensors ...). Repos also ship other copies of the same
# weights: Mistral's consolidated.safetensors beside the shards, original/ or onnx/ folders,
# per-dtype variants; taking them doubles the download (27 GiB into a 17 GiB claim).
TRANSFORMERS_WEIGHTS = ["model.safetensors", "model-[0-9]*-of-[0-9]*.safetensors"]
FETCH_PATTERNS = [p for p in ALLOW_PATTERNS if p != "*.safetensors"] + TRANSFORMERS_WEIGHTS


class SourceError(RuntimeError):
    """The source cannot be resolved or downloaded (message is safe to show: no token).

    transient: a rerun may succeed (network trouble, hub throttling or server errors, a
    checksum mismatch whose file was removed); the CLI exits with a retried code then."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def transient_download_error(exc: BaseException) -> bool:
    """Whether a hub download error may go away on a retry.

    Permanent: the repo, revision or file does not exist, or the token may not read it
    (401/403/404, gated). Transient: connection errors, timeouts, 408/429/5xx.
    """
    names = {type(e).__name__ for e in (exc, exc.__cause__, exc.__context__) if e is not None}
    if names & {"RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError", "EntryNotFoundError",
                "RemoteEntryNotFoundError", "DisabledRepoError", "LocalEntryNotFoundError"}:
        return "LocalEntryNotFoundError" in names and "offline" not in str(exc).lower()
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):
        return status in (408, 425, 429) or status >= 500
    return True  # connection reset, timeout, DNS: the network, not the request


@dataclass(frozen=True)
class Fetched:
    path: Path
    resolved_revision: str | None
    bytes: int
    # relative path -> (algorithm, hex digest) the source publishes: "sha256" (hub LFS files),
    # "git-sha1" (hub git blobs), "md5" (single-part S3 ETags). Checked by verify_checksums().
    checksums: dict[str, tuple[str, str]] = field(default_factory=dict)


def allowed(rel: str) -> bool:
    """Whether a relative path is a model file we take (ALLOW_PATTERNS, no hidden parts)."""
    return not any(part.startswith(".") for part in rel.split("/")) and any(fnmatch(rel, p) for p in ALLOW_PATTERNS)


def _is_weights(rel: str) -> bool:
    return rel.endswith(".safetensors")


def select_files(rels: list[str]) -> list[str]:
    """The files we take from a listing: allowed() ones, with exactly one weight set.

    Weights: the top-level transformers set (TRANSFORMERS_WEIGHTS) when there is one; else
    the top-level *.safetensors (a folder of one other set, e.g. only consolidated.safetensors);
    never weights in subfolders. Sorted, '/'-separated.
    """
    rels = [r for r in rels if allowed(r)]
    weights = [r for r in rels if _is_weights(r) and "/" not in r]
    chosen = [r for r in weights if any(fnmatch(r, p) for p in TRANSFORMERS_WEIGHTS)] or weights
    return sorted(r for r in rels if not _is_weights(r) or r in chosen)


def model_files(folder: Path) -> list[str]:
    """The files we take under folder (select_files; relative, sorted); links are followed."""
    return select_files([p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()])


def _digest(path: Path, algo: str) -> str:
    h = hashlib.sha1() if algo == "git-sha1" else hashlib.new(algo)
    if algo == "git-sha1":  # git hashes "blob <size>\0" + content
        h.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        while block := fh.read(4 << 20):
            h.update(block)
    return h.hexdigest()


def verify_checksums(fetched: Fetched) -> dict[str, int]:
    """Check every downloaded file the source published a checksum for. A mismatching file is
    deleted from the download cache (so a rerun fetches it again) and the fetch fails."""
    files = model_files(fetched.path)
    checked = 0
    for rel in files:
        if rel not in fetched.checksums:
            continue
        algo, want = fetched.checksums[rel]
        path = (fetched.path / rel).resolve()
        if _digest(path, algo) != want:
            path.unlink(missing_ok=True)
            raise SourceError(f"{rel}: {algo} checksum mismatch after download (file removed; rerun to fetch "
                              "it again)", transient=True)
        checked += 1
    summary = {"verified": checked, "notPublished": len(files) - checked}
    progress.emit("verify", checksums=summary)
    return summary


def _folder_bytes(folder: Path, follow_links: bool = False) -> int:
    """Bytes under folder. The hub cache holds blobs plus snapshot symlinks to them: while
    downloading count the blobs; for a snapshot folder follow the links."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and (follow_links or not p.is_symlink()))


def _hub_metadata(repo: str, revision: str | None, token: str | None
                  ) -> tuple[int | None, str | None, dict[str, tuple[str, str]], list[str] | None, dict[str, int]]:
    """Total size of the files we will download, the commit sha, the published checksums, the
    files to download (select_files of the repo's listing; None: no listing) and their sizes."""
    from huggingface_hub import HfApi

    try:
        info = HfApi().model_info(repo, revision=revision, token=token, files_metadata=True)
    except Exception:  # metadata feeds progress and checks; the download reports real errors
        return None, None, {}, None, {}
    chosen = set(select_files([s.rfilename for s in info.siblings or []]))
    siblings = [s for s in info.siblings or [] if s.rfilename in chosen]
    checksums: dict[str, tuple[str, str]] = {}
    for s in siblings:
        if s.lfs is not None and getattr(s.lfs, "sha256", None):
            checksums[s.rfilename] = ("sha256", s.lfs.sha256)
        elif s.blob_id:
            checksums[s.rfilename] = ("git-sha1", s.blob_id)
    sizes = {s.rfilename: s.size for s in siblings if s.size}
    return sum(s.size or 0 for s in siblings) or None, info.sha, checksums, sorted(chosen), sizes


# huggingface_hub (since PR 4228, 1.x) downloads each file to a process-unique
# `<etag>.<random>.incomplete` from byte 0: a Job pod killed half-way through a weight file
# leaves that part behind and the next pod starts over. The weights (the LFS files, named by
# their sha256 in the cache's blobs/) are therefore fetched first by `_resume_blobs` into a part
# file of a fixed name, continued with an HTTP Range request; snapshot_download then finds the
# blob in place and only links it. Parts of huggingface_hub's own left by a killed pod are
# removed once nothing has written to them for STALE_PART_S (an active download writes often).
PART_SUFFIX = ".slm-part"
STALE_PART_S = 600


def _resume_blobs(repo: str, commit: str, checksums: dict[str, tuple[str, str]], sizes: dict[str, int],
                  cache_dir: Path, token: str | None) -> None:
    """Best effort: fetch each LFS file (sha256 known) into <cache>/<repo folder>/blobs/<sha256>,
    resuming a part a killed run left. Any failure is a progress note; snapshot_download then
    fetches that file its own way (and reports real errors)."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import repo_folder_name

    blobs = cache_dir / repo_folder_name(repo_id=repo, repo_type="model") / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for stale in blobs.glob("*.incomplete"):
        try:
            if now - stale.stat().st_mtime > STALE_PART_S:
                stale.unlink()
        except OSError:
            pass
    for rel, (algo, digest) in sorted(checksums.items()):
        size = sizes.get(rel)
        if algo != "sha256" or not size or (blobs / digest).exists():
            continue
        try:
            _fetch_blob(hf_hub_url(repo, rel, revision=commit), blobs / digest, size, digest, token, rel)
        except Exception as exc:
            if _disk_full(exc):
                raise
            progress.emit("note", message=f"resumable fetch of {rel} failed ({type(exc).__name__}: "
                                          f"{redact(str(exc), token)}); downloading it again")


def _disk_full(exc: BaseException) -> bool:
    from . import diskspace

    return diskspace.is_disk_full(exc)


def _fetch_blob(url: str, blob: Path, size: int, sha256: str, token: str | None, rel: str) -> None:
    """GET url into blob's part file from the byte the part holds (Range: bytes=N-), then check
    its size and sha256 and rename it into place. Raises on HTTP errors or a bad checksum (the
    part is removed then)."""
    from huggingface_hub.utils import build_hf_headers, get_session

    part = blob.with_name(blob.name + PART_SUFFIX)
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    headers = build_hf_headers(token=token)
    if have:
        headers["Range"] = f"bytes={have}-"
    if have < size:
        progress.emit("download", file=rel, resumedFrom=have, size=size)
        # huggingface_hub's own HTTP client (its proxies, CA bundle; httpx2 in the image), which,
        # like httpx, drops Authorization on a redirect to another host (the hub's CDN).
        with get_session().stream("GET", url, headers=headers, follow_redirects=True, timeout=60.0) as r:
            if r.status_code == 416:
                part.unlink()
                raise RuntimeError(f"the hub refused range {have}- of {size} bytes (416)")
            r.raise_for_status()
            mode = "ab" if r.status_code == 206 else "wb"  # 200: the server sent the whole file
            with part.open(mode) as f:
                for chunk in r.iter_bytes(1 << 20):
                    f.write(chunk)
    got = part.stat().st_size
    h = hashlib.sha256()
    with part.open("rb") as f:
        for chunk in iter(lambda: f.read(4 << 20), b""):
            h.update(chunk)
    if got != size or h.hexdigest() != sha256:
        part.unlink()
        raise RuntimeError(f"{rel}: got {got} bytes with sha256 {h.hexdigest()[:12]}, expected {size} "
                           f"with {sha256[:12]}")
    part.rename(blob)


def download(repo: str, revision: str | None, cache_dir: Path, token: str | None) -> Fetched:
    """snapshot_download into cache_dir (on the output volume, so a restarted Job resumes)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # progress goes out as JSON lines instead
    cache_dir.mkdir(parents=True, exist_ok=True)
    total, sha, checksums, files, sizes = _hub_metadata(repo, revision, token)
    progress.emit("download", repo=repo, revision=revision, bytes=_folder_bytes(cache_dir), total=total)
    done = threading.Event()

    def report() -> None:
        while not done.wait(2.0):
            progress.emit("download", bytes=_folder_bytes(cache_dir), total=total)

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    started = time.monotonic()
    try:
        if sha:
            _resume_blobs(repo, sha, checksums, sizes, cache_dir, token)
        path = snapshot_download(repo_id=repo, revision=revision, cache_dir=str(cache_dir), token=token,
                                 allow_patterns=files or FETCH_PATTERNS)
    except Exception as exc:
        raise SourceError(f"download of {repo}@{revision or 'default'} failed: "
                          f"{type(exc).__name__}: {redact(str(exc), token)}",
                          transient=transient_download_error(exc)) from None
    finally:
        done.set()
        reporter.join()
    # What we took (select_files), not everything in the snapshot folder (an older run's files).
    size = sum((Path(path) / rel).stat().st_size for rel in model_files(Path(path)))
    progress.emit("download", bytes=size, total=total or size, seconds=round(time.monotonic() - started, 2))
    return Fetched(Path(path), sha or Path(path).name, size, checksums)


def resolve(source: str, revision: str | None, *, cache_dir: Path, pvc_root: Path, token: str | None,
            s3_credentials_dir: Path | str | None = None) -> Fetched:
    if source.startswith("s3://"):
        from . import s3

        if revision:
            progress.emit("note", message=f"--revision {revision} is ignored for S3 sources; the manifest "
                                          "records the objects' ETag fingerprint instead")
        try:
            bucket, prefix = s3.parse_url(source)
            got = s3.download(source, cache_dir / "s3" / bucket / prefix, ALLOW_PATTERNS, s3_credentials_dir,
                              select=select_files)
        except s3.S3Error as exc:
            raise SourceError(str(exc), transient=exc.transient) from None
        return Fetched(got.path, got.fingerprint, got.bytes, {k: ("md5", v) for k, v in got.md5.items()})
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
        raise SourceError(f"unsupported source {source!r}: use hf://org/name, s3://bucket/prefix, "
                          "pvc://claim/path or a path")
    if not (path / "config.json").is_file():
        raise SourceError(f"{path} has no config.json: not a Hugging Face model folder")
    # Only the files we take count (a folder may also hold pickles, a .git, ...).
    return Fetched(path, revision, sum((path / rel).stat().st_size for rel in model_files(path)))
