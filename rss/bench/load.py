"""`rss bench load`: many learners and raters at once against one service; did anything get lost?

It starts its own `redis-server` (append-only file, `appendfsync everysec`, as deployed) and
`rss serve` (one HTTP process, one scoring worker) on loopback, registers one ground-truth run
per simulated learner and one human-scored run, and for ``--seconds``:

- ``--learners`` simulated learners each POST batches of pre-encoded episodes to their run
  (`/v1/episodes/batch`), keeping at most ``--inflight`` batches unanswered, and read their
  run's results stream with the learner consumer group, applying each (episode, sample) at most
  once (a second delivery is counted, not applied) and acknowledging it;
- one more learner posts to the human run, which ``--raters`` `rss rater-sim` processes answer
  through the rater endpoints (`GET /v1/tasks/next`, `POST /v1/tasks/{id}/rating`).

Then posting stops and everything accepted is drained (bounded by ``--drain-s``). The report:
accepted, scored, applied samples, lost (accepted and never applied), applied twice, results
written twice to a stream, throughput, POST p50/p99, and answers other than 202 by status.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rss.bench.args import ServedBenchArgs, parse
from rss.bench.service import BenchError, launched
from rss.procs import exit_on_sigterm, start_redis, start_service, stop


def out(line: str = "") -> None:
    print(line, flush=True)  # noqa: T201


@dataclass
class Sim:
    """One simulated learner: its run, its pre-encoded bodies, and what happened to what it posted."""

    run_id: str
    bodies: list[bytes]
    samples: int
    per_post: int
    inflight: int
    accepted: set[str] = field(default_factory=set)  # episode ids answered 202
    applied: set[tuple[str, int]] = field(default_factory=set)
    applied_twice: int = 0  # keys applied again: the at-most-once rule makes this 0
    redelivered: int = 0  # second deliveries seen (counted, not applied)
    failed: int = 0  # error results (counted, not applied)
    unanswered: int = 0  # batches posted and not yet fully applied
    waiting: dict[str, int] = field(default_factory=dict)  # episode id -> samples still to come

    @property
    def lost(self) -> int:
        return len(self.accepted) * self.samples - len(self.applied) - self.failed


def bodies_for(run_id: str, per_post: int, samples: int, size: int, classes: int, rng: np.random.Generator,
               level_images: int = 16, count: int = 8) -> list[bytes]:
    from rss_core import codec

    bodies = []
    for _ in range(count):
        episodes = [{"run_id": run_id, "image_id": f"train/{int(rng.integers(0, level_images)):06d}",
                     "level": "image", "policy_version": 0,
                     "samples": [codec.raw_mask(m).model_dump(mode="json")
                                 for m in rng.integers(0, classes, (samples, size, size), dtype=np.uint8)]}
                    for _ in range(per_post)]
        bodies.append(json.dumps({"episodes": episodes}).encode())
    return bodies


async def read_results(sim: Sim, r, block_ms: int) -> None:
    """Apply what the run's results stream delivers, each (episode, sample) at most once, and acknowledge it."""
    from rss_core import keys

    stream, consumer = keys.results(sim.run_id), f"sim-{sim.run_id}"
    reply = await r.xreadgroup(keys.RESULTS_GROUP, consumer, {stream: ">"}, count=512, block=block_ms)
    acks = []
    for _, entries in reply or []:
        for entry_id, fields in entries:
            result = json.loads(fields[b"payload"])
            key = (result["episode_id"], result["sample_index"])
            acks.append(entry_id)
            if key in sim.applied:
                sim.redelivered += 1
                continue
            if result.get("error"):
                sim.failed += 1
            else:
                sim.applied.add(key)
            left = sim.waiting.get(key[0])
            if left:
                sim.waiting[key[0]] = left - 1
    if acks:
        await r.xack(stream, keys.RESULTS_GROUP, *acks)


