"""The checked-in CRD is exactly what the typed models generate."""

from pathlib import Path

import yaml

from slm_operator import crdgen

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "slm.ai_slmdeployments.yaml"


def test_checked_in_crd_matches_generation() -> None:
    assert CRD.read_text() == crdgen.render_yaml(), "run `make crds` and commit crds/"


def test_crd_shape() -> None:
    crd = yaml.safe_load(CRD.read_text())
    v = crd["spec"]["versions"][0]
    assert crd["spec"]["names"]["shortNames"] == ["slm"]
    assert v["subresources"] == {"status": {}}
    cols = {c["name"]: c for c in v["additionalPrinterColumns"]}
    assert list(cols)[:7] == ["Engine", "Model", "Quantization", "Ready", "Replicas", "Endpoint", "Age"]
    assert cols["Message"]["priority"] == 1
    spec = v["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["model"]["properties"]["trustRemoteCode"]["default"] is False
    assert spec["properties"]["storage"]["properties"]["retainPolicy"]["default"] == "Retain"


def _walk(node, found):
    if isinstance(node, dict):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node
        found.extend(r["rule"] for r in node.get("x-kubernetes-validations", []))
        for v in node.values():
            _walk(v, found)
    elif isinstance(node, list):
        for v in node:
            _walk(v, found)


def test_schema_is_structural_and_carries_cel_rules() -> None:
    rules: list[str] = []
    _walk(crdgen.build_crd(), rules)
    assert any("oldSelf" in r for r in rules), "immutable fields need transition rules"
    assert any("minReplicas <= self.maxReplicas" in r for r in rules)
    assert any("size(self.metadata.name)" in r for r in rules)
