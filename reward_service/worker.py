"""The scoring worker: reads jobs from the shared stream, scores episodes, writes results.

It runs as its own process (`rss worker`, started by `rss serve`), so scoring never competes
with request handling for the GIL; several replicas make several consumers of one group. A
batch of jobs costs a few Redis round trips: one pipeline reads every episode and its run,
ground truth scores the whole batch in one thread call, and one pipeline of `finish` scripts
writes each episode's results, its status and its job's ack atomically. A worker killed
mid-batch leaves its jobs pending; any worker reclaims them (`XAUTOCLAIM`) after
`retry_idle_s`. A job that fails `max_attempts` times becomes an error result per sample plus
a dead-letter entry: the learner counts it, an operator can inspect it, nothing vanishes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from reward_service import metrics
from reward_service.core.config import Settings
from reward_service.datasets import ServedDataset, UnknownImage
from reward_service.scorers.http import HttpScorer, Rejected
from reward_service.scorers.human import HumanTasks
from reward_service.store import (
    DatabaseClaimed,
    Finish,
    Store,
    _s,
    claim_database,
    connect,
    connect_blocking,
    ensure_group,
)
from rss_core import codec, keys, scoring, wire
from rss_core.schemas import EpisodeResult, ExternalScoreRequest, Grid, Result, RunPublic, View

log = logging.getLogger(__name__)


class PermanentError(Exception):
    """A job that no retry can fix (its run or image is gone, the endpoint refuses it)."""


@dataclass(eq=False)  # compared by identity
class Job:
    """One episode job of a batch, with what the batch read about it."""

    entry_id: bytes
    episode_id: str
    ep: dict = field(default_factory=dict)
    run: RunPublic | None = None
    attempts: int = 0
    rewards: list[float] | None = None  # scored, image level: one per sample
    maps: np.ndarray | None = None  # scored, pixel level: (K, h, w) float32, NaN = no reward
    scorer_version: str | None = None
    error: Exception | None = None

    @property
    def scored(self) -> bool:
        return self.rewards is not None or self.maps is not None

    @property
    def wire(self) -> int:
        """How the episode came (v1 JSON, v2 binary), so how its results are written: per sample or per episode."""
        return int(self.ep.get("wire") or 1)

    @property
    def owner(self) -> str | None:
        """The id of the learner token that posted it (its pending pixels are released with the run's)."""
        return _s(self.ep.get("owner"))

    @property
    def masks(self) -> np.ndarray:
        # bytearray: a writable copy (torch warns on read-only numpy buffers)
        return np.frombuffer(bytearray(self.ep["masks"]), np.uint8).reshape(self.shape)

    @cached_property
    def shape(self) -> tuple[int, ...]:
        """(K, h, w) of the episode's masks (parsed once: the masks, the entries and the finish all need it)."""
        return tuple(json.loads(self.ep["shape"]))

    @property
    def grid(self) -> Grid:
        return Grid.model_validate_json(self.ep["grid"])

    @property
    def view(self) -> View | None:
        """The training view the masks were sampled on (None: the whole image)."""
        return View.model_validate_json(self.ep["view"]) if self.ep.get("view") else None


class Worker:
    def __init__(self, store: Store, blocking: aioredis.Redis, dataset: ServedDataset, http: HttpScorer,
                 human: HumanTasks) -> None:
        self.store, self.r, self.blocking, self.dataset = store, store.r, blocking, dataset
        self.settings, self.http, self.human = store.settings, http, human
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._beat_at = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Score jobs until ``stop`` is set; Redis outages are logged and waited out."""
        log.info("scoring worker %s started", self.consumer)
        last_trim = time.monotonic()  # the first trim one interval after start, not after the first batch
        last_sweep = 0.0  # expired rating leases go back to the queue about once a second
        while not stop.is_set():
            try:
                if time.monotonic() - last_sweep >= 1.0:
                    try:  # a Redis restarted without persistence forgot the claim: make it again
                        await claim_database(self.r, self.settings)
                    except DatabaseClaimed as exc:  # another deployment took the database: score nothing
                        log.error("worker: not scoring: %s", exc)
                        with suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(stop.wait(), 5.0)
                        continue
                await self.beat()
                entries = await self.next_jobs()
                if entries:
                    await self.process(entries)
                if time.monotonic() - last_sweep >= 1.0:
                    await self.human.sweep()
                    last_sweep = time.monotonic()
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
            except Exception:  # a bug in housekeeping must not end scoring: said with its traceback, then on
                log.exception("worker: unexpected error; going on in 1 s")
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        with suppress(RedisError):
            await self.r.zrem(keys.WORKERS, self.consumer)
            await self.r.hdel(keys.BREAKERS, self.consumer)
        log.info("scoring worker %s stopped", self.consumer)

    async def beat(self) -> None:
        """Say in Redis that this worker polls (readiness reads it), at most once a second."""
        now = time.time()
        if now - self._beat_at >= 1.0:
            circuits = self.http.breaker_states() if self.http is not None else {}
            async with self.r.pipeline(transaction=False) as pipe:
                pipe.zadd(keys.WORKERS, {self.consumer: now})
                pipe.zremrangebyscore(keys.WORKERS, 0, now - 3600)
                if circuits:  # readiness and stats show them (the breakers live in this process)
                    pipe.hset(keys.BREAKERS, self.consumer, json.dumps({"at": now, "circuits": circuits}))
                await pipe.execute()
            self._beat_at = now

    async def next_jobs(self) -> list[tuple[bytes, dict]]:
        """Jobs abandoned past ``retry_idle_s`` first (failed or their worker died), then new ones."""
        idle_ms = int(self.settings.retry_idle_s * 1000)
        claimed = await self.r.xautoclaim(keys.JOBS, keys.JOBS_GROUP, self.consumer, idle_ms,
                                          start_id="0-0", count=self.settings.worker_batch)
        entries = await self.isolate_crashed(claimed[1], idle_ms)
        if not entries:
            read = await self.blocking.xreadgroup(keys.JOBS_GROUP, self.consumer, {keys.JOBS: ">"},
                                                  count=self.settings.worker_batch, block=self.settings.worker_block_ms)
            entries = read[0][1] if read else []
        return entries

    async def isolate_crashed(self, entries: list[tuple[bytes, dict | None]], idle_ms: int
                              ) -> list[tuple[bytes, dict | None]]:
        """Of reclaimed jobs, one whose last attempt ended without an outcome (its worker crashed or was
        killed: the job may be what crashes it) goes alone, and the others are handed back, claimable at once:
        a poison job spends its own attempts, not those of every job batched with it."""
        if len(entries) < 2:
            return entries
        episodes = [(entry_id, _s(fields[b"id"])) for entry_id, fields in entries
                    if fields and _s(fields.get(b"kind")) == "episode"]
        async with self.r.pipeline(transaction=False) as pipe:
            for _, episode_id in episodes:
                pipe.hmget(keys.episode(episode_id), ["attempts", "ended"])
            counts = await pipe.execute()
        crashed = [entry_id for (entry_id, _), (attempts, ended) in zip(episodes, counts, strict=True)
                   if int(attempts or 0) > int(ended or 0)]
        if not crashed:
            return entries
        rest = [entry_id for entry_id, _ in entries if entry_id != crashed[0]]
        await self.r.xclaim(keys.JOBS, keys.JOBS_GROUP, self.consumer, 0, rest, idle=idle_ms + 1, justid=True)
        return [entry for entry in entries if entry[0] == crashed[0]]

    async def trim(self) -> None:
        for stream in [keys.JOBS, keys.TASKS, *[keys.results(r) for r in await self.store.run_ids()]]:
            removed = await self.store.trim(stream)
            if removed:
                log.debug("trimmed %d acknowledged entries from %s", removed, stream)

    async def process(self, entries: list[tuple[bytes, dict | None]]) -> None:
        episodes, others, done = [], [], []
        for entry_id, fields in entries:
            kind = _s((fields or {}).get(b"kind"))
            if kind == "episode":
                episodes.append(Job(entry_id, _s(fields[b"id"])))
            elif kind == "finalize":
                others.append(self.human.finalize(_s(fields[b"id"]), entry_id))
            else:  # deleted from the stream while pending, or not ours
                log.warning("acknowledging job %s of kind %r without work", entry_id, kind)
                done.append(entry_id)
        if done:
            await self.r.xack(keys.JOBS, keys.JOBS_GROUP, *done)
        outcomes = await asyncio.gather(self.score_batch(episodes), *others, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, RedisError):
                raise outcome
            if isinstance(outcome, Exception):
                log.error("a job failed unexpectedly; it will be retried", exc_info=outcome)

    async def score_batch(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        started = time.perf_counter()
        async with self.r.pipeline(transaction=False) as pipe:  # one round trip reads the whole batch
            for job in jobs:
                pipe.hgetall(keys.episode(job.episode_id))
                pipe.hincrby(keys.episode(job.episode_id), "attempts", 1)
            answers = await pipe.execute()
        stale, live = [], []
        for job, ep, attempts in zip(jobs, answers[::2], answers[1::2], strict=True):
            job.ep, job.attempts = {_s(k): v for k, v in ep.items()}, attempts
            if not job.ep.get("run_id") or _s(job.ep.get("status")) in ("scored", "failed", "waiting_for_rater"):
                stale.append(job.entry_id)  # done already (a reclaimed duplicate), or expired
            else:
                live.append(job)
        if stale:
            # HINCRBY above re-created the hash of an expired episode: remove that stub again
            stubs = [keys.episode(j.episode_id) for j in jobs if not j.ep.get("run_id")]
            async with self.r.pipeline(transaction=False) as pipe:
                pipe.xack(keys.JOBS, keys.JOBS_GROUP, *stale)
                if stubs:
                    pipe.delete(*stubs)
                await pipe.execute()
        if not live:
            return
        run_ids = sorted({_s(j.ep["run_id"]) for j in live})
        runs = dict(zip(run_ids, await self.store.get_runs(run_ids), strict=True))
        gt_jobs, http_jobs, human_jobs = [], [], []
        for job in live:
            job.run = runs[_s(job.ep["run_id"])]
            if job.attempts > self.settings.max_attempts:
                job.error = PermanentError(self.out_of_attempts(job))
            elif job.run is None:
                job.error = PermanentError(f"run {_s(job.ep['run_id'])!r} is no longer registered")
            else:
                {"gt": gt_jobs, "http": http_jobs, "human": human_jobs}[job.run.scorer].append(job)
        if http_jobs:
            async with self.r.pipeline(transaction=False) as pipe:
                for job in http_jobs:
                    pipe.hset(keys.episode(job.episode_id), "status", "scoring")
                await pipe.execute()
        await asyncio.gather(
            asyncio.to_thread(self.score_gt_batch, gt_jobs) if gt_jobs else asyncio.sleep(0),
            *(self.score_http(job) for job in http_jobs),
            *(self.create_tasks(job) for job in human_jobs),
        )
        tasks_created = {id(j) for j in human_jobs if j.error is None}  # create_tasks acked those itself
        await self.finish([j for j in live if id(j) not in tasks_created], started)

    @staticmethod
    def out_of_attempts(job: Job) -> str:
        """Why a job taken more than max_attempts times is given up: its attempts that ended in a failure (the
        last one's reason) and those that never ended (a worker crashed or was killed mid-scoring)."""
        reason = _s(job.ep.get("reason"))
        taken, ended = job.attempts - 1, int(job.ep.get("ended") or 0)
        if taken <= ended:
            return reason or "out of attempts"
        crashed = (f"out of attempts: {taken - ended} of {taken} attempts ended without an outcome (the worker "
                   "crashed or was killed mid-scoring)")
        return f"{crashed}; {reason}" if reason else crashed

    async def create_tasks(self, job: Job) -> None:
        try:
            await self.human.create_tasks(job.episode_id, job.run, job.shape[0], job.entry_id)
        except RedisError:
            raise
        except Exception as exc:
            job.error = exc

    async def finish(self, jobs: list[Job], started: float) -> None:
        """Results, dead letters and retries of a batch, written in one round trip."""
        finishes, retries = [], []
        for job in jobs:
            if job.error is None:
                finishes.append(Finish(job.episode_id, job.run.run_id, self.entries(job), self.samples(job), "scored",
                                       None, job.entry_id, owner=job.owner))
                continue
            error = job.error
            own_words = isinstance(error, PermanentError) or str(error).startswith(("endpoint", "circuit"))
            reason = str(error) if own_words else f"{type(error).__name__}: {error}"
            permanent = isinstance(error, PermanentError | Rejected)
            metrics.SCORING_FAILURES.labels(job.run.scorer if job.run else "unknown").inc()
            if permanent or job.attempts >= self.settings.max_attempts:
                finishes.append(self.dead_letter(job, reason))
            else:
                log.warning("episode %s attempt %d/%d failed: %s", job.episode_id, job.attempts,
                            self.settings.max_attempts, reason)
                retries.append((job, f"attempt {job.attempts} failed: {reason}"))
        written = await self.store.finish(finishes, [(keys.episode(j.episode_id), r) for j, r in retries])
        elapsed = time.perf_counter() - started
        for item, ok in zip(finishes, written, strict=True):
            if not ok:
                continue
            scorer = next(j.run.scorer if j.run else "unknown" for j in jobs if j.episode_id == item.episode_id)
            metrics.RESULTS.labels(scorer, item.status).inc(item.samples)
            if item.status == "scored":
                metrics.SCORING_SECONDS.labels(scorer).observe(elapsed)

    @staticmethod
    def samples(job: Job) -> int:
        return job.shape[0]

    def entries(self, job: Job, error: str | None = None) -> list[dict[str, str | bytes]]:
        """The results-stream entries of a scored (or, with ``error``, failed) episode: v2 one entry with all K
        samples (`EpisodeResult`, maps as bytes), v1 one `Result` per sample."""
        run_id, level = _s(job.ep["run_id"]), _s(job.ep["level"])
        source = job.run.scorer if job.run else "gt"
        common = {"episode_id": job.episode_id, "run_id": run_id, "level": level, "source": source,
                  "policy_version": int(job.ep["policy_version"]), "scored_at": time.time(),
                  "scorer_version": job.scorer_version}
        k = self.samples(job)
        if job.wire == 2:
            entry = EpisodeResult(samples=k, error=error, **common)
            fields: dict[str, str | bytes] = {}
            if error is None and job.maps is not None:
                entry.maps, fields["maps"] = wire.maps_field(job.maps)
            elif error is None:
                entry.rewards = job.rewards
            return [{"episode": entry.model_dump_json(exclude_none=True), **fields}]
        if error is not None:
            results = [Result(sample_index=i, ratings=0, error=error, **common) for i in range(k)]
        elif job.maps is not None:
            results = [Result(sample_index=i, reward_map=codec.encode_array(m), **common)
                       for i, m in enumerate(job.maps)]
        else:
            results = [Result(sample_index=i, reward=float(r), **common) for i, r in enumerate(job.rewards)]
        return [{"payload": r.model_dump_json(exclude_none=True)} for r in results]

    def score_gt_batch(self, jobs: list[Job]) -> None:
        """CPU work, run in one thread call per batch: the learner's own reward functions, once per group of
        episodes of one shape, grid and metric (`scoring.score_episodes`: a torch op costs the same for one
        episode as for sixteen). A group that fails is scored again one episode at a time, so one bad
        episode does not fail its batch."""
        groups: dict[tuple, list[tuple[Job, np.ndarray, np.ndarray]]] = {}
        for job in jobs:
            try:
                run, grid = job.run, job.grid
                target = self.dataset.target(_s(job.ep["image_id"]), run.image_size, grid, job.view)
                masks = job.masks
            except UnknownImage as exc:
                job.error = PermanentError(str(exc))
                continue
            except Exception as exc:  # recorded per job
                job.error = exc
                continue
            key = (run.level, run.num_classes, run.metric, grid.model_dump_json(), masks.shape, target.shape)
            groups.setdefault(key, []).append((job, masks, target))
        for (level, num_classes, metric, grid, *_), items in groups.items():
            if len(items) > 1:
                try:
                    rewards, _ = scoring.score_episodes(np.stack([m for _, m, _ in items]),
                                                        np.stack([t for _, _, t in items]),
                                                        Grid.model_validate_json(grid), level, num_classes, metric)
                except Exception:  # scored again one by one below: the error (if any) is that episode's own
                    log.debug("a batch of %d episodes failed to score together; scoring each alone", len(items))
                else:
                    for (job, _, _), r in zip(items, rewards, strict=True):
                        self.set_rewards(job, r)
                    continue
            for job, masks, target in items:
                try:
                    self.set_rewards(job, scoring.score_masks(masks, target, job.grid, level, num_classes, metric)[0])
                except Exception as exc:
                    job.error = exc

    @staticmethod
    def set_rewards(job: Job, rewards) -> None:
        """An episode's scored rewards: (K,) at image level, (K, h, w) at pixel level."""
        if job.run.level == "pixel":
            job.maps = rewards.numpy().astype(np.float32)
        else:
            job.rewards = [float(r) for r in rewards.tolist()]

    async def score_http(self, job: Job) -> None:
        run = job.run
        request = ExternalScoreRequest(
            episode_id=job.episode_id, run_id=run.run_id, image_id=_s(job.ep["image_id"]), dataset=run.dataset,
            level=run.level, metric=run.metric, grid=job.grid, image_size=run.image_size,
            samples=[codec.raw_mask(m) for m in job.masks])
        try:
            # the run's own allowlist entries (`rss scorer up --run`) are read for every call: `rss scorer down`
            # removes them, and from then on the endpoint is refused
            run_allow = await self.store.run_endpoint_allow(run.run_id)
            response = await self.http.score(run.endpoint, request, run_allow)
        except Exception as exc:
            job.error = exc
            return
        job.scorer_version = response.scorer_version
        if run.level == "pixel":
            job.maps = np.stack([codec.decode_array(m) for m in response.reward_maps]).astype(np.float32)
        else:
            job.rewards = [float(r) for r in response.rewards]

    def dead_letter(self, job: Job, reason: str) -> Finish:
        """An error result per sample (v1) or for the episode (v2), a dead-letter entry, status failed."""
        log.error("episode %s dead-lettered after %d attempts: %s", job.episode_id, job.attempts, reason)
        letter = {"kind": "episode", "id": job.episode_id, "run_id": _s(job.ep["run_id"]), "reason": reason,
                  "attempts": job.attempts, "at": time.time()}
        return Finish(job.episode_id, _s(job.ep["run_id"]), self.entries(job, error=reason), self.samples(job),
                      "failed", reason, job.entry_id, letter, owner=job.owner)


async def run_worker(settings: Settings) -> None:
    """`rss worker`: one scoring process, until SIGTERM/SIGINT or its parent (`rss serve`) goes away."""
    import torch

    torch.set_num_threads(settings.torch_threads)
    dataset = await asyncio.to_thread(ServedDataset, settings)
    if settings.warm_labels:  # as the learner builds its split before training: first scores are not slow
        threading.Thread(target=dataset.warm, name="warm-labels", daemon=True).start()
    r = await connect(settings.redis_url, settings)
    blocking = await connect_blocking(settings)
    store = Store(r, settings)
    await ensure_group(r, keys.JOBS, keys.JOBS_GROUP)
    http = HttpScorer(settings)
    worker = Worker(store, blocking, dataset, http, HumanTasks(store, blocking, dataset))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()

    async def orphaned() -> None:  # `rss serve` killed outright: do not outlive it
        while not stop.is_set():
            if os.getppid() != parent:
                log.warning("parent process %d is gone; stopping", parent)
                stop.set()
            await asyncio.sleep(1.0)

    watcher = asyncio.create_task(orphaned())
    try:
        await worker.run(stop)
    finally:
        watcher.cancel()
        await http.aclose()
        await blocking.aclose()
        await r.aclose()
