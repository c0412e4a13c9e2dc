"""Every emptyDir a rendered pod has is sized from the sizing estimate and requested (item 3).

Ollama copies the whole GGUF into OLLAMA_MODELS: that lives on its own volume sized from the
artifact, not on a /tmp capped for caches (a Qwen3-8B Q4_K_M GGUF is 4.7 GiB: a 4Gi /tmp
evicted the pod on every start).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from slm_operator import api, engines
from slm_operator.diff import parse_quantity
from slm_operator.render import render
from slm_operator.sizing.catalog import GIB, lookup_model
from slm_operator.sizing.estimate import weight_bytes
from slm_operator.validate import defaulted

SPECS = {
    "vllm-awq": {"model": {"source": "hf://microsoft/Phi-4-mini-instruct"}, "engine": {"name": "vllm"},
                 "quantization": {"format": "awq"}, "resources": {"gpu": {"count": 1, "product": "NVIDIA-L4"}}},
    "onnx": {"model": {"source": "hf://Qwen/Qwen3-0.6B"}, "engine": {"name": "onnxruntime"},
             "quantization": {"format": "onnx", "type": "int4"}},
    "ollama-8b": {"model": {"source": "hf://Qwen/Qwen3-8B"}, "engine": {"name": "ollama"},
                  "quantization": {"format": "gguf", "type": "Q4_K_M"}},
    "ollama-uncatalogued": {"model": {"source": "hf://acme/unknown-7b"}, "engine": {"name": "ollama"},
                            "quantization": {"format": "gguf", "type": "Q4_K_M"}, "storage": {"size": "30Gi"}},
}


def _cr(spec: dict[str, Any]) -> api.SLMDeployment:
    body = {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment",
            "metadata": {"name": "m", "namespace": "ns", "uid": "u"}, "spec": copy.deepcopy(spec)}
    return api.SLMDeployment.model_validate(defaulted(body))


def _pods(objs: list[dict]) -> list[tuple[str, dict]]:
    return [(o["kind"], o["spec"]["template"]["spec"]) for o in objs if o["kind"] in ("Deployment", "Job")]


def _bytes(q: str) -> int:
    return int(parse_quantity(q))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_empty_dir_is_limited_and_requested(name):
    for kind, pod in _pods(render(_cr(SPECS[name]))):
        disk = [v for v in pod["volumes"] if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"]
        assert disk, kind
        for v in pod["volumes"]:
            if "emptyDir" in v:
                assert "sizeLimit" in v["emptyDir"], (kind, v)
        requested = sum(_bytes(c["resources"]["requests"].get("ephemeral-storage", "0"))
                        for c in pod["containers"])
        assert requested >= sum(_bytes(v["emptyDir"]["sizeLimit"]) for v in disk), (kind, pod["volumes"])
        for c in pod["containers"]:  # every path a container writes is a mounted volume
            for m in c.get("volumeMounts", []):
                assert any(v["name"] == m["name"] for v in pod["volumes"])


def _ollama(name: str) -> tuple[dict, dict]:
    dep = next(o for o in render(_cr(SPECS[name])) if o["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    server = next(c for c in pod["containers"] if c["name"] == "ollama")
    return pod, server


def test_ollama_models_live_on_a_volume_sized_from_the_gguf():
    pod, server = _ollama("ollama-8b")
    env = {e["name"]: e["value"] for e in server["env"]}
    mount = next(m for m in server["volumeMounts"] if m["mountPath"] == env["OLLAMA_MODELS"])
    assert not env["OLLAMA_MODELS"].startswith("/tmp")
    vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    gguf = weight_bytes(lookup_model("hf://Qwen/Qwen3-8B"), "gguf", "Q4_K_M")
    assert gguf > 4.5 * GIB  # the 4.7 GiB file
    assert _bytes(vol["emptyDir"]["sizeLimit"]) >= gguf * 1.2
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert _bytes(tmp["emptyDir"]["sizeLimit"]) == engines.get("ollama").tmp_bytes


def test_ollama_outside_the_catalog_is_bounded_by_the_claim():
    pod, _ = _ollama("ollama-uncatalogued")
    vol = next(v for v in pod["volumes"] if v["name"] == "ollama-models")
    assert _bytes(vol["emptyDir"]["sizeLimit"]) >= 30 * GIB  # the artifact is on a 30Gi claim


def test_vllm_shm_is_per_gpu_and_memory_backed():
    pod = next(o for o in render(_cr(SPECS["vllm-awq"])) if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]
    assert shm == {"medium": "Memory", "sizeLimit": "1Gi"}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_container_falls_back_to_logs_for_the_termination_message(name):
    # The file wins when written (the quantizer's JSON summary: QualityGateFailed reads it); a
    # crash-looping server or a killed Job leaves its last log lines for Degraded to quote.
    for kind, pod in _pods(render(_cr(SPECS[name]))):
        for c in pod["containers"]:
            assert c["terminationMessagePolicy"] == "FallbackToLogsOnError", (kind, c["name"])
