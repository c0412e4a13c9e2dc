"""In-memory view of the children the operator manages, fed by kopf watch events.

The reconciler compares desired objects with this cache instead of reading the API, so a
quiet cluster costs no requests at all. Bodies are kept as compact JSON text: a parsed
Deployment costs several times its JSON size in Python objects, and a cached child is only
read when its owner reconciles.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from slm_operator import constants as c

Key = tuple[str, str, str]  # kind, namespace, name


class ChildCache:
    def __init__(self) -> None:
        self._objs: dict[Key, str] = {}
        self._owner_of: dict[Key, str] = {}
        self._by_owner: dict[tuple[str, str], set[Key]] = {}

    def put(self, kind: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (kind, meta["namespace"], meta["name"])
        self._objs[key] = json.dumps(body, separators=(",", ":"))
        owner = (meta.get("labels") or {}).get(c.L_DEPLOYMENT)
        if owner:
            self._owner_of[key] = owner
            self._by_owner.setdefault((meta["namespace"], owner), set()).add(key)

    def remove(self, kind: str, namespace: str, name: str) -> None:
        key = (kind, namespace, name)
        self._objs.pop(key, None)
        owner = self._owner_of.pop(key, None)
        if owner:
            owned = self._by_owner.get((namespace, owner))
            if owned is not None:
                owned.discard(key)
                if not owned:
                    del self._by_owner[(namespace, owner)]

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        text = self._objs.get((kind, namespace, name))
        return None if text is None else json.loads(text)

    def owned_by(self, namespace: str, owner: str, uid: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
        for key in sorted(self._by_owner.get((namespace, owner), set())):
            text = self._objs.get(key)
            if text is None:
                continue
            body = json.loads(text)
            refs = body["metadata"].get("ownerReferences") or []
            if uid and any(r.get("uid") == uid for r in refs):
                yield key[0], body

    def __len__(self) -> int:
        return len(self._objs)
