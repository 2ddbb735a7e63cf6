"""The `http` scorer through the real service: the example external scorer swapped in, and broken endpoints."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from rss.procs import ServiceProcess
from rss_core import codec, scoring, wire
from rss_core.schemas import EpisodeBatchHeader, EpisodeHeader
from tests.helpers.client import read_results, register, wait_status
from tests.helpers.factories import IMAGE, episode, label_of, noisy
from tests.helpers.service import start_uvicorn


@pytest.fixture(scope="module")
def example_scorer(scorer_ports: dict[str, int]) -> Iterator[ServiceProcess]:
    with start_uvicorn("examples.external_scorer.app:app", env={"OMP_NUM_THREADS": "1"},
                       port=scorer_ports["example"]) as proc:
        yield proc


@pytest.fixture(scope="module")
def faulty_scorer(scorer_ports: dict[str, int]) -> Iterator[ServiceProcess]:
    with start_uvicorn("tests.reward_service.faulty_scorer:app", env={"OMP_NUM_THREADS": "1"},
                       port=scorer_ports["faulty"]) as proc:
        yield proc


def test_the_example_external_scorer_swaps_in_at_both_levels(learner, redis_client, example_scorer) -> None:
    label = label_of()
    masks = [label, noisy(label, 5), noisy(label, 6, 0.7)]
    register(learner, "ext", scorer="http", endpoint=f"{example_scorer.url}/score")
    register(learner, "ext-px", scorer="http", level="pixel", endpoint=f"{example_scorer.url}/score")
    assert learner.post("/v1/episodes", json=episode("ext", [codec.raw_mask(m) for m in masks])).status_code == 202
    pixel_body = episode("ext-px", [codec.png_mask(masks[1])], level="pixel")
    assert learner.post("/v1/episodes", json=pixel_body).status_code == 202
    results = read_results(redis_client, "ext", 3)
    expected = scoring.image_reward(np.stack(masks)[None], label[None, None], 4, "miou")[0]
    assert [r["reward"] for r in results] == pytest.approx(expected.tolist(), abs=1e-6)
    assert {r["source"] for r in results} == {"http"}
    assert {r["scorer_version"] for r in results} == {"example-gt-1"}  # v1 entries say which scorer, as v2 do
    (pixel,) = read_results(redis_client, "ext-px", 1)
    assert pixel["scorer_version"] == "example-gt-1"
    reward_map = codec.decode_array(codec.ArrayB64(**pixel["reward_map"]))
    np.testing.assert_array_equal(reward_map, (masks[1] == label).astype(np.float32))


def test_v2_episodes_through_an_external_scorer_carry_its_version(learner, redis_client, example_scorer,
                                                                 faulty_scorer) -> None:
    """A v2 batch to `http` runs: one entry per episode with the endpoint's `scorer_version`; a failing endpoint
    gives one error entry for the episode."""
    label = label_of()
    masks = np.stack([label, noisy(label, 5)])
    register(learner, "ext2", scorer="http", endpoint=f"{example_scorer.url}/score")
    register(learner, "ext2-px", scorer="http", level="pixel", endpoint=f"{example_scorer.url}/score")
    register(learner, "ext2-bad", scorer="http", endpoint=f"{faulty_scorer.url}/fail")
    for run_id, level in (("ext2", "image"), ("ext2-px", "pixel"), ("ext2-bad", "image")):
        header = EpisodeHeader(run_id=run_id, image_id=IMAGE, level=level, policy_version=1, samples=2,
                               mask_shape=label.shape)
        body = wire.encode_batch(EpisodeBatchHeader(episodes=[header]), masks)
        response = learner.post("/v2/episodes/batch", content=body, headers={"content-type": wire.MEDIA_TYPE})
        assert response.status_code == 202, response.text
    entries = {}
    deadline = time.monotonic() + 30
    while len(entries) < 3 and time.monotonic() < deadline:
        for run_id in ("ext2", "ext2-px", "ext2-bad"):
            for _, fields in redis_client.xrange(f"rss:v1:results:{run_id}"):
                entries[run_id] = fields
        time.sleep(0.1)
    image = json.loads(entries["ext2"][b"episode"])
    expected = scoring.image_reward(masks[None], label[None, None], 4, "miou")[0]
    assert image["rewards"] == pytest.approx(expected.tolist(), abs=1e-6)
    assert image["scorer_version"] == "example-gt-1" and image["source"] == "http"
    maps = wire.samples_of(entries["ext2-px"])
    assert json.loads(entries["ext2-px"][b"episode"])["scorer_version"] == "example-gt-1"
    for sample, mask in zip(maps, masks, strict=True):
        np.testing.assert_array_equal(sample.reward_map, (mask == label).astype(np.float32))
    failed = wire.samples_of(entries["ext2-bad"])
    assert len(failed) == 2 and all("endpoint returned 500" in s.error for s in failed)
    assert set(entries["ext2-bad"]) == {b"episode"}  # one entry for the whole episode


@pytest.mark.parametrize(("path", "reason"), [
    ("/fail", "endpoint returned 500"),
    ("/slow?delay=3", "timed out after 0.5 s"),
    ("/garbage", "invalid JSON"),
    ("/wrong-count", "2 rewards for 1 samples"),
])
def test_a_broken_endpoint_ends_in_error_results_and_a_dead_letter(
        learner, redis_client, faulty_scorer, path, reason) -> None:
    """The test service allows 2 attempts, 2 s apart: then one error entry per sample, status failed."""
    register(learner, "broken", scorer="http", endpoint=f"{faulty_scorer.url}{path}")
    register(learner, "fine")  # a gt run beside it keeps scoring
    accepted = learner.post("/v1/episodes", json=episode("broken", [codec.raw_mask(label_of())]))
    assert learner.post("/v1/episodes", json=episode("fine", [codec.raw_mask(label_of())])).status_code == 202
    assert read_results(redis_client, "fine", 1)[0]["reward"] == pytest.approx(1.0)
    (result,) = read_results(redis_client, "broken", 1, timeout=30)
    assert reason in result["error"] and "reward" not in result and result["ratings"] == 0
    status = wait_status(learner, accepted.json()["episode_id"], ("failed",))
    assert status["attempts"] == 2 and reason in status["reason"]
    letters = redis_client.xrange("rss:v1:deadletter")
    assert len(letters) == 1
    letter = json.loads(letters[0][1][b"payload"])
    assert letter["id"] == accepted.json()["episode_id"] and reason in letter["reason"] and letter["attempts"] == 2
    assert learner.get("/v1/stats").json()["dead_letters"] == 1


def test_a_flaky_endpoint_recovers_on_the_next_attempt(learner, redis_client, faulty_scorer) -> None:
    register(learner, "flaky", scorer="http", endpoint=f"{faulty_scorer.url}/flaky?fails=1")
    accepted = learner.post("/v1/episodes", json=episode("flaky", [codec.raw_mask(label_of())]))
    (result,) = read_results(redis_client, "flaky", 1, timeout=30)
    assert result["reward"] == pytest.approx(1.0) and "error" not in result
    assert wait_status(learner, accepted.json()["episode_id"], ("scored",))["attempts"] == 2


def test_circuit_states_show_in_readiness_and_stats(learner, redis_client, scorer_ports) -> None:
    """An endpoint nobody listens on: after RSS_BREAKER_FAILURES (5) failed calls in a row its circuit opens,
    and /v1/stats names it open, /v1/ready counts it (without naming it: that route needs no token) and
    stays 200. Before, the breakers' states were only in the worker's log."""
    endpoint = f"http://127.0.0.1:{scorer_ports['down']}/score"
    register(learner, "circuit", scorer="http", endpoint=endpoint)
    for _ in range(6):
        assert learner.post("/v1/episodes", json=episode("circuit", [codec.raw_mask(label_of())])).status_code == 202
    deadline = time.monotonic() + 30
    while learner.get("/v1/stats").json()["circuits"].get(endpoint) != "open" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert learner.get("/v1/stats").json()["circuits"][endpoint] == "open"
    ready = httpx.get(f"{learner.base_url}/v1/ready", timeout=10)
    assert ready.status_code == 200 and ready.json()["circuits"].get("open", 0) >= 1, ready.text
    assert endpoint not in ready.text
