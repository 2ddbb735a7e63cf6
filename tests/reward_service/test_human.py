"""The human scorer through the real service: leases, expiry, several ratings, skips, every task kind."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from rss_core import codec
from tests.helpers.client import answer, client, lease, post, rater, read_results, register, wait_status
from tests.helpers.factories import IMAGE, episode, label_of, noisy
from tests.helpers.service import DATABASES, service_env, start_service


@pytest.fixture
def raters(service: str, redis_client) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with rater(service, "alice") as alice, rater(service, "bob") as bob:
        yield alice, bob


def test_scores_from_two_raters_are_averaged_with_their_spread(learner, raters, redis_client) -> None:
    alice, bob = raters
    register(learner, "h", scorer="human", ratings_per_task=2)
    episode_id = post(learner, "h", [label_of()])
    task = lease(alice)
    assert task["kind"] == "score" and task["episode_id"] == episode_id and task["ratings_needed"] == 2
    assert task["image_url"] == f"/v1/images/{IMAGE}" and task["class_names"][0] == "background"
    mask = codec.decode_mask(codec.PngMask(**task["samples"][0]["mask"]), (64, 64))
    np.testing.assert_array_equal(mask, label_of())  # the rater sees exactly the sampled mask
    image = alice.get(task["image_url"])
    assert Image.open(io.BytesIO(image.content)).size == (64, 64)
    assert lease(alice, wait_s=0) is None  # the second slot of the same task is not for alice
    assert wait_status(learner, episode_id, ("waiting_for_rater",))["status"] == "waiting_for_rater"
    first = answer(alice, task, score=0.9)
    assert first.status_code == 200 and first.json() == {
        "task_id": task["task_id"], "ratings_done": 1, "ratings_needed": 2, "complete": False,
        "amend_until": None}
    second_task = lease(bob)
    assert second_task["task_id"] == task["task_id"]
    assert answer(bob, second_task, score=0.5).json()["complete"] is True
    (result,) = read_results(redis_client, "h", 1)
    assert result["reward"] == pytest.approx(0.7) and result["reward_std"] == pytest.approx(0.2)
    assert result["ratings"] == 2 and sorted(result["rater_ids"]) == ["alice", "bob"] and result["source"] == "human"
    assert wait_status(learner, episode_id, ("scored",))["status"] == "scored"
    stats = learner.get("/v1/stats").json()
    assert stats["raters"]["alice"]["rated"] == 1 and stats["tasks_waiting"] == 0 and stats["leases_pending"] == 0


def test_a_run_asking_more_ratings_per_task_than_there_are_raters_is_refused(learner, redis_client) -> None:
    """Each rater rates a task once: with 2 raters, 3 ratings a task would leave every task waiting forever."""
    refused = learner.post("/v1/runs", json={"run_id": "three", "dataset": "shapes", "level": "image",
                                             "scorer": "human", "ratings_per_task": 3})
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"] == ("ratings_per_task 3 needs as many raters, and this service has 2 "
                                        "(RSS_RATER_TOKENS): ask for at most 2.")
    assert not redis_client.exists("rss:v1:run:three")
    register(learner, "two", scorer="human", ratings_per_task=2)


def test_a_task_whose_episode_is_gone_is_dropped_not_a_500(learner, raters, redis_client) -> None:
    """An episode expires (RSS_EPISODE_TTL_S) while its task waits, or the database is flushed under a worker
    that was creating tasks: the task cannot be shown. It leaves the queue and the rater gets the next one."""
    alice, _ = raters
    register(learner, "expired", scorer="human")
    gone, kept = post(learner, "expired", [label_of()]), post(learner, "expired", [noisy(label_of(), 4)])
    wait_status(learner, kept, ("waiting_for_rater",))
    redis_client.delete(f"rss:v1:episode:{gone}")
    task = lease(alice)
    assert task is not None and task["episode_id"] == kept
    assert lease(alice, wait_s=0) is None  # the dropped task is not offered again (and no 500)
    statuses = {redis_client.hget(k, "status") for k in redis_client.scan_iter("rss:v1:task:*")}
    assert b"gone" in statuses


def test_pairwise_preferences_become_win_shares(learner, raters, redis_client) -> None:
    alice, _ = raters
    register(learner, "pair", scorer="human", task_kind="pairwise")
    odd = learner.post("/v1/episodes", json=episode("pair", [codec.raw_mask(label_of())] * 3))
    assert odd.status_code == 422 and "even number of samples" in odd.text
    post(learner, "pair", [label_of(), noisy(label_of(), 0), noisy(label_of(), 1), label_of()])
    answers = {}
    for preference in ("b", "tie"):
        task = lease(alice)
        assert task["kind"] == "pairwise" and len(task["samples"]) == 2
        wrong_kind = answer(alice, task, score=0.3)
        assert wrong_kind.status_code == 422 and "answer with 'preference'" in wrong_kind.text
        assert answer(alice, task, preference=preference).status_code == 200
        answers[task["samples"][0]["sample_index"]] = preference
    rewards = [r["reward"] for r in read_results(redis_client, "pair", 4)]
    expected = {"b": [0.0, 1.0], "tie": [0.5, 0.5]}
    assert rewards == expected[answers[0]] + expected[answers[2]]


def test_pixel_maps_mark_exactly_the_painted_pixels(learner, raters, redis_client) -> None:
    alice, _ = raters
    register(learner, "px", scorer="human", level="pixel")
    post(learner, "px", [noisy(label_of(), 4)], level="pixel")
    task = lease(alice)
    assert task["kind"] == "pixel"
    bad = answer(alice, task, pixels=codec.png_mask(np.full((64, 64), 7, np.uint8)).model_dump())
    assert bad.status_code == 422 and "0 (unmarked), 1 (correct) or 2 (wrong)" in bad.text
    small = answer(alice, task, pixels=codec.png_mask(np.zeros((8, 8), np.uint8)).model_dump())
    assert small.status_code == 422 and "expected 64x64" in small.text
    painted = np.zeros((64, 64), np.uint8)
    painted[10:20, 5:30] = 2  # wrong
    painted[40:50, 40:44] = 1  # correct
    assert answer(alice, task, pixels=codec.png_mask(painted).model_dump()).status_code == 200
    (result,) = read_results(redis_client, "px", 1)
    reward_map = codec.decode_array(codec.ArrayB64(**result["reward_map"]))
    expected = np.zeros((64, 64), np.float32)
    expected[10:20, 5:30], expected[40:50, 40:44] = -1, 1
    np.testing.assert_array_equal(reward_map, expected)


def test_best_of_n_is_one_task_per_episode_and_the_chosen_mask_gets_the_reward(learner, raters, redis_client) -> None:
    alice, bob = raters
    register(learner, "best", scorer="human", task_kind="best", ratings_per_task=2)
    single = learner.post("/v1/episodes", json=episode("best", [codec.raw_mask(label_of())]))
    assert single.status_code == 422 and "2 to 8 samples" in single.text
    masks = [noisy(label_of(), 0), label_of(), noisy(label_of(), 1), noisy(label_of(), 2)]
    post(learner, "best", masks)
    task = lease(alice)
    assert task["kind"] == "best" and [s["sample_index"] for s in task["samples"]] == [0, 1, 2, 3]
    for i, sample in enumerate(task["samples"]):  # every mask shown as sampled, in order
        np.testing.assert_array_equal(codec.decode_mask(codec.PngMask(**sample["mask"]), (64, 64)), masks[i])
    assert lease(alice, wait_s=0) is None  # the whole episode is one task
    wrong_kind = answer(alice, task, preference="a")
    assert wrong_kind.status_code == 422 and "answer with 'best'" in wrong_kind.text
    out_of_range = answer(alice, task, best=4)
    assert out_of_range.status_code == 422 and "one of the task's 4 samples" in out_of_range.text
    assert answer(alice, task, best=1).status_code == 200
    assert answer(bob, lease(bob), best=3).status_code == 200
    rewards = [r["reward"] for r in sorted(read_results(redis_client, "best", 4), key=lambda r: r["sample_index"])]
    assert rewards == [0.0, 0.5, 0.0, 0.5]  # the share of raters who chose each mask


def test_point_answers_reward_exactly_the_asked_cells(learner, raters, redis_client) -> None:
    alice, _ = raters
    register(learner, "pt", scorer="human", level="pixel", task_kind="point")
    mask = noisy(label_of(), 4)
    missing = learner.post("/v1/episodes", json=episode("pt", [codec.raw_mask(mask)], level="pixel"))
    assert missing.status_code == 422 and "needs `points`" in missing.text
    outside = learner.post("/v1/episodes", json=episode("pt", [codec.raw_mask(mask)], level="pixel",
                                                        points=[[3, 4], [64, 0]]))
    assert outside.status_code == 422 and "outside the 64x64 mask" in outside.text
    image_level = learner.post("/v1/episodes", json=episode("pt", [codec.raw_mask(mask)], points=[[1, 1]]))
    assert image_level.status_code == 422 and "only pixel-level episodes" in image_level.text
    points = [[3, 4], [20, 30], [63, 63]]
    ok = learner.post("/v1/episodes", json=episode("pt", [codec.raw_mask(mask)], level="pixel", points=points))
    assert ok.status_code == 202, ok.text
    task = lease(alice)
    assert task["kind"] == "point" and len(task["samples"]) == 1
    assert task["points"] == [{"y": y, "x": x, "class_id": int(mask[y, x])} for y, x in points]
    short = answer(alice, task, verdicts=["yes"])
    assert short.status_code == 422 and "each of the task's 3 points" in short.text
    assert answer(alice, task, verdicts=["yes", "no", "unsure"]).status_code == 200
    (result,) = read_results(redis_client, "pt", 1)
    reward_map = codec.decode_array(codec.ArrayB64(**result["reward_map"]))
    assert reward_map[3, 4] == 1 and reward_map[20, 30] == -1
    assert np.isnan(reward_map).sum() == 64 * 64 - 2  # unsure and never asked carry nothing


def test_skip_returns_the_task_to_others_and_answers_are_checked(learner, raters, redis_client) -> None:
    alice, bob = raters
    register(learner, "sk", scorer="human")
    post(learner, "sk", [label_of()])
    task = lease(alice)
    stolen = answer(bob, task, score=1.0)
    assert stolen.status_code == 403 and "another rater" in stolen.text
    assert alice.post(f"/v1/tasks/{task['task_id']}/skip", json={"lease_id": task["lease_id"]}).status_code == 204
    assert lease(alice, wait_s=0) is None  # not offered to the rater who skipped it
    again = lease(bob)
    assert again["task_id"] == task["task_id"] and again["lease_id"] != task["lease_id"]
    late = answer(alice, task, score=0.1)
    assert late.status_code == 409 and "already skipped" in late.text
    assert answer(bob, again, score=0.25).status_code == 200
    replay = answer(bob, again, score=0.25)
    assert replay.status_code == 409 and "already answered" in replay.text
    unknown = bob.post(f"/v1/tasks/{task['task_id']}/rating", json={"lease_id": "nope", "score": 1})
    assert unknown.status_code == 404
    assert [r["reward"] for r in read_results(redis_client, "sk", 1)] == [0.25]
    assert learner.get("/v1/stats").json()["raters"]["alice"]["skipped"] == 1


def test_an_expired_lease_is_refused_and_the_task_goes_to_the_next_rater(redis_server, redis_client) -> None:
    with start_service(service_env(redis_server, lease_s=1.0)) as proc, \
            rater(proc.url, "alice") as alice, rater(proc.url, "bob") as bob:
        with client(proc.url) as learner:
            register(learner, "ex", scorer="human")
            post(learner, "ex", [label_of()])
        task = lease(alice)
        assert lease(bob, wait_s=0) is None  # leased: nobody else sees it
        time.sleep(1.3)
        late = answer(alice, task, score=0.5)
        assert late.status_code == 410 and "expired" in late.text
        again = lease(bob)
        assert again is not None and again["task_id"] == task["task_id"]
        assert answer(bob, again, score=0.75).status_code == 200
        assert [r["reward"] for r in read_results(redis_client, "ex", 1)] == [0.75]


def test_a_rater_polling_for_a_task_they_rated_leaves_it_in_its_place(learner, raters, redis_client) -> None:
    """Two slots per task: alice rates task A's first slot, then polls and is handed A's second slot, which
    she may not take. It stays where it was, for bob, ahead of task B. Before, her poll queued it again at
    the end of the stream (a new entry each time), behind every task posted since."""
    alice, bob = raters
    register(learner, "place", scorer="human", ratings_per_task=2)
    first_episode = post(learner, "place", [label_of()])
    task = lease(alice)
    assert task["episode_id"] == first_episode
    post(learner, "place", [noisy(label_of(), 1)])
    assert answer(alice, task, score=0.5).status_code == 200
    entries = redis_client.xlen("rss:v1:tasks")
    other = lease(alice)  # A's second slot is skipped over; alice gets B
    assert other is not None and other["task_id"] != task["task_id"]
    assert redis_client.xlen("rss:v1:tasks") == entries  # nothing queued again
    assert lease(bob)["task_id"] == task["task_id"]  # A's second slot kept its place, ahead of B's second slot
    assert learner.get("/v1/tasks/queue", headers={"Authorization": alice.headers["Authorization"]}).json() == {
        "waiting": 1, "leased": 2, "available": 0, "skipped_later": 0}  # B is hers already


def test_a_task_every_rater_skipped_is_given_up_with_a_reason(learner, raters, redis_client) -> None:
    """The test service has two raters: once both skipped a task nobody is left to ask, so its sample gets an
    error result (the learner counts it failed) instead of circulating forever."""
    alice, bob = raters
    register(learner, "everyone", scorer="human")
    episode_id = post(learner, "everyone", [label_of()])
    for who in (alice, bob):
        task = lease(who)
        assert who.post(f"/v1/tasks/{task['task_id']}/skip", json={"lease_id": task["lease_id"]}).status_code == 204
    (result,) = read_results(redis_client, "everyone", 1)
    assert "reward" not in result and result["ratings"] == 0
    assert "every rater rated or skipped it" in result["error"], result
    status = wait_status(learner, episode_id, ("failed",))
    assert "no rater is left" in status["reason"]
    assert lease(alice, wait_s=0) is None and lease(bob, wait_s=0) is None
    letters = [json.loads(f[b"payload"]) for _, f in redis_client.xrange("rss:v1:deadletter")]
    assert [(letter["kind"], letter["episode_id"]) for letter in letters] == [("task", episode_id)]


def test_expired_leases_are_swept_and_a_task_skipped_max_skips_times_is_given_up(redis_server, redis_client) -> None:
    """lease_s 1 s, RSS_MAX_SKIPS 1: an expired lease is back in the queue without anyone asking (before, the
    task stayed `leased` until a rater polled); one skip gives the task up."""
    with start_service(service_env(redis_server, lease_s=1.0, max_skips=1)) as proc, \
            rater(proc.url, "alice") as alice, rater(proc.url, "bob") as bob:
        with client(proc.url) as learner:
            register(learner, "sweep", scorer="human")
            episode_id = post(learner, "sweep", [label_of()])
        task = lease(alice)
        assert alice.get("/v1/tasks/queue").json() == {"waiting": 0, "leased": 1, "available": 0, "skipped_later": 0}
        back = {"waiting": 1, "leased": 0, "available": 1, "skipped_later": 0}  # alice's lease expired: hers again
        deadline = time.monotonic() + 10
        while alice.get("/v1/tasks/queue").json() != back and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alice.get("/v1/tasks/queue").json() == back  # nobody polled
        assert answer(alice, task, score=0.5).status_code == 410
        again = lease(bob)
        assert again["task_id"] == task["task_id"]
        assert bob.post(f"/v1/tasks/{again['task_id']}/skip", json={"lease_id": again["lease_id"]}).status_code == 204
        (result,) = read_results(redis_client, "sweep", 1)
        assert result["error"] == "given up: skipped by 1 raters (RSS_MAX_SKIPS is 1)", result
        with client(proc.url) as learner:
            assert wait_status(learner, episode_id, ("failed",))["reason"].endswith("RSS_MAX_SKIPS is 1)")
        assert lease(alice, wait_s=0) is None


def test_a_rater_sees_only_their_own_counters_in_stats(learner, raters, redis_client) -> None:
    """Honeypot counters (or queue depths) read after each answer would tell a rater which tasks were
    honeypots: a rater token gets its own rated/skipped counts only; a learner token keeps the full stats."""
    alice, _ = raters
    register(learner, "own", scorer="human")
    post(learner, "own", [label_of()])
    assert answer(alice, lease(alice), score=0.5).status_code == 200
    mine = alice.get("/v1/stats")
    assert mine.status_code == 200
    assert mine.json() == {"rater": "alice", "rated": 1.0, "skipped": 0.0, "per_minute_5m": 0.0}
    full = learner.get("/v1/stats").json()
    assert set(full["raters"]) == {"alice", "bob"} and "honeypots" in full["raters"]["alice"]


def test_rater_seconds_reach_the_results_and_the_medians_and_bad_values_are_refused(
        learner, raters, redis_client) -> None:
    """Each answer's rater_seconds goes into its result (a pairwise task's time split over its two samples, so a
    run's results sum to the raters' time) and into /v1/stats's medians per task kind and per rater. A value
    that is not a finite number in (0, 86400] is a 422 naming the field, and nothing is written."""
    alice, bob = raters
    register(learner, "secs", scorer="human")
    register(learner, "secs-pair", scorer="human", task_kind="pairwise")
    post(learner, "secs", [label_of()])
    task = lease(alice)
    for bad in (0, -1.5, 86400.5, "soon", True):
        refused = answer(alice, task, score=0.5, rater_seconds=bad)
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["detail"][0]["loc"] == ["body", "rater_seconds"], refused.text
    raw = alice.post(f"/v1/tasks/{task['task_id']}/rating", content=b'{"lease_id": "%s", "score": 0.5, '
                     b'"rater_seconds": Infinity}' % task["lease_id"].encode(),
                     headers={"Content-Type": "application/json"})
    assert raw.status_code == 422
    assert learner.get("/v1/stats").json()["raters"]["alice"]["rated"] == 0  # nothing half-written
    assert answer(alice, task, score=0.5, rater_seconds=4.25).status_code == 200
    (result,) = read_results(redis_client, "secs", 1)
    assert result["rater_seconds"] == 4.25
    post(learner, "secs-pair", [label_of(), noisy(label_of(), 1)])
    pair = lease(bob)
    assert answer(bob, pair, preference="a", rater_seconds=3.0).status_code == 200
    assert [r["rater_seconds"] for r in read_results(redis_client, "secs-pair", 2)] == [1.5, 1.5]
    post(learner, "secs", [noisy(label_of(), 2)])
    assert answer(alice, lease(alice), score=0.1).status_code == 200  # rater_seconds is optional
    (unsaid,) = read_results(redis_client, "secs", 1)
    assert "rater_seconds" not in unsaid  # results leave out empty fields
    post(learner, "secs", [noisy(label_of(), 3)])
    assert answer(alice, lease(alice), score=0.1, rater_seconds=10.0).status_code == 200
    stats = learner.get("/v1/stats").json()
    assert stats["median_rater_seconds"]["score"] == pytest.approx((4.25 + 10.0) / 2)
    assert stats["median_rater_seconds"]["pairwise"] == 3.0 and stats["median_rater_seconds"]["pixel"] is None
    assert stats["raters"]["alice"]["median_rater_seconds"] == pytest.approx(7.125)
    assert stats["raters"]["bob"]["median_rater_seconds"] == 3.0


def test_a_released_lease_waits_again_at_once_and_the_release_needs_the_lease_and_its_raters_token(
        learner, raters, redis_client) -> None:
    """The UI releases leases on sign-out and, with navigator.sendBeacon (no Authorization header), when the
    page closes: the body carries the lease id and the rater's token, as text/plain. The task is then the
    next rater's at once (not after RSS_LEASE_S), counts as no skip, and may come back to the same rater."""
    alice, bob = raters
    register(learner, "rel", scorer="human")
    post(learner, "rel", [label_of()])
    task = lease(alice)
    assert lease(bob, wait_s=0) is None
    url = f"/v1/tasks/{task['task_id']}/release"
    with httpx.Client(base_url=str(alice.base_url)) as anonymous:
        assert anonymous.post(url, json={"lease_id": task["lease_id"]}).status_code == 401
        wrong = anonymous.post(url, json={"lease_id": task["lease_id"], "token": "guess"})
        assert wrong.status_code == 401 and "Unknown rater token" in wrong.text
        others = anonymous.post(url, json={"lease_id": task["lease_id"], "token": "bob-secret"})
        assert others.status_code == 403 and "another rater" in others.text
        form = anonymous.post(url, data={"lease_id": task["lease_id"], "token": "alice-secret"})
        assert form.status_code == 401  # a body it does not read carries no token: no credentials at all
        missing = anonymous.post(url, content=b'{"token": "alice-secret"}', headers={"Content-Type": "text/plain"})
        assert missing.status_code == 422 and "lease_id" in missing.text
        assert lease(bob, wait_s=0) is None  # none of that released it
        beacon = anonymous.post(url, content=json.dumps({"lease_id": task["lease_id"], "token": "alice-secret"}),
                                headers={"Content-Type": "text/plain;charset=UTF-8"})
        assert beacon.status_code == 204, beacon.text
        again = anonymous.post(url, content=json.dumps({"lease_id": task["lease_id"], "token": "alice-secret"}),
                               headers={"Content-Type": "text/plain"})
        assert again.status_code == 409 and "released" in again.text
    late = answer(alice, task, score=0.5)
    assert late.status_code == 409 and "released" in late.text
    taken = lease(bob, wait_s=0)
    assert taken is not None and taken["task_id"] == task["task_id"]
    assert bob.post(f"/v1/tasks/{taken['task_id']}/release", json={"lease_id": taken["lease_id"]}).status_code == 204
    back = lease(alice, wait_s=0)  # a release is no skip: alice may have it again
    assert back is not None and back["task_id"] == task["task_id"]
    assert answer(alice, back, score=0.75).status_code == 200
    done = alice.post(f"/v1/tasks/{back['task_id']}/release", json={"lease_id": back["lease_id"]})
    assert done.status_code == 409 and "already answered" in done.text
    assert [r["reward"] for r in read_results(redis_client, "rel", 1)] == [0.75]
    stats = learner.get("/v1/stats").json()["raters"]
    assert stats["alice"]["skipped"] == 0 and stats["bob"]["skipped"] == 0


