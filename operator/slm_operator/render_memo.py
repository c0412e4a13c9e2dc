"""Stages 1-3 of a reconcile (parse, resolve, render), kept for the SLMDeployments reconciled
most recently.

A converging SLMDeployment is reconciled about 15 times (bench/controlplane's
reconciles_per_cr), nearly always because a child's or a pod's status changed, with the same
spec: parsing, resolving and rendering it again each time was about 15 % of the operator's
CPU at N = 100 (py-spy, bench/controlplane). Entries are keyed by the body's fingerprint
(metadata without resourceVersion, and spec: a status write changes neither) and, for plans,
by the render facts read from the API (RenderContext with its ConsumerFacts), so any change to
what render reads misses. Bounded (least recently used out): an entry is about 45 KB of Python
objects (measured with tracemalloc over the bench's three shapes), so MEMO_SIZE entries cost
about 6 MB whatever the number of SLMDeployments.

What is returned is shared between reconciles and must not be modified (nothing downstream
does: the diff, the apply and the observers only read the plan's objects).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Generic, TypeVar

import msgspec

from slm_operator import api
from slm_operator.render import Plan, RenderContext
from slm_operator.resolve import Resolution

MEMO_SIZE = 128

_encode = msgspec.json.Encoder().encode

K = TypeVar("K")
V = TypeVar("V")


def fingerprint(body: dict[str, Any]) -> bytes:
    """What parse and render read of an SLMDeployment body: its metadata except
    resourceVersion (which every status write changes) and its spec, as compact JSON."""
    meta = body.get("metadata") or {}
    return _encode(({k: v for k, v in meta.items() if k != "resourceVersion"}, body.get("spec")))


class _Lru(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._d.get(key)
        if value is not None:
            self._d.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.size:
            self._d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)


class RenderMemo:
    """(parsed SLMDeployment, resolution) by (fingerprint, hub endpoint), and plans by (fingerprint, render
    context); each at most `size` entries (ValueError below 1)."""

    def __init__(self, size: int = MEMO_SIZE) -> None:
        if size < 1:
            raise ValueError(f"RenderMemo size {size}: keep at least 1 entry")
        self._resolved: _Lru[tuple[bytes, str | None], tuple[api.SLMDeployment, Resolution]] = _Lru(size)
        self._plans: _Lru[tuple[bytes, RenderContext], Plan] = _Lru(size)

    def resolved(self, key: bytes, hub_endpoint: str | None) -> tuple[api.SLMDeployment, Resolution] | None:
        """The parsed body and its resolution (resolve.resolution with `hub_endpoint`) kept
        under `key`, or None."""
        return self._resolved.get((key, hub_endpoint))

    def keep_resolved(self, key: bytes, hub_endpoint: str | None, cr: api.SLMDeployment, res: Resolution) -> None:
        self._resolved.put((key, hub_endpoint), (cr, res))

    def plan(self, key: bytes, ctx: RenderContext) -> Plan | None:
        """The plan rendered for (`key`, `ctx`), or None."""
        return self._plans.get((key, ctx))

    def keep_plan(self, key: bytes, ctx: RenderContext, p: Plan) -> None:
        self._plans.put((key, ctx), p)

    def __len__(self) -> int:
        return max(len(self._resolved), len(self._plans))
