"""`rss bench data` on a tiny folder: it writes the folder once, trains on it per --data-workers, and reports."""

from __future__ import annotations

import json

from rss_core.data import build_dataset
from tests.helpers.cli import run_rss


def test_bench_data_writes_a_folder_and_measures_each_worker_count(tmp_path) -> None:
    root, path = tmp_path / "voc", tmp_path / "data.json"
    argv = ["bench", "data", "--root", str(root), "--images", "6", "--size", "32", "--steps", "2", "--batch-size",
            "2", "--workers", "0", "1", "--out", str(tmp_path / "runs"), "--json", str(path)]
    result = run_rss(*argv, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = json.loads(path.read_text())["rows"]
    assert [r["workers"] for r in rows] == [0, 1]
    assert all(r["peak_pss_mib"] > 10 and r["seconds"] > 0 and r["processes"] >= 1 for r in rows), rows
    assert "--data-workers 1: peak" in result.stdout
    train = build_dataset("voc", "train", root=root)
    assert len(train) == 6 and train.load(train.ids[0])[0].shape == (32, 32, 3)
    for workers in (0, 1):
        assert json.loads((tmp_path / "runs" / f"workers-{workers}" / "final.json").read_text())["steps"] == 2
    bad = run_rss("bench", "data", "--workers", timeout=60)
    assert bad.returncode == 2 and "--workers" in bad.stderr