def test_one_rater_skipping_everything_still_finishes_the_queue_and_the_queue_says_what_they_can_lease(
        redis_server, redis_client) -> None:
    """Two raters configured, only alice there. A task she skipped is offered to her again RSS_SKIP_RETRY_S
    later (nobody else took it); the third skip (RSS_MAX_SKIPS) gives it up, so the queue ends. The queue
    counts say what she can lease now, and what she skipped that comes back."""
    with start_service(service_env(redis_server, skip_retry_s=1.0, max_skips=3)) as proc, \
            rater(proc.url, "alice") as alice:
        with client(proc.url) as learner:
            register(learner, "alone", scorer="human")
            first = post(learner, "alone", [label_of()])
            second = post(learner, "alone", [noisy(label_of(), 1)])
            wait_status(learner, second, ("waiting_for_rater",))
        assert alice.get("/v1/tasks/queue").json() == {"waiting": 2, "leased": 0, "available": 2, "skipped_later": 0}
        skips = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            task = lease(alice, wait_s=3)
            if task is None:
                break
            queue = alice.get("/v1/tasks/queue").json()
            assert queue["available"] + queue["skipped_later"] <= 1  # the other task; this one is leased
            assert alice.post(f"/v1/tasks/{task['task_id']}/skip", json={"lease_id": task["lease_id"]}
                              ).status_code == 204
            skips += 1
            if skips == 1:
                queue = alice.get("/v1/tasks/queue").json()
                assert queue == {"waiting": 2, "leased": 0, "available": 1, "skipped_later": 1}, queue
        assert skips == 6  # each task skipped three times
        results = read_results(redis_client, "alone", 2)
        assert all("RSS_MAX_SKIPS is 3" in r["error"] for r in results), results
        with client(proc.url) as learner:
            for episode_id in (first, second):
                assert wait_status(learner, episode_id, ("failed",))["status"] == "failed"
        assert alice.get("/v1/tasks/queue").json() == {"waiting": 0, "leased": 0, "available": 0, "skipped_later": 0}


