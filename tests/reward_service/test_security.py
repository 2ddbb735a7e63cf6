"""Bad input and access against a real `rss serve`: tokens on every route, traversal, bombs, content types,
per-token rate limits, the external endpoint allowlist."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from reward_service import codec
from tests.conftest import RedisServer
from tests.reward_service.conftest import client, rater, register, service_env
from tests.reward_service.procs import start_service
from tests.reward_service.test_service import episode, label_of

LEARNER_A, LEARNER_B = "learner-a-secret", "learner-b-secret"


@pytest.fixture(scope="module")
def limited(redis_server: RedisServer) -> Iterator[tuple[str, redis.Redis]]:
    """`rss serve` with tight per-token limits and two learner tokens, in its own Redis database (5)."""
    r = redis.Redis(port=redis_server.port, db=5)
    r.flushdb()
    env = service_env(redis_server, redis_url=redis_server.db_url(5), learner_tokens=f'["{LEARNER_A}", "{LEARNER_B}"]',
                      max_batch=4, rate_limit_episodes_per_s=1, rate_limit_episodes_burst=4,
                      rate_limit_ratings_per_min=6, rate_limit_ratings_burst=2)
    with start_service(env) as proc:
        yield proc.url, r
    r.close()


def episodes_in(r: redis.Redis) -> int:
    return len(r.keys("rss:v1:episode:*"))


def test_posting_episodes_is_limited_per_learner_token(limited) -> None:
    url, r = limited
    one = episode("lim", [codec.raw_mask(label_of())])
    with client(url, LEARNER_A) as a, client(url, LEARNER_B) as b:
        register(a, "lim")
        for _ in range(4):  # the burst
            assert a.post("/v1/episodes", json=one).status_code == 202
        before = episodes_in(r)
        refused = a.post("/v1/episodes", json=one)
        assert refused.status_code == 429, refused.text
        assert "RSS_RATE_LIMIT_EPISODES_PER_S" in refused.json()["detail"]
        retry_after = int(refused.headers["retry-after"])
        assert retry_after >= 1
        assert episodes_in(r) == before  # nothing written
        # another token has its own bucket; a batch costs one token per episode, all or none
        assert b.post("/v1/episodes", json=one).status_code == 202
        assert b.post("/v1/episodes/batch", json={"episodes": [one] * 3}).status_code == 202
        before = episodes_in(r)
        batch = b.post("/v1/episodes/batch", json={"episodes": [one] * 2})
        assert batch.status_code == 429 and "episodes/s per learner token" in batch.json()["detail"]
        assert episodes_in(r) == before
        time.sleep(retry_after)  # the bucket refills at 1 episode/s: after Retry-After, A may post again
        assert a.post("/v1/episodes", json=one).status_code == 202


def test_rating_is_limited_per_rater(limited) -> None:
    url, r = limited
    with client(url, LEARNER_B) as learner:
        register(learner, "limh", scorer="human")
        for key in r.scan_iter("rss:v1:ratelimit:episodes:*"):  # full buckets, whatever ran before
            r.delete(key)
        for _ in range(3):
            response = learner.post("/v1/episodes", json=episode("limh", [codec.raw_mask(label_of())]))
            assert response.status_code == 202, response.text
    with rater(url, "alice") as alice, rater(url, "bob") as bob:
        first = alice.get("/v1/tasks/next", params={"wait_s": 10}).json()
        assert alice.post(f"/v1/tasks/{first['task_id']}/rating",
                          json={"lease_id": first["lease_id"], "score": 0.5}).status_code == 200
        second = alice.get("/v1/tasks/next", params={"wait_s": 10}).json()
        assert alice.post(f"/v1/tasks/{second['task_id']}/skip",  # a skip spends a token too
                          json={"lease_id": second["lease_id"]}).status_code == 204
        third = alice.get("/v1/tasks/next", params={"wait_s": 10}).json()
        refused = alice.post(f"/v1/tasks/{third['task_id']}/rating", json={"lease_id": third["lease_id"], "score": 1})
        assert refused.status_code == 429, refused.text
        assert "RSS_RATE_LIMIT_RATINGS_PER_MIN" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) >= 5  # 6 per minute: a token every 10 s
        assert r.llen(f"rss:v1:task:{third['task_id']}:ratings") == 0  # nothing recorded
        assert r.hget(f"rss:v1:lease:{third['lease_id']}", "state") == b"open"  # the lease is still alice's
        # bob has his own bucket
        task = bob.get("/v1/tasks/next", params={"wait_s": 10}).json()
        answered = bob.post(f"/v1/tasks/{task['task_id']}/rating", json={"lease_id": task["lease_id"], "score": 0.25})
        assert answered.status_code == 200, answered.text


def _unused(x: httpx.Client) -> None:  # pragma: no cover - keeps the import for later tests
    pass
