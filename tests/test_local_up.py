"""`slmctl up / status / down` with real processes on 127.0.0.1.

A tiny Qwen3-architecture model (trained at test time, cached) is published on the project's
local hub (e2e/hubserver.py, in-process); `up` quantizes it with the real quantizer and serves
it with the real ONNX server (and the cached Ollama binary for gguf, where it was built), and
the official openai client talks to it with the generated key. Refusals are checked against
`slmctl validate` and `slmctl estimate` themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # e2e.hubserver; appended: nothing in the root shadows an installed module
REPO = "slm-e2e/tiny-qwen3"
TRAIN_STEPS = int(os.environ.get("SLM_TINY_TRAIN_STEPS", "50"))  # as tests/quantizer (shared cache)
SLMCTL = [sys.executable, "-c", "from slm_operator.cli import app; app()"]


def _needs(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (make venv installs the quantize and serve extras)")


@pytest.fixture(scope="module")
def hub() -> Iterator[tuple[str, str]]:
    """(hub URL, revision) of the tiny model on a local hub at 127.0.0.1."""
    _needs("torch", "transformers", "onnxruntime_genai", "slm_quantizer", "slm_onnx_server")
    from e2e.hubserver import HubServer
    from slm_runtime.tiny_models import tiny_model

    with HubServer(host="127.0.0.1", port=0) as server:
        sha = server.add_repo(REPO, tiny_model("qwen3", train_steps=TRAIN_STEPS))
        yield server.url, sha


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SLM_HOME", str(tmp_path / "slm-home"))
    return tmp_path / "slm-home"


def manifest(name: str, hub: tuple[str, str] | None = None, *, fmt: str = "onnx", qtype: str = "int4",
             engine: str = "onnxruntime", source: str | None = None, **spec: Any) -> dict[str, Any]:
    model: dict[str, Any] = {"source": source or f"hf://{REPO}", "revision": hub[1] if hub else "main",
                             "contextLength": 512}
    if hub:
        model["hub"] = {"endpoint": hub[0]}
    return {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment", "metadata": {"name": name},
            "spec": {"model": model, "quantization": {"format": fmt, "type": qtype}, "engine": {"name": engine},
                     "resources": {"cpu": "1", "memory": "2Gi"}, **spec}}


def slmctl(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SLMCTL, *args], input=stdin, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})}, check=False)


def chat(url: str, key: str, model: str) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60)
    out = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "The baker"}],
                                         max_tokens=8, temperature=0)
    return out.choices[0].message.content or ""


def _request(method: str, url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> int | None:
    """The HTTP status of a JSON request (None when nothing answers)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(), method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


# ------------------------------------------------------------------ refusals (no process)

def test_refusal_is_validates_own(home: Path) -> None:
    """Bad input: the same sentences as `slmctl validate`, exit 1, nothing started."""
    import yaml

    bad = manifest("bad-ctx")
    bad["spec"]["model"]["contextLength"] = 10
    text = yaml.safe_dump(bad)
    up = slmctl("up", "-f", "-", stdin=text, env={"SLM_HOME": str(home)})
    val = slmctl("validate", "-f", "-", stdin=text)
    assert up.returncode == 1 and val.returncode == 1
    said = [line.split("error ", 1)[-1] for line in val.stderr.splitlines() if "contextLength" in line]
    assert said, val.stderr
    assert said[0] in " ".join(up.stderr.split()), (up.stderr, said)
    assert not (home / "bad-ctx").exists()


def test_does_not_fit_quotes_estimate(home: Path) -> None:
    """A catalog model bigger than the RAM given: refused with estimate's numbers and command."""
    import yaml

    big = manifest("big", source="hf://Qwen/Qwen3-8B", fmt="gguf", qtype="Q8_0", engine="ollama")
    del big["spec"]["resources"]
    up = slmctl("up", "-f", "-", "--node-memory", "2", stdin=yaml.safe_dump(big), env={"SLM_HOME": str(home)})
    assert up.returncode == 1, up.stdout + up.stderr
    msg = " ".join(up.stderr.split())
    assert "does not fit this machine (2 GiB RAM)" in msg, msg
    cmd = msg.split("Same numbers: ", 1)[1].split()
    assert cmd[:2] == ["slmctl", "estimate"] and "--node-memory" in cmd
    est = slmctl(*cmd[1:], "--offline", "-o", "json")
    assert est.returncode == 0, est.stderr
    d = json.loads(est.stdout)
    assert d["fits"] is False
    assert " ".join(d["reason"].split()) in msg, (d["reason"], msg)  # the same sentence, the same numbers
    assert not (home / "big" / "api-key").exists()


