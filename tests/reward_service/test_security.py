"""Bad input and access against a real `rss serve`: tokens on every route, traversal, bombs, content types,
per-token rate limits, the external endpoint allowlist."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import select
import socket
import socketserver
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from pydantic_core import from_json

from reward_service.core.config import Settings
from reward_service.main import create_app
from reward_service.scorers.http import HttpScorer, Rejected, ScorerError, endpoint_allowed
from rss.procs import RedisProcess, ServiceProcess
from rss_core import codec, keys
from rss_core.schemas import ExternalScoreRequest, Grid
from tests.helpers import REPO
from tests.helpers.client import client, rater, read_results, register, wait_status
from tests.helpers.factories import (
    IMAGE,
    bomb_png,
    episode,
    label_of,
    png_chunk,
    png_with_chunks,
    write_voc,
    ztxt_chunks,
)
from tests.helpers.service import DATABASES, LEARNER_TOKEN, RATERS, reserved_port, service_env, start_service

LEARNER_A, LEARNER_B = "learner-a-secret", "learner-b-secret"
ALLOWED_ENDPOINT = "http://127.0.0.1:9000/score"
LIMITED_DB = DATABASES["security_limited"]


@dataclass
class Guarded:
    url: str
    r: redis.Redis
    pid: int


@pytest.fixture(scope="module")
def limited(redis_server: RedisProcess) -> Iterator[Guarded]:
    """`rss serve` with tight per-token limits, two learner tokens and one allowed external endpoint, in its
    own Redis database."""
    r = redis.Redis(port=redis_server.port, db=LIMITED_DB)
    r.flushdb()
    env = service_env(redis_server, redis_url=redis_server.db_url(LIMITED_DB),
                      learner_tokens=f'["{LEARNER_A}", "{LEARNER_B}"]',
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
                ("GET", "/v1/episodes/{episode_id}"), ("GET", "/v1/runs"), ("POST", "/v1/runs/{run_id}/metrics"),
                ("GET", "/v1/runs/{run_id}/metrics"), ("GET", "/v1/runs/{run_id}/overview")}
PARAMS = {"run_id": "run1", "episode_id": "0" * 32, "task_id": "0" * 32 + "-0", "image_id": IMAGE}
BODIES = {
    "/v1/runs": {"run_id": "run1", "dataset": "shapes", "level": "image"},
    "/v1/episodes": episode("run1", [codec.raw_mask(label_of())]),
    "/v1/episodes/batch": {"episodes": [episode("run1", [codec.raw_mask(label_of())])]},
    "/v1/tasks/{task_id}/rating": {"lease_id": "0" * 32, "score": 0.5},
    "/v1/tasks/{task_id}/skip": {"lease_id": "0" * 32},
    "/v1/runs/{run_id}/metrics": {"step": 1, "metrics": {"val_miou": 0.5}},
}


def snapshot(r: redis.Redis) -> tuple[set[bytes], int, int]:
    """Every key and the work queues' lengths; less what is written on its own clock (the workers' heartbeats
    and their streams' groups, recreated after a flush, and the database's claim, which they make again) and
    the rate limits' buckets (a refused request spends from its token's bucket too: that is what limits a
    client that only sends garbage)."""
    own = {b"rss:v1:workers", b"rss:v1:jobs", b"rss:v1:tasks", b"rss:v1:deployment"}
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
    for path in ("/v1/episodes", "/v1/episodes/batch", "/v1/runs"):  # one parser: one answer
        response = learner.post(path, content=junk, headers={"content-type": "application/json"})
        assert response.status_code == 422 and "Invalid JSON" in response.text, response.text
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
    "2007_000000%0a", "2007_000000%0A", "2007_000000%0d%0a", "%0a2007_000000", "2007_000000%0a..%2Fsecret.png",
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


def test_the_scorer_checks_the_allowlist_too() -> None:
    # a run registered before the allowlist was narrowed: the worker's scorer refuses to call it
    scorer = HttpScorer(Settings(_env_file=None, http_endpoint_allow=["http://127.0.0.1:9000/score"]))
    request = ExternalScoreRequest(episode_id="e", run_id="r", image_id=IMAGE, dataset="shapes", level="image",
                                   metric="miou", grid=Grid(), samples=[codec.raw_mask(label_of())])

    async def score() -> None:
        async with scorer:
            await scorer.score("http://10.0.0.7/score", request)

    with pytest.raises(Rejected, match="RSS_HTTP_ENDPOINT_ALLOW"):
        asyncio.run(score())


def test_a_runs_own_allowlist_admits_its_endpoint_for_that_run_only(limited) -> None:
    """`rss scorer up --run` writes an entry for one run straight into Redis (no route writes one): that run may
    name the endpoint, another run may not, and the service's own address stays refused even when an entry
    names it. Nothing a token sends adds an entry: a refused registration leaves none."""
    endpoint = "http://10.0.0.7:9000/score"
    own = limited.url + "/v1/runs"
    with client(limited.url, LEARNER_A) as learner:
        def create(run_id: str, url: str) -> httpx.Response:
            return learner.post("/v1/runs", json={"run_id": run_id, "dataset": "shapes", "level": "image",
                                                  "scorer": "http", "endpoint": url})

        refused = create("own-a", endpoint)
        assert refused.status_code == 422 and "rss scorer up --run own-a" in refused.json()["detail"], refused.text
        assert limited.r.keys("rss:v1:run:own-a*") == []
        limited.r.sadd(keys.run_endpoint_allow("own-a"), endpoint, own)
        assert create("own-a", endpoint).status_code == 201
        other = create("own-b", endpoint)
        assert other.status_code == 422 and "not allowed" in other.json()["detail"], other.text
        limited.r.sadd(keys.run_endpoint_allow("own-c"), own)
        itself = create("own-c", own)
        assert itself.status_code == 422 and "own address" in itself.json()["detail"], itself.text
    with rater(limited.url, "alice") as alice:  # a rater token cannot register a run, so cannot use an entry
        assert alice.post("/v1/runs", json={"run_id": "own-a", "dataset": "shapes", "level": "image",
                                            "scorer": "http", "endpoint": endpoint}).status_code == 403


def test_the_scorer_checks_the_runs_own_allowlist_at_each_call() -> None:
    """The worker passes the run's entries with each call: an entry removed (`rss scorer down`) is refused at once,
    not after the minute the scorer trusts a check."""
    scorer = HttpScorer(Settings(_env_file=None, http_endpoint_allow=[]), retries=0, timeout=2)
    request = ExternalScoreRequest(episode_id="e", run_id="r", image_id=IMAGE, dataset="shapes", level="image",
                                   metric="miou", grid=Grid(), samples=[codec.raw_mask(label_of())])
    with socket.socket() as s:  # a port nothing listens on: an allowed call goes out and finds no one
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}/score"

    async def score() -> list[str]:
        reasons = []
        async with scorer:
            for run_allow in ([endpoint], [], [endpoint]):
                try:
                    await scorer.score(endpoint, request, run_allow)
                except Rejected as exc:
                    reasons.append(f"refused: {exc}")
                except ScorerError as exc:
                    reasons.append(f"called: {exc}")
        return reasons

    called, refused, again = asyncio.run(score())
    assert called.startswith("called: endpoint unreachable"), called
    assert refused.startswith("refused: endpoint is not allowed by RSS_HTTP_ENDPOINT_ALLOW nor by the run's own"), \
        refused
    assert again.startswith("called:"), again


# --- JSON that Python's parser takes but the contract does not: never a 500 --------------------------------

POISON_DB = DATABASES["security_poison"]
POISON_RUN = "poison-run"
POISONS = {  # raw JSON text, spliced in where a value goes
    "1e999": "1e999", "-1e999": "-1e999", "NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity",
    "surrogate": '"\\udfff"', "surrogate-in-text": '"abc\\ud800def"', "10**400": str(10**400),
    "-10**400": str(-(10**400)), "2**63": str(2**63), "10**5000": "1" + "0" * 5000,
    "deep-list": "[" * 10_000 + "]" * 10_000, "deep-object": '{"a":' * 10_000 + "0" + "}" * 10_000,
    "nested-nan": '{"a": [1, {"b": NaN}]}',
}
LEASE = "0" * 32


def poison_templates() -> dict[str, list[dict]]:
    """Valid bodies per route (the run is registered, the task and lease are unknown): every leaf gets
    every poison."""
    label = label_of()
    tiny_rle = codec.RleMask(shape=label.shape, values=[0], counts=[label.size])
    samples = [codec.raw_mask(label), tiny_rle, codec.png_mask(label)]
    one = episode(POISON_RUN, samples, scale=0, grid_mode="grid", offset=[0, 0])
    pixels = {"format": "png", "data": codec.png_mask(np.zeros((4, 4), np.uint8)).data}
    return {
        "/v1/runs": [{"run_id": "poison-other", "dataset": "shapes", "level": "image", "scorer": "gt",
                      "metric": "miou", "ratings_per_task": 2, "task_kind": "score", "image_size": 64,
                      "min_rater_agreement": 0.5, "endpoint": "http://127.0.0.1:9000/score"}],
        "/v1/episodes": [one],
        "/v1/episodes/batch": [{"episodes": [one]}],
        "/v1/tasks/{task_id}/rating": [{"lease_id": LEASE, "score": 0.5}, {"lease_id": LEASE, "preference": "a"},
                                       {"lease_id": LEASE, "pixels": pixels}],
        "/v1/tasks/{task_id}/skip": [{"lease_id": LEASE}],
        "/v1/runs/{run_id}/metrics": [{"step": 1, "metrics": {"val_miou": 0.5}, "per_class_iou": [0.9, None, 0.5, 0.1],
                                       "gallery": [{"image_id": IMAGE, "shape": [4, 4], "argmax": pixels,
                                                    "sampled": pixels}]}],
    }


def leaves(value: object, path: tuple = ()) -> Iterator[tuple]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaves(item, (*path, i))
    else:
        yield path


def spliced(body: object, path: tuple, raw: str) -> bytes:
    """``body`` as JSON with the value at ``path`` (a new key where the path does not exist) replaced by the
    raw JSON text ``raw``."""
    body = json.loads(json.dumps(body))
    marker = "\x00poison\x00"
    if not path:
        return raw.encode()
    *parents, last = path
    holder = body
    for key in parents:
        holder = holder.setdefault(key, {}) if isinstance(holder, dict) else holder[key]
    holder[last] = marker
    return json.dumps(body).replace(json.dumps(marker), raw).encode()


def strict_json(response: httpx.Response) -> object:
    """The body as strict JSON (no NaN, no lone surrogate), as a browser or a Go client parses it."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return from_json(response.content, allow_inf_nan=False)


