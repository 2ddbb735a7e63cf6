"""Real parts for the service tests: `rss serve` processes (the redis-server fixture is in tests/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import DATABASES, RedisServer
from tests.reward_service.procs import start_service

LEARNER_TOKEN = "learner-secret"
RATERS = {"alice": "alice-secret", "bob": "bob-secret"}


def service_env(redis_server: RedisServer, **settings: object) -> dict[str, str]:
    env = {
        "RSS_REDIS_URL": redis_server.url, "RSS_LEARNER_TOKENS": f'["{LEARNER_TOKEN}"]',
        "RSS_RATER_TOKENS": "{" + ", ".join(f'"{k}": "{v}"' for k, v in RATERS.items()) + "}",
        "RSS_WORKER_BLOCK_MS": "200", "RSS_LOG_LEVEL": "warning", "OMP_NUM_THREADS": "1",
        "RSS_WARM_LABELS": "false",  # 2000 shapes labels per service start would cost CI minutes (test_datasets)
    }
    env.update({f"RSS_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@pytest.fixture(scope="session")
def service(redis_server: RedisServer) -> Iterator[str]:
    """`rss serve` on shapes with short retry/lease settings; yields its base URL."""
    with start_service(service_env(redis_server, max_body_bytes=2_000_000, retry_idle_s=2.0, http_timeout_s=0.5,
                                   http_retries=0, max_attempts=2, lease_s=30)) as proc:
        yield proc.url


@pytest.fixture(scope="session")
def voc_service(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`rss serve` on a tiny VOC-layout folder (labels with a 255 border), in Redis database 1 (one
    database per dataset); yields (URL, root)."""
    from tests.conftest import write_voc

    root = write_voc(tmp_path_factory.mktemp("voc"))
    env = service_env(redis_server, dataset="voc", data_root=root, redis_url=redis_server.db_url(DATABASES["voc"]))
    with start_service(env) as proc:
        yield proc.url, root


def client(url: str, token: str | None = LEARNER_TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


@pytest.fixture
def learner(service: str, redis_client: redis.Redis) -> Iterator[httpx.Client]:
    """An HTTP client with the learner token, against a flushed Redis."""
    with client(service) as c:
        yield c


def rater(url: str, name: str) -> httpx.Client:
    return client(url, RATERS[name])


def register(c: httpx.Client, run_id: str = "run1", **config: object) -> dict:
    body = {"run_id": run_id, "dataset": "shapes", "level": "image", **config}
    response = c.post("/v1/runs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def read_results(r: redis.Redis, run_id: str, count: int, timeout: float = 30.0) -> list[dict]:
    """Read ``count`` results the way the learner does: consumer group, then XACK each entry."""
    import json

    stream, results = f"rss:v1:results:{run_id}", []
    deadline = time.monotonic() + timeout
    while len(results) < count and time.monotonic() < deadline:
        for _, entries in r.xreadgroup("learner", "test", {stream: ">"}, count=100, block=200) or []:
            for entry_id, fields in entries:
                results.append(json.loads(fields[b"payload"]))
                r.xack(stream, "learner", entry_id)
    assert len(results) == count, f"got {len(results)} of {count} results within {timeout} s: {results}"
    return sorted(results, key=lambda x: (x["episode_id"], x["sample_index"]))


def wait_status(c: httpx.Client, episode_id: str, statuses: tuple[str, ...], timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        episode = c.get(f"/v1/episodes/{episode_id}").json()
        if episode["status"] in statuses:
            return episode
        time.sleep(0.05)
    raise AssertionError(f"episode {episode_id} not {statuses} after {timeout} s: {episode}")
