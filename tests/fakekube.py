"""An in-memory `Kube` (operator/slm_operator/kube.py) for in-process reconcile tests: no cluster.

Same methods and return values as Kube; objects live in a dict keyed by (kind, namespace,
name). Every call is recorded in `calls` as (verb, kind, name), so tests can count requests
and writes. Faults are injected per (verb, kind): `refuse` raises the API server's ApiError
with the given code and message (what kube.refusal reads: 422 Invalid, 403 Forbidden, ...),
`fail` raises a transient ApiError (500, 409, 429) that the work queue retries.
`sync(cache)` copies the stored children into a ChildCache as the operator's watch would.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from lightkube import ApiError
from lightkube.models.meta_v1 import Status

from slm_operator.cache import ChildCache

Key = tuple[str, str, str]
_REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "Conflict", 422: "Invalid",
            429: "TooManyRequests", 500: "InternalError"}
# Kinds the operator watches into its cache (handlers.CHILD_KINDS); Secrets it reads with GET.
WATCHED = {"Deployment", "Job", "Service", "PersistentVolumeClaim", "NetworkPolicy", "HorizontalPodAutoscaler",
           "PodDisruptionBudget", "ServiceMonitor"}


def api_error(code: int, message: str) -> ApiError:
    """The ApiError lightkube raises for an HTTP `code` answer with the API server's `message`."""
    return ApiError(status=Status(code=code, message=message, reason=_REASONS.get(code, "Unknown")))


class FakeKube:
    """In-memory API server for one test (see the module docstring)."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []            # raw pods, for list_pods/watch_pods
        self.statuses: dict[tuple[str, str], dict[str, Any]] = {}
        self.status_patches: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str, str]] = []
        self.refuse: dict[tuple[str, str], tuple[int, str]] = {}
        self.fail: dict[tuple[str, str], int] = {}
        self.crds: set[str] = set()
        self._uids = itertools.count(1)

    # -- faults and bookkeeping ------------------------------------------------------------

    def _call(self, verb: str, kind: str, name: str) -> None:
        self.calls.append((verb, kind, name))
        if (verb, kind) in self.refuse:
            raise api_error(*self.refuse[(verb, kind)])
        if (verb, kind) in self.fail:
            raise api_error(self.fail[(verb, kind)], "transient")

    def writes(self, *kinds: str) -> list[tuple[str, str, str]]:
        """The write calls sent (apply, create, delete, patch_status; Events not counted), of
        `kinds` if given."""
        return [x for x in self.calls if x[0] in ("apply", "create", "delete", "patch_status")
                and x[1] != "Event" and (not kinds or x[1] in kinds)]

    def put(self, obj: dict[str, Any]) -> None:
        """Store `obj` as if someone else had created it (no call recorded)."""
        meta = obj["metadata"]
        self.objects[(obj["kind"], meta.get("namespace", ""), meta["name"])] = copy.deepcopy(obj)

    def stored(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    def sync(self, cache: ChildCache) -> None:
        """The operator's watch: every stored child of a watched kind into `cache`, nothing else."""
        for (kind, _ns, _name), obj in self.objects.items():
            if kind in WATCHED:
                cache.put(kind, copy.deepcopy(obj))

    # -- the Kube interface ----------------------------------------------------------------

    async def apply(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self._call("apply", obj["kind"], meta["name"])
        key = (obj["kind"], meta.get("namespace", ""), meta["name"])
        live = self.objects.get(key)
        stored = copy.deepcopy(obj)
        stored["metadata"]["uid"] = (live or {}).get("metadata", {}).get("uid") or f"uid-{next(self._uids)}"
        if obj["kind"] == "Service":
            stored.setdefault("spec", {})["clusterIP"] = ((live or {}).get("spec") or {}).get("clusterIP", "10.96.0.9")
        if live is not None and "status" in live:
            stored["status"] = live["status"]
        self.objects[key] = stored

    async def create(self, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        self._call("create", obj["kind"], meta.get("name") or meta.get("generateName", ""))
        key = (obj["kind"], meta.get("namespace", ""), meta["name"])
        if key in self.objects:
            return False
        self.objects[key] = {**copy.deepcopy(obj), "metadata": {**meta, "uid": f"uid-{next(self._uids)}"}}
        return True

    async def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        self._call("get", kind, name)
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def delete(self, api_version: str, kind: str, name: str, namespace: str) -> None:
        self._call("delete", kind, name)
        self.objects.pop((kind, namespace, name), None)

    async def list_pods(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        self._call("list", "Pod", "")
        return [copy.deepcopy(p) for p in self.pods if p["metadata"].get("namespace") == namespace
                and all((p["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())]

    async def watch_pods(self, namespace: str | None, labels: dict[str, str], *,
                         summarise: Callable[[dict[str, Any]], dict[str, Any]],
                         on_list: Callable[[str | None, list[dict[str, Any]]], None],
                         on_event: Callable[[str, dict[str, Any]], None],
                         synced: asyncio.Event | None = None, server_timeout: int = 300,
                         max_backoff: float = 60.0,
                         sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """One list (on_list), then wait until cancelled (no events unless a test sends them)."""
        self._call("list", "Pod", "")
        on_list(namespace, [summarise(p) for p in self.pods
                            if namespace is None or p["metadata"].get("namespace") == namespace])
        if synced is not None:
            synced.set()
        await asyncio.Event().wait()

    async def patch_status(self, name: str, namespace: str, status: dict[str, Any]) -> None:
        self._call("patch_status", "SLMDeployment/status", name)
        self.statuses[(namespace, name)] = copy.deepcopy(status)
        self.status_patches.append(copy.deepcopy(status))

    async def post_event(self, event: dict[str, Any]) -> None:
        self.calls.append(("create", "Event", event["reason"]))
        self.events.append(event)

    async def crd_exists(self, name: str) -> bool:
        self.calls.append(("get", "CustomResourceDefinition", name))
        return name in self.crds

    async def close(self) -> None:
        pass


class WatchObj:
    """What lightkube's list and watch yield: an object with to_dict() (a fresh copy each time)."""

    def __init__(self, d: dict[str, Any]) -> None:
        self._d = d

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._d)


class WatchListing:
    """What lightkube's AsyncClient.list returns: async iteration over the items, and the
    list's resourceVersion (set once iterated, as lightkube does)."""

    def __init__(self, items: list[dict[str, Any]], rv: str) -> None:
        self.items, self.resourceVersion = items, rv

    async def __aiter__(self) -> Any:
        for d in self.items:
            yield WatchObj(d)

