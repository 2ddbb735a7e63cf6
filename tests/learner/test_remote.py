"""`rss train --reward-source remote` against real processes: redis-server, `rss serve`, the learner."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import torch

from learner.checkpoint import load_checkpoint
from learner.config import TrainArgs
from learner.model import build_model
from learner.remote import RemoteRewardSource, read_jsonl
from learner.report import policy_masks
from learner.train import build_splits
from rss.procs import free_port
from rss_core import codec
from rss_core.schemas import PngMask
from rss_core.wire import samples_of
from tests.helpers import REPO
from tests.helpers.audit import ledger, wait_until_scored
from tests.helpers.cli import SMALL, run_rss
from tests.helpers.service import (
    DATABASES,
    LEARNER_TOKEN,
    RATERS,
    allow,
    reserved_port,
    service_env,
    start_service,
    start_uvicorn,
)

DB = DATABASES["remote"]


@pytest.fixture(scope="module")
def scorer_port() -> int:
    """The port of the external scorer tests start after `shapes32_service`, which allows it."""
    return reserved_port()


@pytest.fixture(scope="module")
def shapes32_service(redis_server, scorer_port: int) -> Iterator[str]:
    """A service serving the learner's small shapes split, in its own Redis database.

    Acknowledged results are never trimmed here, so a test can audit a whole results stream."""
    env = service_env(redis_server, shapes_size=32, shapes_length=64, redis_url=redis_server.db_url(DB),
                      max_attempts=1, http_timeout_s=5.0, http_retries=0, retry_idle_s=10.0,
                      results_trim_every_s=3600, http_endpoint_allow=allow(scorer_port))
    with start_service(env) as proc:
        yield proc.url


@pytest.fixture(autouse=True)
def learner_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSS_LEARNER_TOKEN", LEARNER_TOKEN)


def train(out: Path, *extra: str, service: str | None = None, redis_url: str = "", timeout: float = 300):
    remote = ["--reward-source", "remote", "--service-url", service, "--redis-url", redis_url] if service else []
    result = run_rss("train", *SMALL, "--out", str(out), *remote, *extra, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "final.json").read_text())


def same_weights(a: Path, b: Path) -> bool:
    a_, b_ = (load_checkpoint(p / "checkpoint.pt", torch.device("cpu"))["model"] for p in (a, b))
    return all(torch.equal(a_[name], b_[name]) for name in a_)


@pytest.mark.parametrize("wire", ["v1", "v2"])
def test_remote_training_applies_every_reward_once_and_learns_what_local_learns(
        shapes32_service, redis_server, tmp_path, wire) -> None:
    """Ground truth through the service gives the very rewards of in-process training: same weights, through
    either wire contract (v2: one binary body per step, one results entry per episode)."""
    url = redis_server.db_url(DB)
    remote = train(tmp_path / f"remote-{wire}", "--wire", wire, service=shapes32_service, redis_url=url)
    local = train(tmp_path / "local")
    counts = remote["rewards"]
    assert counts["posted"] == 12 * 4 * 4 == counts["applied"]
    assert counts.get("duplicates", 0) == counts.get("stale", 0) == counts.get("late", 0) == 0
    assert remote["val_miou"] == local["val_miou"]
    assert same_weights(tmp_path / f"remote-{wire}", tmp_path / "local")
    r = redis.Redis.from_url(url)
    stream = f"rss:v1:results:remote-{wire}"
    assert r.xpending(stream, "learner")["pending"] == 0  # every applied entry was acknowledged
    fields = {name for _, entry in r.xrange(stream) for name in entry}
    # v1: one entry per sample (12 steps x 4 images x 4 samples); v2: one per episode
    assert (fields, r.xlen(stream)) == (({b"payload"}, 12 * 4 * 4) if wire == "v1" else ({b"episode"}, 12 * 4))


@pytest.mark.parametrize("wire", ["v1", "v2"])
def test_views_through_the_service_are_scored_as_in_process(shapes32_service, redis_server, tmp_path, wire) -> None:
    """--crop-size: each episode carries the random view its masks were sampled on (resize, flip, a 24 px crop
    of the 32 px images, padded with ignore where a view is smaller); the service's ground truth applies it to
    its label: same rewards, same weights as in-process, at image level and at pixel level."""
    url, views = redis_server.db_url(DB), ("--crop-size", "24", "--scale-range", "0.6", "1.5")
    remote = train(tmp_path / f"views-{wire}", *views, "--wire", wire, service=shapes32_service, redis_url=url)
    local = train(tmp_path / "views-local", *views)
    assert remote["rewards"]["posted"] == remote["rewards"]["applied"] == 12 * 4 * 4
    assert remote["val_miou"] == local["val_miou"]
    assert same_weights(tmp_path / f"views-{wire}", tmp_path / "views-local")
    if wire == "v2":
        pixel = ("--reward", "pixel", "--samples", "1", *views)
        train(tmp_path / "views-px", *pixel, service=shapes32_service, redis_url=url)
        train(tmp_path / "views-px-local", *pixel)
        assert same_weights(tmp_path / "views-px", tmp_path / "views-px-local")
    r = redis.Redis.from_url(url)
    episode = next(k for k in r.scan_iter("rss:v1:episode:*") if r.hget(k, "run_id") == f"views-{wire}".encode())
    assert json.loads(r.hget(episode, "view"))["crop"][2:] == [24, 24]


def test_remote_pixel_level_and_a_clear_error_without_a_token(
        shapes32_service, redis_server, tmp_path, monkeypatch) -> None:
    """Pixel-level rewards through v2 (float16 maps, lossless for ground truth) give in-process's weights."""
    url = redis_server.db_url(DB)
    final = train(tmp_path / "pix", "--reward", "pixel", "--samples", "1", service=shapes32_service, redis_url=url)
    assert final["rewards"]["applied"] == final["rewards"]["posted"] == 12 * 4
    train(tmp_path / "pix-local", "--reward", "pixel", "--samples", "1")
    assert same_weights(tmp_path / "pix", tmp_path / "pix-local")
    entries = redis.Redis.from_url(url).xrange("rss:v1:results:pix")
    assert len(entries) == 12 * 4 and all(set(e) == {b"episode", b"maps"} for _, e in entries)
    monkeypatch.delenv("RSS_LEARNER_TOKEN")
    result = run_rss("train", *SMALL, "--out", str(tmp_path / "x"), "--reward-source", "remote",
                     "--service-url", shapes32_service, "--redis-url", url)
    assert result.returncode == 2 and "RSS_LEARNER_TOKEN" in result.stderr


