"""The only module that sends requests for children and status (lightkube, async).

Every request is counted by verb and kind (slm_operator_api_requests_total) so that
benchmarks and tests can prove "zero writes when nothing changed".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.codecs import resource_registry
from lightkube.core import resource as lk_resource
from lightkube.generic_resource import GenericGlobalResource, GenericNamespacedResource, create_namespaced_resource
from lightkube.types import PatchType

from slm_operator import api, metrics
from slm_operator.constants import FIELD_MANAGER

log = logging.getLogger(__name__)

SLMResource = create_namespaced_resource(api.GROUP, api.VERSION, api.KIND, api.PLURAL)
ServiceMonitorResource = create_namespaced_resource(
    "monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors")


_RAW: dict[tuple[str, str], Any] = {}


def raw_resource(api_version: str, kind: str) -> Any:
    """The lightkube resource class the operator sends and reads `kind` with: lightkube's
    generic (dict) resource carrying the typed class's API info (plural, scope, verbs), made
    once per kind and not registered (the typed class stays the registry's).

    Why not the typed class: its answers and watch events are decoded into msgspec Structs that
    `to_dict` then walks back into dicts in Python; the operator only ever wants the dicts
    (the cache, the diff). That round trip was 6.5 % of the operator's CPU at N = 1000 (py-spy,
    bench/controlplane). A generic class is decoded by msgspec straight into plain dicts, with
    every field the server sent (the typed class drops fields newer than its model).

    Raises whatever `resource_registry.load` raises for a kind lightkube does not know.
    """
    key = (api_version, kind)
    cls = _RAW.get(key)
    if cls is None:
        typed = resource_registry.load(api_version, kind)
        if issubclass(typed, (GenericNamespacedResource, GenericGlobalResource)):
            cls = typed  # already dicts (a CRD's generic resource)
        else:
            base = GenericNamespacedResource if issubclass(typed, lk_resource.NamespacedResource) \
                else GenericGlobalResource
            cls = type(kind, (base,), {"_api_info": typed._api_info})
        _RAW[key] = cls
    return cls


def resource_for(obj: dict[str, Any]) -> Any:
    """`raw_resource` of a manifest's apiVersion and kind."""
    return raw_resource(obj["apiVersion"], obj["kind"])


# 4xx answers that will not change by retrying the same request soon: the object (or the
# operator's rights, a quota, an admission webhook) must change first. 408/409/429 are
# transient; a namespace being deleted (403 "being terminated") is handled by the work queue.
_TRANSIENT_4XX = {408, 409, 429}


def refusal(e: BaseException) -> tuple[int, str] | None:
    """(HTTP code, the API server's message) when `e` is the server refusing a write for good
    (a 4xx such as 422 Invalid, 403 Forbidden, 400 BadRequest, 404 NotFound), else None."""
    if not isinstance(e, ApiError):
        return None
    code = getattr(e.status, "code", None) or 0
    message = getattr(e.status, "message", "") or ""
    if not 400 <= code < 500 or code in _TRANSIENT_4XX:
        return None
    if code == 403 and "being terminated" in message:
        return None
    return code, message


EventCallback = Callable[[str, dict[str, Any]], None]
ListCallback = Callable[[str | None, list[dict[str, Any]]], None]


# Idle connections kept beyond the in-flight limit: a watch's connection (one per child kind and
# watched namespace, plus pods and SLMDeployments) is idle between a stream's end (the server's
# timeout) and its next list, and is reused then instead of reopened.
WATCH_CONNECTIONS = 16


def make_client(max_in_flight: int) -> AsyncClient:
    """lightkube's AsyncClient (kubeconfig or in-cluster config from the environment, as
    lightkube finds it) whose connection pool keeps `max_in_flight` + WATCH_CONNECTIONS
    connections alive.

    Why: httpx keeps at most 20 idle connections by default; a burst above that closes the
    surplus, and the next burst opens them again, each with a TLS handshake (connects were 4 %
    and the pool's upkeep 9.7 % of the operator's CPU at N = 100 without an in-flight limit,
    py-spy, bench/controlplane). With `Kube`'s in-flight limit no more connections than this
    are ever busy at once, so after warm-up none is reopened.

    Raises lightkube's ConfigError when no configuration is found."""
    import httpx2
    from lightkube.config.client_adapter import verify_cluster
    from lightkube.config.kubeconfig import KubeConfig

    config = KubeConfig.from_env().get()
    keep = max_in_flight + WATCH_CONNECTIONS
    transport = httpx2.AsyncHTTPTransport(
        verify=verify_cluster(config.cluster, config.user, config.abs_file),
        limits=httpx2.Limits(max_connections=None, max_keepalive_connections=keep))
    return AsyncClient(config=config, field_manager=FIELD_MANAGER, transport=transport)


