"""`rss bench loop` with a tiny budget: both runs happen, and the JSON holds what the issue names."""

from __future__ import annotations

import json

from tests.helpers.cli import run_rss


def test_bench_loop_measures_both_loops_and_they_learn_the_same(tmp_path) -> None:
    report = tmp_path / "loop.json"
    result = run_rss("bench", "loop", "--steps", "4", "--out", str(tmp_path / "runs"), "--json", str(report),
                     "--dataset", "shapes", "--shapes-size", "32", "--train-size", "32", "--val-size", "8",
                     "--batch-size", "2", "--samples", "4", "--psr-scales", "8", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(report.read_text())
    assert set(figures) == {"in_process_steps_per_s", "remote_steps_per_s", "ratio", "in_process_val_miou",
                            "remote_val_miou"}
    assert figures["in_process_steps_per_s"] > 0 and figures["remote_steps_per_s"] > 0
    assert figures["ratio"] == round(figures["remote_steps_per_s"] / figures["in_process_steps_per_s"], 3)
    # --max-inflight 0: the remote run applies exactly the in-process rewards
    assert figures["remote_val_miou"] == figures["in_process_val_miou"]
    assert "| remote, `--max-inflight 0` |" in result.stdout and "applied 32" in result.stdout


def test_bench_loop_names_a_bad_flag(tmp_path) -> None:
    result = run_rss("bench", "loop", "--steps", "0", "--out", str(tmp_path))
    assert result.returncode == 2 and "--steps must be >= 1" in result.stderr
