"""The shared limiter's edge cases against a real redis-server: burst, window boundary, Retry-After,
and two gateway instances whose clocks disagree sharing one store."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
from harness import FakeEngine, free_port, serving_aiohttp, serving_gateway, write_consumers

from slm_gateway.app import Gateway, GatewayConfig
from slm_gateway.limiter import WINDOW_MS, Limiter

W = WINDOW_MS
T0 = 1_000_000 * W  # the start of a window, in ms


def _run(coro):
    return asyncio.run(coro)


async def _limiters(url: str, n: int = 2) -> list[Limiter]:
    return [Limiter.from_url(url, "ns/model") for _ in range(n)]


def test_burst_from_two_replicas_admits_exactly_the_limit(flush_redis):
    async def go():
        a, b = await _limiters(flush_redis)
        results = await asyncio.gather(*(lim.admit("alice", 10, None) for lim in [a, b] * 20))
        other = await a.admit("bob", 10, None)
        await a.close()
        await b.close()
        return results, other

    results, other = _run(go())
    assert sum(d.allowed for d in results) == 10
    assert all(d.limit == "requests" and d.retry_after_s >= 1 for d in results if not d.allowed)
    assert other.allowed and other.remaining_requests == 9  # counters are per consumer


def test_no_double_burst_across_a_window_boundary(flush_redis):
    async def go():
        (lim,) = await _limiters(flush_redis, 1)
        late = [await lim.admit("alice", 10, None, now_ms=T0 + W - 100) for _ in range(11)]
        # 200 ms later, in the next fixed window: a fixed-window limiter would admit 10 more here.
        early = await lim.admit("alice", 10, None, now_ms=T0 + W + 100)
        # prev=10 weighs 10*(1 - t/W): one more fits once that is <= 9, at t = 6 s.
        before = await lim.admit("alice", 10, None, now_ms=T0 + W + 5_990)
        at = await lim.admit("alice", 10, None, now_ms=T0 + W + 6_000)
        after = await lim.admit("alice", 10, None, now_ms=T0 + W + 6_001)
        await lim.close()
        return late, early, before, at, after

    late, early, before, at, after = _run(go())
    assert [d.allowed for d in late] == [True] * 10 + [False]
    assert not early.allowed and early.retry_after_s == 6  # 5.9 s, rounded up
    assert not before.allowed
    assert at.allowed
    assert not after.allowed


def test_retry_after_is_honest(flush_redis):
    """Waiting Retry-After seconds is always enough, from any point of a window."""
    async def go():
        (lim,) = await _limiters(flush_redis, 1)
        out = []
        for i, offset in enumerate((0, 1, 15_000, 30_000, 59_999)):
            consumer = f"c{i}"
            t = T0 + offset
            while (await lim.admit(consumer, 5, None, now_ms=t)).allowed:
                pass
            d = await lim.admit(consumer, 5, None, now_ms=t)
            out.append((d.retry_after_s,
                        (await lim.admit(consumer, 5, None, now_ms=t + d.retry_after_s * 1000)).allowed))
        await lim.close()
        return out

    for retry, allowed_then in _run(go()):
        assert 1 <= retry <= 2 * W // 1000 and allowed_then


def test_tokens_refuse_only_once_the_window_is_spent(flush_redis):
    async def go():
        (lim,) = await _limiters(flush_redis, 1)
        first = await lim.admit("alice", None, 100, now_ms=T0)
        await lim.debit("alice", 99, now_ms=T0)
        second = await lim.admit("alice", None, 100, now_ms=T0 + 1)
        await lim.debit("alice", 50, now_ms=T0 + 1)  # one request may overshoot: usage is known after
        third = await lim.admit("alice", None, 100, now_ms=T0 + 2)
        await lim.close()
        return first, second, third

    first, second, third = _run(go())
    assert first.allowed and first.remaining_tokens == 100
    assert second.allowed and second.remaining_tokens == 1
    assert not third.allowed and third.limit == "tokens"
    # 149 used in this window: 100 fit again once 149 * (1 - t/W) <= 99, t >= 20.2 s, plus the rest of this window.
    assert third.retry_after_s == 81


SKEWED_SITE = textwrap.dedent("""
    import os, time
    _skew = float(os.environ["SLM_TEST_CLOCK_SKEW_S"])
    _t, _tn = time.time, time.time_ns
    time.time = lambda: _t() + _skew
    time.time_ns = lambda: _tn() + int(_skew * 1e9)
    with open(os.environ["SLM_TEST_CLOCK_PROOF"], "w") as f:
        f.write(str(time.time() - _t()))
""")


def test_two_gateways_with_skewed_clocks_share_one_limit(tmp_path, flush_redis):
    """Replica B runs in its own process with its wall clock 47 s ahead; the limit still holds
    exactly, because the window is read from Redis' clock, not the gateways'."""
    keys = tmp_path / "consumers"
    alice = "sk-alice-0123456789abcdef"
    write_consumers(keys, {"alice": f"key: {alice}\nrequestsPerMinute: 6\n"})
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SKEWED_SITE)
    proof = tmp_path / "skew"
    engine = FakeEngine()
    port, mport = free_port(), free_port()
    with serving_aiohttp(engine.app()) as upstream:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               "SLM_TEST_CLOCK_SKEW_S": "47", "SLM_TEST_CLOCK_PROOF": str(proof)}
        replica_b = subprocess.Popen(
            [sys.executable, "-m", "slm_gateway", "--engine", "vllm", "--upstream", upstream, "--keys-dir", str(keys),
             "--redis-url", flush_redis, "--scope", "ns/m", "--listen", f"127.0.0.1:{port}",
             "--metrics-listen", f"127.0.0.1:{mport}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            b = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{b}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if replica_b.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"replica B did not start: {replica_b.stdout.read().decode()[-2000:]}")
                time.sleep(0.1)
            assert float(proof.read_text()) == pytest.approx(47, abs=1)
            gw_a = Gateway(GatewayConfig(engine="vllm", upstream=upstream, keys_dir=keys, redis_url=flush_redis,
                                         scope="ns/m"))
            with serving_gateway(gw_a) as (a, _):
                h = {"Authorization": f"Bearer {alice}"}
                answers = [httpx.get(f"{base}/v1/models", headers=h) for base in [a, b] * 5]
            codes = [r.status_code for r in answers]
            assert codes.count(200) == 6 and codes.count(429) == 4, codes
            retry = {int(r.headers["retry-after"]) for r in answers if r.status_code == 429}
            assert max(retry) - min(retry) <= 1, retry  # both replicas compute the same wait
        finally:
            replica_b.terminate()
            replica_b.wait(10)
