"""Requests-per-minute and tokens-per-minute limits shared by every replica, kept in Redis.

Algorithm: a sliding-window counter (the estimate Cloudflare and the ``limits`` library's
"sliding window counter" use): per consumer and kind, one counter per fixed window of W ms; the
count "in the last W ms" is ``previous * (W - elapsed) / W + current``. Two integers per consumer
and kind, no boundary burst of a fixed window (at most the limit, not 2x, across a boundary).

Atomic and skew-free: one Lua script does the read, the decision and the increment in Redis, and
takes the time from Redis (``TIME``), not from the gateway, so replicas whose clocks differ share
one timeline. Tests may pass ``now_ms`` to pin the time.

Tokens are only known after the response: ``admit`` checks that the consumer's token window still
has room (and counts the request), the tokens the engine reported are added afterwards, so one
request can take a consumer past its token limit, and the next ones wait (what Envoy AI Gateway's
token limits do too). The gateway adds them with the consumer's next ``admit`` (same round trip),
or with ``debit`` when no request came within its flush interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

WINDOW_MS = 60_000

# KEYS[1]: requests counter base, KEYS[2]: tokens counter base (same hash tag: one slot).
# ARGV: op ("admit" | "debit"), window ms, requests limit (-1 none), tokens limit (-1 none),
#       tokens to add first (both ops), now in ms ("" = Redis' own clock).
# admit returns {1, 0, "", rem_req, rem_tok} or {0, retry_ms, "requests"|"tokens", 0, 0}.
SCRIPT = """
local op, window = ARGV[1], tonumber(ARGV[2])
local rpm, tpm, cost = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local now
if ARGV[6] ~= '' then now = tonumber(ARGV[6]) else
  local t = redis.call('TIME'); now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end
local idx = math.floor(now / window)
local elapsed = now - idx * window
local ttl = 2 * window + 1000
local function counts(base)
  return tonumber(redis.call('GET', base .. ':' .. idx) or '0'),
         tonumber(redis.call('GET', base .. ':' .. (idx - 1)) or '0')
end
local function used(cur, prev) return prev * (window - elapsed) / window + cur end
-- The smallest wait (ms) after which `need` more fits under `limit`, counting nothing new.
local function wait(cur, prev, limit, need)
  if cur + need <= limit then
    if prev <= 0 then return 0 end
    local d = window * (1 - (limit - cur - need) / prev) - elapsed
    if d < 0 then d = 0 end
    return math.ceil(d)
  end
  local e2 = window * (1 - (limit - need) / cur)
  if e2 < 0 then e2 = 0 end
  return math.ceil(window - elapsed + e2)
end
local rk, tk = KEYS[1], KEYS[2]
-- Tokens of earlier answers are added first (admit carries them too: one round trip, not two).
if cost > 0 then
  redis.call('INCRBY', tk .. ':' .. idx, cost)
  redis.call('PEXPIRE', tk .. ':' .. idx, ttl)
end
if op == 'debit' then return {1, 0, '', 0, 0} end
local rem_req, rem_tok = -1, -1
if rpm >= 0 then
  local cur, prev = counts(rk)
  if used(cur, prev) + 1 > rpm then return {0, wait(cur, prev, rpm, 1), 'requests', 0, 0} end
  rem_req = math.floor(rpm - used(cur, prev) - 1)
end
if tpm >= 0 then
  local cur, prev = counts(tk)
  if used(cur, prev) + 1 > tpm then return {0, wait(cur, prev, tpm, 1), 'tokens', 0, 0} end
  rem_tok = math.floor(tpm - used(cur, prev))
end
if rpm >= 0 then
  redis.call('INCR', rk .. ':' .. idx)
  redis.call('PEXPIRE', rk .. ':' .. idx, ttl)
end
return {1, 0, '', rem_req, rem_tok}
"""


class LimitStoreError(Exception):
    """The shared store could not be reached or answered with an error."""


@dataclass(frozen=True)
class Decision:
    """Outcome of ``admit``: ``retry_after_s`` is whole seconds (>= 1) when refused; remaining -1 = no limit."""

    allowed: bool
    retry_after_s: int = 0
    limit: str = ""  # "requests" or "tokens" when refused
    remaining_requests: int = -1
    remaining_tokens: int = -1


class Limiter:
    """Shared per-consumer limits. ``scope`` separates models (e.g. "<namespace>/<SLMDeployment>")."""

    def __init__(self, client: aioredis.Redis, scope: str, window_ms: int = WINDOW_MS) -> None:
        self.client = client
        self.scope = scope
        self.window_ms = window_ms
        self._script = client.register_script(SCRIPT)

    @classmethod
    def from_url(cls, url: str, scope: str, *, password: str | None = None, timeout_s: float = 2.0,
                 connect_timeout_s: float = 2.0) -> Limiter:
        """A limiter on ``redis://host:port/db``. A store that is down refuses connections at once (a
        Service without endpoints rejects them); ``connect_timeout_s`` bounds a connection that hangs
        and ``timeout_s`` a slow answer (seconds; 0.5 s proved too short for a burst on a loaded node)."""
        client = aioredis.Redis.from_url(url, password=password, socket_timeout=timeout_s,
                                         socket_connect_timeout=connect_timeout_s, health_check_interval=30)
        return cls(client, scope)

    def _keys(self, consumer: str) -> list[str]:
        # The hash tag keeps both counters of a consumer in one Redis Cluster slot.
        base = f"slm:{self.scope}:{{{consumer}}}"
        return [f"{base}:req", f"{base}:tok"]

    async def admit(self, consumer: str, requests_per_minute: int | None, tokens_per_minute: int | None,
                    *, debit: int = 0, now_ms: int | None = None) -> Decision:
        """Add ``debit`` tokens (of earlier answers), then count one request if both windows have
        room; raises LimitStoreError when the store fails (nothing was added then)."""
        args = ["admit", self.window_ms, -1 if requests_per_minute is None else requests_per_minute,
                -1 if tokens_per_minute is None else tokens_per_minute, max(0, int(debit)),
                "" if now_ms is None else now_ms]
        try:
            ok, retry_ms, which, rem_req, rem_tok = await self._script(keys=self._keys(consumer), args=args)
        except (RedisError, OSError) as err:
            raise LimitStoreError(type(err).__name__) from err
        if ok:
            return Decision(True, remaining_requests=int(rem_req), remaining_tokens=int(rem_tok))
        which = which.decode() if isinstance(which, bytes) else str(which)
        return Decision(False, max(1, math.ceil(int(retry_ms) / 1000)), which)

    async def debit(self, consumer: str, tokens: int, *, now_ms: int | None = None) -> None:
        """Add ``tokens`` to the consumer's token window; raises LimitStoreError when the store fails."""
        if tokens <= 0:
            return
        try:
            await self._script(keys=self._keys(consumer),
                               args=["debit", self.window_ms, -1, -1, int(tokens), "" if now_ms is None else now_ms])
        except (RedisError, OSError) as err:
            raise LimitStoreError(type(err).__name__) from err

    async def close(self) -> None:
        await self.client.aclose()