def test_failed_rewards_are_counted_and_training_goes_on(shapes32_service, redis_server, tmp_path,
                                                        scorer_port) -> None:
    """An external scorer that always fails: every image is left out of its step, counted, and the run ends."""
    with start_uvicorn("tests.reward_service.faulty_scorer:app", env={"OMP_NUM_THREADS": "1"},
                       port=scorer_port) as scorer:
        final = train(tmp_path / "failing", "--scorer", "http", "--endpoint", f"{scorer.url}/fail", "--steps", "3",
                      "--eval-every", "3", service=shapes32_service, redis_url=redis_server.db_url(DB))
    counts = final["rewards"]
    assert counts["posted"] == counts["failed"] == 3 * 4 * 4 and counts.get("applied", 0) == 0
    assert final["val_miou"] is not None


def test_pipelined_training_applies_or_drops_every_batch_once(shapes32_service, redis_server, tmp_path) -> None:
    """--max-inflight samples ahead; a batch older than --max-staleness when applied is dropped, counted."""
    url = redis_server.db_url(DB)
    ahead = train(tmp_path / "ahead", "--max-inflight", "1", service=shapes32_service, redis_url=url)
    assert ahead["rewards"]["applied"] == ahead["rewards"]["posted"] == 12 * 4 * 4
    assert ahead["rewards"].get("dropped_stale", 0) == 0
    # two batches in flight: batch t is applied at step t + 2, staleness 2 > 1, except the last two (drained
    # when the run ends, at staleness 1 and 0)
    strict = train(tmp_path / "strict", "--max-inflight", "2", "--max-staleness", "1", service=shapes32_service,
                   redis_url=url)
    assert strict["rewards"]["dropped_stale"] == 10 * 4 * 4 and strict["rewards"]["applied"] == 2 * 4 * 4
    pending = redis.Redis.from_url(url).xpending("rss:v1:results:strict", "learner")
    assert pending["pending"] == 0