@dataclass
class Open:
    url: str
    r: redis.Redis
    proc: ServiceProcess


@pytest.fixture(scope="module")
def open_service(redis_server: RedisProcess) -> Iterator[Open]:
    """`rss serve` with the rate limits off and a 100 kB body limit, in its own Redis database, with the
    poison run registered: every poisoned body reaches the parser."""
    r = redis.Redis(port=redis_server.port, db=POISON_DB)
    r.flushdb()
    env = service_env(redis_server, redis_url=redis_server.db_url(POISON_DB), max_body_bytes=100_000,
                      rate_limit_episodes_per_s=0, rate_limit_ratings_per_min=0, rate_limit_polls_per_min=0,
                      rate_limit_address_per_s=0)
    with start_service(env) as proc:
        with client(proc.url) as learner:
            register(learner, POISON_RUN)
        yield Open(proc.url, r, proc)
    r.flushdb()
    r.close()


def refusal_problems(c: httpx.Client, path: str, body: bytes, what: str, field: str | None = None,
                     headers: dict | None = None) -> list[str]:
    """What is wrong with the service's answer to a body that must be refused: not a 4xx, not strict JSON,
    not naming the field, or a keep-alive connection the next request cannot use."""
    try:
        response = c.post(path.format(**PARAMS), content=body,
                          headers={"content-type": "application/json", **(headers or {})})
    except httpx.TransportError as exc:
        return [f"{what}: {exc!r}"]
    problems = []
    if not 400 <= response.status_code < 500 or response.status_code == 429:
        problems.append(f"{what}: {response.status_code} {response.text[:200]}")
    else:
        try:
            detail = strict_json(response)["detail"]
        except (ValueError, KeyError, AssertionError) as exc:
            problems.append(f"{what}: not strict JSON with a detail ({exc!r}): {response.content[:200]!r}")
        else:
            if field is not None and field not in json.dumps(detail):
                problems.append(f"{what}: the detail does not name {field!r}: {json.dumps(detail)[:300]}")
    try:
        health = c.get("/v1/health")  # the same pooled connection, unless the answer said Connection: close
        if health.status_code != 200:
            problems.append(f"{what}: next request on the connection: {health.status_code}")
    except httpx.TransportError as exc:
        problems.append(f"{what}: next request on the connection failed: {exc!r}")
    return problems


