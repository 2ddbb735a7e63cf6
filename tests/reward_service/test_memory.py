"""What one request may make the service hold (issue 19, memory amplification), against a real `rss serve`:
grids finer than the image are refused, a request's decoded masks are bounded, scored masks are dropped."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rss.procs import RedisProcess
from rss_core import codec
from tests.helpers.client import answer, client, lease, rater, register, wait_status
from tests.helpers.factories import episode, label_of
from tests.helpers.service import DATABASES, service_env, start_service

DB = DATABASES["memory"]
REQUEST_PIXELS = 3 * 64 * 64  # three single-mask 64x64 episodes per request
RUN_PIXELS = 4 * 64 * 64  # four such episodes stored and not yet scored, per run
TOKEN_PIXELS = 6 * 64 * 64  # and six over all the runs of one learner token


@pytest.fixture(scope="module")
def small(redis_server: RedisProcess) -> Iterator[tuple[str, redis.Redis, int]]:
    r = redis.Redis(port=redis_server.port, db=DB)
    r.flushdb()
    env = service_env(redis_server, redis_url=redis_server.db_url(DB), max_request_pixels=REQUEST_PIXELS,
                      max_run_pending_pixels=RUN_PIXELS, max_token_pending_pixels=TOKEN_PIXELS,
                      worker=True)
    with start_service(env) as proc:
        yield proc.url, r, proc.popen.pid
    r.close()


def rss_mb(pid: int) -> float:
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024


def test_a_grid_finer_than_the_image_is_refused_before_anything_is_decoded(small) -> None:
    """The attack: 32 episodes of one RLE run each on a 4096-cell pooled grid, a 7 KB body that decoded to
    512 MiB of masks for 64x64 images (~900 MiB of Redis, held for a day)."""
    url, r, pid = small
    with client(url) as learner:
        register(learner, "amp")
        bomb = codec.RleMask(shape=(4096, 4096), values=[0], counts=[4096 * 4096]).model_dump()
        body = {"episodes": [episode("amp", [], scale=4096, grid_mode="pool") | {"samples": [bomb]}
                             for _ in range(32)]}
        memory, rss = r.info("memory")["used_memory"], rss_mb(pid)
        latencies: list[tuple[int, float]] = []
        done = threading.Event()
        poller = threading.Thread(target=lambda: _poll(url, latencies, done))
        poller.start()
        while not latencies:  # polling before the attack starts, and on through it
            time.sleep(0.01)
        try:
            refused = learner.post("/v1/episodes/batch", json=body)
        finally:
            done.set()
            poller.join()
        assert refused.status_code == 422, refused.text
        assert "grid scale 4096 is finer than the 64x64 image" in refused.json()["detail"]
        assert refused.json()["detail"].startswith("episodes[0]: ")
        assert not r.keys("rss:v1:episode:*")  # nothing half-written
        assert r.info("memory")["used_memory"] - memory < 2 * 2**20 and rss_mb(pid) - rss < 64
        assert latencies and all(status == 200 for status, _ in latencies)  # /v1/health answered throughout
        slowest = max(t for _, t in latencies) * 1000
        print(f"health during the refused attack: max {slowest:.1f} ms over {len(latencies)}")  # noqa: T201


def _poll(url: str, latencies: list[tuple[int, float]], done: threading.Event) -> None:
    with client(url) as c:
        while not done.is_set():
            started = time.perf_counter()
            status = c.get("/v1/health").status_code
            latencies.append((status, time.perf_counter() - started))
            time.sleep(0.02)


def test_a_requests_masks_are_bounded_and_scored_masks_are_dropped(small) -> None:
    url, r, _ = small
    with client(url) as learner:
        register(learner, "req")
        one = episode("req", [codec.raw_mask(label_of())])
        over = learner.post("/v1/episodes/batch", json={"episodes": [one] * 4})  # 4 x 64 x 64 > 3 x 64 x 64
        assert over.status_code == 413, over.text
        assert over.json()["detail"] == (f"episodes[3]: the request's masks exceed the limit of {REQUEST_PIXELS} "
                                         "pixels per request (RSS_MAX_REQUEST_PIXELS): send fewer episodes per "
                                         "batch.")
        assert not r.keys("rss:v1:episode:*")  # all or nothing
        accepted = learner.post("/v1/episodes/batch", json={"episodes": [one] * 3})
        assert accepted.status_code == 202, accepted.text
        for e in accepted.json()["episodes"]:
            wait_status(learner, e["episode_id"], ("scored",))
            key = f"rss:v1:episode:{e['episode_id']}"
            assert r.hget(key, "status") == b"scored" and not r.hexists(key, "masks")  # nothing reads them again

        assert r.get("rss:v1:pending-pixels:req") is None  # all released, by the worker's finish script
        assert not r.keys("rss:v1:token-pending-pixels:*")


def test_a_run_holds_a_bounded_number_of_unscored_masks(small) -> None:
    """Episodes waiting for raters are held until rated: a run's stored, unscored masks are bounded (429 with
    Retry-After, nothing stored, other runs unaffected), and a rating frees its episode's share at once."""
    url, r, _ = small
    r.flushdb()  # no task or pending count of an earlier test (the worker makes its group again)
    with client(url) as learner, rater(url, "alice") as alice:
        register(learner, "slow", scorer="human")
        register(learner, "other")
        one = episode("slow", [codec.raw_mask(label_of())])
        first = learner.post("/v1/episodes/batch", json={"episodes": [one] * 3})
        assert first.status_code == 202, first.text
        assert int(r.get("rss:v1:pending-pixels:slow")) == 3 * 64 * 64
        stored = len(r.keys("rss:v1:episode:*"))
        busy = learner.post("/v1/episodes/batch", json={"episodes": [one] * 2})  # 5 would pass the 4 allowed
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1", busy.text
        assert busy.json()["detail"] == (
            f"run 'slow' has {3 * 64 * 64} mask pixels stored and not yet scored; {2 * 64 * 64} more would pass "
            f"RSS_MAX_RUN_PENDING_PIXELS ({RUN_PIXELS}): send them again once its episodes are scored (or rated).")
        assert len(r.keys("rss:v1:episode:*")) == stored  # nothing of the refused request
        other = learner.post("/v1/episodes/batch", json={"episodes": [episode("other", [codec.raw_mask(label_of())])]})
        assert other.status_code == 202, other.text  # the bound is the run's, not the service's
        assert learner.post("/v1/episodes", json=one).status_code == 202  # the fourth fits
        assert learner.post("/v1/episodes", json=one).status_code == 429
        task = lease(alice)
        assert answer(alice, task, score=0.8).status_code == 200
        wait_status(learner, task["episode_id"], ("scored",))
        assert int(r.get("rss:v1:pending-pixels:slow")) == 3 * 64 * 64  # the rated one released its masks
        assert not r.hexists(f"rss:v1:episode:{task['episode_id']}", "masks")
        assert learner.post("/v1/episodes", json=one).status_code == 202


