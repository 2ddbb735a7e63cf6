"""`--reward-source remote`: rewards from the reward service, read back from its Redis stream.

Each step posts one episode per image (its K sampled masks, raw-encoded, with the PSR grid
and the policy version), then reads the run's results stream with the consumer group the
service created when the run registered. A result is applied at most once, keyed by
(episode id, sample index): a duplicate delivery is counted and ignored, a result of an
episode this step is not waiting for (a step that gave up on it) is counted as stale. Entries
are acknowledged only after the optimizer step that used them (`commit`), so a learner killed
in between finds them pending again.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import redis
import torch

from learner.config import TrainArgs
from learner.data import SegDataset
from learner.rewards import Episodes, Rewards
from reward_service import codec
from reward_service.keys import RESULTS_GROUP
from reward_service.schemas import ArrayB64, EpisodeBatchCreate, EpisodeCreate, Result, RunCreate, RunPublic

log = logging.getLogger(__name__)

TOKEN_ENV = "RSS_LEARNER_TOKEN"
BATCH = 256  # episodes per request: the service's default RSS_MAX_BATCH


def rank_run_id(run_id: str) -> str:
    """Under torchrun with several ranks, each rank is a run of its own at the service: ``<run_id>-rank<r>``.

    The service gives a run one results stream read by one consumer group, and a group hands each
    entry to one consumer only: ranks sharing a run would receive each other's results (counted
    stale there, and late where they were awaited). Own runs give each rank its own stream and
    group with no change to the service, and a restarted rank (same RANK) finds its pending entries.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"{run_id}-rank{int(os.environ.get('RANK', '0'))}"
    return run_id


class RemoteError(ValueError):
    """The service is unreachable or refused the run's setup: a configuration to fix (CLI exit 2)."""


@dataclass
class Pending:
    """One step's posted episodes and the results that arrived for them so far."""

    ids: dict[str, int]  # episode id -> row of the batch
    shape: tuple[int, ...]  # (B, K, h, w)
    device: torch.device
    started: float
    got: dict[tuple[int, int], Result] = field(default_factory=dict)
    acks: list[bytes] = field(default_factory=list)  # stream entries to acknowledge once applied

    @property
    def expected(self) -> int:
        return len(self.ids) * self.shape[1]

    @property
    def complete(self) -> bool:
        return len(self.got) >= self.expected

    def add(self, result: Result) -> bool:
        """Record ``result``; False when this (episode, sample) already had one."""
        key = (self.ids[result.episode_id], result.sample_index)
        if key in self.got:
            return False
        self.got[key] = result
        return True


