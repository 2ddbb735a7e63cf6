"""The built-in scenes dataset: deterministic, 8 classes all present, occlusion, scales, colour no give-away."""

from __future__ import annotations

import numpy as np
import pytest

from rss_core.data import DatasetError, build_dataset
from rss_core.data.scenes import CLASS_NAMES, GENERATOR_VERSION, ScenesDataset, make_scenes_image


def test_deterministic_by_seed_split_and_id():
    a, b = make_scenes_image(0, "train", 5, 64), make_scenes_image(0, "train", 5, 64)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    for other in (make_scenes_image(1, "train", 5, 64), make_scenes_image(0, "val", 5, 64),
                  make_scenes_image(0, "train", 6, 64)):
        assert not np.array_equal(a[0], other[0])
    image, label = build_dataset("scenes", "train", scenes_size=64, shapes_length=10).load("train/000005")
    assert np.array_equal(image, a[0]) and np.array_equal(label, a[1])


def test_eight_classes_all_present_and_labels_in_range():
    ds = build_dataset("scenes", "val", scenes_size=48, shapes_length=36)
    assert ds.num_classes == len(CLASS_NAMES) == 8 and ds.class_names == CLASS_NAMES
    images, labels = ds.tensors()
    assert images.shape == (36, 3, 48, 48) and labels.shape == (36, 48, 48)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert set(labels.unique().tolist()) == set(range(8))
    assert int(((labels > 0).sum(dim=(1, 2)) > 0).sum()) >= 34  # nearly every image shows an object
    assert build_dataset("scenes", "train").size == 128  # the default


def test_later_objects_occlude_earlier_ones_at_many_scales():
    partly_hidden, extents = 0, []
    for index in range(12):
        drawn: list = []
        _, label = make_scenes_image(0, "train", index, 128, drawn=drawn)
        for kind, y0, x0, mask in drawn:
            visible = int((label[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]][mask] == kind).sum())
            assert visible <= int(mask.sum())
            partly_hidden += 0 < visible < int(mask.sum())
            rows, cols = np.nonzero(mask)
            if rows.size:
                extents.append(max(np.ptp(rows), np.ptp(cols)) + 1)
    assert partly_hidden >= 3
    assert min(extents) <= 6 and max(extents) >= 48  # small (4 px) to large (up to half of 128)


def test_colour_does_not_give_the_class_away():
    # Per object, not per pixel: object sizes are log-uniform, so a few large ones would dominate pixel means.
    colours: dict[int, list[np.ndarray]] = {c: [] for c in range(1, 8)}
    for index in range(300):
        drawn: list = []
        image, label = make_scenes_image(0, "train", index, 32, drawn=drawn)
        for kind, y0, x0, mask in drawn:
            box = (slice(y0, y0 + mask.shape[0]), slice(x0, x0 + mask.shape[1]))
            visible = mask & (label[box] == kind)
            if visible.any():
                colours[kind].append(image[box][visible].mean(0) / 255)
    assert min(len(v) for v in colours.values()) >= 100
    # ~160 objects a class: a class's mean colour is within ~0.02 (one standard error) of all objects' mean
    overall = np.mean([c for v in colours.values() for c in v], 0)
    assert max(float(np.abs(np.mean(v, 0) - overall).max()) for v in colours.values()) < 0.1


def test_identity_and_bad_requests():
    ds = ScenesDataset("train", size=64)
    assert ds.identity()["generator"] == GENERATOR_VERSION
    assert ds.fingerprint() != build_dataset("shapes", "train", shapes_size=64).fingerprint()
    assert ds.fingerprint() != ScenesDataset("train", size=96).fingerprint()
    with pytest.raises(DatasetError, match="scenes: unknown split"):
        ScenesDataset("test")
    with pytest.raises(DatasetError, match="exactly 8 classes"):
        ScenesDataset("train", num_classes=4)
    with pytest.raises(DatasetError, match="at least 32"):
        ScenesDataset("train", size=16)
    with pytest.raises(DatasetError, match="unknown image id"):
        ScenesDataset("train", length=3).load("train/000003")
