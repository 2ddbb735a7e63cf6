"""The service's child processes (`rss serve` starts its scoring workers): stopping one, and tying one to its parent.

`rss.procs` uses the same two for every process the system tools start.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)


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


class Supervised:
    """``count`` copies of the child ``argv``, kept running: one that exits before `stop()` is logged with its
    exit code and started again, after 1 s, doubling to ``max_backoff_s`` while copies keep dying within
    ``healthy_s`` of their start (a worker that cannot start does not spin). `rss serve` keeps its scoring
    workers so: a crashed worker would otherwise leave a service that accepts episodes and scores none.

    A watcher thread polls every ``poll_s`` and starts the replacements; PR_SET_PDEATHSIG follows the thread
    that started a child, so the watcher lives until `stop()`, which ends them all.
    """

    def __init__(self, argv: Sequence[str], count: int, what: str, *, poll_s: float = 0.5,
                 max_backoff_s: float = 30.0, healthy_s: float = 60.0) -> None:
        self.argv, self.what, self.poll_s = list(argv), what, poll_s
        self.max_backoff_s, self.healthy_s = max_backoff_s, healthy_s
        self.restarts = 0
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.procs = [self._spawn() for _ in range(count)]
        now = time.monotonic()
        self._started = [now] * count
        self._delay = [0.0] * count  # the backoff of each slot's last restart
        self._due: list[float | None] = [None] * count  # when a dead slot's replacement starts
        self._thread = threading.Thread(target=self._watch, name=f"supervise {what}", daemon=True)
        self._thread.start()

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen(self.argv, preexec_fn=die_with_parent)

    def _watch(self) -> None:
        while not self._done.wait(self.poll_s):
            with self._lock:
                for i, proc in enumerate(self.procs):
                    if proc.poll() is None or self._done.is_set():
                        continue
                    now = time.monotonic()
                    if self._due[i] is None:
                        lived = now - self._started[i]
                        self._delay[i] = 1.0 if lived >= self.healthy_s or not self._delay[i] else \
                            min(self.max_backoff_s, 2 * self._delay[i])
                        self._due[i] = now + self._delay[i]
                        log.error("%s (pid %d) exited with code %s after %.1f s; starting another in %g s",
                                  self.what, proc.pid, proc.returncode, lived, self._delay[i])
                    if now >= self._due[i]:
                        self.procs[i] = self._spawn()
                        self._started[i], self._due[i] = now, None
                        self.restarts += 1
                        log.warning("%s restarted (pid %d; %d restarts so far)", self.what, self.procs[i].pid,
                                    self.restarts)

    def stop(self, timeout: float = 15.0) -> None:
        """No more restarts; SIGTERM every copy at once, then wait for each (SIGKILL after ``timeout``)."""
        self._done.set()
        self._thread.join()
        with self._lock:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in self.procs:
                stop(proc, self.what, timeout)
