"""The child cache lists a CR's children from their heads (apiVersion, component label, owner
uids) without decoding a body, and keeps heads and bodies in step."""

from __future__ import annotations

from typing import Any

import pytest

from slm_operator import cache as cache_mod
from slm_operator import constants as c
from slm_operator.cache import ChildCache


def child(kind: str, name: str, *, owner: str = "m", uid: str = "u1", component: str | None = None,
          api_version: str = "v1", rv: str = "1", **extra: Any) -> dict[str, Any]:
    labels = {c.L_DEPLOYMENT: owner} | ({c.L_COMPONENT: component} if component else {})
    return {"apiVersion": api_version, "kind": kind,
            "metadata": {"name": name, "namespace": "ns", "labels": labels, "resourceVersion": rv,
                         "ownerReferences": [{"uid": uid, "kind": "SLMDeployment", "name": owner}]},
            **extra}


def test_owned_lists_heads_sorted_and_decodes_no_body(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ChildCache()
    cache.put("Service", child("Service", "m-limits", component=c.C_LIMITS, spec={"clusterIP": "10.0.0.9"}))
    cache.put("Job", child("Job", "m-export", component=c.C_EXPORTER, api_version="batch/v1"))
    cache.put("Deployment", child("Deployment", "m", api_version="apps/v1"))
    cache.put("Deployment", child("Deployment", "m-other-uid", uid="u2", api_version="apps/v1"))
    cache.put("Deployment", child("Deployment", "x", owner="x", api_version="apps/v1"))

    def no_decode(_: bytes) -> dict[str, Any]:
        raise AssertionError("owned() decoded a body")

    monkeypatch.setattr(cache_mod, "_unpack", no_decode)
    got = [(kind, name, head.api_version, head.component) for kind, name, head in cache.owned("ns", "m", "u1")]
    assert got == [("Deployment", "m", "apps/v1", None), ("Job", "m-export", "batch/v1", c.C_EXPORTER),
                   ("Service", "m-limits", "v1", c.C_LIMITS)]
    assert cache.owned("ns", "m", None) == [] and cache.owned("ns", "m", "") == []


def test_heads_follow_updates_and_removal() -> None:
    cache = ChildCache()
    cache.put("Job", child("Job", "m-export", component=c.C_EXPORTER, api_version="batch/v1"))
    cache.put("Job", child("Job", "m-export", component="quantizer", api_version="batch/v1", rv="2"))
    (_, _, head), = cache.owned("ns", "m", "u1")
    assert head.component == "quantizer"
    cache.remove("Job", "ns", "m-export")
    assert cache.owned("ns", "m", "u1") == [] and cache.get("Job", "ns", "m-export") is None


def test_a_body_round_trips_exactly_and_an_identical_put_changes_nothing() -> None:
    cache = ChildCache()
    body = child("Deployment", "m", api_version="apps/v1",
                 spec={"replicas": 2, "template": {"metadata": {"creationTimestamp": None}},
                       "ratio": 0.5, "text": "ünïcode"})
    assert cache.put("Deployment", body)
    assert cache.get("Deployment", "ns", "m") == body
    assert not cache.put("Deployment", child("Deployment", "m", api_version="apps/v1",
                                             spec={"replicas": 2, "template": {"metadata": {"creationTimestamp": None}},
                                                   "ratio": 0.5, "text": "ünïcode"}))


def test_pod_summaries_compare_whatever_the_key_order() -> None:
    cache = ChildCache()
    assert cache.put_pod({"namespace": "ns", "name": "p", "owner": "m", "phase": "Running", "job": "j"})
    assert not cache.put_pod({"job": "j", "phase": "Running", "owner": "m", "name": "p", "namespace": "ns"})
    assert cache.pods("ns", "m", job="j") == [{"job": "j", "name": "p", "namespace": "ns", "owner": "m",
                                               "phase": "Running"}]
