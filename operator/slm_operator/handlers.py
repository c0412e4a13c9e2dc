"""kopf wiring (thin): watch SLMDeployments and their children, feed the work queue.

Only event handlers are used: kopf then stores no progress annotations and adds no
finalizers, so the operator never writes to an SLMDeployment except its status.
Children are watched (label app.kubernetes.io/managed-by=slm-operator) to keep the cache
fresh and to undo edits made by someone else.

Pods are watched too, but not through kopf: kopf filters labels client-side, so a kopf pod
handler would stream every pod of every watched namespace. The operator's own list+watch
(`Kube.watch_pods`) sends the managed-by selector to the API server instead: one list and one
long-lived watch per watched namespace (or one for the cluster), only the operator's pods on
the wire, a compact summary of each in the cache, and a reconcile of the owning
SLMDeployment only when a summary changes (a pull failure, a crash, an eviction, a pod
turning ready), never for the kubelet's routine status updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf
from lightkube import AsyncClient

from slm_operator import api, metrics, podfaults
from slm_operator import constants as c
from slm_operator.cache import ChildCache
from slm_operator.kube import Kube, compact_child
from slm_operator.reconciler import Outcome, Reconciler
from slm_operator.settings import OperatorConfig
from slm_operator.workqueue import WorkQueue

log = logging.getLogger(__name__)

CHILD_KINDS: list[tuple[str, str, str, str]] = [  # group, version, plural, kind
    ("apps", "v1", "deployments", "Deployment"),
    ("batch", "v1", "jobs", "Job"),
    ("", "v1", "services", "Service"),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
    ("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    ("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor"),
]
MANAGED = {c.L_MANAGED_BY: c.OPERATOR_NAME}


class State:
    config: OperatorConfig
    kube: Kube
    cache: ChildCache
    queue: WorkQueue
    reconciler: Reconciler
    conditions: dict[tuple[str, str], dict[str, str]]
    condition_counts: dict[tuple[str, str], int]
    counts_of: dict[tuple[str, str], dict[str, str]]  # the STATE.conditions counted
    pod_watches: list[asyncio.Task[None]]


STATE = State()


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff-base storage that keeps nothing: kopf builds a diff base (a deep copy of the body)
    for every watch event to detect changes for on.create/update/field handlers; with event
    handlers only (this module) nothing reads it. build and fetch return None (no essence:
    kopf then computes no diff), store writes nothing (no annotation on any object)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: kopf.Body) -> Any:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


def _plain(body: Any) -> dict[str, Any]:
    """A shallow view without managedFields (often half an object's size, never needed).

    No deep copy: the queue and the cache serialise it to JSON at once, which detaches it
    from kopf's body (deep-copying every watch event was a large share of the CPU per CR).
    """
    d = dict(body)
    meta = d.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        d["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    return d


async def _reconcile(body: dict[str, Any]) -> Outcome:
    """Reconcile one body; the returned status sets the condition metrics (and the queue keeps it)."""
    outcome = await STATE.reconciler.reconcile(body)
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    conds = {x["type"]: x["status"] for x in (outcome.status or {}).get("conditions") or []}
    if STATE.conditions.get(key) != conds:
        _count_conditions(STATE.conditions.get(key), -1)
        _count_conditions(conds, +1)
        STATE.conditions[key] = conds
        _update_condition_gauge()
        _set_condition_series(key, conds)
    return outcome


def _counts() -> dict[tuple[str, str], int]:
    """SLMDeployments per (condition type, status), kept in step with STATE.conditions (counted
    once from it when it is a new mapping, e.g. after startup, then updated incrementally:
    recounting every CR on every reconcile was O(N) per reconcile)."""
    if getattr(STATE, "counts_of", None) is not STATE.conditions:
        STATE.condition_counts = {}
        STATE.counts_of = STATE.conditions
        for conds in STATE.conditions.values():
            for ctype, status in conds.items():
                STATE.condition_counts[(ctype, status)] = STATE.condition_counts.get((ctype, status), 0) + 1
    return STATE.condition_counts


def _count_conditions(conds: dict[str, str] | None, sign: int) -> None:
    """Add (sign +1) or remove (-1) one SLMDeployment's conditions to/from _counts()."""
    counts = _counts()
    for ctype, status in (conds or {}).items():
        counts[(ctype, status)] = counts.get((ctype, status), 0) + sign


def _set_condition_series(key: tuple[str, str], conds: dict[str, str]) -> None:
    """One series per condition, labelled with its current status (5 per SLMDeployment)."""
    for ctype in c.CONDITION_TYPES:
        current = conds.get(ctype)
        for status in ("True", "False"):
            if status == current:
                metrics.CONDITION.labels(namespace=key[0], name=key[1], condition=ctype, status=status).set(1)
            else:
                with contextlib.suppress(KeyError):
                    metrics.CONDITION.remove(key[0], key[1], ctype, status)


def _update_condition_gauge() -> None:
    """slm_operator_slmdeployments{condition, status} from the kept counts."""
    counts = _counts()
    for ctype in c.CONDITION_TYPES:
        for status in ("True", "False"):
            metrics.CONDITIONS.labels(condition=ctype, status=status).set(counts.get((ctype, status), 0))


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    cfg = OperatorConfig.from_env()
    STATE.config = cfg
    metrics.initialise()
    settings.posting.enabled = False          # our own Events only, on transitions
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    client = AsyncClient(field_manager=c.FIELD_MANAGER)
    STATE.kube = Kube(client)
    STATE.cache = ChildCache()
    STATE.conditions = {}
    # Only event handlers: kopf's diff base (a deep copy of every event's body, then a diff)
    # serves change handlers, which this operator has none of: 12% of its CPU at N=100.
    settings.persistence.diffbase_storage = NoDiffBase()
    ctx = cfg.render_context(service_monitor_crd=await STATE.kube.crd_exists(
        "servicemonitors.monitoring.coreos.com"))
    STATE.reconciler = Reconciler(STATE.kube, STATE.cache, ctx, status_settle=cfg.status_settle_s)
    STATE.queue = WorkQueue(_reconcile, workers=cfg.workers)
    await _prefill(client, cfg)
    await _start_pod_watches(cfg)
    STATE.queue.start()
    log.info("slm-operator started: %d children and %d pods cached, %d workers", len(STATE.cache),
             STATE.cache.pod_count(), cfg.workers)


POD_SYNC_TIMEOUT = 30.0


def _pods_listed(namespace: str | None, summaries: list[dict[str, Any]]) -> None:
    """After a (re-)list: the cache holds exactly these pods; owners whose pods changed reconcile."""
    for key in STATE.cache.replace_pods(namespace, summaries):
        if hasattr(STATE, "queue"):
            STATE.queue.enqueue(key)
    metrics.PODS_CACHED.set(STATE.cache.pod_count())


def _pod_event(op: str, summary: dict[str, Any]) -> None:
    """Keep the pod summary; reconcile the owner only when the summary changed."""
    ns, name = summary.get("namespace", ""), summary.get("name", "")
    if op == "DELETED":
        owner = STATE.cache.remove_pod(ns, name)
    else:
        owner = summary.get("owner") if STATE.cache.put_pod(summary) else None
    if owner and hasattr(STATE, "queue"):
        STATE.queue.enqueue((ns, owner))
    metrics.PODS_CACHED.set(STATE.cache.pod_count())


async def _start_pod_watches(cfg: OperatorConfig) -> None:
    """One pod list+watch per watched namespace (or one cluster-wide); waits up to
    POD_SYNC_TIMEOUT seconds for the first lists, so a restart sees the pods before the first
    reconcile (and writes nothing), without hanging when pods cannot be listed."""
    namespaces: list[str | None] = list(cfg.namespaces) or [None]
    STATE.pod_watches = []
    synced = []
    for ns in namespaces:
        ev = asyncio.Event()
        synced.append(ev)
        STATE.pod_watches.append(asyncio.create_task(STATE.kube.watch_pods(
            ns, MANAGED, summarise=podfaults.summarise, on_list=_pods_listed, on_event=_pod_event,
            synced=ev), name=f"pod-watch-{ns or 'all'}"))
    try:
        await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in synced)), POD_SYNC_TIMEOUT)
    except TimeoutError:
        log.warning("pods not listed within %.0fs: pod faults show once the pod watch works "
                    "(the operator needs list and watch on pods)", POD_SYNC_TIMEOUT)


