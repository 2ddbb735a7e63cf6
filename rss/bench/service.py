"""`rss bench service`: ground-truth scoring through the reward service vs in-process, one table.

One run measures, on exactly the same masks and labels:

1. in-process: masks/s of `rss_core.scoring.score_masks` (the function the service's
   `gt` scorer calls) on one torch thread;
2. through the service: its own throwaway `redis-server` and `rss serve` (one worker process,
   one torch thread), a registered image-level `gt` run, ``--clients`` concurrent clients
   POSTing pre-encoded `raw` episodes over one pooled `httpx.AsyncClient`, and a reader that
   consumes the run's results stream with the learner's consumer group and XACKs each entry.
   Throughput is masks scored / (first POST -> last result read); each POST's latency is kept.

The report puts ``through / in-process`` next to the issue's target (>= 0.5 per worker core) and
the POST p99 next to 50 ms. Masks are mid-training-like: the shapes label with ``--flip`` of its
pixels set to random classes (seeded), cycling over ``--images`` train ids. Every reward the
service writes is checked against the in-process one; any non-202, error result, mismatch or
missing result fails the run with a message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rss.bench import traffic
from rss.bench.args import ServedBenchArgs, parse
from rss.procs import Process, StartError, exit_on_sigterm, start_redis, start_service

log = logging.getLogger(__name__)

RATIO_TARGET = 0.5  # through-service masks/s >= half the in-process rate of one worker core
P99_TARGET_MS = 50.0
METRIC = "miou"


class BenchError(RuntimeError):
    """The benchmark could not measure what it should (the message says why)."""


def out(line: str = "") -> None:
    print(line, flush=True)  # noqa: T201


def phase(line: str) -> None:
    out(f"[bench service] {line}")


# --- workload -------------------------------------------------------------------------------

@dataclass
class Episode:
    image_id: str
    masks: np.ndarray  # (K, h, w) uint8
    target: np.ndarray  # (h, w) uint8: what the service scores against
    body: bytes = b""  # the POST /v1/episodes JSON body (raw encoding)
    rewards: list[float] = field(default_factory=list)  # in-process reference


def build_pool(size: int, images: int, pool: int, samples: int, flip: float, seed: int) -> tuple[list[Episode], int]:
    """``pool`` distinct episodes over the first ``images`` train ids, and the class count.

    Labels come from the service's own `ServedDataset` (same resize and lattice code path).
    """
    from reward_service.core.config import Settings
    from reward_service.datasets import ServedDataset
    from rss_core.schemas import Grid

    settings = Settings(_env_file=None, dataset="shapes", split="train", shapes_size=size, shapes_length=None,
                        num_classes=None, seed=0, learner_tokens=[], rater_tokens={})
    dataset = ServedDataset(settings)
    grid = Grid()  # full resolution: what an episode without scale/offset is scored on
    targets = [dataset.target(f"train/{i:06d}", None, grid) for i in range(images)]
    rng = np.random.default_rng(seed)
    episodes = []
    for p in range(pool):
        target = targets[p % images]
        masks = np.repeat(target[None], samples, axis=0)
        flipped = rng.random(masks.shape) < flip
        masks[flipped] = rng.integers(0, dataset.num_classes, int(flipped.sum()), dtype=np.uint8)
        episodes.append(Episode(f"train/{p % images:06d}", masks, target))
    return episodes, dataset.num_classes


def encode_bodies(pool: list[Episode], run_id: str) -> None:
    from rss_core import codec

    for ep in pool:
        samples = [codec.raw_mask(m).model_dump(mode="json") for m in ep.masks]
        ep.body = json.dumps({"run_id": run_id, "image_id": ep.image_id, "level": "image", "policy_version": 0,
                              "samples": samples}).encode()


def encoding_cost(pool: list[Episode], limit: int = 16) -> dict[str, float]:
    """Measured ms per mask to encode as PNG (codec.png_mask) and raw (codec.raw_mask), and sizes."""
    from rss_core import codec

    masks = [m for ep in pool for m in ep.masks][:limit]
    costs: dict[str, float] = {}
    for name, encode in (("png", codec.png_mask), ("raw", codec.raw_mask)):
        encode(masks[0])
        started = time.perf_counter()
        encoded = [encode(m) for m in masks]
        costs[f"{name}_ms"] = (time.perf_counter() - started) / len(masks) * 1000
        costs[f"{name}_bytes"] = sum(len(e.data) for e in encoded) / len(encoded)
    return costs


# --- 1. in-process --------------------------------------------------------------------------

def in_process(pool: list[Episode], episodes: int, num_classes: int) -> float:
    """Masks/s of scoring.score_masks on one torch thread over ``episodes`` episodes cycling the pool."""
    import torch
    from tqdm import tqdm

    from rss_core import scoring
    from rss_core.grid import ActionGrid

    torch.set_num_threads(1)
    grid = ActionGrid(0)
    for ep in pool:  # warm-up, and the reference rewards the service's must equal
        rewards, _ = scoring.score_masks(ep.masks, ep.target, grid, "image", num_classes, METRIC)
        ep.rewards = rewards.tolist()
    started = time.perf_counter()
    for i in tqdm(range(episodes), desc="in-process", unit="ep", mininterval=0.5, file=sys.stderr):
        ep = pool[i % len(pool)]
        scoring.score_masks(ep.masks, ep.target, grid, "image", num_classes, METRIC)
    seconds = time.perf_counter() - started
    return episodes * pool[0].masks.shape[0] / seconds


# --- processes: redis-server and rss serve --------------------------------------------------

def launched(start: Callable[..., Process], *args, **kwargs) -> Process:
    """``start(*args, **kwargs)`` (`rss.procs.start_redis` or `start_service`); a failure to start is a BenchError."""
    try:
        return start(*args, **kwargs)
    except (StartError, FileNotFoundError) as exc:
        raise BenchError(str(exc)) from exc


# --- 2. through the service ------------------------------------------------------------------

@dataclass
class Phase:
    seconds: float
    masks: int
    latencies_ms: list[float]


async def through_service(url: str, token: str, redis_url: str, run_id: str, pool: list[Episode],
                          episodes: int, clients: int, timeout: float, label: str) -> Phase:
    """POST ``episodes`` episodes (cycling the pool) from ``clients`` concurrent clients and read
    every result; returns the time from the first POST to the last result read."""
    import httpx
    import redis.asyncio as aioredis
    from tqdm import tqdm

    from rss_core import keys

    samples = pool[0].masks.shape[0]
    expected = episodes * samples
    stream = keys.results(run_id)
    pool_of: dict[str, int] = {}  # episode id -> pool index
    latencies: list[float] = []
    results: list[dict] = []
    state = {"next": 0, "last_read": 0.0}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    r = aioredis.Redis.from_url(redis_url, socket_timeout=30)
    bar = tqdm(total=expected, desc=label, unit="mask", mininterval=0.5, file=sys.stderr)

    async def post(http: httpx.AsyncClient) -> None:
        while state["next"] < episodes:
            i = state["next"]
            state["next"] += 1
            p = i % len(pool)
            started = time.perf_counter()
            try:
                response = await http.post("/v1/episodes", content=pool[p].body)
            except httpx.HTTPError as exc:
                raise BenchError(f"POST /v1/episodes failed: {type(exc).__name__}: {exc}") from exc
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 202:
                raise BenchError(f"POST /v1/episodes answered {response.status_code}, not 202: {response.text[:500]}")
            pool_of[response.json()["episode_id"]] = p

    async def read() -> None:
        while len(results) < expected:
            reply = await r.xreadgroup(keys.RESULTS_GROUP, "bench", {stream: ">"}, count=512, block=100)
            for _, entries in reply or []:
                if not entries:
                    continue
                for _, fields in entries:
                    result = json.loads(fields[b"payload"])
                    if result.get("error"):
                        raise BenchError(f"the service wrote an error result for episode {result['episode_id']} "
                                         f"sample {result['sample_index']}: {result['error']}")
                    results.append(result)
                await r.xack(stream, keys.RESULTS_GROUP, *[entry_id for entry_id, _ in entries])
                state["last_read"] = time.perf_counter()
                bar.update(len(entries))

    try:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0, limits=limits) as http:
            reader = asyncio.create_task(read())
            started = time.perf_counter()
            posters = asyncio.ensure_future(asyncio.gather(*(post(http) for _ in range(clients))))
            if not await traffic.drive(posters, reader, timeout):
                raise BenchError(f"only {len(results)} of {expected} results arrived within {timeout:g} s "
                                 f"after the last POST")
    finally:
        bar.close()
        await r.aclose()
    seconds = state["last_read"] - started
    check_results(results, pool, pool_of, expected)
    return Phase(seconds, expected, latencies)


def check_results(results: list[dict], pool: list[Episode], pool_of: dict[str, int], expected: int) -> None:
    """Every (episode, sample) once, each reward equal to the in-process one."""
    seen = {(r["episode_id"], r["sample_index"]) for r in results}
    if len(seen) != expected or len(results) != expected:
        raise BenchError(f"{len(results)} results for {len(seen)} distinct samples, expected {expected}")
    for result in results:
        p = pool_of.get(result["episode_id"])
        if p is None:
            raise BenchError(f"a result for episode {result['episode_id']} that this bench did not post")
        want = pool[p].rewards[result["sample_index"]]
        if not math.isclose(result["reward"], want, rel_tol=0, abs_tol=1e-6):
            raise BenchError(f"episode {result['episode_id']} sample {result['sample_index']}: the service's reward "
                             f"{result['reward']} differs from the in-process {want}")


def scrape(url: str) -> dict[str, float]:
    """Service-side sums from /metrics: scoring seconds and POST /v1/episodes seconds (sum, count)."""
    import httpx

    text = httpx.get(url + "/metrics/", timeout=10.0).text
    wanted = {
        "scoring_sum": ("rss_scoring_seconds_sum", ('scorer="gt"',)),
        "scoring_count": ("rss_scoring_seconds_count", ('scorer="gt"',)),
        "post_sum": ("rss_request_seconds_sum", ('method="POST"', 'route="/v1/episodes"', 'status="202"')),
        "post_count": ("rss_request_seconds_count", ('method="POST"', 'route="/v1/episodes"', 'status="202"')),
    }
    values = dict.fromkeys(wanted, 0.0)
    for line in text.splitlines():
        match = re.match(r"^(\w+)\{(.*)\} (\S+)$", line)
        if not match:
            continue
        for key, (name, labels) in wanted.items():
            if match[1] == name and all(label in match[2] for label in labels):
                values[key] += float(match[3])
    return values


# --- report ----------------------------------------------------------------------------------

def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def format_table(report: dict) -> str:
    ratio_ok, p99_ok = report["ratio"] >= RATIO_TARGET, report["p99_ms"] <= P99_TARGET_MS
    head = f"{'path':<44}{'masks/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
    lines = [
        f"rss bench service: {report['masks']} masks of {report['size']}x{report['size']}, {report['samples']} "
        f"sample(s)/episode, {report['clients']} clients, 1 service worker, {report['cores']} cores",
        head, "-" * len(head),
        f"{'in-process  scoring.score_masks, 1 torch thread':<44}{report['in_process_masks_per_s']:>10.1f}"
        f"{'-':>9}{'-':>9}",
        f"{'through the service  POST -> results stream':<44}{report['through_service_masks_per_s']:>10.1f}"
        f"{report['p50_ms']:>9.1f}{report['p99_ms']:>9.1f}",
        "",
        f"{'issue target':<44}{'measured':>10}{'target':>9}{'verdict':>9}",
        f"{'through / in-process (1 worker)':<44}{report['ratio']:>10.3f}{'>= ' + str(RATIO_TARGET):>9}"
        f"{verdict(ratio_ok):>9}",
        f"{'POST p99 latency (ms)':<44}{report['p99_ms']:>10.1f}{'<= ' + f'{P99_TARGET_MS:g}':>9}"
        f"{verdict(p99_ok):>9}",
    ]
    return "\n".join(lines)


def format_details(report: dict) -> str:
    d = report
    in_process_ms = 1000 / d["in_process_masks_per_s"] * d["samples"]
    lines = [
        f"encoding per mask (info): png {d['encode_png_ms']:.2f} ms ({d['encode_png_bytes'] / 1024:.0f} KiB b64), "
        f"raw {d['encode_raw_ms']:.2f} ms ({d['encode_raw_bytes'] / 1024:.0f} KiB b64); bodies were pre-encoded raw",
        f"service side per episode: POST handler {d['server_post_ms']:.1f} ms, scoring job "
        f"{d['server_scoring_ms']:.1f} ms (queue wait excluded; in-process {in_process_ms:.1f} ms)",
    ]
    cpu = d.get("cpu_seconds") or {}
    if cpu:
        per = ", ".join(f"{name} {seconds * 1000 / d['masks']:.2f} ms" for name, seconds in cpu.items())
        lines.append(f"CPU per mask in the timed phase: {per} (wall {1000 / d['through_service_masks_per_s']:.2f} ms "
                     f"per mask on {d['cores']} cores)")
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------

@dataclass
class ServiceBenchArgs(ServedBenchArgs):
    """Ground-truth scoring through the reward service (its own redis-server and `rss serve`, one worker)
    vs the same scoring function in-process, on the same masks; POST latency p50/p99."""

    size: int = 512
    """image and mask side in pixels"""
    masks: int = 2000
    """masks to score, each way"""
    clients: int = 16
    """concurrent HTTP clients"""
    samples: int = 1
    """masks per episode"""
    images: int = 16
    """distinct train images cycled"""
    pool: int = 64
    """distinct pre-encoded episodes cycled"""
    flip: float = 0.2
    """fraction of pixels set to a random class"""
    timeout: float = 120.0
    """seconds to wait for the results after the last POST"""
    shaped_posts: int = 100
    """learner-shaped requests (16 episodes x K = 32 masks of 32 x 32) posted through v1 and through v2, closed
    loop; 0 skips that part"""
    shaped_clients: int = 2
    """concurrent clients of the learner-shaped closed loop"""
    open_loop_posts: int = 100
    """learner-shaped v2 requests posted open loop at half the measured v2 capacity"""

    def validate(self) -> None:
        for name in ("masks", "clients", "samples", "images", "pool", "shaped_clients", "open_loop_posts"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if self.shaped_posts < 0:
            raise ValueError(f"--shaped-posts must be >= 0, got {self.shaped_posts}")
        super().validate()
        if self.samples > 64:
            raise ValueError("--samples must be at most 64 (the service's default RSS_MAX_SAMPLES)")
        if not 0.0 <= self.flip <= 1.0:
            raise ValueError("--flip must be in [0, 1]")
        if self.timeout <= 0:
            raise ValueError("--timeout must be positive")


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run(args: ServiceBenchArgs) -> dict:
    episodes = math.ceil(args.masks / args.samples)
    pool_size = min(args.pool, episodes)
    images = min(args.images, pool_size)
    run_id = f"bench-{secrets.token_hex(4)}"
    token = secrets.token_urlsafe(24)

    phase(f"building {pool_size} episodes of {args.samples}x{args.size}x{args.size} masks over {images} images")
    pool, num_classes = build_pool(args.size, images, pool_size, args.samples, args.flip, args.seed)
    costs = encoding_cost(pool)
    encode_bodies(pool, run_id)
    body_kib = sum(len(ep.body) for ep in pool) / len(pool) / 1024
    phase(f"encoding per mask: png {costs['png_ms']:.2f} ms, raw {costs['raw_ms']:.2f} ms; "
          f"bodies {body_kib:.0f} KiB each")

    phase(f"in-process: {episodes * args.samples} masks through scoring.score_masks on 1 torch thread")
    in_rate = in_process(pool, episodes, num_classes)
    phase(f"in-process: {in_rate:.1f} masks/s")

    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rss-bench-service-")))
        redis_proc = stack.enter_context(launched(start_redis, folder, log=folder / "redis-server.log"))
        redis_url = f"redis://127.0.0.1:{redis_proc.port}/0"
        phase(f"redis-server on port {redis_proc.port}")
        body_limit = max(16 * 1024 * 1024, 2 * max(len(ep.body) for ep in pool))
        env = {
            "RSS_REDIS_URL": redis_url, "RSS_DATASET": "shapes", "RSS_SPLIT": "train", "RSS_SEED": "0",
            "RSS_SHAPES_SIZE": str(args.size), "RSS_LEARNER_TOKENS": json.dumps([token]),
            "RSS_LOG_LEVEL": "warning", "RSS_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1", "RSS_WORKERS": "1",
            "RSS_MAX_BODY_BYTES": str(body_limit), "RSS_RATE_LIMIT_EPISODES_PER_S": "0",  # measure, never throttle
            "RSS_RATE_LIMIT_ADDRESS_PER_S": "0",
        }
        service = stack.enter_context(launched(start_service, env, log=folder / "rss-serve.log"))
        url = f"http://127.0.0.1:{service.port}"
        phase(f"rss serve on port {service.port} (1 worker, 1 torch thread); run {run_id}")
        try:
            traffic.register(url, token, run_id)
        except traffic.TrafficError as exc:
            raise BenchError(str(exc)) from exc

        def measure(count: int, label: str) -> Phase:
            try:
                return asyncio.run(through_service(url, token, redis_url, run_id, pool, count, args.clients,
                                                   args.timeout, label))
            except BenchError as exc:
                code = service.popen.poll()
                state = f"it exited with code {code}" if code is not None else "it is still running"
                raise BenchError(f"{exc}\n(rss serve: {state}; its log ends with:)\n{service.log_tail()}") from exc

        phase(f"service warm-up: {len(pool)} episodes (labels cached, connections opened), not timed")
        measure(len(pool), "warm-up")
        phase(f"through the service: {episodes} episodes from {args.clients} clients")
        before, cpu_before = scrape(url), _cpu(service, redis_proc)
        timed = measure(episodes, "service")
        after, cpu_after = scrape(url), _cpu(service, redis_proc)
        phase(f"through the service: {timed.masks / timed.seconds:.1f} masks/s")
        shaped = None
        if args.shaped_posts:
            phase(f"learner-shaped traffic: {args.shaped_posts} requests through v1, then v2")
            try:
                shaped = traffic.measure(url, token, redis_url, f"{run_id}-shaped", lambda: _cpu(service, redis_proc),
                                         args.shaped_posts, args.shaped_clients, args.timeout, args.open_loop_posts,
                                         phase, size=args.size)
            except traffic.TrafficError as exc:
                raise BenchError(f"{exc}\n(rss serve's log ends with:)\n{service.log_tail()}") from exc

    lat = np.asarray(timed.latencies_ms)
    through_rate = timed.masks / timed.seconds
    posts = max(after["post_count"] - before["post_count"], 1)
    jobs = max(after["scoring_count"] - before["scoring_count"], 1)
    report = {
        "in_process_masks_per_s": in_rate,
        "through_service_masks_per_s": through_rate,
        "ratio": through_rate / in_rate,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "masks": timed.masks, "episodes": episodes, "clients": args.clients, "size": args.size,
        "samples": args.samples, "images": images, "pool": len(pool), "flip": args.flip, "cores": cores(),
        "service_seconds": timed.seconds,
        "encode_png_ms": costs["png_ms"], "encode_raw_ms": costs["raw_ms"],
        "encode_png_bytes": costs["png_bytes"], "encode_raw_bytes": costs["raw_bytes"],
        "server_post_ms": (after["post_sum"] - before["post_sum"]) / posts * 1000,
        "server_scoring_ms": (after["scoring_sum"] - before["scoring_sum"]) / jobs * 1000,
        "cpu_seconds": {name: cpu_after[name] - cpu_before[name] for name in cpu_after if name in cpu_before},
        "targets": {"ratio": RATIO_TARGET, "p99_ms": P99_TARGET_MS},
    }
    report["pass"] = {"ratio": report["ratio"] >= RATIO_TARGET, "p99": report["p99_ms"] <= P99_TARGET_MS}
    if shaped is not None:
        report["shaped"] = shaped
        report.update(traffic.summary(shaped))
    return report


def _cpu(service: Process, redis_proc: Process) -> dict[str, float]:
    """CPU seconds so far of this process (the clients), the service (HTTP, scoring workers) and redis-server."""
    values = {"bench clients": time.process_time()}
    for name, seconds in (("rss serve http", service.cpu_seconds()), ("scoring worker", service.children_cpu_seconds()),
                          ("redis-server", redis_proc.cpu_seconds())):
        if seconds is not None:
            values[name] = seconds
    return values


def main(argv: list[str]) -> int:
    args = parse(ServiceBenchArgs, argv, "rss bench service")
    for noisy in ("httpx", "httpcore"):  # one INFO line per request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop redis-server and rss serve.
    previous = exit_on_sigterm()
    try:
        report = run(args)
    except BenchError as exc:
        print(f"rss bench service: FAILED: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    except KeyboardInterrupt:
        print("rss bench service: interrupted; redis-server and rss serve were stopped", file=sys.stderr)  # noqa: T201
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    out()
    out(format_table(report))
    out()
    out(format_details(report))
    if "shaped" in report:
        out()
        out(traffic.format_shaped(report["shaped"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        out(f"json: {args.json}")
    return 0
