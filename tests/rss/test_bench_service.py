"""`rss bench service` end to end on tiny masks: it runs, checks itself and writes its JSON (speed is not asserted)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.helpers.cli import run_rss

KEYS = ("in_process_masks_per_s", "through_service_masks_per_s", "ratio", "p50_ms", "p99_ms",
        "v1_cpu_us_per_mask", "v2_cpu_us_per_mask", "open_loop_p50_ms", "open_loop_p99_ms", "synthetic_steps_per_s")


def test_bench_service_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = run_rss("bench", "service", "--masks", "40", "--size", "64", "--shaped-posts", "3", "--open-loop-posts", "3",
                   "--json", str(out), timeout=180)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-3000:]}"
    report = json.loads(out.read_text())
    for key in KEYS:
        value = report[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    assert report["masks"] == 40 and report["size"] == 64
    assert "through the service" in done.stdout
    # learner-shaped traffic through both wires, every reward checked against in-process by the bench itself
    assert report["shaped"]["posts"] == 3 and report["shaped"]["masks_per_post"] == 16 * 32
    assert "v2  binary, entry per episode" in done.stdout
    assert [row["inflight"] for row in report["shaped"]["synthetic"]] == [0, 2]
