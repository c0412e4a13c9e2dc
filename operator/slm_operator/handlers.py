"""kopf wiring (thin): start-up, clean-up, HA peering and liveness; the operator's own
list+watch (`Kube.watch`) of SLMDeployments, their children and their pods feeds the work queue.

kopf runs no resource handler: it watched SLMDeployments until 2026-12, and its per-event
machinery (a worker task, a memory, an object logger, a handler invocation per event) was
23% of the operator's CPU at 1,000 SLMDeployments (py-spy, bench/README.md). With its own
watch the operator never writes to an SLMDeployment except its status (no kopf progress
annotations, no finalizers), as before. kopf's peering still pauses a standby replica;
`slm_operator.peering` mirrors that pause into the work queue and lists SLMDeployments again
on resume.

Children and pods are watched the same way, not by kopf:
- kopf filters labels client-side, so a kopf handler for Deployments would stream every
  Deployment of every watched namespace; our watch sends the managed-by selector to the API
  server, so only the operator's objects are on the wire;
- kopf keeps a memory (about 0.9 KB) and runs a worker per object it sees; eight child
  objects per SLMDeployment made that a large share of the operator's memory and CPU.
One list and one long-lived watch per (kind, watched namespace). Children keep the cache fresh
and undo edits made by someone else; their owner reconciles only when the cached copy changed
(not for the echo of the operator's own write, whose answer is cached already). Pods are kept
as compact summaries, and their owner reconciles only when a summary changes (a pull failure, a
crash, an eviction, a pod turning ready), never for the kubelet's routine status updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import kopf

from slm_operator import api, metrics, peering, podfaults
from slm_operator import constants as c
from slm_operator.cache import ChildCache
from slm_operator.kube import Kube, ServiceMonitorResource, SLMResource, compact_child, make_client, raw_resource
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
    watches: list[asyncio.Task[None]]
    slm_watches: list[asyncio.Task[None]]


STATE = State()


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
    settings.watching.server_timeout = 300    # kopf's peering watch
    settings.networking.request_timeout = 60
    STATE.kube = Kube(make_client(cfg.api_max_in_flight), max_in_flight=cfg.api_max_in_flight)
    STATE.cache = ChildCache()
    STATE.conditions = {}
    ctx = cfg.render_context(service_monitor_crd=await STATE.kube.crd_exists(
        "servicemonitors.monitoring.coreos.com"))
    STATE.reconciler = Reconciler(STATE.kube, STATE.cache, ctx, status_settle=cfg.status_settle_s)
    STATE.queue = WorkQueue(_reconcile, workers=cfg.workers)
    if peering.GATE.engaged:  # HA: a paused standby does no work (see slm_operator.peering)
        STATE.queue.handler = peering.gated(STATE.queue, STATE.queue.handler, peering.GATE)
        peering.GATE.on_resume.append(_list_slmdeployments_again)
        log.info("peering: the work queue stops while this replica is paused")
    await _start_watches(cfg)
    _start_slm_watches(cfg)
    STATE.queue.start()
    log.info("slm-operator started: %d children and %d pods cached, %d workers", len(STATE.cache),
             STATE.cache.pod_count(), cfg.workers)


SYNC_TIMEOUT = 30.0


def _pods_listed(namespace: str | None, summaries: list[dict[str, Any]]) -> None:
    """After a (re-)list: the cache holds exactly these pods; owners whose pods changed reconcile."""
    for key in STATE.cache.replace_pods(namespace, summaries):
        _enqueue(key)
    metrics.PODS_CACHED.set(STATE.cache.pod_count())


def _pod_event(op: str, summary: dict[str, Any]) -> None:
    """Keep the pod summary; reconcile the owner only when the summary changed."""
    ns, name = summary.get("namespace", ""), summary.get("name", "")
    if op == "DELETED":
        owner = STATE.cache.remove_pod(ns, name)
    else:
        owner = summary.get("owner") if STATE.cache.put_pod(summary) else None
    if owner:
        _enqueue((ns, owner))
    metrics.PODS_CACHED.set(STATE.cache.pod_count())


def _enqueue(key: tuple[str, str]) -> None:
    if hasattr(STATE, "queue"):
        STATE.queue.enqueue(key)


def _child_compactor(kind: str, api_version: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The transform of a watched kind (a child kind, or SLMDeployment: SLM_BODY): apiVersion
    and kind set (a list's items lack them), managedFields dropped (never read, often half an
    object), Jobs compacted."""

    def compact(d: dict[str, Any]) -> dict[str, Any]:
        d.setdefault("apiVersion", api_version)
        d.setdefault("kind", kind)
        meta = d.get("metadata")
        if isinstance(meta, dict):
            meta.pop("managedFields", None)
        return compact_child(kind, d)

    return compact


# An SLMDeployment from its watch as the queue keeps it.
SLM_BODY = _child_compactor(api.KIND, f"{api.GROUP}/{api.VERSION}")


def _children_listed(kind: str) -> Callable[[str | None, list[dict[str, Any]]], None]:
    """on_list of a child kind's watch: the cache holds exactly these; changed owners reconcile."""

    def listed(namespace: str | None, bodies: list[dict[str, Any]]) -> None:
        for key in STATE.cache.replace_kind(kind, namespace, bodies):
            _enqueue(key)

    return listed


