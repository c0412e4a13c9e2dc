"""The children's watch path without a cluster: the cache (compressed, ordered by
resourceVersion, re-listed) and the handlers that feed it and reconcile owners only on change.

The same path runs for real in every e2e test that runs the operator (drift undone, Ready
from the Deployment's status, Job completion)."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest
from fakekube import WatchListing, WatchObj

from slm_operator import handlers
from slm_operator.cache import ChildCache
from slm_operator.kube import Kube

NS = "team-a"
MANAGED = {"app.kubernetes.io/managed-by": "slm-operator"}


def deployment(name: str = "qwen3", *, rv: str = "10", owner: str = "qwen3", replicas: int = 1,
               ready: int = 0) -> dict[str, Any]:
    """A served Deployment as the API server returns it (a realistic size: its pod template)."""
    containers = [{"name": n, "image": f"ghcr.io/slm-operator/{n}:0.1.0",
                   "args": ["--port", "8000", "--max-model-len", "4096"],
                   "securityContext": {"readOnlyRootFilesystem": True, "runAsNonRoot": True,
                                       "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                   "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}}
                  for n in ("engine", "gateway")]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS, "resourceVersion": rv, "uid": f"uid-{name}",
                         "labels": {"app.kubernetes.io/managed-by": "slm-operator", "slm.ai/deployment": owner}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": containers}}},
            "status": {"replicas": replicas, "readyReplicas": ready}}


def test_cache_round_trips_and_keeps_less_than_the_json() -> None:
    cache = ChildCache()
    d = deployment()
    assert cache.put("Deployment", copy.deepcopy(d)) is True
    assert cache.get("Deployment", NS, "qwen3") == d
    got = cache.get("Deployment", NS, "qwen3")
    got["spec"]["replicas"] = 9
    assert cache.get("Deployment", NS, "qwen3") == d, "get returns a copy the caller may change"
    held = len(cache._objs[("Deployment", NS, "qwen3")])
    assert held < len(json.dumps(d, separators=(",", ":"))) / 2, f"kept {held} bytes: not compressed"


def test_cache_reports_change_and_ignores_older_or_identical_bodies() -> None:
    cache = ChildCache()
    assert cache.put("Deployment", deployment(rv="20", ready=1)) is True
    assert cache.put("Deployment", deployment(rv="20", ready=1)) is False, "the echo of our own write"
    assert cache.put("Deployment", deployment(rv="15", ready=0)) is False, "a watch event trailing the answer"
    assert cache.get("Deployment", NS, "qwen3")["status"]["readyReplicas"] == 1
    assert cache.put("Deployment", deployment(rv="21", ready=0)) is True
    assert cache.get("Deployment", NS, "qwen3")["metadata"]["resourceVersion"] == "21"


def test_cache_remove_keeps_a_recreated_child_and_reindexes_owners() -> None:
    cache = ChildCache()
    cache.put("Deployment", deployment(rv="30"))
    assert cache.remove("Deployment", NS, "qwen3", rv="25") is None, "the old object's deletion, seen late"
    assert cache.get("Deployment", NS, "qwen3") is not None
    assert cache.remove("Deployment", NS, "qwen3", rv="31") == "qwen3"
    assert cache.get("Deployment", NS, "qwen3") is None and len(cache) == 0
    cache.put("Deployment", deployment(rv="40", owner="a"))
    cache.put("Deployment", deployment(rv="41", owner="b"))
    assert cache._by_owner == {(NS, "b"): {("Deployment", NS, "qwen3")}}, "moved to its new owner"


def test_replace_kind_after_a_relist_names_only_changed_owners() -> None:
    cache = ChildCache()
    cache.put("Deployment", deployment("a", rv="50", owner="a"))
    cache.put("Deployment", deployment("b", rv="51", owner="b"))
    cache.put("Service", {"apiVersion": "v1", "kind": "Service",
                          "metadata": {"name": "c", "namespace": NS, "resourceVersion": "52",
                                       "labels": {"slm.ai/deployment": "c"}}})
    # After a 410 the list is the truth: "a" unchanged, "b" changed (even at an older version,
    # as after an etcd restore), "d" new, and Services are another kind's business.
    changed = cache.replace_kind("Deployment", NS, [deployment("a", rv="50", owner="a"),
                                                     deployment("b", rv="40", owner="b", ready=1),
                                                     deployment("d", rv="60", owner="d")])
    assert changed == {(NS, "b"), (NS, "d")}
    assert cache.get("Deployment", NS, "b")["status"]["readyReplicas"] == 1
    assert cache.replace_kind("Deployment", NS, [deployment("d", rv="60", owner="d")]) == {(NS, "a"), (NS, "b")}
    assert cache.get("Deployment", NS, "a") is None and cache.get("Service", NS, "c") is not None
    assert cache.replace_kind("Deployment", "other", []) == set(), "another namespace's list"
    assert cache.get("Deployment", NS, "d") is not None


def test_child_events_reconcile_the_owner_only_when_the_cache_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    enqueued: list[tuple[str, str]] = []

    class Q:
        def enqueue(self, key: tuple[str, str]) -> None:
            enqueued.append(key)

    cache = ChildCache()
    monkeypatch.setattr(handlers.STATE, "cache", cache, raising=False)
    monkeypatch.setattr(handlers.STATE, "queue", Q(), raising=False)
    cache.put("Deployment", deployment(rv="70"))  # the answer to the operator's own apply
    on_event = handlers._child_changed("Deployment")
    on_event("MODIFIED", deployment(rv="70"))
    assert enqueued == [], "the echo of our own write reconciles nothing"
    on_event("MODIFIED", deployment(rv="71", replicas=5))  # someone else's edit: undone by a reconcile
    assert enqueued == [(NS, "qwen3")]
    on_event("MODIFIED", deployment(rv="69"))
    assert enqueued == [(NS, "qwen3")], "a stale event"
    on_event("DELETED", deployment(rv="72"))
    assert enqueued == [(NS, "qwen3")] * 2 and cache.get("Deployment", NS, "qwen3") is None
    handlers._children_listed("Deployment")(NS, [deployment(rv="80")])
    assert enqueued == [(NS, "qwen3")] * 3


def test_child_transform_drops_managed_fields_and_compacts_jobs() -> None:
    job = {"metadata": {"name": "q", "namespace": NS, "managedFields": [{"manager": "x"}]},
           "spec": {"backoffLimit": 2, "template": {"spec": {"containers": [{"name": "q"}]}}}}
    out = handlers._child_compactor("Job", "batch/v1")(job)
    assert out == {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "q", "namespace": NS},
                   "spec": {"backoffLimit": 2}}


class _Client:
    """lightkube-like: list() then watch(), which ends with a connection reset."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def list(self, res: Any, *, namespace: str, labels: dict[str, str]) -> WatchListing:
        self.calls.append(("list", res, namespace, dict(labels)))
        return WatchListing([{k: v for k, v in deployment(rv="90").items() if k not in ("apiVersion", "kind")}],
                        rv="90")

    async def watch(self, res: Any, *, namespace: str, labels: dict[str, str], resource_version: str,
                    server_timeout: int) -> Any:
        self.calls.append(("watch", res, resource_version))
        yield "MODIFIED", WatchObj(deployment(rv="91", ready=1))
        raise ConnectionError("reset by peer")


def test_kube_watch_lists_with_the_server_side_selector_then_watches() -> None:
    from lightkube.resources.apps_v1 import Deployment

    client = _Client()
    kube = Kube(client)  # type: ignore[arg-type]
    listed: list[tuple[str | None, list[dict[str, Any]]]] = []
    events: list[tuple[str, dict[str, Any]]] = []

    async def sleep(seconds: float) -> None:
        raise asyncio.CancelledError

    async def go() -> None:
        with pytest.raises(asyncio.CancelledError):
            await kube.watch(Deployment, "Deployment", NS, MANAGED,
                             transform=handlers._child_compactor("Deployment", "apps/v1"),
                             on_list=lambda ns, items: listed.append((ns, items)),
                             on_event=lambda op, d: events.append((op, d)), sleep=sleep)

    asyncio.run(go())
    assert client.calls[0] == ("list", Deployment, NS, MANAGED), "only the operator's objects on the wire"
    assert client.calls[1] == ("watch", Deployment, "90"), "the watch resumes from the list's resourceVersion"
    assert listed == [(NS, [deployment(rv="90")])], "list items get their apiVersion and kind"
    assert [(op, d["status"]["readyReplicas"]) for op, d in events] == [("MODIFIED", 1)]
