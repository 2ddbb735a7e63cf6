"""The `human` scorer: rating tasks in a Redis stream, leased by raters, combined into results.

An episode becomes one task per sample (`score`, `pixel`, `point`), per pair of samples
(`pairwise`: samples 0-1, 2-3, ...) or one task showing all its samples (`best`: choose the best of
N). A `point` task asks, at each of the episode's `points`, whether the mask's class there is
right. A task that asks for N ratings is queued as N slots, and no rater gets two slots of one
task. A lease is a stream entry delivered to the rater's consumer: when
it is not answered within `lease_s`, `XAUTOCLAIM` hands the entry to the next rater who asks,
and the late answer is refused (410). Answering is one Lua script, so a rating is recorded,
its slot acknowledged and (with the last one) the finalize job queued atomically, exactly once.

Honeypots: with probability `RSS_HONEYPOT_FRACTION` a task gets a twin whose answer ground
truth knows (computed when the tasks are queued). The twin is named and served like a real task
(though a rater may notice the same masks twice). Answering it updates the rater's agreement
counters (in the same script) and never queues a finalize job, so a honeypot answer never
reaches a results stream. A run with `min_rater_agreement` ignores, when finalizing, the ratings
of raters whose agreement is below it; a task left with no rating goes back to the queue for
raters who have not answered it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from reward_service.datasets import ServedDataset
from reward_service.store import Store, _s, ensure_group
from rss_core import codec, keys, scoring
from rss_core.answers import PIXEL_REWARD, PREFERENCE, VERDICT_REWARD
from rss_core.grid import as_action_grid
from rss_core.schemas import (
    ANSWER_FIELDS,
    BEST_OF,
    Grid,
    RatingCreate,
    Result,
    RunPublic,
    TaskPoint,
    TaskPublic,
    TaskSample,
)

log = logging.getLogger(__name__)

# A honeypot answer agrees with ground truth when: a score is within this of the true reward; a
# preference names the better mask (tie: equal rewards); a best-of-N choice names one of the best
# masks; this fraction of the marked pixels (of the points answered yes or no) is right (nothing
# marked agrees only with a mask at least PIXEL_CLEAN right; all points unsure never agrees).
HONEYPOT_SCORE_TOLERANCE = 0.2
HONEYPOT_PIXEL_AGREEMENT = 0.8
PIXEL_CLEAN = 0.95

# KEYS: lease, task, ratings, raters, TASKS, JOBS, rater stats, FINALIZE_LATER, seconds of the kind, of the rater.
# ARGV: now, rating JSON, rater, entry id, task id, honeypot agreement (1 / 0; '' for a real task), key TTL,
# amend_s (the last rating's finalize waits that long: the answer may be amended meanwhile), rater_seconds ('').
# The lease keeps where its rating is (index), when it came (at) and its seconds, for an amendment.
_ANSWER = """
if redis.call('HGET', KEYS[1], 'state') ~= 'open' then return -1 end
if tonumber(redis.call('HGET', KEYS[1], 'expires')) < tonumber(ARGV[1]) then return -2 end
if redis.call('HGET', KEYS[2], 'status') == 'abandoned' then return -3 end
local index = redis.call('RPUSH', KEYS[3], ARGV[2]) - 1
redis.call('HSET', KEYS[1], 'state', 'answered', 'index', index, 'at', ARGV[1], 'seconds', ARGV[9])
redis.call('SADD', KEYS[4], ARGV[3])
redis.call('HDEL', KEYS[2], 'holder:' .. ARGV[3], 'skipped:' .. ARGV[3])
redis.call('XACK', KEYS[5], 'raters', ARGV[4])
redis.call('HINCRBY', KEYS[7], 'rated', 1)
if ARGV[9] ~= '' then
  for i = 9, 10 do
    redis.call('LPUSH', KEYS[i], ARGV[9])
    redis.call('LTRIM', KEYS[i], 0, 999)
  end
end
local done = redis.call('HINCRBY', KEYS[2], 'done', 1)
if ARGV[6] ~= '' then
  redis.call('HINCRBY', KEYS[7], 'honeypots', 1)
  redis.call('HINCRBY', KEYS[7], 'honeypots_agreed', tonumber(ARGV[6]))
  redis.call('HSET', KEYS[2], 'status', 'checked', 'agreed', ARGV[6])
  for i = 2, 4 do redis.call('EXPIRE', KEYS[i], ARGV[7]) end
  return done
end
if done >= tonumber(redis.call('HGET', KEYS[2], 'needed')) and redis.call('HGET', KEYS[2], 'status') == 'open' then
  redis.call('HSET', KEYS[2], 'status', 'complete')
  if tonumber(ARGV[8]) > 0 then
    redis.call('ZADD', KEYS[8], tonumber(ARGV[1]) + tonumber(ARGV[8]), ARGV[5])
  else
    redis.call('XADD', KEYS[6], '*', 'kind', 'finalize', 'id', ARGV[5])
  end
