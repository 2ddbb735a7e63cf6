"""`rss demo` smoke test: Redis, the service and remote training from one command, nothing left running."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

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
