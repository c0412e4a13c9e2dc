"""The operator sends and reads children with lightkube's generic (dict) resources that carry
the typed classes' API info: answers, lists and watch events decode straight into plain dicts
with every field the server sent, and the typed classes stay the registry's."""

from __future__ import annotations

import json

from lightkube.codecs import resource_registry
from lightkube.core.decoders import decode_list, decode_object
from lightkube.generic_resource import GenericGlobalResource, GenericNamespacedResource
from lightkube.resources.apps_v1 import Deployment

from slm_operator.kube import SLMResource, raw_resource, resource_for

BODY = {"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "m", "namespace": "ns", "creationTimestamp": "2026-12-01T00:00:00Z",
                     "managedFields": [{"manager": "slm-operator"}]},
        "spec": {"replicas": 2, "someFieldFromANewerKubernetes": {"on": True},
                 "template": {"metadata": {"creationTimestamp": None}}},
        "status": {"conditions": [{"type": "Available", "status": "True",
                                   "lastTransitionTime": "2026-12-01T00:00:05Z"}]}}


def test_answers_decode_into_plain_dicts_with_every_field() -> None:
    res = raw_resource("apps/v1", "Deployment")
    obj = decode_object(json.dumps(BODY).encode(), res)
    assert isinstance(obj, dict) and obj.to_dict() == BODY  # nothing dropped, times stay strings
    assert obj.metadata.namespace == "ns"  # lightkube's own request building reads this
    _, rv, items = decode_list(json.dumps({"metadata": {"resourceVersion": "7"}, "items": [BODY]}).encode(), res)
    assert rv == "7" and [i.to_dict() for i in items] == [BODY]


def test_api_info_is_the_typed_classes_and_the_registry_is_untouched() -> None:
    res = raw_resource("apps/v1", "Deployment")
    assert res is raw_resource("apps/v1", "Deployment") is resource_for(BODY)
    assert res._api_info == Deployment._api_info and issubclass(res, GenericNamespacedResource)
    assert resource_registry.load("apps/v1", "Deployment") is Deployment
    assert issubclass(raw_resource("v1", "Namespace"), GenericGlobalResource)
    assert raw_resource("slm.ai/v1alpha1", "SLMDeployment") is SLMResource  # already generic
