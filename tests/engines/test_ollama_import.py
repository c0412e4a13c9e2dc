"""The importer: chat template detection, Modelfile text, and the /api/create flow (fake server)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_ollama import FakeOllama, serving

from slm_ollama.importer import ModelImportError, find_gguf, plan_import, run_import
from slm_ollama.modelfile import build_modelfile, detect_chat_format, parse_params
from slm_ollama.supervisor import ollama_base_url

REPO = Path(__file__).resolve().parents[2]

# Abridged from the chat templates these model families ship in tokenizer_config.json.
QWEN3 = ("{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + "
         "'<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
         "{%- endif %}")
PHI4 = ("{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
        "{# <|user|> #}")
GEMMA3 = ("{{ bos_token }}{%- for message in loop_messages -%}{{ '<start_of_turn>' + role + '\\n' }}"
          "{{ message['content'] | trim }}{{ '<end_of_turn>\\n' }}{%- endfor -%}"
          "{%- if add_generation_prompt -%}{{'<start_of_turn>model\\n'}}{%- endif -%}")


@pytest.mark.parametrize(("jinja", "family", "stop"), [
    (QWEN3, "chatml", "<|im_end|>"), (PHI4, "phi3", "<|end|>"), (GEMMA3, "gemma", "<end_of_turn>"),
])
def test_template_families(jinja, family, stop):
    fmt = detect_chat_format(jinja)
    assert fmt is not None and fmt.family == family and stop in fmt.stops
    assert "{{ .Content }}" in fmt.template and "range .Messages" in fmt.template


def test_unknown_template_falls_back_to_gguf():
    assert detect_chat_format("{{ messages[0].content }}") is None
    assert detect_chat_format(None) is None


def _model_dir(tmp_path: Path, template: str | None, eos: str = "<|im_end|>") -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "model-Q4_K_M.gguf").write_bytes(b"GGUF" + os.urandom(4096))
    cfg = {"eos_token": {"content": eos}}
    if template is not None:
        cfg["chat_template"] = template
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    return d


def test_modelfile_text(tmp_path):
    d = _model_dir(tmp_path, QWEN3)
    plan = plan_import("qwen3-tiny", find_gguf(d), template_from=d, template_file=None,
                       params=parse_params(["num_ctx=4096", "temperature=0.7", "stop=</s>"]))
    text = plan.modelfile()
    lines = text.splitlines()
    assert lines[0] == f"FROM {d / 'model-Q4_K_M.gguf'}"
    assert lines[1].startswith('TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}')
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "</s>"' in text
    assert text.count('PARAMETER stop "<|im_end|>"') == 1  # eos equals a family stop: not repeated
    assert lines[-2:] == ["PARAMETER num_ctx 4096", "PARAMETER temperature 0.7"]


def test_modelfile_without_known_template(tmp_path):
    d = _model_dir(tmp_path, "{{ messages }}", eos="</s>")
    plan = plan_import("m", find_gguf(d), template_from=d, template_file=None, params=[])
    assert "TEMPLATE" not in plan.modelfile() and plan.family is None
    assert build_modelfile("/x.gguf", template=None, stops=[], params=[]) == "FROM /x.gguf\n"


@pytest.mark.parametrize("bad", ["num_ctx=big", "rm=-rf", "temperature", "stop=", "num_ctx=4096\nFROM x"])
def test_bad_params_rejected(bad):
    with pytest.raises(ValueError):
        parse_params([bad])


def test_create_uploads_blob_then_creates(tmp_path):
    d = _model_dir(tmp_path, PHI4, eos="<|endoftext|>")
    gguf = find_gguf(d)
    plan = plan_import("phi4-tiny", gguf, template_from=d, template_file=None, params=parse_params(["num_ctx=2048"]))
    fake = FakeOllama()
    with serving(fake.app()) as url:
        assert run_import(url, plan, wait_s=5) == {"status": "success"}
        digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
        assert fake.blobs[digest] == gguf.read_bytes()
        body = fake.creates[-1]
        assert body["model"] == "phi4-tiny" and body["files"] == {gguf.name: digest}
        assert body["parameters"] == {"stop": ["<|end|>", "<|user|>", "<|endoftext|>"], "num_ctx": 2048}
        assert "<|{{ .Role }}|>" in body["template"] and body["stream"] is False
        # A second import finds the blob already there and does not upload it again.
        fake.blobs[digest] = b"kept"
        run_import(url, plan, wait_s=5)
        assert fake.blobs[digest] == b"kept" and len(fake.creates) == 2


def test_server_not_reachable(tmp_path):
    d = _model_dir(tmp_path, QWEN3)
    plan = plan_import("m", find_gguf(d), template_from=d, template_file=None, params=[])
    with pytest.raises(ModelImportError, match="not reachable"):
        run_import("http://127.0.0.1:9", plan, wait_s=0.5)


def test_find_gguf_needs_exactly_one(tmp_path):
    with pytest.raises(ModelImportError, match="exactly one"):
        find_gguf(tmp_path)


def test_cli_dry_run_prints_modelfile(tmp_path):
    d = _model_dir(tmp_path, GEMMA3, eos="<eos>")
    out = subprocess.run([sys.executable, "-m", "slm_ollama", "import", "--gguf", str(find_gguf(d)),
                          "--name", "gemma3-tiny", "--template-from", str(d), "--param", "num_ctx=1024",
                          "--dry-run"], capture_output=True, text=True, check=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO / "runtime-images" / "ollama")})
    assert "<start_of_turn>model" in out.stdout and 'PARAMETER stop "<eos>"' in out.stdout


@pytest.mark.parametrize(("host", "url"), [
    ("127.0.0.1:11434", "http://127.0.0.1:11434"), ("0.0.0.0", "http://127.0.0.1:11434"),
    ("http://localhost:9999", "http://localhost:9999"), ("", "http://127.0.0.1:11434"),
])
def test_ollama_host_to_url(host, url):
    assert ollama_base_url({"OLLAMA_HOST": host}) == url