end
return done
"""

# Replace an answer, once, within RSS_AMEND_S of it and before its task's finalize job is queued (a complete
# task waits in FINALIZE_LATER until then; the sweep moving it to JOBS is a script too, so the two never
# interleave). The time is checked first, so a honeypot twin answers exactly like a real task.
# KEYS: lease, task, ratings, FINALIZE_LATER, rater stats, seconds of the kind, of the rater.
# ARGV: now, rating JSON, task id, amend_s, honeypot agreement ('' for a real task), rater_seconds ('').
_AMEND = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'amended' then return -4 end
if state ~= 'answered' then return -5 end
if tonumber(ARGV[1]) > tonumber(redis.call('HGET', KEYS[1], 'at')) + tonumber(ARGV[4]) then return -6 end
local status = redis.call('HGET', KEYS[2], 'status')
local waiting = status == 'open' or status == 'checked'
if status == 'complete' and redis.call('ZSCORE', KEYS[4], ARGV[3]) then waiting = true end
if not waiting then return -7 end
redis.call('LSET', KEYS[3], tonumber(redis.call('HGET', KEYS[1], 'index')), ARGV[2])
redis.call('HSET', KEYS[1], 'state', 'amended')
local old = redis.call('HGET', KEYS[1], 'seconds')
for i = 6, 7 do
  if old and old ~= '' then redis.call('LREM', KEYS[i], 1, old) end
  if ARGV[6] ~= '' then
    redis.call('LPUSH', KEYS[i], ARGV[6])
    redis.call('LTRIM', KEYS[i], 0, 999)
  end
end
redis.call('HSET', KEYS[1], 'seconds', ARGV[6])
if ARGV[5] ~= '' then
  local before = tonumber(redis.call('HGET', KEYS[2], 'agreed') or '0')
  redis.call('HINCRBY', KEYS[5], 'honeypots_agreed', tonumber(ARGV[5]) - before)
  redis.call('HSET', KEYS[2], 'agreed', ARGV[5])
end
return 1
"""

# Queue the finalize jobs of complete tasks whose amend window is over. KEYS: FINALIZE_LATER, JOBS. ARGV: now.
_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 200)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('XADD', KEYS[2], '*', 'kind', 'finalize', 'id', id)
end
return #due
"""

# Give a lease back unanswered: no skip is counted and the rater is not excluded, its entry waits again at once
# (handed to TASKS_RETURNED, idle long enough that the next XAUTOCLAIM takes it).
# KEYS: lease, task, TASKS. ARGV: now, rater, entry id, idle ms.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'open' then return -1 end
if tonumber(redis.call('HGET', KEYS[1], 'expires')) < tonumber(ARGV[1]) then return -2 end
redis.call('HSET', KEYS[1], 'state', 'released')
redis.call('HDEL', KEYS[2], 'holder:' .. ARGV[2])
local held = redis.call('XPENDING', KEYS[3], 'raters', ARGV[3], ARGV[3], 1)
if #held == 0 or held[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[3], 'raters', '""" + keys.TASKS_RETURNED + """', 0, ARGV[3], 'IDLE', ARGV[4], 'JUSTID')
return 1
"""

# A skip returns the slot to the queue, unless the task has now been skipped RSS_MAX_SKIPS times or every
# rater has rated or skipped it: then it is given up (status abandoned, a finalize job writes error results).
# The task remembers when this rater skipped it (skipped:<rater>): RSS_SKIP_RETRY_S later, if it still waits,
# it is offered to them again (`_takeable`), so one rater alone still finishes a queue.
# KEYS: lease, task, raters, TASKS, rater stats, JOBS. ARGV: now, rater, entry id, task id, max skips, raters.
_SKIP = """
if redis.call('HGET', KEYS[1], 'state') ~= 'open' then return -1 end
if tonumber(redis.call('HGET', KEYS[1], 'expires')) < tonumber(ARGV[1]) then return -2 end
redis.call('HSET', KEYS[1], 'state', 'skipped')
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[2], 'holder:' .. ARGV[2])
redis.call('HSET', KEYS[2], 'skipped:' .. ARGV[2], ARGV[1])
redis.call('XACK', KEYS[4], 'raters', ARGV[3])
redis.call('HINCRBY', KEYS[5], 'skipped', 1)
local skips = redis.call('HINCRBY', KEYS[2], 'skips', 1)
local everyone = tonumber(ARGV[6]) > 0 and redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[6])
if skips >= tonumber(ARGV[5]) or everyone then
  if redis.call('HGET', KEYS[2], 'status') == 'open' then
    local reason = 'skipped by ' .. skips .. ' raters (RSS_MAX_SKIPS is ' .. ARGV[5] .. ')'
    if skips < tonumber(ARGV[5]) then
      reason = 'every rater rated or skipped it (' .. skips .. ' skips); no rater is left to ask'
    end
    redis.call('HSET', KEYS[2], 'status', 'abandoned', 'reason', 'given up: ' .. reason)
    if redis.call('HGET', KEYS[2], 'honeypot') ~= '1' then
      redis.call('XADD', KEYS[6], '*', 'kind', 'finalize', 'id', ARGV[4])
    end
  end
  return 2
end
redis.call('XADD', KEYS[4], '*', 'task', ARGV[4])
return 1
"""

# Give a task up when no configured rater is left who may answer it. KEYS: task, TASKS, JOBS.
# ARGV: entry id, task id, reason.
_GIVE_UP = """
redis.call('XACK', KEYS[2], 'raters', ARGV[1])
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'abandoned', 'reason', ARGV[3])
if redis.call('HGET', KEYS[1], 'honeypot') ~= '1' then
  redis.call('XADD', KEYS[3], '*', 'kind', 'finalize', 'id', ARGV[2])
end
return 1
"""

# Hand a delivered task entry to the TASKS_RETURNED consumer, idle long enough that the next rater's
# XAUTOCLAIM takes it: it waits again in its place in the stream (no new entry). Without ``force`` only
# when the consumer still holds it and that consumer's lease on the task has expired (the sweep).
# KEYS: TASKS, task. ARGV: entry id, consumer, now, idle ms, force ('1' / '').
_RETURN = """
local held = redis.call('XPENDING', KEYS[1], 'raters', ARGV[1], ARGV[1], 1)
if #held == 0 or held[1][2] ~= ARGV[2] then return 0 end
if ARGV[5] ~= '1' then
  local expires = tonumber(redis.call('HGET', KEYS[2], 'holder:' .. ARGV[2]) or '0')
  if expires >= tonumber(ARGV[3]) then return 0 end
  redis.call('HDEL', KEYS[2], 'holder:' .. ARGV[2])
end
redis.call('XCLAIM', KEYS[1], 'raters', '""" + keys.TASKS_RETURNED + """', 0, ARGV[1], 'IDLE', ARGV[4], 'JUSTID')
return 1
"""
RETURNED_IDLE_MS = 10**11  # "delivered" three years ago: any XAUTOCLAIM claims it


