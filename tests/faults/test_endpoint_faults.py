"""An external scorer that fails some episodes (500, garbage, timeout) during a training run through the service."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import numpy as np
import pytest
import redis

from rss.procs import RedisProcess
from rss_core import codec
from rss_core.schemas import ExternalScoreRequest, Grid
from tests.helpers.cli import run_rss
from tests.helpers.service import (
    DATABASES,
    LEARNER_TOKEN,
    allow,
    reserved_port,
    service_env,
    start_service,
    start_uvicorn,
)

DB = DATABASES["faults_endpoint"]
STEPS, BATCH, SAMPLES = 3, 4, 4
TRAIN = ["--dataset", "shapes", "--shapes-size", "32", "--train-size", "64", "--val-size", "16", "--batch-size",
         str(BATCH), "--samples", str(SAMPLES), "--psr-scales", "8", "--steps", str(STEPS), "--eval-every",
         str(STEPS), "--threads", "1", "--no-progress", "--scorer", "http"]
# One retry per call, two attempts per job; the breaker opens after 8 failed calls in a row, which the
# /sometimes run never makes (at most 2 failing episodes a step, 2 attempts each, successes between).
SETTINGS = {"shapes_size": 32, "shapes_length": 64, "http_timeout_s": 0.5, "http_retries": 1,
            "http_backoff_s": 0.05, "max_attempts": 2, "retry_idle_s": 1.5, "breaker_failures": 8,
            "breaker_reset_s": 30, "results_trim_every_s": 3600}


def train(out, endpoint: str, service: str, redis_url: str, steps: int = STEPS) -> dict:
    result = run_rss("train", *TRAIN, "--steps", str(steps), "--eval-every", str(steps), "--endpoint", endpoint,
                     "--out", str(out), "--reward-source", "remote", "--service-url", service, "--redis-url",
                     redis_url, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "final.json").read_text())


def warm_up(scorer: str) -> None:
    """The example scorer builds its dataset on the first call, which can outlast the 0.5 s timeout here:
    that first call is made before training, so a timeout in the run is one the test asked for."""
    request = ExternalScoreRequest(episode_id="warm-up", run_id="warm-up", image_id="train/000000", dataset="shapes",
                                   level="image", metric="miou", samples=[codec.raw_mask(np.zeros((8, 8), np.uint8))],
                                   grid=Grid(scale=8))
    response = httpx.post(f"{scorer}/ok", content=request.model_dump_json(), timeout=60,
                          headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text


def dead_letters(r: redis.Redis, run_id: str) -> list[dict]:
    letters = [json.loads(fields[b"payload"]) for _, fields in r.xrange("rss:v1:deadletter")]
    return [letter for letter in letters if letter["run_id"] == run_id]


def test_a_faulty_endpoint_costs_only_its_episodes(redis_server: RedisProcess, redis_client, tmp_path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Every third episode fails every call (500, garbage or a timeout, in turn): each is retried within the
    call (not garbage) and as a whole job, then dead-lettered as one error result per sample; the learner
    leaves those images out, counts them `failed`, and trains on the rest. An endpoint that is down opens
    the circuit, after which calls fail fast."""
    monkeypatch.setenv("RSS_LEARNER_TOKEN", LEARNER_TOKEN)
    url = redis_server.db_url(DB)
    r = redis.Redis.from_url(url)
    down_port = reserved_port()  # nothing listens there
    with start_uvicorn("tests.reward_service.faulty_scorer:app", env={"OMP_NUM_THREADS": "1"}) as scorer, \
            start_service(service_env(redis_server, redis_url=url, http_endpoint_allow=allow(scorer.port, down_port),
                                      **SETTINGS)) as service:
        warm_up(scorer.url)
        final = train(tmp_path / "sometimes", f"{scorer.url}/sometimes?fail_every=3&delay=1", service.url, url)
        seen = httpx.get(f"{scorer.url}/calls", timeout=10).json()
        down = f"http://127.0.0.1:{down_port}/score"
        dead = train(tmp_path / "down", down, service.url, url, steps=2)
    counts, faults, calls = final["rewards"], seen["faults"], seen["calls"]
    failing = {e: f for e, f in faults.items() if f}
    assert len(faults) == STEPS * BATCH and Counter(failing.values()) == {"500": 2, "garbage": 1, "timeout": 1}
    # retried: 2 tries a call (garbage: 1, a broken answer is not retried) x 2 attempts; the rest called once
    assert {e: calls[e] for e in faults} == {e: {"": 1, "garbage": 2}.get(f, 4) for e, f in faults.items()}
    assert counts["posted"] == STEPS * BATCH * SAMPLES
    assert counts["failed"] == len(failing) * SAMPLES and counts["applied"] == (STEPS * BATCH - len(failing)) * SAMPLES
    assert counts.get("late", 0) == counts.get("duplicates", 0) == 0 and final["val_miou"] is not None
    letters = {letter["id"]: letter for letter in dead_letters(r, "sometimes")}
    assert set(letters) == set(failing) and all(letter["attempts"] == 2 for letter in letters.values())
    reasons = {failing[e]: letter["reason"] for e, letter in letters.items()}
    assert reasons == {"500": "endpoint returned 500 (2 tries)", "garbage": "endpoint answered with invalid JSON",
                       "timeout": "endpoint timed out after 0.5 s (2 tries)"}
    # down: every episode fails, the first 8 calls in a row open the circuit, later ones are not even sent
    assert dead["rewards"]["failed"] == dead["rewards"]["posted"] == 2 * BATCH * SAMPLES
    assert dead["rewards"].get("applied", 0) == 0 and dead["val_miou"] is not None
    down_reasons = Counter(letter["reason"].split(" (")[0] for letter in dead_letters(r, "down"))
    assert sum(down_reasons.values()) == 2 * BATCH
    assert down_reasons["endpoint circuit is open after 8 failed calls; not called"] > 0, down_reasons