def test_ollama_commands_put_the_gateway_in_front(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """engine ollama: `slm_ollama serve` on the private port, the gateway (its own parser accepts the
    arguments) on the public one; without slm_gateway installed, a refusal naming it and the fix."""
    import importlib.util

    from slm_gateway.__main__ import parser
    from slm_operator.local import run

    monkeypatch.setenv("SLM_OLLAMA_BIN", "/usr/bin/true")
    p = run.plan(manifest("tiny-gguf", fmt="gguf", qtype="Q8_0", engine="ollama"))
    engine, gateway = run.engine_commands(p, 18000, 18001)
    assert (engine["role"], gateway["role"]) == ("engine", "gateway")
    assert engine["argv"][1:4] == ["-m", "slm_ollama", "serve"] and engine["env"]["OLLAMA_HOST"] == "127.0.0.1:18001"
    assert gateway["argv"][1:3] == ["-m", "slm_gateway"]
    ns = parser().parse_args(gateway["argv"][3:])
    assert (ns.engine, ns.upstream, ns.listen, ns.model) == ("ollama", "http://127.0.0.1:18001", "127.0.0.1:18000",
                                                            "tiny-qwen3")
    assert ns.api_key_file == p.api_key_file and ns.metrics_listen.startswith("127.0.0.1:")
    assert ns.metrics_listen not in ("127.0.0.1:18000", "127.0.0.1:18001")

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "slm_gateway" else real(name, *a))
    with pytest.raises(run.LocalError, match=r"slm_gateway cannot be imported: pip install 'slm-operator\[serve\]'"):
        run.engine_commands(p, 18000, 18001)


def test_vllm_and_gpu_refused_with_the_fix(home: Path) -> None:
    from slm_operator.local.run import LocalError, plan

    spec = manifest("gpu", fmt="none", qtype="bf16", engine="vllm")
    spec["spec"]["resources"] = {"gpu": {"count": 1}}
    with pytest.raises(LocalError) as e:
        plan(spec)
    assert "resources.gpu.count" in str(e.value) or "engine.name" in str(e.value)


# ------------------------------------------------------------------ real processes

@pytest.mark.slow
def test_up_onnx_cold_then_warm(hub: tuple[str, str], home: Path) -> None:
    """Cold: quantize + serve; key required; status; down; warm: no quantizer, same key, answers."""
    from slm_operator.local import run

    said: list[str] = []
    t0 = time.monotonic()
    rec = run.up(manifest("tiny", hub), port=0, say=said.append)
    cold = time.monotonic() - t0
    try:
        key_file = Path(rec["apiKeyFile"])
        assert key_file == home / "tiny" / "api-key" and oct(key_file.stat().st_mode)[-3:] == "600"
        key = key_file.read_text().strip()
        assert any(s.startswith("API key (shown once): ") and key in s and f"cat {key_file}" in s for s in said)
        assert rec["url"].startswith("http://127.0.0.1:")
        assert chat(rec["url"], key, "tiny-qwen3")
        assert run.http_status(rec["url"] + "/models") == 401  # no key
        assert run.http_status(rec["url"] + "/models", headers={"Authorization": "Bearer wrong"}) == 401
        # The key is in the key file only: not in arguments, environment, logs or the run record.
        for pr in rec["processes"]:
            assert key not in Path(f"/proc/{pr['pid']}/cmdline").read_text(errors="replace")
            assert key not in Path(f"/proc/{pr['pid']}/environ").read_text(errors="replace")
        for f in [*(home / "tiny" / "logs").iterdir(), home / "tiny" / "run.json"]:
            assert key not in f.read_text(errors="replace"), f
        rows = run.status("tiny")
        assert rows[0]["ready"] and rows[0]["url"] == rec["url"]
        again = run.up(manifest("tiny", hub), say=said.append)  # idempotent: left as it is
        assert again["processes"] == rec["processes"]
    finally:
        assert run.down("tiny")
    assert not run.status("tiny")[0]["running"]
    assert not any(run._alive(pr["pid"], pr["marker"]) for pr in rec["processes"])

    quantize_log = home / "tiny" / "logs" / "quantize.log"
    size = quantize_log.stat().st_size
    said.clear()
    t0 = time.monotonic()
    warm_rec = run.up(manifest("tiny", hub), port=0, say=said.append)
    warm = time.monotonic() - t0
    try:
        assert any("reusing it (no quantization)" in s for s in said), said
        assert quantize_log.stat().st_size == size
        assert not any("shown once" in s for s in said)  # the key is kept, not shown again
        assert chat(warm_rec["url"], key, "tiny-qwen3")
    finally:
        run.down("tiny")
    print(f"\nlocal up (ONNX, tiny qwen3): cold {cold:.1f} s, warm {warm:.1f} s to ready")