def expected_words(name: str, path: tuple) -> str | None:
    """What a refusal of poison ``name`` at ``path`` must name: the field (schema errors) or the reason."""
    if name.startswith("surrogate"):
        return "surrogate"
    if name.startswith("deep"):
        return "recursion limit"
    if name == "10**5000":
        return "number out of range"
    fields = [key for key in path if isinstance(key, str)]
    return fields[-1] if fields else None


@pytest.mark.parametrize("path", [p for _, p in JSON_ROUTES])
def test_poisoned_json_is_a_4xx_that_renders_and_keeps_the_connection(open_service, path) -> None:
    """1e999, NaN, Infinity (Python's json takes them), lone surrogates, 10**400, 10,000-deep nesting in every
    field of every body: a 422 naming the field, as strict JSON, on a connection that stays usable, and
    nothing written. Before, each gave a 500 (an error detail that could not be rendered, a surrogate in
    the Redis client's encoder) that dropped the keep-alive connection."""
    templates = poison_templates()[path]
    who = rater(open_service.url, "alice") if path.startswith("/v1/tasks") else client(open_service.url)
    problems: list[str] = []
    before = snapshot(open_service.r)
    with who as c:
        for template in templates:
            for leaf in [(), *leaves(template)]:
                for name, raw in POISONS.items():
                    problems += refusal_problems(c, path, spliced(template, leaf, raw), f"{name} at {leaf}",
                                                 expected_words(name, leaf) if leaf else None)
            # NaN is not JSON wherever it is, even in a field the contract does not know
            for name in ("NaN", "Infinity", "nested-nan"):
                problems += refusal_problems(c, path, spliced(template, ("unknown", "deeper"), POISONS[name]),
                                             f"{name} in an unknown field", "NaN")
        # headers are latin-1 text: bytes that are not UTF-8 in them are refused, not a 500
        problems += refusal_problems(c, path, json.dumps(templates[0]).encode(), "a raw byte in Authorization",
                                     headers={"authorization": b"Bearer \xed\xbf\xbf\xff"})
        problems += refusal_problems(c, path, json.dumps(templates[0]).encode(), "a raw byte in Content-Type",
                                     headers={"content-type": b"application/\xed\xbf\xbf"})
    assert not problems, f"{len(problems)} bad answers:\n" + "\n".join(problems[:40])
    assert snapshot(open_service.r) == before
    assert "Traceback" not in open_service.proc.log()  # every refusal was expected, none an accident


def test_a_500_closes_the_connection_and_renders() -> None:
    """The last resort: an error nothing expected is a JSON 500 with Connection: close (a pooled client opens a
    new connection for its next request instead of meeting a reset), and the exception stops there."""
    app = create_app(Settings(_env_file=None, learner_tokens=[LEARNER_TOKEN]))

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    messages: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        messages.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/v1/boom", "raw_path": b"/v1/boom", "root_path": "", "query_string": b"", "headers": [],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))  # before: the exception went on up to the server, which reset the socket
    start = next(m for m in messages if m["type"] == "http.response.start")
    assert start["status"] == 500
    assert (b"connection", b"close") in [(k.lower(), v) for k, v in start["headers"]]
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    assert "Internal error" in from_json(body)["detail"]


# --- item-8 leftovers: bodies over the limit, ids with a newline, corrupt images, aborted uploads ---------------

