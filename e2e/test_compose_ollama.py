"""`slmctl compose` for engine ollama run for real with podman-compose: the gateway in front.

The tiny Qwen3 model on the local hub is quantized to GGUF Q8_0 by the one-shot quantize service;
the `api` service is the gateway image (`python -m slm_gateway --engine ollama`, one-key mode) and
the `ollama` service joins its network namespace, listening on 127.0.0.1 only (as in the pod).
Through the published port: no key or a wrong key gets 401, the key gets answers, Ollama's
model-management routes get 403 even with the key (and the model is still served after them).
Both healthchecks are run once by hand (podman runs them from systemd timers, absent here).
About 1-2 minutes once the images are built (hack/images.sh, cached by input hash).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.test_compose import TIMEOUT_S, compose_images, podman, slmctl_compose, tiny_hub


@pytest.fixture(scope="module")
def images() -> None:
    compose_images(["quantizer", "ollama", "gateway"])


@pytest.fixture(scope="module")
def hub() -> Iterator[tuple[str, str]]:
    with tiny_hub() as h:
        yield h


def _request(method: str, url: str, body: dict[str, Any] | None = None,
             key: str | None = None) -> tuple[int | None, bytes]:
    """(HTTP status, body) of a JSON request; (None, error text) when nothing answers."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers),
                                    timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        return None, str(e).encode()


def _chat(base: str, key: str | None) -> tuple[int | None, bytes]:
    return _request("POST", base + "/v1/chat/completions",
                    {"model": "tiny-qwen3", "messages": [{"role": "user", "content": "The baker"}],
                     "max_tokens": 8, "temperature": 0}, key)


def test_compose_ollama_behind_the_gateway(images: None, hub: tuple[str, str], tmp_path: Path) -> None:
    key, pc, port = slmctl_compose(tmp_path, hub, {"format": "gguf", "type": "Q8_0"}, "ollama")
    project = pc[2]
    names = {s: f"{project}_{s}_1" for s in ("quantize", "api", "ollama")}
    base = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    try:
        up = subprocess.run([*pc, "up", "-d"], capture_output=True, text=True, timeout=TIMEOUT_S,
                            cwd=tmp_path, check=False)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        exit_code = podman("wait", names["quantize"]).strip()
        assert exit_code == "0", (exit_code, podman("logs", names["quantize"], check=False)[-3000:])
        deadline = time.monotonic() + 300
        while (answer := _chat(base, key))[0] != 200:
            # starting: the gateway's 503 (Ollama not up), or Ollama's own 404 while the importer
            # is still creating the model (Compose has no readiness gate in front of the port)
            assert answer[0] in (None, 503) or (answer[0] == 404 and b"not found" in answer[1]), answer
            if time.monotonic() > deadline:
                logs = {svc: podman("logs", names[svc], check=False)[-2000:] for svc in ("api", "ollama")}
                raise AssertionError(f"no answer: {answer}; logs: {logs}")
            time.sleep(1)
        first_answer_s = time.monotonic() - t0
        assert json.loads(answer[1])["choices"][0]["message"]["content"]
        assert _chat(base, None)[0] == 401
        assert _chat(base, "wrong")[0] == 401
        assert _request("GET", base + "/v1/models", key=key)[0] == 200
        assert _request("GET", base + "/api/tags", key=key)[0] == 200
        for method, route, body in (("POST", "/api/pull", {"model": "tiny-qwen3"}),
                                    ("DELETE", "/api/delete", {"model": "tiny-qwen3"}),
                                    ("POST", "/api/create", {"model": "x", "from": "tiny-qwen3"})):
            assert _request(method, base + route, body)[0] == 401, route
            status, text = _request(method, base + route, body, key)
            assert status == 403 and json.loads(text)["error"]["type"] == "permission_error", (route, text)
        assert _chat(base, key)[0] == 200  # the refused delete deleted nothing
        assert _request("GET", base + "/metrics", key=key)[0] == 404  # metrics: inside the container only
        for svc in ("api", "ollama"):
            subprocess.run(["podman", "healthcheck", "run", names[svc]], check=True, timeout=60)
        api_cfg = json.loads(podman("inspect", names["api"]))[0]
        assert api_cfg["Config"]["User"] == "65532:65532" and api_cfg["HostConfig"]["ReadonlyRootfs"] is True
        assert key not in " ".join(api_cfg["Config"]["Cmd"] or []) and key not in json.dumps(api_cfg["Config"]["Env"])
        ollama_cfg = json.loads(podman("inspect", names["ollama"]))[0]
        assert ollama_cfg["HostConfig"]["NetworkMode"] == f"container:{api_cfg['Id']}"
        print(f"\ncompose (Ollama behind the gateway, tiny qwen3): `podman-compose up` to first answer "
              f"{first_answer_s:.1f} s")
    finally:
        subprocess.run([*pc, "down", "-v"], capture_output=True, timeout=300, cwd=tmp_path, check=False)
