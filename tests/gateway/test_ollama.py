"""The gateway with the Ollama profile: the former Ollama proxy's tests, ported (it replaces that proxy),
and the management routes refused in front of the real Ollama binary."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest
from fake_ollama import FakeOllama, serving
from harness import free_port, serving_gateway

from slm_gateway.app import Gateway, GatewayConfig
from slm_gateway.metrics import GatewayMetrics

KEY = "sk-test-0123456789"
MANAGEMENT = [("POST", "/api/pull"), ("POST", "/api/push"), ("DELETE", "/api/delete"), ("POST", "/api/create"),
              ("POST", "/api/copy"), ("POST", "/api/blobs/sha256:abc"), ("HEAD", "/api/blobs/sha256:abc")]


@pytest.fixture()
def stack(tmp_path):
    key_file = tmp_path / "api-key"
    key_file.write_text(KEY + "\n")
    fake = FakeOllama(models=["qwen3-tiny"])
    metrics = GatewayMetrics()
    with serving(fake.app()) as upstream:
        gw = Gateway(GatewayConfig(engine="ollama", upstream=upstream, api_key_file=key_file, model="qwen3-tiny",
                                   recheck_s=0), metrics)
        with serving_gateway(gw) as (url, murl):
            yield fake, url, murl, metrics, key_file


def _client(base: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=20)


def _metric(metrics: GatewayMetrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_chat_completion_passes_through(stack):
    fake, url, _, metrics, _ = stack
    out = _client(url).chat.completions.create(model="qwen3-tiny", messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content == "Hello from a tiny model."
    assert out.usage.total_tokens == 11
    assert "authorization" not in fake.seen[-1][2]
    assert _metric(metrics, "slm_gateway_requests_total", consumer="default", route="/v1/chat/completions",
                   code="200") == 1


def test_streaming_arrives_incrementally(stack):
    fake, url, _, metrics, _ = stack
    stream = _client(url).chat.completions.create(
        model="qwen3-tiny", messages=[{"role": "user", "content": "hi"}], stream=True)
    arrivals, text = [], ""
    for chunk in stream:
        arrivals.append(time.monotonic())
        text += chunk.choices[0].delta.content or ""
    assert text == "Hello from a tiny model."
    assert arrivals[0] < fake.chunk_times[-1]
    assert arrivals[-1] - arrivals[0] >= 0.5
    deadline = time.monotonic() + 5
    while _metric(metrics, "slm_gateway_in_flight_requests") != 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _metric(metrics, "slm_gateway_in_flight_requests") == 0
    # This stand-in sends no usage: each content chunk counted as one token.
    assert _metric(metrics, "slm_gateway_tokens_total", consumer="default", kind="completion") == 6


def test_wrong_or_missing_key_is_rejected(stack):
    _, url, _, metrics, _ = stack
    with pytest.raises(openai.AuthenticationError) as err:
        _client(url, key="sk-wrong").models.list()
    assert err.value.status_code == 401
    r = httpx.get(f"{url}/v1/models")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert r.headers["www-authenticate"] == "Bearer"
    r = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Basic {KEY}"})
    assert r.status_code == 401
    assert _metric(metrics, "slm_gateway_auth_failures_total", reason="invalid") == 1
    assert _metric(metrics, "slm_gateway_auth_failures_total", reason="missing") == 2


def test_models_listed_with_key(stack):
    _, url, _, _, _ = stack
    assert [m.id for m in _client(url).models.list()] == ["qwen3-tiny:latest"]


@pytest.mark.parametrize(("method", "path"), MANAGEMENT)
def test_model_management_is_forbidden_even_with_key(stack, method, path):
    fake, url, _, _, _ = stack
    r = httpx.request(method, f"{url}{path}", headers={"Authorization": f"Bearer {KEY}"}, json={"model": "x"})
    assert r.status_code == 403
    if method != "HEAD":
        assert r.json()["error"]["code"] == "model_management_disabled"
    assert "pulled" not in fake.models and fake.creates == []
    assert httpx.request(method, f"{url}{path}", json={"model": "x"}).status_code == 401


def test_unknown_routes_are_404(stack):
    _, url, _, _, _ = stack
    r = httpx.post(f"{url}/v1/fine_tuning/jobs", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"


def test_health_ready_and_metrics(stack):
    fake, url, murl, _, _ = stack
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.get(f"{url}/ready").json() == {"status": "ready"}
    fake.models.clear()
    r = httpx.get(f"{url}/ready")
    assert r.status_code == 503 and "not loaded" in r.json()["status"]
    # Metrics name consumers: they are on the metrics port, and the Service port wants a key.
    assert httpx.get(f"{url}/metrics").status_code == 401
    text = httpx.get(f"{murl}/metrics").text
    for name in ("slm_gateway_requests_total", "slm_gateway_upstream_latency_seconds",
                 "slm_gateway_in_flight_requests", "slm_gateway_request_duration_seconds",
                 "slm_gateway_upstream_errors_total", "slm_gateway_auth_failures_total"):
        assert name in text


def test_ready_and_requests_when_upstream_down(tmp_path):
    key_file = tmp_path / "api-key"
    key_file.write_text(KEY)
    metrics = GatewayMetrics()
    gw = Gateway(GatewayConfig(engine="ollama", upstream=f"http://127.0.0.1:{free_port()}", api_key_file=key_file,
                               model="m"), metrics)
    with serving_gateway(gw) as (url, _):
        assert httpx.get(f"{url}/ready").status_code == 503
        r = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unavailable"
        assert _metric(metrics, "slm_gateway_upstream_errors_total", route="/v1/models") == 1
        assert _metric(metrics, "slm_gateway_in_flight_requests") == 0


def test_key_rotation_is_picked_up(stack):
    _, url, _, _, key_file = stack
    key_file.write_text("sk-rotated")
    time.sleep(0.01)
    key_file.write_text("sk-rotated")
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 401
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer sk-rotated"}).status_code == 200


def test_client_disconnect_mid_stream_cancels_upstream(stack):
    fake, url, _, metrics, _ = stack
    with httpx.stream("POST", f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "qwen3-tiny", "messages": [], "stream": True}) as r:
        first = next(r.iter_raw())
        assert first.startswith(b"data: ")
    assert fake.cancelled.wait(5), "the upstream generation was not cancelled"
    deadline = time.monotonic() + 5
    while _metric(metrics, "slm_gateway_in_flight_requests") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _metric(metrics, "slm_gateway_in_flight_requests") == 0


def _ollama_binary() -> Path | None:
    cache = Path(os.environ.get("SLM_CACHE", Path.home() / ".cache/slm-operator"))
    for candidate in (cache / "bin" / "ollama-v0.13.5", shutil.which("ollama")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def test_management_routes_403_in_front_of_real_ollama(tmp_path):
    binary = _ollama_binary()
    if binary is None:
        pytest.skip("no ollama binary (hack/images.sh ollama-bin builds it into ~/.cache/slm-operator/bin)")
    port = free_port()
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(tmp_path / "models"),
           "HOME": str(tmp_path)}
    proc = subprocess.Popen([str(binary), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    upstream = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{upstream}/api/version").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "ollama serve did not start"
            time.sleep(0.1)
        key_file = tmp_path / "api-key"
        key_file.write_text(KEY)
        gw = Gateway(GatewayConfig(engine="ollama", upstream=upstream, api_key_file=key_file))
        with serving_gateway(gw) as (url, _):
            h = {"Authorization": f"Bearer {KEY}"}
            # Through the gateway with the key: the real Ollama answers its read routes...
            assert httpx.get(f"{url}/api/version", headers=h).json()["version"] == "0.13.5"
            assert httpx.get(f"{url}/api/version").status_code == 401
            # ...and never sees a management call.
            for method, path in MANAGEMENT:
                body = {"model": "evil", "from": "x", "source": "x", "destination": "evil2", "name": "evil"}
                r = httpx.request(method, f"{url}{path}", headers=h, json=body)
                assert r.status_code == 403, (method, path)
            # Ollama itself would have acted on them: /api/copy of a missing model answers 404 there, not 403.
            assert httpx.post(f"{upstream}/api/copy", json={"source": "x", "destination": "y"}).status_code == 404
            assert httpx.get(f"{upstream}/api/tags").json()["models"] == []
    finally:
        proc.terminate()
        proc.wait(10)