@pytest.mark.parametrize("path", [p for _, p in JSON_ROUTES])
def test_a_chunked_body_over_the_limit_is_a_413(open_service, path) -> None:
    """No Content-Length to check up front: the limit counts the chunks as they come. Before, the routes whose
    body FastAPI parsed (runs, rating, skip) answered 400 'There was an error parsing the body'."""
    before = snapshot(open_service.r)

    def chunks() -> Iterator[bytes]:
        yield b'{"lease_id": "'
        for _ in range(30):
            yield b"a" * 10_000
        yield b'"}'

    who = rater(open_service.url, "alice") if path.startswith("/v1/tasks") else client(open_service.url)
    with who as c:
        response = c.post(path.format(**PARAMS), content=chunks(), headers={"content-type": "application/json"})
        assert response.status_code == 413, response.text
        assert "exceeds the limit of 100000 bytes" in strict_json(response)["detail"]
        assert c.get("/v1/health").status_code == 200
    assert snapshot(open_service.r) == before


def aborted_upload(url: str, path: str, token: str) -> None:
    """Headers announcing 50 kB, 20 bytes of it, then the connection closed."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 50000\r\n\r\n".encode() + b'{"run_id": "abc", ')
        time.sleep(0.2)


def test_an_aborted_upload_logs_one_line_not_a_traceback(open_service) -> None:
    """A client that hangs up mid-body (a killed learner, a closed laptop) is routine: one warning line each.
    Before, every one logged 'Exception in ASGI application' with a 40-line traceback."""
    proc = open_service.proc
    start = len(proc.log())
    uploads = [("/v1/episodes", LEARNER_TOKEN), ("/v1/runs", LEARNER_TOKEN),
               (f"/v1/tasks/{PARAMS['task_id']}/rating", RATERS["alice"])]
    for path, token in uploads:
        aborted_upload(proc.url, path, token)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = proc.log()[start:]
        if log.count("disconnected before its body was received") >= len(uploads):
            break
        time.sleep(0.1)
    assert log.count("disconnected before its body was received") == len(uploads), log[-3000:]
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
    assert len(log.strip().splitlines()) == len(uploads), log
    with client(proc.url) as learner:
        assert learner.get("/v1/health").status_code == 200


CORRUPT_DB = DATABASES["security_voc"]


@pytest.fixture(scope="module")
def corrupt_voc(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`rss serve` on a VOC folder where 2007_000001's image and 2007_000002's label are corrupt PNG bytes."""
    root = write_voc(tmp_path_factory.mktemp("corrupt-voc"))
    png = (root / "SegmentationClass" / "2007_000002.png").read_bytes()
    (root / "JPEGImages" / "2007_000001.jpg").write_bytes(png[:40] + b"\x00" * 64)  # a PNG cut short
    (root / "SegmentationClass" / "2007_000002.png").write_bytes(png[:8] + b"garbage" * 20)
    redis.Redis(port=redis_server.port, db=CORRUPT_DB).flushdb()
    env = service_env(redis_server, dataset="voc", data_root=root, redis_url=redis_server.db_url(CORRUPT_DB))
    with start_service(env) as proc:
        yield proc.url, root


def test_a_corrupt_dataset_image_is_a_declared_422_naming_the_id_not_the_path(corrupt_voc) -> None:
    """Before: GET /v1/images answered an undeclared 500, and an episode on an image whose label is corrupt a 422
    whose detail held the file's absolute path."""
    url, root = corrupt_voc
    declared = OPENAPI["paths"]["/v1/images/{image_id}"]["get"]["responses"]
    with rater(url, "bob") as bob:
        assert bob.get("/v1/images/2007_000000").status_code == 200
        for image_id in ("2007_000001", "2007_000002"):
            response = bob.get(f"/v1/images/{image_id}")
            assert response.status_code == 422 and str(response.status_code) in declared, response.text
            detail = strict_json(response)["detail"]
            assert image_id in detail and "cannot be read" in detail, detail
            for secret in (str(root), root.name, "JPEGImages", "SegmentationClass", ".png", ".jpg"):
                assert secret not in response.text, (secret, response.text)
    with client(url) as learner:
        register(learner, "corrupt", dataset="voc")
        label = np.zeros((40, 48), np.uint8)
        response = learner.post("/v1/episodes", json=episode("corrupt", [codec.raw_mask(label)],
                                                             image_id="2007_000002"))
        assert response.status_code == 422, response.text
        detail = strict_json(response)["detail"]
        assert "2007_000002" in detail and "cannot be read" in detail and str(root) not in response.text, detail


ADDRESS_DB = DATABASES["security_address"]


