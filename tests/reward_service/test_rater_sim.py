"""`rss rater-sim` against the real service: it answers every task kind the way ground truth says."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from rss_core import codec, scoring
from tests.helpers import REPO
from tests.helpers.client import read_results, register
from tests.helpers.factories import episode, label_of, noisy
from tests.helpers.service import RATERS


def rater_sim(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RSS_RATER_TOKEN": RATERS["alice"], "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "rss.cli", "rater-sim", "--service-url", url, *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


def test_rater_sim_answers_scores_preferences_and_pixels_from_ground_truth(service, learner, redis_client) -> None:
    label = label_of()
    good, bad = noisy(label, 1, 0.1), noisy(label, 2, 0.6)
    register(learner, "sim-score", scorer="human")
    register(learner, "sim-pair", scorer="human", task_kind="pairwise")
    register(learner, "sim-px", scorer="human", level="pixel")
    for run_id, masks, level in (("sim-score", [good], "image"), ("sim-pair", [bad, good], "image"),
                                 ("sim-px", [bad], "pixel")):
        body = episode(run_id, [codec.raw_mask(m) for m in masks], level=level)
        assert learner.post("/v1/episodes", json=body).status_code == 202
    result = rater_sim(service, "--max-tasks", "3", "--idle-s", "10")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "answered 3 tasks" in result.stdout
    (score,) = read_results(redis_client, "sim-score", 1)
    assert score["reward"] == pytest.approx(float(scoring.image_reward(good[None], label[None], 4)[0]), abs=1e-6)
    assert score["rater_ids"] == ["alice"]
    assert [r["reward"] for r in read_results(redis_client, "sim-pair", 2)] == [0.0, 1.0]  # b, the good one
    (pixel,) = read_results(redis_client, "sim-px", 1)
    reward_map = codec.decode_array(codec.ArrayB64(**pixel["reward_map"]))
    np.testing.assert_array_equal(reward_map, np.where(bad == label, 1.0, -1.0).astype(np.float32))


def test_rater_sim_needs_a_token(service) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RSS_RATER_TOKEN"}
    result = subprocess.run([sys.executable, "-m", "rss.cli", "rater-sim", "--service-url", service], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "RSS_RATER_TOKEN" in result.stderr
