"""Per-token rate limits: one token bucket per (limit, token) in Redis, so every replica shares it.

A token bucket rather than a fixed window: a fixed window lets a client send twice its limit
across a window boundary, and can only say "come back when the window ends"; a bucket refills
continuously, allows a configured burst, and gives the exact wait for the request refused
(`Retry-After`). The bucket is updated by one Lua script that reads Redis's own clock (`TIME`),
so replicas with skewed clocks agree, and two requests never spend the same tokens.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import redis.asyncio as aioredis

from rss_core import keys

# KEYS: bucket. ARGV: rate (tokens/s), burst, cost. Returns {1, "0"} or {0, seconds to wait}.
_TAKE = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil or at == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
if tokens < cost then return {0, tostring((cost - tokens) / rate)} end
tokens = tokens - cost
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {1, '0'}
"""


@dataclass(frozen=True)
class Limit:
    """``rate`` per second, ``burst`` at most at once; ``text`` says it to a client, settings named."""

    name: str
    rate: float
    burst: int
    text: str


class RateLimited(Exception):
    def __init__(self, limit: Limit, retry_after_s: float) -> None:
        self.limit, self.retry_after_s = limit, retry_after_s
        super().__init__(f"Rate limit exceeded: {limit.text}; retry after {retry_after_s:.2f} s.")


def token_id(token: str) -> str:
    """A short digest that names a token in Redis keys without storing the secret."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class RateLimiter:
    def __init__(self, r: aioredis.Redis) -> None:
        self._take = r.register_script(_TAKE)

    async def take(self, limit: Limit, who: str, cost: int = 1) -> None:
        """Spend ``cost`` of ``who``'s bucket, or raise RateLimited with the wait; a rate of 0 is no limit."""
        if limit.rate <= 0:
            return
        allowed, wait = await self._take(keys=[keys.rate_limit(limit.name, who)],
                                         args=[limit.rate, limit.burst, cost])
        if not int(allowed):
            raise RateLimited(limit, float(wait))


def retry_after_header(seconds: float) -> str:
    """Retry-After takes whole seconds (RFC 9110): round up, never 0."""
    return str(max(1, math.ceil(seconds)))
