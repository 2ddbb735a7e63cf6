"""ServedDataset's label cache (bounded in bytes), mask shapes that never make a label twice, and procedural
labels (shapes, scenes) equal to the learner's."""

from __future__ import annotations

import numpy as np
import pytest

from reward_service.core.config import Settings
from reward_service.datasets import ServedDataset
from rss_core.data import build_dataset
from rss_core.schemas import Grid


def served(cache_labels: float, **settings: object) -> tuple[ServedDataset, list[str]]:
    settings = Settings(shapes_size=32, shapes_length=8, label_cache_mb=cache_labels * 32 * 32 / 2**20,
                        **settings)
    dataset = ServedDataset(settings)
    loads: list[str] = []
    load = dataset.dataset.load

    def counting_load(image_id: str):
        loads.append(image_id)
        return load(image_id)

    dataset.dataset.load = counting_load
    return dataset, loads


def test_the_cache_keeps_its_byte_budget_and_drops_the_least_recently_used() -> None:
    dataset, loads = served(cache_labels=3)
    ids = sorted(dataset.ids)
    for image_id in ids[:5]:
        dataset.label(image_id, None)
    assert len(dataset._cache) == 3 and dataset._cache_bytes == 3 * 32 * 32
    dataset.label(ids[4], None)  # cached
    dataset.label(ids[0], None)  # dropped: made again
    assert loads == [*ids[:5], ids[0]]


@pytest.mark.parametrize("grid", [Grid(), Grid(scale=8, offset=(3, 1)), Grid(scale=5, offset=(5, 0)),
                                  Grid(scale=32), Grid(scale=8, mode="pool")])
def test_mask_shapes_match_the_lattice_and_never_make_a_label_again(grid: Grid) -> None:
    dataset, loads = served(cache_labels=0)  # nothing cached: only the shapes are kept
    image_id = sorted(dataset.ids)[0]
    shape = dataset.mask_shape(image_id, None, grid)
    assert dataset.mask_shape(image_id, None, grid) == shape and len(loads) <= 1
    if grid.mode != "pool":
        assert dataset.target(image_id, None, grid).shape == shape


def test_folder_label_shapes_are_read_once_and_resized_ones_never(voc_root) -> None:
    dataset, loads = served(cache_labels=0, dataset="voc", data_root=voc_root)
    image_id = sorted(dataset.ids)[0]
    assert dataset.mask_shape(image_id, None, Grid()) == (40, 48)
    assert dataset.mask_shape(image_id, None, Grid(scale=8)) == dataset.target(image_id, None, Grid(scale=8)).shape
    assert dataset.mask_shape(image_id, 32, Grid(scale=8)) == (8, 8)
    assert loads == [image_id, image_id]  # the first shape, then target() (nothing cached at budget 0)


def test_warming_makes_every_shapes_label_once_when_they_fit() -> None:
    dataset, loads = served(cache_labels=8)
    assert dataset.warm() == 8 and sorted(loads) == sorted(dataset.ids)
    for image_id in dataset.ids:
        dataset.label(image_id, None)
    assert len(loads) == 8  # all cached
    small, small_loads = served(cache_labels=7)
    assert small.warm() == 0 and small_loads == []  # would not fit: left to demand


def test_a_scenes_label_made_by_the_service_is_the_learners() -> None:
    dataset, loads = served(cache_labels=8, dataset="scenes", scenes_size=32)
    learner = build_dataset("scenes", "train", scenes_size=32, shapes_length=8)
    assert dataset.dataset.fingerprint() == learner.fingerprint() and dataset.num_classes == 8
    assert dataset.mask_shape("train/000005", None, Grid(scale=8)) == (8, 8) and loads == []  # known unmade
    for image_id in ("train/000000", "train/000005", "train/000007"):
        np.testing.assert_array_equal(dataset.label(image_id, None), learner.load(image_id)[1])
    assert dataset.warm() == 8 and sorted(loads) == sorted(dataset.ids)  # each made once: three were cached
