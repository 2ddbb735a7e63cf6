"""Talking to a running service the way its users do: HTTP clients per role, runs, episodes, rater tasks,
and reading a run's results stream as the learner does."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import redis

from rss_core import codec
from tests.helpers.factories import episode
from tests.helpers.service import LEARNER_TOKEN, RATERS


def client(url: str, token: str | None = LEARNER_TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


def rater(url: str, name: str) -> httpx.Client:
    return client(url, RATERS[name])


def register(c: httpx.Client, run_id: str = "run1", **config: object) -> dict:
    body = {"run_id": run_id, "dataset": "shapes", "level": "image", **config}
    response = c.post("/v1/runs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def post(learner: httpx.Client, run_id: str, masks: list[np.ndarray], level: str = "image") -> str:
    """POST one episode of raw ``masks``; returns its id."""
    response = learner.post("/v1/episodes", json=episode(run_id, [codec.raw_mask(m) for m in masks], level=level))
    assert response.status_code == 202, response.text
    return response.json()["episode_id"]


def lease(c: httpx.Client, wait_s: float = 5) -> dict | None:
    """The next rating task for the rater ``c`` (leased to them), or None when there is none."""
    response = c.get("/v1/tasks/next", params={"wait_s": wait_s})
    assert response.status_code in (200, 204), response.text
    return response.json() if response.status_code == 200 else None


def answer(c: httpx.Client, task: dict, **rating) -> httpx.Response:
    return c.post(f"/v1/tasks/{task['task_id']}/rating", json={"lease_id": task["lease_id"], **rating})


def read_results(r: redis.Redis, run_id: str, count: int, timeout: float = 30.0) -> list[dict]:
    """Read ``count`` results the way the learner does: consumer group, then XACK each entry."""
    stream, results = f"rss:v1:results:{run_id}", []
    deadline = time.monotonic() + timeout
    while len(results) < count and time.monotonic() < deadline:
        for _, entries in r.xreadgroup("learner", "test", {stream: ">"}, count=100, block=200) or []:
            for entry_id, fields in entries:
                results.append(json.loads(fields[b"payload"]))
                r.xack(stream, "learner", entry_id)
    assert len(results) == count, f"got {len(results)} of {count} results within {timeout} s: {results}"
    return sorted(results, key=lambda x: (x["episode_id"], x["sample_index"]))


def wait_status(c: httpx.Client, episode_id: str, statuses: tuple[str, ...], timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        episode = c.get(f"/v1/episodes/{episode_id}").json()
        if episode["status"] in statuses:
            return episode
        time.sleep(0.05)
    raise AssertionError(f"episode {episode_id} not {statuses} after {timeout} s: {episode}")
