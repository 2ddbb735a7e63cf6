"""`rss bench service` end to end on tiny masks: it runs, checks itself and writes its JSON (speed is not asserted)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.helpers.cli import run_rss

KEYS = ("in_process_masks_per_s", "through_service_masks_per_s", "ratio", "p50_ms", "p99_ms")


def test_bench_service_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = run_rss("bench", "service", "--masks", "40", "--size", "64", "--json", str(out), timeout=120)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-3000:]}"
    report = json.loads(out.read_text())
    for key in KEYS:
        value = report[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    assert report["masks"] == 40 and report["size"] == 64
    assert "through the service" in done.stdout
