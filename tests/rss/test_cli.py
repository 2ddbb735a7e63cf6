"""Every `rss` subcommand is parsed by tyro from its dataclass, with the flags, defaults and spellings the
docs, the images and the tests use (in-process: no service, nothing trained)."""

from __future__ import annotations

import dataclasses

import pytest
import tyro

from learner.config import TrainArgs
from learner.evaluate_cli import EvalArgs
from reward_service.cli import ServeArgs, WorkerArgs
from rss.bench.args import parse
from rss.bench.convergence import ROWS, ConvergenceArgs
from rss.bench.load import LoadBenchArgs
from rss.bench.loop import LoopArgs, train_flags
from rss.bench.service import ServiceBenchArgs
from rss.bench.ui import UiBenchArgs
from rss.cli import main
from rss.demo import DemoArgs
from rss.rater_sim import RaterSimArgs


@pytest.mark.parametrize(("cls", "argv", "expected"), [
    (ServeArgs, "--host 0.0.0.0 --port 8000", {"host": "0.0.0.0", "port": 8000, "workers": None}),
    (WorkerArgs, "", {}),
    (RaterSimArgs, "--service-url http://h:1 --flip 0.1 --max-tasks 3 --idle-s 10",
     {"service_url": "http://h:1", "flip": 0.1, "max_tasks": 3, "idle_s": 10.0, "split": "train", "seed": 0}),
    (DemoArgs, "--steps 500 --scorer human --human-task pairwise --samples 2",
     {"steps": 500, "scorer": "human", "human_task": "pairwise", "samples": 2, "out": "runs/demo", "port": 8000,
      "threads": 1, "reward_source": "remote"}),
    (DemoArgs, "--steps 500 --out runs/d --resume --no-progress", {"out": "runs/d", "resume": True, "progress": False}),
    (ServiceBenchArgs, "--masks 40 --size 64 --json x.json", {"masks": 40, "size": 64, "json": "x.json",
                                                              "clients": 16, "samples": 1, "flip": 0.2}),
    (UiBenchArgs, "--tasks 3 --size 64 --frames 5 --think-s 0.2", {"tasks": 3, "size": 64, "frames": 5, "think_s": 0.2,
                                                                   "json": None}),
    (LoadBenchArgs, "--learners 4 --raters 2 --seconds 30 --json load.json",
     {"learners": 4, "raters": 2, "seconds": 30.0, "json": "load.json", "size": 32, "samples": 4, "drain_s": 120.0}),
    (LoopArgs, "--steps 4 --max-inflight 2 --batch-size 8", {"steps": 4, "max_inflight": 2, "batch_size": 8,
                                                              "out": "runs/bench-loop", "json": None}),
    (ConvergenceArgs, "--ce-steps 2 --rows image_psd --ablation-factor 4 --json b.json",
     {"ce_steps": 2, "rows": ("image_psd",), "ablation_factor": 4.0, "json": "b.json",
      "out": "runs/bench-convergence", "train_size": 2000, "lr": 1e-3}),
    (EvalArgs, "--checkpoint c.pt --json e.json", {"checkpoint": "c.pt", "json": "e.json", "split": "val"}),
])
def test_each_command_parses_the_flags_it_always_took(cls, argv: str, expected: dict) -> None:
    args = parse(cls, argv.split(), "rss") if hasattr(cls, "validate") else tyro.cli(cls, args=argv.split())
    assert {name: getattr(args, name) for name in expected} == expected


def test_demo_and_loop_do_not_take_what_they_set_themselves(capsys) -> None:
    for argv in (["demo", "--service-url", "http://x"], ["bench", "loop", "--reward-source", "remote"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert "Unrecognized options" in capsys.readouterr().err


def test_convergence_takes_every_train_flag_for_every_row() -> None:
    fixed = {"dataset": "shapes", "checkpoint_every": 10**9, "progress": False}
    args = ConvergenceArgs()
    for name, overrides in ROWS.items():
        row = args.row(name)
        mine = {**fixed, **overrides, "steps": args.steps_of(name), "out": f"runs/bench-convergence/{name}"}
        assert {k: getattr(row, k) for k in mine} == mine, name
        assert {f.name: getattr(row, f.name) for f in dataclasses.fields(TrainArgs) if f.name not in mine} == {
            f.name: getattr(TrainArgs(), f.name) for f in dataclasses.fields(TrainArgs) if f.name not in mine}, name
    assert [args.steps_of(n) for n in ("ce", "pixel", "image_naive", "image_best")] == [3000, 3000, 3000, 12000]
    parsed = tyro.cli(ConvergenceArgs, args=["--width", "16", "--lr", "0.01", "--ce-steps", "5"])
    assert parsed.row("image_best").width == 16 and parsed.row("ce").lr == 0.01 and parsed.row("ce").steps == 5


def test_train_flags_parse_back_to_the_same_training() -> None:
    cfg = TrainArgs(num_classes=5, class_names="a,b,c,d,e", psd=False, progress=False, psr_scales=(8, 0),
                    psr_fractions=(0.1, 0.25), lr=3e-4, init_from="w.pt", reward="pixel", threads=0, amp="bf16",
                    channels_last=True, arch="tv:fcn_resnet50", aux_weight=0.5)
    assert tyro.cli(TrainArgs, args=train_flags(cfg)) == cfg
    demo = tyro.cli(DemoArgs, args=train_flags(dataclasses.replace(cfg, threads=0)))
    assert demo.threads == 0  # --threads always goes: the demo's default (1) is not train's


@pytest.mark.parametrize(("argv", "message"), [
    (["rater-sim", "--flip", "2"], "rss rater-sim: error: --flip must be in [0, 1]"),
    (["demo", "--scorer", "http"], "rss demo: error: --scorer http needs --endpoint URL"),
    (["bench", "service", "--size", "8"], "rss bench service: error: --size must be at least 16"),
    (["bench", "ui", "--tasks", "1"], "rss bench ui: error: --tasks must be at least 2"),
    (["bench", "load", "--learners", "0"], "rss bench load: error: --learners, --episodes and --inflight"),
    (["bench", "loop", "--lr", "0"], "rss bench loop: error: --lr must be positive"),
    (["bench", "convergence", "--rows", "nope"], "rss bench convergence: error: --rows: unknown ['nope']"),
])
def test_bad_values_are_cli_errors_naming_the_flag(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bench_help_lists_the_benches(capsys) -> None:
    assert main(["bench", "--help"]) == 0
    assert "convergence" in capsys.readouterr().out
