"""Redis SIGKILLed and restarted mid-run (append-only file, `appendfsync always`) under a training learner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx

from rss.procs import RedisProcess
from rss_core.wire import samples_of
from tests.helpers import REPO
from tests.helpers.audit import ledger, wait_until_scored
from tests.helpers.service import LEARNER_TOKEN, service_env, start_service

STEPS, BATCH, SAMPLES = 30, 4, 4
TRAIN = ["--dataset", "shapes", "--shapes-size", "32", "--train-size", "64", "--val-size", "16", "--batch-size",
         str(BATCH), "--samples", str(SAMPLES), "--psr-scales", "8", "--steps", str(STEPS), "--eval-every",
         str(STEPS), "--threads", "1", "--no-progress", "--max-inflight", "1", "--service-retry-s", "60",
         "--reward-timeout-s", "120"]


def results_by_episode(client, run_id: str) -> dict[str, list[int]]:
    """Every result in the run's stream (nothing is trimmed here; a v2 entry holds a whole episode): episode id ->
    sample indices."""
    found: dict[str, list[int]] = {}
    for _, fields in client.xrange(f"rss:v1:results:{run_id}"):
        for sample in samples_of(fields):
            found.setdefault(sample.episode_id, []).append(sample.sample_index)
    return found


def test_redis_killed_and_restarted_mid_run_loses_no_accepted_episode(durable_redis: RedisProcess, tmp_path) -> None:
    """Every episode accepted before the kill is scored once and applied once after the restart; the learner,
    the HTTP process and the scoring worker reconnect by themselves."""
    env = service_env(durable_redis, shapes_size=32, shapes_length=64, retry_idle_s=3.0, results_trim_every_s=3600,
                      http_timeout_s=1.0, http_retries=0)
    out = tmp_path / "run"
    with start_service(env) as service:
        learner = subprocess.Popen(
            [sys.executable, "-m", "rss.cli", "train", *TRAIN, "--out", str(out), "--reward-source", "remote",
             "--service-url", service.url, "--redis-url", durable_redis.url],
            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", "RSS_LEARNER_TOKEN": LEARNER_TOKEN},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not any(e["step"] >= 4 for e in ledger(out)):
                assert learner.poll() is None, learner.stderr.read()[-3000:]
                assert time.monotonic() < deadline, "the learner applied nothing in 120 s"
                time.sleep(0.02)
            with durable_redis.client() as c:  # what Redis holds at the kill: every episode it accepted so far
                accepted = {k.decode().rpartition(":")[2] for k in c.scan_iter("rss:v1:episode:*")}
            applied_at_kill = {e for entry in ledger(out) for e in entry["episodes"]}
            durable_redis.kill()
            time.sleep(2.0)  # an outage long enough for every client's own quick retries to give up
            durable_redis.start()
            _, err = learner.communicate(timeout=180)
        finally:
            learner.kill()
        assert learner.returncode == 0, err[-3000:]
        assert httpx.get(f"{service.url}/v1/ready", timeout=5).status_code == 200  # the worker polls again
    final = json.loads((out / "final.json").read_text())
    counts = final["rewards"]
    in_flight = accepted - applied_at_kill
    assert 0 < len(in_flight) <= 3 * BATCH  # the kill hit episodes between POST and update
    assert counts.get("redis_errors", 0) + counts.get("post_retries", 0) > 0  # the learner saw the outage
    # every episode the learner got a 202 for was applied, once; nothing was dropped or left late
    assert counts["posted"] == counts["applied"] == STEPS * BATCH * SAMPLES
    assert counts.get("late", 0) == counts.get("failed", 0) == counts.get("duplicates", 0) == 0
    applied = [episode for entry in ledger(out) for episode in entry["episodes"]]
    assert sorted(entry["posted_step"] for entry in ledger(out)) == list(range(STEPS))
    assert len(applied) == len(set(applied)) == STEPS * BATCH
    assert accepted <= set(applied)  # in flight at the kill, applied after the restart
    with durable_redis.client() as c:
        wait_until_scored(c)  # a job the outage interrupted is retried after RSS_RETRY_IDLE_S: audit its result too
        results = results_by_episode(c, "run")
        pending = c.xpending("rss:v1:results:run", "learner")["pending"]
    # each applied episode was scored exactly once: one result per sample in the stream, no more
    assert all(sorted(results[e]) == list(range(SAMPLES)) for e in applied)
    assert counts.get("orphaned", 0) == len(set(results) - set(applied)) <= BATCH  # see docs/reliability.md
    assert pending == 0
    print(f"in flight at the kill: {len(in_flight)} episodes; redis errors seen by the learner: "  # noqa: T201
          f"{counts.get('redis_errors', 0)}, post retries: {counts.get('post_retries', 0)}, orphaned: "
          f"{counts.get('orphaned', 0)}")
