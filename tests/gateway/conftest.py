"""Fixtures: a real redis-server per module, a FakeEngine, and a gateway in front of it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "engines"))  # fake_ollama

from harness import redis_binary, redis_server


@pytest.fixture(scope="module")
def redis_url():
    if not redis_binary():
        pytest.skip("redis-server is not installed (hack/host-deps.sh installs Debian's redis-server)")
    with redis_server() as (url, _proc):
        yield url


@pytest.fixture()
def flush_redis(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushall()
    client.close()
    return redis_url
