"""The label a sampled mask is scored against, read once for every side that scores masks.

The service's `gt` scorer and honeypots, `rss rater-sim` and the example external scorer all
judge a mask against the same thing the learner's in-process reward uses: the dataset's label
at the learner's resolution (`resize_label`, nearest), read at the sample's action grid
(`rss_core.grid.grid_labels`: the lattice pixels, or the full label for pooled cells).
"""

from __future__ import annotations

import numpy as np
import torch

from rss_core.data.base import SegDataset, resize_label
from rss_core.grid import ActionGrid, as_action_grid, grid_labels
from rss_core.schemas import Grid


def learner_label(dataset: SegDataset, image_id: str, image_size: int | None) -> torch.Tensor:
    """The (H, W) int64 label of ``image_id`` as the learner trains on it (resized to ``image_size``)."""
    _, label = dataset.load(image_id)
    return resize_label(label, image_size)


def label_at_grid(label: torch.Tensor | np.ndarray, grid: Grid | ActionGrid) -> torch.Tensor:
    """``label`` (H, W) where a sample on ``grid`` (wire or learner form) has its actions."""
    return grid_labels(torch.as_tensor(label), as_action_grid(grid))
