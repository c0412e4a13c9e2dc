"""Atomic model artifacts: a folder of files plus manifest.json, which is the COMPLETE marker.

Layout on the volume, for a destination /models/<name>:

    /models/<name>/                    the artifact; exists only when complete
        manifest.json                  written last, inside the staging folder
        <model files>
    /models/.<name>.staging-<random>/  a build in progress (or left by a killed run)
    /models/.<name>.lock               flock held by the running build

A build writes everything into a staging folder next to the destination (same filesystem),
fsyncs every file and the folder, then renames the folder into place and fsyncs the parent.
A killed run leaves only a staging folder, which never looks complete and is removed by the
next run. A destination without a valid manifest (not made by this code) is moved aside and
rebuilt, never trusted.

Manifest schema (schemaVersion 1): see build_manifest().
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1


def sha256_file(path: Path, chunk: int = 4 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entries(folder: Path) -> list[dict[str, Any]]:
    """path (relative, '/'-separated), size and sha256 of every file except the manifest."""
    entries = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel != MANIFEST:
            entries.append({"path": rel, "size": path.stat().st_size, "sha256": sha256_file(path)})
    return entries


def build_manifest(folder: Path, **fields: Any) -> dict[str, Any]:
    """The manifest for folder: the given fields (format, type, target, source, revision,
    tools, perplexity, timings, ...) plus schemaVersion, complete, createdAt, files and totalBytes."""
    files = file_entries(folder)
    return {
        "schemaVersion": SCHEMA_VERSION,
        "complete": True,
        "createdAt": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **fields,
        "files": files,
        "totalBytes": sum(f["size"] for f in files),
    }


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a complete artifact, or None (missing, unreadable, or not complete)."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("complete") is not True or not isinstance(data.get("files"), list):
        return None
    return data


def verify(folder: Path) -> list[str]:
    """Problems found checking folder against its manifest (sizes and sha256); [] when intact."""
    manifest = read_manifest(folder)
    if manifest is None:
        return [f"{folder}: no complete manifest"]
    problems = []
    listed = {f["path"] for f in manifest["files"]}
    for entry in manifest["files"]:
        path = folder / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']}: missing")
        elif path.stat().st_size != entry["size"]:
            problems.append(f"{entry['path']}: size {path.stat().st_size} != {entry['size']}")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{entry['path']}: sha256 mismatch")
    extra = {e["path"] for e in file_entries(folder)} - listed
    problems += [f"{p}: not in manifest" for p in sorted(extra)]
    return problems


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    for d in [*(p for p in folder.rglob("*") if p.is_dir()), folder]:
        _fsync_dir(d)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArtifactWriter:
    """Build an artifact in a staging folder and publish it atomically.

        with ArtifactWriter(dest) as w:      # takes the lock, clears stale staging folders
            if w.complete: ...               # manifest of an existing complete artifact
            produce files into w.staging
            w.publish(manifest_fields)       # manifest + fsync + rename
    Leaving the block without publish() removes the staging folder.
    """

    def __init__(self, dest: Path | str) -> None:
        self.dest = Path(dest).resolve()
        self.parent = self.dest.parent
        self.staging: Path = self.parent / f".{self.dest.name}.staging-unset"
        self.complete: dict[str, Any] | None = None
        self._lock_fh: Any = None

    def __enter__(self) -> ArtifactWriter:
        self.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fh = open(self.parent / f".{self.dest.name}.lock", "w")
        fcntl.flock(self._lock_fh, fcntl.LOCK_EX)
        # Under the lock no other build of this artifact runs: leftovers are from killed runs.
        for stale in self.parent.glob(f".{self.dest.name}.staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self.complete = read_manifest(self.dest)
        if self.complete is None and self.dest.exists():
            aside = self.parent / f".{self.dest.name}.staging-incomplete"
            os.replace(self.dest, aside)
            shutil.rmtree(aside, ignore_errors=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.staging-", dir=self.parent))
        return self

    def publish(self, fields: dict[str, Any]) -> dict[str, Any]:
        manifest = build_manifest(self.staging, **fields)
        (self.staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.chmod(self.staging, 0o755)  # mkdtemp makes it 0700; serving pods may run as another uid
        _fsync_tree(self.staging)
        os.rename(self.staging, self.dest)
        _fsync_dir(self.parent)
        self.complete = manifest
        return manifest

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()


@contextlib.contextmanager
def scratch_dir(dest: Path | str) -> Iterator[Path]:
    """A temporary work folder next to dest (same volume: big intermediates fit), removed after."""
    parent = Path(dest).resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{Path(dest).name}.staging-work-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
