"""Issue 12, field faults caught at admission and by `slmctl validate` (same rules, same words).

- Item 1: the CR name must give every child a name valid for its kind (Service: DNS-1035).
- "Also": messages say the fix in words, never a regular expression.
- "Also": no CEL rule fails to evaluate on any shape the schema admits.
- Kin of item 1: every value the spec copies into a child (nodeSelector, tolerations,
  podAnnotations, NetworkPolicy selectors, the GPU product label, quantities) is checked
  against the child's own rule, so the API server never refuses the child with a 422.
"""

from __future__ import annotations

import copy
import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_operator import api
from slm_operator.crdgen import build_crd
from slm_operator.validate import _cel_errors, _schema, defaulted, validate

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
SHA = "0123456789abcdef0123456789abcdef01234567"
ONNX = {"model": {"source": "hf://Qwen/Qwen3-0.6B", "revision": SHA},
        "engine": {"name": "onnxruntime"}, "quantization": {"format": "onnx", "type": "int4"}}

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def body(spec: dict[str, Any], name: str = "m") -> dict[str, Any]:
    return {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment",
            "metadata": {"name": name, "namespace": "ns", "uid": "uid-1"}, "spec": copy.deepcopy(spec)}


def problems(spec: dict[str, Any], name: str = "m") -> list[str]:
    return validate(body(spec, name), check_fit=False)


# -- item 1: child names ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["phi-3.5-mini", "3b-model", "Qwen3", "qwen_3", "a" * 41, "qwen3-"])
def test_a_name_a_child_cannot_carry_is_refused_in_words(name: str) -> None:
    errs = problems(ONNX, name)
    assert errs, f"{name} must be refused"
    assert any("metadata.name" in e for e in errs), errs
    if len(name) <= api.MAX_NAME_LENGTH:
        assert any("DNS-1035" in e and "lower-case letter" in e for e in errs), errs
    for e in errs:
        assert "^" not in e and "[a-z" not in e, f"a regular expression in the message: {e}"


def test_phi_3_5_mini_is_refused_by_the_crd_rule_and_by_the_operator() -> None:
    crd_rules = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"]
    assert any(r["message"] == api.NAME_MESSAGE for r in crd_rules)
    # Evaluated the way admission evaluates it: the root rules on the object with its metadata.
    # The rule carries fieldPath .metadata.name, so both kube-apiserver and validate name the field.
    errs = _cel_errors({"metadata": {"name": "phi-3.5-mini"}, "spec": {}}, {"x-kubernetes-validations": crd_rules}, "")
    assert errs == [f"metadata.name: {api.NAME_MESSAGE}"]
    with pytest.raises(Exception, match="DNS-1035"):  # a CR admitted before this rule: InvalidSpec
        api.SLMDeployment.model_validate(body(ONNX, "phi-3.5-mini"))


def _check_child(obj: dict[str, Any]) -> list[str]:
    """Every name in a rendered child against the rule the API server applies to it."""
    bad: list[str] = []
    kind, meta = obj["kind"], obj["metadata"]
    name = meta["name"]
    if kind == "Service":
        if not (DNS1035.match(name) and len(name) <= 63):
            bad.append(f"Service {name}: not a DNS-1035 label")
    elif not (DNS1123_SUBDOMAIN.match(name) and len(name) <= 253):
        bad.append(f"{kind} {name}: not a DNS-1123 subdomain")
    if kind == "Job" and len(name) > 63:  # the Job controller puts its name in a label value
        bad.append(f"Job {name}: longer than 63, the job-name label refuses it")

    def labels(where: str, m: dict[str, str] | None) -> None:
        for k, v in (m or {}).items():
            if not re.fullmatch(api.LABEL_KEY_PATTERN, k) or not (LABEL_VALUE.match(v) and len(v) <= 63):
                bad.append(f"{kind} {name} {where}: {k}={v}")

    labels("labels", meta.get("labels"))
    spec = obj.get("spec") or {}
    labels("selector", (spec.get("selector") or {}).get("matchLabels") if isinstance(spec.get("selector"), dict)
           and "matchLabels" in spec["selector"] else spec.get("selector") if kind == "Service" else None)
    template = (spec.get("template") or (spec.get("jobTemplate") or {}).get("spec", {}).get("template") or {})
    if template:
        labels("pod labels", template.get("metadata", {}).get("labels"))
        pod = template.get("spec", {})
        labels("nodeSelector", pod.get("nodeSelector"))
        for v in pod.get("volumes", []):
            if not (DNS1123_LABEL.match(v["name"]) and len(v["name"]) <= 63):
                bad.append(f"{kind} {name}: volume {v['name']}")
        for ctr in pod.get("containers", []) + pod.get("initContainers", []):
            if not (DNS1123_LABEL.match(ctr["name"]) and len(ctr["name"]) <= 63):
                bad.append(f"{kind} {name}: container {ctr['name']}")
            for port in ctr.get("ports", []):
                if "name" in port and not (len(port["name"]) <= 15 and DNS1123_LABEL.match(port["name"])):
                    bad.append(f"{kind} {name}: port {port['name']}")
    return bad