async def _prefill(client: AsyncClient, cfg: OperatorConfig) -> None:
    """List children once before the first reconcile, so a restart writes nothing."""
    from lightkube.codecs import resource_registry

    namespaces: list[str | None] = list(cfg.namespaces) or [None]
    for group, version, _plural, kind in CHILD_KINDS:
        if kind == "ServiceMonitor" and not STATE.reconciler.ctx.service_monitor_crd:
            continue
        api_version = f"{group}/{version}" if group else version
        res = resource_registry.load(api_version, kind) if kind != "ServiceMonitor" else None
        if res is None:
            from slm_operator.kube import ServiceMonitorResource as res
        for ns in namespaces:
            metrics.API_REQUESTS.labels(verb="list", kind=kind).inc()
            async for obj in client.list(res, namespace=ns or "*", labels=MANAGED):
                d = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
                d.setdefault("apiVersion", api_version)
                d.setdefault("kind", kind)
                STATE.cache.put(kind, compact_child(kind, _plain(d)))


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    for task in getattr(STATE, "pod_watches", []):
        task.cancel()
    await asyncio.gather(*getattr(STATE, "pod_watches", []), return_exceptions=True)
    if hasattr(STATE, "queue"):
        await STATE.queue.stop()
    if hasattr(STATE, "kube"):
        await STATE.kube.close()


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def slm_event(event: dict[str, Any], body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    key = (namespace, name)
    if event.get("type") == "DELETED":
        STATE.queue.forget(key)
        STATE.reconciler.forget(namespace, name)
        _count_conditions(STATE.conditions.pop(key, None), -1)
        _update_condition_gauge()
        _set_condition_series(key, {})
        return
    STATE.queue.update(key, _plain(body))


def _register_child(group: str, version: str, plural: str, kind: str) -> None:
    api_version = f"{group}/{version}" if group else version

    async def child_event(event: dict[str, Any], body: kopf.Body, namespace: str, name: str,
                          labels: dict[str, str], **_: Any) -> None:
        if event.get("type") == "DELETED":
            STATE.cache.remove(kind, namespace, name)
        else:
            d = _plain(body)
            d.setdefault("apiVersion", api_version)
            d.setdefault("kind", kind)
            STATE.cache.put(kind, compact_child(kind, d))  # serialises: nothing of kopf's body is kept
        owner = labels.get(c.L_DEPLOYMENT)
        if owner and hasattr(STATE, "queue"):
            STATE.queue.enqueue((namespace, owner))

    child_event.__name__ = f"child_{kind.lower()}"
    kopf.on.event(group or "", version, plural, labels=MANAGED, id=f"child-{kind.lower()}")(child_event)


for _g, _v, _p, _k in CHILD_KINDS:
    _register_child(_g, _v, _p, _k)


