"""`rss bench ui` end to end with a tiny budget: it drives the UI, checks itself and writes its JSON
(speed is not asserted)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.helpers.cli import run_rss


def test_bench_ui_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = run_rss("bench", "ui", "--tasks", "3", "--size", "64", "--frames", "5", "--think-s", "0.2",
                   "--json", str(out), timeout=240)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-3000:]}"
    report = json.loads(out.read_text())
    for key in ("submit_to_next_p95_ms", "overlay_1024_ms"):
        value = report[key]
        assert isinstance(value, float) and math.isfinite(value) and 0 < value < 60_000, (key, value)
    assert report["submit_to_next_p50_ms"] <= report["submit_to_next_p95_ms"]
    frames = report["answer_to_frame_p95_ms"]  # the key press to the second frame of the next task
    assert list(frames) == ["score"] and report["submit_to_next_p95_ms"] < frames["score"] < 60_000, report
    assert "answer key -> second frame after the next score task is drawn" in done.stdout
    assert report["tasks"] == 3 and report["size"] == 64
    assert "submit -> next task drawn" in done.stdout