def test_polls_and_client_addresses_are_limited_and_forwarded_for_is_believed_only_from_trusted_proxies(
        redis_server: RedisProcess) -> None:
    """Polls of /v1/tasks/next per rater, and requests per client address whatever the token (an unknown one
    too: guessing tokens costs from the same bucket). X-Forwarded-For from an address RSS_TRUSTED_PROXIES does
    not list changes nothing; from a listed proxy (127.0.0.2 here) each forwarded client has its own bucket.
    Before, a rater could poll as fast as it liked, and only the episode and rating routes were limited."""
    r = redis.Redis(port=redis_server.port, db=ADDRESS_DB)
    r.flushdb()
    env = service_env(redis_server, redis_url=redis_server.db_url(ADDRESS_DB), rate_limit_polls_per_min=6,
                      rate_limit_polls_burst=2, rate_limit_address_per_s=0.2, rate_limit_address_burst=6,
                      trusted_proxies='["127.0.0.2"]')
    with start_service(env) as proc, rater(proc.url, "alice") as alice, rater(proc.url, "bob") as bob:
        assert [alice.get("/v1/tasks/next").status_code for _ in range(2)] == [204, 204]
        polled = alice.get("/v1/tasks/next")
        assert polled.status_code == 429 and "RSS_RATE_LIMIT_POLLS_PER_MIN" in polled.json()["detail"], polled.text
        assert int(polled.headers["retry-after"]) >= 5
        assert [bob.get("/v1/me").status_code for _ in range(3)] == [200] * 3  # 6 requests from 127.0.0.1
        limited_address = bob.get("/v1/me")
        assert limited_address.status_code == 429, limited_address.text
        assert "RSS_RATE_LIMIT_ADDRESS_PER_S" in limited_address.json()["detail"]
        assert bob.get("/v1/me", headers={"X-Forwarded-For": "10.9.9.9"}).status_code == 429  # not believed
        with client(proc.url, token="a-guess") as guesser:
            assert guesser.get("/v1/me").status_code == 429  # refused before the token is even looked at
        assert alice.get("/v1/health").status_code == 200 and alice.get("/v1/ready").status_code == 200
        behind = httpx.Client(base_url=proc.url, headers={"Authorization": f"Bearer {RATERS['bob']}"}, timeout=30,
                              transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        with behind:
            for forwarded in ("10.0.0.1", "10.0.0.2", "192.0.2.7, 10.0.0.3"):
                answers = [behind.get("/v1/me", headers={"X-Forwarded-For": forwarded}).status_code
                           for _ in range(3)]
                assert answers == [200] * 3, (forwarded, answers)
    r.flushdb()
    r.close()


# --- issue 19 items 3-6: a service with big bodies allowed, an endpoint that leaks, its own and Redis's address ---

BIG_DB = DATABASES["security_big"]
SECRET = "SECRET-" + "s" * 3000  # what an internal service would answer: it must never reach a client


class LeakyEndpoint:
    """An endpoint on loopback that answers like an internal service a learner should not read, by path:
    ``/forbidden`` a 403 with a secret body, ``/server-error`` a 500 with one, ``/redirect`` a 302 with one,
    ``/contract`` a 200 whose JSON holds the secret where the rewards go, ``/redis`` what Redis answers an HTTP
    request (an error line quoting it, not HTTP at all: h11's exception text quotes that line)."""

    def __init__(self) -> None:
        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(65536).decode("latin-1")
                length = 0
                while (header := self.rfile.readline(65536)) not in (b"\r\n", b""):
                    name, _, value = header.decode("latin-1").partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                self.rfile.read(length)
                path = line.split(" ")[1] if " " in line else ""
                secret = SECRET.encode()
                answers = {
                    "/forbidden": (b"403 Forbidden", secret), "/server-error": (b"500 Internal Server Error", secret),
                    "/redirect": (b"302 Found", secret),
                    "/contract": (b"200 OK", json.dumps({"rewards": SECRET}).encode()),
                }
                if path in answers:
                    status, body = answers[path]
                    self.wfile.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nlocation: "
                                     b"http://127.0.0.1:1/\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
                                     % len(body) + body)
                else:  # Redis reads the request line as a command
                    self.wfile.write(f"-ERR unknown command '{SECRET[:60]}'\r\n".encode() * 3 + b"\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", reserved_port()), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Hardened:
    url: str
    r: redis.Redis
    proc: ServiceProcess
    port: int
    redis_port: int
    leaky: LeakyEndpoint
    settings: Settings


@pytest.fixture(scope="module")
def hardened(redis_server: RedisProcess) -> Iterator[Hardened]:
    """`rss serve` on a port picked first, in its own Redis database, with 64 MiB bodies, no rate limits, a 2 s
    head timeout, one quick attempt per external call, and an allowlist naming the leaky endpoint, the
    service's own address and Redis's (the last two must be refused all the same)."""
    r = redis.Redis(port=redis_server.port, db=BIG_DB)
    r.flushdb()
    leaky, port = LeakyEndpoint(), reserved_port()
    allowed = [leaky.url, f"http://127.0.0.1:{port}", f"http://localhost:{port}",
               f"http://127.0.0.1:{redis_server.port}", f"http://localhost:{redis_server.port}/"]
    settings = {"redis_url": redis_server.db_url(BIG_DB), "max_body_bytes": 64 << 20, "header_timeout_s": 2,
                "rate_limit_episodes_per_s": 0, "rate_limit_ratings_per_min": 0, "rate_limit_polls_per_min": 0,
                "rate_limit_address_per_s": 0, "http_timeout_s": 2, "http_retries": 0, "max_attempts": 1,
                "retry_idle_s": 3, "http_endpoint_allow": json.dumps(allowed)}
    try:
        with start_service(service_env(redis_server, **settings), port=port) as proc:
            yield Hardened(proc.url, r, proc, port, redis_server.port, leaky,
                           Settings(_env_file=None, port=port, **{**settings, "http_endpoint_allow": allowed}))
    finally:
        leaky.close()
        r.flushdb()
        r.close()


