"""Honeypots: twins of real tasks whose answer ground truth knows. They measure each rater's agreement
(GET /v1/stats), never reach a results stream, and a run can ignore raters who disagree with them."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import redis

from reward_service.scorers.human import agrees
from rss.procs import RedisProcess
from rss_core import codec
from tests.helpers.client import answer, client, lease, post, rater, read_results, register, wait_status
from tests.helpers.factories import label_of, noisy
from tests.helpers.service import DATABASES, service_env, start_service

DB = DATABASES["honeypots"]


@pytest.fixture(scope="module")
def honeypot_url(redis_server: RedisProcess) -> Iterator[str]:
    """A service where every task has a honeypot twin (RSS_HONEYPOT_FRACTION=1), in its own database."""
    env = service_env(redis_server, honeypot_fraction=1.0, redis_url=redis_server.db_url(DB), worker_block_ms=100)
    with start_service(env) as proc:
        yield proc.url


@pytest.fixture
def db(redis_server: RedisProcess, honeypot_url: str) -> Iterator[redis.Redis]:
    r = redis.Redis(port=redis_server.port, db=DB, socket_timeout=10)
    r.flushdb()
    yield r
    r.close()


def is_honeypot(db: redis.Redis, task: dict) -> bool:
    return db.hget(f"rss:v1:task:{task['task_id']}", "honeypot") == b"1"


def drain(db: redis.Redis, learner) -> None:
    """Wait until no scoring job is waiting or pending (so nothing more can reach a results stream)."""
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = learner.get("/v1/stats").json()
        if stats["jobs_waiting"] == 0 and stats["jobs_pending"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"jobs still queued: {stats}")


def test_honeypot_answers_update_agreement_and_never_reach_the_learner(honeypot_url, db) -> None:
    with client(honeypot_url) as learner, rater(honeypot_url, "alice") as alice:
        register(learner, "hp", scorer="human")
        label = label_of()
        episode_id = post(learner, "hp", [label, noisy(label, 3, 0.9)])  # gt rewards 1.0 and far below
        wait_status(learner, episode_id, ("waiting_for_rater",))
        tasks = [lease(alice) for _ in range(4)]
        assert lease(alice, wait_s=0) is None  # 2 real tasks + 2 twins, nothing else
        assert sum(is_honeypot(db, t) for t in tasks) == 2
        twins = {t["samples"][0]["sample_index"]: is_honeypot(db, t) for t in tasks}
        assert len(twins) == 2  # each sample shown by a real task and its twin
        for task in tasks:  # alice scores every mask 1.0: right for sample 0, wrong for sample 1
            assert answer(alice, task, score=1.0).status_code == 200
        results = read_results(db, "hp", 2)
        assert [r["reward"] for r in results] == [1.0, 1.0] and all(r["rater_ids"] == ["alice"] for r in results)
        drain(db, learner)
        assert db.xlen("rss:v1:results:hp") == 2  # the twins' answers are nowhere in the stream
        assert wait_status(learner, episode_id, ("scored",))["status"] == "scored"
        stats = learner.get("/v1/stats").json()["raters"]
        assert stats["alice"]["honeypots"] == 2 and stats["alice"]["honeypots_agreed"] == 1
        assert stats["alice"]["agreement"] == 0.5 and stats["alice"]["rated"] == 4
        assert stats["bob"]["agreement"] is None  # no honeypot answered yet


def test_a_run_ignores_raters_below_its_agreement_threshold(honeypot_url, db) -> None:
    with client(honeypot_url) as learner, rater(honeypot_url, "alice") as alice, \
            rater(honeypot_url, "bob") as bob:
        register(learner, "mq", scorer="human", min_rater_agreement=0.5)
        episode_id = post(learner, "mq", [label_of()])  # ground truth: score 1.0
        wait_status(learner, episode_id, ("waiting_for_rater",))
        real, twin = sorted([lease(bob), lease(bob)], key=lambda t: is_honeypot(db, t))
        assert not is_honeypot(db, real) and is_honeypot(db, twin)
        assert answer(bob, twin, score=0.0).status_code == 200  # bob fails the honeypot first
        assert answer(bob, real, score=0.0).status_code == 200
        again = lease(alice)  # bob's rating was ignored: the task is back in the queue
        assert again["task_id"] == real["task_id"]
        assert lease(bob, wait_s=0) is None  # not for bob again
        assert answer(alice, again, score=0.9).status_code == 200
        (result,) = read_results(db, "mq", 1)
        assert result["reward"] == pytest.approx(0.9) and result["rater_ids"] == ["alice"] and result["ratings"] == 1
        assert learner.get("/v1/stats").json()["raters"]["bob"]["agreement"] == 0.0


def test_agreement_rules_per_task_kind() -> None:
    assert agrees("score", {"score": 0.75}, {"score": 0.9}) and not agrees("score", {"score": 0.6}, {"score": 0.9})
    assert agrees("pairwise", {"preference": "a"}, {"preference": "a"})
    assert not agrees("pairwise", {"preference": "tie"}, {"preference": "b"})
    right = np.array([[1, 1, 2, 2], [1, 1, 1, 0]], np.uint8)  # 1 correct, 2 wrong, 0 ignored
    pixels = lambda a: {"pixels": codec.encode_array(np.asarray(a, np.uint8)).model_dump()}  # noqa: E731
    assert agrees("pixel", pixels([[0, 0, 2, 2], [0, 0, 0, 0]]), pixels(right))  # marked the wrong ones
    assert not agrees("pixel", pixels([[2, 2, 1, 1], [0, 0, 0, 0]]), pixels(right))  # backwards
    assert not agrees("pixel", pixels(np.zeros((2, 4))), pixels(right))  # nothing marked on a flawed mask
    clean = np.ones((2, 4), np.uint8)
    assert agrees("pixel", pixels(np.zeros((2, 4))), pixels(clean))  # nothing marked on a clean one
    assert agrees("best", {"best": 2}, {"best": [0, 2]}) and not agrees("best", {"best": 1}, {"best": [0, 2]})
    truth = {"verdicts": ["yes", "no", "yes", "unsure", "yes"]}
    assert agrees("point", {"verdicts": ["yes", "no", "yes", "yes", "yes"]}, truth)  # an ignored pixel is free
    assert not agrees("point", {"verdicts": ["no", "yes", "yes", "yes", "yes"]}, truth)  # 2 of 4 right
    assert not agrees("point", {"verdicts": ["unsure"] * 5}, truth)  # answering nothing is no agreement


def test_ground_truth_answers_for_best_of_n_and_points() -> None:
    from reward_service.scorers.human import honeypot_truth
    from rss_core.schemas import Grid

    target = np.zeros((4, 4), np.int64)
    target[:, 2:] = 1
    target[0, 0] = 255  # ignored
    right, half, wrong = target.clip(0, 1).astype(np.uint8), np.zeros((4, 4), np.uint8), 1 - target.clip(0, 1)
    masks = np.stack([half, right, wrong.astype(np.uint8), right])
    assert honeypot_truth("best", masks, target, Grid(), 2, "miou") == {"best": [1, 3]}
    truth = honeypot_truth("point", masks[:1], target, Grid(), 2, "miou", points=[[0, 0], [1, 1], [1, 3]])
    assert truth == {"verdicts": ["unsure", "yes", "no"]}
