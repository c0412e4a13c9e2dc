"""API keys from a mounted Secret file, compared in constant time."""

from __future__ import annotations

import contextlib
import hmac
import os
import threading
import time
from pathlib import Path


class ApiKeys:
    """Keys are the file's non-empty lines (several allow rotation without downtime).

    Kubernetes updates a mounted Secret in place, so the file is re-read when its
    modification time changes (checked at most every ``recheck_s`` seconds).
    """

    def __init__(self, path: Path, recheck_s: float = 5.0) -> None:
        self.path = path
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._keys: list[bytes] = []
        self._mtime = -1.0
        self._checked = 0.0
        self._load()
        if not self._keys:
            raise ValueError(f"the API key file {path} holds no key")

    def _load(self) -> None:
        mtime = os.stat(self.path).st_mtime
        if mtime != self._mtime:
            lines = self.path.read_text().splitlines()
            keys = [line.strip().encode() for line in lines if line.strip()]
            if keys:  # a half-written update never locks everyone out
                self._keys = keys
            self._mtime = mtime

    def check(self, presented: str | None) -> bool:
        now = time.monotonic()
        if now - self._checked > self.recheck_s:
            with self._lock:
                self._checked = now
                # OSError: keep the last good keys while the Secret volume is being swapped.
                with contextlib.suppress(OSError):
                    self._load()
        if not presented:
            return False
        candidate = presented.encode()
        ok = False
        for key in self._keys:  # no early exit: timing does not tell which key matched
            ok |= hmac.compare_digest(candidate, key)
        return ok


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