class RemoteRewardSource:
    """Scores episodes through the reward service over HTTP; results come back through Redis."""

    def __init__(self, args: TrainArgs, dataset: SegDataset, token: str | None = None) -> None:
        token = token or os.environ.get(TOKEN_ENV)
        if not token:
            raise ValueError(f"--reward-source remote needs the learner token in ${TOKEN_ENV}")
        self.args, self.ids, self.level = args, list(dataset.ids), args.reward
        self.run_id = rank_run_id(args.run_id or Path(args.out).resolve().name)
        self.http = httpx.Client(base_url=args.service_url.rstrip("/"), timeout=30.0,
                                 headers={"Authorization": f"Bearer {token}"})
        # A blocking read waits up to 1 s: the socket timeout must outlast it (redis-py #3138).
        self.redis = redis.Redis.from_url(args.redis_url, socket_timeout=10.0, socket_connect_timeout=10.0)
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"
        self.counts: Counter[str] = Counter()
        self.latency: list[float] = []  # per step: first POST to last result read
        self.post_latency: list[float] = []  # per step: first POST to last 202
        self._to_ack: list[bytes] = []
        self.outstanding: dict[str, Pending] = {}  # episode id -> the step that waits for it
        self.run = self._register(dataset)
        self.stream = self.run.results_stream

    def _register(self, dataset: SegDataset) -> RunPublic:
        body = RunCreate(run_id=self.run_id, dataset=self.args.dataset, level=self.level, scorer=self.args.scorer,
                         metric=self.args.metric, endpoint=self.args.endpoint or None,
                         task_kind=self.args.human_task if self.level == "image" else "pixel",
                         image_size=None if self.args.dataset == "shapes" else self.args.image_size)
        try:
            response = self.http.post("/v1/runs", content=body.model_dump_json(),
                                      headers={"content-type": "application/json"})
        except httpx.TransportError as exc:
            raise RemoteError(f"reward service at {self.args.service_url} is not reachable: {exc}") from exc
        if response.status_code not in (200, 201):
            raise RemoteError(f"registering run {self.run_id!r} failed: {response.status_code} {response.text}")
        run = RunPublic.model_validate_json(response.content)
        if run.num_classes != dataset.num_classes:
            raise RemoteError(f"the service's dataset has {run.num_classes} classes, the learner's "
                              f"{dataset.num_classes}: they do not serve the same data")
        log.info("run %s registered with the reward service (%s scorer); results in %s",
                 self.run_id, run.scorer, run.results_stream)
        return run

    def _post(self, bodies: list[EpisodeCreate]) -> list[str]:
        """One request per step (chunks of BATCH): per-request overhead dominates small episodes."""
        ids = []
        for start in range(0, len(bodies), BATCH):
            batch = EpisodeBatchCreate(episodes=bodies[start:start + BATCH])
            response = self.http.post("/v1/episodes/batch", content=batch.model_dump_json(),
                                      headers={"content-type": "application/json"})
            if response.status_code != 202:
                raise RemoteError(f"episodes refused: {response.status_code} {response.text[:500]}")
            ids += [e["episode_id"] for e in response.json()["episodes"]]
        return ids

    def post(self, episodes: Episodes) -> Pending:
        """Send a step's episodes; their results are collected later (`collect`), in any order."""
        actions = episodes.actions.to(torch.uint8).cpu().numpy()  # (B, K, h, w)
        grid = episodes.grid
        bodies = [
            EpisodeCreate(run_id=self.run_id, image_id=self.ids[int(i)], level=self.level, scale=grid.scale,
                          grid_mode=grid.mode, offset=grid.offset, policy_version=self.policy_version,
                          samples=[codec.raw_mask(m) for m in actions[b]])
            for b, i in enumerate(episodes.indices.tolist())
        ]
        started = time.perf_counter()
        episode_ids = self._post(bodies)
        self.post_latency.append(time.perf_counter() - started)
        self.counts["posted"] += actions.size // (actions.shape[2] * actions.shape[3])
        pending = Pending({e: b for b, e in enumerate(episode_ids)}, actions.shape, episodes.indices.device, started)
        for episode_id in episode_ids:
            self.outstanding[episode_id] = pending
        return pending

    def collect(self, pending: Pending, apply: bool = True) -> Rewards:
        """Block until every reward of ``pending`` arrived (or --reward-timeout-s ran out).

        ``apply=False``: the caller drops them (too stale); they are counted as such, not as applied."""
        deadline = time.monotonic() + self.args.reward_timeout_s
        while not pending.complete and time.monotonic() < deadline:
            read = self.redis.xreadgroup(RESULTS_GROUP, self.consumer, {self.stream: ">"}, count=1024, block=1000)
            for _, entries in read or []:
                for entry_id, fields in entries:
                    result = Result.model_validate_json(fields[b"payload"])
                    owner = self.outstanding.get(result.episode_id)
                    if owner is None:
                        self.counts["stale"] += 1  # of an episode no step waits for (given up, or before a restart)
                        self._to_ack.append(entry_id)
                    elif not owner.add(result):
                        self.counts["duplicates"] += 1
                        self._to_ack.append(entry_id)
                    else:  # acknowledged with its batch, after the update that applies it
                        owner.acks.append(entry_id)
        for episode_id in pending.ids:
            self.outstanding.pop(episode_id, None)
        self._to_ack += pending.acks
        missing = pending.expected - len(pending.got)
        if missing:
            self.counts["late"] += missing
            log.warning("%d of %d rewards did not arrive within %g s; their images are left out of this step",
                        missing, pending.expected, self.args.reward_timeout_s)
        self.latency.append(time.perf_counter() - pending.started)
        rewards = self._rewards(pending.got, pending.shape, pending.device)
        kept = int(rewards.keep.sum()) * pending.shape[1]
        self.counts["applied" if apply else "dropped_stale"] += kept
        return rewards

    def score(self, episodes: Episodes) -> Rewards:
        return self.collect(self.post(episodes))

    def _rewards(self, got: dict[tuple[int, int], Result], shape: tuple[int, ...], device: torch.device) -> Rewards:
        b, k = shape[:2]
        keep = np.ones(b, bool)
        for i in range(b):
            cell = [got.get((i, j)) for j in range(k)]
            if any(r is None or r.error for r in cell):
                keep[i] = False
                self.counts["failed"] += sum(1 for r in cell if r is not None and r.error)
        keep_t = torch.from_numpy(keep).to(device)
        if self.level == "image":
            image = np.zeros((b, k), np.float32)
            for (i, j), r in got.items():
                if keep[i]:
                    image[i, j] = r.reward
            return Rewards(image=torch.from_numpy(image).to(device), keep=keep_t)
        maps = np.zeros((b, k, *shape[2:]), np.float32)
        for (i, j), r in got.items():
            if keep[i]:
                maps[i, j] = codec.decode_array(ArrayB64.model_validate(r.reward_map))
        maps_t = torch.from_numpy(maps)
        valid = ~torch.isnan(maps_t[:, 0]) & keep_t.cpu().view(-1, 1, 1)
        return Rewards(pixel=torch.nan_to_num(maps_t).to(device), valid=valid.to(device), keep=keep_t)

    def commit(self) -> None:
        """Acknowledge what the last collected batch applied (call after its optimizer step)."""
        if self._to_ack:
            self.redis.xack(self.stream, RESULTS_GROUP, *self._to_ack)
            self._to_ack = []

    policy_version = 0

    def stats(self) -> dict[str, float]:
        """Counts so far, and the median of the last 100 steps' post and reward latencies."""
        def median_ms(values: list[float]) -> float:
            recent = sorted(values[-100:])
            return round(1000 * recent[len(recent) // 2], 1) if recent else 0.0

        return {**self.counts, "post_ms": median_ms(self.post_latency), "reward_latency_ms": median_ms(self.latency)}

    def close(self) -> None:
        self.http.close()
        self.redis.close()
