"""Real parts for the annotator UI tests: `rss serve` (which serves /ui), redis-server, headless Chromium."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
import redis

from rss.bench.ui import CHROMIUM, CHROMIUM_ARGS
from rss.procs import RedisProcess
from tests.helpers.ui import UI_DB, ui_service


@pytest.fixture(scope="session")
def service_url(redis_server: RedisProcess) -> Iterator[str]:
    """`rss serve` on shapes (64x64) with a 60 s lease; its database is flushed per test by `db`."""
    with ui_service(redis_server, lease_s=60) as proc:
        yield proc.url


@pytest.fixture
def db(redis_server: RedisProcess) -> Iterator[redis.Redis]:
    """A client to the UI tests' flushed database (what the learner reads results from)."""
    client = redis.Redis(port=redis_server.port, db=UI_DB, socket_timeout=10)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does this)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (empty sessionStorage); any uncaught page error fails the test."""
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"
