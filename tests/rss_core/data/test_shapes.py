"""The built-in shapes dataset: deterministic, every class present, colour not a give-away."""

from __future__ import annotations

import numpy as np
import pytest

from rss_core.data import DatasetError, build_dataset
from rss_core.data.shapes import CLASS_NAMES, ShapesDataset, make_shapes_image


def test_deterministic_by_seed_and_id():
    a = make_shapes_image(0, "train", 5)
    b = make_shapes_image(0, "train", 5)
    c = make_shapes_image(1, "train", 5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    ds = ShapesDataset("train", length=10)
    image, label = ds.load("train/000005")
    assert np.array_equal(image, a[0]) and np.array_equal(label, a[1])


def test_splits_sizes_and_classes():
    ds = build_dataset("shapes", "val", shapes_length=60, shapes_size=48)
    images, labels = ds.tensors()
    assert images.shape == (60, 3, 48, 48) and labels.shape == (60, 48, 48)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert set(labels.unique().tolist()) == {0, 1, 2, 3}
    assert ds.class_names == CLASS_NAMES and len(ds.ids) == 60
    counts = [(labels == c).sum(dim=(1, 2)) > 0 for c in range(1, 4)]
    shapes_per_image = sum(c.long() for c in counts)
    assert int(shapes_per_image.min()) >= 1


def test_colour_does_not_give_the_class_away():
    ds = ShapesDataset("train", length=200)
    images, labels = ds.tensors()
    pixels = images.permute(0, 2, 3, 1)
    means = [pixels[labels == c].mean(0) for c in (1, 2, 3)]
    # Shape colours are drawn the same way for every class: their mean colours agree closely.
    for m in means[1:]:
        assert float((m - means[0]).abs().max()) < 0.08


def test_bad_requests_are_errors():
    with pytest.raises(DatasetError, match="unknown split"):
        ShapesDataset("test")
    with pytest.raises(DatasetError, match="unknown image id"):
        ShapesDataset("train", length=3).load("train/000003")
    with pytest.raises(DatasetError, match="exactly 4 classes"):
        ShapesDataset("train", num_classes=5)
    with pytest.raises(DatasetError, match="empty"):
        ShapesDataset("train", length=0)