WINDOW_S = 6.0  # RSS_AMEND_S of the amending tests
AMEND_DB = DATABASES["human_amend"]  # their services' own database: no other service's worker takes their jobs


@pytest.fixture
def amend_db(redis_server) -> Iterator[redis.Redis]:
    r = redis.Redis(port=redis_server.port, db=AMEND_DB)
    r.flushdb()
    yield r
    r.close()


def test_an_answer_is_amended_once_before_its_task_is_finalized_and_only_the_amendment_is_a_result(
        redis_server, amend_db) -> None:
    """RSS_AMEND_S 6 (wide, so a loaded machine stays inside it): the task's finalize waits 6 s after its last
    rating. Within that an answer may be
    replaced once (PUT, the same lease); the results stream carries only the amended answer. A bad
    amendment is a 422 and changes nothing; after the window, and after finalize, a 409."""
    with start_service(service_env(redis_server, amend_s=WINDOW_S, redis_url=redis_server.db_url(AMEND_DB))) as proc, \
            rater(proc.url, "alice") as alice, rater(proc.url, "bob") as bob:
        with client(proc.url) as learner:
            register(learner, "amend", scorer="human")
            register(learner, "amend2", scorer="human", ratings_per_task=2)
            post(learner, "amend", [label_of()])
        task = lease(alice)
        url = f"/v1/tasks/{task['task_id']}/rating"
        early = alice.put(url, json={"lease_id": task["lease_id"], "score": 0.9})
        assert early.status_code == 409 and "not answered" in early.text
        sent = time.time()
        accepted = answer(alice, task, score=0.2, rater_seconds=2.0)
        assert accepted.status_code == 200
        assert accepted.json()["amend_until"] == pytest.approx(sent + WINDOW_S, abs=1.0)
        bad = alice.put(url, json={"lease_id": task["lease_id"], "score": 1.5})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "score"]
        kind = alice.put(url, json={"lease_id": task["lease_id"], "preference": "a"})
        assert kind.status_code == 422 and "answer with 'score'" in kind.text
        stolen = bob.put(url, json={"lease_id": task["lease_id"], "score": 0.0})
        assert stolen.status_code == 403
        amended = alice.put(url, json={"lease_id": task["lease_id"], "score": 0.9, "rater_seconds": 3.5})
        assert amended.status_code == 204, amended.text
        twice = alice.put(url, json={"lease_id": task["lease_id"], "score": 0.4})
        assert twice.status_code == 409 and "already amended" in twice.text
        (result,) = read_results(amend_db, "amend", 1)
        assert result["reward"] == pytest.approx(0.9) and result["rater_seconds"] == 3.5
        assert result["scored_at"] >= sent + WINDOW_S  # held for the amend window
        with client(proc.url) as learner:
            stats = learner.get("/v1/stats").json()
        assert stats["raters"]["alice"]["rated"] == 1 and stats["median_rater_seconds"]["score"] == 3.5

        # two ratings per task: the first rater's window is its own; finalize waits for the last one's
        with client(proc.url) as learner:
            post(learner, "amend2", [noisy(label_of(), 3)])
        first = lease(alice)
        assert answer(alice, first, score=0.1).status_code == 200
        time.sleep(WINDOW_S + 0.2)
        over = alice.put(f"/v1/tasks/{first['task_id']}/rating", json={"lease_id": first["lease_id"], "score": 0.3})
        assert over.status_code == 409 and "time to amend this answer is over" in over.text
        second = lease(bob)
        assert answer(bob, second, score=0.5).status_code == 200
        assert bob.put(f"/v1/tasks/{second['task_id']}/rating",
                       json={"lease_id": second["lease_id"], "score": 0.7}).status_code == 204
        (combined,) = read_results(amend_db, "amend2", 1)
        assert combined["reward"] == pytest.approx(0.4)  # (0.1 + 0.7) / 2: bob's amendment replaced his 0.5


