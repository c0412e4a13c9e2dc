"""`slmctl compose`: the Compose file's shape, hardening and secrets, checked against the Compose
specification JSON schema (the run with podman-compose is e2e/test_compose.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_operator.local.compose import ComposeError, build, schema_errors, write


def manifest(engine: str = "onnxruntime", fmt: str = "onnx", qtype: str = "int4", **model: Any) -> dict[str, Any]:
    return {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment", "metadata": {"name": "tiny"},
            "spec": {"model": {"source": "hf://slm-e2e/tiny-qwen3", "revision": "main", "contextLength": 512,
                               "hub": {"endpoint": "http://hub.example:8080"}, **model},
                     "quantization": {"format": fmt, "type": qtype}, "engine": {"name": engine},
                     "resources": {"cpu": "1", "memory": "2Gi"}}}


@pytest.mark.parametrize(("engine", "fmt", "qtype"), [("onnxruntime", "onnx", "int4"), ("ollama", "gguf", "Q4_K_M")])
def test_services_hardened_and_ordered(engine: str, fmt: str, qtype: str) -> None:
    doc = build(manifest(engine, fmt, qtype), webui=True, port=18000)
    assert schema_errors(doc) == []
    svcs = doc["services"]
    for name, svc in svcs.items():
        assert svc["cap_drop"] == ["ALL"] and svc["security_opt"] == ["no-new-privileges:true"], name
        assert svc["tmpfs"] == ["/tmp"], name
        assert svc["user"] == "65532:65532" and "cap_add" not in svc, name  # no root step
        assert svc.get("read_only") is True or name == "webui", name
    assert svcs["quantize"]["restart"] == "no"
    assert "depends_on" not in svcs["quantize"]  # first: its user is given the new volume
    engine_svc = svcs["api"] if engine == "onnxruntime" else svcs["ollama"]
    assert engine_svc["depends_on"]["quantize"] == {"condition": "service_completed_successfully"}
    assert svcs["api"]["ports"] == ["127.0.0.1:18000:8000", "127.0.0.1:3000:8080"]  # loopback only (+ webui)
    assert "/ready" in " ".join(svcs["api"]["healthcheck"]["test"])
    assert "--api-key-file" in svcs["api"]["command"] and svcs["api"]["secrets"] == ["api-key"]
    assert doc["secrets"] == {"api-key": {"file": "./secrets/api-key"}}
    assert svcs["quantize"]["environment"]["HF_ENDPOINT"] == "http://hub.example:8080"
    art = svcs["quantize"]["command"][svcs["quantize"]["command"].index("--output") + 1]
    assert art.startswith(f"/models/artifacts/{fmt}-{qtype.lower()}-")
    if engine == "ollama":  # no key check of its own: it listens on the gateway's loopback only
        ollama = svcs["ollama"]
        assert ollama["network_mode"] == "service:api" and "ports" not in ollama and "networks" not in ollama
        assert ollama["environment"]["OLLAMA_HOST"] == "127.0.0.1:11434"
        assert ollama["depends_on"]["api"] == {"condition": "service_started"}
        assert "networks" not in doc  # no second network: nothing else can reach Ollama
        # The gateway fronts Ollama (as in the pod): its image, its one-key mode, metrics inside.
        api_svc = svcs["api"]
        assert api_svc["image"] == "ghcr.io/slm-operator/gateway:0.1.0"
        assert api_svc["entrypoint"] == ["python3", "-m", "slm_gateway"]
        cmd = api_svc["command"]
        flags = dict(zip(cmd[::2], cmd[1::2], strict=True))
        assert flags == {"--engine": "ollama", "--upstream": "http://127.0.0.1:11434",
                         "--api-key-file": "/run/secrets/api-key", "--listen": "0.0.0.0:8000",
                         "--metrics-listen": "127.0.0.1:9090", "--model": "tiny-qwen3"}
        from slm_gateway.__main__ import parser

        ns = parser().parse_args(cmd)  # the gateway's own parser accepts the arguments
        assert ns.engine == "ollama" and str(ns.api_key_file) == "/run/secrets/api-key"
        assert "slm_ollama" not in " ".join(api_svc["entrypoint"] + cmd)
    else:
        assert engine_svc["depends_on"] == {"quantize": {"condition": "service_completed_successfully"}}
    # Open WebUI shares the API's network namespace (no service-name DNS on Podman's CNI
    # backend): it dials loopback, and its port is published by the API service, on localhost.
    assert svcs["webui"]["environment"]["OPENAI_API_BASE_URL"] == "http://127.0.0.1:8000/v1"
    assert svcs["webui"]["network_mode"] == "service:api" and "ports" not in svcs["webui"]
    assert "127.0.0.1:3000:8080" in svcs["api"]["ports"]
    assert "OPENAI_API_KEY" not in svcs["webui"]["environment"]  # read from the secret at start


def test_schema_check_can_fail() -> None:
    doc = build(manifest())
    broken = copy.deepcopy(doc)
    broken["services"]["api"]["read_only"] = "yes"
    broken["services"]["api"]["depends_on"]["quantize"]["condition"] = "service_done"
    problems = schema_errors(broken)
    assert any(p.startswith("services/api/read_only") for p in problems), problems
    assert any("depends_on" in p for p in problems), problems


def test_token_is_a_compose_secret(tmp_path: Path) -> None:
    doc = build(manifest(tokenSecretRef={"name": "hf-token"}))
    q = doc["services"]["quantize"]
    assert q["secrets"] == ["hf-token"] and q["command"][-2:] == ["--token-file", "/run/secrets/hf-token"]
    made = write(doc, tmp_path / "compose.yaml")
    assert sorted(p.name for p in made) == ["api-key", "hf-token"]
    assert oct((tmp_path / "secrets").stat().st_mode)[-3:] == "700"
    key = (tmp_path / "secrets" / "api-key").read_text().strip()
    assert len(key) >= 40 and key not in (tmp_path / "compose.yaml").read_text()
    assert yaml.safe_load((tmp_path / "compose.yaml").read_text()) == doc
    assert write(doc, tmp_path / "compose.yaml") == []  # existing secrets are kept
    assert (tmp_path / "secrets" / "api-key").read_text().strip() == key


def test_refusals_name_the_field() -> None:
    with pytest.raises(ComposeError, match=r"engine\.name: vllm"):
        build(manifest("vllm", "none", "bf16"))
    bad = manifest()
    bad["spec"]["model"]["contextLength"] = 10
    with pytest.raises(ComposeError, match=r"contextLength"):
        build(bad)


def test_quantize_only_is_refused_naming_serving_enabled() -> None:
    """serving.enabled false (and so format mlx) has nothing to serve: a clear refusal for both
    Compose and slmctl up, never a misleading engine message or a silent no-op."""
    from slm_operator.local.compose import ComposeError
    from slm_operator.local.run import LocalError, plan

    for fmt, qtype in (("onnx", "int4"), ("mlx", "4bit")):
        obj = manifest("onnxruntime", fmt, qtype)
        obj["spec"]["serving"] = {"enabled": False}
        if fmt == "mlx":
            del obj["spec"]["engine"]
        with pytest.raises(ComposeError, match=r"serving\.enabled: false \(quantize-only\)"):
            build(obj)
        with pytest.raises(LocalError, match=r"serving\.enabled: false \(quantize-only\)"):
            plan(obj)
