"""The scoring worker: reads jobs from the shared stream, scores episodes, writes results.

Every service process runs one (several replicas make several consumers of one group). A job
is acknowledged in the same transaction that writes its results, so a worker killed mid-job
leaves it pending, and another worker reclaims it (`XAUTOCLAIM`) after `retry_idle_s`. A job
that fails `max_attempts` times becomes an error result per sample plus a dead-letter entry:
the learner counts it, an operator can inspect it, nothing vanishes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from contextlib import suppress

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from reward_service import codec, keys, metrics
from reward_service.datasets import ServedDataset, UnknownImage, as_action_grid
from reward_service.schemas import ExternalScoreRequest, Grid, Result, RunPublic
from reward_service.scorers import gt
from reward_service.scorers.http import HttpScorer, Rejected
from reward_service.scorers.human import HumanTasks
from reward_service.store import Store, _s, ensure_group

log = logging.getLogger(__name__)


class PermanentError(Exception):
    """A job that no retry can fix (its run or image is gone)."""


class Worker:
    def __init__(self, store: Store, blocking: aioredis.Redis, dataset: ServedDataset, http: HttpScorer,
                 human: HumanTasks) -> None:
        self.store, self.r, self.blocking, self.dataset = store, store.r, blocking, dataset
        self.settings, self.http, self.human = store.settings, http, human
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.last_beat = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Score jobs until ``stop`` is set; Redis outages are logged and waited out."""
        log.info("scoring worker %s started", self.consumer)
        last_trim = 0.0
        while not stop.is_set():
            try:
                entries = await self.next_jobs()
                self.last_beat = time.monotonic()
                if entries:
                    await asyncio.gather(*(self.handle(entry_id, fields) for entry_id, fields in entries))
                if time.monotonic() - last_trim > self.settings.results_trim_every_s:
                    await self.trim()
                    last_trim = time.monotonic()
            except RedisError as exc:
                if "NOGROUP" in str(exc):  # Redis lost its data (restart without persistence, flush)
                    log.warning("worker: the jobs stream or its group is gone; recreating it")
                    with suppress(RedisError):
                        await ensure_group(self.r, keys.JOBS, keys.JOBS_GROUP)
                    continue
                log.warning("worker: redis error, retrying in 1 s: %s", exc)
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        log.info("scoring worker %s stopped", self.consumer)

    async def next_jobs(self) -> list[tuple[bytes, dict]]:
        """Jobs abandoned past ``retry_idle_s`` first (failed or their worker died), then new ones."""
        idle_ms = int(self.settings.retry_idle_s * 1000)
        claimed = await self.r.xautoclaim(keys.JOBS, keys.JOBS_GROUP, self.consumer, idle_ms,
                                          start_id="0-0", count=self.settings.worker_batch)
        entries = claimed[1]
        if not entries:
            read = await self.blocking.xreadgroup(keys.JOBS_GROUP, self.consumer, {keys.JOBS: ">"},
                                                  count=self.settings.worker_batch, block=self.settings.worker_block_ms)
            entries = read[0][1] if read else []
        return entries

    async def trim(self) -> None:
        for stream in [keys.JOBS, keys.TASKS, *[keys.results(r) for r in await self.store.run_ids()]]:
            removed = await self.store.trim(stream)
            if removed:
                log.debug("trimmed %d acknowledged entries from %s", removed, stream)

    async def handle(self, entry_id: bytes, fields: dict | None) -> None:
        if not fields:  # deleted from the stream while pending
            await self.r.xack(keys.JOBS, keys.JOBS_GROUP, entry_id)
            return
        kind, job = _s(fields.get(b"kind")), _s(fields.get(b"id"))
        try:
            if kind == "finalize":
                await self.human.finalize(job, entry_id)
            elif kind == "episode":
                await self.score_episode(job, entry_id)
            else:
                log.error("unknown job kind %r in %s; acknowledging it", kind, keys.JOBS)
                await self.r.xack(keys.JOBS, keys.JOBS_GROUP, entry_id)
        except RedisError:
            raise
        except Exception:
            log.exception("job %s %s failed unexpectedly; it will be retried", kind, job)

    async def score_episode(self, episode_id: str, entry_id: bytes) -> None:
        ep = await self.store.episode_fields(episode_id)
        if ep is None or _s(ep.get("status")) in ("scored", "failed", "waiting_for_rater"):
            await self.r.xack(keys.JOBS, keys.JOBS_GROUP, entry_id)  # done already, or expired
            return
        attempts = await self.r.hincrby(keys.episode(episode_id), "attempts", 1)
        run_id = _s(ep["run_id"])
        run = await self.store.get_run(run_id)
        shape = tuple(json.loads(ep["shape"]))
        if attempts > self.settings.max_attempts:
            await self.dead_letter(episode_id, ep, run, entry_id, _s(ep.get("reason")) or "out of attempts", attempts)
            return
        await self.store.set_status(episode_id, "scoring")
        started = time.perf_counter()
        try:
            if run is None:
                raise PermanentError(f"run {run_id!r} is no longer registered")
            if run.scorer == "human":
                await self.human.create_tasks(episode_id, run, shape[0], entry_id)
                return
            masks = np.frombuffer(ep["masks"], np.uint8).reshape(shape)
            grid = Grid.model_validate_json(ep["grid"])
            if run.scorer == "gt":
                results = await asyncio.to_thread(self.score_gt, episode_id, ep, run, grid, masks)
            else:
                results = await self.score_http(episode_id, ep, run, grid, masks)
        except (PermanentError, Rejected) as exc:  # resending the same episode cannot succeed
            await self.dead_letter(episode_id, ep, run, entry_id, str(exc), attempts)
            return
        except Exception as exc:  # scorer failures of any kind are retried, then dead-lettered
            reason = f"{type(exc).__name__}: {exc}" if not str(exc).startswith(("endpoint", "circuit")) else str(exc)
            metrics.SCORING_FAILURES.labels(run.scorer if run else "unknown").inc()
            if attempts >= self.settings.max_attempts:
                await self.dead_letter(episode_id, ep, run, entry_id, reason, attempts)
            else:
                log.warning("episode %s attempt %d/%d failed: %s", episode_id, attempts,
                            self.settings.max_attempts, reason)
                await self.store.set_status(episode_id, "queued", f"attempt {attempts} failed: {reason}")
            return
        written = await self.store.finish_episode(episode_id, run_id, results, "scored", None, entry_id)
        if written:
            metrics.RESULTS.labels(run.scorer, "scored").inc(len(results))
            metrics.SCORING_SECONDS.labels(run.scorer).observe(time.perf_counter() - started)

    def _result(self, episode_id: str, ep: dict, run: RunPublic, index: int, **fields) -> Result:
        return Result(episode_id=episode_id, run_id=run.run_id, sample_index=index, level=run.level,
                      source=run.scorer, policy_version=int(ep["policy_version"]), scored_at=time.time(), **fields)

    def score_gt(self, episode_id: str, ep: dict, run: RunPublic, grid: Grid, masks: np.ndarray) -> list[Result]:
        """CPU work, run in a thread: the learner's own reward functions on the stored masks."""
        try:
            target = self.dataset.target(_s(ep["image_id"]), run.image_size, grid)
        except UnknownImage as exc:
            raise PermanentError(str(exc)) from exc
        rewards, _ = gt.score_masks(masks, target, as_action_grid(grid), run.level, run.num_classes, run.metric)
        if run.level == "pixel":
            return [self._result(episode_id, ep, run, i, reward_map=codec.encode_array(r.numpy().astype(np.float32)))
                    for i, r in enumerate(rewards)]
        return [self._result(episode_id, ep, run, i, reward=float(r)) for i, r in enumerate(rewards)]

    async def score_http(self, episode_id: str, ep: dict, run: RunPublic, grid: Grid, masks: np.ndarray
                         ) -> list[Result]:
        request = ExternalScoreRequest(
            episode_id=episode_id, run_id=run.run_id, image_id=_s(ep["image_id"]), dataset=run.dataset,
            level=run.level, metric=run.metric, grid=grid, image_size=run.image_size,
            samples=[codec.raw_mask(m) for m in masks])
        response = await self.http.score(run.endpoint, request)
        if run.level == "pixel":
            return [self._result(episode_id, ep, run, i, reward_map=m) for i, m in enumerate(response.reward_maps)]
        return [self._result(episode_id, ep, run, i, reward=float(r)) for i, r in enumerate(response.rewards)]

    async def dead_letter(self, episode_id: str, ep: dict, run: RunPublic | None, entry_id: bytes, reason: str,
                          attempts: int) -> None:
        """One error result per sample, a dead-letter entry, status failed: one transaction."""
        run_id = _s(ep["run_id"])
        samples = json.loads(ep["shape"])[0]
        results = [
            Result(episode_id=episode_id, run_id=run_id, sample_index=i, level=_s(ep["level"]),
                   source=run.scorer if run else "gt", policy_version=int(ep["policy_version"]),
                   scored_at=time.time(), ratings=0, error=reason)
            for i in range(samples)
        ]
        letter = {"kind": "episode", "id": episode_id, "run_id": run_id, "reason": reason, "attempts": attempts,
                  "at": time.time()}
        written = await self.store.finish_episode(episode_id, run_id, results, "failed", reason, entry_id, letter)
        if written:
            log.error("episode %s dead-lettered after %d attempts: %s", episode_id, attempts, reason)
            metrics.RESULTS.labels(run.scorer if run else "unknown", "failed").inc(samples)
