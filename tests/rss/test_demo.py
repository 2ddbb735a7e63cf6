"""`rss demo` smoke test: Redis, the service and remote training from one command, nothing left running."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO
from tests.helpers.cli import run_rss


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_demo_trains_through_the_service_and_cleans_up(tmp_path) -> None:
    out = tmp_path / "demo"
    result = run_rss("demo", "--steps", "6", "--out", str(out), "--port", "0", "--batch-size", "4", "--samples", "4",
                     "--train-size", "32", "--val-size", "8", "--eval-every", "3", "--no-progress", timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reward service: http://127.0.0.1:" in result.stdout and f"report in {out}" in result.stdout
    assert re.search(r"operator page: http://127.0.0.1:\d+/ui/runs  learner token: \S+", result.stdout)
    final = json.loads((out / "final.json").read_text())
    assert final["config"]["reward_source"] == "remote"
    assert final["rewards"]["posted"] == final["rewards"]["applied"] == 6 * 4 * 4
    for name in ("curves.png", "gallery.png", "metrics.jsonl", "checkpoint.pt", "service.log"):
        assert (out / name).stat().st_size > 0, name
    assert any((out / "redis").iterdir())  # the AOF stays, as documented
    service_port = int(re.search(r"reward service: http://127.0.0.1:(\d+)", result.stdout).group(1))
    redis_port = int(re.search(r"redis://127.0.0.1:(\d+)/0", (out / "service.log").read_text()).group(1))
    assert not _listening(service_port) and not _listening(redis_port)  # both stopped with the demo


def test_a_killed_demo_takes_its_children_with_it(tmp_path) -> None:
    """SIGKILL gives the demo no chance to clean up: Redis and the service must still go (PDEATHSIG)."""
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    demo = subprocess.Popen([sys.executable, "-m", "rss.cli", "demo", "--steps", "100000", "--out", str(out),
                             "--port", "0", "--no-progress"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        line = ""
        while "reward service:" not in line and demo.poll() is None:  # printed once the service is ready
            line = demo.stdout.readline()
        service_port = int(re.search(r"http://127.0.0.1:(\d+)", line).group(1))
        redis_port = int(re.search(r"redis://127.0.0.1:(\d+)/0", (out / "service.log").read_text()).group(1))
        assert _listening(service_port) and _listening(redis_port)
    finally:
        demo.kill()
        demo.wait(10)
        demo.stdout.close()
    deadline = time.monotonic() + 15
    while (_listening(service_port) or _listening(redis_port)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _listening(service_port) and not _listening(redis_port)


@pytest.mark.parametrize("flags", [[], ["--human-task", "pairwise"]], ids=["brush", "pairwise"])
def test_a_human_demo_asks_the_best_questions_per_human_hour(tmp_path, flags: list[str]) -> None:
    """`rss demo --scorer human`: brush corrections of the model's best guess from scratch, every answer kept and
    trusted away from edges; with --human-task pairwise, CE on a few labelled images first, then region pairs.
    Answered here by `rss rater-sim` with the token the demo prints, as a person in the browser would."""
    out = tmp_path / "human"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    demo = subprocess.Popen([sys.executable, "-m", "rss.cli", "demo", "--scorer", "human", *flags, "--steps", "3",
                             "--out", str(out), "--port", "0", "--batch-size", "4", "--shapes-size", "32",
                             "--train-size", "32", "--val-size", "8", "--eval-every", "3", "--warm-steps", "5",
                             "--no-progress", *(["--warm-images", "4"] if flags else [])], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sim = None
    try:
        line = ""
        while "rater token:" not in line and demo.poll() is None:
            line = demo.stdout.readline()
        url = re.search(r"annotator UI: (http://127.0.0.1:\d+)/ui/", line).group(1)
        token = re.search(r"rater token: (\S+)", line).group(1)
        sim = subprocess.Popen([sys.executable, "-m", "rss.cli", "rater-sim", "--service-url", url, "--shapes-size",
                                "32", "--max-tasks", str(3 * 4), "--idle-s", "60"], cwd=REPO,
                               env={**env, "RSS_RATER_TOKEN": token}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        rest, err = demo.communicate(timeout=300)
        assert demo.returncode == 0, err[-3000:]
        answered, sim_err = sim.communicate(timeout=60)
        assert sim.returncode == 0 and "answered 12 tasks" in answered, sim_err[-2000:]
    finally:
        for proc in (demo, sim):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    final = json.loads((out / "final.json").read_text())
    config = final["config"]
    assert config["replay"] > 0
    if not flags:
        assert "warm start" not in rest and "to paint what is wrong in the model's most likely mask" in rest
        assert config["init_from"] is None and (config["reward"], config["first_mask"]) == ("pixel", "mode")
        assert (config["replay_updates"], config["replay_margin"]) == (96, 1)
        assert final["rewards"]["posted"] == final["rewards"]["applied"] == 3 * 4
        return
    assert "warm start: CE on 4 labelled images, 5 steps" in rest and "pairwise questions, about one region" in rest
    assert config["init_from"] == str(out.resolve() / "warm" / "checkpoint.pt") and config["pairs"] == "region"
    assert config["replay_updates"] == 7 and config["psr"] is False
    assert final["rewards"]["posted"] == final["rewards"]["applied"] == 3 * 4 * 2
    assert json.loads((out / "warm" / "final.json").read_text())["config"]["train_size"] == 4


def test_flags_given_to_a_human_demo_keep_their_values() -> None:
    from rss.demo import parse

    best_of = parse(["--scorer", "human", "--human-task", "best", "--samples", "6", "--lr", "1e-3"])
    assert (best_of.human_task, best_of.samples, best_of.pairs, best_of.lr) == ("best", 6, "region", 1e-3)
    assert parse(["--scorer", "human", "--human-task", "best"]).samples == 4  # best_warm_region's question
    sampled = parse(["--scorer", "human", "--human-task", "pairwise", "--pairs", "sample"])
    assert (sampled.samples, sampled.pairs) == (2, "sample")
    assert parse(["--scorer", "human", "--human-task", "score"]).pairs == "sample"
    assert best_of.replay > 0 and best_of.psr is False  # the learning flags not given still follow the bench
    brush = parse(["--scorer", "human", "--reward", "pixel", "--replay-updates", "8"])
    assert (brush.first_mask, brush.replay_margin, brush.replay_updates, brush.warm_start()) == ("mode", 1, 8, False)
    pairs = parse(["--scorer", "human", "--reward", "image"])
    assert (pairs.pairs, pairs.samples, pairs.warm_images, pairs.warm_start()) == ("region", 2, 16, True)
    points = parse(["--scorer", "human", "--reward", "pixel", "--points", "10"])
    assert (points.replay_margin, points.warm_images, points.reward) == (0, 16, "pixel")
    plain = parse(["--scorer", "human", "--no-human-best"])
    assert (plain.pairs, plain.replay, plain.warm_start()) == ("sample", 0, False)
    assert parse([]).pairs == "sample" and not parse([]).warm_start()  # ground truth: nothing changes


def test_the_demo_serves_the_learners_procedural_split() -> None:
    from learner.train import build_splits
    from reward_service.core.config import Settings
    from rss.demo import parse, service_dataset
    from rss_core.data import build_dataset

    for argv in (["--dataset", "scenes", "--scenes-size", "48", "--train-size", "6"], ["--shapes-size", "32"]):
        args = parse(argv)
        env = service_dataset(args)
        settings = Settings(_env_file=None, **{k.removeprefix("RSS_").lower(): v for k, v in env.items()})
        served = build_dataset(settings.dataset, settings.split, shapes_size=settings.shapes_size,
                               scenes_size=settings.scenes_size, shapes_length=settings.shapes_length,
                               seed=settings.seed)
        train = build_splits(args)[0]
        assert served.fingerprint() == train.fingerprint() and served.ids == train.ids, argv