async def learner(sim: Sim, http, r, deadline: float, latencies: list[float], errors: Counter[str]) -> None:
    """Post while ``deadline`` is ahead (at most ``inflight`` batches unapplied), reading results as they come."""
    i = 0
    while time.monotonic() < deadline:
        if sum(1 for v in sim.waiting.values() if v > 0) >= sim.inflight * sim.per_post:
            await read_results(sim, r, 100)
            continue
        started = time.perf_counter()
        try:
            response = await http.post("/v1/episodes/batch", content=sim.bodies[i % len(sim.bodies)])
        except Exception as exc:  # a transport error: counted by its name, posted again (new ids)
            errors[type(exc).__name__] += 1
            await asyncio.sleep(0.2)
            continue
        latencies.append((time.perf_counter() - started) * 1000)
        i += 1
        if response.status_code != 202:
            errors[str(response.status_code)] += 1
            await asyncio.sleep(float(response.headers.get("retry-after", "0.2")))
            continue
        for episode in response.json()["episodes"]:
            sim.accepted.add(episode["episode_id"])
            sim.waiting[episode["episode_id"]] = sim.samples
        await read_results(sim, r, 1)


async def drain(sims: list[Sim], r, drain_s: float) -> None:
    deadline = time.monotonic() + drain_s
    for sim in sims:
        while sim.lost > 0 and time.monotonic() < deadline:
            await read_results(sim, r, 200)


async def run_load(url: str, token: str, redis_url: str, sims: list[Sim], seconds: float, drain_s: float) -> dict:
    import httpx
    import redis.asyncio as aioredis

    from rss_core import keys

    latencies: list[float] = []
    errors: Counter[str] = Counter()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    clients = [aioredis.Redis.from_url(redis_url, socket_timeout=30) for _ in sims]
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0,
                                 limits=httpx.Limits(max_connections=len(sims))) as http:
        started = time.perf_counter()
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(learner(s, http, c, deadline, latencies, errors) for s, c in zip(sims, clients,
                                                                                                  strict=True)))
        posting_s = time.perf_counter() - started
        await drain(sims, clients[0], drain_s)
        elapsed = time.perf_counter() - started
    r = clients[0]
    written: Counter[tuple[str, int]] = Counter()  # the streams' own audit: was any result written twice?
    for sim in sims:
        for _, fields in await r.xrange(keys.results(sim.run_id)):
            result = json.loads(fields[b"payload"])
            written[(result["episode_id"], result["sample_index"])] += 1
    for c in clients:
        await c.aclose()
    accepted = sum(len(s.accepted) * s.samples for s in sims)
    applied = sum(len(s.applied) for s in sims)
    lat = np.array(latencies) if latencies else np.zeros(1)
    return {
        "accepted": accepted, "scored": len(written), "applied": applied, "failed": sum(s.failed for s in sims),
        "lost": sum(max(s.lost, 0) for s in sims), "applied_twice": sum(s.applied_twice for s in sims),
        "written_twice": sum(1 for n in written.values() if n > 1), "redelivered": sum(s.redelivered for s in sims),
        "posts": len(latencies), "errors": dict(errors), "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1), "posting_s": round(posting_s, 2),
        "elapsed_s": round(elapsed, 2), "applied_per_s": round(applied / elapsed, 1),
        "human_applied": len(sims[-1].applied) if sims[-1].run_id == "load-human" else 0,
    }


@dataclass
class LoadBenchArgs(ServedBenchArgs):
    """Many learners and raters at once against one service; did anything get lost?"""

    size: int = 32
    """shapes image size (masks are full size)"""
    learners: int = 4
    """simulated learners on ground-truth runs"""
    raters: int = 2
    """`rss rater-sim` processes on a human run (0: none)"""
    seconds: float = 30.0
    """how long to post"""
    drain_s: float = 120.0
    """most seconds to wait for what was accepted"""
    episodes: int = 16
    """episodes per POST (one learner step)"""
    samples: int = 4
    """masks per episode (K)"""
    inflight: int = 2
    """batches a learner may have unapplied"""

    def validate(self) -> None:
        if self.learners < 1 or self.raters < 0 or self.seconds <= 0 or self.episodes < 1 or self.inflight < 1:
            raise ValueError("--learners, --episodes and --inflight must be >= 1, --raters >= 0, --seconds > 0")
        super().validate()


