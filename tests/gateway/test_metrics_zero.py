"""The gateway's bounded series exist at 0 before their first event, so rate(), the dashboard's
Consumers row and the alerts have data from the first scrape (found by e2e/test_autoscaling_alerts.py:
the 429 and 401 panels were empty on a healthy deployment)."""

from __future__ import annotations

from prometheus_client import generate_latest

from slm_gateway.metrics import AUTH_FAILURE_REASONS, LIMIT_STORE_OUTCOMES, GatewayMetrics


def _text(m: GatewayMetrics) -> str:
    return generate_latest(m.registry).decode()


def test_auth_and_store_series_start_at_zero() -> None:
    text = _text(GatewayMetrics())
    for reason in AUTH_FAILURE_REASONS:
        assert f'slm_gateway_auth_failures_total{{reason="{reason}"}} 0.0' in text
    for outcome in LIMIT_STORE_OUTCOMES:
        assert f'slm_gateway_limit_store_errors_total{{outcome="{outcome}"}} 0.0' in text


def test_each_consumer_has_its_429_series_and_removed_consumers_lose_them() -> None:
    m = GatewayMetrics()
    m.track_consumers([], ["alice", "bob"])
    m.rate_limited.labels("alice", "requests").inc()
    text = _text(m)
    assert 'slm_gateway_rate_limited_total{consumer="alice",limit="requests"} 1.0' in text
    assert 'slm_gateway_rate_limited_total{consumer="bob",limit="tokens"} 0.0' in text
    m.track_consumers(["alice", "bob"], ["alice"])
    text = _text(m)
    assert 'consumer="bob"' not in text
    assert 'slm_gateway_rate_limited_total{consumer="alice",limit="requests"} 1.0' in text  # kept, not reset