def test_a_learner_on_other_data_refuses_to_start(shapes32_service, redis_server, tmp_path) -> None:
    """Another seed draws other shapes: rewards from the service's labels would be wrong, so nothing starts."""
    result = run_rss("train", *SMALL, "--seed", "3", "--out", str(tmp_path / "other"), "--reward-source", "remote",
                     "--service-url", shapes32_service, "--redis-url", redis_server.db_url(DB), timeout=120)
    assert result.returncode != 0 and "is not the data this service scores against" in result.stderr
    assert '"seed": 3' in result.stderr and not (tmp_path / "other" / "final.json").exists()  # the learner's own


PAIRWISE = ("--human-task", "pairwise", "--samples", "2")
HUMAN_PATHS = {  # flags, masks posted per image, answers kept per task at most (replay)
    "sampled": (PAIRWISE, 2, 0),
    "region-replay": ((*PAIRWISE, "--pairs", "region", "--no-psr", "--replay", "64", "--replay-updates", "2"), 2, 1),
    "best-replay": (("--human-task", "best", "--samples", "4", "--no-psr", "--replay", "64"), 4, 3),
    "points-replay": (("--reward", "pixel", "--samples", "1", "--points", "8", "--replay", "64"), 1, 1),
}


@pytest.mark.parametrize("path", list(HUMAN_PATHS))
def test_training_from_simulated_raters(shapes32_service, redis_server, tmp_path, path) -> None:
    """The human path end to end: tasks answered by `rss rater-sim` over HTTP feed the learner. Pairwise:
    sampled pairs, or (--pairs region) a question about one region; best: one of an image's 4 masks
    chosen; points: yes/no at 8 pixels of the most likely mask. --replay keeps every answer."""
    flags, per_image, kept_per_task = HUMAN_PATHS[path]
    env = {**os.environ, "RSS_RATER_TOKEN": RATERS["bob"], "OMP_NUM_THREADS": "1"}
    sim = subprocess.Popen([sys.executable, "-m", "rss.cli", "rater-sim", "--service-url", shapes32_service,
                            "--shapes-size", "32", "--max-tasks", str(3 * 4), "--idle-s", "60",
                            "--point-error", "0.1"],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        final = train(tmp_path / "human", "--scorer", "human", "--steps", "3", "--eval-every", "3",
                      "--run-id", f"human-{path}", *flags, service=shapes32_service,
                      redis_url=redis_server.db_url(DB))
        out, err = sim.communicate(timeout=60)
    finally:
        sim.kill()
    assert sim.returncode == 0, err[-2000:]
    assert "answered 12 tasks" in out  # one task per image (pairwise: one pair per image) in every path
    assert final["rewards"]["applied"] == final["rewards"]["posted"] == 3 * 4 * per_image
    if kept_per_task:  # every decided answer kept (a rater's tie is not; best: K - 1 pairs an answer)
        kept = load_checkpoint(tmp_path / "human" / "checkpoint.pt", torch.device("cpu"))["replay"]
        assert 0 < kept["size"] <= 12 * kept_per_task and kept[("actions" if path == "points-replay"
                                                                else "winners")].shape == (64, 32, 32)


def kill_and_resume(service: str, url: str, out: Path, checkpoint_every: int, kill_after: int) -> dict:
    """Train 24 pipelined steps, SIGKILL the learner once its ledger has an update of step
    ``kill_after``, resume it, and audit the ledger, the counts and the results stream."""
    steps = 24
    args = [*SMALL, "--steps", str(steps), "--eval-every", str(steps), "--checkpoint-every", str(checkpoint_every),
            "--max-inflight", "2", "--reclaim-idle-s", "1", "--out", str(out), "--reward-source", "remote",
            "--service-url", service, "--redis-url", url]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "rss.cli", "train", *args], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:  # kill once a checkpoint exists and updates after it were applied (their acks held back)
        deadline = time.monotonic() + 120
        while not any(e["step"] >= kill_after for e in ledger(out)):
            assert first.poll() is None, first.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the learner applied nothing in 120 s"
            time.sleep(0.02)
        first.kill()
    finally:
        first.kill()
        first.communicate()
    killed_at = max(e["step"] for e in ledger(out))
    assert killed_at < steps - 1, "the run ended before it was killed: nothing was tested"

    result = run_rss("train", *args, "--resume", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 batches in flight" in result.stderr
    final = json.loads((out / "final.json").read_text())
    applied = ledger(out)
    # every step's batch applied exactly once, each of its episodes once
    assert sorted(e["posted_step"] for e in applied) == list(range(steps))
    episodes = [episode for e in applied for episode in e["episodes"]]
    assert len(episodes) == len(set(episodes)) == steps * 4
    counts = final["rewards"]
    assert counts["applied"] == steps * 4 * 4 and counts["reclaimed"] > 0
    assert counts.get("late", 0) == counts.get("dropped_stale", 0) == 0
    # a kill between writing a checkpoint and acknowledging what it holds redelivers those (counted, not applied)
    assert counts.get("duplicates", 0) <= 2 * 4 * 4
    # every result in the stream was applied, or counted as orphaned (its actions died with the learner,
    # or with the update that applied them), once every episode the service accepted is scored
    client = redis.Redis.from_url(url)
    wait_until_scored(client)
    entries = client.xrange(f"rss:v1:results:{out.name}")
    group = next(g for g in client.xinfo_groups(f"rss:v1:results:{out.name}") if g["name"] == b"learner")
    assert entries and group["last-delivered-id"] == entries[-1][0], "results the learner never read"
    samples = [s for _, fields in entries for s in samples_of(fields)]  # v2: one entry holds an episode's 4
    orphans = [s for s in samples if s.episode_id not in set(episodes)]
    assert counts.get("orphaned", 0) == len(orphans)
    assert len(samples) == steps * 4 * 4 + len(orphans)
    assert client.xpending(f"rss:v1:results:{out.name}", "learner")["pending"] == 0
    lost = read_jsonl(out / "lost.jsonl")
    print(f"killed after the update of step {killed_at}; updates lost with it applied the batches posted at "  # noqa: T201
          f"{[line['posted_step'] for line in lost]}; orphaned {counts.get('orphaned', 0)}")
    return {"killed_at": killed_at, "lost": lost}


def test_killed_learner_resumes_without_losing_or_reapplying_a_reward(
        shapes32_service, redis_server, tmp_path) -> None:
    """SIGKILL mid-run with batches in flight; --resume reclaims what the dead learner held, applies it once."""
    kill_and_resume(shapes32_service, redis_server.db_url(DB), tmp_path / "crash", checkpoint_every=4, kill_after=5)


def test_killed_learner_counts_what_its_lost_updates_applied(shapes32_service, redis_server, tmp_path) -> None:
    """Killed after updates that applied (and acknowledged) batches posted after the last checkpoint:
    the crash loses those updates and the results are never delivered again; the resume finds them in
    the ledger and counts them orphaned, exactly (the 1-in-5 failure of the test above, made certain)."""
    audit = kill_and_resume(shapes32_service, redis_server.db_url(DB), tmp_path / "crash-late", checkpoint_every=8,
                            kill_after=11)
    if audit["killed_at"] < 15:  # killed before the checkpoint of step 16: batch 8 (applied at step 10) was lost
        assert audit["lost"] and all(line["checkpoint"] == 8 and line["posted_step"] >= 8 for line in audit["lost"])
        assert sorted(line["posted_step"] for line in audit["lost"]) == list(range(8, audit["killed_at"] - 1))


def test_slow_scorer_pipelined_updates_are_corrected_or_dropped(shapes32_service, redis_server, tmp_path,
                                                              scorer_port) -> None:
    """A slow external scorer with two batches in flight: updates are applied two policy versions late,
    through the clipped importance ratio (it clips), and with --max-staleness 1 they are dropped, counted."""
    url = redis_server.db_url(DB)
    with start_uvicorn("tests.reward_service.faulty_scorer:app", env={"OMP_NUM_THREADS": "1"},
                       port=scorer_port) as scorer:
        slow = ["--scorer", "http", "--endpoint", f"{scorer.url}/slow?delay=0.2", "--steps", "8", "--eval-every", "8",
                "--max-inflight", "2", "--lr", "0.01"]
        late = train(tmp_path / "late", *slow, service=shapes32_service, redis_url=url)
        strict = train(tmp_path / "late-strict", *slow, "--max-staleness", "1", service=shapes32_service,
                       redis_url=url)
    counts = late["rewards"]
    assert counts["applied"] == counts["posted"] == 8 * 4 * 4 and counts.get("dropped_stale", 0) == 0
    assert counts["reward_latency_ms"] >= 200  # the scorer's delay is in every reward's way
    metrics = json.loads((tmp_path / "late" / "metrics.jsonl").read_text().splitlines()[-1])
    # batch t is applied at step t + 2, the last two when the run ends (staleness 1 and 0)
    assert metrics["staleness"] == pytest.approx((6 * 2 + 1 + 0) / 8)
    assert metrics["clipfrac"] > 0  # the policy moved between sampling and update: ratios left [0.8, 1.2]
    assert strict["rewards"]["dropped_stale"] == 6 * 4 * 4 and strict["rewards"]["applied"] == 2 * 4 * 4


def test_a_rate_limited_learner_waits_and_loses_nothing(redis_server, tmp_path) -> None:
    """Posting faster than the token's rate limit: the learner waits out each 429's Retry-After and resends."""
    url = redis_server.db_url(DATABASES["remote_limited"])
    env = service_env(redis_server, shapes_size=32, shapes_length=64, redis_url=url, max_batch=4,
                      rate_limit_episodes_per_s=8, rate_limit_episodes_burst=8)
    with start_service(env) as service:
        final = train(tmp_path / "limited", "--steps", "8", "--eval-every", "8", service=service.url, redis_url=url)
    counts = final["rewards"]
    assert counts["post_retries"] > 0  # 32 episodes at 8/s after a burst of 8: the limit was hit
    assert counts["applied"] == counts["posted"] == 8 * 4 * 4 and counts.get("orphaned", 0) == 0


def test_a_batch_whose_answer_was_lost_is_stored_once(shapes32_service, redis_server, tmp_path) -> None:
    """A proxy answers the first batch with a 502 after the service accepted it: the learner sends it again
    with the same Idempotency-Key and gets the first answer, so one copy is scored and none is orphaned.
    Before, the retry created a second copy, and the first copy's results were counted orphaned."""
    url = redis_server.db_url(DB)
    with start_uvicorn("tests.learner.lossy_proxy:app", env={"RSS_PROXY_TARGET": shapes32_service}) as proxy:
        final = train(tmp_path / "lossy", "--steps", "3", "--eval-every", "3", service=proxy.url, redis_url=url)
        (lost,) = httpx.get(f"{proxy.url}/lost", timeout=10).json()
    counts = final["rewards"]
    assert counts["applied"] == counts["posted"] == 3 * 4 * 4 and counts.get("orphaned", 0) == 0, counts
    assert counts["post_retries"] >= 1 and lost["key"]  # the 502 was retried, with a key
    # one copy scored: one v2 entry per episode (of 4 samples), 3 steps x 4 images
    assert redis.Redis.from_url(url).xinfo_stream("rss:v1:results:lossy")["entries-added"] == 3 * 4
    first = next(line["episodes"] for line in ledger(tmp_path / "lossy") if line["posted_step"] == 0)
    assert sorted(first) == sorted(e["episode_id"] for e in lost["answer"]["episodes"])  # the first copy's ids


def test_each_evaluation_reaches_the_service_with_the_policys_gallery(shapes32_service, redis_server,
                                                                     tmp_path) -> None:
    """Every evaluation of a remote run is posted to the service (the operator page's curve): its points are
    metrics.jsonl's, step for step, and the gallery holds the final policy's argmax on the first training images."""
    train(tmp_path / "curve", service=shapes32_service, redis_url=redis_server.db_url(DB))
    logged = read_jsonl(tmp_path / "curve" / "metrics.jsonl")
    with httpx.Client(base_url=shapes32_service, headers={"Authorization": f"Bearer {LEARNER_TOKEN}"}) as c:
        curve = c.get("/v1/runs/curve/metrics").json()["points"]
        gallery = c.get("/v1/runs/curve/overview").json()["gallery"]
    assert [p["step"] for p in curve] == [row["step"] for row in logged] == [6, 12]
    for point, row in zip(curve, logged, strict=True):
        for name in ("val_miou", "val_pixel_acc", "reward_mean", "loss", "sec_per_step"):
            assert point["metrics"][name] == row[name], name
        assert point["per_class_iou"] == row["per_class_iou"]
    ckpt = load_checkpoint(tmp_path / "curve" / "checkpoint.pt", torch.device("cpu"))
    args = TrainArgs(**{k: v for k, v in ckpt["args"].items() if k in {f.name for f in dataclasses.fields(TrainArgs)}})
    train_ds, _ = build_splits(args)
    model = build_model(train_ds.num_classes, args.arch, args.width, args.depth)
    model.load_state_dict(ckpt["model"])
    expected = policy_masks(model, train_ds, torch.device("cpu"))
    assert gallery["step"] == 12 and [item["image_id"] for item in gallery["items"]] == list(train_ds.ids[:4])
    for item, (_, _, _, argmax) in zip(gallery["items"], expected, strict=True):
        shown = codec.decode_mask(PngMask(**item["argmax"]), (32, 32))
        assert np.array_equal(shown, argmax.numpy())
        assert codec.decode_mask(PngMask(**item["sampled"]), (32, 32)).max() < train_ds.num_classes


def test_a_metrics_post_that_fails_is_a_warning_not_the_end_of_training(shapes32_service, redis_server, tmp_path,
                                                                        caplog) -> None:
    """A refused post (422 here: per-class IoUs for another number of classes) and an unreachable service each
    log a warning, and report() returns: the learner trains on."""
    args = TrainArgs(dataset="shapes", shapes_size=32, train_size=64, val_size=16, reward_source="remote",
                     service_url=shapes32_service, redis_url=redis_server.db_url(DB), out=str(tmp_path / "warn"))
    train_ds, _ = build_splits(args)
    source = RemoteRewardSource(args, train_ds)
    model = build_model(train_ds.num_classes, args.arch, args.width, args.depth)
    with caplog.at_level(logging.WARNING, logger="learner.remote"):
        source.report({"step": 3, "val_miou": 0.5, "per_class_iou": [0.5]}, model)
        assert "refused: 422" in caplog.text and "per_class_iou" in caplog.text
        source.http.close()
        source.http = httpx.Client(base_url=f"http://127.0.0.1:{free_port()}")  # nobody listens there
        source.report({"step": 4, "val_miou": float("nan"), "reward_mean": 0.1}, model)
        assert "failed (ConnectError" in caplog.text
    source.close()
