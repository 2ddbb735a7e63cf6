"""A scoring worker that dies (a crash in native code, the OOM killer) is started again by `rss serve`."""

from __future__ import annotations

import os
import signal
import time
from contextlib import suppress
from pathlib import Path

import redis

from rss.procs import RedisProcess, children
from rss_core import codec
from tests.helpers.client import client, read_results, register
from tests.helpers.factories import episode, label_of
from tests.helpers.service import DATABASES, service_env, start_service

DB = DATABASES["faults_worker_restart"]


def workers_of(pid: int) -> list[int]:
    """The live `rss worker` children of `rss serve` process ``pid`` (a zombie's command line is empty)."""
    found = []
    for child in children(pid) or []:
        with suppress(OSError):
            if b"reward_service\x00worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
    return found


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout:g} s")


def test_a_killed_worker_is_started_again_and_scoring_goes_on(redis_server: RedisProcess) -> None:
    """SIGKILL the only scoring worker twice: each time `rss serve` logs its exit code, starts another (the second
    after a longer backoff, since the first replacement died young), and an episode sent while none ran is scored."""
    url = redis_server.db_url(DB)
    with redis.Redis.from_url(url, socket_timeout=10) as r:
        r.flushdb()
        with start_service(service_env(redis_server, redis_url=url, worker_processes=1)) as service, \
                client(service.url) as learner:
            register(learner, "restart")
            for _ in range(2):
                (worker,) = wait_for(lambda: workers_of(service.popen.pid), 10, "a worker")
                os.kill(worker, signal.SIGKILL)
                wait_for(lambda w=worker: w not in workers_of(service.popen.pid), 10, "the killed worker gone")
                sent = learner.post("/v1/episodes", json=episode("restart", [codec.raw_mask(label_of())]))
                assert sent.status_code == 202, sent.text
                (result,) = read_results(r, "restart", 1, timeout=60)
                assert result["reward"] == 1.0, result
                (replacement,) = workers_of(service.popen.pid)
                assert replacement != worker
            log = service.log()
    assert log.count("exited with code -9") == 2, log[-3000:]
    assert "starting another in 1 s" in log and "starting another in 2 s" in log, log[-3000:]
