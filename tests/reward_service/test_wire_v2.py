"""Wire contract v2 against a real `rss serve`: binary batches beside v1 JSON ones, one result per episode, and
every malformed body refused with a 4xx that names the problem, storing nothing."""

from __future__ import annotations

import json
import struct
import time

import numpy as np
import pytest

from rss_core import codec, wire
from rss_core.schemas import EpisodeBatchHeader, EpisodeHeader
from rss_core.wire import samples_of
from tests.helpers.client import read_results, register
from tests.helpers.factories import IMAGE, episode, label_of, noisy

OCTET = {"content-type": wire.MEDIA_TYPE}


def header(run_id: str, masks: np.ndarray, image_id: str = IMAGE, level: str = "image", **extra) -> EpisodeHeader:
    return EpisodeHeader(run_id=run_id, image_id=image_id, level=level, policy_version=7, samples=len(masks),
                         mask_shape=masks.shape[1:], **extra)


def v2_body(*episodes: tuple[EpisodeHeader, np.ndarray]) -> bytes:
    return wire.encode_batch(EpisodeBatchHeader(episodes=[h for h, _ in episodes]),
                             b"".join(np.ascontiguousarray(m, np.uint8).tobytes() for _, m in episodes))


def read_entries(r, run_id: str, count: int, timeout: float = 30.0) -> list[dict]:
    """``count`` entries of the run's results stream, read and acknowledged as the learner does."""
    stream, entries, deadline = f"rss:v1:results:{run_id}", [], time.monotonic() + timeout
    while len(entries) < count and time.monotonic() < deadline:
        for _, got in r.xreadgroup("learner", "test", {stream: ">"}, count=100, block=200) or []:
            for entry_id, fields in got:
                entries.append(fields)
                r.xack(stream, "learner", entry_id)
    assert len(entries) == count, f"got {len(entries)} of {count} entries within {timeout} s"
    return entries


def stored(r) -> tuple[int, int]:
    """(episodes stored, jobs queued): what a refused request must leave as it was."""
    return len(r.keys("rss:v1:episode:*")), r.xlen("rss:v1:jobs") if r.exists("rss:v1:jobs") else 0


@pytest.mark.parametrize("level", ["image", "pixel"])
def test_v1_and_v2_side_by_side_score_alike(learner, redis_client, level) -> None:
    """The same masks posted as a v1 JSON batch and as a v2 binary one: v1 writes one entry per sample, v2 one per
    episode, with the same rewards (pixel level: the same maps, float16 on the wire and exact)."""
    label = label_of()
    masks = np.stack([label, noisy(label, 1), noisy(label, 2, 0.6)])
    register(learner, "side", level=level)
    v1 = learner.post("/v1/episodes/batch", json={"episodes": [
        episode("side", [codec.raw_mask(m) for m in masks], level=level)]})
    assert v1.status_code == 202, v1.text
    v1_results = read_results(redis_client, "side", 3)
    v2 = learner.post("/v2/episodes/batch", content=v2_body((header("side", masks, level=level), masks)),
                      headers=OCTET)
    assert v2.status_code == 202, v2.text
    (episode_id,) = [e["episode_id"] for e in v2.json()["episodes"]]
    (entry,) = read_entries(redis_client, "side", 1)
    result = json.loads(entry[b"episode"])
    assert result["episode_id"] == episode_id and result["samples"] == 3 and result["policy_version"] == 7
    samples = samples_of(entry)
    assert [s.sample_index for s in samples] == [0, 1, 2]
    if level == "image":
        assert result["rewards"] == [r["reward"] for r in v1_results] and result["rewards"][0] == 1.0
        assert set(entry) == {b"episode"}
    else:
        assert result["maps"] == {"dtype": "float16", "shape": [3, *label.shape]}
        for sample, v1_result in zip(samples, v1_results, strict=True):
            v1_map = codec.decode_array(codec.ArrayB64.model_validate(v1_result["reward_map"]))
            np.testing.assert_array_equal(sample.reward_map, v1_map)
    assert learner.get(f"/v1/episodes/{episode_id}").json()["status"] == "scored"


