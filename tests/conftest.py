"""Shared fixtures: tiny datasets in the standard layouts, a real redis-server (helpers are in tests/helpers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rss.procs import RedisProcess, StartError, start_redis
from tests.helpers.factories import write_voc
from tests.helpers.service import live_logs


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries the recent output of every service and scorer still running: a scoring
    worker that died or logged an error says so there, not in the assertion about a missing result."""
    report = yield
    if report.failed and call.when == "call":
        for name, tail in live_logs():
            report.sections.append((f"output of {name} (last 4000 characters)", tail or "(nothing)"))
    return report


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """A VOC-2012-layout folder: 6 train / 2 val images of 40x48, palette labels with a 255 border."""
    return write_voc(tmp_path)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One throwaway redis-server per test session (no persistence), on loopback only."""
    try:
        server = start_redis(tmp_path_factory.mktemp("redis"))
    except FileNotFoundError as exc:
        pytest.fail(f"{exc} (.ci/run installs redis-server)")
    except StartError as exc:
        pytest.fail(str(exc))
    with server:
        yield server


@pytest.fixture
def redis_client(redis_server: RedisProcess) -> Iterator[redis.Redis]:
    """A client to a flushed Redis (every database): each test starts with no runs, episodes or streams."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()
