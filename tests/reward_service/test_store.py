"""Store housekeeping against a real Redis: streams are trimmed only below what every group still needs."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from reward_service.core.config import Settings
from reward_service.store import Store, ensure_group, trim_floor


def test_trim_keeps_pending_and_undelivered_entries(redis_server, redis_client) -> None:
    async def scenario() -> None:
        r = aioredis.Redis(port=redis_server.port)
        store = Store(r, Settings(_env_file=None))
        try:
            assert await store.trim("rss:v1:results:nobody") == 0  # no stream
            await r.xadd("ungrouped", {"x": 1})
            assert await store.trim("ungrouped") == 0  # nobody reads it yet: kept
            stream = "rss:v1:results:t"
            await ensure_group(r, stream, "learner")
            ids = [await r.xadd(stream, {"n": i}) for i in range(10)]
            read = await r.xreadgroup("learner", "c", {stream: ">"}, count=6)
            assert [e[0] for e in read[0][1]] == ids[:6]
            await r.xack(stream, "learner", *ids[:2], ids[3])  # 2 is pending: it and all after it stay
            assert await store.trim(stream) == 2
            assert [e[0] for e in await r.xrange(stream)] == ids[2:]
            assert await store.group_depth(stream, "learner") == (4, 3)  # undelivered, pending
            await r.xack(stream, "learner", ids[2], *ids[4:6])
            assert await store.trim(stream) == 4  # up to the first undelivered entry
            rest = await r.xreadgroup("learner", "c", {stream: ">"})
            await r.xack(stream, "learner", *[e[0] for e in rest[0][1]])
            assert await store.trim(stream) == 4 and await r.xlen(stream) == 0
        finally:
            await r.aclose()

    asyncio.run(scenario())


def test_the_trim_floor_of_a_group_acknowledged_between_two_reads() -> None:
    """XINFO GROUPS said 2 pending; by XPENDING the learner had acknowledged both (min None). Before, that made
    the worker's trim raise AttributeError, which ended the worker: no episode was scored after it."""
    groups = [{"name": b"learner", "pending": 2, "last-delivered-id": b"1700-3"},
              {"name": b"audit", "pending": 1, "last-delivered-id": b"1800-0"}]
    assert trim_floor(groups, {"learner": None, "audit": b"1750-1"}) == (1700, 4)
    assert trim_floor(groups, {"audit": b"1650-1"}) == (1650, 1)
    assert trim_floor(groups, {"learner": b"1600-0", "audit": b"1750-1"}) == (1600, 0)
    assert trim_floor([], {}) is None
