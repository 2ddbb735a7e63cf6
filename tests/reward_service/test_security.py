"""Bad input and access against a real `rss serve`: tokens on every route, traversal, bombs, content types,
per-token rate limits, the external endpoint allowlist."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from reward_service.core.config import Settings
from reward_service.main import create_app
from reward_service.scorers.http import HttpScorer, Rejected, endpoint_allowed
from rss.procs import RedisProcess
from rss_core import codec
from rss_core.schemas import ExternalScoreRequest, Grid
from tests.helpers.client import client, rater, register
from tests.helpers.factories import IMAGE, bomb_png, episode, label_of
from tests.helpers.service import LEARNER_TOKEN, RATERS, service_env, start_service

LEARNER_A, LEARNER_B = "learner-a-secret", "learner-b-secret"
ALLOWED_ENDPOINT = "http://127.0.0.1:9000/score"


@dataclass
class Guarded:
    url: str
    r: redis.Redis
    pid: int


@pytest.fixture(scope="module")
def limited(redis_server: RedisProcess) -> Iterator[Guarded]:
    """`rss serve` with tight per-token limits, two learner tokens and one allowed external endpoint, in its
    own Redis database (5)."""
    r = redis.Redis(port=redis_server.port, db=5)
    r.flushdb()
    env = service_env(redis_server, redis_url=redis_server.db_url(5), learner_tokens=f'["{LEARNER_A}", "{LEARNER_B}"]',
                      max_batch=4, rate_limit_episodes_per_s=1, rate_limit_episodes_burst=4,
                      rate_limit_ratings_per_min=6, rate_limit_ratings_burst=2,
                      http_endpoint_allow=f'["{ALLOWED_ENDPOINT}"]')
    with start_service(env) as proc:
        yield Guarded(proc.url, r, proc.popen.pid)
    r.close()


def fresh_buckets(r: redis.Redis) -> None:
    """Full buckets, whatever ran before in the module."""
    for key in r.scan_iter("rss:v1:ratelimit:*"):
        r.delete(key)


def episodes_in(r: redis.Redis) -> int:
    return len(r.keys("rss:v1:episode:*"))


def test_posting_episodes_is_limited_per_learner_token(limited) -> None:
    url, r = limited.url, limited.r
    fresh_buckets(r)
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
    url, r = limited.url, limited.r
    fresh_buckets(r)
    with client(url, LEARNER_B) as learner:
        register(learner, "limh", scorer="human")
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


# --- tokens on every route the OpenAPI lists ---------------------------------------------------------

OPENAPI = create_app(Settings(_env_file=None, learner_tokens=[LEARNER_TOKEN], rater_tokens=RATERS)).openapi()
OPERATIONS = sorted((method.upper(), path) for path, ops in OPENAPI["paths"].items() for method in ops)
PUBLIC = {("GET", "/v1/health"), ("GET", "/v1/ready")}
PROTECTED = [op for op in OPERATIONS if op not in PUBLIC]
LEARNER_ONLY = {("POST", "/v1/runs"), ("POST", "/v1/episodes"), ("POST", "/v1/episodes/batch"),
                ("GET", "/v1/episodes/{episode_id}")}
PARAMS = {"run_id": "run1", "episode_id": "0" * 32, "task_id": "0" * 32 + "-0", "image_id": IMAGE}
BODIES = {
    "/v1/runs": {"run_id": "run1", "dataset": "shapes", "level": "image"},
    "/v1/episodes": episode("run1", [codec.raw_mask(label_of())]),
    "/v1/episodes/batch": {"episodes": [episode("run1", [codec.raw_mask(label_of())])]},
    "/v1/tasks/{task_id}/rating": {"lease_id": "0" * 32, "score": 0.5},
    "/v1/tasks/{task_id}/skip": {"lease_id": "0" * 32},
}


def snapshot(r: redis.Redis) -> tuple[set[bytes], int, int]:
    """Every key and the work queues' lengths; less what is written on its own clock (the workers' heartbeats
    and their streams' groups, recreated after a flush) and the rate limits' buckets (a refused request
    spends from its token's bucket too: that is what limits a client that only sends garbage)."""
    own = {b"rss:v1:workers", b"rss:v1:jobs", b"rss:v1:tasks"}
    keys = {k for k in r.keys("*") if k not in own and not k.startswith(b"rss:v1:ratelimit:")}
    return keys, r.xlen("rss:v1:jobs"), r.xlen("rss:v1:tasks")


def call(c: httpx.Client, method: str, path: str, **kwargs) -> httpx.Response:
    body = BODIES.get(path)
    return c.request(method, path.format(**PARAMS), **({"json": body} if body and "content" not in kwargs else {}),
                     **kwargs)


def test_only_health_and_readiness_are_open() -> None:
    secured = {op for op in OPERATIONS if OPENAPI["paths"][op[1]][op[0].lower()].get("security")}
    assert secured == set(PROTECTED) and len(PROTECTED) >= 10


@pytest.mark.parametrize(("method", "path"), PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_every_protected_route_refuses_missing_wrong_and_misused_tokens(service, redis_client, method, path) -> None:
    before = snapshot(redis_client)
    with client(service, token=None) as anonymous:
        missing = call(anonymous, method, path)
    assert missing.status_code == 401 and "Missing bearer token" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    with client(service, token="not-a-known-token") as stranger:
        wrong = call(stranger, method, path)
    assert wrong.status_code == 401 and wrong.json()["detail"] == "Unknown bearer token."
    with client(service, token=None) as c:
        basic = call(c, method, path, headers={"Authorization": f"Basic {LEARNER_TOKEN}"})
    assert basic.status_code == 401  # a known secret in the wrong scheme is still no bearer token
    if path.startswith("/v1/tasks"):
        with client(service) as learner:
            misused = call(learner, method, path)
        assert misused.status_code == 403 and "needs a rater token" in misused.json()["detail"]
    elif (method, path) in LEARNER_ONLY:
        with rater(service, "alice") as alice:
            misused = call(alice, method, path)
        assert misused.status_code == 403 and "needs a learner token" in misused.json()["detail"]
    assert snapshot(redis_client) == before


# --- content types ---------------------------------------------------------------------------------------

JSON_ROUTES = [("POST", path) for path in BODIES]


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES, ids=[p for _, p in JSON_ROUTES])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          "application/xml"])
def test_a_body_that_is_not_json_gets_415(service, redis_client, method, path, content_type) -> None:
    before = snapshot(redis_client)
    who = rater(service, "alice") if path.startswith("/v1/tasks") else client(service)
    with who as c:
        response = call(c, method, path, content=json.dumps(BODIES[path]).encode(),
                        headers={"content-type": content_type})
    assert response.status_code == 415, response.text
    assert f"Content-Type must be application/json, not '{content_type}'" in response.json()["detail"]
    assert snapshot(redis_client) == before


