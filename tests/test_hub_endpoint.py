"""Hub endpoint and CA bundle (private mirrors, air-gapped clusters): what reaches the
quantization Job and its NetworkPolicy, what admission and the operator refuse, and how the
operator-wide setting and spec.model.hub combine."""

from __future__ import annotations

import copy
import json
from typing import Any

import pydantic
import pytest

from slm_operator import api, hub
from slm_operator.render import RenderContext, plan
from slm_operator.validate import defaulted, validate

SHA = "0123456789abcdef0123456789abcdef01234567"
ONNX = {"model": {"source": "hf://Qwen/Qwen3-0.6B", "revision": SHA},
        "engine": {"name": "onnxruntime"}, "quantization": {"format": "onnx", "type": "int4"}}
CA_FILE = "/var/run/secrets/slm-hub-ca/ca.crt"


def body(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment",
            "metadata": {"name": "m", "namespace": "ns", "uid": "uid-1"}, "spec": spec}


def cr(spec: dict[str, Any]) -> api.SLMDeployment:
    return api.SLMDeployment.model_validate(defaulted(body(spec)))


def with_hub(spec: dict[str, Any], **hub_spec: Any) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    out["model"]["hub"] = hub_spec
    return out


def job_and_policy(spec: dict[str, Any], defaults: hub.HubDefaults | None = None) -> tuple[dict, dict, dict]:
    """(quantize container, pod spec, quantizer NetworkPolicy spec)."""
    p = plan(cr(spec), RenderContext(hub=defaults or hub.HubDefaults()))
    assert p.job is not None
    pod = p.job["spec"]["template"]["spec"]
    (policy,) = [o for o in p.prepare if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "m-quantizer"]
    return pod["containers"][0], pod, policy["spec"]


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


# --- the Job and its NetworkPolicy --------------------------------------------------------------


def test_without_a_hub_setting_the_job_uses_the_public_hub() -> None:
    ctr, pod, policy = job_and_policy(ONNX)
    env = env_of(ctr)
    assert "HF_ENDPOINT" not in env and "SSL_CERT_FILE" not in env and "REQUESTS_CA_BUNDLE" not in env
    assert [e["name"] for e in ctr["env"]] == sorted(e["name"] for e in ctr["env"]), "env is sorted"
    assert not [v for v in pod["volumes"] if v["name"] == hub.CA_VOLUME]
    assert policy["egress"][1:] == [{"ports": [{"port": 443, "protocol": "TCP"}]}]
    assert policy["ingress"] == []


def test_operator_wide_endpoint_on_another_port_opens_that_port() -> None:
    ctr, _, policy = job_and_policy(ONNX, hub.HubDefaults(endpoint="http://hub-mirror.models.svc:8080"))
    assert env_of(ctr)["HF_ENDPOINT"] == "http://hub-mirror.models.svc:8080"
    assert {"ports": [{"port": 8080, "protocol": "TCP"}]} in policy["egress"], "a DNS host: any address"
    assert {"ports": [{"port": 443, "protocol": "TCP"}]} in policy["egress"]
    args = ctr["args"]
    assert args[args.index("--revision") + 1] == SHA, "the pinned commit still reaches the quantizer"
    assert "SSL_CERT_FILE" not in env_of(ctr)


def test_ip_endpoint_limits_the_extra_port_to_that_address_and_https_adds_no_rule() -> None:
    _, _, policy = job_and_policy(ONNX, hub.HubDefaults(endpoint="http://10.88.0.1:8089/"))
    assert policy["egress"][-1] == {"ports": [{"port": 8089, "protocol": "TCP"}],
                                    "to": [{"ipBlock": {"cidr": "10.88.0.1/32"}}]}
    ctr, _, policy = job_and_policy(ONNX, hub.HubDefaults(endpoint="https://hub.mirror.internal/hf"))
    assert env_of(ctr)["HF_ENDPOINT"] == "https://hub.mirror.internal/hf"
    assert len(policy["egress"]) == 2, "443 is open already"
    _, _, policy = job_and_policy(ONNX, hub.HubDefaults(endpoint="http://hub.mirror.internal"))
    assert policy["egress"][-1] == {"ports": [{"port": 80, "protocol": "TCP"}]}


