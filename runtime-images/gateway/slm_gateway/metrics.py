"""The gateway's Prometheus metrics. Label values are bounded: ``consumer`` is a name from the Secret,
"unknown" for a wrong or missing key, or "none" for probes; ``route`` is a route template of the
engine's profile, "management" or "other"; ``entry`` is a Secret entry's name."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

UNKNOWN = "unknown"
AUTH_FAILURE_REASONS = ("missing", "invalid")
LIMIT_STORE_OUTCOMES = ("refused", "allowed", "debit_delayed")
LIMITS = ("requests", "tokens")


@dataclass
class GatewayMetrics:
    """All series live in ``registry`` (no process/GC collectors: the engine's own metrics are
    appended on the same scrape, and two processes' ``process_*`` series would clash)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("slm_gateway_requests_total", "Requests by consumer, route and status code",
                                ["consumer", "route", "code"], registry=r)
        self.tokens = Counter("slm_gateway_tokens_total", "Tokens by consumer and kind (prompt, completion), "
                              "from the engine's usage or counted stream chunks", ["consumer", "kind"], registry=r)
        self.rate_limited = Counter("slm_gateway_rate_limited_total", "Requests refused with 429, by consumer and "
                                    "limit (requests, tokens)", ["consumer", "limit"], registry=r)
        self.auth_failures = Counter("slm_gateway_auth_failures_total", "Requests refused with 401, by reason "
                                     "(missing, invalid)", ["reason"], registry=r)
        self.limit_store_errors = Counter("slm_gateway_limit_store_errors_total", "Requests whose limit check "
                                          "failed on the shared store, by outcome (refused, allowed)",
                                          ["outcome"], registry=r)
        self.upstream_latency = Histogram(
            "slm_gateway_upstream_latency_seconds", "Time from forwarding a request to the engine's response headers",
            ["route"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r)
        self.duration = Histogram("slm_gateway_request_duration_seconds", "Time until the last byte of the "
                                  "response (streams included)", ["route"],
                                  buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=r)
        self.in_flight = Gauge("slm_gateway_in_flight_requests", "Requests being forwarded now", registry=r)
        self.upstream_errors = Counter("slm_gateway_upstream_errors_total", "Requests that failed to reach the "
                                       "engine", ["route"], registry=r)
        self.consumers = Gauge("slm_gateway_consumers", "Secret entries by state (accepted, rejected)", ["state"],
                               registry=r)
        self.rejected = Gauge("slm_gateway_secret_entry_rejected", "1 for each Secret entry the gateway rejected, "
                              "with the reason code", ["entry", "reason"], registry=r)
        self.reloads = Counter("slm_gateway_key_reloads_total", "Reloads of the consumer Secret that changed the "
                               "accepted or rejected entries", registry=r)
        # Every bounded label value starts at 0 (Prometheus' instrumentation advice: a series that
        # appears only on its first event leaves rate(), dashboards and alerts with no data before it).
        for reason in AUTH_FAILURE_REASONS:
            self.auth_failures.labels(reason)
        for outcome in LIMIT_STORE_OUTCOMES:
            self.limit_store_errors.labels(outcome)

    def track_consumers(self, old: list[str], new: list[str]) -> None:
        """Start each consumer's 429 series at 0 (limits: requests, tokens) and drop removed ones."""
        for name in set(old) - set(new):
            for limit in LIMITS:
                with contextlib.suppress(KeyError):  # never had a series
                    self.rate_limited.remove(name, limit)
        for name in new:
            for limit in LIMITS:
                self.rate_limited.labels(name, limit)