def test_json_with_a_charset_or_a_json_suffix_is_json(learner, redis_client) -> None:
    body = json.dumps(BODIES["/v1/runs"]).encode()
    assert learner.post("/v1/runs", content=body,
                        headers={"content-type": "application/json; charset=utf-8"}).status_code == 201
    assert learner.post("/v1/runs", content=body, headers={"content-type": "application/merge-patch+json"}
                        ).status_code == 200  # registered already, same configuration


def test_a_body_that_is_not_utf8_is_refused_not_a_500(learner, redis_client) -> None:
    """Found by the fuzz test: the validation error echoed the raw bytes, which could not be serialised."""
    register(learner, "run1")
    before = snapshot(redis_client)
    junk = b"la\xff\xfem\x80L"
    for path in ("/v1/episodes", "/v1/episodes/batch"):
        response = learner.post(path, content=junk, headers={"content-type": "application/json"})
        assert response.status_code == 422 and "Invalid JSON" in response.text, response.text
    runs = learner.post("/v1/runs", content=junk, headers={"content-type": "application/json"})
    assert runs.status_code == 400 and "parsing the body" in runs.json()["detail"]
    assert snapshot(redis_client) == before


# --- image ids -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("image_id", [
    "../../etc/passwd", "%2e%2e%2fetc%2fpasswd", "train/../train/000003", "..\\..\\etc\\passwd", "/etc/passwd",
    "//etc/passwd", "C:/Windows/win.ini", "train/000003\x00.png", "train/000003\n", "./train/000003",
    "train//000003",
])
def test_episode_image_ids_that_could_leave_the_dataset_are_refused(learner, redis_client, image_id) -> None:
    register(learner, "run1")
    before = snapshot(redis_client)
    response = learner.post("/v1/episodes", json=episode("run1", [codec.raw_mask(label_of())], image_id=image_id))
    assert response.status_code == 400, response.text
    assert "is not a dataset-relative name" in response.json()["detail"]
    assert snapshot(redis_client) == before


