"""The only module that sends requests for children and status (lightkube, async).

Every request is counted by verb and kind (slm_operator_api_requests_total) so that
benchmarks and tests can prove "zero writes when nothing changed".
"""

from __future__ import annotations

import logging
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.codecs import resource_registry
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

from slm_operator import api, metrics
from slm_operator.constants import FIELD_MANAGER

log = logging.getLogger(__name__)

SLMResource = create_namespaced_resource(api.GROUP, api.VERSION, api.KIND, api.PLURAL)
ServiceMonitorResource = create_namespaced_resource(
    "monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors")


def resource_for(obj: dict[str, Any]) -> Any:
    return resource_registry.load(obj["apiVersion"], obj["kind"])


class Kube:
    """Thin, counted wrapper around lightkube's AsyncClient."""

    def __init__(self, client: AsyncClient | None = None) -> None:
        self.client = client or AsyncClient(field_manager=FIELD_MANAGER)

    @staticmethod
    def _count(verb: str, kind: str) -> None:
        metrics.API_REQUESTS.labels(verb=verb, kind=kind).inc()

    async def apply(self, obj: dict[str, Any]) -> None:
        self._count("patch", obj["kind"])
        meta = obj["metadata"]
        await self.client.patch(resource_for(obj), meta["name"], obj, namespace=meta.get("namespace"),
                                patch_type=PatchType.APPLY, field_manager=FIELD_MANAGER, force=True)

    async def create(self, obj: dict[str, Any]) -> bool:
        """Create; False when it already exists (used for create-once objects)."""
        self._count("create", obj["kind"])
        try:
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
            res = await self.client.get(resource_registry.load(api_version, kind), name, namespace=namespace)
        except ApiError as e:
            if e.status.code == 404:
                return None
            raise
        return res.to_dict() if hasattr(res, "to_dict") else dict(res)

    async def delete(self, api_version: str, kind: str, name: str, namespace: str) -> None:
        self._count("delete", kind)
        try:
            await self.client.delete(resource_registry.load(api_version, kind), name, namespace=namespace,
                                     cascade=_background())
        except ApiError as e:
            if e.status.code != 404:
                raise

    async def list_pods(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        from lightkube.resources.core_v1 import Pod

        self._count("list", "Pod")
        return [p.to_dict() async for p in self.client.list(Pod, namespace=namespace, labels=labels)]

    async def patch_status(self, name: str, namespace: str, status: dict[str, Any]) -> None:
        self._count("patch", "SLMDeployment/status")
        await self.client.patch(SLMResource.Status, name, {"status": status}, namespace=namespace,
                                patch_type=PatchType.MERGE)

    async def post_event(self, event: dict[str, Any]) -> None:
        from lightkube.resources.core_v1 import Event

        self._count("create", "Event")
        try:
            await self.client.create(Event.from_dict(event), namespace=event["metadata"]["namespace"])
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


def _background() -> Any:
    from lightkube.types import CascadeType

    return CascadeType.BACKGROUND
