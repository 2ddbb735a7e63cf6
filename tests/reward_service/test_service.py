"""The service end to end: a real `rss serve` process, a real redis-server, HTTP with httpx."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import time
from pathlib import Path

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis
import torch
from PIL import Image

from reward_service.core.config import Settings
from reward_service.store import DatabaseClaimed, claim_database
from rss_core import codec, scoring
from rss_core.data import build_dataset
from rss_core.grid import ActionGrid, grid_labels
from tests.helpers import REPO
from tests.helpers.cli import run_rss
from tests.helpers.client import client, read_results, register, wait_status
from tests.helpers.factories import IMAGE, bomb_png, episode, label_of, noisy
from tests.helpers.service import DATABASES


def test_gt_image_level_matches_the_reward_functions(learner, redis_client) -> None:
    register(learner, "img", metric="miou")
    label = label_of()
    masks = [label, noisy(label, 1), noisy(label, 2, 0.8)]
    body = episode("img", [codec.png_mask(masks[0]), codec.raw_mask(masks[1]), codec.rle_mask(masks[2])])
    accepted = learner.post("/v1/episodes", json=body)
    assert accepted.status_code == 202, accepted.text
    results = read_results(redis_client, "img", 3)
    expected = scoring.image_reward(np.stack(masks)[None], label[None, None], 4, "miou")[0]
    assert [r["sample_index"] for r in results] == [0, 1, 2]
    assert [r["reward"] for r in results] == pytest.approx(expected.tolist(), abs=1e-6)
    assert results[0]["reward"] == pytest.approx(1.0)
    assert all(r["source"] == "gt" and r["policy_version"] == 7 and r["episode_id"] == accepted.json()["episode_id"]
               for r in results)
    status = wait_status(learner, accepted.json()["episode_id"], ("scored",))
    assert status["samples"] == 3 and status["attempts"] == 1


def test_gt_on_a_psr_lattice_and_resized_labels(learner, redis_client) -> None:
    """A 16x16 lattice at offset (1, 2) of labels resized to 48: scored at exactly those pixels."""
    register(learner, "lattice", image_size=48, metric="dice")
    label = torch.from_numpy(label_of(size=48)).long()
    grid = ActionGrid(16, "grid", (1, 2))
    target = grid_labels(label, grid).numpy().astype(np.uint8)
    assert target.shape == (16, 16)
    masks = [target, noisy(target, 3, 0.5)]
    body = episode("lattice", [codec.raw_mask(m) for m in masks], scale=16, offset=[1, 2])
    assert learner.post("/v1/episodes", json=body).status_code == 202
    results = read_results(redis_client, "lattice", 2)
    expected = scoring.image_reward(np.stack(masks)[None], target[None, None], 4, "dice")[0]
    assert [r["reward"] for r in results] == pytest.approx(expected.tolist(), abs=1e-6)
    # a full-size mask does not fit the declared lattice
    wrong = learner.post("/v1/episodes", json=episode("lattice", [codec.raw_mask(label_of(size=48))], scale=16))
    assert wrong.status_code == 422 and "expected (16, 16)" in wrong.text


def test_gt_pixel_level_on_voc_with_ignore(voc_service, redis_server, redis_client) -> None:
    url, root = voc_service
    with client(url) as c:
        register(c, "pix", dataset="voc", level="pixel")
        voc = build_dataset("voc", "train", root=root)
        image_id = voc.ids[1]
        label = voc.load(image_id)[1]
        assert (label == 255).any()
        masks = [np.where(label == 255, 0, label).astype(np.uint8), np.zeros_like(label)]
        response = c.post("/v1/episodes", json=episode("pix", [codec.png_mask(m) for m in masks], image_id, "pixel"))
        assert response.status_code == 202, response.text
    results = read_results(redis.Redis(port=redis_server.port, db=1), "pix", 2)
    for result, mask in zip(results, masks, strict=True):
        reward_map = codec.decode_array(codec.ArrayB64(**result["reward_map"]))
        pixel, valid = scoring.pixel_reward(mask, label)
        assert reward_map.shape == label.shape and "reward" not in result
        assert np.isnan(reward_map[label == 255]).all()
        np.testing.assert_array_equal(reward_map[valid.numpy()], pixel.numpy()[valid.numpy()])
    assert np.nanmin(codec.decode_array(codec.ArrayB64(**results[0]["reward_map"]))) == 1.0


def test_gt_on_scenes_scores_as_the_learner_would(scenes_service, redis_server) -> None:
    """RSS_DATASET=scenes: the service remakes the label of an id and scores it as in-process rewards do."""
    scenes = build_dataset("scenes", "train", scenes_size=32, shapes_length=8)
    label = scenes.load("train/000005")[1]
    masks = [label, noisy(label, 1, classes=8), noisy(label, 2, 0.8, classes=8)]
    with client(scenes_service) as c:
        assert c.get("/v1/ready").json()["dataset_fingerprint"] == scenes.fingerprint()
        register(c, "scenes", dataset="scenes", metric="miou", dataset_fingerprint=scenes.fingerprint())
        body = episode("scenes", [codec.raw_mask(m) for m in masks], "train/000005")
        assert c.post("/v1/episodes", json=body).status_code == 202
    results = read_results(redis.Redis(port=redis_server.port, db=DATABASES["scenes"]), "scenes", 3)
    expected = scoring.image_reward(np.stack(masks)[None], label[None, None], 8, "miou")[0]
    assert [r["reward"] for r in results] == pytest.approx(expected.tolist(), abs=1e-6)
    assert results[0]["reward"] == pytest.approx(1.0) and results[2]["reward"] < 0.5


def test_runs_are_idempotent_and_conflicts_are_refused(learner) -> None:
    first = register(learner, "same")
    again = learner.post("/v1/runs", json={"run_id": "same", "dataset": "shapes", "level": "image"})
    assert again.status_code == 200 and again.json()["created_at"] == first["created_at"]
    conflict = learner.post("/v1/runs", json={"run_id": "same", "dataset": "shapes", "level": "pixel"})
    assert conflict.status_code == 409 and "different configuration" in conflict.text
    assert learner.get("/v1/runs/same").json()["num_classes"] == 4
    assert learner.get("/v1/runs/nope").status_code == 404
    wrong_dataset = learner.post("/v1/runs", json={"run_id": "x", "dataset": "voc", "level": "image"})
    assert wrong_dataset.status_code == 422 and "serves 'shapes'" in wrong_dataset.text
    no_endpoint = learner.post("/v1/runs", json={"run_id": "x", "dataset": "shapes", "level": "image",
                                                 "scorer": "http"})
    assert no_endpoint.status_code == 422 and "endpoint" in no_endpoint.text


def test_auth_roles(service, redis_client) -> None:
    body = {"run_id": "a", "dataset": "shapes", "level": "image"}
    with client(service, token=None) as anonymous:
        assert anonymous.post("/v1/runs", json=body).status_code == 401
        assert anonymous.get("/v1/tasks/next").status_code == 401
        assert anonymous.get(f"/v1/images/{IMAGE}").status_code == 401
        assert anonymous.get("/v1/health").status_code == 200  # probes need no token
    with client(service, token="not-a-token") as stranger:
        response = stranger.post("/v1/runs", json=body)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    with client(service, token="alice-secret") as alice:
        assert alice.post("/v1/runs", json=body).status_code == 403
        assert alice.get(f"/v1/images/{IMAGE}").status_code == 200
    with client(service) as learner:
        assert learner.get("/v1/tasks/next").status_code == 403
    assert redis_client.keys("rss:v1:run:*") == []


def _state(r) -> dict:
    """What a rejected request must not have changed."""
    return {"episodes": sorted(r.keys("rss:v1:episode:*")), "jobs": r.xlen("rss:v1:jobs")}


@pytest.mark.parametrize(("mutate", "status", "message"), [
    (lambda b: b.update(run_id="ghost"), 404, "not registered"),
    (lambda b: b.update(image_id="train/999999"), 404, "not in the served dataset"),
    (lambda b: b.update(image_id="../../etc/passwd"), 400, "dataset-relative"),
    (lambda b: b.update(image_id="/etc/passwd"), 400, "dataset-relative"),
    (lambda b: b.update(level="pixel"), 422, "does not match run level"),
    (lambda b: b.update(samples=[codec.raw_mask(np.zeros((32, 32), np.uint8)).model_dump()]), 422, "(64, 64)"),
    (lambda b: b.update(samples=[codec.png_mask(np.full((64, 64), 9, np.uint8)).model_dump()]), 422,
     "class value 9 is out of range for 4 classes"),
    (lambda b: b.update(samples=[{"format": "png", "data": "!!notbase64"}]), 422, "not valid base64"),
    (lambda b: b.update(samples=[{"format": "png", "data": base64.b64encode(b"GIF89a....").decode()}]), 422,
     "not a readable PNG"),
    (lambda b: b.update(samples=[{"format": "png", "data": bomb_png(5000, 5000)}]), 422,
     "PNG is 5000x5000, expected 64x64"),
    (lambda b: b.update(samples=[{"format": "png", "data": bomb_png(40000, 40000)}]), 422, "decompression bomb"),
    (lambda b: b.update(samples=[{"format": "rle", "shape": [64, 64], "values": [0], "counts": [10]}]), 422,
     "RLE covers 10 pixels"),
    (lambda b: b.update(samples=[]), 422, "at least 1 item"),
    (lambda b: b.update(policy_version=-1), 422, "greater than or equal to 0"),
    (lambda b: b.update(scale=8, offset=[9, 0]), 422, "offset"),
    (lambda b: b.pop("samples"), 422, "samples"),
])
def test_bad_episodes_get_a_clear_4xx_and_leave_nothing(learner, redis_client, mutate, status, message) -> None:
    register(learner, "bad")
    body = episode("bad", [codec.raw_mask(label_of())])
    before = _state(redis_client)
    mutate(body)
    response = learner.post("/v1/episodes", json=body)
    assert response.status_code == status, response.text
    assert message in response.text
    assert _state(redis_client) == before


def test_malformed_and_oversized_bodies(learner, redis_client) -> None:
    register(learner, "bad")
    before = _state(redis_client)
    malformed = learner.post("/v1/episodes", content=b'{"run_id": "bad", ',
                             headers={"content-type": "application/json"})
    assert malformed.status_code == 422 and "json" in malformed.text.lower()
    text = learner.post("/v1/episodes", content=b"run_id=bad", headers={"content-type": "text/plain"})
    assert text.status_code == 415 and "application/json" in text.text
    big = np.random.default_rng(0).integers(0, 4, (1100, 1100), dtype=np.uint8)  # > the test's 2 MB limit
    oversized = learner.post("/v1/episodes", json=episode("bad", [codec.raw_mask(big)] * 2))
    assert oversized.status_code == 413 and "exceeds the limit of 2000000 bytes" in oversized.text
    too_many = learner.post("/v1/episodes", json=episode("bad", [codec.raw_mask(label_of())] * 65))
    assert too_many.status_code == 422 and "limit of 64" in too_many.text
    assert _state(redis_client) == before


def test_images_are_served_and_ids_cannot_leave_the_root(voc_service, redis_client) -> None:
    url, root = voc_service
    (root.parent / "secret.png").write_bytes(b"not for raters")
    with client(url, token="bob-secret") as bob:
        voc = build_dataset("voc", "train", root=root)
        response = bob.get(f"/v1/images/{voc.ids[0]}")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert np.asarray(Image.open(io.BytesIO(response.content))).shape == (40, 48, 3)
        for bad in ("..%2Fsecret.png", "%2E%2E/%2E%2E/secret", "JPEGImages/..%2F..%2Fsecret", "a\\..\\b"):
            assert bob.get(f"/v1/images/{bad}").status_code in (400, 404), bad
        assert bob.get("/v1/images/2007_999999").status_code == 404


def test_a_database_serves_one_dataset(redis_server, redis_client) -> None:
    """A service configured for other data refuses a database another one already serves."""

    async def claim(**settings) -> None:
        r = aioredis.Redis(port=redis_server.port, db=2)
        try:
            await claim_database(r, Settings(_env_file=None, **settings))
        finally:
            await r.aclose()

    asyncio.run(claim(seed=0))
    asyncio.run(claim(seed=0))  # a replica with the same data: fine
    with pytest.raises(DatabaseClaimed, match="already serves"):
        asyncio.run(claim(seed=1))


def test_a_run_on_other_data_is_refused_by_its_fingerprint(learner, redis_client) -> None:
    ours = learner.get("/v1/ready").json()["dataset_fingerprint"]
    assert ours == build_dataset("shapes", "train", shapes_length=1).fingerprint()  # the length is not the data
    assert build_dataset("shapes", "train", seed=1).fingerprint() != ours
    assert build_dataset("shapes", "val").fingerprint() != ours and build_dataset("shapes", "train", shapes_size=32
                                                                                  ).fingerprint() != ours
    other = learner.post("/v1/runs", json={"run_id": "fp", "dataset": "shapes", "level": "image",
                                           "dataset_fingerprint": "0123456789abcdef"})
    assert other.status_code == 409 and "not the data this service scores against" in other.text
    assert "\"seed\": 0" in other.json()["detail"]  # it says what it serves
    assert not redis_client.exists("rss:v1:run:fp")  # and keeps nothing
    assert register(learner, "fp", dataset_fingerprint=ours)["dataset_fingerprint"] == ours


def ready_soon(learner, timeout: float = 10.0):
    """GET /v1/ready until it answers 200 (a flushed Redis forgot the worker's heartbeat for up to a second)."""
    deadline = time.monotonic() + timeout
    while (ready := learner.get("/v1/ready")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    return ready


def test_a_forgotten_database_claim_is_made_again_and_a_stolen_one_stops_the_service(learner, redis_client) -> None:
    """Redis restarted without persistence forgets which data the database serves: the service claims it again
    (readiness, run registration, the worker's sweeps); when another deployment claimed it first, it stops."""
    ready_soon(learner)
    claim = redis_client.get("rss:v1:deployment")
    assert claim is not None and b'"seed": 0' in claim
    redis_client.delete("rss:v1:deployment")  # what a restart without persistence leaves
    assert ready_soon(learner).status_code == 200 and redis_client.get("rss:v1:deployment") == claim
    redis_client.set("rss:v1:deployment", claim.replace(b'"seed": 0', b'"seed": 5'))  # another deployment's claim
    try:
        ready = learner.get("/v1/ready")
        assert ready.status_code == 503 and "already serves" in ready.json()["detail"]
        refused = learner.post("/v1/runs", json={"run_id": "stolen", "dataset": "shapes", "level": "image"})
        assert refused.status_code == 503 and "give each dataset its own database" in refused.text
    finally:
        redis_client.set("rss:v1:deployment", claim)


def test_episode_status_and_unknown_episode(learner, redis_client) -> None:
    register(learner, "st")
    response = learner.post("/v1/episodes", json=episode("st", [codec.raw_mask(label_of())]))
    assert response.json()["status"] == "queued" and response.json()["results_stream"] == "rss:v1:results:st"
    assert wait_status(learner, response.json()["episode_id"], ("scored",))["reason"] is None
    missing = learner.get("/v1/episodes/0123")
    assert missing.status_code == 404 and "unknown" in missing.text


def test_operations_endpoints(learner, redis_client) -> None:
    assert learner.get("/v1/health").json() == {"status": "ok"}
    for _ in range(50):  # the flush before this test wiped the workers' heartbeats: one comes within a second
        ready = learner.get("/v1/ready")
        if ready.status_code == 200:
            break
        assert ready.status_code == 503 and "no scoring worker" in ready.json()["detail"]
        time.sleep(0.1)
    assert ready.status_code == 200 and ready.json()["redis"] and ready.json()["scorer"]
    register(learner, "ops")
    for seed in range(3):
        learner.post("/v1/episodes", json=episode("ops", [codec.raw_mask(noisy(label_of(), seed))]))
    read_results(redis_client, "ops", 3)
    stats = learner.get("/v1/stats").json()
    assert stats["results_last_minute"] >= 3 and stats["jobs_pending"] == 0 and stats["dead_letters"] == 0
    assert set(stats["raters"]) == {"alice", "bob"}
    text = learner.get("/metrics/").text
    assert re.search(r'rss_episodes_accepted_total\{scorer="gt"\} [1-9]', text)
    assert re.search(r'rss_request_seconds_count\{method="POST",route="/v1/episodes",status="202"\}', text)
    openapi = learner.get("/openapi.json").json()
    schemas = set(openapi["components"]["schemas"])
    assert {"Result", "ExternalScoreRequest", "ExternalScoreResponse", "RawMask"} <= schemas
    paths = openapi["paths"]
    assert {"/v1/episodes", "/v1/runs", "/v1/tasks/next", "/v1/tasks/{task_id}/rating", "/v1/ready",
            "/v1/images/{image_id}"} <= set(paths)


def test_env_example_and_the_settings_page_document_every_setting() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    documented = set(re.findall(r"^#?\s*RSS_([A-Z0-9_]+)=", (REPO / ".env.example").read_text(), re.M))
    assert documented == settings
    table = (REPO / "docs" / "settings.md").read_text()
    assert {name for name in settings if f"`RSS_{name}`" not in table} == set()


def test_settings_reject_a_retry_idle_shorter_than_an_external_call() -> None:
    with pytest.raises(ValueError, match="RSS_RETRY_IDLE_S"):
        Settings(retry_idle_s=5, http_timeout_s=10, http_retries=0, _env_file=None)


def test_serve_refuses_to_start_without_a_learner_token(tmp_path: Path) -> None:
    result = run_rss("serve", "--port", "1", timeout=60)
    assert result.returncode == 2 and "RSS_LEARNER_TOKENS" in result.stderr


def test_a_batch_of_episodes_is_accepted_whole_or_not_at_all(learner, redis_client) -> None:
    register(learner, "batch")
    label = label_of()
    episodes = [episode("batch", [codec.raw_mask(noisy(label, seed))], image_id=f"train/{seed:06d}")
                for seed in range(3)]
    before = _state(redis_client)
    bad = [*episodes, episode("batch", [codec.raw_mask(np.full((64, 64), 7, np.uint8))])]
    refused = learner.post("/v1/episodes/batch", json={"episodes": bad})
    assert refused.status_code == 422 and "episodes[3]: samples[0]: class value 7" in refused.text
    ghost = learner.post("/v1/episodes/batch", json={"episodes": [*episodes, episode("ghost", [])]})
    assert ghost.status_code == 422  # no samples: schema error, before anything else
    unknown_run = learner.post("/v1/episodes/batch",
                               json={"episodes": [*episodes, episode("ghost", [codec.raw_mask(label)])]})
    assert unknown_run.status_code == 404 and "episodes[3]: Run 'ghost'" in unknown_run.text
    assert _state(redis_client) == before
    accepted = learner.post("/v1/episodes/batch", json={"episodes": episodes})
    assert accepted.status_code == 202, accepted.text
    ids = [e["episode_id"] for e in accepted.json()["episodes"]]
    results = read_results(redis_client, "batch", 3)
    by_id = {r["episode_id"]: r["reward"] for r in results}
    for seed, episode_id in enumerate(ids):  # ids come back in the order the episodes were sent
        mask, truth = noisy(label, seed), label_of(f"train/{seed:06d}")
        assert by_id[episode_id] == pytest.approx(float(scoring.image_reward(mask[None], truth[None], 4)[0]), abs=1e-6)


def test_a_job_delivered_again_writes_nothing_twice(learner, redis_client) -> None:
    """A duplicate job for a scored episode (a reclaimed job, a replayed entry) is acknowledged, not re-scored;
    one for an expired episode leaves no stub behind."""
    register(learner, "dup")
    accepted = learner.post("/v1/episodes", json=episode("dup", [codec.raw_mask(label_of())]))
    read_results(redis_client, "dup", 1)
    episode_id = accepted.json()["episode_id"]
    wait_status(learner, episode_id, ("scored",))
    redis_client.xadd("rss:v1:jobs", {"kind": "episode", "id": episode_id})
    redis_client.xadd("rss:v1:jobs", {"kind": "episode", "id": "0" * 32})  # expired long ago
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        groups = {g["name"]: g for g in redis_client.xinfo_groups("rss:v1:jobs")}
        if groups[b"scorers"]["pending"] == 0 and groups[b"scorers"]["lag"] == 0:
            break
        time.sleep(0.1)
    assert groups[b"scorers"]["pending"] == 0 and groups[b"scorers"]["lag"] == 0
    assert redis_client.xinfo_stream("rss:v1:results:dup")["entries-added"] == 1  # trimming does not change it
    assert not redis_client.exists("rss:v1:episode:" + "0" * 32)
    assert learner.get(f"/v1/episodes/{episode_id}").json()["attempts"] == 2  # it was looked at, not scored


def test_a_batch_sent_again_with_its_idempotency_key_is_stored_once(learner, redis_client) -> None:
    """A learner whose answer was lost (a reset after the commit, a proxy's 502) sends the batch again with the
    same Idempotency-Key: it gets the first answer, and Redis holds one copy. Before, the retry wrote a second
    copy under new ids, and the first copy's results were counted orphaned."""
    register(learner, "idem")
    label = label_of()
    body = {"episodes": [episode("idem", [codec.raw_mask(noisy(label, seed))]) for seed in range(2)]}
    key = {"Idempotency-Key": "step-7-chunk-0"}
    first = learner.post("/v1/episodes/batch", json=body, headers=key)
    assert first.status_code == 202, first.text
    episodes, jobs = len(redis_client.keys("rss:v1:episode:*")), redis_client.xlen("rss:v1:jobs")
    again = learner.post("/v1/episodes/batch", json=body, headers=key)
    assert again.status_code == 202 and again.json() == first.json()  # the same ids, in the same order
    assert again.headers["idempotent-replayed"] == "true"
    assert len(redis_client.keys("rss:v1:episode:*")) == episodes and redis_client.xlen("rss:v1:jobs") == jobs
    other = learner.post("/v1/episodes/batch", json={"episodes": body["episodes"][:1]}, headers=key)
    assert other.status_code == 409 and "different body" in other.json()["detail"], other.text
    assert len(redis_client.keys("rss:v1:episode:*")) == episodes
    bad_key = learner.post("/v1/episodes/batch", json=body, headers={"Idempotency-Key": "a b"})
    assert bad_key.status_code == 422
    (stored,) = redis_client.keys("rss:v1:idempotency:*")
    assert 86400 - 60 < redis_client.ttl(stored) <= 86400  # it lasts as long as the episodes (RSS_EPISODE_TTL_S)
    fresh = learner.post("/v1/episodes/batch", json=body, headers={"Idempotency-Key": "step-8-chunk-0"})
    assert fresh.status_code == 202 and not {e["episode_id"] for e in fresh.json()["episodes"]} & {
        e["episode_id"] for e in first.json()["episodes"]}
    results = read_results(redis_client, "idem", 4)  # two batches of two, each scored once
    assert len({r["episode_id"] for r in results}) == 4