def test_ca_bundle_is_a_read_only_secret_volume_and_only_its_path_is_in_env() -> None:
    defaults = hub.HubDefaults(endpoint="https://hub.mirror.internal", ca_bundle_secret="corp-ca",
                               ca_bundle_key="bundle.pem")
    ctr, pod, _ = job_and_policy(ONNX, defaults)
    env = env_of(ctr)
    assert env["SSL_CERT_FILE"] == CA_FILE and env["REQUESTS_CA_BUNDLE"] == CA_FILE
    (vol,) = [v for v in pod["volumes"] if v["name"] == hub.CA_VOLUME]
    assert vol == {"name": hub.CA_VOLUME, "secret": {"secretName": "corp-ca", "defaultMode": 0o440,
                                                      "items": [{"key": "bundle.pem", "path": "ca.crt"}]}}
    assert {"name": hub.CA_VOLUME, "mountPath": "/var/run/secrets/slm-hub-ca", "readOnly": True} in ctr["volumeMounts"]
    assert not [e for e in ctr["env"] if "valueFrom" in e], "nothing from the Secret goes into env"
    assert "corp-ca" not in json.dumps(ctr["args"])


def test_spec_overrides_each_field_of_the_operator_defaults() -> None:
    defaults = hub.HubDefaults(endpoint="https://hub.mirror.internal", ca_bundle_secret="corp-ca")
    spec = with_hub(ONNX, endpoint="http://team-mirror.ml.svc:8080")
    ctr, pod, policy = job_and_policy(spec, defaults)
    assert env_of(ctr)["HF_ENDPOINT"] == "http://team-mirror.ml.svc:8080"
    assert env_of(ctr)["SSL_CERT_FILE"] == CA_FILE, "the CA bundle still comes from the operator"
    assert {"ports": [{"port": 8080, "protocol": "TCP"}]} in policy["egress"]
    spec = with_hub(ONNX, caBundleSecretRef={"name": "team-ca"})
    ctr, pod, _ = job_and_policy(spec, defaults)
    assert env_of(ctr)["HF_ENDPOINT"] == "https://hub.mirror.internal", "the endpoint comes from the operator"
    (vol,) = [v for v in pod["volumes"] if v["name"] == hub.CA_VOLUME]
    assert vol["secret"]["secretName"] == "team-ca" and vol["secret"]["items"][0]["key"] == "ca.crt"


def test_changing_the_mirror_does_not_requantize() -> None:
    """Same commit, same bytes: the artifact key (and the Job name) ignore where they come from."""
    a = plan(cr(ONNX)).job
    b = plan(cr(ONNX), RenderContext(hub=hub.HubDefaults(endpoint="http://hub.mirror:8080"))).job
    c = plan(cr(with_hub(ONNX, endpoint="https://other.mirror"))).job
    assert a and b and c
    assert a["metadata"]["name"] == b["metadata"]["name"] == c["metadata"]["name"]


@pytest.mark.parametrize("source", ["s3://models-bucket/qwen", "pvc://models/qwen"])
def test_sources_other_than_hf_get_no_hub_settings(source: str) -> None:
    spec = copy.deepcopy(ONNX)
    spec["model"] = {"source": source}
    if source.startswith("s3://"):
        spec["model"]["s3CredentialsSecretRef"] = {"name": "s3"}
    defaults = hub.HubDefaults(endpoint="http://hub.mirror:8080", ca_bundle_secret="corp-ca")
    ctr, _, policy = job_and_policy(spec, defaults)
    assert not {"HF_ENDPOINT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"} & set(env_of(ctr))
    assert len(policy["egress"]) == 2
    assert hub.secret_refs(cr(spec).spec.model, defaults) == []


def test_secret_refs_name_the_field_for_the_missing_secret_message() -> None:
    defaults = hub.HubDefaults(ca_bundle_secret="corp-ca")
    assert hub.secret_refs(cr(ONNX).spec.model, defaults) == [
        ("the operator's hub.caBundleSecretName", api.SecretKeyRef(name="corp-ca", key="ca.crt"))]
    spec = with_hub(ONNX, caBundleSecretRef={"name": "team-ca", "key": "root.pem"})
    assert hub.secret_refs(cr(spec).spec.model, defaults) == [
        ("spec.model.hub.caBundleSecretRef", api.SecretKeyRef(name="team-ca", key="root.pem"))]
    assert hub.secret_refs(cr(ONNX).spec.model, hub.HubDefaults()) == []


# --- admission and parsing ----------------------------------------------------------------------

GOOD = ["https://hub.mirror.internal", "http://hub-mirror.models.svc:8080", "http://10.0.0.5:8080/hf/",
        "https://artifactory.corp.example/artifactory/api/huggingfaceml/hf-remote", "http://h:1",
        "http://h:65535"]
BAD = ["hub.mirror.internal", "ftp://hub.mirror", "https://user:secret@hub.mirror", "https://hub.mirror?x=1",
       "https://hub.mirror/#top", "http://hub.mirror:99999", "http://hub.mirror:0", "https://", "HTTPS://hub",
       "http://hub mirror", "http://-hub"]


