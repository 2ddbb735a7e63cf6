"""Real parts for the annotator UI tests: `rss serve` (which serves /ui), redis-server, headless Chromium."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
import redis

from rss.bench.ui import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import DATABASES, RedisServer
from tests.reward_service.conftest import RATERS, service_env
from tests.reward_service.procs import Proc, start_service

UI_DB = DATABASES["ui"]  # the UI tests' service claims its own database


def ui_service(redis_server: RedisServer, **settings: object) -> Proc:
    env = service_env(redis_server, redis_url=redis_server.db_url(UI_DB), worker_block_ms=100, **settings)
    return start_service(env)


@pytest.fixture(scope="session")
def service_url(redis_server: RedisServer) -> Iterator[str]:
    """`rss serve` on shapes (64x64) with a 60 s lease; its database is flushed per test by `db`."""
    with ui_service(redis_server, lease_s=60) as proc:
        yield proc.url


@pytest.fixture
def db(redis_server: RedisServer) -> Iterator[redis.Redis]:
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


def sign_in(page, url: str, name: str = "alice") -> None:
    page.goto(f"{url}/ui/")
    page.fill("#token", RATERS[name])
    page.press("#token", "Enter")
    page.wait_for_function(f"document.querySelector('#rater-name').textContent === {name!r}")


def wait_task(page, kind: str | None = None, other_than: str | None = None, timeout: float = 30_000) -> str:
    """Wait until a task (of ``kind``; not ``other_than``) is drawn; returns its task id."""
    condition = "document.body.dataset.state === 'task'"
    if kind:
        condition += f" && document.body.dataset.kind === {kind!r}"
    if other_than:
        condition += f" && document.body.dataset.taskId !== {other_than!r}"
    page.wait_for_function(condition, timeout=timeout)
    return page.evaluate("document.body.dataset.taskId")
