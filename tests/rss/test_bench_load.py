"""`rss bench load` with a tiny budget: its JSON has the figures, and nothing accepted was lost or applied twice."""

from __future__ import annotations

import json

from tests.helpers.cli import run_rss


def test_bench_load_loses_nothing_and_writes_its_figures(tmp_path) -> None:
    path = tmp_path / "load.json"
    result = run_rss("bench", "load", "--learners", "2", "--raters", "1", "--seconds", "2", "--episodes", "4",
                     "--drain-s", "60", "--json", str(path), timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads(path.read_text())
    assert figures["accepted"] > 0 and figures["accepted"] == figures["scored"] == figures["applied"]
    assert figures["lost"] == figures["applied_twice"] == figures["written_twice"] == 0
    assert isinstance(figures["p99_ms"], float) and figures["p99_ms"] >= figures["p50_ms"] > 0
    assert not any(status.startswith("5") for status in figures["errors"]) and figures["held"] is True
    assert "held: lost 0" in result.stdout
