"""Episodes sampled on a training view (`view`, rss_core.views) against the real service."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rss_core import codec, scoring
from rss_core.schemas import Grid, View
from rss_core.views import view_label
from tests.helpers.client import read_results, register
from tests.helpers.factories import episode, label_of


def test_ground_truth_scores_the_view_of_the_label(learner, redis_client) -> None:
    register(learner, "viewed")
    view = View(resize=(48, 96), flip=True, crop=(20, 70, 32, 32))  # passes the right edge: ignore there
    target = view_label(torch.from_numpy(label_of()), view).numpy()
    assert (target[:, 26:] == 255).all()
    mask = np.where(target == 255, 0, target).astype(np.uint8)  # right wherever the view has a label
    wrong = np.zeros_like(mask)
    body = episode("viewed", [codec.raw_mask(mask), codec.raw_mask(wrong)]) | {"view": view.model_dump()}
    accepted = learner.post("/v1/episodes", json=body)
    assert accepted.status_code == 202, accepted.text
    results = read_results(redis_client, "viewed", 2)
    expected = scoring.score_masks(np.stack([mask, wrong]), target, Grid(), "image", 4, "miou")[0].tolist()
    assert [r["reward"] for r in results] == pytest.approx(expected) and results[0]["reward"] == pytest.approx(1.0)
    whole = learner.post("/v1/episodes", json=episode("viewed", [codec.raw_mask(mask)]))
    assert whole.status_code == 422 and "expected (64, 64)" in whole.json()["detail"]  # 32x32 is no whole image


def test_views_are_refused_where_they_cannot_be_scored(learner, redis_client) -> None:
    register(learner, "people", scorer="human")
    register(learner, "gt")
    view = {"resize": [64, 64], "flip": False, "crop": [0, 0, 32, 32]}
    mask = codec.raw_mask(np.zeros((32, 32), np.uint8))
    human = learner.post("/v1/episodes", json=episode("people", [mask]) | {"view": view})
    assert human.status_code == 422, human.text
    assert "only the gt scorer scores episodes sampled on a view" in human.json()["detail"]
    huge = learner.post("/v1/episodes", json=episode("gt", [mask]) | {"view": view | {"resize": [8192, 8192]}})
    assert huge.status_code == 413 and "RSS_MAX_MASK_PIXELS" in huge.json()["detail"], huge.text
    zoomed = learner.post("/v1/episodes", json=episode("gt", [mask]) | {"view": view | {"resize": [257, 64]}})
    assert zoomed.status_code == 422, zoomed.text
    assert zoomed.json()["detail"] == "view: resize 257x64 is more than 4 times the 64x64 image."
    outside = learner.post("/v1/episodes", json=episode("gt", [mask]) | {"view": view | {"crop": [64, 0, 32, 32]}})
    assert outside.status_code == 422 and "must start inside" in outside.text
    assert not redis_client.keys("rss:v1:episode:*")