def test_amending_is_refused_when_the_service_turns_it_off(learner, raters, redis_client) -> None:
    alice, _ = raters  # the tests' service runs with RSS_AMEND_S 0: results at once, no amending
    register(learner, "noamend", scorer="human")
    post(learner, "noamend", [label_of()])
    task = lease(alice)
    accepted = answer(alice, task, score=0.2)
    assert accepted.json()["amend_until"] is None
    refused = alice.put(f"/v1/tasks/{task['task_id']}/rating", json={"lease_id": task["lease_id"], "score": 0.9})
    assert refused.status_code == 409 and "RSS_AMEND_S is 0" in refused.text
    assert [r["reward"] for r in read_results(redis_client, "noamend", 1)] == [pytest.approx(0.2)]


def test_a_task_leased_to_a_long_poll_whose_client_left_goes_back_at_once(learner, raters, redis_client) -> None:
    """Alice's page closes during a long poll; a task posted then is granted to that poll, whose answer nobody
    reads: the service sees the client gone and releases it, so bob gets it now rather than after the lease."""
    alice, bob = raters
    register(learner, "ghost", scorer="human")
    with pytest.raises(httpx.ReadTimeout):
        with httpx.Client(base_url=str(alice.base_url), headers=dict(alice.headers), timeout=0.5) as leaving:
            leaving.get("/v1/tasks/next", params={"wait_s": 4})  # the client gives up after 0.5 s
    post(learner, "ghost", [label_of()])  # the abandoned poll still waits server-side, and gets it
    time.sleep(1.5)
    taken = lease(bob, wait_s=5)
    assert taken is not None, "the task stayed leased to a poll nobody was reading"
    assert learner.get("/v1/stats").json()["raters"]["alice"]["skipped"] == 0


