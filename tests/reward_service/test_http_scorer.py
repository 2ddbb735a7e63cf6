"""The `http` scorer's client: breaker and backoff logic, then real calls to a real (faulty) uvicorn scorer."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid

import httpx
import numpy as np
import pytest
import torch

from examples.external_scorer.app import score_labels
from reward_service.core.config import Settings
from reward_service.scorers.http import (
    CircuitBreaker,
    CircuitOpen,
    HttpScorer,
    Rejected,
    ScorerError,
    backoff_delay,
    check_answer,
)
from rss.procs import free_port
from rss_core import scoring
from rss_core.codec import decode_array, raw_mask
from rss_core.data import build_dataset
from rss_core.data.base import to_tensors
from rss_core.grid import ActionGrid, grid_labels, masks_for_scoring
from rss_core.schemas import ExternalScoreRequest, Grid
from tests.helpers.service import start_uvicorn

SHAPES_SIZE, SEED = 48, 3  # not the defaults, so the test shows the scorer reads its env
FAST = {"timeout": 5.0, "retries": 2, "backoff": 0.01, "breaker_failures": 5, "breaker_reset_s": 30.0}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- pure logic ------------------------------------------------------------------------------

def test_breaker_opens_after_consecutive_failures_and_fails_fast():
    clock = FakeClock()
    b = CircuitBreaker(failures=3, reset_s=10.0, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.failure()
    assert b.allow()
    b.success()  # a success resets the count
    for _ in range(2):
        assert b.allow()
        b.failure()
    assert b.state == "closed"
    assert b.allow()
    b.failure()
    assert b.state == "open"
    clock.now += 9.9
    assert not b.allow() and b.state == "open"


def test_breaker_half_open_trial_success_closes():
    clock = FakeClock()
    b = CircuitBreaker(failures=1, reset_s=10.0, clock=clock)
    b.allow()
    b.failure()
    clock.now += 10.0
    assert b.state == "half_open"
    assert b.allow()  # the one trial call
    assert not b.allow()  # others fail fast while it is out
    b.success()
    assert b.state == "closed" and b.allow()


def test_breaker_half_open_trial_failure_reopens():
    clock = FakeClock()
    b = CircuitBreaker(failures=2, reset_s=5.0, clock=clock)
    for _ in range(2):
        b.allow()
        b.failure()
    clock.now += 5.0
    assert b.allow()
    b.failure()  # one failed trial is enough
    assert b.state == "open" and not b.allow()
    clock.now += 4.9
    assert not b.allow()
    clock.now += 0.1
    assert b.allow()
    b.release()  # a cancelled trial gives no verdict but frees the slot
    assert b.state == "half_open" and b.allow()


def test_backoff_grows_with_equal_jitter_within_bounds():
    rng = random.Random(0)
    for retry in range(6):
        d = 0.2 * 2**retry
        delays = [backoff_delay(retry, 0.2, rng) for _ in range(200)]
        assert all(d / 2 <= x <= d for x in delays)
        assert max(delays) - min(delays) > d / 4  # jittered, not constant
    assert backoff_delay(100, 0.2, rng, cap=3.0) <= 3.0
    assert backoff_delay(0, 0.0, rng) == 0.0


def test_settings_feed_the_scorer_and_kwargs_override():
    async def main():
        scorer = HttpScorer(Settings(http_retries=3, http_timeout_s=3.5), backoff=0.05)
        await scorer.aclose()
        return scorer

    scorer = asyncio.run(main())
    assert (scorer.retries, scorer.timeout, scorer.backoff) == (3, 3.5, 0.05)
    assert scorer.breaker_failures == Settings.model_fields["breaker_failures"].default


def test_timeout_bounds_the_whole_try_not_only_each_read():
    """A mock transport ignores httpx's per-phase timeouts, as a server trickling bytes would."""
    async def handler(_request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json={"rewards": [1.0]})

    async def main():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            scorer = HttpScorer(client=client, **{**FAST, "timeout": 0.2, "retries": 0})
            with pytest.raises(ScorerError, match=r"timed out after 0.2 s \(1 try\)"):
                await scorer.score("http://scorer.test/score", make_request("image", np.zeros((1, 2, 2), np.uint8)))

    asyncio.run(main())


