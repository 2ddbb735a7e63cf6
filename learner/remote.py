"""`--reward-source remote`: rewards from the reward service, read back from its Redis stream.

Each step posts one episode per image (its K sampled masks, raw-encoded, with the PSR grid
and the policy version), then reads the run's results stream with the consumer group the
service created when the run registered. A result is applied at most once, keyed by
(episode id, sample index): a duplicate delivery is counted and ignored, a result of an
episode a step gave up on is counted as stale, and one of an episode this learner never
posted, or whose sampled actions a crash lost, as orphaned. Each evaluation is posted too (`report`), for the
service's operator page: a failed post is a warning, and training goes on.

Restart safety: an entry is acknowledged only once no checkpoint can need it again. The
checkpoint holds the batches posted and not yet applied (`state_dict`), so their results must
stay pending until the checkpoint holding their update is written (`checkpointed`); results of
a batch posted after the last checkpoint are acknowledged right after its update (a crash would
lose its actions anyway), and so are never delivered again. After `--resume`, the restored
batches wait for their results again, and entries the dead process had read but not
acknowledged are taken over with `XAUTOCLAIM` once idle for `--reclaim-idle-s`, then applied
once. Everything else the dead process counted after its checkpoint is counted again by the
resumed one, because it is delivered again: orphaned, duplicate and stale entries, and those of
batches dropped as too stale, stay pending until a checkpoint. The one exception is the results
an update applied after the checkpoint (acknowledged, and the update lost with the process):
the ledger line is written before the acknowledgement, so the resume finds them in the ledger
lines past the checkpoint, counts them orphaned, and records them in `lost.jsonl` (so a second
crash before the next checkpoint counts them again, once).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import redis
import torch

from learner.config import TrainArgs
from learner.report import policy_masks
from learner.rewards import Episodes, Rewards
from rss_core import codec, wire
from rss_core.data import PROCEDURAL, SegDataset
from rss_core.keys import RESULTS_GROUP
from rss_core.schemas import (
    GALLERY_IMAGES,
    GALLERY_SIDE,
    EpisodeBatchCreate,
    EpisodeBatchHeader,
    EpisodeCreate,
    EpisodeHeader,
    GalleryItemCreate,
    RunCreate,
    RunMetricsCreate,
    RunPublic,
)
from rss_core.views import from_tensor
from rss_core.wire import Sample

log = logging.getLogger(__name__)

TOKEN_ENV = "RSS_LEARNER_TOKEN"
BATCH = 256  # episodes per request: the service's default RSS_MAX_BATCH
RETRY_STATUS = {429, 502, 503, 504}  # refused for now (rate limit, restarting service or proxy): try again
METRICS_TIMEOUT_S = 5.0  # one try per evaluation: the next evaluation posts again, training never waits longer


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


def read_jsonl(path: Path) -> list[dict]:
    """The JSON lines of ``path`` (none when it does not exist)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


class RemoteError(ValueError):
    """The service is unreachable or refused the run's setup: a configuration to fix (CLI exit 2)."""


@dataclass
class Pending:
    """One step's posted episodes and the results that arrived for them so far."""

    ids: dict[str, int]  # episode id -> row of the batch
    shape: tuple[int, ...]  # (B, K, h, w)
    device: torch.device
    started: float
    step: int = 0  # the step that posted it (its policy version)
    got: dict[tuple[int, int], Sample] = field(default_factory=dict)
    acks: list[bytes] = field(default_factory=list)  # stream entries to acknowledge once applied

    @property
    def expected(self) -> int:
        return len(self.ids) * self.shape[1]

    @property
    def complete(self) -> bool:
        return len(self.got) >= self.expected

    def add(self, samples: list[Sample]) -> bool:
        """Record the samples of one entry; False when this (episode, sample) already had one (a redelivered
        entry: one entry's samples arrive together, so its first says it)."""
        key = (self.ids[samples[0].episode_id], samples[0].sample_index)
        if key in self.got:
            return False
        for sample in samples:
            self.got[(key[0], sample.sample_index)] = sample
        return True


