"""`rss serve`: run the reward service under uvicorn with the settings from the environment."""

from __future__ import annotations

import argparse
import logging
import os

from pydantic import ValidationError

log = logging.getLogger(__name__)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rss serve", description=(
        "Run the reward service. Every setting comes from RSS_* environment variables or .env "
        "(see .env.example); the flags below override the network ones."))
    parser.add_argument("--host", help="bind address (RSS_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (RSS_PORT, default 8000)")
    parser.add_argument("--workers", type=int, help="uvicorn worker processes (RSS_WORKERS, default 1)")
    args = parser.parse_args(argv)
    for name in ("host", "port", "workers"):
        if getattr(args, name) is not None:
            os.environ[f"RSS_{name.upper()}"] = str(getattr(args, name))

    import uvicorn

    from reward_service.core.config import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        raise ValueError(f"bad settings: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from exc
    if not settings.learner_tokens:
        raise ValueError("no learner token configured: set RSS_LEARNER_TOKENS='[\"<secret>\"]' (see .env.example)")
    if not settings.rater_tokens:
        log.warning("no rater tokens configured (RSS_RATER_TOKENS): nobody can answer human rating tasks")
    uvicorn.run("reward_service.main:create_app", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, log_level=settings.log_level, access_log=False)
    return 0
