"""`rss_core.wire`, the v2 framing, as pure functions: round trips, and what each malformed part is told."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from rss_core import wire
from rss_core.schemas import EpisodeBatchHeader, EpisodeHeader, EpisodeResult, Result


def headers(*shapes: tuple[int, int, int]) -> EpisodeBatchHeader:
    return EpisodeBatchHeader(episodes=[
        EpisodeHeader(run_id="r", image_id=f"train/{i:06d}", level="image", policy_version=3, samples=k,
                      mask_shape=(h, w)) for i, (k, h, w) in enumerate(shapes)])


def test_a_batch_round_trips_and_its_masks_are_the_actions_bytes() -> None:
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 4, (3, 5, 6, 7), dtype=np.uint8)  # (B, K, h, w), as a learner holds them
    header = headers(*[(5, 6, 7)] * 3)
    body = wire.encode_batch(header, actions)
    assert body[:4] == b"RSS2" and len(body) == 8 + struct.unpack_from("<I", body, 4)[0] + actions.size
    head, data = wire.split_batch(body)
    parsed = EpisodeBatchHeader.model_validate_json(head)
    assert parsed == header
    for got, want in zip(wire.masks_of(parsed, data), actions, strict=True):
        np.testing.assert_array_equal(got, want)


def test_episodes_of_different_sizes_split_where_their_headers_say() -> None:
    a, b = np.full((2, 3, 4), 1, np.uint8), np.full((1, 5, 2), 2, np.uint8)
    header = headers((2, 3, 4), (1, 5, 2))
    masks = wire.masks_of(header, wire.split_batch(wire.encode_batch(header, a.tobytes() + b.tobytes()))[1])
    assert [m.shape for m in masks] == [(2, 3, 4), (1, 5, 2)]
    assert (masks[0] == 1).all() and (masks[1] == 2).all()


def test_encoding_refuses_masks_that_do_not_fill_the_header() -> None:
    with pytest.raises(ValueError, match="24 bytes of masks for a header that declares 25"):
        wire.encode_batch(headers((1, 5, 5)), bytes(24))


@pytest.mark.parametrize(("body", "words"), [
    (b"", "the body has 0"),
    (b"RSS1" + bytes(4), "not b'RSS1'"),
    (struct.pack("<4sI", b"RSS2", 100) + b"{}", "declares 100 bytes but the body has 2"),
    (struct.pack("<4sI", b"RSS2", wire.MAX_HEADER_BYTES + 1), "over the limit"),
])
def test_malformed_frames_are_named(body: bytes, words: str) -> None:
    with pytest.raises(wire.WireError, match=words.replace("(", r"\(")):
        wire.split_batch(body)


def test_mask_bytes_must_match_the_header_exactly() -> None:
    header = headers((2, 2, 2))
    with pytest.raises(wire.WireError, match="declare 8 bytes .* carries 7"):
        wire.masks_of(header, memoryview(bytes(7)))
    with pytest.raises(wire.WireError, match="carries 9"):
        wire.masks_of(header, memoryview(bytes(9)))


def test_reward_maps_travel_as_float16_only_when_exact() -> None:
    exact = np.array([[[0, 1], [np.nan, 1]]], np.float32)
    layout, data = wire.maps_field(exact)
    assert layout.dtype == "float16" and len(data) == 4 * 2
    np.testing.assert_array_equal(wire.read_maps(layout, data), exact)
    fine = np.array([[[0.1, 1 / 3]]], np.float32)  # float16 would round these
    layout, data = wire.maps_field(fine)
    assert layout.dtype == "float32"
    np.testing.assert_array_equal(wire.read_maps(layout, data), fine)
    with pytest.raises(wire.WireError, match="do not fill"):
        wire.read_maps(layout, data[:-1])


def test_samples_of_reads_both_forms_of_entry() -> None:
    common = {"episode_id": "e", "run_id": "r", "source": "gt", "policy_version": 4, "scored_at": 1.0}
    v2 = EpisodeResult(level="image", samples=3, rewards=[0.5, 1.0, 0.0], **common)
    assert [(s.sample_index, s.reward) for s in wire.samples_of({b"episode": v2.model_dump_json().encode()})] == [
        (0, 0.5), (1, 1.0), (2, 0.0)]
    failed = EpisodeResult(level="image", samples=2, error="endpoint down", **common)
    assert [s.error for s in wire.samples_of({b"episode": failed.model_dump_json().encode()})] == ["endpoint down"] * 2
    layout, data = wire.maps_field(np.zeros((2, 3, 3), np.float32))
    pixel = EpisodeResult(level="pixel", samples=2, maps=layout, **common)
    maps = wire.samples_of({b"episode": pixel.model_dump_json().encode(), b"maps": data})
    assert [s.reward_map.shape for s in maps] == [(3, 3), (3, 3)]
    v1 = Result(sample_index=5, level="image", reward=0.25, **common)
    (sample,) = wire.samples_of({b"payload": v1.model_dump_json().encode()})
    assert (sample.episode_id, sample.sample_index, sample.reward, sample.policy_version) == ("e", 5, 0.25, 4)
    with pytest.raises(wire.WireError, match="not a results entry"):
        wire.samples_of({b"other": b"{}"})
