"""llama-server renders the model's own chat template with Jinja, so `tools` reach it
(issue 12 item 8, follow-up).

Without --jinja, llama-server formats chats with its built-in templates and refuses `tools` /
`tool_choice` ("tools param requires --jinja flag", tools/server/server-common.cpp). The
pinned llama.cpp enables Jinja by default, but LLAMA_ARG_JINJA or a later default could turn
it off, so the operator passes --jinja explicitly.

- fast: every rendered llama-server command carries --jinja;
- the pinned llama-server's own --help lists --jinja (when the binary hack/images.sh
  llama-server-bin builds is cached; skipped with the reason otherwise: this test never builds);
- slow: that binary, with the operator's rendered flags and the quantizer's Q4_K_M of the tiny
  Qwen3 model, accepts a chat request with `tools` and `tool_choice: "auto"`, and the same
  command with --no-jinja instead refuses it naming the flag (so the flag is what matters).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_llamacpp_server import API_KEY, free_port, quantize, rendered_command, server_args

from slm_operator.local.run import llama_server_binary

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def cached_binary() -> Path:
    found = llama_server_binary()
    if found is None or not os.access(found, os.X_OK):
        pytest.skip("llama-server is not built here (hack/images.sh llama-server-bin builds it, ~10 min, once; "
                    "tests/engines/test_llamacpp_server.py does so); this test only uses a cached one")
    return Path(found)


@pytest.mark.parametrize("spec", [
    {"model": {"source": "hf://Qwen/Qwen3-1.7B"}, "quantization": {"format": "gguf", "type": "Q4_K_M"}},
    {"model": {"source": "hf://slm-e2e/tiny"}, "quantization": {"format": "gguf", "type": "TQ2_0"},
     "resources": {"cpu": "2", "memory": "2Gi", "gpu": {"count": 1}}},
], ids=["qwen3-cpu", "uncatalogued-gpu"])
def test_rendered_command_passes_jinja(spec: dict) -> None:
    import yaml

    from slm_operator import api
    from slm_operator.render import render
    from slm_operator.validate import defaulted

    spec = yaml.safe_load(yaml.safe_dump(spec))
    spec["model"]["revision"] = "0123456789abcdef0123456789abcdef01234567"
    spec["engine"] = {"name": "llamacpp"}
    body = {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment",
            "metadata": {"name": "m", "namespace": "ns", "uid": "u"}, "spec": spec}
    (ctr,) = [c for o in render(api.SLMDeployment.model_validate(defaulted(body))) if o["kind"] == "Deployment"
              for c in o["spec"]["template"]["spec"]["containers"] if c["name"] == "llama-server"]
    assert "--jinja" in ctr["args"] and "--no-jinja" not in ctr["args"]


def test_pinned_llama_server_lists_jinja() -> None:
    done = subprocess.run([str(cached_binary()), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next((ln for ln in done.stdout.splitlines() if ln.lstrip().startswith("--jinja")), None)
    assert line is not None, "the pinned llama-server has no --jinja"
    assert "--no-jinja" in line  # the explicit flag is needed: it can be turned off


def _serve(argv: list[str], work: Path):
    import httpx

    log = (work / "server.log").open("w")
    # No LLAMA_ARG_JINJA from this environment: only the flags decide.
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_ARG_JINJA"}
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=work, env=env)
    url = argv[argv.index("--host") + 1], argv[argv.index("--port") + 1]
    base = f"http://{url[0]}:{url[1]}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, (work / "server.log").read_text()[-3000:]
        assert time.monotonic() < deadline, (work / "server.log").read_text()[-3000:]
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return proc, log, base
        except httpx.TransportError:
            pass
        time.sleep(0.3)


def _stop(proc: subprocess.Popen, log) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.mark.slow
def test_tools_request_accepted_with_rendered_flags(tmp_path: Path) -> None:
    binary = cached_binary()
    for mod in ("torch", "transformers", "tokenizers", "llama_cpp"):
        pytest.importorskip(mod, reason="needs the ML deps (bash runtime-images/install-ml-deps.sh .venv/bin/python)")
    import httpx

    from slm_runtime.tiny_models import tiny_model

    steps = int(os.environ.get("SLM_TINY_TRAIN_STEPS", "50"))  # tests/quantizer's budget: cached models shared
    gguf = quantize(tiny_model("qwen3", train_steps=steps), tmp_path / "qwen3-q4", "Q4_K_M") / "model.gguf"
    key_file = tmp_path / "api-key"
    key_file.write_text(API_KEY + "\n")
    key_file.chmod(0o400)
    command = rendered_command("Q4_K_M", tmp_path)
    alias = command[command.index("--alias") + 1]
    body = {"model": alias, "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": TOOLS,
            "tool_choice": "auto", "max_tokens": 8, "temperature": 0}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    statuses = {}
    no_jinja = [*(a for a in command if a != "--jinja"), "--no-jinja"]
    for variant, args in (("rendered", command), ("no-jinja", no_jinja)):
        work = tmp_path / variant
        work.mkdir()
        argv = server_args(args, binary, gguf, free_port(), key_file)
        proc, log, base = _serve(argv, work)
        try:
            r = httpx.post(f"{base}/v1/chat/completions", headers=headers, json=body, timeout=120)
            statuses[variant] = (r.status_code, r.text)
        finally:
            _stop(proc, log)
    code, text = statuses["rendered"]
    assert code == 200, text
    choice = json.loads(text)["choices"][0]
    assert choice["message"]["role"] == "assistant"
    code, text = statuses["no-jinja"]
    assert code in (400, 500) and "requires --jinja" in text, (code, text)
    print(f"\nllama-server {binary}: tools accepted with the rendered flags; --no-jinja: {code} {text[:120]}",
          file=sys.stderr)
