"""Learner-shaped reward traffic for `rss bench service`: v1 against v2, CPU per mask, open-loop latency.

A learner's step with the measured-best image-level configuration is 16 episodes of K = 32 masks
on a 32 x 32 PSR lattice: 512 masks of 1,024 pixels in one request. This module builds such
steps (the shapes labels at the lattice, a fraction of each mask's cells flipped to a random
class, the in-process rewards kept to check the service's), posts them through v1 (JSON, base64
masks, one results entry per sample) and v2 (`rss_core.wire`: one binary body, one entry per
episode), and reads the results as the learner does (consumer group, XACK). Around each phase
it reads the service's processes' own CPU counters (HTTP process, scoring worker, redis-server),
so the cost per mask is the service's CPU, not wall time on a shared machine.

The open-loop phase posts v2 steps at a fixed arrival rate (half the measured v2 capacity)
whether or not earlier ones were answered, so its p50/p99 is the latency a learner meets at
that load, not the queueing a saturating closed loop measures. Last, a synthetic learner posts
steps and applies their rewards as `rss train --max-inflight N` does (N = 0 and 2), with no model:
the steps/s the service would give a learner whose GPU step costs nothing.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

SIZE, SCALE, SAMPLES, PER_POST = 64, 32, 32, 16


class TrafficError(RuntimeError):
    """The traffic could not be measured (the message says why)."""


@dataclass
class Step:
    """One learner-shaped request, pre-encoded both ways, and its in-process rewards."""

    image_ids: list[str]
    masks: np.ndarray  # (B, K, s, s) uint8
    rewards: np.ndarray  # (B, K) float: what the service must answer
    v1: bytes = b""
    v2: bytes = b""


def build_steps(run_id: str, count: int, *, size: int = SIZE, scale: int = SCALE, samples: int = SAMPLES,
                per_post: int = PER_POST, images: int = 64, flip: float = 0.2, seed: int = 0) -> list[Step]:
    """``count`` distinct learner-shaped steps over the first ``images`` shapes train ids (labels from the
    service's own `ServedDataset`, on the lattice the service scores)."""
    import torch

    from reward_service.core.config import Settings
    from reward_service.datasets import ServedDataset
    from rss_core import codec, scoring, wire
    from rss_core.grid import ActionGrid
    from rss_core.schemas import EpisodeBatchCreate, EpisodeBatchHeader, EpisodeCreate, EpisodeHeader, Grid

    torch.set_num_threads(1)
    settings = Settings(_env_file=None, dataset="shapes", split="train", shapes_size=size, shapes_length=None,
                        num_classes=None, seed=0, learner_tokens=[], rater_tokens={})
    dataset = ServedDataset(settings)
    grid = Grid(scale=scale)
    targets = {i: dataset.target(f"train/{i:06d}", None, grid) for i in range(images)}
    rng = np.random.default_rng(seed)
    steps = []
    for _ in range(count):
        picks = rng.integers(0, images, per_post)
        masks = np.stack([np.repeat(targets[int(i)][None], samples, axis=0) for i in picks])
        flipped = rng.random(masks.shape) < flip
        masks[flipped] = rng.integers(0, dataset.num_classes, int(flipped.sum()), dtype=np.uint8)
        rewards = np.stack([scoring.score_masks(m, targets[int(i)], ActionGrid(scale), "image", dataset.num_classes,
                                                "miou")[0].numpy() for m, i in zip(masks, picks, strict=True)])
        ids = [f"train/{int(i):06d}" for i in picks]
        common = {"run_id": run_id, "level": "image", "scale": scale, "policy_version": 0}
        v1 = EpisodeBatchCreate(episodes=[EpisodeCreate(image_id=i, samples=[codec.raw_mask(x) for x in m], **common)
                                          for i, m in zip(ids, masks, strict=True)]).model_dump_json().encode()
        header = EpisodeBatchHeader(episodes=[EpisodeHeader(image_id=i, samples=samples, mask_shape=(scale, scale),
                                                            **common) for i in ids])
        steps.append(Step(ids, masks, rewards, v1, wire.encode_batch(header, masks)))
    return steps


@dataclass
class Outcome:
    seconds: float
    masks: int
    latencies_ms: list[float] = field(default_factory=list)


async def drive(posters: asyncio.Future, reader: asyncio.Task, timeout: float) -> bool:
    """Await ``posters``, then ``reader`` for up to ``timeout`` s more; the first failure of either is raised, and
    both are cancelled on the way out. False when the reader had not finished in time."""
    try:
        await asyncio.wait({posters, reader}, return_when=asyncio.FIRST_EXCEPTION)
        for task in (posters, reader):
            if task.done() and task.exception() is not None:
                raise task.exception()
        await posters
        try:
            await asyncio.wait_for(reader, timeout)
        except asyncio.TimeoutError:
            return False
        return True
    finally:
        posters.cancel()
        reader.cancel()
        await asyncio.gather(posters, reader, return_exceptions=True)


async def post_and_read(url: str, token: str, redis_url: str, run_id: str, steps: list[Step], wire: str, posts: int,
                        clients: int, timeout: float, rate: float | None = None) -> Outcome:
    """POST ``posts`` steps (cycling ``steps``) through ``wire`` and read every result, checking each reward.

    Closed loop (``rate`` None): ``clients`` posters, each sending its next step once the last was answered.
    Open loop: one step every 1/``rate`` s, each on its own, answered or not."""
    import httpx
    import redis.asyncio as aioredis
    from tqdm import tqdm

    from rss_core import keys
    from rss_core.wire import samples_of

    per_post, k = steps[0].masks.shape[:2]
    expected = posts * per_post * k
    path, media = ("/v2/episodes/batch", "application/octet-stream") if wire == "v2" else (
        "/v1/episodes/batch", "application/json")
    stream = keys.results(run_id)
    where: dict[str, tuple[int, int]] = {}  # episode id -> (step, row)
    got: dict[tuple[str, int], float] = {}
    latencies: list[float] = []
    state = {"next": 0, "last_read": 0.0}
    limits = httpx.Limits(max_connections=max(clients, 64), max_keepalive_connections=max(clients, 64))
    r = aioredis.Redis.from_url(redis_url, socket_timeout=30)
    bar = tqdm(total=expected, desc=f"{wire}{' open loop' if rate else ''}", unit="mask", mininterval=0.5,
               file=sys.stderr)

    async def one(http: httpx.AsyncClient, i: int) -> None:
        s = i % len(steps)
        started = time.perf_counter()
        try:
            response = await http.post(path, content=getattr(steps[s], wire), headers={"content-type": media})
        except httpx.HTTPError as exc:
            raise TrafficError(f"POST {path} failed: {type(exc).__name__}: {exc}") from exc
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status_code != 202:
            raise TrafficError(f"POST {path} answered {response.status_code}: {response.text[:300]}")
        for row, e in enumerate(response.json()["episodes"]):
            where[e["episode_id"]] = (s, row)

    async def closed(http: httpx.AsyncClient) -> None:
        while state["next"] < posts:
            state["next"] += 1
            await one(http, state["next"] - 1)

    async def opened(http: httpx.AsyncClient) -> None:
        start, tasks = time.perf_counter(), []
        for i in range(posts):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(http, i)))
        await asyncio.gather(*tasks)

    async def read() -> None:
        while len(got) < expected:
            reply = await r.xreadgroup(keys.RESULTS_GROUP, "bench", {stream: ">"}, count=1024, block=100)
            for _, entries in reply or []:
                before = len(got)
                for _, fields in entries:
                    for sample in samples_of(fields):
                        if sample.error:
                            raise TrafficError(f"error result for episode {sample.episode_id}: {sample.error}")
                        got[(sample.episode_id, sample.sample_index)] = sample.reward
                if entries:
                    await r.xack(stream, keys.RESULTS_GROUP, *[entry_id for entry_id, _ in entries])
                    state["last_read"] = time.perf_counter()
                    bar.update(len(got) - before)

    try:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60.0,
                                     limits=limits) as http:
            reader = asyncio.create_task(read())
            started = time.perf_counter()
            posters = asyncio.ensure_future(opened(http) if rate else asyncio.gather(
                *(closed(http) for _ in range(clients))))
            if not await drive(posters, reader, timeout):
                raise TrafficError(f"only {len(got)} of {expected} results within {timeout:g} s")
    finally:
        bar.close()
        await r.aclose()
    for (episode_id, j), reward in got.items():
        s, row = where[episode_id]
        want = float(steps[s].rewards[row, j])
        if not math.isclose(reward, want, rel_tol=0, abs_tol=1e-6):
            raise TrafficError(f"{wire}: episode {episode_id} sample {j}: reward {reward} is not the in-process {want}")
    return Outcome(state["last_read"] - started, expected, latencies)