class HealthProbe:
    """GET /v1/health in a loop on its own connection while an attack runs; ``latencies`` in seconds."""

    def __init__(self, url: str) -> None:
        self.url, self.latencies, self.failures = url, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    status = c.get("/v1/health").status_code
                except httpx.TransportError as exc:
                    self.failures.append(repr(exc))
                    continue
                self.latencies.append(time.perf_counter() - started)
                if status != 200:
                    self.failures.append(status)
                time.sleep(0.02)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.latencies and not self.failures and time.monotonic() < deadline:
            time.sleep(0.01)  # probing before the attack starts
        self.latencies.clear()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def report(self, what: str) -> str:
        lat = sorted(self.latencies)
        line = (f"/v1/health during {what}: {len(lat)} answered, median {statistics.median(lat) * 1000:.1f} ms, "
                f"max {lat[-1] * 1000:.1f} ms")
        print(line)  # noqa: T201 (the latencies are reported, not asserted)
        return line

    def check(self, what: str) -> None:
        assert not self.failures and self.latencies, (what, self.failures[:5])
        self.report(what)


def test_endpoints_are_allowed_by_exact_scheme_host_and_port() -> None:
    """Before, the default admitted every port on loopback (Redis's, the service's own, any internal one)."""
    default = Settings(_env_file=None).http_endpoint_allow
    assert endpoint_allowed("http://127.0.0.1:9000/score", default)  # examples/external_scorer
    assert endpoint_allowed("http://localhost:9000/score", default)
    for endpoint in ("http://127.0.0.1:9001/score", "http://127.0.0.1/score", "http://localhost:6379/",
                     "http://[::1]:9000/", "https://127.0.0.1:9000/score", "http://127.0.0.2:9000/",
                     "http://127.0.0.1:9000@evil.example/", "http://127.0.0.1.evil.example:9000/"):
        assert not endpoint_allowed(endpoint, default), endpoint
    # a URL without a port has its scheme's; a path in an entry is a prefix
    assert endpoint_allowed("http://scorer/score", ["http://scorer:80"])
    assert endpoint_allowed("https://scorer:443/score/v2", ["https://scorer/score"])
    assert not endpoint_allowed("https://scorer:8443/score", ["https://scorer/score"])
    assert not endpoint_allowed("http://scorer/scorer", ["http://scorer/score"])
    for entry in ("*", "http://*", "ftp://x", "http://x:port", "http://user@x:1", "http://x:1/?q"):
        with pytest.raises(ValueError, match="RSS_HTTP_ENDPOINT_ALLOW"):
            Settings(_env_file=None, http_endpoint_allow=[entry])


def test_the_services_own_and_redis_addresses_are_refused_even_when_listed(hardened) -> None:
    """The allowlist names both (the fixture's), and still: a 422 at registration naming which it is, nothing
    written, and the worker's scorer refuses to call them for a run registered before."""
    own = [f"http://127.0.0.1:{hardened.port}/v1/runs", f"http://localhost:{hardened.port}/"]
    redis_ = [f"http://127.0.0.1:{hardened.redis_port}/", f"http://localhost:{hardened.redis_port}/x"]
    with client(hardened.url) as learner:
        before = snapshot(hardened.r)
        for endpoints, what in ((own, "the reward service's own address"), (redis_, "Redis's address")):
            for endpoint in endpoints:
                response = learner.post("/v1/runs", json={"run_id": "self", "dataset": "shapes", "level": "image",
                                                          "scorer": "http", "endpoint": endpoint})
                assert response.status_code == 422, response.text
                assert what in response.json()["detail"], response.text
        assert snapshot(hardened.r) == before
        register(learner, "leaky-ok", scorer="http", endpoint=f"{hardened.leaky.url}/score")  # listed, elsewhere
    request = ExternalScoreRequest(episode_id="e", run_id="r", image_id=IMAGE, dataset="shapes", level="image",
                                   metric="miou", grid=Grid(), samples=[codec.raw_mask(label_of())])

    async def score(endpoint: str) -> None:
        async with HttpScorer(hardened.settings) as scorer:
            await scorer.score(endpoint, request)

    for endpoint, what in ((own[0], "own address"), (redis_[1], "Redis's address")):
        with pytest.raises(Rejected, match=what):
            asyncio.run(score(endpoint))


@pytest.mark.parametrize(("path", "reason"), [
    ("/forbidden", "endpoint returned 403; not retried (its body is in the worker's log)"),
    ("/redirect", "endpoint returned 302; not retried (its body is in the worker's log)"),
    ("/server-error", "endpoint returned 500 (1 try)"),
    ("/contract", "endpoint answer does not fit the contract: rewards: Input should be a valid list"),
    ("/redis", "endpoint unreachable (RemoteProtocolError) (1 try)"),
])
def test_an_endpoints_answer_never_reaches_what_a_client_reads(hardened, path, reason) -> None:
    """The episode's reason, the results stream and the dead letter say the status and a fixed reason; the
    body is in the service's log, cut at 500 characters. Before, the first 200 characters of an error body
    were stored in the reason, and a transport error's text (which quotes a line that is not HTTP, as Redis
    answers) too: a learner token could read an internal service's answer back."""
    run_id = "leak" + path.replace("/", "-")
    start = len(hardened.proc.log())
    with client(hardened.url) as learner:
        register(learner, run_id, scorer="http", endpoint=hardened.leaky.url + path)
        accepted = learner.post("/v1/episodes", json=episode(run_id, [codec.raw_mask(label_of())]))
        assert accepted.status_code == 202, accepted.text
        status = wait_status(learner, accepted.json()["episode_id"], ("failed",))
        stats = learner.get("/v1/stats").text
    (result,) = read_results(hardened.r, run_id, 1)
    letters = [json.loads(f[b"payload"]) for _, f in hardened.r.xrange("rss:v1:deadletter")]
    letter = next(x for x in letters if x["run_id"] == run_id)
    assert status["reason"] == result["error"] == letter["reason"] == reason, (status, result, letter)
    for readable in (json.dumps(status), json.dumps(result), json.dumps(letter), stats):
        assert "SECRET" not in readable
    log = hardened.proc.log()[start:]
    assert "SECRET-sss" in log, log[-2000:]  # the operator sees it ...
    assert "s" * 600 not in log  # ... cut short


