"""`slmctl export --foundry-local`: a real ONNX int4 artifact of the tiny Qwen3, written in
Foundry Local's cache layout, loaded by onnxruntime-genai and, in-process, by Foundry Local's
own runtime (foundry-local-sdk 2.2.1 in the side environment install-foundry-local.sh makes).
About 1 min on 2 busy cores (the quantization is most of it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from quantizer_helpers import require, run_quantizer
from typer.testing import CliRunner

from slm_operator.cli import app
from slm_operator.export_local import DOWNLOAD_MARKER, ExportError, export_foundry_local

pytestmark = pytest.mark.slow

FOUNDRY_PYTHON = Path(sys.prefix) / "share/slm-foundry-local/2.2.1/venv/bin/python"
# Runs in the side environment: registers the exported folder in Foundry Local's local catalog
# (its "bring your own model" call), loads it with Foundry Local's runtime and chats.
FOUNDRY_CHECK = r"""
import json, sys
from foundry_local_sdk import CatalogType, Configuration, FoundryLocalManager, ModelInfoBuilder
folder, work, model_id = sys.argv[1:4]
FoundryLocalManager.initialize(Configuration(app_name="slm-export-check", app_data_dir=work + "/app",
                                             model_cache_dir=work + "/cache", logs_dir=work + "/logs"))
catalog = FoundryLocalManager.instance.get_catalog(CatalogType.LOCAL)
with ModelInfoBuilder() as info:
    info.set_string_property("task", "chat-completion")
    model = catalog.register_model(model_path=folder, model_id=model_id, metadata=info)
model.load()
client = model.get_chat_client()
client.settings.max_tokens = 6
client.settings.temperature = 0.0
reply = client.complete_chat([{"role": "user", "content": "The baker opened"}])
print(json.dumps({"id": model.id, "loaded": [m.id for m in catalog.get_loaded_models()],
                  "finish": reply.choices[0].finish_reason, "tokens": reply.usage.completion_tokens}))
"""


@pytest.fixture(scope="module")
def onnx_artifact(tiny, tmp_path_factory) -> Path:
    require("onnxruntime_genai")
    out = tmp_path_factory.mktemp("onnx") / "qwen3-int4"
    run = run_quantizer(tiny("qwen3"), out, "onnx", "int4")
    assert run.rc == 0, run.stderr[-2000:]
    return out


def test_export_writes_foundry_locals_cache_layout(onnx_artifact, tmp_path):
    cache = tmp_path / "foundry-cache"
    res = CliRunner().invoke(app, ["export", "-a", str(onnx_artifact), "--foundry-local", str(cache),
                                   "--name", "tiny-qwen3-int4"])
    assert res.exit_code == 0, res.output
    folder = cache / "slm-operator" / "tiny-qwen3-int4"  # <cache>/<publisher>/<model>
    # What Foundry Local's cache scanner takes as a model: genai_config.json and
    # inference_model.json with a Name, and no download.tmp.
    assert (folder / "genai_config.json").is_file() and not (folder / DOWNLOAD_MARKER).exists()
    info = json.loads((folder / "inference_model.json").read_text())
    assert info["Name"] == "tiny-qwen3-int4:1"
    assert info["PromptTemplate"]["prompt"] == "<|im_start|>user\n{Content}<|im_end|>\n<|im_start|>assistant"
    manifest = json.loads((onnx_artifact / "manifest.json").read_text())
    assert {f["path"] for f in manifest["files"]} <= {p.name for p in folder.iterdir()}
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folders left
    # The exported folder is what onnxruntime-genai loads.
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    assert og.Tokenizer(model).encode("The baker").size > 0
    # A rerun for the same artifact does nothing.
    again = export_foundry_local(onnx_artifact, cache, "tiny-qwen3-int4")
    assert again.already and again.model_id == "tiny-qwen3-int4:1"


def test_export_refuses_what_foundry_local_cannot_run(onnx_artifact, tmp_path):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(onnx_artifact, damaged)
    with open(damaged / "model.onnx.data", "r+b") as fh:
        fh.write(b"\0\0\0\0")
    with pytest.raises(ExportError, match=r"model.onnx.data does not match the manifest.*rerun"):
        export_foundry_local(damaged, tmp_path / "c", "x")
    mlx_like = tmp_path / "mlx"
    shutil.copytree(onnx_artifact, mlx_like)
    manifest = json.loads((mlx_like / "manifest.json").read_text())
    (mlx_like / "manifest.json").write_text(json.dumps({**manifest, "format": "mlx"}))
    with pytest.raises(ExportError, match="quantize with format onnx"):
        export_foundry_local(mlx_like, tmp_path / "c", "x")
    with pytest.raises(ExportError, match="--name"):
        export_foundry_local(onnx_artifact, tmp_path / "c", "../escape")
    res = CliRunner().invoke(app, ["export", "-a", str(tmp_path / "nothing"), "--foundry-local", str(tmp_path)])
    assert res.exit_code == 1
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("genai_config.json"))


@pytest.mark.skipif(not FOUNDRY_PYTHON.exists(),
                    reason="needs foundry-local-sdk (bash runtime-images/install-foundry-local.sh .venv/bin/python)")
def test_foundry_locals_runtime_loads_the_export_in_process(onnx_artifact, tmp_path):
    out = export_foundry_local(onnx_artifact, tmp_path / "cache-export", "tiny-qwen3-int4")
    proc = subprocess.run([str(FOUNDRY_PYTHON), "-W", "ignore", "-c", FOUNDRY_CHECK, str(out.path),
                           str(tmp_path / "fl"), out.model_id], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["id"] == "tiny-qwen3-int4:1" and result["id"] in result["loaded"]
    assert result["tokens"] >= 1 and result["finish"] in ("length", "stop")