def _child_changed(kind: str) -> Callable[[str, dict[str, Any]], None]:
    """on_event of a child kind's watch: keep it (or forget it); its owner reconciles only when
    the cache changed (someone else's edit, a controller's status), not for the echo of the
    operator's own write."""

    def changed(op: str, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        if op == "DELETED":
            owner = STATE.cache.remove(kind, ns, name, rv=meta.get("resourceVersion"))
        else:
            owner = (meta.get("labels") or {}).get(c.L_DEPLOYMENT) if STATE.cache.put(kind, body) else None
        if owner:
            _enqueue((ns, owner))

    return changed


def _child_resource(group: str, version: str, kind: str) -> Any:
    if kind == "ServiceMonitor":
        return ServiceMonitorResource
    return raw_resource(f"{group}/{version}" if group else version, kind)


async def _start_watches(cfg: OperatorConfig) -> None:
    """One list+watch per (child kind, watched namespace) and per watched namespace for pods
    (or one cluster-wide each), with the managed-by selector. Waits up to SYNC_TIMEOUT seconds
    for the first lists, so a restart sees its children and pods before the first reconcile
    (and writes nothing), without hanging when something cannot be listed."""
    namespaces: list[str | None] = list(cfg.namespaces) or [None]
    STATE.watches = []
    synced: list[tuple[str, asyncio.Event]] = []

    def start(what: str, ns: str | None, coro_for: Callable[[asyncio.Event], Any]) -> None:
        ev = asyncio.Event()
        synced.append((what, ev))
        STATE.watches.append(asyncio.create_task(coro_for(ev), name=f"{what}-watch-{ns or 'all'}"))

    for group, version, _plural, kind in CHILD_KINDS:
        if kind == "ServiceMonitor" and not STATE.reconciler.ctx.service_monitor_crd:
            continue
        res, api_version = _child_resource(group, version, kind), f"{group}/{version}" if group else version
        for ns in namespaces:
            start(kind, ns, lambda ev, res=res, kind=kind, av=api_version, ns=ns: STATE.kube.watch(
                res, kind, ns, MANAGED, transform=_child_compactor(kind, av), on_list=_children_listed(kind),
                on_event=_child_changed(kind), synced=ev))
    for ns in namespaces:
        start("Pod", ns, lambda ev, ns=ns: STATE.kube.watch_pods(
            ns, MANAGED, summarise=podfaults.summarise, on_list=_pods_listed, on_event=_pod_event, synced=ev))
    try:
        await asyncio.wait_for(asyncio.gather(*(ev.wait() for _, ev in synced)), SYNC_TIMEOUT)
    except TimeoutError:
        missing = sorted({what for what, ev in synced if not ev.is_set()})
        log.warning("%s not listed within %.0fs: the operator needs list and watch on them; until then "
                    "it may re-apply children it cannot see and pod faults show late",
                    ", ".join(missing), SYNC_TIMEOUT)


def _start_slm_watches(cfg: OperatorConfig) -> None:
    """One list+watch of SLMDeployments per watched namespace (or one cluster-wide), feeding
    the work queue; the tasks are STATE.slm_watches. Not awaited: the queue starts at once and
    takes each body as it is listed."""
    STATE.slm_watches = [
        asyncio.create_task(STATE.kube.watch(SLMResource, api.KIND, ns, {}, transform=SLM_BODY,
                                             on_list=_slmdeployments_listed, on_event=_slm_event),
                            name=f"SLMDeployment-watch-{ns or 'all'}")
        for ns in list(cfg.namespaces) or [None]]


def _list_slmdeployments_again() -> None:
    """On resuming after an HA pause (peering.GATE.on_resume): restart the SLMDeployment
    watches, whose first list refills the work queue the pause emptied."""
    for task in getattr(STATE, "slm_watches", []):
        task.cancel()
    _start_slm_watches(STATE.config)
    log.info("peering resumed this replica: listing SLMDeployments again")


def _slmdeployments_listed(namespace: str | None, bodies: list[dict[str, Any]]) -> None:
    """After a (re-)list: every listed SLMDeployment is queued with its body, and one the
    operator knew that is not listed (deleted while the watch was down) is forgotten."""
    listed = set()
    for body in bodies:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        listed.add(key)
        STATE.queue.update(key, body)
    for key in (set(STATE.queue.keys()) | set(STATE.conditions)) - listed:
        if namespace is None or key[0] == namespace:
            _slm_gone(key)


def _slm_event(op: str, body: dict[str, Any]) -> None:
    """A watch event of one SLMDeployment: queue its body, or forget it when deleted."""
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    if op == "DELETED":
        _slm_gone(key)
    else:
        STATE.queue.update(key, body)


def _slm_gone(key: tuple[str, str]) -> None:
    """An SLMDeployment was deleted: drop its queue entry, its reconciler memory and its
    condition series (its children go with it: owner references)."""
    STATE.queue.forget(key)
    STATE.reconciler.forget(*key)
    _count_conditions(STATE.conditions.pop(key, None), -1)
    _update_condition_gauge()
    _set_condition_series(key, {})


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    tasks = getattr(STATE, "slm_watches", []) + getattr(STATE, "watches", [])
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if hasattr(STATE, "queue"):
        await STATE.queue.stop()
    if hasattr(STATE, "kube"):
        await STATE.kube.close()
