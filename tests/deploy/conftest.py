"""The `compose` marker: tests that build the images and run docker-compose.yml on a real Docker engine
(`pytest -m compose` runs them alone, `-m "not compose"` leaves them out; RSS_COMPOSE_TEST=off skips them on
a machine known to have no engine)."""

from __future__ import annotations


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "compose: builds the images and runs the compose stack on a real Docker engine")