def test_example_scorer_puts_nan_at_ignored_pixels_and_the_client_accepts_it():
    label = torch.tensor([[0, 1, 255], [2, 2, 255]])
    masks = np.array([[[0, 1, 1], [2, 0, 3]], [[1, 1, 1], [2, 2, 2]]], np.uint8)
    request = make_request("pixel", masks)
    answer = score_labels(request, label, num_classes=4)
    maps = np.stack([decode_array(m) for m in answer.reward_maps])
    pixel, valid = scoring.pixel_reward(torch.from_numpy(masks), label[None])
    assert maps.dtype == np.float32
    assert np.isnan(maps[:, :, 2]).all() and not np.isnan(maps[:, :, :2]).any()
    np.testing.assert_array_equal(maps[valid.numpy()], pixel.numpy()[valid.numpy()])
    check_answer(answer.model_dump_json().encode(), request)


def test_check_answer_rejects_bad_maps_and_rewards():
    request = make_request("pixel", np.zeros((1, 2, 3), np.uint8))
    with pytest.raises(ScorerError, match="no reward_maps"):
        check_answer(b'{"rewards": [1.0]}', request)
    wrong = b'{"reward_maps": [{"dtype": "float32", "shape": [3, 2], "data": "' + b"A" * 32 + b'"}]}'
    # the reason names what was expected, never what the endpoint sent (that goes to the log)
    with pytest.raises(ScorerError, match=r"map for sample 0 that is not of the sample's shape \(2, 3\)$"):
        check_answer(wrong, request)
    overflow = b'{"reward_maps": [{"dtype": "float32", "shape": [4294967296, 4294967296], "data": ""}]}'
    with pytest.raises(ScorerError, match=r"map for sample 0 that is not a float32 array \(the worker's log"):
        check_answer(overflow, request)
    image = make_request("image", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ScorerError, match="non-finite reward for sample 1"):
        check_answer(b'{"rewards": [0.5, NaN]}', image)
    with pytest.raises(ScorerError, match="does not fit the contract: rewards.0"):
        check_answer(b'{"rewards": ["high", 0.5]}', image)


# --- against a real server ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    proc = start_uvicorn(
        "tests.reward_service.faulty_scorer:app",
        env={"EXAMPLE_SCORER_SHAPES_SIZE": str(SHAPES_SIZE), "EXAMPLE_SCORER_SEED": str(SEED), "OMP_NUM_THREADS": "1"},
    )
    yield proc.url
    proc.stop()


def make_request(level: str, masks: np.ndarray, *, grid: Grid | None = None, image_size: int | None = None,
                 image_id: str = "train/000007", episode_id: str | None = None,
                 dataset: str = "shapes") -> ExternalScoreRequest:
    return ExternalScoreRequest(
        episode_id=episode_id or uuid.uuid4().hex, run_id="run1", image_id=image_id, dataset=dataset, level=level,
        metric="miou", grid=grid or Grid(), image_size=image_size, samples=[raw_mask(m) for m in masks],
    )


def target_label(image_id: str, image_size: int | None, grid: Grid) -> torch.Tensor:
    image, label = build_dataset("shapes", "train", shapes_size=SHAPES_SIZE, seed=SEED).load(image_id)
    return grid_labels(to_tensors(image, label, image_size)[1], ActionGrid(grid.scale, grid.mode, grid.offset))


