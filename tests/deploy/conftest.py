"""The `compose` marker: tests that need a real Docker engine: the images built offline and docker-compose.yml run
on it, and scorer containers started by `rss scorer up` (`pytest -m compose` runs them alone, `-m "not compose"`
leaves them out; RSS_COMPOSE_TEST=off skips them on a machine known to have no engine). The engine and the offline
build's inputs are made once a session (tests/helpers/docker.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.docker import OfflineBuild, docker_engine, offline_build


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "compose: needs a real Docker engine (builds images offline, runs the compose "
                                       "stack or scorer containers)")


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A Docker SDK client to a running engine: the one that answers, else a `dockerd` started here (and stopped
    at the end of the session)."""
    with docker_engine(tmp_path_factory.mktemp("dockerd") / "dockerd.log") as client:
        yield client


@pytest.fixture(scope="session")
def offline_build_inputs(engine) -> OfflineBuild:
    """The local base images and the wheelhouse (each step skips what exists)."""
    return offline_build()
