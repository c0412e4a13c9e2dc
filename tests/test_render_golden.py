"""Rendered manifests stay byte-identical across refactors (golden files).

The four examples, plus a few specs that exercise `engine: auto`, a model outside the sizing
catalog and a model served from the user's PVC, are rendered (with and without the
ServiceMonitor CRD) and their resolution printed; the output must equal the files under
tests/data/golden/. A deliberate change regenerates them with
`SLM_UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/test_render_golden.py` and the diff is reviewed.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_operator import api
from slm_operator.render import RenderContext, render
from slm_operator.resolve import resolve
from slm_operator.validate import defaulted

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "golden"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _cr(spec: dict[str, Any], name: str) -> dict:
    return {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment",
            "metadata": {"name": name}, "spec": spec}


# Specs beyond the examples: paths the refactor must keep (auto engine, outside the catalog, PVC).
EXTRA = {
    "auto-cpu-qwen3": _cr({"model": {"source": "hf://Qwen/Qwen3-0.6B", "revision": "main"},
                           "engine": {"name": "auto"}, "resources": {"gpu": {"count": 0}}}, "auto-cpu"),
    "auto-gpu-phi4": _cr({"model": {"source": "hf://microsoft/Phi-4-mini-instruct", "revision": "main"},
                          "engine": {"name": "auto"},
                          "resources": {"gpu": {"count": 1, "product": "NVIDIA-L4"}}}, "auto-gpu"),
    "auto-gguf-gemma": _cr({"model": {"source": "hf://unsloth/gemma-3-1b-it", "revision": "main"},
                            "engine": {"name": "auto"}, "quantization": {"format": "gguf"}}, "auto-gguf"),
    "uncatalogued-onnx": _cr({"model": {"source": "hf://acme/tiny-model", "revision": "v1"},
                              "engine": {"name": "onnxruntime"}}, "unknown-onnx"),
    "uncatalogued-ollama": _cr({"model": {"source": "hf://acme/tiny-model", "revision": "v1"},
                                "engine": {"name": "ollama"}}, "unknown-ollama"),
    "pvc-vllm": _cr({"model": {"source": "pvc://models/qwen", "revision": "main"},
                     "engine": {"name": "vllm"}, "quantization": {"format": "none"},
                     "resources": {"gpu": {"count": 1, "product": "NVIDIA-L4"}}}, "pvc-vllm"),
}

def _cases() -> dict[str, dict]:
    out = {p.stem: yaml.safe_load(p.read_text()) for p in EXAMPLES}
    out.update(EXTRA)
    return out


CASES = _cases()


def _text(body: dict) -> str:
    body = dict(body)
    body["metadata"] = {**body["metadata"], "namespace": "ns", "uid": "uid-1"}
    cr = api.SLMDeployment.model_validate(defaulted(body))
    r = resolve(cr.spec)
    parts = ["# resolved\n" + yaml.safe_dump(dataclasses.asdict(r), sort_keys=True)]
    for sm in (False, True):
        docs = render(cr, RenderContext(service_monitor_crd=sm))
        parts.append(f"# serviceMonitorCRD={sm}\n" + yaml.safe_dump_all(docs, sort_keys=False))
    return "---\n".join(parts)


@pytest.mark.parametrize("name", sorted(CASES))
def test_render_matches_golden(name: str) -> None:
    path = GOLDEN / f"{name}.yaml"
    got = _text(CASES[name])
    if os.environ.get("SLM_UPDATE_GOLDEN") == "1":
        path.write_text(got)
    assert path.exists(), f"{path} missing: run SLM_UPDATE_GOLDEN=1 pytest {__file__}"
    assert got == path.read_text(), f"{name}: render changed; diff against {path}"


def test_every_example_has_a_golden_file() -> None:
    assert {p.stem for p in EXAMPLES} <= {p.stem for p in GOLDEN.glob("*.yaml")}
