"""Shared fixtures: tiny datasets in the standard layouts, the CLI runner, a real redis-server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

from rss.procs import free_port
from rss_core.data.base import voc_palette

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """A VOC-2012-layout folder: 6 train / 2 val images of 40x48, palette labels with a 255 border."""
    return write_voc(tmp_path)


def write_voc(tmp_path: Path) -> Path:
    """Write the `voc_root` fixture's folder under ``tmp_path``; returns its root."""
    root = tmp_path / "VOC2012"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "SegmentationClass").mkdir()
    rng = np.random.default_rng(0)
    ids = [f"2007_{i:06d}" for i in range(8)]
    for n, image_id in enumerate(ids):
        label = np.zeros((40, 48), np.uint8)
        label[10:30, 8 + n : 30 + n] = 1 + n % 3  # a box of class 1..3
        label[0, :] = 255  # VOC's "void" border
        image = rng.integers(0, 80, (40, 48, 3), dtype=np.uint8)
        image[label == 1 + n % 3] += 150
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        im = Image.fromarray(label, mode="P")
        im.putpalette(voc_palette().flatten().tolist())
        im.save(root / "SegmentationClass" / f"{image_id}.png")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids[:6]) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids[6:]) + "\n")
    return root


def run_rss(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed `rss` entry point in a subprocess, one torch thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "rss.cli", *args], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=timeout,
    )


def ledger(out: Path) -> list[dict]:
    """The learner's `applied.jsonl` in ``out``: one entry per update (none before the first)."""
    path = out / "applied.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_until_scored(client, timeout: float = 60) -> None:
    """Until the workers have read and finished every scoring job queued in ``client``'s database, so an
    audit of a results stream sees every result the service will ever write for what it accepted."""
    deadline = time.monotonic() + timeout
    while True:
        group = next(g for g in client.xinfo_groups("rss:v1:jobs") if g["name"] == b"scorers")
        last = client.xinfo_stream("rss:v1:jobs")["last-generated-id"]
        if group["pending"] == 0 and group["last-delivered-id"] == last:
            return
        assert time.monotonic() < deadline, f"scoring jobs still queued or held after {timeout} s: {group}"
        time.sleep(0.1)


# One Redis database per service a test module starts: a service claims its database for its dataset
# (reward_service.store.claim_database), so two modules' services must never share one.
DATABASES = {"service": 0, "voc": 1, "ui": 2, "remote": 3, "honeypots": 4, "ddp": 5, "remote_limited": 6,
             "faults_replicas": 7, "faults_endpoint": 8}


class RedisServer:
    def __init__(self, port: int, popen: subprocess.Popen) -> None:
        self.port, self.popen, self.url = port, popen, f"redis://127.0.0.1:{port}/0"

    def db_url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One throwaway redis-server per test session (no persistence), on loopback only."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/run does this)")
    port, folder = free_port(), tmp_path_factory.mktemp("redis")
    popen = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    server = RedisServer(port, popen)
    for _ in range(100):
        try:
            if server.client().ping():
                break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        popen.kill()
        pytest.fail(f"redis-server did not answer on port {port}")
    yield server
    popen.terminate()
    popen.wait(10)


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client to a flushed Redis (every database): each test starts with no runs, episodes or streams."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()
