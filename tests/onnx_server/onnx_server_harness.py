"""Starting the real ONNX server as a subprocess on 127.0.0.1 for tests (helpers for conftest and tests)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

MODEL_NAME = "tiny-qwen3"
API_KEY = "test-key-0123456789abcdef"


def long_generation(model_dir: Path) -> int:
    """A max_tokens that keeps a request generating as long as the model's context allows."""
    from slm_onnx_server.model import find_model_folder

    config = json.loads((find_model_folder(model_dir) / "genai_config.json").read_text())
    return int(config["model"]["context_length"]) - 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    base: str  # http://127.0.0.1:PORT
    ops: str  # the metrics/probe port
    log_path: Path

    @property
    def v1(self) -> str:
        return self.base + "/v1"

    def client(self, key: str = API_KEY, **kw):
        import openai

        return openai.OpenAI(base_url=self.v1, api_key=key, max_retries=0, timeout=120, **kw)

    def async_client(self, key: str = API_KEY, **kw):
        import openai

        return openai.AsyncOpenAI(base_url=self.v1, api_key=key, max_retries=0, timeout=120, **kw)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def start_server(model_dir: Path, workdir: Path, *extra: str) -> Server:
    import httpx

    workdir.mkdir(parents=True, exist_ok=True)
    key_file = workdir / "api-key"
    key_file.write_text(API_KEY + "\n")
    key_file.chmod(0o600)
    port, ops_port = free_port(), free_port()
    log_path = workdir / "server.log"
    cmd = [sys.executable, "-m", "slm_onnx_server", "--model-dir", str(model_dir),
           "--served-model-name", MODEL_NAME, "--host", "127.0.0.1", "--port", str(port),
           "--metrics-port", str(ops_port), "--api-key-file", str(key_file), *extra]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    server = Server(proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops_port}", log_path)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.ops + "/ready", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    pytest.fail(f"server not ready in 90 s:\n{server.log()}")
