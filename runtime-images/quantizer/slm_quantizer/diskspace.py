"""A full model-cache volume: recognise it whatever raised it, and say what the Job needs.

A quantization writes to the model-cache PVC in three places (docs/sizing.md, the operator's
sizing.estimate.job_disk_parts): the download cache (the source), llama.cpp's F16 reference
GGUF in a scratch folder (gguf only), and the artifact's staging folder. When the volume fills,
the error can come from Python (OSError ENOSPC), from a converter's subprocess (its stderr says
"No space left on device"), or wrapped by a library (huggingface_hub, safetensors, torch). All
become `DiskFull` with the volume's capacity, what is free, the source's bytes and an estimate
of the bytes the whole Job needs; the ArtifactWriter has already removed the staging folder
(no half-written artifact is left), and the download cache stays for the rerun to resume.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# What the C library says for ENOSPC and EDQUOT (glibc's strerror), as converters print it.
_WORDS = ("no space left on device", "disk quota exceeded", "[errno 28]", "[errno 122]")
_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# A short write to a regular file: numpy's ndarray.tofile ("65536 requested and 6416 written",
# numpy/_core/src/multiarray/convert.c), which llama.cpp's convert_hf_to_gguf.py writes tensors
# with. On a local file only a full volume or a quota cuts a write short.
_SHORT_WRITE = re.compile(r"\b\d+ requested and \d+ written\b")
# The operator's sizing.estimate.STORAGE_HEADROOM: config files, filesystem overhead, estimate error.
HEADROOM = 1.2
MIB = 1 << 20


class DiskFull(RuntimeError):
    """The model-cache volume ran out of space. `facts`: bytesCapacity, bytesFree (after the
    staging folder was removed), sourceBytes (the download cache), bytesNeeded (estimate for the
    whole Job, see `bytes_needed`), all ints in bytes; the message says them in words."""

    def __init__(self, message: str, facts: dict[str, Any]) -> None:
        super().__init__(message)
        self.facts = facts


def is_disk_full(exc: BaseException) -> bool:
    """True when `exc`, or an exception it was raised from or while handling, is ENOSPC/EDQUOT,
    quotes the C library's words for them, or quotes numpy's short-write error (a subprocess's
    stderr in a wrapped message)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _ERRNOS:
            return True
        text = str(e).lower()
        if any(w in text for w in _WORDS) or _SHORT_WRITE.search(text):
            return True
        e = e.__cause__ or e.__context__
    return False


def bytes_needed(source_bytes: int, fmt: str) -> int:
    """Upper estimate of the Job's peak on the volume, in bytes: the source, plus for gguf the
    F16 reference GGUF (about the 16-bit source's size), plus the artifact (a quantized
    artifact is smaller than its 16-bit source; none and fp8 publish hard links: 0 more), times
    HEADROOM. The operator's sizing.estimate.job_disk_parts makes the same sum from the model's
    parameter count before anything is downloaded."""
    parts = source_bytes
    if fmt == "gguf":
        parts += source_bytes
    if fmt not in ("none", "fp8"):
        parts += source_bytes
    return math.ceil(parts * HEADROOM)


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for f in files:
            with contextlib.suppress(OSError):
                p = os.path.join(root, f)
                if not os.path.islink(p):
                    total += os.stat(p).st_size
    return total


def facts_for(volume: Path, download_dir: Path, fmt: str) -> dict[str, Any]:
    """The volume's capacity and free bytes (statvfs: what an unprivileged writer may use), the
    download cache's bytes and `bytes_needed` for them."""
    st = os.statvfs(volume if volume.exists() else "/")
    source = _folder_bytes(download_dir) if download_dir.exists() else 0
    return {"bytesCapacity": st.f_blocks * st.f_frsize, "bytesFree": st.f_bavail * st.f_frsize,
            "sourceBytes": source, "bytesNeeded": bytes_needed(source, fmt)}


def _mib(n: int) -> str:
    return f"{math.ceil(n / MIB)} MiB"


@contextlib.contextmanager
def translate(volume: Path, download_dir: Path, fmt: str) -> Iterator[None]:
    """Re-raise any exception that `is_disk_full` as DiskFull (chained to it) with `facts_for`
    the volume, measured after the inner blocks cleaned up. Other exceptions pass unchanged."""
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        facts = facts_for(volume, download_dir, fmt)
        raise DiskFull(
            f"the model-cache volume is full ({_mib(facts['bytesCapacity'])} in all, "
            f"{_mib(facts['bytesFree'])} free once the partial artifact was removed): this {fmt} "
            f"quantization needs about {_mib(facts['bytesNeeded'])} for a {_mib(facts['sourceBytes'])} "
            f"source (download, {'F16 reference, ' if fmt == 'gguf' else ''}artifact, 20% headroom)",
            facts) from exc
