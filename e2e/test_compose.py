"""`slmctl compose` run for real with podman-compose and the images `make images` builds.

The tiny Qwen3 model is published on the local hub (e2e/hubserver.py) at this host's own
address (containers on the Compose network reach it through the bridge); the one-shot quantize
service writes the ONNX int4 artifact, the ONNX server starts after it and answers the official
openai client with the key from the Compose secret, and refuses a request without it. The
healthcheck is run once by hand (podman runs healthchecks from systemd timers, absent here).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = "slm-e2e/tiny-qwen3"
PODMAN_COMPOSE = str(Path(sys.executable).parent / "podman-compose")
TIMEOUT_S = 600  # a cold quantization of the tiny model in a container on 2 busy cores


def host_address() -> str:
    """This host's address on its default route: containers reach it through the bridge's NAT."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the source address
            addr = s.getsockname()[0]
        except OSError:
            addr = "127.0.0.1"
    if addr.startswith("127."):
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout.split()
        addr = next((a for a in out if "." in a and not a.startswith("127.")), addr)
    return addr


def compose_images(names: list[str]) -> None:
    """Skip without podman or podman-compose; else build the images (cached by input hash)."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (bash hack/host-deps.sh installs it)")
    if not os.access(PODMAN_COMPOSE, os.X_OK):
        pytest.skip("podman-compose is not installed (the dev extra pins it: make venv)")
    from e2e.realnode import build_images

    build_images(names)  # seconds when unchanged


@contextlib.contextmanager
def tiny_hub() -> Iterator[tuple[str, str]]:
    """The tiny Qwen3 on the local hub at this host's address: (hub URL, revision)."""
    from e2e.hubserver import HubServer
    from slm_runtime.tiny_models import tiny_model

    addr = host_address()
    if addr.startswith("127."):
        pytest.skip("no non-loopback address on this host: containers could not reach the local hub")
    steps = int(os.environ.get("SLM_TINY_TRAIN_STEPS", "50"))
    with HubServer(host=addr, port=0) as server:
        yield server.url, server.add_repo(REPO, tiny_model("qwen3", train_steps=steps))


def slmctl_compose(tmp_path: Path, hub: tuple[str, str], quantization: dict[str, str],
                   engine: str) -> tuple[str, list[str], int]:
    """Write the SLMDeployment for the tiny model, run `slmctl compose` on it, and return (the
    generated key, the podman-compose command for a fresh project, the published API port)."""
    manifest = {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment", "metadata": {"name": "tiny"},
                "spec": {"model": {"source": f"hf://{REPO}", "revision": hub[1], "hub": {"endpoint": hub[0]},
                                   "contextLength": 512},
                         "quantization": quantization, "engine": {"name": engine},
                         "resources": {"cpu": "1", "memory": "2Gi"}}}
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(manifest))
    port = free_port()
    out = subprocess.run([sys.executable, "-c", "from slm_operator.cli import app; app()", "compose", "-f",
                          str(tmp_path / "model.yaml"), "-o", str(tmp_path / "compose.yaml"), "--port", str(port)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    key = (tmp_path / "secrets" / "api-key").read_text().strip()
    assert key not in (tmp_path / "compose.yaml").read_text()
    project = f"slm-compose-{uuid.uuid4().hex[:6]}"
    return key, [PODMAN_COMPOSE, "-p", project, "-f", str(tmp_path / "compose.yaml")], port


@pytest.fixture(scope="module")
def images() -> None:
    compose_images(["quantizer", "onnxruntime-server"])


@pytest.fixture(scope="module")
def hub() -> Iterator[tuple[str, str]]:
    with tiny_hub() as h:
        yield h


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def podman(*args: str, check: bool = True) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {done.stderr[-2000:]}")
    return done.stdout


def test_compose_runs_quantize_then_serves_with_the_key(images: None, hub: tuple[str, str], tmp_path: Path) -> None:
    from openai import AuthenticationError, OpenAI

    key, pc, port = slmctl_compose(tmp_path, hub, {"format": "onnx", "type": "int4"}, "onnxruntime")
    project = pc[2]
    t0 = time.monotonic()
    try:
        up = subprocess.run([*pc, "up", "-d"], capture_output=True, text=True, timeout=TIMEOUT_S,
                            cwd=tmp_path, check=False)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        names = {s: f"{project}_{s}_1" for s in ("quantize", "api")}
        # podman-compose 1.6 starts a one-shot service again after waiting for it to complete (the
        # rerun finds the artifact complete and exits 0 at once): wait for that run too.
        exit_code = podman("wait", names["quantize"]).strip()
        logs = podman("logs", names["quantize"])
        assert exit_code == "0", (exit_code, logs[-3000:])
        assert '"result": "Succeeded"' in logs, logs[-3000:]
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=30)
        deadline = time.monotonic() + 300
        while True:
            try:
                reply = client.chat.completions.create(
                    model="tiny-qwen3", messages=[{"role": "user", "content": "The baker"}], max_tokens=8,
                    temperature=0)
                break
            except AuthenticationError:
                raise
            except Exception:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no answer: {podman('logs', names['api'], check=False)[-3000:]}") from None
                time.sleep(1)
        first_answer_s = time.monotonic() - t0
        assert reply.choices[0].message.content
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0).models.list()
        subprocess.run(["podman", "healthcheck", "run", names["api"]], check=True, timeout=60)
        cfg = json.loads(podman("inspect", names["api"]))[0]
        assert cfg["Config"]["User"] == "65532:65532" and cfg["HostConfig"]["ReadonlyRootfs"] is True
        assert "no-new-privileges" in cfg["HostConfig"]["SecurityOpt"]
        assert key not in " ".join(cfg["Config"]["Cmd"] or []) and key not in json.dumps(cfg["Config"]["Env"])
        print(f"\ncompose (ONNX, tiny qwen3): `podman-compose up` to first answer {first_answer_s:.1f} s")
    finally:
        subprocess.run([*pc, "down", "-v"], capture_output=True, timeout=300, cwd=tmp_path, check=False)