class Kube:
    """Thin, counted wrapper around lightkube's AsyncClient.

    `max_in_flight` (None: no limit) bounds the requests sent at once, watches and their
    lists apart: the work queue's workers each send all of a CR's children together, and on
    a small control plane a hundred concurrent requests queue inside the API server (and its
    connections inside the client) rather than finish sooner. Further requests wait their turn
    here, without a timeout of their own."""

    def __init__(self, client: AsyncClient | None = None, *, max_in_flight: int | None = None) -> None:
        self.client = client or AsyncClient(field_manager=FIELD_MANAGER)
        self._slots = asyncio.Semaphore(max_in_flight) if max_in_flight else contextlib.nullcontext()

    @staticmethod
    def _count(verb: str, kind: str) -> None:
        metrics.API_REQUESTS.labels(verb=verb, kind=kind).inc()

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply (force, field manager slm-operator); returns the object as the
        server stored it, so the caller can cache it before the watch brings it (a reconcile
        in between would otherwise see no child and apply it again)."""
        self._count("patch", obj["kind"])
        meta = obj["metadata"]
        async with self._slots:
            res = await self.client.patch(resource_for(obj), meta["name"], obj, namespace=meta.get("namespace"),
                                          patch_type=PatchType.APPLY, field_manager=FIELD_MANAGER, force=True)
        return _as_dict(res, obj)

    async def create(self, obj: dict[str, Any]) -> bool:
        """Create; False when it already exists (used for create-once objects)."""
        self._count("create", obj["kind"])
        try:
            async with self._slots:
                await self.client.create(resource_for(obj).from_dict(obj),
                                         namespace=obj["metadata"].get("namespace"))
        except ApiError as e:
            if e.status.code == 409:
                return False
            raise
        return True

    async def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        self._count("get", kind)
        try:
            async with self._slots:
                res = await self.client.get(raw_resource(api_version, kind), name, namespace=namespace)
        except ApiError as e:
            if e.status.code == 404:
                return None
            raise
        return res.to_dict() if hasattr(res, "to_dict") else dict(res)

    async def delete(self, api_version: str, kind: str, name: str, namespace: str) -> None:
        self._count("delete", kind)
        try:
            async with self._slots:
                await self.client.delete(raw_resource(api_version, kind), name, namespace=namespace,
                                         cascade=_background())
        except ApiError as e:
            if e.status.code != 404:
                raise

    async def list_pods(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        self._count("list", "Pod")
        async with self._slots:
            return [p.to_dict() async for p in self.client.list(raw_resource("v1", "Pod"), namespace=namespace,
                                                                 labels=labels)]

    async def watch_pods(self, namespace: str | None, labels: dict[str, str], *,
                         summarise: Callable[[dict[str, Any]], dict[str, Any]],
                         on_list: ListCallback, on_event: EventCallback,
                         synced: asyncio.Event | None = None, server_timeout: int = 300,
                         max_backoff: float = 60.0,
                         sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """`watch` of the pods matching `labels`, each passed through `summarise` (only the
        summaries are kept: a pod is several KiB, a summary a few hundred bytes)."""
        await self.watch(raw_resource("v1", "Pod"), "Pod", namespace, labels, transform=summarise, on_list=on_list,
                         on_event=on_event, synced=synced, server_timeout=server_timeout,
                         max_backoff=max_backoff, sleep=sleep)

    async def watch(self, res: Any, kind: str, namespace: str | None, labels: dict[str, str], *,
                    transform: Callable[[dict[str, Any]], dict[str, Any]],
                    on_list: ListCallback, on_event: EventCallback,
                    synced: asyncio.Event | None = None, server_timeout: int = 300,
                    max_backoff: float = 60.0,
                    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """List, then watch, the objects of lightkube resource `res` (kind `kind`) matching
        `labels` (a server-side selector: only ours on the wire) in `namespace` (None: all
        namespaces), forever; returns only when cancelled.

        Each object is passed through `transform` at once (a plain dict in, what the caller
        keeps out). After each (re-)list `on_list(namespace, objects)` gets the complete set;
        then every watch event calls `on_event(type, object)` with type ADDED, MODIFIED or
        DELETED. `synced` is set after the first successful list. A watch that ends (server
        timeout) resumes from the last resourceVersion; a 410 Gone or any error leads to a fresh
        list, after an exponential back-off (1 s doubling to `max_backoff`) for errors. Costs one
        list plus one long-lived watch per (re-)list, whatever the number of objects.
        """
        scope = namespace or "*"
        backoff = 1.0
        warned = False
        while True:
            try:
                self._count("list", kind)
                listing = self.client.list(res, namespace=scope, labels=labels)
                items = [transform(o.to_dict()) async for o in listing]
                on_list(namespace, items)
                if synced is not None:
                    synced.set()
                self._count("watch", kind)
                async for op, obj in self.client.watch(res, namespace=scope, labels=labels,
                                                       resource_version=listing.resourceVersion,
                                                       server_timeout=server_timeout):
                    on_event(op, transform(obj.to_dict()))
                    backoff = 1.0
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                if e.status.code == 410:  # resourceVersion too old: list again at once
                    continue
                level = logging.WARNING if not warned else logging.DEBUG
                log.log(level, "%s watch in %s failed (%s %s); changes show late until it works; "
                        "retrying in %.0fs", kind, scope, e.status.code, e.status.message, backoff)
                warned = True
            except Exception as e:  # connection errors, timeouts: list again after a pause
                log.info("%s watch in %s interrupted (%s); listing again in %.0fs", kind, scope, e, backoff)
            await sleep(backoff)
            backoff = min(max_backoff, backoff * 2)

    async def patch_status(self, name: str, namespace: str, status: dict[str, Any]) -> str:
        """Merge-patch the status subresource; returns the SLMDeployment's new resourceVersion
        ('' when the answer has none), so a body the watch delivers late can be told apart."""
        self._count("patch", "SLMDeployment/status")
        async with self._slots:
            res = await self.client.patch(SLMResource.Status, name, {"status": status}, namespace=namespace,
                                          patch_type=PatchType.MERGE)
        meta = getattr(res, "metadata", None)
        return str(getattr(meta, "resourceVersion", "") or "")

    async def post_event(self, event: dict[str, Any]) -> None:
        self._count("create", "Event")
        try:
            async with self._slots:
                await self.client.create(raw_resource("v1", "Event")(event),
                                         namespace=event["metadata"]["namespace"])
        except ApiError as e:  # Events are best effort: never fail a reconcile on them.
            log.warning("could not post event: %s", e.status.message)

    async def crd_exists(self, name: str) -> bool:
        from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

        self._count("get", "CustomResourceDefinition")
        try:
            await self.client.get(CustomResourceDefinition, name)
        except ApiError as e:
            if e.status.code in (403, 404):
                return False
            raise
        return True

    async def close(self) -> None:
        await self.client.close()


# Job spec fields the reconciler reads from a cached Job (observe.retries: backoffLimit). A Job's
# template is immutable and never compared (an existing Job is never re-applied), and it is most
# of a Job's size: the watch cache keeps the rest.
_JOB_SPEC_KEPT = ("backoffLimit", "completions", "parallelism")


def compact_child(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """`body` (a child from the watch or an apply answer) as the cache keeps it: a Job without
    its pod template (see _JOB_SPEC_KEPT); anything else unchanged. Modifies and returns `body`."""
    if kind == "Job" and isinstance(body.get("spec"), dict):
        body["spec"] = {k: v for k, v in body["spec"].items() if k in _JOB_SPEC_KEPT}
    return body


def _as_dict(res: Any, sent: dict[str, Any]) -> dict[str, Any]:
    """The server's answer as a plain dict with apiVersion and kind (as the watch gives them),
    without managedFields (never read, often half the object)."""
    d = res.to_dict() if hasattr(res, "to_dict") else dict(res or {})
    d.setdefault("apiVersion", sent["apiVersion"])
    d.setdefault("kind", sent["kind"])
    meta = d.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return d


def _background() -> Any:
    from lightkube.types import CascadeType

    return CascadeType.BACKGROUND
