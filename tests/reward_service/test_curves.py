"""A run's learning curve, gallery and overview (the operator page's endpoints) through the real service."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from reward_service.store import CURVE_POINTS
from rss_core import codec, keys
from rss_core.schemas import PngMask
from tests.helpers.client import answer, client, lease, post, rater, register
from tests.helpers.factories import IMAGE, label_of, noisy
from tests.helpers.service import RATERS


def gallery_item(image_id: str = IMAGE, shape: tuple[int, int] = (64, 64), argmax=None, sampled=None) -> dict:
    """A gallery entry of image ``image_id`` whose masks are those of IMAGE (a PNG and a raw one) unless given."""
    label = label_of()
    return {"image_id": image_id, "shape": list(shape),
            "argmax": (argmax or codec.png_mask(label)).model_dump(),
            "sampled": (sampled or codec.raw_mask(noisy(label, 1))).model_dump()}


def test_the_curve_keeps_one_point_per_step_and_the_latest_gallery(learner, redis_client) -> None:
    """A step posted again replaces its point (idempotent: a learner retrying or resuming posts it twice); points
    come back by step whatever order they came in; the gallery comes back as PNG, mask for mask."""
    register(learner, "curve")
    label = label_of()
    for step, miou in ((20, 0.4), (10, 0.3), (20, 0.5)):
        posted = learner.post("/v1/runs/curve/metrics", json={
            "step": step, "metrics": {"val_miou": miou, "reward_mean": -0.25}, "per_class_iou": [0.9, None, 0.1, 0.2],
            "gallery": [gallery_item()] if step == 20 else None})
        assert posted.status_code == 200, posted.text
    assert posted.json() == {"step": 20, "replaced": True, "points": 2}
    curve = learner.get("/v1/runs/curve/metrics").json()
    assert curve["max_points"] == CURVE_POINTS
    assert [(p["step"], p["metrics"]["val_miou"]) for p in curve["points"]] == [(10, 0.3), (20, 0.5)]
    assert curve["points"][1]["per_class_iou"] == [0.9, None, 0.1, 0.2]
    gallery = learner.get("/v1/runs/curve/overview").json()["gallery"]
    assert gallery["step"] == 20 and len(gallery["items"]) == 1
    item = gallery["items"][0]
    assert item["image_id"] == IMAGE and item["image_url"] == f"/v1/images/{IMAGE}"
    assert learner.get(item["image_url"]).status_code == 200
    assert np.array_equal(codec.decode_mask(PngMask(**item["argmax"]), (64, 64)), label)
    assert np.array_equal(codec.decode_mask(PngMask(**item["sampled"]), (64, 64)), noisy(label, 1))


def test_the_curve_is_bounded_and_drops_its_lowest_steps(learner, redis_client) -> None:
    """Past CURVE_POINTS the lowest steps go. The curve is filled to the bound with points as the service writes
    them (2000 requests would take the address's rate limit), then two more arrive over HTTP."""
    register(learner, "long")
    redis_client.zadd(keys.run_metrics("long"), {
        json.dumps({"step": s, "at": 1.0, "metrics": {"val_miou": 0.5}}): s for s in range(CURVE_POINTS)})
    for step in (CURVE_POINTS, CURVE_POINTS + 1):
        posted = learner.post("/v1/runs/long/metrics", json={"step": step, "metrics": {"val_miou": 0.6}})
        assert posted.json() == {"step": step, "replaced": False, "points": CURVE_POINTS}
    steps = [p["step"] for p in learner.get("/v1/runs/long/metrics").json()["points"]]
    assert steps == list(range(2, CURVE_POINTS + 2))


def test_curve_endpoints_need_a_learner_token(service, redis_client) -> None:
    with client(service) as learner:
        register(learner, "auth")
    body = {"step": 1, "metrics": {"val_miou": 0.5}}
    for token, status in ((None, 401), ("not-a-token", 401), (RATERS["alice"], 403)):
        with client(service, token) as c:
            assert c.post("/v1/runs/auth/metrics", json=body).status_code == status
            for path in ("/v1/runs", "/v1/runs/auth/metrics", "/v1/runs/auth/overview"):
                assert c.get(path).status_code == status, (token, path)
    assert redis_client.zcard(keys.run_metrics("auth")) == 0


BAD = [
    ({"step": -1}, 422, "step"),
    ({"step": 2**63}, 422, "step"),
    ({"step": "ten"}, 422, "step"),
    ({"metrics": {"val_miou": float("inf")}}, 422, "metrics"),  # sent as 1e999: JSON, but no double
    ({"metrics": {"val_miou": "high"}}, 422, "metrics"),
    ({"metrics": {"1st": 0.5}}, 422, "metrics"),
    ({"metrics": {f"m{i}": 0.5 for i in range(40)}}, 422, "metrics"),
    ({"metrics": None}, 422, "metrics"),
    ({"per_class_iou": [0.5, 0.5]}, 422, "per_class_iou: 2 values for the run's 4 classes"),
    ({"per_class_iou": [1.5, 0.5, 0.5, 0.5]}, 422, "per_class_iou"),
    ({"gallery": [gallery_item()] * 5}, 422, "gallery"),
    ({"gallery": [gallery_item(shape=(512, 64))]}, 422, "gallery"),
    ({"gallery": [gallery_item(image_id="train/999999")]}, 404, "gallery[0]: image 'train/999999' is not in"),
    ({"gallery": [gallery_item(image_id="../../etc/passwd")]}, 400, "gallery[0]: "),
    ({"gallery": [gallery_item(shape=(32, 32))]}, 422, "gallery[0].argmax: PNG is 64x64, expected 32x32"),
    ({"gallery": [gallery_item(sampled=codec.raw_mask(np.full((64, 64), 9, np.uint8)))]}, 422,
     "gallery[0].sampled: class value 9 is out of range for 4 classes"),
    ({"gallery": [{**gallery_item(), "argmax": {"format": "png", "data": "not base64!"}}]}, 422, "gallery[0].argmax"),
]


@pytest.mark.parametrize(("change", "status", "named"), BAD, ids=[f"{b[1]}-{b[2][:30]}" for b in BAD])
def test_bad_metrics_get_a_4xx_naming_the_field_and_store_nothing(learner, redis_client, change, status,
                                                                  named) -> None:
    register(learner, "bad")
    body = {"step": 3, "metrics": {"val_miou": 0.5}, **change}
    refused = learner.post("/v1/runs/bad/metrics", content=json.dumps(body).replace("Infinity", "1e999"),
                           headers={"Content-Type": "application/json"})
    assert refused.status_code == status, refused.text
    detail = refused.json()["detail"]
    if isinstance(detail, list):  # a field the schema refused: its location names it
        assert named in {str(part) for part in detail[0]["loc"]}, detail
    else:
        assert named in detail, detail
    assert redis_client.zcard(keys.run_metrics("bad")) == 0 and not redis_client.exists(keys.run_gallery("bad"))


def test_nan_metrics_an_unknown_run_and_a_body_that_is_not_json_are_refused(learner, redis_client) -> None:
    register(learner, "nan")
    raw = learner.post("/v1/runs/nan/metrics", content=b'{"step": 1, "metrics": {"val_miou": NaN}}',
                       headers={"Content-Type": "application/json"})
    assert raw.status_code == 422 and raw.json()["detail"][0]["loc"] == ["body", "metrics", "val_miou"], raw.text
    assert learner.post("/v1/runs/nan/metrics", content=b"step=1",
                        headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 415
    unknown = learner.post("/v1/runs/nobody/metrics", json={"step": 1, "metrics": {}})
    assert unknown.status_code == 404 and "nobody" in unknown.json()["detail"]
    assert learner.get("/v1/runs/nobody/overview").status_code == 404
    assert learner.get("/v1/runs/nobody/metrics").status_code == 404
    assert redis_client.zcard(keys.run_metrics("nan")) == 0 and not redis_client.exists(keys.run_metrics("nobody"))


def test_the_overview_says_what_the_service_counts(service, learner, redis_client) -> None:
    """A human run's queue (its pending pixels, its unread results), the raters' answers this minute, their
    seconds per answer and honeypot agreement: each the figure the service keeps, the same as /v1/stats's."""
    register(learner, "ops", scorer="human")
    register(learner, "other")
    assert [run["run_id"] for run in learner.get("/v1/runs").json()["runs"]] == ["ops", "other"]
    empty = learner.get("/v1/runs/ops/overview").json()
    assert (empty["pending_pixels"], empty["results_unread"], empty["curve_points"], empty["last_step"]) == (
        0, 0, 0, None)
    assert empty["agreement"] is None and empty["median_rater_seconds"] is None and empty["gallery"] is None
    label = label_of()
    post(learner, "ops", [label])
    post(learner, "ops", [noisy(label, 2)])
    with rater(service, "alice") as alice, rater(service, "bob") as bob:
        assert answer(alice, lease(alice), score=0.5, rater_seconds=3.0).status_code == 200
        assert answer(bob, lease(bob), score=0.25, rater_seconds=5.0).status_code == 200
    # what the human scorer counts for a honeypot answer (tests/reward_service/test_honeypots.py sends real ones)
    redis_client.hset(keys.rater_stats("alice"), mapping={"honeypots": 4, "honeypots_agreed": 3})
    redis_client.hset(keys.rater_stats("bob"), mapping={"honeypots": 1, "honeypots_agreed": 0})
    learner.post("/v1/runs/ops/metrics", json={"step": 40, "metrics": {"val_miou": 0.5}})
    deadline = time.monotonic() + 30
    while True:  # the workers finalize an answered task (its results, its masks dropped) after the answer
        overview = learner.get("/v1/runs/ops/overview").json()
        if overview["results_unread"] == 2 and overview["pending_pixels"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    stats = learner.get("/v1/stats").json()
    assert overview["run"]["run_id"] == "ops" and overview["run"]["scorer"] == "human"
    assert overview["results_unread"] == 2 and overview["results_unacked"] == 0  # one result per answered task
    assert overview["pending_pixels"] == 0  # both episodes are done: their masks are dropped
    # both answers in the last six minutes: this one so far, or the five before it
    assert overview["ratings_last_minute"] + 5 * overview["ratings_per_minute_5m"] == pytest.approx(2)
    assert overview["median_rater_seconds"] == 4.0 == stats["median_rater_seconds"]["score"]
    assert (overview["honeypots"], overview["honeypots_agreed"], overview["agreement"]) == (5, 3, 0.6)
    assert (overview["curve_points"], overview["last_step"]) == (1, 40)
    assert overview["stats"]["raters"]["alice"]["rated"] == stats["raters"]["alice"]["rated"] == 1
    post(learner, "ops", [noisy(label, 3)])
    waiting = learner.get("/v1/runs/ops/overview").json()
    assert waiting["pending_pixels"] == 64 * 64 and waiting["stats"]["tasks_waiting"] == 1
    assert learner.get("/v1/runs/other/overview").json()["median_rater_seconds"] is None  # a gt run has none
