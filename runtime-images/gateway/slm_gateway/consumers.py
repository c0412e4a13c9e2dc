"""Per-consumer API keys and limits, read from a mounted Secret and re-read while running.

The Secret named by ``access.apiKeys`` has one entry per consumer: the entry's name (the Secret's
data key) is the consumer's name, its value is either the bare key or a YAML/JSON mapping::

    key: sk-...                     # or keyRef: {name: other-secret, key: api-key}
    requestsPerMinute: 60           # optional, integer >= 1
    tokensPerMinute: 20000          # optional, integer >= 1 (prompt + completion tokens)
    maxTokens: 1024                 # optional, integer >= 1: generation length cap
    allowedRoutes: [/v1/chat/completions, "/v1/models*"]   # optional: exact paths, or prefix*

Kubernetes mounts the Secret as a folder (one file per entry) and swaps the files atomically when
the Secret changes (the kubelet's sync period, about a minute at most); a ``keyRef`` is resolved
from ``<folder>/_refs/<secret>/<key>``, where the operator projects the referenced Secrets (a
Secret's data keys cannot contain '/', and '_' is not allowed in a consumer name, so the folder
never collides with an entry).

A malformed entry is rejected on its own, with a reason code and a sentence naming the field and
the fix; the good entries keep working. Keys are kept only as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

log = logging.getLogger("slm_gateway.consumers")

# A DNS label (RFC 1123), as Kubernetes names: bounded, safe as a Prometheus label value.
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Shorter keys are guessable; 16 characters of a random token are ~96 bits.
MIN_KEY_CHARS = 16
REFS_DIR = "_refs"
FIELDS = {"key", "keyRef", "requestsPerMinute", "tokensPerMinute", "maxTokens", "allowedRoutes"}
LIMIT_FIELDS = ("requestsPerMinute", "tokensPerMinute", "maxTokens")
# Reason codes of rejected entries: a fixed set, so they are safe as a metric label.
REASONS = ("BadName", "BadValue", "UnknownField", "MissingKey", "ShortKey", "KeyRefNotFound", "BadLimit",
           "BadRoutes", "DuplicateKey", "LimitsNeedStore")


@dataclass(frozen=True)
class Consumer:
    """One accepted consumer. Limits are per minute, across every replica of the model; None = none."""

    name: str
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_tokens: int | None = None
    allowed_routes: tuple[str, ...] | None = None

    @property
    def limited(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None

    def allows(self, path: str) -> bool:
        """Whether ``path`` is in allowedRoutes (exact, or a prefix given as ``prefix*``); no list = all."""
        if self.allowed_routes is None:
            return True
        return any(path.startswith(r[:-1]) if r.endswith("*") else path == r for r in self.allowed_routes)


@dataclass(frozen=True)
class Rejected:
    """A Secret entry that was not accepted: ``entry`` is its name in the Secret, ``reason`` a REASONS code."""

    entry: str
    reason: str
    message: str


@dataclass
class KeyTable:
    """The accepted consumers by key digest, plus the rejected entries (for status and metrics)."""

    by_digest: dict[bytes, Consumer] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def consumers(self) -> list[Consumer]:
        return sorted(self.by_digest.values(), key=lambda c: c.name)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _int_limit(entry: str, name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _Reject("BadLimit", f"entry {entry!r}: {name} must be a whole number of at least 1 (got {value!r}); "
                      f"remove it for no limit")
    return value


class _Reject(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def parse_entry(entry: str, raw: str, refs: Path | None = None, *, store: bool = True,
                read_ref: Callable[[str, str], str | None] | None = None) -> tuple[Consumer, str]:
    """Parse one Secret entry (its name and its text) into (Consumer, key).

    ``refs`` is the folder keyRefs resolve in (or ``read_ref(secret, key)`` returns the key or None:
    the operator reads the referenced Secrets from the API); ``store`` says whether a shared limit store is
    configured (without one, an entry with request or token limits is refused: limits that hold
    per pod only would let a consumer use N replicas times its limit).
    Raises _Reject (reason code + sentence) for a malformed entry.
    """
    if not NAME_RE.match(entry):
        raise _Reject("BadName", f"entry {entry!r}: a consumer name must be a DNS label (lower-case letters, "
                      f"digits and '-', at most 63 characters); rename the Secret's key")
    text = raw.strip()
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text if "\n" not in text else None
        if value is None:
            raise _Reject("BadValue", f"entry {entry!r}: the value is neither a key nor a YAML mapping "
                          f"(key, requestsPerMinute, ...)") from None
    if not isinstance(value, dict):
        # A bare key (whatever YAML would make of it: keys are text).
        spec: dict[str, object] = {"key": text} if text else {}
    else:
        spec = value
    unknown = sorted(set(map(str, spec)) - FIELDS)
    if unknown:
        raise _Reject("UnknownField", f"entry {entry!r}: unknown field(s) {', '.join(unknown)}; the fields are "
                      f"{', '.join(sorted(FIELDS))}")
    key = spec.get("key")
    ref = spec.get("keyRef")
    if key is not None and ref is not None:
        raise _Reject("BadValue", f"entry {entry!r}: give either key or keyRef, not both")
    if ref is not None:
        if not (isinstance(ref, dict) and isinstance(ref.get("name"), str) and isinstance(ref.get("key"), str)):
            raise _Reject("BadValue", f"entry {entry!r}: keyRef must be {{name: <secret>, key: <data key>}}")
        path = (refs or Path("/nonexistent")) / ref["name"] / ref["key"]
        try:
            if read_ref is not None:
                found = read_ref(ref["name"], ref["key"])
                if found is None:
                    raise OSError(ref["name"])
                key = found.strip()
            else:
                key = path.read_text(encoding="utf-8").strip()
        except OSError:
            raise _Reject("KeyRefNotFound", f"entry {entry!r}: keyRef {ref['name']}/{ref['key']} is not mounted; "
                          f"check the Secret {ref['name']!r} exists and has the key {ref['key']!r}") from None
    if key is None or (isinstance(key, str) and not key.strip()):
        raise _Reject("MissingKey", f"entry {entry!r}: no key; set key: <token> or keyRef: {{name, key}}")
    key = str(key).strip()
    if len(key) < MIN_KEY_CHARS or any(c.isspace() for c in key):
        raise _Reject("ShortKey", f"entry {entry!r}: the key must be at least {MIN_KEY_CHARS} characters without "
                      f"spaces; generate one with: openssl rand -hex 24")
    rpm = _int_limit(entry, "requestsPerMinute", spec.get("requestsPerMinute"))
    tpm = _int_limit(entry, "tokensPerMinute", spec.get("tokensPerMinute"))
    cap = _int_limit(entry, "maxTokens", spec.get("maxTokens"))
    routes = spec.get("allowedRoutes")
    if routes is not None:
        if not (isinstance(routes, list) and routes and all(isinstance(r, str) and r.startswith("/") for r in routes)):
            raise _Reject("BadRoutes", f"entry {entry!r}: allowedRoutes must be a non-empty list of paths starting "
                          f"with '/' (a trailing '*' matches a prefix)")
        routes = tuple(routes)
    if (rpm or tpm) and not store:
        raise _Reject("LimitsNeedStore", f"entry {entry!r}: requestsPerMinute/tokensPerMinute need the shared "
                      f"limit store (the gateway's --redis-url), which is not configured")
    return Consumer(entry, rpm, tpm, cap, routes), key


def build_table(entries: Iterable[tuple[str, str]], refs: Path | None = None, *, store: bool = True,
                read_ref: Callable[[str, str], str | None] | None = None) -> KeyTable:
    """Parse (name, value) entries, in name order, into a KeyTable; a key used twice is rejected the second time.

    The gateway and the operator (status: Degraded InvalidApiKeyEntry) both parse with this."""
    table = KeyTable()
    owner: dict[bytes, str] = {}
    for entry, raw in sorted(entries):
        try:
            consumer, key = parse_entry(entry, raw, refs, store=store, read_ref=read_ref)
        except _Reject as err:
            table.rejected.append(Rejected(entry, err.reason, err.message))
            continue
        d = digest(key)
        if d in owner:
            table.rejected.append(Rejected(entry, "DuplicateKey", f"entry {entry!r}: its key is also the key of "
                                           f"{owner[d]!r}; every consumer needs its own key"))
            continue
        owner[d] = entry
        table.by_digest[d] = consumer
    return table


def read_folder(folder: Path, *, store: bool = True) -> KeyTable:
    """Read a mounted Secret folder (one file per entry; kubelet's ``..data`` links are skipped)."""
    entries = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.name == REFS_DIR or not path.is_file():
            continue
        try:
            entries.append((path.name, path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as err:
            entries.append((path.name, ""))
            log.warning("cannot read consumer entry %s: %s", path.name, type(err).__name__)
    return build_table(entries, folder / REFS_DIR, store=store)


def read_single_key(path: Path, name: str = "default") -> KeyTable:
    """The one-key mode (the Ollama proxy's ``--api-key-file``): every line of the file is a key of ``name``."""
    table = KeyTable()
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError:
        lines = []
    for key in lines:
        table.by_digest[digest(key)] = Consumer(name)
    return table
