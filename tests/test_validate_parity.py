"""slmctl validate answers as the API server does, in the cases the parity fuzzer found wrong.

Each case is a disagreement class e2e/test_admission_parity.py found between
`slm_operator.validate.validate` and a server-side dry-run on kube-apiserver v1.37 (strict
field validation); the expected answers are what that server said, recorded here so the fix
stays pinned without a cluster. The fuzzer re-checks them all against the live server.
"""

from __future__ import annotations

from typing import Any

import pytest

from slm_operator import api
from slm_operator.validate import validate


def _cr(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "p"}, "spec": spec}


def _fields(errors: list[str]) -> set[str]:
    return {e.split(": ", 1)[0] for e in errors}


PVC = {"source": "pvc://claim/model"}


@pytest.mark.parametrize(
    "spec",
    [
        {"model": PVC, "replicas": None},  # null fields are pruned before validation, then defaulted
        {"model": PVC, "engine": None},
        {"model": {**PVC, "contextLength": None}},
        {"model": PVC, "nodeSelector": {"a": None}},  # and so are null map values
        {"model": PVC, "tolerations": [{"key": "a", "value": None}]},
        {"model": {**PVC, "contextLength": 300.0}},  # an integral number decodes as an integer
        {"model": {**PVC, "contextLength": 1e3}},
        {"model": PVC, "replicas": 3.0},  # the rule `!has(self.replicas) || !has(self.autoscaling)` holds
        # Every rule that touches gpu.count is decided before it (no vllm, no autoscaling): CEL's
        # `||` absorbs the "expected int, got float64" error (the CI fuzzer found this one).
        {"model": PVC, "resources": {"gpu": {"count": 3.0}}},
        {"model": PVC, "tolerations": [{"key": "a", "operator": "Exists", "effect": "NoExecute",
                                         "tolerationSeconds": 3.0}]},
    ],
)
def test_admitted_like_the_api_server(spec: dict[str, Any]) -> None:
    assert validate(_cr(spec), check_fit=False) == []


@pytest.mark.parametrize(
    ("spec", "fields"),
    [
        # A null list item is not pruned: a type error at that index.
        ({"model": PVC, "engine": {"vllm": {"extraArgs": [None]}}}, {"spec.engine.vllm.extraArgs[0]"}),
        # A fractional number in an integer field.
        ({"model": {**PVC, "contextLength": 300.5}}, {"spec.model.contextLength"}),
        # A missing required field is named itself, not its parent.
        ({"model": {"revision": "main"}}, {"spec.model.source"}),
        ({"model": {**PVC, "s3CredentialsSecretRef": {}}}, {"spec.model.s3CredentialsSecretRef.name"}),
        ({}, {"spec.model"}),
        # Beside a value out of its enum, too long, of the wrong type or a missing field the API
        # server runs no CEL rule; neither does validate
        # (here the hf:// source without a revision and the llamacpp options go unreported).
        (
            {"model": {"source": "hf://org/name"}, "quantization": {"format": "VLLM"}, "engine": {"llamacpp": {}}},
            {"spec.quantization.format"},
        ),
        # Out-of-range numbers do not block the CEL rules: both are reported.
        ({"model": {"source": "hf://org/name"}, "replicas": -1}, {"spec.replicas", "spec.model"}),
        ({"model": {"source": "hf://org/name", "servedName": "a" * 129}}, {"spec.model.servedName"}),
        # An integer written as 3.0 passes the schema, but a CEL rule that touches it fails
        # ("expected int, got float64") where the rule sits, unless the other side of a || or
        # && decides; has(self.field) touches it too.
        ({"model": PVC, "autoscaling": {"maxReplicas": 4.0}}, {"spec.autoscaling"}),
        ({"model": PVC, "replicas": 3.0, "autoscaling": {"maxReplicas": 3}}, {"spec"}),
        (
            {"model": PVC, "autoscaling": {"maxReplicas": 3, "metrics": [{"type": "GPUUtilization",
                                                                          "targetPercent": 60.0}]},
             "resources": {"gpu": {"count": 1}}},
            {"spec.autoscaling.metrics[0]"},
        ),
        ({"model": PVC, "tolerations": [{"key": "a", "operator": "Exists", "effect": "NoSchedule",
                                          "tolerationSeconds": 3.0}]}, {"spec.tolerations[0]"}),
        (
            {"model": PVC, "engine": {"name": "vllm", "vllm": {"tensorParallelSize": 2.0}},
             "resources": {"gpu": {"count": 2}}},
            {"spec"},
        ),
        # ObjectMeta's RFC 1123 check runs beside a blocking schema error (the CRD's name rules do not).
        ({"model": PVC, "tolerations": [[1]], "_name": "x-"}, {"metadata.name", "spec.tolerations[0]"}),
        # Strict field validation refuses an unknown field before any schema check.
        ({"model": {**PVC, "bogus": 1}, "quantization": {"format": "x"}}, {"spec.model.bogus"}),
        # Pruning walks an object's keys whatever the schema's type: an object where a list or a
        # string belongs has unknown fields, and a list's items are walked with no schema.
        ({"model": PVC, "export": {"a": 1}}, {"spec.export.a"}),
        ({"model": {**PVC, "servedName": [{"a": 1}, [{"b": 2}]]}},
         {"spec.model.servedName[0].a", "spec.model.servedName[1][0].b"}),
        ({"model": PVC, "nodeSelector": {"a": {"b": 1}}}, {"spec.nodeSelector.a.b"}),
    ],
)
def test_rejected_naming_the_fields_the_api_server_names(spec: dict[str, Any], fields: set[str]) -> None:
    spec = dict(spec)
    cr = _cr(spec)
    cr["metadata"]["name"] = spec.pop("_name", "p")
    errors = validate(cr, check_fit=False)
    assert _fields(errors) == fields, errors


@pytest.mark.parametrize("name", ["a" * 41, "1abc", "a.b", "a_b"])
def test_name_rules_name_metadata_name(name: str) -> None:
    """The CRD's root rules on the name carry fieldPath .metadata.name: both report that field."""
    cr = _cr({"model": PVC})
    cr["metadata"]["name"] = name
    assert _fields(validate(cr, check_fit=False)) == {"metadata.name"}


def test_required_message_says_the_fix() -> None:
    errors = validate(_cr({"model": {"revision": "main"}}), check_fit=False)
    assert errors == ["spec.model.source: Required value: add spec.model.source"]


def test_schema_errors_alone_then_cel_once_fixed() -> None:
    """The user sees the CEL rule once the schema error is fixed, as with kubectl apply."""
    spec = {"model": {"source": "hf://org/name"}, "quantization": {"format": "VLLM"}}
    assert _fields(validate(_cr(spec), check_fit=False)) == {"spec.quantization.format"}
    spec["quantization"]["format"] = "gguf"
    assert any("model.revision is required" in e for e in validate(_cr(spec), check_fit=False))
