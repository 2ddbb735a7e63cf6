"""Real parts for the fault tests: a durable redis-server that a test may SIGKILL and restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rss.procs import RedisProcess, StartError, start_redis


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of one test's own, with its append-only file fsynced on every write.

    `kill()` SIGKILLs it (no shutdown, no final fsync); `start()` starts it again on the same port
    and folder, so it replays the append-only file, as a crashed production Redis restarts."""
    try:
        server = start_redis(tmp_path / "redis", durable="always", startup_s=10.0)
    except (FileNotFoundError, StartError) as exc:
        pytest.fail(str(exc))
    with server:
        yield server
