"""Real parts for the fault tests: a durable redis-server that a test may SIGKILL and restart."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rss.procs import free_port


class DurableRedis:
    """A redis-server of one test's own, with its append-only file fsynced on every write.

    `kill()` SIGKILLs it (no shutdown, no final fsync); `start()` starts it again on the same port
    and folder, so it replays the append-only file, as a crashed production Redis restarts."""

    def __init__(self, folder: Path, fsync: str = "always") -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/run does this)")
        self.exe, self.folder, self.fsync = exe, folder, fsync
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.popen: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.popen = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", self.fsync, "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with self.client() as c:
                    if c.ping():
                        return
            except redis.ConnectionError:  # refused, or still loading its append-only file
                time.sleep(0.05)
        self.popen.kill()
        pytest.fail(f"redis-server on port {self.port} did not answer within {timeout} s")

    def kill(self) -> None:
        assert self.popen is not None
        self.popen.kill()
        self.popen.wait(10)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=10)


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[DurableRedis]:
    server = DurableRedis(tmp_path / "redis")
    server.folder.mkdir()
    server.start()
    yield server
    if server.popen is not None and server.popen.poll() is None:
        server.popen.terminate()
        server.popen.wait(10)