def _render(doc: dict[str, Any]) -> list[dict[str, Any]]:
    from slm_operator.render import RenderContext, render

    cr = api.SLMDeployment.model_validate(defaulted(doc))
    return render(cr, RenderContext(service_monitor_crd=True))


NAMES = ["a", "m", "qwen3-small", "phi-3-5-mini", "a" * api.MAX_NAME_LENGTH,
         "z" + "-9" * ((api.MAX_NAME_LENGTH - 1) // 2)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_admitted_name_gives_every_child_a_valid_name(path: Path, name: str) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        doc = {**doc, "metadata": {**doc["metadata"], "name": name, "namespace": "ns", "uid": "u"}}
        assert validate(doc, check_fit=False) == []
        bad = [b for child in _render(doc) for b in _check_child(child)]
        assert bad == []


def test_the_cr_name_rule_is_at_least_as_strict_as_every_child_rule() -> None:
    """Whatever the name pattern admits is a DNS-1035 label, hence a DNS-1123 label, a subdomain
    and a label value; and the longest child name still fits."""
    rx = re.compile(api.NAME_PATTERN)
    rng = random.Random(12)
    alphabet = "abz09-."
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
        if rx.fullmatch(s):
            assert DNS1035.match(s) and DNS1123_LABEL.match(s) and DNS1123_SUBDOMAIN.match(s) and LABEL_NAME.match(s)
    longest_suffix = len("-quantize-") + 8
    assert api.MAX_NAME_LENGTH + longest_suffix <= 63 - 5


# -- values copied into children --------------------------------------------------------------

BAD_VALUES = [
    ({"nodeSelector": {"pool": "gpu nodes"}}, "nodeSelector values"),
    ({"nodeSelector": {"-pool": "gpu"}}, "nodeSelector keys"),
    ({"nodeSelector": {"pool": "x" * 64}}, "nodeSelector"),
    ({"podAnnotations": {"bad key!": "v"}}, "podAnnotations keys"),
    ({"tolerations": [{"value": "x"}]}, "operator must be Exists when key is empty"),
    ({"tolerations": [{"key": "k", "operator": "Exists", "value": "x"}]},
     "value must be empty when operator is Exists"),
    ({"tolerations": [{"key": "k", "operator": "Exists", "tolerationSeconds": 5, "effect": "NoSchedule"}]},
     "tolerationSeconds needs effect NoExecute"),
    ({"tolerations": [{"key": "bad key", "operator": "Exists"}]}, "tolerations[].key must be a label key"),
    ({"access": {"allowedFrom": [{"podSelector": {"app": "chat frontend"}}]}}, "podSelector values"),
    ({"access": {"allowedFrom": [{"namespaceSelector": {"team/": "a"}}]}}, "namespaceSelector keys"),
    ({"resources": {"cpu": "1..5"}}, "resources.cpu must be a Kubernetes quantity"),
    ({"resources": {"memory": "16GB"}}, "resources.memory must be a Kubernetes quantity"),
    ({"resources": {"memory": "-1Gi"}}, "resources.memory must be a Kubernetes quantity"),
    ({"storage": {"size": "20 Gi"}}, "storage.size must be a Kubernetes quantity"),
    ({"storage": {"storageClassName": "Fast_SSD"}}, "storage.storageClassName must be a StorageClass name"),
    ({"engine": {"name": "onnxruntime", "image": "ghcr.io/Org/slm server:1"}},
     "engine.image must be an image reference"),
    ({"resources": {"gpu": {"count": 1, "product": "-NVIDIA-L4"}}}, "nvidia.com/gpu.product label value"),
    ({"access": {"apiKeySecretRef": {"name": "Api_Key"}}}, "a Secret name"),
    ({"engine": {"name": "ollama", "ollama": {"keepAlive": "5 minutes"}}}, "keepAlive must be -1"),
]


@pytest.mark.parametrize(("extra", "expect"), BAD_VALUES, ids=[e for _, e in BAD_VALUES])
def test_values_a_child_would_refuse_are_refused_in_words(extra: dict[str, Any], expect: str) -> None:
    spec = {**copy.deepcopy(ONNX), **extra}
    if spec["engine"]["name"] == "ollama":
        spec["quantization"] = {"format": "gguf"}
    errs = problems(spec)
    assert any(expect in e for e in errs), errs
    for e in errs:
        assert not re.search(r"\^|\[a-z|\\\.|\{0,", e), f"a regular expression in the message: {e}"


GOOD_VALUES = [
    {"nodeSelector": {"node.kubernetes.io/instance-type": "g5.xlarge", "pool": ""}},
    {"tolerations": [{"operator": "Exists"}, {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                     {"key": "spot", "value": "true", "effect": "NoExecute", "tolerationSeconds": 30}]},
    {"podAnnotations": {"example.com/team": "any value, with spaces"}},
    {"resources": {"cpu": "500m", "memory": "1.5Gi"}},
    {"resources": {"cpu": ".5", "memory": "2e9"}},
    {"storage": {"size": "1Ti", "storageClassName": "premium-rwo.v2"}},
    {"engine": {"name": "onnxruntime", "image": "localhost:5000/slm/onnx-server:0.1@sha256:" + "a" * 64}},
    {"access": {"apiKeySecretRef": {"name": "corp.api-key", "key": "KEY_1"}}},
]


@pytest.mark.parametrize("extra", GOOD_VALUES)
def test_values_children_accept_are_admitted(extra: dict[str, Any]) -> None:
    assert problems({**copy.deepcopy(ONNX), **extra}) == []


# -- "Also": messages in words ------------------------------------------------------------------

def test_a_hub_url_as_source_is_answered_with_the_hf_form() -> None:
    errs = problems({**ONNX, "model": {"source": "https://huggingface.co/Qwen/Qwen3-0.6B", "revision": "main"}})
    assert len(errs) == 1 and errs[0].startswith("spec.model.source: ")
    assert "hf://ORG/NAME" in errs[0] and "hf://Qwen/Qwen3-0.6B" in errs[0]
    assert "^" not in errs[0] and "[A-Za-z" not in errs[0]


def _walk(node: Any, path: str = "") -> Any:
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def test_no_schema_pattern_and_every_rule_message_is_words() -> None:
    """A JSON-schema `pattern` makes the API server answer with the regex itself: every pattern is
    a CEL rule with a sentence instead, and every string a rule reads is bounded (CEL cost)."""
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "pattern" not in node, path
        for rule in node.get("x-kubernetes-validations", []):
            msg = rule["message"]
            assert not re.search(r"\^|\[a-z|\\\.|\{0,|\$'", msg), (path, msg)
            if ".matches(" in rule["rule"] and node.get("type") == "string":
                assert "maxLength" in node, path
        if node.get("type") == "object" and "additionalProperties" in node and "x-kubernetes-validations" in node:
            assert "maxProperties" in node, path


# -- "Also": no CEL rule fails to evaluate ------------------------------------------------------

def _sample(schema: dict[str, Any], rng: random.Random, depth: int = 0) -> Any:
    if "enum" in schema:
        return rng.choice(schema["enum"])
    t = schema.get("type")
    if t == "object":
        if "properties" in schema:
            out = {}
            for k, sub in schema["properties"].items():
                if k in schema.get("required", []) or rng.random() < 0.5:
                    out[k] = _sample(sub, rng, depth + 1)
            return out
        if "additionalProperties" in schema:
            return {f"k{i}": _sample(schema["additionalProperties"], rng, depth + 1) for i in range(rng.randint(0, 2))}
        return {}
    if t == "array":
        return [_sample(schema["items"], rng, depth + 1) for _ in range(rng.randint(0, 2))]
    if t == "integer":
        lo, hi = schema.get("minimum", 0), schema.get("maximum", 100)
        return rng.choice([lo, hi, (lo + hi) // 2])
    if t == "boolean":
        return rng.random() < 0.5
    return rng.choice(["", "a", "Q4_K_M", "fp16", "hf://a/b"])


def _default(obj: Any, schema: dict[str, Any]) -> Any:
    """Structural defaulting, as the API server does it before the CEL rules run."""
    from slm_operator.validate import structural_defaults

    return structural_defaults(obj, schema)


SHAPES = [{"quantization": {"type": "Q4_K_M"}}, {"quantization": {}}, {"resources": {}},
          {"resources": {"gpu": {}}}, {"engine": {"vllm": {}}}, {"autoscaling": {"maxReplicas": 2}},
          {"tolerations": [{}]}, {"model": {"source": "hf://a/b", "hub": {}}}]


def test_no_cel_rule_fails_to_evaluate_on_any_admitted_shape() -> None:
    schema = _schema()
    spec_schema = schema["properties"]["spec"]
    rng = random.Random(2026)
    shapes = [copy.deepcopy(s) for s in SHAPES] + [_sample(spec_schema, rng) for _ in range(300)]
    for spec in shapes:
        spec.setdefault("model", {"source": "hf://a/b"})
        spec["model"].setdefault("source", "hf://a/b")
        obj = _default({"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "m"}, "spec": spec},
                       schema)
        failed = [e for e in _cel_errors(obj, schema, "") if "failed to evaluate" in e]
        assert failed == [], spec


def test_quantization_type_without_format_is_answered_not_crashed() -> None:
    errs = problems({"model": ONNX["model"], "quantization": {"type": "Q4_K_M"}})
    assert errs == ["spec: quantization.type needs quantization.format (or an engine.name whose default format "
                    "takes that type): e.g. format: gguf for Q4_K_M, onnx for int4, awq for w4a16"]
    # An engine whose default format takes the type needs no format.
    assert problems({"model": ONNX["model"], "engine": {"name": "ollama"}, "quantization": {"type": "Q5_K_M"}}) == []


def test_a_type_without_format_reaches_sizing() -> None:
    from slm_operator.resolve import resolve

    doc = body({"model": ONNX["model"], "engine": {"name": "ollama"}, "quantization": {"type": "Q5_K_M"}})
    r = resolve(api.SLMDeployment.model_validate(defaulted(doc)).spec)
    assert (r.format, r.qtype) == ("gguf", "Q5_K_M")


def test_every_field_documented_immutable_keeps_its_transition_rule() -> None:
    """A field's pattern rule must add to its other rules, not replace them (model.source lost
    `self == oldSelf` once that way)."""
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    immutable = [(path, node) for path, node in _walk(schema) if "mmutable" in node.get("description", "")
                 and "type" in node]
    assert {p.rsplit(".", 1)[-1] for p, _ in immutable} >= {"source", "storageClassName"}
    for path, node in immutable:
        assert any(r["rule"] == "self == oldSelf" for r in node.get("x-kubernetes-validations", [])), path
    source = schema["properties"]["spec"]["properties"]["model"]["properties"]["source"]
    assert [r["rule"].split("(")[0] for r in source["x-kubernetes-validations"]] == ["self.matches", "self == oldSelf"]
