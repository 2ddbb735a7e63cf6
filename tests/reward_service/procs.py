"""Start and stop real uvicorn processes on free loopback ports, for tests that talk HTTP to a server."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from rss.procs import free_port, stop

REPO = Path(__file__).resolve().parents[2]


class Proc:
    """A running uvicorn subprocess: ``url`` is its base URL; `stop()` ends it and removes its log."""

    def __init__(self, popen: subprocess.Popen, port: int, log_path: Path, log_file) -> None:
        self.popen, self.port, self.log_path, self._log_file = popen, port, log_path, log_file
        self.url = f"http://127.0.0.1:{port}"

    def log(self) -> str:
        """What the process wrote to stdout and stderr so far."""
        self._log_file.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        stop(self.popen, timeout=timeout)
        if not self._log_file.closed:
            self._log_file.close()
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _launch(argv: list[str], env: dict | None, port: int, startup_s: float, health_path: str, what: str) -> Proc:
    log_file = tempfile.NamedTemporaryFile("w+b", prefix="uvicorn-", suffix=".log", delete=False)
    popen = subprocess.Popen(
        argv, cwd=REPO, env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
    )
    proc = Proc(popen, port, Path(log_file.name), log_file)
    deadline = time.monotonic() + startup_s
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            break
        try:
            if httpx.get(proc.url + health_path, timeout=1.0).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    log = proc.log()
    code = popen.poll()
    proc.stop()
    how = f"exited with code {code}" if code is not None else f"did not answer {health_path} within {startup_s:g} s"
    raise RuntimeError(f"{what} on port {port} {how}; its output:\n{log}")


def _start(argv: Callable[[int], list[str]], env: dict | None, port: int | None, startup_s: float,
           health_path: str, what: str) -> Proc:
    tries = 1 if port is not None else 3  # a picked port can be taken before the server binds it
    for attempt in range(1, tries + 1):
        chosen = port if port is not None else free_port()
        try:
            return _launch(argv(chosen), env, chosen, startup_s, health_path, what)
        except RuntimeError as exc:
            if attempt == tries or "address already in use" not in str(exc).lower():
                raise
    raise AssertionError("not reached")


def start_uvicorn(
    app_path: str,
    env: dict | None = None,
    port: int | None = None,
    *,
    startup_s: float = 30.0,
    health_path: str = "/health",
) -> Proc:
    """Run ``python -m uvicorn app_path`` from the repo root and wait (bounded) until ``health_path`` answers 200.

    ``env`` is added to this process's environment. Without ``port`` a free one is picked, and
    picked again (up to 3 times) if another process took it first.
    """
    def argv(p: int) -> list[str]:
        return [sys.executable, "-m", "uvicorn", app_path, "--host", "127.0.0.1", "--port", str(p)]

    return _start(argv, env, port, startup_s, health_path, f"uvicorn {app_path}")


def start_service(env: dict | None = None, port: int | None = None, *, startup_s: float = 60.0) -> Proc:
    """Run the reward service as `rss serve` does, with ``env`` (its RSS_* settings); waits for /v1/ready."""
    def argv(p: int) -> list[str]:
        return [sys.executable, "-m", "rss.cli", "serve", "--host", "127.0.0.1", "--port", str(p)]

    return _start(argv, env, port, startup_s, "/v1/ready", "rss serve")
