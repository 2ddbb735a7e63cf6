"""One of two `rss serve` replicas (same Redis database) SIGKILLed, with its scoring worker, under load."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import redis

from rss.procs import RedisProcess, ServiceProcess
from rss_core import codec
from tests.helpers.client import register
from tests.helpers.service import DATABASES, LEARNER_TOKEN, service_env, start_service

DB = DATABASES["faults_replicas"]
SAMPLES, PER_POST, POSTERS = 4, 4, 4


def kill_hard(proc: ServiceProcess) -> list[str]:
    """SIGKILL `rss serve` and its scoring workers at once: no shutdown code runs anywhere (a machine lost).

    Returns the workers' pids."""
    pid = proc.popen.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        os.kill(int(child), signal.SIGKILL)
    proc.popen.kill()
    proc.popen.wait(10)
    return children


def batch_body(rng: np.random.Generator, n: int) -> str:
    episodes = [{"run_id": "replicas", "image_id": f"train/{rng.integers(0, 16):06d}", "level": "image",
                 "policy_version": 0,
                 "samples": [codec.raw_mask(m).model_dump(mode="json")
                             for m in rng.integers(0, 4, (SAMPLES, 32, 32), dtype=np.uint8)]}
                for _ in range(n)]
    return json.dumps({"episodes": episodes})


def test_a_replica_killed_under_load_loses_no_accepted_episode(redis_server: RedisProcess,
                                                               redis_client: redis.Redis) -> None:
    """Clients post to both replicas round-robin; one replica dies mid-load. Every 202'd episode is scored
    (the dead replica's worker's jobs are reclaimed by the other's), and clients get errors to retry on
    (refused or reset connections), never a hang."""
    env = service_env(redis_server, redis_url=redis_server.db_url(DB), shapes_size=32, retry_idle_s=2.0,
                      http_timeout_s=0.5, http_retries=0, results_trim_every_s=3600)
    r = redis.Redis.from_url(redis_server.db_url(DB), socket_timeout=10)
    with contextlib.closing(r), start_service(env) as a, start_service(env) as b:
        with httpx.Client(base_url=a.url, headers={"Authorization": f"Bearer {LEARNER_TOKEN}"}, timeout=30) as c:
            register(c, "replicas", scorer="gt")
        accepted: list[str] = []
        outcomes: Counter[str] = Counter()
        killed, done = threading.Event(), threading.Event()
        lock = threading.Lock()

        def post(seed: int) -> None:
            rng = np.random.default_rng(seed)
            bodies = [batch_body(rng, PER_POST) for _ in range(4)]
            headers = {"Authorization": f"Bearer {LEARNER_TOKEN}", "Content-Type": "application/json"}
            with httpx.Client(headers=headers, timeout=5.0) as http:
                for i in range(10_000):  # bounded: `done` ends it within seconds
                    if done.is_set():
                        return
                    url = (a.url, b.url)[(i + seed) % 2]
                    try:
                        response = http.post(f"{url}/v1/episodes/batch", content=bodies[i % len(bodies)])
                        what = str(response.status_code)
                        if response.status_code == 202:
                            with lock:
                                accepted.extend(e["episode_id"] for e in response.json()["episodes"])
                    except httpx.TimeoutException:
                        what = "timeout"  # a hang: what this test must never see
                    except httpx.TransportError as exc:
                        what = type(exc).__name__
                    with lock:
                        outcomes[f"{'after' if killed.is_set() else 'before'} {what}"] += 1

        threads = [threading.Thread(target=post, args=(seed,)) for seed in range(POSTERS)]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 60
            while len(accepted) < 20 * PER_POST and time.monotonic() < deadline:
                time.sleep(0.02)
            with lock:  # what Redis was asked to keep, and what was scored, at the kill
                at_kill = len(accepted)
            scored_at_kill = sum(1 for k in r.scan_iter("rss:v1:episode:*") if r.hget(k, "status") == b"scored")
            workers = kill_hard(b)
            killed.set()
            held = sum(c["pending"] for c in r.xinfo_consumers("rss:v1:jobs", "scorers")
                       if any(f"-{pid}-" in c["name"].decode() for pid in workers))
            time.sleep(1.0)
        finally:
            done.set()
            for t in threads:
                t.join(30)
        # every episode that got a 202 is scored: K results each, written once, by the surviving replica's worker
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            statuses = [r.hget(f"rss:v1:episode:{e}", "status") for e in accepted]
            if all(s == b"scored" for s in statuses):
                break
            time.sleep(0.5)
        results: Counter[tuple[str, int]] = Counter()
        for _, fields in r.xrange("rss:v1:results:replicas"):
            result = json.loads(fields[b"payload"])
            results[(result["episode_id"], result["sample_index"])] += 1
    assert set(statuses) == {b"scored"}, Counter(statuses)
    assert all(results[(e, i)] == 1 for e in accepted for i in range(SAMPLES))
    assert max(results.values()) == 1  # no result written twice
    assert not [k for k in outcomes if k.endswith("timeout")], outcomes  # no hang
    assert not [k for k in outcomes if k.split()[1] not in ("202", "ConnectError", "ReadError",
                                                            "RemoteProtocolError", "503")], outcomes
    assert outcomes["after ConnectError"] > 0 and outcomes["after 202"] > 0  # B refused, A kept accepting
    print(f"accepted {len(accepted)} episodes ({at_kill} before the kill, {at_kill - scored_at_kill} of them "  # noqa: T201
          f"not yet scored then; {held} jobs held by the dead worker); outcomes {dict(outcomes)}")