@pytest.mark.parametrize("raw", [
    "..%2Fsecret.png", "%2e%2e%2fsecret.png", "%2E%2E%2F%2E%2E%2Fsecret", "JPEGImages%2F..%2F..%2Fsecret",
    "%2Fetc%2Fpasswd", "2007_000000%00.jpg", "%252e%252e%252fsecret.png", "..%5C..%5Csecret",
])
def test_image_urls_that_could_leave_the_dataset_are_refused(voc_service, raw) -> None:
    url, root = voc_service
    (root.parent / "secret.png").write_bytes(b"not for raters")
    with rater(url, "bob") as bob:
        response = bob.get(f"/v1/images/{raw}")  # httpx sends percent-escapes as they are
    assert response.status_code == 400, (raw, response.text)
    assert "is not a dataset-relative name" in response.json()["detail"]
    assert b"not for raters" not in response.content


def test_a_tiny_wait_for_a_task_does_not_block_forever(service, redis_client) -> None:
    """Found by the fuzz test: wait_s=3e-33 became XREADGROUP BLOCK 0, which waits forever (and holds a
    blocking Redis connection); now it waits at most a millisecond and answers 204 on an empty queue."""
    with httpx.Client(base_url=service, headers={"Authorization": f"Bearer {RATERS['alice']}"}, timeout=20) as alice:
        for wait_s in ("3.166507029942586e-33", "0.0004", "1e-300"):
            response = alice.get("/v1/tasks/next", params={"wait_s": wait_s})
            assert response.status_code == 204, (wait_s, response.text)


# --- masks that would cost the service its memory ---------------------------------------------------------

def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def test_decompression_bombs_and_overflowing_runs_are_refused_before_decoding(limited) -> None:
    url, r = limited.url, limited.r
    fresh_buckets(r)
    with client(url, LEARNER_A) as learner, rater(url, "alice") as alice:
        register(learner, "bomb", scorer="human", level="pixel")
        before_mb = peak_rss_mb(limited.pid)
        accepted = learner.post("/v1/episodes", json=episode("bomb", [codec.raw_mask(label_of())], level="pixel"))
        assert accepted.status_code == 202, accepted.text
        episodes = episodes_in(r)
        # a 90-byte PNG declaring 50000x50000 (2.5 GB once decoded)
        bomb = learner.post("/v1/episodes", json=episode(
            "bomb", [codec.PngMask(data=bomb_png(50_000, 50_000))], level="pixel"))
        assert bomb.status_code == 422 and "decompression bomb" in bomb.json()["detail"], bomb.text
        # RLE counts near 2**63 wrapped the int64 sum around to 64*64, and np.repeat crashed the process
        wrapped = learner.post("/v1/episodes", json=episode("bomb", [codec.RleMask(
            shape=(64, 64), values=[0, 1, 2], counts=[2**63 - 1, 2**63 - 1, 4098])], level="pixel"))
        assert wrapped.status_code == 422 and "exceeds the mask's 4096 pixels" in wrapped.json()["detail"]
        assert episodes_in(r) == episodes
        # the same bomb as a rater's pixel answer
        task = alice.get("/v1/tasks/next", params={"wait_s": 10}).json()
        answer = alice.post(f"/v1/tasks/{task['task_id']}/rating", json={
            "lease_id": task["lease_id"], "pixels": {"format": "png", "data": bomb_png(50_000, 50_000)}})
        assert answer.status_code == 422 and "decompression bomb" in answer.json()["detail"], answer.text
        assert r.llen(f"rss:v1:task:{task['task_id']}:ratings") == 0
        assert r.hget(f"rss:v1:lease:{task['lease_id']}", "state") == b"open"
        assert learner.get("/v1/health").status_code == 200  # the process is alive
    assert peak_rss_mb(limited.pid) - before_mb < 100  # nothing was decompressed


