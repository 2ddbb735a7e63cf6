"""The service the tests run: its tokens, its RSS_* environment, one Redis database per service, and starting
`rss serve` or a uvicorn app from the repository root through `rss.procs`."""

from __future__ import annotations

import json
import random

from rss.procs import RedisProcess, ServiceProcess, free_port
from rss.procs import start_service as _start_service
from tests.helpers import REPO

LEARNER_TOKEN = "learner-secret"
RATERS = {"alice": "alice-secret", "bob": "bob-secret"}

# One Redis database per service a test module starts: a service claims its database for its dataset
# (reward_service.store.claim_database), so two modules' services must never share one.
DATABASES = {"service": 0, "voc": 1, "ui": 2, "remote": 3, "honeypots": 4, "ddp": 5, "remote_limited": 6,
             "faults_replicas": 7, "faults_endpoint": 8, "security_poison": 9, "security_voc": 10,
             "security_limited": 11, "fuzz": 12, "faults_poison": 13, "security_address": 14, "security_big": 15,
             "memory": 16, "human_amend": 17, "scenes": 18,
             "faults_worker_restart": 19, "scorer_containers": 20}


def service_env(redis_server: RedisProcess, **settings: object) -> dict[str, str]:
    """The RSS_* environment of a test service on ``redis_server`` (database 0 unless ``redis_url`` is given);
    ``settings`` override or add RSS_<NAME> variables."""
    env = {
        "RSS_REDIS_URL": redis_server.url, "RSS_LEARNER_TOKENS": f'["{LEARNER_TOKEN}"]',
        "RSS_RATER_TOKENS": "{" + ", ".join(f'"{k}": "{v}"' for k, v in RATERS.items()) + "}",
        "RSS_WORKER_BLOCK_MS": "200", "RSS_LOG_LEVEL": "warning", "OMP_NUM_THREADS": "1",
        "RSS_WARM_LABELS": "false",  # 2000 shapes labels per service start would cost CI minutes (test_datasets)
        # results at once: the default holds every human task's finalize RSS_AMEND_S (5 s) for an Undo; the tests
        # of amending (test_human, tests/ui) start services with it on
        "RSS_AMEND_S": "0",
    }
    env.update({f"RSS_{k.upper()}": str(v) for k, v in settings.items()})
    return env


# Every service and scorer the tests started: when a test fails, tests/conftest.py adds the tail of each live
# one's output to the report (a worker's traceback is in `rss serve`'s log, and CI shows nothing else of it).
STARTED: list[ServiceProcess] = []


def start_service(env: dict[str, str] | None = None, *, startup_s: float = 60.0, port: int = 0) -> ServiceProcess:
    """`rss serve` with ``env`` on ``port`` (a free loopback port when 0), started from the repository root;
    waits for /v1/ready. A context manager (leaving it stops the service); ``url`` is its base URL, ``log()``
    its output."""
    return _started(_start_service(env, port, cwd=REPO, startup_s=startup_s))


def start_uvicorn(app: str, env: dict[str, str] | None = None, *, startup_s: float = 30.0,
                  health_path: str = "/health", port: int = 0) -> ServiceProcess:
    """``python -m uvicorn app`` ("module:attribute", importable from the repository root) on ``port`` (a free
    loopback port when 0); waits until ``health_path`` answers 200."""
    return _started(_start_service(env, port, app=app, ready_path=health_path, cwd=REPO, startup_s=startup_s))


def _started(proc: ServiceProcess) -> ServiceProcess:
    STARTED[:] = [p for p in STARTED if p.popen is not None and p.popen.poll() is None]
    STARTED.append(proc)
    return proc


def live_logs(chars: int = 4000) -> list[tuple[str, str]]:
    """(name and port, tail of its output) of each started service or scorer still running."""
    return [(f"{p.name} on port {p.port}", p.log_tail(chars)) for p in STARTED
            if p.popen is not None and p.popen.poll() is None]


def reserved_port() -> int:
    """A free loopback port for an external scorer a test starts after the service that calls it: the
    service's RSS_HTTP_ENDPOINT_ALLOW names the exact port, so it is picked first. Picked below the ephemeral
    range (32768 and up on Linux), where the system hands out the ports of outgoing connections, so it stays
    free until the scorer binds it."""
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(20_000, 32_000)
        if free_port(port) == port:
            return port
    return free_port()


def allow(*ports: int) -> str:
    """RSS_HTTP_ENDPOINT_ALLOW for endpoints on these loopback ports (any path)."""
    return json.dumps([f"http://127.0.0.1:{port}" for port in ports])