@pytest.mark.slow
def test_up_ollama_gguf(hub: tuple[str, str], home: Path) -> None:
    """gguf + engine ollama: the cached Ollama binary behind the gateway (slm_gateway, as in the pod):
    no key 401, the key 200, Ollama's model-management routes 403 even with the key."""
    from slm_operator.local import run

    if run.ollama_binary() is None:
        pytest.skip("no Ollama binary: hack/images.sh builds it (~/.cache/slm-operator/bin/ollama-v0.13.5)")
    _needs("llama_cpp", "slm_ollama")
    rec = run.up(manifest("tiny-gguf", hub, fmt="gguf", qtype="Q8_0", engine="ollama"), port=0,
                 say=lambda s: print(s) if "shown once" not in s else None)  # no key in test output
    try:
        key = Path(rec["apiKeyFile"]).read_text().strip()
        assert [pr["role"] for pr in rec["processes"]] == ["engine", "gateway"]
        assert (home / "tiny-gguf" / "logs" / "gateway.log").is_file()
        gateway_cmd = Path(f"/proc/{rec['processes'][1]['pid']}/cmdline").read_bytes().split(b"\0")
        assert gateway_cmd[1:5] == [b"-m", b"slm_gateway", b"--engine", b"ollama"]
        assert key.encode() not in b" ".join(gateway_cmd)  # the key is read from its file
        assert chat(rec["url"], key, "tiny-qwen3")
        auth = {"Authorization": f"Bearer {key}"}
        assert run.http_status(rec["url"] + "/models") == 401
        assert run.http_status(rec["url"] + "/models", headers={"Authorization": "Bearer wrong"}) == 401
        assert run.http_status(rec["url"] + "/models", headers=auth) == 200
        base = rec["url"].removesuffix("/v1")
        assert run.http_status(base + "/api/tags", headers=auth) == 200  # Ollama's own API, served
        for method, route, body in (("POST", "/api/pull", {"model": "tiny-qwen3"}),
                                    ("DELETE", "/api/delete", {"model": "tiny-qwen3"}),
                                    ("POST", "/api/create", {"model": "x", "from": "tiny-qwen3"})):
            assert _request(method, base + route, body) == 401, route  # no key: 401 first
            assert _request(method, base + route, body, auth) == 403, route  # management: refused
        assert chat(rec["url"], key, "tiny-qwen3")  # the model is still there: /api/delete did nothing
    finally:
        run.down("tiny-gguf")
    assert not run.status("tiny-gguf")[0]["running"]


@pytest.mark.slow
def test_up_quantizer_in_podman(hub: tuple[str, str], home: Path) -> None:
    """--runtime podman: the quantizer image (hardened: read-only, user 65532, no capabilities)."""
    import shutil

    from slm_operator.local import run

    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (bash hack/host-deps.sh installs it)")
    if subprocess.run(["podman", "image", "exists", run.QUANTIZER_IMAGE], check=False).returncode != 0:
        pytest.skip(f"{run.QUANTIZER_IMAGE} is not built here (make images)")
    said: list[str] = []
    rec = run.up(manifest("tiny-podman", hub), port=0, runtime="podman", say=said.append)
    try:
        assert any("(podman; log" in s for s in said), said
        assert (Path(rec["artifact"]) / "manifest.json").is_file()
        assert chat(rec["url"], Path(rec["apiKeyFile"]).read_text().strip(), "tiny-qwen3")
    finally:
        run.down("tiny-podman")
