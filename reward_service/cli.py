"""`rss serve` (HTTP processes under uvicorn, plus scoring processes) and `rss worker` (one scoring process)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from dataclasses import dataclass

import tyro
from pydantic import ValidationError

from reward_service.procs import Supervised

log = logging.getLogger(__name__)


@dataclass
class ServeArgs:
    """Run the reward service. Every setting comes from RSS_* environment variables or .env (see .env.example);
    the flags below override the network ones."""

    host: str | None = None
    """bind address (RSS_HOST, default 127.0.0.1)"""
    port: int | None = None
    """port (RSS_PORT, default 8000)"""
    workers: int | None = None
    """uvicorn worker processes (RSS_WORKERS, default 1)"""


@dataclass
class WorkerArgs:
    """Run one scoring process: it takes jobs from Redis and writes results. `rss serve` starts
    RSS_WORKER_PROCESSES of them; run more (any machine, same RSS_* settings) to score faster."""


def main(argv: list[str]) -> int:
    args = tyro.cli(ServeArgs, args=argv, prog="rss serve")
    for name in ("host", "port", "workers"):
        if getattr(args, name) is not None:
            os.environ[f"RSS_{name.upper()}"] = str(getattr(args, name))

    import uvicorn

    from reward_service.http_limits import LimitedHttpToolsProtocol

    settings = load_settings()
    if not settings.learner_tokens:
        raise ValueError("no learner token configured: set RSS_LEARNER_TOKENS='[\"<secret>\"]' (see .env.example)")
    if not settings.rater_tokens:
        log.warning("no rater tokens configured (RSS_RATER_TOKENS): nobody can answer human rating tasks")
    # Scoring runs in processes of its own: in an HTTP process it would compete with request
    # handling for the GIL (measured: `rss bench service`).
    # A worker that dies (a crash in a scorer's native code, the OOM killer) is started again: Supervised.
    scorers = Supervised([sys.executable, "-m", "reward_service", "worker"], settings.worker_processes,
                         "scoring worker")
    try:
        uvicorn.run("reward_service.main:create_app", factory=True, host=settings.host, port=settings.port,
                    workers=settings.workers, log_level=settings.log_level, access_log=False,
                    http=LimitedHttpToolsProtocol,  # limits on the request head: RSS_MAX_HEADER_BYTES, ...
                    proxy_headers=False)  # uvicorn's would believe X-Forwarded-For from 127.0.0.1: client_address
    finally:
        scorers.stop()
    return 0


def load_settings():
    from reward_service.core.config import Settings

    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        where = "RSS_" + "_".join(str(p) for p in error["loc"]).upper() if error["loc"] else "settings"
        raise ValueError(f"bad settings: {where}: {error['msg']}") from exc


def worker_main(argv: list[str]) -> int:
    tyro.cli(WorkerArgs, args=argv, prog="rss worker")  # no options: --help, and unknown flags refused
    from reward_service.worker import run_worker

    settings = load_settings()
    logging.getLogger().setLevel(settings.log_level.upper())
    asyncio.run(run_worker(settings))
    return 0
