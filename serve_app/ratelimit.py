"""Token-bucket rate limits, in process memory or shared through Redis.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second. ``acquire``
takes ``cost`` tokens when they are there and otherwise says how long until they will be.
With ``REDIS_URL`` set every ingress replica shares the buckets (one atomic Lua script per
call); without it each replica keeps its own.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from typing import Protocol

from serve_app.tracing import traced

log = logging.getLogger(__name__)


class RateLimitBackend(Protocol):
    async def acquire(self, key: str, *, cost: float, rate: float, burst: float,
                      consume: bool = True, owe: bool = False) -> float:
        """Take ``cost`` tokens (or only check, with consume=False); 0.0 if allowed, else the
        seconds until they would be. ``owe``: take them even if fewer are left (the bucket goes
        into debt), for work already done; the next requests wait for the debt to refill."""

    async def close(self) -> None: ...


def _refill(tokens: float, elapsed: float, rate: float, burst: float) -> float:
    return min(burst, tokens + max(0.0, elapsed) * rate)


class MemoryRateLimiter:
    """Buckets in this process; the least recently used are dropped past ``max_keys``."""

    def __init__(self, *, max_keys: int = 100_000) -> None:
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_keys = max_keys

    async def acquire(self, key: str, *, cost: float, rate: float, burst: float,
                      consume: bool = True, owe: bool = False) -> float:
        if not owe:
            cost = min(cost, burst)  # a full bucket admits any single request
        now = time.monotonic()
        tokens, stamp = self._buckets.pop(key, (burst, now))
        tokens = _refill(tokens, now - stamp, rate, burst)
        retry_after = 0.0
        if owe:
            tokens -= cost
        elif tokens >= cost:
            if consume:
                tokens -= cost
        else:
            retry_after = (cost - tokens) / rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return retry_after

    async def close(self) -> None:
        self._buckets.clear()


# Runs atomically inside Redis, on Redis's own clock, so replicas never race on a bucket.
_TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local owe = ARGV[5] == '1'
local cost = tonumber(ARGV[3])
if not owe then cost = math.min(cost, burst) end
local consume = ARGV[4] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local retry = 0
if owe then
  tokens = tokens - cost
elseif tokens >= cost then
  if consume then tokens = tokens - cost end
else
  retry = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - math.min(tokens, 0)) / rate * 1000) + 1000)
return tostring(retry)
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by every replica. If Redis is unreachable requests are let
    through (and a warning is logged): a limiter outage must not become a service outage."""

    def __init__(self, url: str, *, key_prefix: str) -> None:
        from redis.asyncio import Redis

        self._redis = Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._script = self._redis.register_script(_TOKEN_BUCKET_LUA)
        self._prefix = key_prefix

    async def acquire(self, key: str, *, cost: float, rate: float, burst: float,
                      consume: bool = True, owe: bool = False) -> float:
        from redis.exceptions import RedisError

        try:
            reply = await self._script(keys=[self._prefix + key],
                                       args=[rate, burst, cost, "1" if consume else "0",
                                             "1" if owe else "0"])
        except (RedisError, OSError, asyncio.TimeoutError) as err:
            log.warning("rate limiter: Redis unavailable, allowing the request: %s", err)
            return 0.0
        return float(reply)

    async def close(self) -> None:
        await self._redis.aclose()


def create_rate_limiter(redis_url: str | None, *, key_prefix: str) -> RateLimitBackend:
    if redis_url:
        return RedisRateLimiter(redis_url, key_prefix=key_prefix)
    return MemoryRateLimiter()


def retry_after_header(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class RateLimits:
    """The service's limits, expressed on a backend. A rate of 0 turns that limit off."""

    def __init__(self, backend: RateLimitBackend, *, predict_rate: float, predict_burst: int,
                 login_max_failures_per_username: int, login_max_failures_per_client: int,
                 login_failure_window_s: float) -> None:
        self.backend = backend
        self._predict = (predict_rate, float(predict_burst))
        window = login_failure_window_s
        self._login_user = (login_max_failures_per_username / window,
                            float(login_max_failures_per_username))
        self._login_client = (login_max_failures_per_client / window,
                              float(login_max_failures_per_client))

    @traced("rate_limit")
    async def predict(self, user_id: int, texts: int) -> float:
        """Seconds to wait before ``texts`` more texts may be classified for this user (0: go)."""
        rate, burst = self._predict
        if rate <= 0:
            return 0.0
        return await self.backend.acquire(f"predict:{user_id}", cost=texts, rate=rate, burst=burst)

    async def predict_owed(self, user_id: int, windows: int) -> None:
        """Charge windows classified beyond the one per text ``predict`` took (long texts):
        the rate counts windows, known only once the model has tokenized the texts."""
        rate, burst = self._predict
        if rate > 0 and windows > 0:
            await self.backend.acquire(f"predict:{user_id}", cost=windows, rate=rate,
                                       burst=burst, owe=True)

    def _login_buckets(self, username: str, client: str):
        # No real username is longer than 64 characters: longer ones share one bucket, so a
        # flood of huge names cannot grow the key space.
        username = username[:65]
        for key, (rate, burst) in ((f"login-user:{username}", self._login_user),
                                   (f"login-client:{client}", self._login_client)):
            if rate > 0:
                yield key, rate, burst

    @traced("rate_limit")
    async def login_blocked(self, username: str, client: str) -> float:
        """Seconds until a login for this username from this client may be tried (0: go)."""
        waits = [await self.backend.acquire(key, cost=1, rate=rate, burst=burst, consume=False)
                 for key, rate, burst in self._login_buckets(username, client)]
        return max(waits, default=0.0)

    async def login_failed(self, username: str, client: str) -> None:
        for key, rate, burst in self._login_buckets(username, client):
            await self.backend.acquire(key, cost=1, rate=rate, burst=burst)