# --- external endpoints (SSRF) ---------------------------------------------------------------------------

@pytest.mark.parametrize("endpoint", [
    "http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:6379/", "http://127.0.0.1:9001/score",
    "http://127.0.0.1:9000/scorer", "https://127.0.0.1:9000/score", "http://127.0.0.1:9000@evil.example/score",
    "http://evil.example#@127.0.0.1:9000/score", "http://127.0.0.1.evil.example:9000/score",
])
def test_http_endpoints_outside_the_allowlist_are_refused_at_registration(limited, endpoint) -> None:
    with client(limited.url, LEARNER_A) as learner:
        before = snapshot(limited.r)
        response = learner.post("/v1/runs", json={"run_id": "ext", "dataset": "shapes", "level": "image",
                                                  "scorer": "http", "endpoint": endpoint})
        assert response.status_code == 422, response.text
        assert "is not allowed by RSS_HTTP_ENDPOINT_ALLOW" in response.json()["detail"]
        assert snapshot(limited.r) == before
        ok = learner.post("/v1/runs", json={"run_id": "ext-ok", "dataset": "shapes", "level": "image",
                                            "scorer": "http", "endpoint": ALLOWED_ENDPOINT + "/v2"})
        assert ok.status_code in (200, 201), ok.text


def test_the_default_allowlist_is_loopback_and_the_scorer_checks_it_too() -> None:
    default = Settings(_env_file=None).http_endpoint_allow
    assert endpoint_allowed("http://127.0.0.1:9000/score", default)  # examples/external_scorer
    assert endpoint_allowed("http://localhost:1234/x", default) and endpoint_allowed("http://[::1]:80/", default)
    for endpoint in ("http://10.0.0.7/score", "http://169.254.169.254/", "http://localhost.evil.example/",
                     "http://127.0.0.1@evil.example/", "http://127.0.0.1\\@evil.example/"):
        assert not endpoint_allowed(endpoint, default), endpoint
    assert endpoint_allowed("http://anything.example/", ["*"])
    with pytest.raises(ValueError, match="RSS_HTTP_ENDPOINT_ALLOW"):
        Settings(_env_file=None, http_endpoint_allow=["ftp://x"])
    # a run registered before the allowlist was narrowed: the worker's scorer refuses to call it
    scorer = HttpScorer(Settings(_env_file=None, http_endpoint_allow=["http://127.0.0.1:9000/score"]))
    request = ExternalScoreRequest(episode_id="e", run_id="r", image_id=IMAGE, dataset="shapes", level="image",
                                   metric="miou", grid=Grid(), samples=[codec.raw_mask(label_of())])

    async def score() -> None:
        async with scorer:
            await scorer.score("http://10.0.0.7/score", request)

    with pytest.raises(Rejected, match="RSS_HTTP_ENDPOINT_ALLOW"):
        asyncio.run(score())
