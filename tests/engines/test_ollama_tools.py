"""The Ollama importer keeps the model's capabilities (tool calling, thinking, system prompt).

Ollama (v0.13.5, server/images.go Model.Capabilities) gives a model the "tools" capability only
when its Go TEMPLATE uses .Tools, and "thinking" only when thinking.InferTags finds the tags
around .Thinking; requests that need a missing capability are refused ("does not support tools").

Unit part: every template family the importer maps, fed with the model's real Hugging Face chat
template (tests/engines/data/chat_templates), gets a Go template that carries what the source has.
Real part (slow): the real Ollama binary (hack/images.sh ollama-bin) serves a GGUF made by the
project's quantizer from a tiny Qwen3 model carrying Qwen3's real chat template, through
`python -m slm_ollama serve` as the pod runs it; a `tools` request is accepted, /api/show lists
"tools", and the old ChatML template on the same GGUF is refused the same request.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from slm_ollama.importer import plan_import, run_import
from slm_ollama.modelfile import read_gguf_chat_template
from slm_ollama.templates import THINKING, TOOLS, choose_template

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = Path(__file__).parent / "data" / "chat_templates"
QWEN3 = TEMPLATES / "Qwen-Qwen3-0.6B.jinja"
# The template the importer wrote for every ChatML model before tools were kept (Ollama's chatml.gotmpl).
OLD_CHATML = "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

# Source template -> (family, capabilities the Go template must carry, capabilities reported dropped).
CASES = {
    "Qwen-Qwen3-0.6B": ("chatml", {TOOLS, THINKING}, set()),
    "Qwen-Qwen2.5-7B-Instruct": ("chatml", {TOOLS}, set()),
    "HuggingFaceTB-SmolLM3-3B": ("chatml", {THINKING}, set()),
    "HuggingFaceTB-SmolLM2-1.7B-Instruct": ("chatml", set(), set()),
    "microsoft-phi-4": ("phi4", set(), set()),
    "microsoft-Phi-4-mini-instruct": ("phi3", {TOOLS}, set()),
    "microsoft-Phi-3.5-mini-instruct": ("phi3", set(), set()),
    "google-gemma-3-1b-it": ("gemma", set(), set()),
    "google-gemma-2-2b-it": ("gemma", set(), set()),
    "meta-llama-Llama-3.2-3B-Instruct": ("llama3", {TOOLS}, set()),
    "meta-llama-Llama-3.1-8B-Instruct": ("llama3", {TOOLS}, set()),
    "mistralai-Mistral-7B-Instruct-v0.3": ("mistral", {TOOLS}, set()),
    "mistralai-Mistral-Nemo-Instruct-2407": ("mistral", {TOOLS}, set()),
    # No family: no TEMPLATE, and Ollama's fallback library has no thinking -> reported.
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": (None, set(), {THINKING}),
}


def test_every_template_file_has_a_case():
    assert sorted(p.stem for p in TEMPLATES.glob("*.jinja")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_go_template_keeps_the_source_capabilities(name):
    family, kept, dropped = CASES[name]
    choice = choose_template((TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8"))
    assert set(choice.dropped) == dropped
    if family is None:
        assert choice.format is None
        return
    fmt = choice.format
    assert fmt is not None and fmt.family == family and set(fmt.capabilities) == kept
    tpl = fmt.template
    # What Ollama reads: .Tools for "tools" (and .ToolCalls to show past calls), .Thinking for "thinking".
    assert (".Tools" in tpl) == (TOOLS in kept) and (".ToolCalls" in tpl) == (TOOLS in kept)
    assert (".Thinking" in tpl) == (THINKING in kept)
    if TOOLS in kept:
        assert 'eq .Role "tool"' in tpl or "{{ .Role }}" in tpl, "tool results must be rendered"
    # A system prompt reaches the model in every family (Gemma folds it into the first user turn).
    assert ".System" in tpl or "{{ .Role }}" in tpl or '"system"' in tpl
    assert "range" in tpl and ".Messages" in tpl


def test_tools_named_only_in_prose_are_not_a_capability():
    jinja = "{# this model has no tools #}{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}"
    choice = choose_template(jinja)
    assert choice.format is not None and choice.format.capabilities == frozenset()
    assert ".Tools" not in choice.format.template


def test_dropped_capability_is_logged_not_silent(tmp_path, caplog):
    # A Gemma-token template that takes tools (FunctionGemma-like): the gemma Go template has none.
    jinja = ("{% if tools %}{{ tools | tojson }}{% endif %}{% for m in messages %}<start_of_turn>{{ m.role }}\n"
             "{{ m.content }}<end_of_turn>\n{% endfor %}<start_of_turn>model\n")
    d = tmp_path / "m"
    d.mkdir()
    (d / "model.gguf").write_bytes(b"GGUF")
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": jinja, "eos_token": "<eos>"}))
    with caplog.at_level(logging.WARNING, logger="slm_ollama.import"):
        plan = plan_import("g", d / "model.gguf", template_from=d, template_file=None, params=[])
    assert plan.family == "gemma" and plan.dropped == frozenset({TOOLS}) and TOOLS not in plan.capabilities
    assert any("supports tools" in r.getMessage() and "--template-file" in r.getMessage() for r in caplog.records)


def test_template_file_capabilities_reported(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    go = tmp_path / "t.gotmpl"
    go.write_text(choose_template(QWEN3.read_text()).format.template)
    plan = plan_import("q", tmp_path / "model.gguf", template_from=None, template_file=go, params=[])
    assert plan.family == "file" and plan.capabilities == frozenset({TOOLS, THINKING})


def _write_gguf(path: Path, template: str | None) -> None:
    """A GGUF written by gguf-py (llama.cpp's own writer) with a tokenizer and a chat template."""
    gguf = pytest.importorskip("gguf", reason="needs gguf-py (runtime-images/install-ml-deps.sh)")
    import numpy as np

    w = gguf.GGUFWriter(str(path), "qwen3")
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"])
    w.add_token_scores([0.0] * 5)
    w.add_eos_token_id(4)
    if template is not None:
        w.add_chat_template(template)
    w.add_tensor("token_embd.weight", np.zeros((5, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_chat_template_read_from_the_gguf(tmp_path, caplog):
    """A bare GGUF artifact (what the quantizer writes: no tokenizer_config.json beside it) still
    gets the Go template of its own chat template, tools and thinking kept."""
    _write_gguf(tmp_path / "model.gguf", QWEN3.read_text())
    assert read_gguf_chat_template(tmp_path / "model.gguf") == (QWEN3.read_text(), "<|im_end|>")
    plan = plan_import("q", tmp_path / "model.gguf", template_from=tmp_path, template_file=None, params=[])
    assert plan.family == "chatml" and plan.capabilities == frozenset({TOOLS, THINKING})
    assert "<|im_end|>" in plan.stops

    bare = tmp_path / "bare"
    bare.mkdir()
    _write_gguf(bare / "model.gguf", None)
    assert read_gguf_chat_template(bare / "model.gguf") == (None, "<|im_end|>")
    with caplog.at_level(logging.WARNING, logger="slm_ollama.import"):
        plan = plan_import("q", bare / "model.gguf", template_from=bare, template_file=None, params=[])
    assert plan.template is None and any("no chat template" in r.getMessage() for r in caplog.records)


def test_not_a_gguf_is_a_clear_error(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"NOPE" + bytes(64))
    with pytest.raises(ValueError, match="not a GGUF file"):
        read_gguf_chat_template(tmp_path / "x.gguf")


# ---- the real path: the Ollama binary, a GGUF from the project's quantizer --------------------------

def _ollama_bin() -> str:
    done = subprocess.run(["bash", str(REPO / "hack" / "images.sh"), "ollama-bin"], capture_output=True,
                          text=True, timeout=3600, check=False)
    if done.returncode != 0:
        if shutil.which("go") is None:
            pytest.skip("the real Ollama binary builds from its Go module and Go is not installed "
                        "(hack/images.sh ollama-bin)")
        pytest.fail(f"hack/images.sh ollama-bin failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def qwen3_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Artifact folder (model.gguf + manifest.json) from the quantizer, for a tiny Qwen3 model that
    carries Qwen3-0.6B's real chat template (tools and thinking)."""
    for mod in ("torch", "transformers", "tokenizers", "llama_cpp"):
        pytest.importorskip(mod, reason="needs the ML deps (bash runtime-images/install-ml-deps.sh .venv/bin/python)")
    from slm_runtime.tiny_models import tiny_model

    # The training budget of tests/quantizer (quantizer_helpers.TRAIN_STEPS): the cached model is shared.
    src = tiny_model("qwen3", train_steps=int(os.environ.get("SLM_TINY_TRAIN_STEPS", "50")))
    work = tmp_path_factory.mktemp("qwen3-tools")
    model = work / "source"
    shutil.copytree(src, model)
    template = QWEN3.read_text(encoding="utf-8")
    (model / "chat_template.jinja").write_text(template, encoding="utf-8")
    cfg = json.loads((model / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg["chat_template"] = template
    (model / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    out = work / "artifact"
    done = subprocess.run([sys.executable, "-m", "slm_quantizer", "--source", str(model), "--format", "gguf",
                           "--type", "Q8_0", "--output", str(out), "--termination-log", str(work / "term")],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.gguf"]
    return out


@pytest.fixture(scope="module")
def served(qwen3_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m slm_ollama serve --gguf-dir ARTIFACT` as the pod runs it; yields Ollama's URL."""
    binary = _ollama_bin()
    home = tmp_path_factory.mktemp("ollama-home")
    port = _free_port()
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(home / "models"),
           "HOME": str(home), "PYTHONPATH": str(REPO / "runtime-images" / "ollama")}
    log = (home / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "slm_ollama", "serve", "--gguf-dir", str(qwen3_gguf),
                             "--name", "tiny-qwen3", "--ollama-bin", binary, "--wait", "60"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while "model tiny-qwen3 ready" not in (home / "serve.log").read_text():
            assert proc.poll() is None, (home / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (home / "serve.log").read_text()[-3000:]
            time.sleep(0.3)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)  # the supervisor forwards it to `ollama serve`
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        print("\nslm_ollama serve log (last lines):\n" + "\n".join(
            (home / "serve.log").read_text().splitlines()[-4:]))


def _capabilities(url: str, model: str) -> list[str]:
    r = httpx.post(f"{url}/api/show", json={"model": model}, timeout=30)
    r.raise_for_status()
    return r.json()["capabilities"]


def _chat_with_tools(url: str, model: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
        "model": model, "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [WEATHER_TOOL], "max_tokens": 4, "temperature": 0})


@pytest.mark.slow
def test_tools_request_accepted_by_real_ollama(served: str):
    """The GGUF's own chat template (Qwen3: tools, thinking) picked through the real serve path."""
    caps = _capabilities(served, "tiny-qwen3")
    assert {"completion", "tools", "thinking"} <= set(caps), caps

    r = _chat_with_tools(served, "tiny-qwen3")
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["finish_reason"] in ("length", "stop", "tool_calls"), r.json()

    # The prompt Ollama builds holds the tool list and the system prompt, in Qwen3's layout.
    r = httpx.post(f"{served}/api/chat", timeout=120, json={
        "model": "tiny-qwen3", "stream": False, "_debug_render_only": True, "tools": [WEATHER_TOOL],
        "messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Paris?"}]})
    assert r.status_code == 200, r.text
    prompt = r.json()["_debug_info"]["rendered_template"]
    assert prompt.startswith("<|im_start|>system\nAnswer briefly.\n\n# Tools\n"), prompt
    assert '"name":"get_weather"' in prompt and "<tool_call>" in prompt, prompt
    assert prompt.endswith("<|im_start|>user\nParis?<|im_end|>\n<|im_start|>assistant\n"), prompt


@pytest.mark.slow
def test_old_chatml_template_is_refused_tools(served: str, tmp_path: Path, qwen3_gguf: Path):
    """The same GGUF with the template the importer used to write: Ollama refuses `tools`
    (this is what the test above would see if the importer dropped tools)."""
    go = tmp_path / "chatml.gotmpl"
    go.write_text(OLD_CHATML)
    plan = plan_import("tiny-qwen3-chatml", qwen3_gguf / "model.gguf", template_from=None, template_file=go,
                       params=[])
    run_import(served, plan, wait_s=30)
    assert "tools" not in _capabilities(served, "tiny-qwen3-chatml")
    r = _chat_with_tools(served, "tiny-qwen3-chatml")
    assert r.status_code == 400 and "does not support tools" in r.text, r.text


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(n for n, (family, _, _) in CASES.items() if family))
def test_every_family_template_works_in_real_ollama(served: str, tmp_path: Path, qwen3_gguf: Path, name: str):
    """Each family's Go template parses in Ollama, shows the capabilities expected, and renders a
    conversation with a system prompt, tools, a past tool call and its result."""
    family, kept, _ = CASES[name]
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")}))
    model = f"fam-{name.lower()}"[:80]
    plan = plan_import(model, qwen3_gguf / "model.gguf", template_from=folder, template_file=None, params=[])
    assert plan.family == family
    run_import(served, plan, wait_s=30)
    caps = set(_capabilities(served, model))
    assert ("tools" in caps) == (TOOLS in kept) and ("thinking" in caps) == (THINKING in kept), caps

    messages = [{"role": "system", "content": "SYSTEM-PROMPT-7"}, {"role": "user", "content": "Weather in Paris?"}]
    body: dict = {"model": model, "stream": False, "_debug_render_only": True, "messages": messages}
    if TOOLS in kept:
        body["tools"] = [WEATHER_TOOL]
        messages += [
            {"role": "assistant", "content": "",
             "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": "TOOL-RESULT-9"},
        ]
    r = httpx.post(f"{served}/api/chat", json=body, timeout=120)
    assert r.status_code == 200, r.text
    prompt = r.json()["_debug_info"]["rendered_template"]
    assert "SYSTEM-PROMPT-7" in prompt and "Weather in Paris?" in prompt, prompt
    if TOOLS in kept:
        assert "get_weather" in prompt and '"city"' in prompt and "TOOL-RESULT-9" in prompt, prompt
        # The past call is rendered in the model's own call syntax, with its arguments.
        assert prompt.count("get_weather") >= 2 and "Paris" in prompt.split("Weather in Paris?", 1)[1], prompt


# Where the Go template knowingly differs from the model's own rendering of a plain conversation:
# default system prompts the Hugging Face template adds when none is given, SmolLM3's metadata
# system block, and Gemma 2's template refusing the system role that Ollama folds in.
HF_DIFFERS = {
    ("Qwen-Qwen2.5-7B-Instruct", "multi_turn"), ("HuggingFaceTB-SmolLM2-1.7B-Instruct", "multi_turn"),
    ("HuggingFaceTB-SmolLM3-3B", "with_system"), ("HuggingFaceTB-SmolLM3-3B", "multi_turn"),
    ("google-gemma-2-2b-it", "with_system"),
}
CONVERSATIONS = {
    "with_system": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}],
    "multi_turn": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                   {"role": "user", "content": "Bye"}],
}


def _hf_render(template: str, messages: list[dict]) -> str:
    """The prompt transformers' apply_chat_template builds (its Jinja settings), without BOS."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=True, bos_token="",
                                            eos_token="</s>", enable_thinking=False)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "conversation"), sorted(
    (n, c) for n, (family, _, _) in CASES.items() if family for c in CONVERSATIONS if (n, c) not in HF_DIFFERS))
def test_prompt_matches_the_models_own_template(served: str, tmp_path: Path, qwen3_gguf: Path, name: str,
                                                conversation: str):
    """Ollama's prompt from the Go template equals the model's Hugging Face template rendered by
    Jinja, byte for byte (today's date aside), for a system prompt and for a multi-turn chat."""
    pytest.importorskip("jinja2", reason="needs jinja2 (a transformers dependency)")
    source = (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": source}))
    model = f"hf-{name.lower()}"[:80]
    plan = plan_import(model, qwen3_gguf / "model.gguf", template_from=folder, template_file=None, params=[])
    run_import(served, plan, wait_s=30)
    messages = CONVERSATIONS[conversation]
    body: dict = {"model": model, "stream": False, "_debug_render_only": True, "messages": messages}
    if THINKING in plan.capabilities:
        body["think"] = False  # and enable_thinking=False on the Jinja side
    r = httpx.post(f"{served}/api/chat", json=body, timeout=120)
    assert r.status_code == 200, r.text
    got = r.json()["_debug_info"]["rendered_template"]
    want = _hf_render(source, messages)
    date = re.compile(r"Today Date: [^\n]*")
    assert date.sub("Today Date: D", got) == date.sub("Today Date: D", want)