class TaskError(Exception):
    """A rating that cannot be accepted; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def task_groups(kind: str, samples: int) -> list[list[int]]:
    """Which samples each task of an episode shows."""
    if kind == "pairwise":
        if samples % 2:
            raise ValueError(f"pairwise rating needs an even number of samples, got {samples}")
        return [[i, i + 1] for i in range(0, samples, 2)]
    if kind == "best":
        if not BEST_OF[0] <= samples <= BEST_OF[1]:
            raise ValueError(f"best-of-N rating shows an episode's {BEST_OF[0]} to {BEST_OF[1]} samples in one task, "
                             f"got {samples}")
        return [list(range(samples))]
    return [[i] for i in range(samples)]


def point_map(verdicts: list[str], points: list[list[int]], shape: tuple[int, int]) -> np.ndarray:
    """(h, w) float32 rewards of one point answer: +1 yes, -1 no at its points, NaN elsewhere and where unsure."""
    out = np.full(shape, np.nan, np.float32)
    for (y, x), verdict in zip(points, verdicts, strict=True):
        out[y, x] = VERDICT_REWARD[verdict]
    return out


def combine(kind: str, ratings: list[dict], samples: list[int], shape: tuple[int, int],
            points: list[list[int]] | None = None) -> list[dict[str, Any]]:
    """Per-sample reward fields from a task's ratings: the mean over raters, and its spread (a point
    cell no rater answered yes or no stays NaN: not asked)."""
    if kind == "pixel":
        rewards = PIXEL_REWARD[np.stack([codec.decode_array(codec.ArrayB64(**r["pixels"])) for r in ratings])]
        return [{"reward_map": codec.encode_array(rewards.mean(0)), "reward_std": float(rewards.std(0).mean())}]
    if kind == "point":
        assert points is not None
        maps = np.stack([point_map(r["verdicts"], points, shape) for r in ratings])
        answered = ~np.isnan(maps)
        with np.errstate(invalid="ignore"):
            mean = np.where(answered.any(0), np.nansum(maps, 0) / np.maximum(answered.sum(0), 1), np.nan)
        spread = np.nanstd(maps[:, answered.any(0)], 0).mean() if answered.any() else 0.0
        return [{"reward_map": codec.encode_array(mean.astype(np.float32)), "reward_std": float(spread)}]
    if kind == "pairwise":
        values = np.array([PREFERENCE[r["preference"]] for r in ratings])  # (N, 2)
    elif kind == "best":
        values = np.eye(len(samples))[[r["best"] for r in ratings]]  # (N, K): 1 for the chosen mask
    else:
        values = np.array([[r["score"]] for r in ratings])  # (N, 1)
    return [{"reward": float(values[:, i].mean()), "reward_std": float(values[:, i].std())}
            for i in range(len(samples))]


def honeypot_truth(kind: str, masks: np.ndarray, target: np.ndarray, grid: Grid, num_classes: int,
                   metric: str, points: list[list[int]] | None = None) -> dict[str, Any]:
    """The answer ground truth gives to a task showing ``masks`` (K, h, w) against ``target``."""
    action_grid = as_action_grid(grid)
    if kind in ("pixel", "point"):
        rewards, valid = scoring.score_masks(masks, target, action_grid, "pixel", num_classes, metric)
        truth = np.where(valid[0].numpy(), np.where(rewards[0].numpy() == 1, 1, 2), 0).astype(np.uint8)
        if kind == "point":
            assert points is not None
            return {"verdicts": [("unsure", "yes", "no")[int(truth[y, x])] for y, x in points]}
        return {"pixels": codec.encode_array(truth).model_dump()}
    rewards = scoring.score_masks(masks, target, action_grid, "image", num_classes, metric)[0].tolist()
    if kind == "score":
        return {"score": rewards[0]}
    if kind == "best":
        top = max(rewards)
        return {"best": [i for i, r in enumerate(rewards) if abs(r - top) < 1e-6]}
    a, b = rewards
    return {"preference": "tie" if abs(a - b) < 1e-6 else ("a" if a > b else "b")}


def agrees(kind: str, answer: dict[str, Any], truth: dict[str, Any]) -> bool:
    """Whether a rater's answer to a honeypot agrees with ground truth's (see the tolerances above)."""
    if kind == "score":
        return abs(answer["score"] - truth["score"]) <= HONEYPOT_SCORE_TOLERANCE
    if kind == "pairwise":
        return answer["preference"] == truth["preference"]
    if kind == "best":
        return answer["best"] in truth["best"]
    if kind == "point":
        pairs = [(a, t) for a, t in zip(answer["verdicts"], truth["verdicts"], strict=True)
                 if a != "unsure" and t != "unsure"]
        return bool(pairs) and sum(a == t for a, t in pairs) >= HONEYPOT_PIXEL_AGREEMENT * len(pairs)
    marked = codec.decode_array(codec.ArrayB64(**answer["pixels"]))
    right = codec.decode_array(codec.ArrayB64(**truth["pixels"]))
    counted = (marked > 0) & (right > 0)
    if not counted.any():
        return bool((right == 1).sum() >= PIXEL_CLEAN * max(1, (right > 0).sum()))
    return bool((marked[counted] == right[counted]).mean() >= HONEYPOT_PIXEL_AGREEMENT)


class HumanTasks:
    def __init__(self, store: Store, blocking: aioredis.Redis, dataset: ServedDataset) -> None:
        self.store, self.r, self.blocking, self.dataset = store, store.r, blocking, dataset
        self.settings = store.settings
        self._answer = self.r.register_script(_ANSWER)
        self._skip = self.r.register_script(_SKIP)
        self._give_up = self.r.register_script(_GIVE_UP)
        self._return = self.r.register_script(_RETURN)
        self._amend = self.r.register_script(_AMEND)
        self._due = self.r.register_script(_DUE)
        self._release = self.r.register_script(_RELEASE)

    # --- from the worker --------------------------------------------------------------------
    async def create_tasks(self, episode_id: str, run: RunPublic, samples: int, job_id: bytes) -> int:
        """Queue an episode's tasks (N slots each) and their honeypot twins, mark it waiting, ack its job:
        one transaction."""
        groups = task_groups(run.task_kind, samples)
        fraction = self.settings.honeypot_fraction
        twins = [members for members in groups if fraction > 0 and random.random() < fraction]
        truths = await self._truths(episode_id, run, twins) if twins else []
        async with self.r.pipeline(transaction=True) as pipe:
            for n, members in enumerate(groups):
                task_id = f"{episode_id}-{n}"
                pipe.hset(keys.task(task_id), mapping={
                    "episode_id": episode_id, "run_id": run.run_id, "kind": run.task_kind,
                    "samples": json.dumps(members), "needed": run.ratings_per_task, "done": 0, "status": "open",
                })
                for _ in range(run.ratings_per_task):
                    pipe.xadd(keys.TASKS, {"task": task_id})
            for n, (members, truth) in enumerate(zip(twins, truths, strict=True), start=len(groups)):
                task_id = f"{episode_id}-{n}"  # named like a real task: raters cannot tell
                pipe.hset(keys.task(task_id), mapping={
                    "episode_id": episode_id, "run_id": run.run_id, "kind": run.task_kind,
                    "samples": json.dumps(members), "needed": 1, "done": 0, "status": "open",
                    "honeypot": 1, "truth": json.dumps(truth),
                })
                pipe.xadd(keys.TASKS, {"task": task_id})
            pipe.hset(keys.episode(episode_id), mapping={
                "status": "waiting_for_rater", "tasks_total": len(groups), "tasks_done": 0})
            pipe.xack(keys.JOBS, keys.JOBS_GROUP, job_id)
            await pipe.execute()
        return len(groups)

    async def _truths(self, episode_id: str, run: RunPublic, groups: list[list[int]]) -> list[dict[str, Any]]:
        ep = await self.store.episode_fields(episode_id, "image_id", "grid", "shape", "masks", "points")
        masks = np.frombuffer(ep["masks"], np.uint8).reshape(json.loads(ep["shape"]))
        grid = Grid.model_validate_json(ep["grid"])
        points = json.loads(ep["points"]) if ep["points"] else None

        def compute() -> list[dict[str, Any]]:
            target = self.dataset.target(_s(ep["image_id"]), run.image_size, grid)
            return [honeypot_truth(run.task_kind, masks[members], target, grid, run.num_classes, run.metric, points)
                    for members in groups]

        return await asyncio.to_thread(compute)

    async def finalize(self, task_id: str, job_id: bytes) -> None:
        """Turn a complete task's ratings into results; idempotent if the job is delivered twice."""
        task = {_s(k): _s(v) for k, v in (await self.r.hgetall(keys.task(task_id))).items()}
        if task.get("status") == "abandoned":
            await self._abandon(task_id, task, job_id)
            return
        if task.get("status") != "complete":
            await self.r.xack(keys.JOBS, keys.JOBS_GROUP, job_id)  # finalized already, or gone
            return
        episode_id, members = task["episode_id"], json.loads(task["samples"])
        ep = await self.store.episode_fields(episode_id, "run_id", "level", "policy_version", "shape", "points")
        ratings = [json.loads(x) for x in await self.r.lrange(keys.task_ratings(task_id), 0, -1)]
        ratings, ignored = await self._trusted(task["run_id"], ratings)
        if not ratings:
            await self._reopen(task_id, len(ignored), job_id)
            return
        shape = tuple(json.loads(ep["shape"])[1:])
        points = json.loads(ep["points"]) if ep["points"] else None
        combined = await asyncio.to_thread(combine, task["kind"], ratings, members, shape, points)  # CPU: off the loop
        now = time.time()
        seconds = [r.get("rater_seconds") for r in ratings]
        share = sum(seconds) / len(members) if None not in seconds else None  # people-seconds per sample
        results = [
            Result(episode_id=episode_id, run_id=task["run_id"], sample_index=index, level=_s(ep["level"]),
                   ratings=len(ratings), source="human", rater_ids=[r["rater"] for r in ratings],
                   policy_version=int(ep["policy_version"]), scored_at=now, rater_seconds=share, **fields)
            for index, fields in zip(members, combined, strict=True)
        ]
        done = await self._close(task_id, task, job_id, results, "complete")
        if done is not None:
            await self._episode_done(episode_id, done)

    async def _close(self, task_id: str, task: dict[str, str], job_id: bytes, results: list[Result], status: str,
                     also: Callable[[Any], None] | None = None) -> int | None:
        """In one transaction, while the task still has ``status``: its results, status finalized, ``also``'s
        commands, the episode's count of done tasks (returned), the keys' TTL and the job's ack. None: another
        delivery of the job closed it first."""
        async with self.r.pipeline(transaction=True) as pipe:
            if not await self._still_complete(pipe, task_id, job_id, status):
                return None
            pipe.multi()
            self.store.add_results(pipe, task["run_id"], results)
            pipe.hset(keys.task(task_id), "status", "finalized")
            if also is not None:
                also(pipe)
            position = len(pipe.command_stack)
            pipe.hincrby(keys.episode(task["episode_id"]), "tasks_done", 1)
            for key in (keys.task(task_id), keys.task_ratings(task_id), keys.task_raters(task_id)):
                pipe.expire(key, self.settings.episode_ttl_s)
            pipe.xack(keys.JOBS, keys.JOBS_GROUP, job_id)
            return int((await pipe.execute())[position])

    async def _episode_done(self, episode_id: str, done: int) -> None:
        """Once every task of the episode is finalized: status scored, or failed when a task was given up."""
        total, failed, reason = await self.r.hmget(keys.episode(episode_id), ["tasks_total", "tasks_failed", "reason"])
        if done < int(total or 0):
            return
        if int(failed or 0):
            await self.store.mark_scored(episode_id, status="failed", reason=_s(reason))
        else:
            await self.store.mark_scored(episode_id)

    async def _abandon(self, task_id: str, task: dict[str, str], job_id: bytes) -> None:
        """A task given up (skipped too often, or no rater left): one error result per sample, a dead letter,
        the episode's count of done tasks; idempotent like `finalize`."""
        episode_id, members, reason = task["episode_id"], json.loads(task["samples"]), task.get("reason") or "given up"
        ep = await self.store.episode_fields(episode_id, "run_id", "level", "policy_version")
        now = time.time()
        results = [Result(episode_id=episode_id, run_id=task["run_id"], sample_index=index, level=_s(ep["level"]),
                          ratings=0, source="human", policy_version=int(ep["policy_version"]), scored_at=now,
                          error=reason) for index in members]
        letter = {"kind": "task", "id": task_id, "episode_id": episode_id, "run_id": task["run_id"],
                  "reason": reason, "attempts": int(task.get("skips") or 0), "at": now}

        def failed(pipe) -> None:
            pipe.xadd(keys.DEAD_LETTER, {"payload": json.dumps(letter)})
            pipe.hset(keys.episode(episode_id), "reason", f"task {task_id}: {reason}")
            pipe.hincrby(keys.episode(episode_id), "tasks_failed", 1)

        done = await self._close(task_id, task, job_id, results, "abandoned", failed)
        if done is None:
            return
        log.warning("episode %s: task %s %s", episode_id, task_id, reason)
        await self._episode_done(episode_id, done)

    async def agreement(self, rater: str) -> tuple[int, int]:
        """(honeypots answered, honeypots agreed) of ``rater``."""
        answered, agreed = await self.r.hmget(keys.rater_stats(rater), ["honeypots", "honeypots_agreed"])
        return int(answered or 0), int(agreed or 0)

    async def _trusted(self, run_id: str, ratings: list[dict]) -> tuple[list[dict], list[dict]]:
        """(ratings to use, ratings ignored) under the run's `min_rater_agreement`."""
        run = await self.store.get_run(run_id)
        if run is None or run.min_rater_agreement is None:
            return ratings, []
        below = set()
        for rater in {r["rater"] for r in ratings}:
            answered, agreed = await self.agreement(rater)
            if answered and agreed / answered < run.min_rater_agreement:
                below.add(rater)
        if below:
            log.info("run %s: ignoring the ratings of %s (honeypot agreement below %g)", run_id, sorted(below),
                     run.min_rater_agreement)
        return [r for r in ratings if r["rater"] not in below], [r for r in ratings if r["rater"] in below]

    async def _still_complete(self, pipe, task_id: str, job_id: bytes, status: str = "complete") -> bool:
        """WATCH the task for the transaction to come; if another worker already handled it (status no longer
        ``status``), acknowledge this duplicate job and say so."""
        await pipe.watch(keys.task(task_id))
        if _s(await pipe.hget(keys.task(task_id), "status")) == status:
            return True
        await pipe.unwatch()
        await self.r.xack(keys.JOBS, keys.JOBS_GROUP, job_id)
        return False

    async def _reopen(self, task_id: str, more: int, job_id: bytes) -> None:
        """Every rating of a complete task was ignored: ask for ``more`` ratings from other raters."""
        async with self.r.pipeline(transaction=True) as pipe:
            if not await self._still_complete(pipe, task_id, job_id):
                return
            pipe.multi()
            pipe.hset(keys.task(task_id), "status", "open")
            pipe.hincrby(keys.task(task_id), "needed", more)
            for _ in range(more):
                pipe.xadd(keys.TASKS, {"task": task_id})
            pipe.xack(keys.JOBS, keys.JOBS_GROUP, job_id)
            await pipe.execute()

    # --- from the rating endpoints ---------------------------------------------------------------
    async def lease(self, rater: str, wait_s: float = 0.0) -> TaskPublic | None:
        """The next task this rater may answer, leased for `lease_s`; None when there is none.

        Entries waiting again (returned, or leases expired) come first, oldest first, then new ones. An entry
        this rater may not take (rated or skipped it, or holds another slot of the task) is returned for
        others in its place, not queued again; a wait blocks in slices of a second, so an entry returned
        meanwhile is found."""
        deadline = time.monotonic() + wait_s
        checked = 0
        while checked < 64:  # bounded: entries this rater may not take are handed back for others
            cursor = "0-0"
            while checked < 64:
                cursor, entry = await self._claim(rater, cursor)
                if entry is not None:
                    checked += 1
                    granted = await self._take(rater, entry)
                    if granted is not None:
                        return granted
                if cursor == "0-0":
                    break
            remaining = deadline - time.monotonic()
            # at least 1 ms: a wait under 1 ms rounded to BLOCK 0, which Redis reads as "block forever" (fuzzing)
            block = max(1, int(min(remaining, 1.0) * 1000)) if remaining > 0 else None
            entry = await self._next_entry(rater, block)
            if entry is not None:
                checked += 1
                granted = await self._take(rater, entry)
                if granted is not None:
                    return granted
            elif time.monotonic() >= deadline:
                return None
        return None

    async def _takeable(self, rater: str, entry_id: bytes, task_id: str) -> dict[str, str] | None:
        """The task of an entry this rater just received, if they may answer it; otherwise the entry is
        acknowledged (the task is done), handed back for others, or the task given up (nobody may)."""
        task = {_s(k): _s(v) for k, v in (await self.r.hgetall(keys.task(task_id))).items()}
        if task.get("status") != "open" or (
                task.get("honeypot") == "1" and not await self.r.exists(keys.episode(task["episode_id"]))):
            await self.r.xack(keys.TASKS, keys.TASKS_GROUP, entry_id)  # done, or a honeypot outliving its data
            return None
        answered = await self.r.sismember(keys.task_raters(task_id), rater)
        free = float(task.get(f"holder:{rater}") or 0) <= time.time()
        if not answered and free:
            return task
        skipped = task.get(f"skipped:{rater}")  # skipped, and nobody else took it since: ask this rater again
        if answered and free and skipped and time.time() - float(skipped) >= self.settings.skip_retry_s:
            return task
        raters = len(self.settings.rater_tokens)
        if answered and raters and await self.r.scard(keys.task_raters(task_id)) >= raters:
            reason = (f"given up: every rater rated or skipped it ({task.get('skips') or 0} skips, "
                      f"{task.get('done')} of {task.get('needed')} ratings); no rater is left to ask")
            await self._give_up(keys=[keys.task(task_id), keys.TASKS, keys.JOBS], args=[entry_id, task_id, reason])
            return None
        await self._return(keys=[keys.TASKS, keys.task(task_id)],
                           args=[entry_id, rater, time.time(), RETURNED_IDLE_MS, "1"])
        return None

    async def _claim(self, rater: str, cursor: str) -> tuple[str, tuple[bytes, str] | None]:
        """(next cursor, one entry waiting again, if any) from XAUTOCLAIM: entries returned for others and
        leases expired (past `lease_s` plus a second: a lease's clock starts just after its delivery)."""
        idle_ms = int(self.settings.lease_s * 1000) + 1000
        try:
            claimed = await self.r.xautoclaim(keys.TASKS, keys.TASKS_GROUP, rater, idle_ms, start_id=cursor, count=1)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await ensure_group(self.r, keys.TASKS, keys.TASKS_GROUP)  # Redis lost its data: start over
            return "0-0", None
        entries = [e for e in claimed[1] if e[1]]
        entry = (entries[0][0], _s(entries[0][1][b"task"])) if entries else None
        return _s(claimed[0]), entry

    async def _next_entry(self, rater: str, block: int | None) -> tuple[bytes, str] | None:
        """A new entry (never delivered), waiting up to ``block`` ms."""
        try:
            read = await self.blocking.xreadgroup(keys.TASKS_GROUP, rater, {keys.TASKS: ">"}, count=1, block=block)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await ensure_group(self.r, keys.TASKS, keys.TASKS_GROUP)
            return None
        entries = read[0][1] if read else []
        if not entries:
            return None
        entry_id, fields = entries[0]
        return entry_id, _s(fields[b"task"])

    async def sweep(self) -> int:
        """Return every task entry whose lease expired to the queue, before anyone asks (the worker calls
        this about once a second): queue depths say what waits, and a rater waiting for a task finds it.
        Returns how many were returned. It also queues the finalize jobs of complete tasks whose RSS_AMEND_S
        window is over."""
        await self._due(keys=[keys.FINALIZE_LATER, keys.JOBS], args=[time.time()])
        idle_ms = int(self.settings.lease_s * 1000)
        try:
            held = await self.r.xpending_range(keys.TASKS, keys.TASKS_GROUP, min="-", max="+", count=200,
                                               idle=idle_ms)
        except ResponseError:
            return 0  # no tasks stream or group yet
        held = [h for h in held if _s(h["consumer"]) != keys.TASKS_RETURNED]
        if not held:
            return 0
        async with self.r.pipeline(transaction=False) as pipe:
            for h in held:
                pipe.xrange(keys.TASKS, min=h["message_id"], max=h["message_id"], count=1)
            entries = await pipe.execute()
        returned = 0
        now = time.time()
        for h, entry in zip(held, entries, strict=True):
            if not entry:  # deleted from the stream: nothing to answer
                await self.r.xack(keys.TASKS, keys.TASKS_GROUP, h["message_id"])
                continue
            task_id = _s(entry[0][1][b"task"])
            returned += int(await self._return(keys=[keys.TASKS, keys.task(task_id)],
                                               args=[h["message_id"], _s(h["consumer"]), now, RETURNED_IDLE_MS, ""]))
        if returned:
            log.info("returned %d task(s) whose lease expired to the queue", returned)
        return returned

    async def _take(self, rater: str, entry: tuple[bytes, str]) -> TaskPublic | None:
        """The queue entry's task leased to ``rater``, or None when it may not take it or the task is gone."""
        task = await self._takeable(rater, *entry)
        return await self._grant(rater, entry[1], task, entry[0], time.time()) if task is not None else None

    async def _grant(self, rater: str, task_id: str, task: dict, entry_id: bytes, now: float) -> TaskPublic | None:
        """Lease the task to ``rater``; None when its episode is gone (expired after RSS_EPISODE_TTL_S, or the
        database was flushed): nothing can be shown, so its entry leaves the queue and the caller goes on."""
        ep = await self.store.episode_fields(task["episode_id"], "image_id", "grid", "shape", "masks", "points")
        if ep is None or ep.get("masks") is None or ep.get("shape") is None:
            log.warning("task %s: its episode %s is gone; dropped from the queue", task_id, task["episode_id"])
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.xack(keys.TASKS, keys.TASKS_GROUP, entry_id)
                pipe.hset(keys.task(task_id), "status", "gone")
                await pipe.execute()
            return None
        lease_id, expires = uuid.uuid4().hex, now + self.settings.lease_s
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(keys.lease(lease_id), mapping={
                "task": task_id, "entry": entry_id, "rater": rater, "expires": expires, "state": "open"})
            pipe.expire(keys.lease(lease_id), int(max(3600, 10 * self.settings.lease_s)))
            pipe.hset(keys.task(task_id), f"holder:{rater}", expires)
            await pipe.execute()
        shape = tuple(json.loads(ep["shape"]))
        masks = np.frombuffer(ep["masks"], np.uint8).reshape(shape)
        run = await self.store.get_run(task["run_id"])
        image_id = _s(ep["image_id"])
        members = json.loads(task["samples"])
        points = None
        if task["kind"] == "point" and ep["points"]:
            mask = masks[members[0]]
            points = [TaskPoint(y=y, x=x, class_id=int(mask[y, x])) for y, x in json.loads(ep["points"])]
        # PNG encoding is CPU work (0.28 s for 4096x4096): off the event loop, which other requests share
        pngs = await asyncio.to_thread(lambda: [codec.png_mask(masks[i]) for i in members])
        return TaskPublic(
            task_id=task_id, lease_id=lease_id, lease_expires_at=expires, kind=task["kind"], run_id=task["run_id"],
            episode_id=task["episode_id"], image_id=image_id, image_url=f"/v1/images/{image_id}",
            grid=Grid.model_validate_json(ep["grid"]),
            samples=[TaskSample(sample_index=i, mask=png) for i, png in zip(members, pngs, strict=True)],
            num_classes=run.num_classes, class_names=run.class_names, palette=self.dataset.palette[: run.num_classes],
            ratings_needed=int(task["needed"]), ratings_done=int(task["done"]), points=points,
        )

    async def _lease(self, rater: str, task_id: str, lease_id: str, state: str | None = "open") -> dict[str, str]:
        """The lease, if it is ``rater``'s on ``task_id`` (and, unless ``state`` is None, open and unexpired)."""
        lease = {_s(k): _s(v) for k, v in (await self.r.hgetall(keys.lease(lease_id))).items()}
        if not lease:
            raise TaskError(404, f"lease {lease_id!r} is unknown (never granted, or long expired)")
        if lease["task"] != task_id:
            raise TaskError(409, f"lease {lease_id!r} is for task {lease['task']!r}, not {task_id!r}")
        if lease["rater"] != rater:
            raise TaskError(403, "this lease belongs to another rater")
        if state is None:
            return lease
        if lease["state"] != "open":
            raise TaskError(409, f"this lease was already {lease['state']}")
        if float(lease["expires"]) < time.time():
            raise TaskError(410, "the lease expired and the task went back to the queue; fetch the next task")
        return lease

    async def rate(self, rater: str, task_id: str, rating: RatingCreate) -> tuple[int, int]:
        """Record one rating; returns (ratings done, ratings needed)."""
        lease = await self._lease(rater, task_id, rating.lease_id)
        task = {_s(k): _s(v) for k, v in (await self.r.hgetall(keys.task(task_id))).items()}
        answer = await self._answer_fields(task, rating)
        record, agreed, seconds = await self._record(rater, task, answer, rating)
        now = time.time()
        done = await self._answer(
            keys=[keys.lease(rating.lease_id), keys.task(task_id), keys.task_ratings(task_id),
                  keys.task_raters(task_id), keys.TASKS, keys.JOBS, keys.rater_stats(rater), keys.FINALIZE_LATER,
                  keys.rater_seconds(f"kind:{task['kind']}"), keys.rater_seconds(f"rater:{rater}")],
            args=[now, record, rater, lease["entry"], task_id, agreed, self.settings.episode_ttl_s,
                  self.settings.amend_s, seconds])
        self._raise_for(int(done))
        counter = keys.stats_minute(f"ratings:{rater}", int(time.time() // 60))
        await self.r.incr(counter)
        await self.r.expire(counter, 3600)
        return int(done), int(task["needed"]), (now + self.settings.amend_s if self.settings.amend_s > 0 else None)

    async def _record(self, rater: str, task: dict[str, str], answer: dict[str, Any],
                      rating: RatingCreate) -> tuple[str, int | str, str]:
        """(the rating's JSON record, honeypot agreement 1 / 0 or '' for a real task, rater_seconds or '')."""
        record = {"rater": rater, "at": time.time(), **answer}
        if rating.rater_seconds is not None:
            record["rater_seconds"] = rating.rater_seconds
        agreed: int | str = ""
        if task.get("honeypot") == "1":
            agreed = int(await asyncio.to_thread(agrees, task["kind"], answer, json.loads(task["truth"])))
        seconds = repr(float(rating.rater_seconds)) if rating.rater_seconds is not None else ""
        return json.dumps(record), agreed, seconds

    async def amend(self, rater: str, task_id: str, rating: RatingCreate) -> None:
        """Replace this rater's answer to a task, once, within RSS_AMEND_S of it and before the task is
        finalized: the results will carry only the amended answer."""
        lease = await self._lease(rater, task_id, rating.lease_id, state=None)
        if self.settings.amend_s <= 0:
            raise TaskError(409, "amending answers is off on this service (RSS_AMEND_S is 0)")
        task = {_s(k): _s(v) for k, v in (await self.r.hgetall(keys.task(task_id))).items()}
        answer = await self._answer_fields(task, rating)
        record, agreed, seconds = await self._record(rater, task, answer, rating)
        code = await self._amend(
            keys=[keys.lease(rating.lease_id), keys.task(task_id), keys.task_ratings(task_id), keys.FINALIZE_LATER,
                  keys.rater_stats(rater), keys.rater_seconds(f"kind:{task['kind']}"),
                  keys.rater_seconds(f"rater:{rater}")],
            args=[time.time(), record, task_id, self.settings.amend_s, agreed, seconds])
        code = int(code)
        if code == -4:
            raise TaskError(409, "this answer was already amended (an answer may be replaced once)")
        if code == -5:
            raise TaskError(409, f"this lease was {lease['state']}, not answered: there is no answer to amend "
                                 "(POST the rating instead)")
        if code == -6:
            raise TaskError(409, f"the time to amend this answer is over (RSS_AMEND_S is {self.settings.amend_s:g} "
                                 "s); the answer stands")
        if code == -7:
            raise TaskError(409, "the task was already finalized into results; the answer stands")

    async def release(self, rater: str, task_id: str, lease_id: str) -> None:
        """Give a lease back unanswered (sign-out, a closed tab, a prefetched task not shown): its slot waits
        again at once for any rater, this one included; no skip is counted."""
        lease = await self._lease(rater, task_id, lease_id)
        code = await self._release(keys=[keys.lease(lease_id), keys.task(task_id), keys.TASKS],
                                   args=[time.time(), rater, lease["entry"], RETURNED_IDLE_MS])
        if int(code) == -1:
            raise TaskError(409, "this lease was already answered, skipped or released")
        self._raise_for(int(code))

    async def queue_for(self, rater: str, limit: int = 1000) -> tuple[int, int]:
        """(tasks ``rater`` may lease now, tasks they skipped that still wait and come back to them), over the
        waiting entries (never delivered, or returned to the queue; at most ``limit`` looked at)."""
        try:
            info = next((g for g in await self.r.xinfo_groups(keys.TASKS) if _s(g["name"]) == keys.TASKS_GROUP), None)
        except ResponseError:
            return 0, 0
        last = _s(info["last-delivered-id"]) if info else "0-0"
        fresh = await self.r.xrange(keys.TASKS, min=f"({last}", max="+", count=limit)
        ids = [_s(fields[b"task"]) for _, fields in fresh if fields.get(b"task")]
        returned = await self.r.xpending_range(keys.TASKS, keys.TASKS_GROUP, min="-", max="+", count=limit,
                                               consumername=keys.TASKS_RETURNED) if info else []
        if returned:
            async with self.r.pipeline(transaction=False) as pipe:
                for h in returned:
                    pipe.xrange(keys.TASKS, min=h["message_id"], max=h["message_id"], count=1)
                for entry in await pipe.execute():
                    if entry and entry[0][1].get(b"task"):
                        ids.append(_s(entry[0][1][b"task"]))
        tasks = list(dict.fromkeys(ids))
        if not tasks:
            return 0, 0
        async with self.r.pipeline(transaction=False) as pipe:
            for task_id in tasks:
                pipe.hmget(keys.task(task_id), ["status", f"holder:{rater}", f"skipped:{rater}"])
                pipe.sismember(keys.task_raters(task_id), rater)
            replies = await pipe.execute()
        now, available, later = time.time(), 0, 0
        for (status, holder, skipped), answered in zip(replies[::2], replies[1::2], strict=True):
            if _s(status) != "open" or float(holder or 0) > now:
                continue
            if not answered:
                available += 1
            elif skipped:
                later += 1
        return available, later

    async def skip(self, rater: str, task_id: str, lease_id: str) -> None:
        lease = await self._lease(rater, task_id, lease_id)
        ok = await self._skip(
            keys=[keys.lease(lease_id), keys.task(task_id), keys.task_raters(task_id), keys.TASKS,
                  keys.rater_stats(rater), keys.JOBS],
            args=[time.time(), rater, lease["entry"], task_id, self.settings.max_skips,
                  len(self.settings.rater_tokens)])
        self._raise_for(int(ok))

    @staticmethod
    def _raise_for(code: int) -> None:
        if code == -1:
            raise TaskError(409, "this lease was already answered")
        if code == -2:
            raise TaskError(410, "the lease expired and the task went back to the queue; fetch the next task")
        if code == -3:
            raise TaskError(409, "the task was given up (skipped too often); fetch the next task")

    async def _answer_fields(self, task: dict[str, str], rating: RatingCreate) -> dict[str, Any]:
        kind = task["kind"]
        needs = ANSWER_FIELDS[kind]
        if getattr(rating, needs) is None:
            raise TaskError(422, f"this is a {kind} task: answer with {needs!r}")
        if kind == "score":
            return {"score": rating.score}
        if kind == "pairwise":
            return {"preference": rating.preference}
        if kind == "best":
            shown = len(json.loads(task["samples"]))
            if rating.best >= shown:
                raise TaskError(422, f"best must name one of the task's {shown} samples (0..{shown - 1}), "
                                     f"got {rating.best}")
            return {"best": rating.best}
        if kind == "point":
            points = json.loads((await self.store.episode_fields(task["episode_id"], "points"))["points"] or "[]")
            if len(rating.verdicts) != len(points):
                raise TaskError(422, f"verdicts must answer each of the task's {len(points)} points in order, "
                                     f"got {len(rating.verdicts)}")
            return {"verdicts": list(rating.verdicts)}
        ep = await self.store.episode_fields(task["episode_id"], "shape")
        shape = tuple(json.loads(ep["shape"])[1:])
        try:  # decoding and encoding are CPU work: off the event loop
            pixels = await asyncio.to_thread(codec.decode_mask, rating.pixels, shape, "pixels")
        except codec.MaskError as exc:
            raise TaskError(422, str(exc)) from exc
        if pixels.max(initial=0) > 2:
            raise TaskError(422, "pixels values must be 0 (unmarked), 1 (correct) or 2 (wrong)")
        return {"pixels": (await asyncio.to_thread(codec.encode_array, pixels)).model_dump()}