async def synthetic_learner(url: str, token: str, redis_url: str, run_id: str, steps: list[Step], posts: int,
                            inflight: int, timeout: float) -> dict:
    """A learner without a model: post a pre-sampled step through v2, and before posting past ``inflight``
    unapplied steps read results until the oldest one's rewards are all in (``--max-inflight``'s rule; 0: every
    step waits for its own), counting each (episode, sample) once and acknowledging it, as `learner/remote.py`
    does. What the service would give a learner whose forward and backward pass cost nothing."""
    import httpx
    import redis.asyncio as aioredis

    from rss_core import keys
    from rss_core.wire import samples_of

    per_post, k = steps[0].masks.shape[:2]
    stream = keys.results(run_id)
    owner: dict[str, int] = {}  # episode id -> step
    left: dict[int, int] = {}  # step -> samples still to come
    post_ms, wait_ms = [], []
    r = aioredis.Redis.from_url(redis_url, socket_timeout=30)

    async def collect(step: int) -> None:
        deadline = time.monotonic() + timeout
        while left[step] > 0:
            if time.monotonic() > deadline:
                raise TrafficError(f"synthetic learner: step {step}'s rewards did not all arrive within {timeout:g} s")
            reply = await r.xreadgroup(keys.RESULTS_GROUP, "synthetic", {stream: ">"}, count=1024, block=100)
            for _, entries in reply or []:
                for _, fields in entries:
                    samples = samples_of(fields)
                    left[owner[samples[0].episode_id]] -= len(samples)
                if entries:
                    await r.xack(stream, keys.RESULTS_GROUP, *[entry_id for entry_id, _ in entries])

    try:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                     timeout=60.0) as http:
            started, open_steps = time.perf_counter(), []
            for i in range(posts + inflight + 1):
                while open_steps and (len(open_steps) > inflight or i >= posts):
                    waited = time.perf_counter()
                    await collect(open_steps.pop(0))
                    wait_ms.append((time.perf_counter() - waited) * 1000)
                if i >= posts:
                    break
                left[i] = per_post * k
                t0 = time.perf_counter()
                response = await http.post("/v2/episodes/batch", content=steps[i % len(steps)].v2,
                                           headers={"content-type": "application/octet-stream"})
                post_ms.append((time.perf_counter() - t0) * 1000)
                if response.status_code != 202:
                    raise TrafficError(f"POST /v2/episodes/batch answered {response.status_code}: "
                                       f"{response.text[:300]}")
                for e in response.json()["episodes"]:
                    owner[e["episode_id"]] = i
                open_steps.append(i)
            seconds = time.perf_counter() - started
    finally:
        await r.aclose()
    return {"inflight": inflight, "steps_per_s": posts / seconds, "post_p50_ms": float(np.percentile(post_ms, 50)),
            "wait_p50_ms": float(np.percentile(wait_ms, 50))}


