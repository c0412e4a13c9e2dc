"""The authenticating proxy, in front of a fake Ollama, called with the official openai client."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from fake_ollama import FakeOllama, free_port, serving

from slm_ollama.proxy import ProxyConfig, ProxyMetrics, build_app

KEY = "sk-test-0123456789"


@pytest.fixture()
def stack(tmp_path):
    key_file = tmp_path / "api-key"
    key_file.write_text(KEY + "\n")
    fake = FakeOllama(models=["qwen3-tiny"])
    metrics = ProxyMetrics()
    with serving(fake.app()) as upstream:
        cfg = ProxyConfig(upstream=upstream, api_key_file=key_file, model="qwen3-tiny")
        with serving(build_app(cfg, metrics)) as proxy:
            yield fake, proxy, metrics, key_file


def _client(base: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=20)


def _metric(metrics: ProxyMetrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_chat_completion_passes_through(stack):
    fake, proxy, metrics, _ = stack
    out = _client(proxy).chat.completions.create(model="qwen3-tiny", messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content == "Hello from a tiny model."
    assert out.usage.total_tokens == 11
    # The client's key stops at the proxy: Ollama never sees it.
    assert "authorization" not in fake.seen[-1][2]
    assert _metric(metrics, "slm_proxy_requests_total", route="/v1/chat/completions", method="POST",
                   status="200") == 1


def test_streaming_arrives_incrementally(stack):
    fake, proxy, metrics, _ = stack
    stream = _client(proxy).chat.completions.create(
        model="qwen3-tiny", messages=[{"role": "user", "content": "hi"}], stream=True)
    arrivals, text = [], ""
    for chunk in stream:
        arrivals.append(time.monotonic())
        text += chunk.choices[0].delta.content or ""
    assert text == "Hello from a tiny model."
    # The first event reached the client before the upstream had produced the last one:
    # nothing buffered the stream.
    assert arrivals[0] < fake.chunk_times[-1]
    assert arrivals[-1] - arrivals[0] >= 0.5
    # The proxy's bookkeeping runs as a background task after the last byte is sent.
    deadline = time.monotonic() + 5
    while _metric(metrics, "slm_proxy_in_flight_requests") != 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _metric(metrics, "slm_proxy_in_flight_requests") == 0


def test_wrong_or_missing_key_is_rejected(stack):
    _, proxy, metrics, _ = stack
    with pytest.raises(openai.AuthenticationError) as err:
        _client(proxy, key="sk-wrong").models.list()
    assert err.value.status_code == 401
    r = httpx.get(f"{proxy}/v1/models")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert r.headers["www-authenticate"] == "Bearer"
    r = httpx.get(f"{proxy}/v1/models", headers={"Authorization": f"Basic {KEY}"})
    assert r.status_code == 401
    assert _metric(metrics, "slm_proxy_auth_failures_total") == 3


def test_models_listed_with_key(stack):
    _, proxy, _, _ = stack
    assert [m.id for m in _client(proxy).models.list()] == ["qwen3-tiny:latest"]


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/pull"), ("POST", "/api/push"), ("DELETE", "/api/delete"), ("POST", "/api/create"),
    ("POST", "/api/copy"), ("POST", "/api/blobs/sha256:abc"), ("HEAD", "/api/blobs/sha256:abc"),
])
def test_model_management_is_forbidden_even_with_key(stack, method, path):
    fake, proxy, _, _ = stack
    r = httpx.request(method, f"{proxy}{path}", headers={"Authorization": f"Bearer {KEY}"}, json={"model": "x"})
    assert r.status_code == 403
    if method != "HEAD":
        assert r.json()["error"]["code"] == "model_management_disabled"
    assert "pulled" not in fake.models and fake.creates == []


def test_unknown_routes_are_404(stack):
    _, proxy, _, _ = stack
    r = httpx.post(f"{proxy}/v1/fine_tuning/jobs", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"


def test_health_ready_and_metrics(stack, tmp_path):
    fake, proxy, _, _ = stack
    assert httpx.get(f"{proxy}/health").status_code == 200
    assert httpx.get(f"{proxy}/ready").json() == {"status": "ready"}
    fake.models.clear()
    r = httpx.get(f"{proxy}/ready")
    assert r.status_code == 503 and "not loaded" in r.json()["status"]
    text = httpx.get(f"{proxy}/metrics").text
    for name in ("slm_proxy_requests_total", "slm_proxy_upstream_latency_seconds", "slm_proxy_in_flight_requests",
                 "slm_proxy_request_duration_seconds", "slm_proxy_upstream_errors_total",
                 "slm_proxy_auth_failures_total"):
        assert name in text


def test_ready_and_requests_when_upstream_down(tmp_path):
    key_file = tmp_path / "api-key"
    key_file.write_text(KEY)
    metrics = ProxyMetrics()
    cfg = ProxyConfig(upstream=f"http://127.0.0.1:{free_port()}", api_key_file=key_file, model="m")
    with serving(build_app(cfg, metrics)) as proxy:
        assert httpx.get(f"{proxy}/ready").status_code == 503
        r = httpx.get(f"{proxy}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unavailable"
        assert _metric(metrics, "slm_proxy_upstream_errors_total", route="/v1/models") == 1
        assert _metric(metrics, "slm_proxy_in_flight_requests") == 0


def test_key_rotation_is_picked_up(stack):
    _, proxy, _, key_file = stack
    key_file.write_text("sk-rotated")
    # mtime resolution may be coarse: make sure the stamp differs.
    time.sleep(0.01)
    key_file.write_text("sk-rotated")
    assert httpx.get(f"{proxy}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 401
    assert httpx.get(f"{proxy}/v1/models", headers={"Authorization": "Bearer sk-rotated"}).status_code == 200


def test_client_disconnect_mid_stream_cancels_upstream(stack):
    fake, proxy, metrics, _ = stack
    with httpx.stream("POST", f"{proxy}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "qwen3-tiny", "messages": [], "stream": True}) as r:
        first = next(r.iter_raw())
        assert first.startswith(b"data: ")
    assert fake.cancelled.wait(5), "the upstream generation was not cancelled"
    deadline = time.monotonic() + 5
    while _metric(metrics, "slm_proxy_in_flight_requests") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _metric(metrics, "slm_proxy_in_flight_requests") == 0
