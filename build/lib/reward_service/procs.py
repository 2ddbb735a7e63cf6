"""The service's child processes (`rss serve` starts its scoring workers): stopping one, and tying one to its parent.

`rss.procs` uses the same two for every process the system tools start.
"""

from __future__ import annotations

import logging
import signal
import subprocess

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