def test_a_v2_batch_of_several_episodes_and_its_idempotency_key(learner, redis_client) -> None:
    label = label_of()
    a, b = np.stack([label, noisy(label, 3)]), np.stack([noisy(label, 4, 0.9)] * 2)
    register(learner, "many")
    body = v2_body((header("many", a), a), (header("many", b), b))
    first = learner.post("/v2/episodes/batch", content=body, headers={**OCTET, "Idempotency-Key": "step-1"})
    again = learner.post("/v2/episodes/batch", content=body, headers={**OCTET, "Idempotency-Key": "step-1"})
    assert first.status_code == again.status_code == 202 and first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    other = v2_body((header("many", b), b))
    conflict = learner.post("/v2/episodes/batch", content=other, headers={**OCTET, "Idempotency-Key": "step-1"})
    assert conflict.status_code == 409 and "different body" in conflict.json()["detail"]
    entries = read_entries(redis_client, "many", 2)
    by_id = {json.loads(e[b"episode"])["episode_id"]: json.loads(e[b"episode"])["rewards"] for e in entries}
    ids = [e["episode_id"] for e in first.json()["episodes"]]
    assert by_id[ids[0]][0] == 1.0 and by_id[ids[0]][1] < 1.0 and by_id[ids[1]][0] == by_id[ids[1]][1] < 1.0
    assert stored(redis_client)[1] == 2  # the replay stored nothing again


def test_malformed_v2_bodies_are_refused_and_nothing_is_stored(learner, redis_client) -> None:
    label = label_of()
    masks = np.stack([label, noisy(label, 5)])
    register(learner, "bad")
    register(learner, "bad-px", level="pixel")
    good = v2_body((header("bad", masks), masks))
    head = EpisodeBatchHeader(episodes=[header("bad", masks)]).model_dump_json().encode()

    def framed(head_bytes: bytes, data: bytes, declared: int | None = None) -> bytes:
        return struct.pack("<4sI", b"RSS2", len(head_bytes) if declared is None else declared) + head_bytes + data

    wrong_class = masks.copy()
    wrong_class[1, 3, 4] = 9
    small = masks[:, :16, :16]
    cases = {  # body, headers -> status, words the detail must hold
        "json content type": (good, {"content-type": "application/json"}, 415, "application/octet-stream"),
        "no content type": (good, {}, 415, "application/octet-stream"),
        "too short": (b"RSS", OCTET, 422, "starts with 8 bytes"),
        "v1 json here": (json.dumps({"episodes": []}).encode(), OCTET, 422, "b'RSS2'"),
        "header past the end": (framed(head, b"", declared=len(head) + 10), OCTET, 422, "the body has"),
        "header over the limit": (framed(b"{}", b"", declared=wire.MAX_HEADER_BYTES + 1), OCTET, 422, "limit"),
        "header not json": (framed(b"{nope", masks.tobytes()), OCTET, 422, "JSON"),
        "header missing a field": (framed(head.replace(b'"run_id":"bad",', b""), masks.tobytes()), OCTET, 422,
                                   "run_id"),
        "a byte short": (good[:-1], OCTET, 422, "the body carries"),
        "a byte too many": (good + b"\0", OCTET, 422, "the body carries"),
        "shape not the image's": (v2_body((header("bad", small), small)), OCTET, 422, "does not match"),
        "class out of range": (v2_body((header("bad", wrong_class), wrong_class)), OCTET, 422, "out of range"),
        "unknown run": (v2_body((header("nobody", masks), masks)), OCTET, 404, "not registered"),
        "unknown image": (v2_body((header("bad", masks, image_id="train/999999"), masks)), OCTET, 404, "999999"),
        "level not the run's": (v2_body((header("bad-px", masks), masks)), OCTET, 422, "does not match run level"),
        "points on image level": (framed(head.replace(b'"samples"', b'"points":[[1,1]],"samples"'), masks.tobytes()),
                                  OCTET, 422, "points"),
    }
    before = stored(redis_client)
    for name, (body, headers, status, words) in cases.items():
        response = learner.post("/v2/episodes/batch", content=body, headers=headers)
        assert response.status_code == status, (name, response.status_code, response.text)
        assert words in response.text, (name, response.text)
    assert stored(redis_client) == before  # nothing half written
    one_bad = v2_body((header("bad", masks), masks), (header("bad", wrong_class), wrong_class))
    response = learner.post("/v2/episodes/batch", content=one_bad, headers=OCTET)
    assert response.status_code == 422 and "episodes[1]: samples[1]" in response.text
    assert stored(redis_client) == before  # all or none
    assert learner.post("/v2/episodes/batch", content=good, headers=OCTET).status_code == 202


def test_v2_needs_a_learner_token(service, learner) -> None:
    import httpx

    label = label_of()
    masks = np.stack([label])
    register(learner, "auth")
    body = v2_body((header("auth", masks), masks))
    assert httpx.post(f"{service}/v2/episodes/batch", content=body, headers=OCTET).status_code == 401
