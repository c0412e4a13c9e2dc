"""Generate the SLMDeployment CRD from the typed models in api.py.

Pydantic emits JSON Schema with $refs and anyOf-null for optionals; Kubernetes wants a
structural OpenAPI v3 schema. This module inlines references, unwraps optionals, keeps
descriptions, bounds, enums, patterns and CEL rules, and writes object defaults as ``{}``
so the API server fills nested defaults (which the CEL rules rely on).

Run ``python -m slm_operator.crdgen > crds/slm.ai_slmdeployments.yaml`` (``make crds``);
tests/test_crd.py fails when the checked-in file differs.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from slm_operator import api

KEEP = {
    "type", "description", "enum", "pattern", "minimum", "maximum", "minLength", "maxLength",
    "minItems", "maxItems", "maxProperties", "items", "properties", "required", "additionalProperties",
    "default", "x-kubernetes-validations",
}


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express union in a structural schema: {node}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        inner = _structural(options[0], defs)
        if rest.get("default", "absent") is None:
            rest.pop("default")
        inner_rules = inner.get("x-kubernetes-validations", [])
        merged = {**inner, **_structural(rest, defs)} if rest else inner
        if inner_rules and "x-kubernetes-validations" in rest:
            merged["x-kubernetes-validations"] = inner_rules + rest["x-kubernetes-validations"]
        if merged.get("type") == "object" and "maxLength" in merged:
            merged["maxProperties"] = merged.pop("maxLength")
        return merged
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in KEEP:
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = _structural(value, defs)
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "properties" in out:
        out["type"] = "object"
    if out.get("type") == "object" and "maxLength" in out:  # pydantic spells a dict's bound maxLength
        out["maxProperties"] = out.pop("maxLength")
    if isinstance(out.get("default"), dict):
        out["default"] = {}
    if out.get("default") is None:
        out.pop("default", None)
    return out


def spec_schema() -> dict[str, Any]:
    raw = api.SLMDeploymentSpec.model_json_schema(by_alias=True)
    return _structural(raw, raw.get("$defs", {}))


def build_crd() -> dict[str, Any]:
    ready = '.status.conditions[?(@.type=="Ready")]'
    schema = {
        "type": "object",
        "description": "SLMDeployment serves a Small Language Model: fetch, quantize, serve, "
                       "secure, scale and observe it.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            # name declared so the name rules below can point their fieldPath at it.
            "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
            "spec": spec_schema(),
            "status": {
                "type": "object",
                "description": "Observed state, written by the operator only.",
                "x-kubernetes-preserve-unknown-fields": True,
            },
        },
        "x-kubernetes-validations": [
            # fieldPath: the API server reports these against metadata.name, not the object root.
            {"rule": f"size(self.metadata.name) <= {api.MAX_NAME_LENGTH}", "message": api.NAME_LENGTH_MESSAGE,
             "fieldPath": ".metadata.name"},
            {"rule": f"self.metadata.name.matches({api._cel_string(api.NAME_PATTERN)})",
             "message": api.NAME_MESSAGE, "fieldPath": ".metadata.name"},
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/name": "slm-operator", "app.kubernetes.io/part-of": "slm-operator"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "categories": ["all", "slm"],
            },
            "versions": [{
                "name": api.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Engine", "type": "string", "jsonPath": ".status.engine"},
                    {"name": "Model", "type": "string", "jsonPath": ".spec.model.source"},
                    {"name": "Quantization", "type": "string", "jsonPath": ".status.quantization.type"},
                    {"name": "Ready", "type": "string", "jsonPath": f"{ready}.status"},
                    {"name": "Replicas", "type": "string", "jsonPath": ".status.replicas.summary"},
                    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    {"name": "Tier", "type": "string", "jsonPath": ".status.sizing.tier", "priority": 1},
                    {"name": "Message", "type": "string", "jsonPath": f"{ready}.message", "priority": 1},
                ],
                "schema": {"openAPIV3Schema": schema},
            }],
        },
    }


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_yaml() -> str:
    header = "# Generated by `python -m slm_operator.crdgen` from operator/slm_operator/api.py.\n"
    return header + yaml.dump(build_crd(), Dumper=_NoAliasDumper, sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render_yaml())
