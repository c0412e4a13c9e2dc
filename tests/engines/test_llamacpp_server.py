"""The llamacpp image's entrypoint, run directly: llama.cpp's llama-server (the binary the image
carries, built by hack/images.sh llama-server-bin from the pinned llama-cpp-python sdist's
llama.cpp) serving GGUF artifacts the project's quantizer wrote from tiny models:

- Q4_K_M of the tiny Qwen3 model;
- TQ1_0 and TQ2_0 of the tiny BitNet b1.58 model (slm_runtime.tiny_bitnet, trained ternary).

With the command the operator renders for an SLMDeployment with engine llamacpp (slmctl render:
--model --alias --host --port --api-key-file --ctx-size --parallel --threads --metrics --no-webui
--no-slots; only the paths and the address are this machine's), each server must:
answer /health without a key (the probes); refuse /v1/chat/completions, /v1/models and /metrics
without the key (401) and answer them with it; expose the queue metrics (llamacpp:requests_deferred,
llamacpp:requests_processing) the HPA reads; and generate, greedily, the same text the quantizer's
own check generated from the same file (the manifest's sample), so the server computes the model
the quality gate passed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-key-0123456789"
# The queue-depth signal and its companion (tools/server/server-task.cpp, metrics of /metrics).
QUEUE_METRICS = ("llamacpp:requests_deferred", "llamacpp:requests_processing")
SAMPLE_PROMPT = "The baker opened"  # slm_quantizer.cli.SAMPLE_PROMPT: the manifest's sample continues it

pytestmark = pytest.mark.slow


def llama_server_bin() -> Path:
    """The llama-server binary from hack/images.sh llama-server-bin (built once per version)."""
    done = subprocess.run(["bash", str(REPO / "hack" / "images.sh"), "llama-server-bin"], capture_output=True,
                          text=True, timeout=3600, check=False)
    if done.returncode != 0:
        missing = [t for t in ("cmake", "g++") if shutil.which(t) is None]
        if missing:
            pytest.skip(f"llama-server builds from llama.cpp's source with CMake and a C++ compiler; "
                        f"missing: {', '.join(missing)} (hack/images.sh llama-server-bin)")
        pytest.fail(f"hack/images.sh llama-server-bin failed:\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1]) / "bin" / "llama-server"


def quantize(src: Path, out: Path, qtype: str) -> Path:
    """The quantizer's GGUF artifact of src at qtype (model.gguf + manifest.json)."""
    done = subprocess.run([sys.executable, "-m", "slm_quantizer", "--source", str(src), "--format", "gguf",
                           "--type", qtype, "--output", str(out), "--termination-log", str(out) + ".term"],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# An SLMDeployment the operator renders a llamacpp Deployment for (slmctl render, offline).
SPEC = """\
apiVersion: slm.ai/v1alpha1
kind: SLMDeployment
metadata: {name: tiny}
spec:
  model: {source: hf://slm-e2e/tiny, revision: 0123456789abcdef0123456789abcdef01234567, contextLength: 512}
  quantization: {format: gguf, type: %s}
  engine: {name: llamacpp}
  replicas: 1
  resources: {cpu: 2000m, memory: 2Gi}
"""


def rendered_command(qtype: str, tmp: Path) -> list[str]:
    """The llama-server container's command + args as the operator renders them (slmctl render)."""
    import yaml

    spec = tmp / f"spec-{qtype}.yaml"
    spec.write_text(SPEC % qtype)
    slmctl = Path(sys.executable).parent / "slmctl"  # the console script of this install
    done = subprocess.run([str(slmctl), "render", "-f", str(spec)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    deployments = [d for d in yaml.safe_load_all(done.stdout) if d and d.get("kind") == "Deployment"]
    (container,) = [c for d in deployments for c in d["spec"]["template"]["spec"]["containers"]
                    if c["name"] == "llama-server"]
    return container["command"] + container["args"]


def server_args(command: list[str], binary: Path, gguf: Path, port: int, key_file: Path) -> list[str]:
    """The rendered command with this machine's paths: the binary, the GGUF, the key file, and
    127.0.0.1:<free port> instead of the pod's 0.0.0.0:8000. Every other flag stays as rendered."""
    local = {"--model": str(gguf), "--host": "127.0.0.1", "--port": str(port), "--api-key-file": str(key_file)}
    out = [str(binary)]
    args = iter(command[1:])
    for arg in args:
        out.append(arg)
        if arg in local:
            next(args)
            out.append(local[arg])
    return out


@pytest.fixture(scope="module")
def binary() -> Path:
    return llama_server_bin()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    for mod in ("torch", "transformers", "tokenizers", "llama_cpp"):
        pytest.importorskip(mod, reason="needs the ML deps (bash runtime-images/install-ml-deps.sh .venv/bin/python)")
    from slm_runtime.tiny_bitnet import tiny_bitnet_model
    from slm_runtime.tiny_models import tiny_model

    steps = int(os.environ.get("SLM_TINY_TRAIN_STEPS", "50"))  # tests/quantizer's budget: cached models shared
    work = tmp_path_factory.mktemp("llamacpp-artifacts")
    bitnet = tiny_bitnet_model(train_steps=steps)
    return {"qwen3-Q4_K_M": quantize(tiny_model("qwen3", train_steps=steps), work / "qwen3-q4", "Q4_K_M"),
            "bitnet-TQ1_0": quantize(bitnet, work / "bitnet-tq1", "TQ1_0"),
            "bitnet-TQ2_0": quantize(bitnet, work / "bitnet-tq2", "TQ2_0")}


class Server:
    def __init__(self, url: str, artifact: Path, alias: str):
        self.url, self.artifact, self.alias = url, artifact, alias


@pytest.fixture(scope="module", params=["qwen3-Q4_K_M", "bitnet-TQ1_0", "bitnet-TQ2_0"])
def server(request, binary: Path, artifacts: dict[str, Path], tmp_path_factory) -> Iterator[Server]:
    artifact = artifacts[request.param]
    work = tmp_path_factory.mktemp("llama-server")
    key_file = work / "api-key"
    key_file.write_text(API_KEY + "\n")  # a Secret file ends with a newline more often than not
    key_file.chmod(0o400)
    port = free_port()
    command = rendered_command(request.param.split("-")[1], work)
    assert {"--api-key-file", "--metrics", "--alias", "--ctx-size", "--parallel", "--threads"} <= set(command)
    alias = command[command.index("--alias") + 1]
    log = (work / "server.log").open("w")
    proc = subprocess.Popen(server_args(command, binary, artifact / "model.gguf", port, key_file),
                            stdout=log, stderr=subprocess.STDOUT, cwd=work)
    url = f"http://127.0.0.1:{port}"
    import httpx

    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (work / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (work / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        yield Server(url, artifact, alias)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        text = (work / "server.log").read_text()
        assert API_KEY not in text, "the API key reached the server log"


def _auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _chat(url: str, alias: str, headers: dict[str, str] | None = None):
    import httpx

    return httpx.post(f"{url}/v1/chat/completions", headers=headers or {}, timeout=120, json={
        "model": alias, "messages": [{"role": "user", "content": "Tell me about the bakery."}],
        "max_tokens": 8, "temperature": 0})


def _metrics(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"(llamacpp:[a-z_]+) ([0-9.eE+-]+|nan|inf)", line.strip())
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def test_health_needs_no_key(server: Server):
    import httpx

    r = httpx.get(f"{server.url}/health", timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_every_api_route_needs_the_key(server: Server):
    import httpx

    assert _chat(server.url, server.alias).status_code == 401
    assert _chat(server.url, server.alias, _auth("wrong-key")).status_code == 401
    assert httpx.get(f"{server.url}/v1/models", timeout=10).status_code == 401
    assert httpx.post(f"{server.url}/v1/completions", json={"prompt": "x", "max_tokens": 1},
                      timeout=10).status_code == 401
    assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 401
    assert httpx.get(f"{server.url}/slots", timeout=10).status_code == 401


def test_chat_with_the_key(server: Server):
    import httpx

    r = _chat(server.url, server.alias, _auth())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == server.alias
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["usage"]["completion_tokens"] >= 1
    models = httpx.get(f"{server.url}/v1/models", headers=_auth(), timeout=10).json()
    assert [m["id"] for m in models["data"]] == [server.alias]


def test_same_text_as_the_quantizer_check(server: Server):
    """Greedy completion of the manifest's prompt: the server and the quantizer's gate ran the same
    llama.cpp on the same file, so they write the same words."""
    import httpx

    manifest = json.loads((server.artifact / "manifest.json").read_text())
    r = httpx.post(f"{server.url}/v1/completions", headers=_auth(), timeout=120, json={
        "model": server.alias, "prompt": SAMPLE_PROMPT, "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == manifest["sample"]


def test_metrics_expose_the_queue(server: Server):
    import httpx

    assert _chat(server.url, server.alias, _auth()).status_code == 200
    r = httpx.get(f"{server.url}/metrics", headers=_auth(), timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    values = _metrics(r.text)
    for name in QUEUE_METRICS:
        assert name in values, r.text
        assert values[name] >= 0
    assert values["llamacpp:tokens_predicted_total"] >= 1
    assert f"# TYPE {QUEUE_METRICS[0]} gauge" in r.text
