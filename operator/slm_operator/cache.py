"""In-memory view of the children the operator manages, fed by kopf watch events.

The reconciler compares desired objects with this cache instead of reading the API, so a
quiet cluster costs no requests at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from slm_operator import constants as c

Key = tuple[str, str, str]  # kind, namespace, name


class ChildCache:
    def __init__(self) -> None:
        self._objs: dict[Key, dict[str, Any]] = {}
        self._by_owner: dict[tuple[str, str], set[Key]] = {}

    def put(self, kind: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (kind, meta["namespace"], meta["name"])
        self._objs[key] = body
        owner = (meta.get("labels") or {}).get(c.L_DEPLOYMENT)
        if owner:
            self._by_owner.setdefault((meta["namespace"], owner), set()).add(key)

    def remove(self, kind: str, namespace: str, name: str) -> None:
        key = (kind, namespace, name)
        body = self._objs.pop(key, None)
        if body:
            owner = (body["metadata"].get("labels") or {}).get(c.L_DEPLOYMENT)
            self._by_owner.get((namespace, owner or ""), set()).discard(key)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objs.get((kind, namespace, name))

    def owned_by(self, namespace: str, owner: str, uid: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
        for key in sorted(self._by_owner.get((namespace, owner), set())):
            body = self._objs.get(key)
            if body is None:
                continue
            refs = body["metadata"].get("ownerReferences") or []
            if uid and any(r.get("uid") == uid for r in refs):
                yield key[0], body

    def __len__(self) -> int:
        return len(self._objs)
