"""Every route of the pinned vLLM's API server needs a key at the gateway.

The route table (runtime-images/gateway/slm_gateway/data/vllm-routes.json) comes from vLLM itself:
tests/gateway/vllm_routes.py builds vLLM's app in the vLLM venv and lists its routes; the last test
here regenerates it there and fails when the checked-in copy is stale.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from harness import FakeEngine, serving_aiohttp, serving_gateway

from slm_gateway.app import Gateway, GatewayConfig
from slm_gateway.routes import PROBES, VLLM

HERE = Path(__file__).parent
TABLE = HERE.parent.parent / "runtime-images/gateway/slm_gateway/data/vllm-routes.json"
VLLM_VERSION = "0.33.0"  # tests/engines/vllm_env.sh's default, the launcher's pinned vLLM
VENV = Path(os.environ.get("SLM_CACHE", Path.home() / ".cache/slm-operator")) / f"venv-vllm-{VLLM_VERSION}"


def _routes() -> list[tuple[str, str]]:
    return [(m, re.sub(r"\{[^}]+\}", "x1", p)) for m, p in json.loads(TABLE.read_text())["routes"]]


def test_table_is_of_the_pinned_vllm_and_not_empty():
    data = json.loads(TABLE.read_text())
    assert data["vllm"] == VLLM_VERSION
    assert ("POST", "/v1/chat/completions") in _routes() and ("POST", "/invocations") in _routes()
    assert len(data["routes"]) > 50


def test_every_vllm_route_is_classified():
    """A vLLM bump that adds a route fails here until the route is served, refused or listed as not served."""
    unclassified = [(m, p) for m, p in _routes()
                    if VLLM.classify(m, p)[0] == "unknown" and p not in VLLM.not_served and p not in PROBES]
    assert unclassified == []


def test_every_vllm_route_answers_401_without_a_key(tmp_path):
    key_file = tmp_path / "api-key"
    key_file.write_text("sk-the-only-key-0123456789\n")
    engine = FakeEngine()
    with serving_aiohttp(engine.app()) as upstream:
        gw = Gateway(GatewayConfig(engine="vllm", upstream=upstream, api_key_file=key_file))
        with serving_gateway(gw) as (url, _), httpx.Client(base_url=url) as client:
            for method, path in _routes():
                for headers in ({}, {"Authorization": "Bearer sk-wrong-0123456789abc"}):
                    r = client.request(method, path, headers=headers, json={})
                    if path in PROBES and method in ("GET", "HEAD"):
                        assert r.status_code == 200, path  # the gateway's own probe, never forwarded
                        continue
                    assert r.status_code == 401, (method, path, r.status_code)
                    assert r.json()["error"]["type"] == "authentication_error"
            # With the key, the refused routes stay refused.
            for method, path in _routes():
                if VLLM.classify(method, path)[0] == "refused":
                    r = client.request(method, path, headers={"Authorization": "Bearer sk-the-only-key-0123456789"})
                    assert r.status_code == 403, path
    assert engine.seen == []  # nothing reached the engine without a key, nor any admin route


def test_checked_in_table_matches_the_pinned_vllm():
    python = VENV / "bin" / "python"
    if not python.exists():
        pytest.skip(f"no vLLM {VLLM_VERSION} venv at {VENV} (tests/engines/vllm_env.sh creates it); the checked-in "
                    f"route table was not re-derived")
    out = subprocess.run([str(python), str(HERE / "vllm_routes.py")], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr[-3000:]
    fresh = json.loads(out.stdout)
    assert fresh["routes"] == json.loads(TABLE.read_text())["routes"], (
        "vLLM's routes changed: regenerate with "
        f"{python} tests/gateway/vllm_routes.py > runtime-images/gateway/slm_gateway/data/vllm-routes.json")


@pytest.mark.parametrize("raw", ["/v1/models/../../sleep", "/v1/models/%2e%2e/%2e%2e/sleep", "/%73leep",
                                 "/v1/models/..%2f..%2fsleep", "/sleep/", "//sleep",
                                 "/v1/chat/completions/../../collective_rpc"])
def test_encoded_and_dotted_paths_do_not_reach_admin_routes(tmp_path, raw):
    """Routes are matched on the decoded path the engine would see; nothing that decodes or
    normalizes to a refused route is forwarded."""
    import socket

    key_file = tmp_path / "api-key"
    key_file.write_text("sk-the-only-key-0123456789\n")
    engine = FakeEngine()
    with serving_aiohttp(engine.app()) as upstream:
        gw = Gateway(GatewayConfig(engine="vllm", upstream=upstream, api_key_file=key_file))
        with serving_gateway(gw) as (url, _):
            port = int(url.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port)) as s:  # raw: no client-side normalization
                s.sendall(f"POST {raw} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-the-only-key-0123456789\r\n"
                          f"Content-Length: 2\r\nConnection: close\r\n\r\n{{}}".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
    status = int(data.split(b" ", 2)[1])
    assert status in (403, 404), data[:200]
    assert engine.seen == []
