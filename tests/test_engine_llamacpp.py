"""The llama.cpp engine, operator side: what render asks of `llama-server`, checked against
llama.cpp's own source; sizing's slots and context; BitNet ternary types at admission and in
`slmctl validate`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from slm_operator import api, engines
from slm_operator import constants as c
from slm_operator.engines import llamacpp
from slm_operator.render import RenderContext, render
from slm_operator.sizing import autoconfigure, lookup_model, weight_bytes
from slm_operator.sizing.errors import InvalidQuantizationError, UnsupportedModelError
from slm_operator.validate import defaulted, validate

ROOT = Path(__file__).resolve().parents[1]
SHA = "0123456789abcdef0123456789abcdef01234567"


def _pinned_llama_cpp() -> Path | None:
    """llama.cpp as the pinned llama-cpp-python sdist vendors it (the quantizer's and the image's)."""
    version = re.search(r"^LLAMA_CPP_VERSION=(\S+)", (ROOT / "runtime-images/install-ml-deps.sh").read_text(), re.M)
    assert version
    src = (Path.home() / ".cache/slm-operator/src/llama-cpp-python" / f"llama_cpp_python-{version[1]}"
           / "vendor/llama.cpp")
    return src if (src / "common/arg.cpp").is_file() else None


def body(spec: dict[str, Any], name: str = "bn") -> dict[str, Any]:
    return {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment",
            "metadata": {"name": name, "namespace": "ns", "uid": "u1"}, "spec": spec}


LLAMACPP = {"model": {"source": "hf://Qwen/Qwen3-0.6B", "revision": SHA},
            "engine": {"name": "llamacpp", "llamacpp": {"parallel": 3}},
            "quantization": {"format": "gguf", "type": "Q4_K_M"},
            "autoscaling": {"maxReplicas": 3}}


def _objs(spec: dict[str, Any], sm: bool = True) -> dict[str, list[dict[str, Any]]]:
    cr = api.SLMDeployment.model_validate(defaulted(body(spec)))
    out: dict[str, list[dict[str, Any]]] = {}
    for o in render(cr, RenderContext(service_monitor_crd=sm)):
        out.setdefault(o["kind"], []).append(o)
    return out


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_llama_server_pod_is_secure_and_sized() -> None:
    objs = _objs(LLAMACPP)
    (dep,) = objs["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    ctr, gateway = pod["containers"]  # llama-server on loopback, the gateway in front (render/engines.py)
    assert gateway["name"] == "gateway"
    args = ctr["args"]
    assert (_flag(args, "--host"), _flag(args, "--port")) == ("127.0.0.1", str(c.ENGINE_PORT))
    assert ctr["command"] == ["llama-server"] and ctr["image"] == "ghcr.io/slm-operator/llamacpp:0.1.0"
    # The key only as a mounted Secret file; no literal anywhere in the pod.
    assert _flag(args, "--api-key-file") == c.API_KEY_FILE
    key_vol = next(v for v in pod["volumes"] if v["name"] == "api-key")
    assert key_vol["secret"]["secretName"] == "bn-api-key"
    assert not any(a == "--api-key" for a in args)
    # Slots and context from sizing: each of `parallel` slots holds the sized context.
    cr = api.SLMDeployment.model_validate(defaulted(body(LLAMACPP)))
    from slm_operator.resolve import resolve

    r = resolve(cr.spec)
    assert r.engine == "llamacpp" and "3 sequences" in r.reason
    assert _flag(args, "--parallel") == "3"
    assert int(_flag(args, "--ctx-size")) == 3 * r.context_length
    assert _flag(args, "--model").endswith("/model.gguf") and _flag(args, "--alias") == "qwen3-0.6b"
    assert _flag(args, "--threads") == str(int(r.cpu.rstrip("m")) // 1000)
    assert {"--metrics", "--no-webui", "--no-slots"} <= set(args)
    # Restricted, read-only root, writable /tmp only.
    sc = ctr["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"] and sc["capabilities"]["drop"] == ["ALL"]
    assert {m["mountPath"]: m.get("readOnly", False) for m in ctr["volumeMounts"]} == {
        "/tmp": False, c.API_KEY_DIR: True, c.MODELS_MOUNT: True}
    # Probes run in the container (loopback): a GET /health over bash's /dev/tcp.
    assert "GET /health " in ctr["readinessProbe"]["exec"]["command"][-1]
    assert "GET /health " in ctr["startupProbe"]["exec"]["command"][-1]


def test_metrics_and_autoscaling_use_the_key_and_the_queue_metric() -> None:
    objs = _objs(LLAMACPP)
    (sm,) = objs["ServiceMonitor"]
    (ep,) = sm["spec"]["endpoints"]
    # llama-server checks the key on /metrics too: the gateway fetches them with the engine's key
    # (--upstream-key-file) and appends them to its own on the metrics port, which needs none.
    assert ep["port"] == "metrics" and ep["path"] == "/metrics" and "authorization" not in ep
    (svc,) = objs["Service"]
    assert [p["name"] for p in svc["spec"]["ports"]] == ["http", "metrics"]
    (hpa,) = objs["HorizontalPodAutoscaler"]
    assert hpa["spec"]["metrics"] == [{"type": "Pods", "pods": {
        "metric": {"name": "llamacpp_requests_deferred"},
        "target": {"type": "AverageValue", "averageValue": "4"}}}]
    (np,) = [p for p in objs["NetworkPolicy"] if p["metadata"]["name"] == "bn-server"]
    assert {"port": c.METRICS_PORT, "protocol": "TCP"} in np["spec"]["ingress"][1]["ports"]


def test_flags_probes_and_metric_names_are_llama_cpps_own() -> None:
    src = _pinned_llama_cpp()
    if src is None:
        pytest.skip("the pinned llama-cpp-python sdist is not unpacked under ~/.cache/slm-operator/src "
                    "(`bash hack/images.sh llama-cpp-src` unpacks it; make test runs that)")
    arg_cpp = (src / "common/arg.cpp").read_text()
    cr = api.SLMDeployment.model_validate(defaulted(body({**LLAMACPP, "resources": {"gpu": {"count": 1}}})))
    ctr = next(o for o in render(cr) if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    for flag in (a for a in ctr["args"] if a.startswith("--")):
        assert f'"{flag}"' in arg_cpp, f"llama-server has no {flag}"
    http = (src / "tools/server/server-http.cpp").read_text()
    public = http[http.index("get_public_endpoints"):][:400]
    assert '"/health"' in public and '"/metrics"' not in public  # probes need no key; metrics do
    assert engines.get("llamacpp").metrics.needs_key
    task = (src / "tools/server/server-task.cpp").read_text()
    queue = llamacpp.ENGINE.queue_metric
    assert queue is not None and queue.series.startswith("llamacpp:")
    assert f'"{queue.series.removeprefix("llamacpp:")}"' in task and 'prometheus << "# HELP llamacpp:"' in task


def test_ternary_bits_per_weight_are_ggmls_block_sizes() -> None:
    from slm_operator.sizing.quant import GGML_TYPES

    # ggml-common.h block_tq1_0 (fp16 d + 256/64 + (256 - 256/16)/5 bytes) and block_tq2_0 (64 + 2).
    assert GGML_TYPES["TQ1_0"] == ((2 + 4 + 48) * 8 / 256, 256) == (1.6875, 256)
    assert GGML_TYPES["TQ2_0"] == ((2 + 64) * 8 / 256, 256) == (2.0625, 256)
    src = _pinned_llama_cpp()
    if src is not None:  # gguf-py's GGML_QUANT_SIZES (block size, bytes) agree
        consts = (src / "gguf-py/gguf/constants.py").read_text()
        assert "GGMLQuantizationType.TQ1_0:   (256, 2 + 4 * 13)" in consts
        assert "GGMLQuantizationType.TQ2_0:   (256, 2 + 64)" in consts
    bitnet = lookup_model("microsoft/bitnet-b1.58-2B-4T")
    tq1, tq2, q4 = (weight_bytes(bitnet, "gguf", t) for t in ("TQ1_0", "TQ2_0", "Q4_K_M"))
    assert tq1 < tq2 < q4
    # The matrices at 1.6875 bpw, the tied embedding/output at Q6_K, norms F32.
    matrices = bitnet.linear_params * 1.6875 / 8
    assert abs(tq1 - (matrices + bitnet.embedding_params * 6.5625 / 8 + bitnet.other_params * 4)) < 1024


def test_bitnet_2b4t_is_in_the_catalog_with_its_published_size_and_refused_with_the_reason() -> None:
    m = lookup_model("microsoft/bitnet-b1.58-2B-4T")
    assert m is not None and m.tier == "Small" and round(m.params / 1e9, 2) == 2.41
    assert lookup_model("microsoft/bitnet-b1.58-2B-4T-bf16") == m
    with pytest.raises(UnsupportedModelError, match="SiLU-gated") as e:
        autoconfigure(m, cpu_only=True)
    assert e.value.field == "spec.model.source"


def test_a_silu_bitnet_model_gets_a_ternary_type_on_llama_cpp() -> None:
    from dataclasses import replace

    m = replace(lookup_model("microsoft/bitnet-b1.58-2B-4T"), hidden_act="silu")
    d = autoconfigure(m, cpu_only=True)
    assert (d.engine, d.quant_format, d.quant_type) == ("llamacpp", "gguf", "TQ2_0")
    assert "only engine that serves gguf TQ2_0" in d.reason
    with pytest.raises(InvalidQuantizationError, match="llamacpp") as e:
        autoconfigure(m, engine="ollama", quant_format="gguf", quant_type="TQ1_0")
    assert e.value.field == "spec.quantization.type"
    # Untied embeddings: llama.cpp's BitNet graph has no lm_head (the quantizer refuses it too).
    with pytest.raises(UnsupportedModelError, match="untied embeddings") as u:
        autoconfigure(replace(m, tied_embeddings=False), cpu_only=True)
    assert u.value.field == "spec.model.source"


@pytest.mark.parametrize(("spec", "field", "words"), [
    # A ternary type on a model trained in 16 bits: refused by sizing (validate's last pass).
    ({"engine": {"name": "llamacpp"}, "quantization": {"format": "gguf", "type": "TQ1_0"}},
     "spec.quantization.type", ["ternary", "Q4_K_M", "llamacpp"]),
    # A ternary type on an engine that cannot serve it: refused by the CRD's CEL rule.
    ({"engine": {"name": "ollama"}, "quantization": {"format": "gguf", "type": "TQ2_0"}},
     "spec", ["quantization.type TQ1_0|TQ2_0", "served only by engine.name llamacpp"]),
    # A format the engine cannot serve: the CEL rule names who serves what.
    ({"engine": {"name": "llamacpp"}, "quantization": {"format": "onnx"}},
     "spec", ["quantization.format is not served by engine.name", "llamacpp serves gguf",
              "onnxruntime serves onnx"]),
])
def test_validate_refuses_naming_the_field_and_the_engines(spec: dict, field: str, words: list[str]) -> None:
    errs = validate(body({"model": {"source": "hf://Qwen/Qwen3-0.6B", "revision": SHA}, **spec}))
    assert len(errs) == 1, errs
    assert errs[0].startswith(f"{field}: "), errs
    for w in words:
        assert w in errs[0], (w, errs[0])


def test_auto_gguf_on_cpu_says_which_engine_and_why() -> None:
    objs = _objs({"model": {"source": "hf://Qwen/Qwen3-4B", "revision": SHA},
                  "engine": {"name": "auto"}, "quantization": {"format": "gguf"}})
    (dep,) = objs["Deployment"]
    assert dep["metadata"]["labels"]["slm.ai/engine"] == "llamacpp"
    cr = api.SLMDeployment.model_validate(defaulted(body({
        "model": {"source": "hf://Qwen/Qwen3-4B", "revision": SHA}, "quantization": {"format": "gguf"}})))
    from slm_operator.resolve import resolve

    reason = resolve(cr.spec).reason
    assert reason.startswith("engine auto: llama.cpp for gguf on CPU (") and "with Ollama" in reason