def score_all(url: str, requests: list[ExternalScoreRequest], **kwargs) -> tuple[list, int, HttpScorer]:
    """Score the requests in turn with a fresh scorer; returns answers-or-errors, requests sent, the scorer."""
    sent = 0

    async def count(_request: httpx.Request) -> None:
        nonlocal sent
        sent += 1

    async def main():
        async with httpx.AsyncClient(event_hooks={"request": [count]}) as client:
            scorer = HttpScorer(client=client, **{**FAST, **kwargs})
            outcomes = []
            for request in requests:
                try:
                    outcomes.append(await scorer.score(url, request))
                except ScorerError as exc:
                    outcomes.append(exc)
            return outcomes, scorer

    outcomes, scorer = asyncio.run(main())
    return outcomes, sent, scorer


@pytest.mark.parametrize(("grid", "image_size", "shape"), [
    (Grid(), None, (SHAPES_SIZE, SHAPES_SIZE)),
    (Grid(scale=8, offset=(1, 2)), 32, (8, 8)),
    (Grid(scale=4, mode="pool"), 32, (4, 4)),
])
def test_ok_image_level_matches_gt(server, grid, image_size, shape):
    target = target_label("train/000007", image_size, grid)
    masks = np.random.default_rng(0).integers(0, 4, (3, *shape), dtype=np.uint8)
    if grid.mode == "grid":
        masks[0] = target.numpy()  # a perfect sample
    [answer], sent, _ = score_all(f"{server}/ok", [make_request("image", masks, grid=grid, image_size=image_size)])
    full = masks_for_scoring(torch.from_numpy(masks).long(), ActionGrid(grid.scale, grid.mode), tuple(target.shape))
    expected = scoring.image_reward(full, target[None], 4, "miou")
    assert answer.rewards == pytest.approx(expected.tolist(), abs=1e-7)
    assert sent == 1
    if grid.mode == "grid":
        assert answer.rewards[0] == 1.0


@pytest.mark.parametrize(("grid", "image_size", "shape"), [
    (Grid(), None, (SHAPES_SIZE, SHAPES_SIZE)),
    (Grid(scale=6, offset=(3, 0)), 24, (6, 6)),
])
def test_ok_pixel_level_matches_gt(server, grid, image_size, shape):
    target = target_label("train/000011", image_size, grid)
    masks = np.random.default_rng(1).integers(0, 4, (2, *shape), dtype=np.uint8)
    request = make_request("pixel", masks, grid=grid, image_size=image_size, image_id="train/000011")
    [answer], _, _ = score_all(f"{server}/ok", [request])
    maps = np.stack([decode_array(m) for m in answer.reward_maps])
    pixel, valid = scoring.pixel_reward(torch.from_numpy(masks), target[None])
    expected = np.where(valid.numpy(), pixel.numpy(), np.nan).astype(np.float32)
    np.testing.assert_array_equal(maps, expected)  # NaN where the label is ignore (shapes has none)


def test_flaky_endpoint_recovers_within_retries(server, caplog):
    masks = np.zeros((2, SHAPES_SIZE, SHAPES_SIZE), np.uint8)
    with caplog.at_level(logging.WARNING, logger="reward_service.scorers.http"):
        [answer], sent, scorer = score_all(f"{server}/flaky?fails=2", [make_request("image", masks)], retries=2)
    assert len(answer.rewards) == 2 and sent == 3
    assert [r.message.split("; ")[1][:7] for r in caplog.records] == ["retry 1", "retry 2"]
    assert scorer.breaker_states() == {f"{server}/flaky?fails=2": "closed"}


def test_failing_endpoint_raises_after_all_tries(server):
    [error], sent, _ = score_all(f"{server}/fail", [make_request("image", np.zeros((1, 8, 8), np.uint8))], retries=2)
    assert isinstance(error, ScorerError) and not isinstance(error, CircuitOpen)
    assert str(error) == "endpoint returned 500 (3 tries)"
    assert sent == 3


def test_garbage_answer_raises_without_retry(server):
    [error], sent, _ = score_all(f"{server}/garbage", [make_request("image", np.zeros((1, 8, 8), np.uint8))])
    assert isinstance(error, ScorerError) and str(error) == "endpoint answered with invalid JSON"
    assert sent == 1


