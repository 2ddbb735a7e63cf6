"""The action grid both sides read: the wire form converts losslessly, and shapes agree with the arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rss_core.data import build_dataset
from rss_core.grid import ActionGrid, as_action_grid, as_wire_grid, grid_labels, lattice, lattice_shape
from rss_core.labels import label_at_grid, learner_label
from rss_core.schemas import Grid


@pytest.mark.parametrize("grid", [ActionGrid(0), ActionGrid(8, "grid", (3, 1)), ActionGrid(16, "pool")])
def test_the_wire_grid_round_trips(grid: ActionGrid) -> None:
    wire = as_wire_grid(grid)
    assert Grid.model_validate_json(wire.model_dump_json()) == wire
    assert as_action_grid(wire) == grid and as_action_grid(grid) is grid


@pytest.mark.parametrize(("height", "width", "scale", "offset"), [(64, 64, 32, (1, 0)), (37, 50, 8, (3, 5)),
                                                                   (10, 7, 16, (0, 0))])
def test_lattice_shape_is_the_shape_of_the_lattice(height: int, width: int, scale: int, offset) -> None:
    grid = ActionGrid(scale, "grid", offset)
    assert lattice(torch.zeros(height, width), grid).shape == lattice_shape(height, width, grid)


def test_the_label_at_a_wire_grid_is_the_learners_label_at_its_grid() -> None:
    dataset = build_dataset("shapes", "train", shapes_size=32, shapes_length=4)
    image_id = dataset.ids[2]
    label = learner_label(dataset, image_id, None)
    assert torch.equal(label, torch.from_numpy(dataset.load(image_id)[1].astype(np.int64)))
    grid = ActionGrid(8, "grid", (2, 3))
    expected = label[2::4, 3::4]
    assert torch.equal(grid_labels(label, grid), expected)
    assert torch.equal(label_at_grid(label.numpy(), Grid(scale=8, mode="grid", offset=(2, 3))), expected)
    assert learner_label(dataset, image_id, 16).shape == (16, 16)  # resized nearest, as the learner trains