def test_a_learner_token_holds_a_bounded_number_of_unscored_masks_over_its_runs(small) -> None:
    """A token may register any number of runs: their unscored masks together are bounded too."""
    url, r, _ = small
    r.flushdb()
    with client(url) as learner, rater(url, "alice") as alice:
        for run_id in ("a", "b"):
            register(learner, run_id, scorer="human")
            three = [episode(run_id, [codec.raw_mask(label_of())])] * 3
            assert learner.post("/v1/episodes/batch", json={"episodes": three}).status_code == 202
        (token_key,) = r.keys("rss:v1:token-pending-pixels:*")
        assert int(r.get(token_key)) == TOKEN_PIXELS
        busy = learner.post("/v1/episodes", json=episode("b", [codec.raw_mask(label_of())]))  # b itself has room
        assert busy.status_code == 429, busy.text
        assert busy.json()["detail"] == (
            f"this learner token's runs have {TOKEN_PIXELS} mask pixels stored and not yet scored; {64 * 64} more "
            f"would pass RSS_MAX_TOKEN_PENDING_PIXELS ({TOKEN_PIXELS}): send them again once their episodes are "
            "scored (or rated).")
        task = lease(alice)
        assert answer(alice, task, score=0.3).status_code == 200
        wait_status(learner, task["episode_id"], ("scored",))
        assert int(r.get(token_key)) == TOKEN_PIXELS - 64 * 64
        assert learner.post("/v1/episodes", json=episode("b", [codec.raw_mask(label_of())])).status_code == 202
