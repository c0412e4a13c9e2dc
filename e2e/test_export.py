"""spec.export at admission on the local control plane: the API server and `slmctl validate` refuse
the same bad targets with the same sentence, naming spec.export[i].target and the fix; a good
list is accepted (server-side dry run). A few seconds. The pushes themselves run on the real node:
e2e/test_export_realnode.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.helpers import KubectlError, kubectl
from slm_operator.validate import validate

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
CR: dict[str, Any] = {
    "apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment", "metadata": {"name": "export-admission"},
    "spec": {"model": {"source": "hf://Qwen/Qwen3-0.6B", "revision": "main"},
             "quantization": {"format": "gguf", "type": "Q4_K_M"}, "serving": {"enabled": False}}}


@pytest.fixture(scope="module")
def crd(kubeconfig: str) -> str:
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    kubectl(kubeconfig, "wait", "--for=condition=Established", "crd/slmdeployments.slm.ai", "--timeout=60s")
    return kubeconfig


def _dry_run(kc: str, ns: str, cr: dict[str, Any]) -> str:
    return kubectl(kc, "-n", ns, "create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(cr))


@pytest.mark.parametrize("entry,field,words", [
    ({"target": "ftp://files/x"}, "spec.export[1].target", "must be s3://BUCKET/PREFIX"),
    ({"target": "s3://"}, "spec.export[1].target", "a bucket name of 3 to 63"),
    ({"target": "hf://acme", "credentialsSecret": {"name": "hf"}}, "spec.export[1].target", "hf://ORG/NAME"),
    ({"target": "oci://registry.local:5000/models:v1"}, "spec.export[1].target", "no tag"),
    ({"target": "hf://acme/models"}, "spec.export[1]", "needs credentialsSecret"),
    ({"target": "s3://bucket/p", "plainHttp": True}, "spec.export[1]", "plainHttp applies to oci://"),
])
def test_bad_export_targets_are_refused_alike(crd: str, namespace: str, entry: dict[str, Any], field: str,
                                              words: str) -> None:
    cr = copy.deepcopy(CR)
    cr["spec"]["export"] = [{"target": "s3://models/exports"}, entry]
    with pytest.raises(KubectlError) as err:
        _dry_run(crd, namespace, cr)
    server = " ".join(err.value.stderr.split())
    assert f"{field}: Invalid value" in server and words in server, server
    mine = validate(cr)
    assert any(e.startswith(f"{field}: ") and words in e for e in mine), mine


def test_good_export_targets_are_accepted(crd: str, namespace: str) -> None:
    cr = copy.deepcopy(CR)
    cr["spec"]["export"] = [
        {"target": "s3://models/exports", "credentialsSecret": {"name": "s3"}},
        {"target": "hf://acme/qwen3-gguf", "credentialsSecret": {"name": "hf"}},
        {"target": "oci://registry.local:5000/models/qwen3", "plainHttp": True}]
    assert "created (server dry run)" in _dry_run(crd, namespace, cr)
    assert validate(cr) == []
