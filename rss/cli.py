"""The `rss` command: a thin dispatcher; each subcommand lives with the package it belongs to."""

from __future__ import annotations

import logging
import sys

USAGE = """usage: rss <command> [options]

commands:
  demo                the whole system on one machine: Redis, the reward service, remote training
  train               train a segmentation policy from rewards (or --objective ce)
  eval                evaluate a checkpoint on a dataset split
  serve               run the reward service (FastAPI + Redis; settings from RSS_* variables)
  worker              run one more scoring process for the reward service
  rater-sim           a simulated rater answering human-rating tasks from ground truth
  bench convergence   CE vs pixel- and image-level RSS on shapes (or scenes), one table
  bench service       GT scoring through the service vs in-process, and POST latency
  bench loop          training in-process vs through the service and Redis: steps/s and val mIoU
  bench load          N learners and M raters against one service for a while: lost? applied twice? p99?
  bench ui            the annotator UI in headless Chromium: submit-to-next-task and overlay draw times
  bench feedback      simulated rater answers vs pixel labelling at equal human-hours (in-process)
  bench data          peak memory and time of training on a folder dataset, per --data-workers
  scorer up|ls|logs|down  external scorers as containers (Docker): start one, print its URL, swap versions

Run `rss <command> --help` for the options of each."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the progress
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)  # noqa: T201
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "train":
            import tyro

            from learner.config import TrainArgs
            from learner.train import train

            final = train(tyro.cli(TrainArgs, args=rest, prog="rss train"))
            print(f"val mIoU {final['val_miou']:.4f}; report in {final['config']['out']}")  # noqa: T201
            return 0
        if command == "eval":
            from learner.evaluate_cli import main as eval_main

            return eval_main(rest)
        if command == "demo":
            from rss.demo import main as demo_main

            return demo_main(rest)
        if command == "serve":
            from reward_service.cli import main as serve_main

            return serve_main(rest)
        if command == "rater-sim":
            from rss.rater_sim import main as rater_sim_main

            return rater_sim_main(rest)
        if command == "worker":
            from reward_service.cli import worker_main

            return worker_main(rest)
        if command == "bench":
            from rss.bench import main as bench_main

            return bench_main(rest)
        if command == "scorer":
            from rss.scorer import main as scorer_main

            return scorer_main(rest)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        from rss.bench import BENCHES
        from rss.scorer import COMMANDS

        two_words = (command == "bench" and rest and rest[0] in BENCHES) or (command == "scorer" and rest
                                                                           and rest[0] in COMMANDS)
        name = " ".join(argv[:2]) if two_words else command
        print(f"rss {name}: error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    print(f"rss: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)  # noqa: T201
    return 2


if __name__ == "__main__":
    sys.exit(main())