def register(url: str, token: str, run_id: str) -> None:
    import httpx

    body = {"run_id": run_id, "dataset": "shapes", "level": "image", "scorer": "gt", "metric": "miou"}
    response = httpx.post(url + "/v1/runs", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    if response.status_code != 201:
        raise TrafficError(f"POST /v1/runs answered {response.status_code}: {response.text[:300]}")


def measure(url: str, token: str, redis_url: str, run_id: str, cpu, posts: int, clients: int,
            timeout: float, open_loop_posts: int, say, size: int = SIZE) -> dict:
    """v1, then v2, then v2 open loop at half v2's capacity, on one registered run of the service's shapes of
    side ``size``; ``cpu()`` reads the service's processes' CPU seconds (name -> seconds). Returns the report's
    `shaped` part."""
    register(url, token, run_id)
    steps = build_steps(run_id, min(posts, 16), size=size)
    report: dict = {"posts": posts, "masks_per_post": PER_POST * SAMPLES, "mask": f"{SCALE}x{SCALE}",
                    "clients": clients}
    asyncio.run(post_and_read(url, token, redis_url, run_id, steps, "v2", 2, 1, timeout))  # warm-up, not timed
    asyncio.run(post_and_read(url, token, redis_url, run_id, steps, "v1", 2, 1, timeout))
    for wire in ("v1", "v2"):
        before = cpu()
        outcome = asyncio.run(post_and_read(url, token, redis_url, run_id, steps, wire, posts, clients, timeout))
        after = cpu()
        spent = {name: after[name] - before[name] for name in after if name in before}
        service = sum(v for name, v in spent.items() if name != "bench clients")
        report[wire] = {
            "masks_per_s": outcome.masks / outcome.seconds,
            "steps_per_s": posts / outcome.seconds,
            "cpu_us_per_mask": {name: v / outcome.masks * 1e6 for name, v in spent.items()},
            "service_cpu_us_per_mask": service / outcome.masks * 1e6,
            "post_p50_ms": float(np.percentile(outcome.latencies_ms, 50)),
            "post_p99_ms": float(np.percentile(outcome.latencies_ms, 99)),
        }
        say(f"{wire}: {report[wire]['steps_per_s']:.1f} steps/s, service CPU "
            f"{report[wire]['service_cpu_us_per_mask']:.1f} us per mask")
    rate = report["v2"]["steps_per_s"] / 2
    say(f"v2 open loop: {open_loop_posts} steps at {rate:.1f}/s (half the closed-loop capacity)")
    outcome = asyncio.run(post_and_read(url, token, redis_url, run_id, steps, "v2", open_loop_posts, 1, timeout,
                                        rate=rate))
    report["open_loop"] = {"rate_steps_per_s": rate, "p50_ms": float(np.percentile(outcome.latencies_ms, 50)),
                           "p99_ms": float(np.percentile(outcome.latencies_ms, 99))}
    report["synthetic"] = []
    for inflight in (0, 2):
        row = asyncio.run(synthetic_learner(url, token, redis_url, run_id, steps, posts, inflight, timeout))
        say(f"synthetic learner, --max-inflight {inflight}: {row['steps_per_s']:.1f} steps/s")
        report["synthetic"].append(row)
    return report


def format_shaped(report: dict) -> str:
    v1, v2 = report["v1"], report["v2"]
    head = (f"{'learner-shaped traffic':<34}{'steps/s':>9}{'masks/s':>10}{'svc CPU us/mask':>17}{'p50 ms':>8}"
            f"{'p99 ms':>8}")
    lines = [f"learner-shaped: {report['posts']} requests of {report['masks_per_post']} masks of {report['mask']} "
             f"(16 episodes x K = 32), {report['clients']} client(s), closed loop", head, "-" * len(head)]
    for name, row in (("v1  JSON, base64, entry per sample", v1), ("v2  binary, entry per episode", v2)):
        lines.append(f"{name:<34}{row['steps_per_s']:>9.1f}{row['masks_per_s']:>10.0f}"
                     f"{row['service_cpu_us_per_mask']:>17.1f}{row['post_p50_ms']:>8.1f}{row['post_p99_ms']:>8.1f}")
    for name, row in (("v1", v1), ("v2", v2)):
        parts = ", ".join(f"{k} {v:.1f}" for k, v in row["cpu_us_per_mask"].items())
        lines.append(f"  {name} CPU us per mask: {parts}")
    ol = report["open_loop"]
    lines += [f"v1 / v2 service CPU per mask: {v1['service_cpu_us_per_mask'] / v2['service_cpu_us_per_mask']:.1f}x "
              f"(target >= 10x; aim v2 <= 25 us)",
              f"v2 open loop at {ol['rate_steps_per_s']:.1f} steps/s (half capacity): POST p50 {ol['p50_ms']:.1f} ms, "
              f"p99 {ol['p99_ms']:.1f} ms (target p99 < 20 ms)"]
    for row in report.get("synthetic", []):
        lines.append(f"synthetic learner (v2, no model), --max-inflight {row['inflight']}: {row['steps_per_s']:.1f} "
                     f"steps/s (POST p50 {row['post_p50_ms']:.1f} ms, then waiting for rewards p50 "
                     f"{row['wait_p50_ms']:.1f} ms; target 80)")
    return "\n".join(lines)


def summary(report: dict) -> dict:
    """The flat keys `rss bench service --json` carries."""
    return {"v1_cpu_us_per_mask": report["v1"]["service_cpu_us_per_mask"],
            "v2_cpu_us_per_mask": report["v2"]["service_cpu_us_per_mask"],
            "open_loop_p50_ms": report["open_loop"]["p50_ms"], "open_loop_p99_ms": report["open_loop"]["p99_ms"],
            "synthetic_steps_per_s": max(row["steps_per_s"] for row in report["synthetic"])}
