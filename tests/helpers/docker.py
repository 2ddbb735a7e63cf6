"""A real Docker engine for the tests that need one (tests/deploy): the one that answers, else a `dockerd` started
as root (and stopped after), and the offline build's inputs (local base images, the wheelhouse)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import REPO

SWITCH = "RSS_COMPOSE_TEST"  # off: skip every test that needs an engine, on a machine known to have none


def run(argv: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Run ``argv`` from the repository root; fail the test with its output unless it exits 0."""
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, f"`{' '.join(argv)}` exited {result.returncode}:\n{result.stdout[-3000:]}\n" \
                                   f"{result.stderr[-3000:]}"
    return result


@contextmanager
def docker_engine(log: Path) -> Iterator:
    """A Docker SDK client to a running engine: the one that answers, else a `dockerd` started here (its output
    in ``log``) and stopped at the end. Skips under RSS_COMPOSE_TEST=off; fails, saying why, without an engine."""
    if os.environ.get(SWITCH, "").lower() in ("off", "0", "no"):
        pytest.skip(f"{SWITCH}={os.environ[SWITCH]}: the tests on a Docker engine are switched off on this machine")
    try:
        import docker
    except ImportError:
        pytest.fail("the Docker SDK is not installed (pip install -e '.[dev]' installs `docker`)")
    for tool in ("docker", "dockerd", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (apt-get install docker.io debootstrap; .ci/run does this), or set "
                        f"{SWITCH}=off on a machine without an engine")

    def answers() -> subprocess.CompletedProcess:
        # the CLI asks (the SDK would leave a socket unclosed behind a failed first request)
        return subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                              text=True, timeout=30)

    started = None
    probe = answers()
    if probe.returncode != 0:
        if os.geteuid() != 0:
            pytest.fail(f"no Docker engine answers ({probe.stderr.strip()}) and dockerd needs root to start; set "
                        f"{SWITCH}=off to skip the tests on a Docker engine on this machine")
        with log.open("w") as out:  # the child keeps its own copy of the descriptor
            started = subprocess.Popen([shutil.which("dockerd")], stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        deadline = time.monotonic() + 60
        while answers().returncode != 0:
            if started.poll() is not None or time.monotonic() > deadline:
                started.terminate()
                started.wait(timeout=30)
                pytest.fail(f"dockerd did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
    client = docker.from_env(timeout=300)
    try:
        yield client
    finally:
        client.close()
        if started is not None:
            started.terminate()
            try:
                started.wait(timeout=60)
            except subprocess.TimeoutExpired:
                started.kill()
                started.wait(timeout=30)


@dataclass
class OfflineBuild:
    """What an offline `docker build` needs, made once a session: the local base images and the wheelhouse."""

    env: dict[str, str]  # `deploy/local-images.sh --print-env`: PYTHON_IMAGE, REDIS_IMAGE, PROXY_IMAGE
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def python_image(self) -> str:
        return self.env["PYTHON_IMAGE"]


def offline_build() -> OfflineBuild:
    """deploy/local-images.sh (a tag that exists is skipped) and deploy/wheelhouse.sh (files there are kept)."""
    timings = {}
    start = time.monotonic()
    run([str(REPO / "deploy" / "local-images.sh")], timeout=1200)
    timings["local base images (deploy/local-images.sh)"] = time.monotonic() - start
    start = time.monotonic()
    run([str(REPO / "deploy" / "wheelhouse.sh")], timeout=600, env={**os.environ, "PYTHON": sys.executable})
    timings["wheelhouse (deploy/wheelhouse.sh)"] = time.monotonic() - start
    env = dict(line.split("=", 1) for line in run([str(REPO / "deploy" / "local-images.sh"), "--print-env"],
                                                  timeout=30).stdout.split())
    return OfflineBuild(env, timings)
