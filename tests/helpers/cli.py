"""Running the `rss` command line in a subprocess, and the flags of a small training run."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO

# A small shapes training (32 px, 64 train / 16 val images, 12 steps): seconds on one CPU thread.
SMALL = ["--dataset", "shapes", "--shapes-size", "32", "--train-size", "64", "--val-size", "16", "--batch-size", "4",
         "--samples", "4", "--psr-scales", "8", "--steps", "12", "--eval-every", "6", "--threads", "1",
         "--no-progress"]


def run_rss(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed `rss` entry point in a subprocess, one torch thread; ``env`` adds variables."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "rss.cli", *args], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=timeout,
    )
