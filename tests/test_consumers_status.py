"""The operator reads the access.apiKeys Secret with the gateway's own parser: SecretNotFound when
it is missing, InvalidApiKeyEntry naming the Secret and each bad entry, the facts render needs
(limits -> a limit store, keyRef Secrets -> projected into the gateway's folder)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from slm_operator import api
from slm_operator.reconciler import Reconciler
from slm_operator.render import RenderContext
from slm_operator.render.common import ConsumerFacts


class SecretsOnly:
    """The one call _consumers makes (Kube.get) over an in-memory namespace of Secrets."""

    def __init__(self, secrets: dict[str, dict[str, str]]) -> None:
        self.secrets = secrets

    async def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        assert (api_version, kind) == ("v1", "Secret")
        data = self.secrets.get(name)
        if data is None:
            return None
        return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def _cr() -> api.SLMDeployment:
    return api.SLMDeployment.model_validate({
        "apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment",
        "metadata": {"name": "m", "namespace": "ns", "uid": "u"},
        "spec": {"model": {"source": "hf://Qwen/Qwen3-0.6B"}, "engine": {"name": "onnxruntime"},
                 "access": {"apiKeys": {"secretRef": {"name": "consumers"}}}}})


def _consumers(secrets: dict[str, dict[str, str]]) -> tuple[ConsumerFacts, str | None, str | None, list[str]]:
    rec = Reconciler(SecretsOnly(secrets), None, RenderContext())  # type: ignore[arg-type]
    values: list[str] = []
    facts, missing, invalid = asyncio.run(rec._consumers(_cr(), values))
    return facts, missing, invalid, values


GOOD = "k" * 24
OTHER = "o" * 24


def test_missing_secret_is_secret_not_found() -> None:
    facts, missing, invalid, _ = _consumers({})
    assert missing is not None and "Secret consumers" in missing and "spec.access.apiKeys.secretRef" in missing
    assert invalid is None and facts == ConsumerFacts()


def test_limits_and_key_refs_become_render_facts() -> None:
    facts, missing, invalid, values = _consumers({
        "consumers": {"web": f"key: {GOOD}\nrequestsPerMinute: 5", "batch": "keyRef: {name: batch-key, key: token}"},
        "batch-key": {"token": OTHER}})
    assert (missing, invalid) == (None, None)
    assert facts == ConsumerFacts(limits=True, refs=(("batch-key", "token"),))
    assert GOOD in " ".join(values) and OTHER in values, "keys are masked in quoted pod messages"
    # Once the store's Service exists, the gateways dial its ClusterIP (no DNS on the request path):
    # read from the watch cache, found by its component label among the CR's children.
    from slm_operator import constants as c
    from slm_operator.cache import ChildCache

    cache = ChildCache()
    rec = Reconciler(SecretsOnly({}), cache, RenderContext())  # type: ignore[arg-type]
    assert rec._store_host(_cr()) is None, "before the Service exists: its DNS name (render)"
    cache.put("Service", {"metadata": {"name": "m-limits", "namespace": "ns", "ownerReferences": [{"uid": "u"}],
                                       "labels": {c.L_DEPLOYMENT: "m", c.L_COMPONENT: c.C_LIMITS}},
                          "spec": {"clusterIP": "10.96.7.7"}})
    assert rec._store_host(_cr()) == "10.96.7.7"


def test_bare_keys_need_no_store() -> None:
    facts, _, invalid, _ = _consumers({"consumers": {"ops": GOOD}})
    assert invalid is None and facts == ConsumerFacts(limits=False)


def test_malformed_entries_name_the_secret_and_the_entry() -> None:
    facts, missing, invalid, _ = _consumers({"consumers": {
        "web": f"key: {GOOD}\ntokensPerMinute: 100",
        "nokey": "requestsPerMinute: 5",
        "neg": f"key: {OTHER}\nrequestsPerMinute: -1",
        "ref": "keyRef: {name: absent, key: token}"}})
    assert missing is None and invalid is not None
    assert invalid.startswith("Secret consumers (spec.access.apiKeys): 3 entries were rejected")
    for part in ("nokey (MissingKey)", "neg (BadLimit)", "ref (KeyRefNotFound)"):
        assert part in invalid, part
    assert GOOD not in invalid and OTHER not in invalid, "no key in status"
    assert facts.limits, "the good entry keeps its limits (and the store)"
    assert facts.refs == (("absent", "token"),)


@pytest.mark.parametrize(("keys", "expect"), [
    ({}, "spec.access.apiKeys.secretRef"),
    ({"secretRef": {"name": "Bad_Name"}}, "spec.access.apiKeys.secretRef.name"),
    ({"secretRef": {"name": "consumers"}, "failopen": True}, "failopen"),
    ({"secretRef": {"name": "consumers"}, "failOpen": "yes"}, "spec.access.apiKeys.failOpen"),
])
def test_admission_names_the_bad_api_keys_field(keys: dict[str, Any], expect: str) -> None:
    from slm_operator.validate import validate

    doc = {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment", "metadata": {"name": "m"},
           "spec": {"model": {"source": "hf://Qwen/Qwen3-0.6B", "revision": "main"}, "access": {"apiKeys": keys}}}
    errors = validate(doc, check_fit=False)
    assert any(expect in e for e in errors), errors
    doc["spec"]["access"]["apiKeys"] = {"secretRef": {"name": "consumers"}, "failOpen": True}
    assert validate(doc, check_fit=False) == []