def test_slow_endpoint_times_out(server):
    request = make_request("image", np.zeros((1, SHAPES_SIZE, SHAPES_SIZE), np.uint8))
    [error], sent, _ = score_all(f"{server}/slow?delay=2", [request], timeout=0.3, retries=1)
    assert isinstance(error, ScorerError) and str(error) == "endpoint timed out after 0.3 s (2 tries)"
    assert sent == 2


def test_wrong_count_raises(server):
    masks = np.zeros((2, SHAPES_SIZE, SHAPES_SIZE), np.uint8)
    [error], sent, _ = score_all(f"{server}/wrong-count", [make_request("image", masks)])
    assert isinstance(error, ScorerError) and str(error) == "endpoint returned 3 rewards for 2 samples"
    [error], _, _ = score_all(f"{server}/wrong-count", [make_request("pixel", masks)])
    assert str(error) == "endpoint returned 3 reward maps for 2 samples"


def test_rejected_request_is_not_retried_and_keeps_the_circuit_closed(server, caplog):
    """The reason says the status only: the endpoint's body (its 422 detail names 'voc') goes to the log."""
    request = make_request("image", np.zeros((1, 8, 8), np.uint8), dataset="voc")
    with caplog.at_level(logging.WARNING, logger="reward_service.scorers.http"):
        errors, sent, scorer = score_all(f"{server}/ok", [request] * 3, retries=2, breaker_failures=2)
    assert all(isinstance(e, Rejected) and str(e).startswith("endpoint returned 422; not retried") for e in errors)
    assert not any("voc" in str(e) for e in errors)
    assert len(caplog.records) == 3 and all("voc" in r.getMessage() for r in caplog.records)
    assert sent == 3
    assert scorer.breaker_states() == {f"{server}/ok": "closed"}


def test_unreachable_endpoint_is_retried_then_raises():
    request = make_request("image", np.zeros((1, 8, 8), np.uint8))
    [error], sent, _ = score_all(f"http://127.0.0.1:{free_port()}/score", [request], retries=1)
    assert str(error) == "endpoint unreachable (ConnectError) (2 tries)"
    assert sent == 2


def test_breaker_opens_fails_fast_then_a_trial_closes_it(server, caplog):
    """``/flaky?fails=2`` with one episode id: two failed calls open the circuit, the trial after reset succeeds."""
    url = f"{server}/flaky?fails=2"
    request = make_request("image", np.zeros((1, SHAPES_SIZE, SHAPES_SIZE), np.uint8))
    clock, sent = FakeClock(), 0

    async def count(_request: httpx.Request) -> None:
        nonlocal sent
        sent += 1

    async def main():
        async with httpx.AsyncClient(event_hooks={"request": [count]}) as client:
            scorer = HttpScorer(client=client, clock=clock, **{**FAST, "retries": 0, "breaker_failures": 2})
            for _ in range(2):
                with pytest.raises(ScorerError, match="returned 500") as info:
                    await scorer.score(url, request)
                assert not isinstance(info.value, CircuitOpen)
            assert scorer.breaker_states() == {url: "open"}
            for _ in range(3):
                with pytest.raises(CircuitOpen):
                    await scorer.score(url, request)
            assert sent == 2  # failed fast: nothing went out
            clock.now += FAST["breaker_reset_s"]
            assert scorer.breaker_states() == {url: "half_open"}
            answer = await scorer.score(url, request)  # the trial: the third call, which /flaky answers
            assert sent == 3 and len(answer.rewards) == 1
            assert scorer.breaker_states() == {url: "closed"}

    with caplog.at_level(logging.INFO, logger="reward_service.scorers.http"):
        asyncio.run(main())
    moves = [r.message.split(": ", 1)[1].split(" (")[0] for r in caplog.records if r.message.startswith("circuit")]
    assert moves == ["closed -> open", "open -> half_open", "half_open -> closed"]