def raw_attack(url: str, first: bytes, filler: bytes, total: int = 64 << 20) -> tuple[bytes, int, float]:
    """Send ``first``, then ``filler`` in 1 MiB pieces up to ``total`` bytes, stopping once the service answers
    or drops the connection: (what it answered, or b"" / the error for a dropped one; MiB sent; seconds)."""
    host, port = url.removeprefix("http://").split(":")
    piece = filler * ((1 << 20) // len(filler))
    sent, started = 0, time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=30) as s:
        try:
            s.sendall(first)
            while sent < total and not select.select([s], [], [], 0)[0]:
                s.sendall(piece)
                sent += len(piece)
            answer = s.recv(65536)
        except OSError as exc:  # the service closed with the attack unread: the kernel resets the connection
            answer = repr(exc).encode()
    return answer, sent >> 20, time.perf_counter() - started


def test_huge_and_slow_request_heads_are_refused_before_the_app(hardened) -> None:
    """A 64 MiB header and a 64 MiB URL are refused after the first MiB with 431 / 414 (or the connection reset,
    when the service closes with the rest unread), and a head that never ends is answered 408 after
    RSS_HEADER_TIMEOUT_S (2 s here), a connection that sends nothing is closed; health is answered meanwhile.
    Before, the header was read and answered (3.5 s of CPU, other requests stalled up to 1.4 s), the URL too,
    and a head that never ended kept its connection for minutes."""
    url, pid = hardened.url, hardened.proc.popen.pid
    peak = peak_rss_mb(pid)
    cpu = hardened.proc.cpu_seconds()
    attacks = [(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: ", b"a", 431), (b"GET /v1/health?", b"a", 414),
               (b"GET /v1/health HTTP/1.1\r\nHost: x\r\n", b"X-Many: " + b"b" * 1014 + b"\r\n", 431)]
    outcomes = []
    with HealthProbe(url) as probe:
        started = time.perf_counter()
        while time.perf_counter() - started < 2 or not outcomes:  # the attacks again and again, for 2 s
            outcomes += [(*raw_attack(url, first, filler), status) for first, filler, status in attacks]
    for answer, mib, _, status in outcomes:
        assert mib < 64, (status, mib)  # refused while it arrived, not read whole
        assert answer.startswith(b"HTTP/1.1 %d " % status) or b"ConnectionResetError" in answer \
            or b"BrokenPipeError" in answer, answer[:300]
    for _, _, status in attacks[:2]:
        mine = [o for o in outcomes if o[3] == status]
        print(f"{status}: {len(mine)} attacks, refused after at most {max(o[1] for o in mine)} MiB, in at most "  # noqa: T201
              f"{max(o[2] for o in mine):.3f} s; {sum(o[0].startswith(b'HTTP') for o in mine)} answered, the rest "
              "reset")
    probe.check(f"{len(outcomes)} 64 MiB header / URL attacks")
    print(f"service CPU during them: {hardened.proc.cpu_seconds() - cpu:.2f} s")  # noqa: T201
    assert peak_rss_mb(pid) - peak < 50  # nothing was kept
    # just over the limit in one piece: the exact count of the head, and the answer's text
    host, port = url.removeprefix("http://").split(":")
    for head, status, words in (
            (b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (32 << 10) + b"\r\n\r\n", 431,
             "headers exceed the limit of 32768 bytes (RSS_MAX_HEADER_BYTES)"),
            (b"GET /v1/health?" + b"a" * (8 << 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414,
             "URL exceeds the limit of 8192 bytes (RSS_MAX_URL_BYTES)")):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(head)
            answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
        assert words in answer.decode() and b"connection: close" in answer.lower(), answer
    with client(url) as c:  # a large head within the limits is fine
        assert c.get("/v1/health", headers={"X-Fine": "f" * (16 << 10)}).status_code == 200
    # a head that never ends, a byte every half second; a connection that sends nothing
    with HealthProbe(url) as probe:
        with socket.create_connection((host, int(port)), timeout=30) as slow, \
                socket.create_connection((host, int(port)), timeout=30) as silent:
            started = time.perf_counter()
            slow.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            answer = b""
            while time.perf_counter() - started < 20:
                if select.select([slow], [], [], 0.5)[0]:
                    answer = slow.recv(65536)
                    break
                slow.sendall(b"z")
            slow_s = time.perf_counter() - started
            assert silent.recv(65536) == b""  # closed, nothing to answer
            silent_s = time.perf_counter() - started
    assert answer.startswith(b"HTTP/1.1 408 ") and b"RSS_HEADER_TIMEOUT_S" in answer, answer[:300]
    assert slow_s < 20 and silent_s < 20
    print(f"slow head answered 408 after {slow_s:.2f} s, silent connection closed after {silent_s:.2f} s")  # noqa: T201
    probe.check("a slow head and a silent connection")
    assert "Traceback" not in hardened.proc.log()


def nginx_directive(name: str) -> str:
    found = re.findall(rf"^\s*{name}\s+([^;]+);", (REPO / "deploy" / "nginx.conf").read_text(), re.M)
    assert len(found) == 1, (name, found)
    return found[0].strip()


def test_the_proxy_limits_request_heads_as_the_service_does() -> None:
    """deploy/nginx.conf (compose's proxy) refuses what the service would, before it reaches a replica: a request
    line or a header line over 8 KiB, at most 4 of those buffers (32 KiB, RSS_MAX_HEADER_BYTES), a head slower
    than RSS_HEADER_TIMEOUT_S, and a body pausing over 30 s. Checked against nginx 1.22 by hand: 64 MiB header
    400 and URL 414 after 1 MiB, a slow head closed after 10.0 s (see docs/security.md)."""
    defaults = Settings(_env_file=None)
    count, size = nginx_directive("large_client_header_buffers").split()
    assert int(size.removesuffix("k")) * 1024 == defaults.max_url_bytes
    assert int(count) * int(size.removesuffix("k")) * 1024 == defaults.max_header_bytes
    assert nginx_directive("client_header_buffer_size") == "1k"
    assert nginx_directive("client_header_timeout") == f"{defaults.header_timeout_s:g}s"
    assert nginx_directive("client_body_timeout") == "30s"


def test_pngs_with_tens_of_mib_of_text_chunks_are_refused_before_decompressing(hardened) -> None:
    """24 MiB of zTXt chunks (each inflating to just under Pillow's 1 MiB cap) around a 64x64 mask: a 422 naming
    the ancillary chunks, as an episode's sample and as a rater's pixel answer, nothing written. Before, the
    header check passed them and Pillow inflated every chunk (0.08 s of CPU each time)."""
    label = label_of()
    png = base64.b64decode(codec.png_mask(label).data)
    bomb = codec.PngMask(data=base64.b64encode(png_with_chunks(png, ztxt_chunks(12), ztxt_chunks(12))).decode())
    with client(hardened.url) as learner, rater(hardened.url, "alice") as alice:
        register(learner, "ztxt", scorer="human", level="pixel")
        assert learner.post("/v1/episodes", json=episode("ztxt", [codec.raw_mask(label)], level="pixel")
                            ).status_code == 202
        task = alice.get("/v1/tasks/next", params={"wait_s": 10}).json()
        before = snapshot(hardened.r)
        with HealthProbe(hardened.url) as probe:
            started = time.perf_counter()
            refused = learner.post("/v1/episodes", json=episode("ztxt", [bomb], level="pixel"))
            episode_s = time.perf_counter() - started
            answer = alice.post(f"/v1/tasks/{task['task_id']}/rating", json={
                "lease_id": task["lease_id"], "pixels": {"format": "png", "data": bomb.data}})
        for response in (refused, answer):
            assert response.status_code == 422, response.text[:500]
            assert "more than 16384 bytes of ancillary chunks (text such as zTXt/iTXt/tEXt" in response.json()[
                "detail"], response.text[:500]
        assert snapshot(hardened.r) == before  # no episode, no rating
        assert hardened.r.llen(f"rss:v1:task:{task['task_id']}:ratings") == 0
        assert hardened.r.hget(f"rss:v1:lease:{task['lease_id']}", "state") == b"open"
        # the same mask with a small text chunk is decoded as if it had none
        small = png_with_chunks(png, [png_chunk(b"tEXt", b"Software\0painter")])
        fine = learner.post("/v1/episodes", json=episode(
            "ztxt", [codec.PngMask(data=base64.b64encode(small).decode())], level="pixel"))
        assert fine.status_code == 202, fine.text
    print(f"32 MiB episode body refused in {episode_s:.3f} s")  # noqa: T201
    probe.check("posting 24 MiB-of-zTXt PNGs")


def test_health_is_answered_while_large_tasks_are_leased(hardened) -> None:
    """Leasing a task encodes its masks as PNG (0.3 s for a 4096x4096 one): in a thread now, so the event loop
    answers /v1/health meanwhile. Before, the encoding ran on the loop and every request waited for it."""
    rng = np.random.default_rng(0)
    masks = [rng.integers(0, 4, (4096, 4096), dtype=np.uint8) for _ in range(3)]
    with client(hardened.url) as learner, rater(hardened.url, "bob") as bob:
        register(learner, "large", scorer="human", image_size=4096)
        for mask in masks:
            accepted = learner.post("/v1/episodes", json=episode("large", [codec.png_mask(mask)]))
            assert accepted.status_code == 202, accepted.text[:300]
        leased = []
        with HealthProbe(hardened.url) as probe:
            started = time.perf_counter()
            while len(leased) < len(masks) and time.perf_counter() - started < 60:
                task = bob.get("/v1/tasks/next", params={"wait_s": 10})
                assert task.status_code == 200, task.text[:300]
                if task.json()["run_id"] == "large":
                    leased.append(task.json())
                else:  # another test's task
                    bob.post(f"/v1/tasks/{task.json()['task_id']}/skip", json={"lease_id": task.json()["lease_id"]})
            lease_s = time.perf_counter() - started
    shown = {t["episode_id"]: codec.decode_mask(codec.PngMask(**t["samples"][0]["mask"]), (4096, 4096))
             for t in leased}
    assert len(shown) == 3 and all(any(np.array_equal(m, s) for m in masks) for s in shown.values())
    print(f"3 leases of 4096x4096 tasks in {lease_s:.2f} s")  # noqa: T201
    probe.check("leasing 4096x4096 tasks")