@pytest.mark.parametrize("url", GOOD)
def test_admission_accepts_hub_urls(url: str) -> None:
    assert validate(body(with_hub(ONNX, endpoint=url)), check_fit=False) == []
    assert hub.parse_endpoint(url).url == url.rstrip("/")


@pytest.mark.parametrize("url", BAD)
def test_admission_and_the_operator_refuse_bad_hub_urls_with_the_fix(url: str) -> None:
    problems = validate(body(with_hub(ONNX, endpoint=url)), check_fit=False)
    assert problems == [f"spec.model.hub.endpoint: {api.HUB_ENDPOINT_MESSAGE}"], problems
    # The same rule in the CRD's CEL (what the API server runs), checked without pydantic.
    crd_rules = _crd_rules("hub", "endpoint")
    assert [r["message"] for r in crd_rules] == [api.HUB_ENDPOINT_MESSAGE]
    with pytest.raises(pydantic.ValidationError, match="must be an http:// or https:// URL"):
        api.SLMDeployment.model_validate(body(with_hub(ONNX, endpoint=url)))
    with pytest.raises(ValueError):
        hub.parse_endpoint(url)


def test_hub_settings_only_apply_to_hf_sources() -> None:
    spec = with_hub(ONNX, endpoint="https://hub.mirror.internal")
    spec["model"]["source"] = "s3://models-bucket/qwen"
    spec["model"].pop("revision")
    assert validate(body(spec), check_fit=False) == [
        "spec.model: model.hub only applies to hf:// sources: remove it, or use an hf:// source"]


def test_bad_ca_bundle_ref_is_refused_at_admission() -> None:
    problems = validate(body(with_hub(ONNX, caBundleSecretRef={"name": "Corp_CA"})), check_fit=False)
    assert problems and problems[0].startswith("spec.model.hub.caBundleSecretRef.name"), problems


def _crd_rules(*path: str) -> list[dict[str, str]]:
    from slm_operator.crdgen import build_crd

    node = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for part in ("model", *path):
        node = node["properties"][part]
    return node.get("x-kubernetes-validations", [])


# --- operator-wide settings -----------------------------------------------------------------


def test_operator_settings_from_env() -> None:
    got = hub.HubDefaults.from_env({"SLM_HUB_ENDPOINT": "http://hub.mirror:8080/",
                                    "SLM_HUB_CA_BUNDLE_SECRET": "corp-ca"})
    assert got == hub.HubDefaults(endpoint="http://hub.mirror:8080", ca_bundle_secret="corp-ca", ca_bundle_key="ca.crt")
    assert hub.HubDefaults.from_env({}) == hub.HubDefaults()
    assert hub.HubDefaults.from_env({"SLM_HUB_ENDPOINT": " ", "SLM_HUB_CA_BUNDLE_KEY": ""}) == hub.HubDefaults()


@pytest.mark.parametrize(("env", "names"), [
    ({"SLM_HUB_ENDPOINT": "hub.mirror:8080"}, ["SLM_HUB_ENDPOINT", "hub.endpoint", "not an http:// or https://"]),
    ({"SLM_HUB_ENDPOINT": "https://u:p@hub"}, ["hub.endpoint", "credentials", "Secret"]),
    ({"SLM_HUB_CA_BUNDLE_SECRET": "Corp CA"}, ["SLM_HUB_CA_BUNDLE_SECRET", "hub.caBundleSecretName"]),
    ({"SLM_HUB_CA_BUNDLE_KEY": "a/b"}, ["SLM_HUB_CA_BUNDLE_KEY", "hub.caBundleKey"]),
])
def test_bad_operator_settings_name_the_chart_value(env: dict[str, str], names: list[str]) -> None:
    with pytest.raises(hub.InvalidHubSetting) as err:
        hub.HubDefaults.from_env(env)
    for name in names:
        assert name in str(err.value)
    assert "u:p" not in str(err.value), "credentials are never echoed"


def test_operator_refuses_to_start_with_a_bad_endpoint(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from slm_operator.main import check_settings
    from slm_operator.settings import OperatorConfig

    monkeypatch.setenv("SLM_HUB_ENDPOINT", "ftp://hub.mirror")
    with pytest.raises(SystemExit) as done:
        check_settings()
    assert done.value.code == 2
    assert "hub.endpoint" in capsys.readouterr().err
    monkeypatch.setenv("SLM_HUB_ENDPOINT", "http://hub.mirror:8080")
    monkeypatch.setenv("SLM_HUB_CA_BUNDLE_SECRET", "corp-ca")
    check_settings()
    ctx = OperatorConfig.from_env().render_context(service_monitor_crd=False)
    assert ctx.hub == hub.HubDefaults(endpoint="http://hub.mirror:8080", ca_bundle_secret="corp-ca")
