"""Real parts for the service tests: `rss serve` processes (the redis-server fixture is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from rss.procs import RedisProcess
from tests.helpers.client import client
from tests.helpers.factories import write_voc
from tests.helpers.service import DATABASES, allow, reserved_port, service_env, start_service


@pytest.fixture(scope="session")
def scorer_ports() -> dict[str, int]:
    """The loopback ports of the external scorers the service tests start (`example`, `faulty`) and of one
    nobody listens on (`down`), picked before the service, whose RSS_HTTP_ENDPOINT_ALLOW lists exactly these."""
    return {name: reserved_port() for name in ("example", "faulty", "down")}


@pytest.fixture(scope="session")
def service(redis_server: RedisProcess, scorer_ports: dict[str, int]) -> Iterator[str]:
    """`rss serve` on shapes with short retry/lease settings, allowing the `scorer_ports` endpoints; yields its
    base URL."""
    with start_service(service_env(redis_server, max_body_bytes=2_000_000, retry_idle_s=2.0, http_timeout_s=0.5,
                                   http_retries=0, max_attempts=2, lease_s=30,
                                   http_endpoint_allow=allow(*scorer_ports.values()))) as proc:
        yield proc.url


@pytest.fixture(scope="session")
def voc_service(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`rss serve` on a tiny VOC-layout folder (labels with a 255 border), in Redis database 1 (one
    database per dataset); yields (URL, root)."""
    root = write_voc(tmp_path_factory.mktemp("voc"))
    env = service_env(redis_server, dataset="voc", data_root=root, redis_url=redis_server.db_url(DATABASES["voc"]))
    with start_service(env) as proc:
        yield proc.url, root


@pytest.fixture(scope="session")
def scenes_service(redis_server: RedisProcess) -> Iterator[str]:
    """`rss serve` on 32 px `scenes` (RSS_DATASET=scenes, 8 images), in a database of its own; yields its URL."""
    env = service_env(redis_server, dataset="scenes", scenes_size=32, shapes_length=8,
                      redis_url=redis_server.db_url(DATABASES["scenes"]))
    with start_service(env) as proc:
        yield proc.url


@pytest.fixture
def learner(service: str, redis_client: redis.Redis) -> Iterator[httpx.Client]:
    """An HTTP client with the learner token, against a flushed Redis."""
    with client(service) as c:
        yield c