def main(argv: list[str]) -> int:
    args = parse(LoadBenchArgs, argv, "rss bench load", __doc__.split("\n\n")[0])
    exit_on_sigterm()
    token = secrets.token_hex(16)
    raters = {f"sim{i}": secrets.token_hex(16) for i in range(args.raters)}
    rng = np.random.default_rng(args.seed)
    sims = [Sim(f"load-{i}", bodies_for(f"load-{i}", args.episodes, args.samples, args.size, 4, rng),
                args.samples, args.episodes, args.inflight) for i in range(args.learners)]
    if args.raters:  # people are slow: one episode of 2 samples a post, 4 unanswered at most
        sims.append(Sim("load-human", bodies_for("load-human", 1, 2, args.size, 4, rng), 2, 1, 4))
    with tempfile.TemporaryDirectory(prefix="rss-bench-load-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        redis_proc = stack.enter_context(launched(start_redis, folder, durable=True,  # AOF, as deployed
                                                  log=folder / "redis-server.log"))
        redis_url = f"redis://127.0.0.1:{redis_proc.port}/0"
        env = {"RSS_REDIS_URL": redis_url, "RSS_LEARNER_TOKENS": json.dumps([token]),
               "RSS_RATER_TOKENS": json.dumps(raters), "RSS_SHAPES_SIZE": str(args.size),
               "RSS_RATE_LIMIT_EPISODES_PER_S": "0", "RSS_RATE_LIMIT_RATINGS_PER_MIN": "0",
               "RSS_RATE_LIMIT_POLLS_PER_MIN": "0", "RSS_RATE_LIMIT_ADDRESS_PER_S": "0",
               "RSS_RESULTS_TRIM_EVERY_S": "3600", "RSS_LOG_LEVEL": "warning", "OMP_NUM_THREADS": "1"}
        service = stack.enter_context(launched(start_service, env, log=folder / "rss-serve.log"))
        url = f"http://127.0.0.1:{service.port}"
        register(url, token, sims)
        for name, rater_token in raters.items():
            proc = subprocess.Popen(
                [sys.executable, "-m", "rss.cli", "rater-sim", "--service-url", url, "--shapes-size",
                 str(args.size), "--idle-s", str(args.seconds + args.drain_s)],
                env={**os.environ, "RSS_RATER_TOKEN": rater_token, "OMP_NUM_THREADS": "1"},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stack.callback(stop, proc, f"rater-sim {name}")
        out(f"[bench load] {args.learners} learners x {args.episodes} episodes x {args.samples} masks of "
            f"{args.size}x{args.size} a post, {args.raters} raters, {args.seconds:g} s")
        figures = asyncio.run(run_load(url, token, redis_url, sims, args.seconds, args.drain_s))
    server_errors = sum(n for status, n in figures["errors"].items() if status.startswith("5"))
    figures["held"] = figures["lost"] == figures["applied_twice"] == figures["written_twice"] == server_errors == 0
    out(f"accepted {figures['accepted']} samples, scored {figures['scored']}, applied {figures['applied']} "
        f"(human-rated {figures['human_applied']}), failed {figures['failed']}, lost {figures['lost']}, "
        f"applied twice {figures['applied_twice']}, written twice {figures['written_twice']}, "
        f"redelivered {figures['redelivered']}")
    out(f"{figures['posts']} POSTs in {figures['posting_s']} s: p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} "
        f"ms; errors {figures['errors'] or 'none'}; {figures['applied_per_s']} samples applied/s over "
        f"{figures['elapsed_s']} s")
    out("held: lost 0, applied twice 0, written twice 0, no 5xx" if figures["held"] else "NOT HELD")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["held"] else 1


def register(url: str, token: str, sims: list[Sim]) -> None:
    import httpx

    for sim in sims:
        body = {"run_id": sim.run_id, "dataset": "shapes", "level": "image", "scorer": "gt"}
        if sim.run_id == "load-human":
            body.update(scorer="human", task_kind="score")
        response = httpx.post(f"{url}/v1/runs", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        if response.status_code not in (200, 201):
            raise BenchError(f"registering {sim.run_id} failed: {response.status_code} {response.text}")
