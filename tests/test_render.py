"""Render is pure and complete: every engine and option, secure pods, no secret values."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_operator import api
from slm_operator.render import RenderContext, plan, render
from slm_operator.validate import defaulted

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def cr(spec: dict[str, Any], name: str = "m", uid: str = "uid-1") -> api.SLMDeployment:
    body = {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment",
            "metadata": {"name": name, "namespace": "ns", "uid": uid}, "spec": spec}
    return api.SLMDeployment.model_validate(defaulted(body))


def by_kind(objs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for o in objs:
        out.setdefault(o["kind"], []).append(o)
    return out


VLLM = {"model": {"source": "hf://microsoft/Phi-4-mini-instruct", "revision": "abc"},
        "engine": {"name": "vllm"}, "quantization": {"format": "awq"},
        "resources": {"gpu": {"count": 1, "product": "NVIDIA-L4"}}}
ONNX = {"model": {"source": "hf://Qwen/Qwen3-0.6B", "revision": "main"},
        "engine": {"name": "onnxruntime"}, "quantization": {"format": "onnx", "type": "int4"}}
OLLAMA = {"model": {"source": "hf://google/gemma-3-1b-it", "revision": "main"},
          "engine": {"name": "ollama"}, "quantization": {"format": "gguf", "type": "Q4_K_M"}}


def pods(objs: list[dict]) -> list[dict]:
    out = []
    for o in objs:
        if o["kind"] in ("Deployment", "Job"):
            out.append(o["spec"]["template"]["spec"])
    return out


@pytest.mark.parametrize("spec", [VLLM, ONNX, OLLAMA], ids=["vllm", "onnxruntime", "ollama"])
def test_every_pod_is_restricted(spec: dict) -> None:
    objs = render(cr(spec))
    assert len(pods(objs)) == 2
    for pod in pods(objs):
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for ctr in pod["containers"]:
            sc = ctr["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert sc["readOnlyRootFilesystem"] is True
            assert ctr["resources"]["requests"] and ctr["resources"]["limits"]
            for env in ctr.get("env", []):
                assert "value" in env or "secretKeyRef" in env["valueFrom"]
                assert "KEY" not in env["name"] or "valueFrom" in env, env


@pytest.mark.parametrize("spec", [VLLM, ONNX, OLLAMA], ids=["vllm", "onnxruntime", "ollama"])
def test_render_is_deterministic_and_owned(spec: dict) -> None:
    a = render(cr(spec))
    b = render(cr(copy.deepcopy(spec)))
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    for o in a:
        if o["kind"] == "PersistentVolumeClaim":
            assert "ownerReferences" not in o["metadata"], "Retain: cache must survive the CR"
            continue
        ref = o["metadata"]["ownerReferences"][0]
        assert ref["uid"] == "uid-1" and ref["controller"] is True
        assert o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "slm-operator"


def test_vllm_deployment_args_and_gpu_scheduling() -> None:
    objs = by_kind(render(cr(VLLM)))
    pod = objs["Deployment"][0]["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    args = ctr["args"]
    # The AWQ Job writes compressed-tensors: vLLM reads the method from the artifact's config
    # (tests/engines/test_vllm_artifact_quantization.py checks every format).
    assert "--quantization" not in args
    assert "--trust-remote-code" not in args
    assert ctr["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-L4"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert args[args.index("--api-key-file") + 1] == "/var/run/secrets/slm/api-key"
    assert not [e for e in ctr["env"] if "KEY" in e["name"]], "the key travels as a file, not env"
    vol = next(v for v in pod["volumes"] if v["name"] == "api-key")
    assert vol["secret"] == {"secretName": "m-api-key", "defaultMode": 0o440,
                             "items": [{"key": "api-key", "path": "api-key"}]}
    job = objs["Job"][0]
    assert job["metadata"]["name"].startswith("m-quantize-")
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_vllm_options_map_to_flags() -> None:
    spec = copy.deepcopy(VLLM)
    spec["engine"]["vllm"] = {"maxModelLen": 2048, "gpuMemoryUtilizationPercent": 85, "maxNumSeqs": 7,
                              "enablePrefixCaching": False, "kvCacheDtype": "fp8",
                              "extraArgs": ["--swap-space", "4"]}
    spec["model"]["trustRemoteCode"] = True
    args = by_kind(render(cr(spec)))["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-model-len") + 1] == "2048"
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.85"
    assert args[args.index("--max-num-seqs") + 1] == "7"
    assert "--enable-prefix-caching" not in args
    assert args[args.index("--kv-cache-dtype") + 1] == "fp8"
    assert "--trust-remote-code" in args and args[-2:] == ["--swap-space", "4"]


def test_onnx_server_on_cpu_mounts_key_file() -> None:
    objs = by_kind(render(cr(ONNX)))
    pod = objs["Deployment"][0]["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    assert ctr["args"][ctr["args"].index("--device") + 1] == "cpu"
    from slm_onnx_server.config import parse_args

    cfg = parse_args(ctr["args"])  # the server's own parser accepts what the operator renders
    assert (cfg.max_concurrency, cfg.max_queue, cfg.metrics_port) == (4, 64, 0)
    assert (cfg.host, cfg.port) == ("127.0.0.1", 8001), "behind the gateway, on loopback only"
    assert cfg.max_model_len >= 4096, "the context sizing chose reaches the server"
    assert str(cfg.api_key_file) == "/var/run/secrets/slm/api-key"
    assert "nvidia.com/gpu" not in ctr["resources"]["limits"]
    assert "nodeSelector" not in pod
    assert {"name": "api-key", "mountPath": "/var/run/secrets/slm", "readOnly": True} in ctr["volumeMounts"]
    assert [p["name"] for p in objs["Service"][0]["spec"]["ports"]] == ["http", "metrics"]


def test_ollama_listens_on_localhost_behind_gateway() -> None:
    pod = by_kind(render(cr(OLLAMA)))["Deployment"][0]["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["containers"]]
    assert names == ["ollama", "gateway"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["OLLAMA_HOST"].startswith("127.0.0.1:")
    assert "ports" not in pod["containers"][0], "Ollama itself must not be reachable"
    args = pod["containers"][1]["args"]
    assert args[args.index("--upstream") + 1] == "http://127.0.0.1:11434"
    assert "--upstream-key-file" not in args, "Ollama has no key of its own"


LLAMACPP = {"model": {"source": "hf://Qwen/Qwen3-1.7B", "revision": "main"},
            "engine": {"name": "llamacpp"}, "quantization": {"format": "gguf", "type": "Q4_K_M"}}


@pytest.mark.parametrize("spec", [VLLM, ONNX, OLLAMA, LLAMACPP], ids=["vllm", "onnx", "ollama", "llamacpp"])
def test_gateway_is_the_only_listener(spec: dict[str, Any]) -> None:
    from slm_gateway.__main__ import parser as gateway_parser

    objs = by_kind(render(cr(spec)))
    pod = objs["Deployment"][0]["spec"]["template"]["spec"]
    engine, gateway = pod["containers"][0], pod["containers"][-1]
    assert gateway["name"] == "gateway" and gateway["image"].startswith("ghcr.io/slm-operator/gateway:")
    assert [c["name"] for c in pod["containers"] if c.get("ports")] == ["gateway"], "only the gateway listens"
    assert [p["name"] for p in gateway["ports"]] == ["http", "metrics"]
    assert "127.0.0.1" in engine["args"] or "OLLAMA_HOST" in str(engine["env"]), "the engine is on loopback"
    assert "0.0.0.0" not in engine["args"]
    ns = gateway_parser().parse_args(gateway["args"])  # the gateway's own parser accepts what the operator renders
    assert ns.listen == "0.0.0.0:8000" and ns.metrics_listen == "0.0.0.0:9090"
    assert str(ns.api_key_file) == "/var/run/secrets/slm/api-key" and ns.keys_dir is None
    assert ns.scope == "ns/m"
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    sec = gateway["securityContext"]
    assert sec["readOnlyRootFilesystem"] and sec["runAsNonRoot"] and sec["capabilities"] == {"drop": ["ALL"]}
    assert gateway["resources"]["limits"]["memory"] == gateway["resources"]["requests"]["memory"]
    assert [p["name"] for p in objs["Service"][0]["spec"]["ports"]] == ["http", "metrics"]
    # The engine keeps probes of its own, run inside its container (the kubelet cannot dial loopback).
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert "exec" in engine[probe] and "httpGet" not in engine[probe], probe


def test_gateway_image_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from slm_operator.settings import OperatorConfig

    monkeypatch.setenv("SLM_IMAGE_GATEWAY", "registry.internal/slm-operator/gateway:9")
    ctx = OperatorConfig.from_env().render_context(service_monitor_crd=False)
    pod = by_kind(render(cr(ONNX), ctx))["Deployment"][0]["spec"]["template"]["spec"]
    assert pod["containers"][-1]["image"] == "registry.internal/slm-operator/gateway:9"


def test_network_policies() -> None:
    spec = copy.deepcopy(ONNX)
    spec["access"] = {"allowedFrom": [{"namespaceSelector": {"team": "a"}, "podSelector": {"app": "ui"}}]}
    nps = {o["metadata"]["name"]: o for o in by_kind(render(cr(spec)))["NetworkPolicy"]}
    server = nps["m-server"]["spec"]
    assert server["policyTypes"] == ["Ingress", "Egress"]
    assert server["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {"team": "a"}},
                                             "podSelector": {"matchLabels": {"app": "ui"}}}]
    assert server["ingress"][0]["ports"] == [{"port": 8000, "protocol": "TCP"}]
    assert all(p["port"] == 53 for p in server["egress"][0]["ports"]), "serving egress is DNS only"
    quant = nps["m-quantizer"]["spec"]
    assert quant["ingress"] == [] and {"port": 443, "protocol": "TCP"} in quant["egress"][1]["ports"]


def test_hpa_metrics_behavior_and_replicas_left_to_hpa() -> None:
    spec = copy.deepcopy(VLLM)
    spec["autoscaling"] = {"minReplicas": 2, "maxReplicas": 5, "scaleDownStabilizationSeconds": 900,
                           "metrics": [{"type": "GPUUtilization", "targetPercent": 80},
                                       {"type": "QueueDepth", "targetAverageValue": 4},
                                       {"type": "KVCacheUsage", "targetPercent": 70},
                                       {"type": "CPU", "targetPercent": 60}]}
    objs = by_kind(render(cr(spec)))
    assert "replicas" not in objs["Deployment"][0]["spec"]
    hpa = objs["HorizontalPodAutoscaler"][0]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    names = [m.get("pods", {}).get("metric", {}).get("name") or m["resource"]["name"] for m in hpa["metrics"]]
    assert names == ["slm_gpu_utilization_percent", "vllm_num_requests_waiting", "vllm_kv_cache_usage_perc", "cpu"]
    assert hpa["metrics"][2]["pods"]["target"]["averageValue"] == "700m"
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 900
    assert objs["PodDisruptionBudget"][0]["spec"]["maxUnavailable"] == 1


def test_default_autoscaling_metric_per_engine() -> None:
    for spec, metric in ((ONNX, "slm_onnx_queue_depth"), (OLLAMA, "cpu")):
        s = copy.deepcopy(spec)
        s["autoscaling"] = {"maxReplicas": 3}
        m = by_kind(render(cr(s)))["HorizontalPodAutoscaler"][0]["spec"]["metrics"][0]
        assert (m.get("pods", {}).get("metric", {}).get("name") or m["resource"]["name"]) == metric


def test_single_replica_has_no_pdb_and_fixed_replicas() -> None:
    objs = by_kind(render(cr(ONNX)))
    assert "PodDisruptionBudget" not in objs
    assert objs["Deployment"][0]["spec"]["replicas"] == 1


def test_retain_delete_owner_reference_on_cache() -> None:
    spec = copy.deepcopy(ONNX)
    spec["storage"] = {"retainPolicy": "Delete", "size": "30Gi", "storageClassName": "fast"}
    pvc = by_kind(render(cr(spec)))["PersistentVolumeClaim"][0]
    assert pvc["metadata"]["ownerReferences"][0]["kind"] == "SLMDeployment"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "30Gi"
    assert pvc["spec"]["storageClassName"] == "fast"


def test_pvc_source_served_as_is_needs_no_job() -> None:
    spec = {"model": {"source": "pvc://models/qwen3"}, "engine": {"name": "vllm"},
            "quantization": {"format": "none"}, "resources": {"gpu": {"count": 1}}}
    objs = by_kind(render(cr(spec)))
    assert "Job" not in objs and "PersistentVolumeClaim" not in objs
    pod = objs["Deployment"][0]["spec"]["template"]["spec"]
    src = next(v for v in pod["volumes"] if v["name"] == "source")
    assert src["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    args = pod["containers"][0]["args"]
    assert args[args.index("--") + 1] == "/source/qwen3"


def test_token_secret_only_in_job_as_file() -> None:
    spec = copy.deepcopy(VLLM)
    spec["model"]["tokenSecretRef"] = {"name": "hf-token", "key": "token"}
    objs = by_kind(render(cr(spec)))
    job_pod = objs["Job"][0]["spec"]["template"]["spec"]
    vol = next(v for v in job_pod["volumes"] if v["name"] == "hub-token")
    assert vol["secret"]["secretName"] == "hf-token"
    args = job_pod["containers"][0]["args"]
    assert args[args.index("--token-file") + 1] == "/var/run/secrets/hf/token"
    dep_text = json.dumps(objs["Deployment"])
    assert "hf-token" not in dep_text, "the hub token never reaches the serving pods"


def test_job_name_changes_with_quantization_inputs_only() -> None:
    a = plan(cr(ONNX)).job["metadata"]["name"]
    s = copy.deepcopy(ONNX)
    s["replicas"] = 3
    assert plan(cr(s)).job["metadata"]["name"] == a
    s["quantization"]["maxPerplexityIncreasePercent"] = 3
    assert plan(cr(s)).job["metadata"]["name"] != a
    assert len(a) <= 63


def test_service_monitor_only_when_crd_exists() -> None:
    assert "ServiceMonitor" not in by_kind(render(cr(VLLM)))
    sm = by_kind(render(cr(VLLM), RenderContext(service_monitor_crd=True)))["ServiceMonitor"][0]
    # The gateway's metrics port for every engine (the engine's series appended): no key needed.
    assert sm["spec"]["endpoints"][0]["port"] == "metrics" and "authorization" not in sm["spec"]["endpoints"][0]
    off = copy.deepcopy(VLLM)
    off["monitoring"] = {"serviceMonitor": False}
    assert "ServiceMonitor" not in by_kind(render(cr(off), RenderContext(service_monitor_crd=True)))


def test_generated_secret_has_no_data() -> None:
    secret = by_kind(render(cr(ONNX)))["Secret"][0]
    assert "data" not in secret and "stringData" not in secret
    spec = copy.deepcopy(ONNX)
    spec["access"] = {"apiKeySecretRef": {"name": "mine", "key": "k"}}
    objs = by_kind(render(cr(spec)))
    assert "Secret" not in objs
    vol = next(v for v in objs["Deployment"][0]["spec"]["template"]["spec"]["volumes"] if v["name"] == "api-key")
    assert vol["secret"]["secretName"] == "mine" and vol["secret"]["items"][0]["key"] == "k"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_kubernetes_validate(path: Path) -> None:
    import kubernetes_validate

    for doc in yaml.safe_load_all(path.read_text()):
        body = {**doc, "metadata": {**doc["metadata"], "namespace": "default", "uid": "u"}}
        for obj in render(api.SLMDeployment.model_validate(defaulted(body)),
                          RenderContext(service_monitor_crd=False)):
            kubernetes_validate.validate(obj, "1.33", strict=True)


def test_rendered_vllm_args_pass_the_launchers_checks(tmp_path: Path) -> None:
    """The operator's flags for vLLM are accepted by the image's launcher (same refusal list)."""
    from slm_vllm.args import FORBIDDEN_FLAGS, OWNED_FLAGS, check_serve_args
    from slm_vllm.launcher import plan as launcher_plan

    assert set(FORBIDDEN_FLAGS) | (set(OWNED_FLAGS) - {"disable-fastapi-docs"}) <= set(api.VLLM_REFUSED_FLAGS)
    spec = copy.deepcopy(VLLM)
    spec["engine"]["vllm"] = {"extraArgs": ["--swap-space", "4"], "kvCacheDtype": "fp8"}
    args = by_kind(render(cr(spec)))["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["args"]
    dash = args.index("--")
    check_serve_args(args[dash + 1:], owned_allowed=True)
    key_file = tmp_path / "api-key"
    key_file.write_text("k")
    args[args.index("--api-key-file") + 1] = str(key_file)
    cmd, env, _ = launcher_plan(args, {"PATH": "/usr/bin"})
    assert cmd[:3] == ["vllm", "serve", args[dash + 1]] and env["VLLM_API_KEY"] == "k"


def test_s3_source_credentials_mounted_in_job_only() -> None:
    spec = {"model": {"source": "s3://models-bucket/qwen3-0.6b", "s3CredentialsSecretRef": {"name": "s3-creds"}},
            "engine": {"name": "onnxruntime"}, "quantization": {"format": "onnx", "type": "int4"}}
    objs = by_kind(render(cr(spec)))
    job_pod = objs["Job"][0]["spec"]["template"]["spec"]
    args = job_pod["containers"][0]["args"]
    assert args[args.index("--source") + 1] == "s3://models-bucket/qwen3-0.6b"
    assert args[args.index("--s3-credentials-dir") + 1] == "/var/run/secrets/s3"
    vol = next(v for v in job_pod["volumes"] if v["name"] == "s3-credentials")
    assert vol["secret"]["secretName"] == "s3-creds"
    assert "s3-creds" not in json.dumps(objs["Deployment"])


def test_only_calibrating_formats_take_a_gpu_for_the_job() -> None:
    for fmt, gpus in (("awq", "1"), ("fp8", None), ("none", None)):
        spec = copy.deepcopy(VLLM)
        spec["quantization"] = {"format": fmt}
        job = by_kind(render(cr(spec)))["Job"][0]
        limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits.get("nvidia.com/gpu") == gpus, fmt


def test_job_fails_at_once_on_permanent_quantizer_exit_codes() -> None:
    for spec in (VLLM, ONNX, OLLAMA):
        job = by_kind(render(cr(spec)))["Job"][0]
        policy = job["spec"]["podFailurePolicy"]
        fail = next(r for r in policy["rules"] if r["action"] == "FailJob")
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert fail["onExitCodes"]["containerName"] == container["name"]
        assert fail["onExitCodes"]["values"] == [2, 3, 4, 6, 7]  # slm_quantizer.cli.PERMANENT_EXIT_CODES
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy needs it


def _with_keys(spec: dict[str, Any], **keys: Any) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    out["access"] = {"apiKeys": {"secretRef": {"name": "consumers"}, **keys}}
    return out


def test_api_keys_mount_the_consumers_secret_for_the_gateway_only() -> None:
    from slm_gateway.__main__ import parser as gateway_parser
    from slm_operator.render.common import ConsumerFacts

    ctx = RenderContext(consumers=ConsumerFacts(limits=False, refs=(("batch-key", "token"),)))
    objs = by_kind(render(cr(_with_keys(ONNX)), ctx))
    pod = objs["Deployment"][0]["spec"]["template"]["spec"]
    engine, gateway = pod["containers"]
    ns = gateway_parser().parse_args(gateway["args"])
    assert str(ns.keys_dir) == "/var/run/secrets/slm-consumers" and ns.api_key_file is None
    assert ns.redis_url is None and not ns.fail_open, "no limits: no store"
    assert str(ns.upstream_key_file) == "/var/run/secrets/slm/api-key", "the engine keeps its own key"
    assert not any(m["name"] == "consumers" for m in engine["volumeMounts"]), "the engine never sees consumers' keys"
    vol = next(v for v in pod["volumes"] if v["name"] == "consumers")["projected"]
    assert vol["sources"][0] == {"secret": {"name": "consumers"}}
    assert vol["sources"][1]["secret"] == {"name": "batch-key", "optional": True,
                                           "items": [{"key": "token", "path": "_refs/batch-key/token"}]}
    assert [o["metadata"]["name"] for o in objs["Deployment"]] == ["m"], "no limit store without limits"
    assert len(objs["NetworkPolicy"][0]["spec"]["egress"]) == 1


def test_consumer_limits_render_a_hardened_store_reached_only_by_the_gateways() -> None:
    from slm_gateway.__main__ import parser as gateway_parser
    from slm_operator.render.common import ConsumerFacts

    objs = by_kind(render(cr(_with_keys(ONNX, failOpen=True)), RenderContext(consumers=ConsumerFacts(limits=True))))
    deps = {d["metadata"]["name"]: d for d in objs["Deployment"]}
    gateway = deps["m"]["spec"]["template"]["spec"]["containers"][-1]
    ns = gateway_parser().parse_args(gateway["args"])
    assert ns.redis_url == "redis://m-limits:6379/0" and ns.fail_open
    assert str(ns.redis_password_file) == "/var/run/secrets/slm-limits/password"
    store = deps["m-limits"]["spec"]["template"]["spec"]
    (redis,) = store["containers"]
    assert redis["image"] == gateway["image"], "Debian's redis-server from the gateway image"
    sec = redis["securityContext"]
    assert sec["readOnlyRootFilesystem"] and sec["runAsNonRoot"] and sec["capabilities"] == {"drop": ["ALL"]}
    assert "requirepass" in redis["command"][-1] and "--save ''" in redis["command"][-1]
    assert "secret" not in json.dumps(redis["command"]).lower().replace("secrets/slm-limits", "")
    secret = next(s for s in objs["Secret"] if s["metadata"]["name"] == "m-limits")
    assert "data" not in secret and secret["metadata"]["annotations"]["slm.ai/generated-key"] == "password"
    nps = {n["metadata"]["name"]: n["spec"] for n in objs["NetworkPolicy"]}
    assert nps["m-limits"]["ingress"][0]["from"] == [{"podSelector": {"matchLabels": {
        "slm.ai/deployment": "m", "app.kubernetes.io/component": "server"}}}]
    assert nps["m-limits"]["egress"] == []
    assert nps["m-server"]["egress"][1]["ports"] == [{"port": 6379, "protocol": "TCP"}]
    assert [s["metadata"]["name"] for s in objs["Service"]] == ["m", "m-limits"]