def test_amending_a_honeypot_answer_updates_the_raters_agreement(redis_server, amend_db) -> None:
    """Every task gets a honeypot twin (RSS_HONEYPOT_FRACTION 1) that amends exactly like a real task: alice
    scores the perfect mask 0 on both, then amends both to 1. Her agreement counts the amended answer, and
    the real task's result carries it too."""
    with start_service(service_env(redis_server, amend_s=WINDOW_S, honeypot_fraction=1.0,
                                   redis_url=redis_server.db_url(AMEND_DB))) as proc, \
            rater(proc.url, "alice") as alice, client(proc.url) as learner:
        register(learner, "hp-amend", scorer="human")
        post(learner, "hp-amend", [label_of()])
        for _ in range(2):  # the task and its twin, in either order
            task = lease(alice)
            assert answer(alice, task, score=0.0).status_code == 200
            assert alice.put(f"/v1/tasks/{task['task_id']}/rating",
                             json={"lease_id": task["lease_id"], "score": 1.0}).status_code == 204
        (result,) = read_results(amend_db, "hp-amend", 1)
        assert result["reward"] == 1.0
        stats = learner.get("/v1/stats").json()["raters"]["alice"]
        assert (stats["honeypots"], stats["honeypots_agreed"], stats["rated"]) == (1, 1, 2)