class RemoteRewardSource:
    """Scores episodes through the reward service over HTTP; results come back through Redis."""

    def __init__(self, args: TrainArgs, dataset: SegDataset, token: str | None = None) -> None:
        token = token or os.environ.get(TOKEN_ENV)
        if not token:
            raise ValueError(f"--reward-source remote needs the learner token in ${TOKEN_ENV}")
        self.args, self.dataset, self.ids, self.level = args, dataset, list(dataset.ids), args.reward
        self.run_id = rank_run_id(args.run_id or Path(args.out).resolve().name)
        self.http = httpx.Client(base_url=args.service_url.rstrip("/"), timeout=30.0,
                                 headers={"Authorization": f"Bearer {token}"})
        # A blocking read waits up to 1 s: the socket timeout must outlast it (redis-py #3138).
        self.redis = redis.Redis.from_url(args.redis_url, socket_timeout=10.0, socket_connect_timeout=10.0)
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"
        self.counts: Counter[str] = Counter()
        self.latency: list[float] = []  # per step: first POST to last result read
        self.post_latency: list[float] = []  # per step: first POST to last 202
        self._to_ack: list[bytes] = []  # acknowledged at the next commit
        self._deferred: list[bytes] = []  # acknowledged once a checkpoint holds their update
        self._held: set[bytes] = set()  # entries this process read and has not acknowledged
        self.outstanding: dict[str, Pending] = {}  # episode id -> the step that waits for it
        self.given_up: set[str] = set()  # episodes a step stopped waiting for (--reward-timeout-s)
        self.applied_before: set[str] = set()  # resumed: episodes the checkpointed updates applied (the ledger)
        self.checkpoint_step = 0  # steps done at the last checkpoint: batches posted before it are in it
        self._reclaim_at: float | None = None  # next XAUTOCLAIM pass, while a resumed run may find entries
        rank = int(os.environ.get("RANK", "0"))
        # The ledger: one line per update, the episodes it applied (audits "applied exactly once").
        self.ledger = Path(args.out) / ("applied.jsonl" if rank == 0 else f"applied.rank{rank}.jsonl")
        self._applied: list[dict] = []  # ledger lines of the updates since the last commit
        # Results a lost update applied (and acknowledged), counted orphaned on resume: their redelivery is no news.
        self.lost_path = Path(args.out) / ("lost.jsonl" if rank == 0 else f"lost.rank{rank}.jsonl")
        self.lost: set[tuple[str, int]] = set()
        if not args.resume:
            self.ledger.unlink(missing_ok=True)
            self.lost_path.unlink(missing_ok=True)
        self.run = self._register(dataset)
        self.stream = self.run.results_stream

    def _register(self, dataset: SegDataset) -> RunPublic:
        body = RunCreate(run_id=self.run_id, dataset=self.args.dataset, level=self.level, scorer=self.args.scorer,
                         metric=self.args.metric, endpoint=self.args.endpoint or None,
                         task_kind=self.args.human_task if self.level == "image"
                         else "point" if self.args.points else "pixel",
                         image_size=None if self.args.dataset in PROCEDURAL or not self.args.image_size
                         else self.args.image_size,  # None: procedural, or a folder at its own sizes
                         dataset_fingerprint=dataset.fingerprint())
        try:
            response = self._send("/v1/runs", body.model_dump_json(), retry_transport=False)
        except httpx.TransportError as exc:
            raise RemoteError(f"reward service at {self.args.service_url} is not reachable: {exc}") from exc
        if response.status_code not in (200, 201):
            raise RemoteError(f"registering run {self.run_id!r} failed: {response.status_code} {response.text} "
                              f"(the learner's data: {dataset.describe()})")
        run = RunPublic.model_validate_json(response.content)
        if run.num_classes != dataset.num_classes:
            raise RemoteError(f"the service's dataset has {run.num_classes} classes, the learner's "
                              f"{dataset.num_classes}: they do not serve the same data")
        log.info("run %s registered with the reward service (%s scorer); results in %s",
                 self.run_id, run.scorer, run.results_stream)
        return run

    def _send(self, path: str, content: str | bytes, retry_transport: bool = True, key: str | None = None,
              media_type: str = "application/json") -> httpx.Response:
        """POST ``content``; a 429 (after its Retry-After), a 502/503/504 or, with ``retry_transport``,
        a lost connection is tried again with backoff for up to --service-retry-s.

        A refused request wrote nothing. A connection lost (or a proxy's 502) after the service
        accepted a batch makes the retry post it again: with the same Idempotency-Key ``key`` on
        every try, the service answers it with the first answer (the same ids) and stores nothing
        twice."""
        deadline, backoff = time.monotonic() + self.args.service_retry_s, 0.5
        headers = {"content-type": media_type, **({"Idempotency-Key": key} if key else {})}
        while True:
            try:
                response = self.http.post(path, content=content, headers=headers)
                if response.status_code not in RETRY_STATUS:
                    return response
                wait, why = backoff, f"{response.status_code} {response.text[:200]}"
                if response.status_code == 429:
                    wait = float(response.headers.get("retry-after", backoff))
            except httpx.TransportError as exc:
                if not retry_transport:
                    raise
                wait, why = backoff, f"{type(exc).__name__}: {exc}"
            if time.monotonic() + wait > deadline:
                raise RemoteError(f"POST {path} still failing after --service-retry-s "
                                  f"{self.args.service_retry_s:g} s: {why}")
            self.counts["post_retries"] += 1
            log.warning("POST %s: %s; again in %.1f s", path, why, wait)
            time.sleep(wait)
            backoff = min(backoff * 2, 5.0)

    def _post(self, bodies: list[EpisodeCreate] | list[EpisodeHeader], actions: np.ndarray) -> list[str]:
        """One request per step (chunks of BATCH): per-request overhead dominates small episodes. v2 sends the
        (B, K, h, w) ``actions`` as the body's bytes after a JSON header (`rss_core.wire`); v1 ``bodies`` carry
        them as base64 masks."""
        ids = []
        for start in range(0, len(bodies), BATCH):
            chunk = bodies[start:start + BATCH]
            if self.args.wire == "v2":
                path, media = "/v2/episodes/batch", wire.MEDIA_TYPE
                content: str | bytes = wire.encode_batch(EpisodeBatchHeader(episodes=chunk),
                                                         actions[start:start + BATCH])
            else:
                path, media = "/v1/episodes/batch", "application/json"
                content = EpisodeBatchCreate(episodes=chunk).model_dump_json()
            response = self._send(path, content, key=uuid.uuid4().hex, media_type=media)
            if response.status_code != 202:
                raise RemoteError(f"episodes refused: {response.status_code} {response.text[:500]}")
            ids += [e["episode_id"] for e in response.json()["episodes"]]
        return ids

    def post(self, episodes: Episodes) -> Pending:
        """Send a step's episodes; their results are collected later (`collect`), in any order."""
        actions = np.ascontiguousarray(episodes.actions.to(torch.uint8).cpu().numpy())  # (B, K, h, w)
        grid = episodes.grid
        # Point verification: the (y, x) cells of each image asked about (pixels the episode's query marks).
        points = ([torch.nonzero(q).tolist() for q in episodes.query.cpu()] if episodes.query is not None
                  else [None] * len(actions))
        common = {"run_id": self.run_id, "level": self.level, "scale": grid.scale, "grid_mode": grid.mode,
                  "offset": grid.offset, "policy_version": self.policy_version}
        # --crop-size: the view each mask was sampled on, which the service's ground truth applies to its label too
        views = ([from_tensor(v) for v in episodes.views.cpu()] if episodes.views is not None
                 else [None] * len(actions))
        if self.args.wire == "v2":
            bodies: list = [
                EpisodeHeader(image_id=self.ids[int(i)], samples=actions.shape[1], mask_shape=actions.shape[2:],
                              points=[tuple(p) for p in points[b]] if points[b] is not None else None, view=views[b],
                              **common)
                for b, i in enumerate(episodes.indices.tolist())]
        else:
            bodies = [
                EpisodeCreate(image_id=self.ids[int(i)], samples=[codec.raw_mask(m) for m in actions[b]],
                              points=[tuple(p) for p in points[b]] if points[b] is not None else None, view=views[b],
                              **common)
                for b, i in enumerate(episodes.indices.tolist())]
        started = time.perf_counter()
        episode_ids = self._post(bodies, actions)
        self.post_latency.append(time.perf_counter() - started)
        self.counts["posted"] += actions.size // (actions.shape[2] * actions.shape[3])
        pending = Pending({e: b for b, e in enumerate(episode_ids)}, actions.shape, episodes.actions.device, started,
                          self.policy_version)
        for episode_id in episode_ids:
            self.outstanding[episode_id] = pending
        return pending

    def collect(self, pending: Pending, apply: bool = True) -> Rewards:
        """Block until every reward of ``pending`` arrived (or --reward-timeout-s ran out).

        ``apply=False``: the caller drops them (too stale); they are counted as such, not as applied."""
        deadline = time.monotonic() + self.args.reward_timeout_s
        while not pending.complete and time.monotonic() < deadline:
            if self._reclaim_at is not None and time.monotonic() >= self._reclaim_at:
                self._reclaim()
                if pending.complete:
                    break
            try:
                read = self.redis.xreadgroup(RESULTS_GROUP, self.consumer, {self.stream: ">"}, count=1024,
                                             block=1000)
            except (redis.ConnectionError, redis.TimeoutError) as exc:  # Redis restarting: its AOF keeps the PEL
                self.counts["redis_errors"] += 1
                log.warning("reading results: %s; trying again", exc)
                time.sleep(1.0)
                continue
            for _, entries in read or []:
                for entry_id, fields in entries:
                    self._route(entry_id, fields)
        for episode_id in pending.ids:
            self.outstanding.pop(episode_id, None)
        # A checkpoint written after this batch was posted holds it: its results stay pending
        # until the checkpoint holding its update exists (a crash before then re-applies them).
        # A batch dropped as too stale writes no ledger line: its entries wait for a checkpoint
        # too, so a resumed process that lost the drop's count sees (and counts) them again.
        deferred = pending.step < self.checkpoint_step or not apply
        (self._deferred if deferred else self._to_ack).extend(pending.acks)
        missing = pending.expected - len(pending.got)
        if missing:
            self.counts["late"] += missing
            self.given_up.update(e for e, b in pending.ids.items()
                                 if any((b, j) not in pending.got for j in range(pending.shape[1])))
            log.warning("%d of %d rewards did not arrive within %g s; their images are left out of this step",
                        missing, pending.expected, self.args.reward_timeout_s)
        self.latency.append(time.perf_counter() - pending.started)
        rewards = self._rewards(pending.got, pending.shape, pending.device)
        kept = int(rewards.keep.sum()) * pending.shape[1]
        self.counts["applied" if apply else "dropped_stale"] += kept
        if apply:
            rows = rewards.keep.tolist()
            line: dict = {"posted_step": pending.step, "episodes": [e for e, b in pending.ids.items() if rows[b]],
                          "samples": pending.shape[1]}
            partial: dict[str, list[int]] = {}  # rows left out (failed or late): the samples that did arrive
            episode_of = {b: e for e, b in pending.ids.items()}
            for (b, j) in sorted(pending.got):
                if not rows[b]:
                    partial.setdefault(episode_of[b], []).append(j)
            if partial:
                line["partial"] = partial
            self._applied.append(line)
        return rewards

    def score(self, episodes: Episodes) -> Rewards:
        return self.collect(self.post(episodes))

    def _route(self, entry_id: bytes, fields: dict) -> None:
        """File one delivered entry (one sample of v1, a whole episode of v2) under the step waiting for it, or
        count why it is not applied (counts are of samples, whichever form)."""
        if entry_id in self._held:
            return  # ours already, handed back by XAUTOCLAIM: still waiting for its update or checkpoint
        self._held.add(entry_id)
        samples = wire.samples_of(fields)
        if not samples:  # an episode of no samples: nothing to apply
            self._to_ack.append(entry_id)
            return
        episode_id = samples[0].episode_id
        if (episode_id, samples[0].sample_index) in self.lost:
            # a lost update applied it and the crash came before its ack: counted orphaned on resume
            self._to_ack.append(entry_id)
            return
        owner = self.outstanding.get(episode_id)
        if owner is None:  # no step waits for it: applied before a restart, given up on, or its actions lost
            if episode_id in self.applied_before:
                self.counts["duplicates"] += len(samples)  # a checkpointed update applied it; crash before the ack
            else:
                self.counts["stale" if episode_id in self.given_up else "orphaned"] += len(samples)
            # acknowledged at the next checkpoint: a crash before it rolls this count back, and the
            # resumed process, seeing the entry again, counts it again
            self._deferred.append(entry_id)
        elif not owner.add(samples):
            self.counts["duplicates"] += len(samples)
            self._deferred.append(entry_id)
        else:  # acknowledged with its batch, after the update that applies it
            owner.acks.append(entry_id)

    def _reclaim(self) -> None:
        """Take over entries a dead learner read and never acknowledged (XAUTOCLAIM past an idle time).

        Runs after a resume until no other consumer of the group holds entries."""
        idle_ms = int(self.args.reclaim_idle_s * 1000)
        cursor = "0-0"
        while True:
            reply = self.redis.xautoclaim(self.stream, RESULTS_GROUP, self.consumer, idle_ms, cursor, count=1024)
            cursor, entries = reply[0], reply[1]
            for entry_id, fields in entries:
                if fields is None:  # trimmed away (Redis 6.2 still lists it): nothing to apply
                    self._to_ack.append(entry_id)
                    continue
                if entry_id not in self._held:
                    self.counts["reclaimed"] += 1
                self._route(entry_id, fields)
            if cursor in (b"0-0", "0-0"):
                break
        others = [c for c in self.redis.xinfo_consumers(self.stream, RESULTS_GROUP)
                  if c["name"] != self.consumer.encode() and c["name"] != self.consumer]
        for consumer in others:
            if not consumer["pending"]:
                self.redis.xgroup_delconsumer(self.stream, RESULTS_GROUP, consumer["name"])
        busy = any(c["pending"] for c in others)
        self._reclaim_at = time.monotonic() + max(self.args.reclaim_idle_s / 2, 0.5) if busy else None

    def _rewards(self, got: dict[tuple[int, int], Sample], shape: tuple[int, ...], device: torch.device) -> Rewards:
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
                maps[i, j] = r.reward_map
        maps_t = torch.from_numpy(maps)
        valid = ~torch.isnan(maps_t[:, 0]) & keep_t.cpu().view(-1, 1, 1)
        return Rewards(pixel=torch.nan_to_num(maps_t).to(device), valid=valid.to(device), keep=keep_t)

    def commit(self, step: int) -> None:
        """Record what the update of ``step`` applied, and acknowledge it unless a checkpoint may need it."""
        if self._applied:  # written before the acknowledgement: a resume finds what a lost update applied
            with self.ledger.open("a") as f:
                for line in self._applied:
                    f.write(json.dumps({"step": step, **line}) + "\n")
            self._applied = []
        self._ack(self._to_ack)
        self._to_ack = []

    def checkpointed(self, step: int) -> None:
        """A checkpoint of ``step`` steps was written: what its updates applied is safe to acknowledge."""
        self.checkpoint_step = step
        self._ack(self._deferred + self._to_ack)
        self._deferred, self._to_ack = [], []

    def _ack(self, entries: list[bytes]) -> None:
        for start in range(0, len(entries), 10_000):
            chunk = entries[start:start + 10_000]
            deadline = time.monotonic() + self.args.service_retry_s
            while True:
                try:
                    self.redis.xack(self.stream, RESULTS_GROUP, *chunk)
                    break
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    if time.monotonic() > deadline:
                        raise RemoteError(f"Redis unreachable for --service-retry-s: {exc}") from exc
                    self.counts["redis_errors"] += 1
                    log.warning("acknowledging results: %s; trying again", exc)
                    time.sleep(1.0)
            self._held.difference_update(chunk)

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the source: its counts (batches in flight are the pipeline's)."""
        return {"counts": dict(self.counts)}

    def load_state_dict(self, state: dict, step: int) -> None:
        """Resume at ``step``: counts as checkpointed; the ledger loses the updates the checkpoint lost."""
        self.counts.update(state["counts"])
        self.checkpoint_step = step
        lost = read_jsonl(self.lost_path)
        if self.ledger.exists():
            lines = read_jsonl(self.ledger)
            kept = [entry for entry in lines if entry["step"] < step]
            # Past the checkpoint: a batch posted before it is restored and applied again; one posted
            # after it was applied by an update the crash lost, and its results were acknowledged.
            lost += self._record_lost(
                [entry for entry in lines if entry["step"] >= step and entry["posted_step"] >= step], step, lost)
            tmp = self.ledger.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(entry) + "\n" for entry in kept))
            tmp.replace(self.ledger)
            self.applied_before = {episode for entry in kept for episode in entry["episodes"]}
        self._load_lost(lost, step)
        self._reclaim_at = time.monotonic()  # look for the dead process's entries at the first wait

    def _record_lost(self, entries: list[dict], step: int, recorded: list[dict]) -> list[dict]:
        """Append the ledger lines of updates lost with the process to ``lost.jsonl``, each once (``recorded``:
        what it holds already); returns the lines appended."""
        known = {(line["checkpoint"], line["posted_step"]) for line in recorded}
        new = [{"checkpoint": step, **entry} for entry in entries if (step, entry["posted_step"]) not in known]
        if new:
            with self.lost_path.open("a") as f:
                f.write("".join(json.dumps(line) + "\n" for line in new))
                f.flush()
                os.fsync(f.fileno())
        return new

    def _load_lost(self, lines: list[dict], step: int) -> None:
        """Count what lost updates applied as orphaned, unless the checkpoint's counts already hold it.

        Lines recorded at a resume from an earlier checkpoint were counted then and saved in every
        checkpoint since; lines recorded at this checkpoint (now, or at a resume whose process also
        died before its next checkpoint) are not in its counts."""
        for line in {(ln["checkpoint"], ln["posted_step"]): ln for ln in lines}.values():
            k = line.get("samples", self.args.resolved_samples())  # ledgers written before 'samples' existed
            samples = [(e, j) for e in line["episodes"] for j in range(k)]
            samples += [(e, j) for e, got in line.get("partial", {}).items() for j in got]
            self.lost.update(samples)
            if line["checkpoint"] == step:
                self.counts["orphaned"] += len(samples)

    def restore(self, episode_ids: list[str], shape: tuple[int, ...], device: torch.device, step: int) -> Pending:
        """Wait again for a batch a checkpoint recorded as posted and not applied."""
        pending = Pending({e: b for b, e in enumerate(episode_ids)}, shape, device, time.perf_counter(), step)
        for episode_id in episode_ids:
            self.outstanding[episode_id] = pending
        return pending

    def report(self, summary: dict, model: torch.nn.Module) -> None:
        """Post one evaluation to the service (`POST /v1/runs/{id}/metrics`), the operator page's curve and gallery:
        its finite numbers, per-class IoUs, and the policy's argmax and one sampled mask on the first training
        images (which the service serves). One try; a failure is a warning, never the end of training."""
        path = f"/v1/runs/{self.run_id}/metrics"
        try:
            body = RunMetricsCreate(
                step=summary["step"], per_class_iou=summary.get("per_class_iou"), gallery=self._gallery(model),
                metrics={k: float(v) for k, v in summary.items() if k not in ("step", "per_class_iou")
                         and isinstance(v, int | float) and np.isfinite(v)})  # NaN: not computed at this step
            response = self.http.post(path, content=body.model_dump_json(), timeout=METRICS_TIMEOUT_S,
                                      headers={"content-type": "application/json"})
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("POST %s failed (%s: %s); training goes on, the next evaluation posts again", path,
                        type(exc).__name__, exc)
            return
        if response.status_code != 200:
            log.warning("POST %s refused: %d %s; training goes on", path, response.status_code, response.text[:300])

    def _gallery(self, model: torch.nn.Module) -> list[GalleryItemCreate]:
        """The policy's masks on the first GALLERY_IMAGES training images, every ``stride``-th pixel of an image
        over GALLERY_SIDE (a picture for the page, not a measurement)."""
        device = next(model.parameters()).device
        items = []
        for index, (_, _, sampled, argmax) in enumerate(policy_masks(model, self.dataset, device, GALLERY_IMAGES)):
            stride = -(-max(argmax.shape) // GALLERY_SIDE)
            argmax, sampled = (m[::stride, ::stride].to(torch.uint8).numpy() for m in (argmax, sampled))
            items.append(GalleryItemCreate(image_id=self.ids[index], shape=argmax.shape,
                                           argmax=codec.png_mask(argmax), sampled=codec.png_mask(sampled)))
        return items

    policy_version = 0

    def stats(self) -> dict[str, float]:
        """Counts so far, and the median of the last 100 steps' post and reward latencies."""
        def median_ms(values: list[float]) -> float:
            recent = sorted(values[-100:])
            return round(1000 * recent[len(recent) // 2], 1) if recent else 0.0

        return {**self.counts, "inflight": len(self.outstanding), "post_ms": median_ms(self.post_latency),
                "reward_latency_ms": median_ms(self.latency)}

    def close(self) -> None:
        self.http.close()
        self.redis.close()
