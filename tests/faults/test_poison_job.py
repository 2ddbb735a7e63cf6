"""A poison job: an episode whose scoring kills the worker (SIGKILL mid-call) on every attempt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import redis

from rss.procs import RedisProcess, free_port
from rss_core import codec
from tests.helpers import REPO
from tests.helpers.client import register
from tests.helpers.factories import episode, label_of
from tests.helpers.service import DATABASES, LEARNER_TOKEN, allow, service_env, start_service

DB = DATABASES["faults_poison"]
POISON = "train/000007"
MAX_ATTEMPTS = 2


class Killer:
    """An external endpoint that SIGKILLs the scoring worker calling it when the episode is the poison one
    (the crash a bad input causes in a scorer's native code), and scores the rest 0.5."""

    def __init__(self) -> None:
        self.worker: subprocess.Popen | None = None
        self.kills = 0
        killer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                request = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if request["image_id"] == POISON and killer.worker is not None:
                    killer.kills += 1
                    os.kill(killer.worker.pid, signal.SIGKILL)  # mid-call: the worker never hears back
                    killer.worker.wait(10)
                    return
                body = json.dumps({"rewards": [0.5] * len(request["samples"])}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/score"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_job_that_kills_its_worker_every_time_ends_failed_and_spares_its_batch(
        redis_server: RedisProcess) -> None:
    """The poison episode and an innocent one go out in one batch, to one worker. Each crash counts as an
    attempt: after RSS_MAX_ATTEMPTS (2) crashes the poison is dead-lettered, saying the worker died, and no
    worker is killed again. Jobs reclaimed after a crash are retried one at a time, so the innocent episode,
    which shared the first crashed batch, is scored. Before, every crash also spent the attempts of the
    whole batch the poison was in: the innocent episode was dead-lettered with it, `out of attempts`."""
    url = redis_server.db_url(DB)
    r = redis.Redis.from_url(url)
    r.flushdb()
    killer = Killer()
    env = service_env(redis_server, redis_url=url, worker_processes=0, max_attempts=MAX_ATTEMPTS, retry_idle_s=1.5,
                      http_timeout_s=0.5, http_retries=0, worker_batch=16,
                      http_endpoint_allow=allow(killer.server.server_port))
    worker_env = {**os.environ, **env}

    def start_worker() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "reward_service", "worker"], cwd=REPO, env=worker_env)

    killer.worker = start_worker()
    restarts = 0
    try:
        with start_service(env) as service, httpx.Client(
                base_url=service.url, headers={"Authorization": f"Bearer {LEARNER_TOKEN}"}, timeout=30) as learner:
            register(learner, "poison", scorer="http", endpoint=killer.url)
            body = {"episodes": [episode("poison", [codec.raw_mask(label_of(image))], image_id=image)
                                 for image in (POISON, "train/000003")]}
            accepted = learner.post("/v1/episodes/batch", json=body)
            assert accepted.status_code == 202, accepted.text
            poison, innocent = (e["episode_id"] for e in accepted.json()["episodes"])
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                statuses = [learner.get(f"/v1/episodes/{e}").json() for e in (poison, innocent)]
                if all(s["status"] in ("scored", "failed") for s in statuses):
                    break
                if killer.worker.poll() is not None:  # a supervisor restarts the dead worker
                    killer.worker = start_worker()
                    restarts += 1
                time.sleep(0.2)
    finally:
        killer.worker.kill()
        killer.worker.wait(10)
        killer.server.shutdown()
        killer.server.server_close()  # the listening socket, or it is collected unclosed in a later test
    poisoned, spared = statuses
    assert killer.kills == MAX_ATTEMPTS and restarts == MAX_ATTEMPTS, (killer.kills, restarts)
    assert poisoned["status"] == "failed", poisoned
    assert spared["status"] == "scored", spared
    assert "ended without an outcome (the worker crashed or was killed mid-scoring)" in poisoned["reason"], poisoned
    results = [json.loads(f[b"payload"]) for _, f in r.xrange("rss:v1:results:poison")]
    assert {(x["episode_id"], x.get("reward"), "error" in x) for x in results} == {
        (poison, None, True), (innocent, 0.5, False)}
    (letter,) = [json.loads(f[b"payload"]) for _, f in r.xrange("rss:v1:deadletter")]
    r.close()
    assert letter["id"] == poison
