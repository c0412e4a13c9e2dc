"""Progress as JSON lines on stdout, and the short JSON summary for the termination message.

Every line is one JSON object with a "stage" key, e.g.
{"stage": "download", "bytes": 1048576, "total": 4194304}; the operator tails the Job's log
and surfaces the latest stage. The termination message (default /dev/termination-log) is
kept under Kubernetes' 4 KiB limit.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

TERMINATION_LIMIT = 4096


def emit(stage: str, **fields: Any) -> None:
    """Print one progress record (flushed at once: the log is read while the Job runs)."""
    record = {"stage": stage, "time": round(time.time(), 3), **fields}
    sys.stdout.write(json.dumps(record, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def write_termination_message(path: Path | str | None, summary: dict[str, Any]) -> None:
    """Write summary as compact JSON to path, shortening the message field to fit the limit."""
    if not path:
        return
    data = dict(summary)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    if len(text.encode()) > TERMINATION_LIMIT and "message" in data:
        excess = len(text.encode()) - TERMINATION_LIMIT + 3
        data["message"] = str(data["message"])[: max(0, len(str(data["message"])) - excess)] + "..."
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    try:
        Path(path).write_text(text[:TERMINATION_LIMIT])
    except OSError as exc:  # e.g. not running in a pod: the summary is on stdout anyway
        emit("warning", message=f"cannot write termination message to {path}: {exc.strerror}")
