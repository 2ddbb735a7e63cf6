"""Pascal Context 59 loader for the mmsegmentation-converted layout (zero label reduced to ignore)."""

from __future__ import annotations

import numpy as np

from rss_core.data.base import IGNORE_INDEX
from rss_core.data.voc import VOCDataset

CONTEXT59_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book",
    "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
    "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food",
    "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse",
    "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck",
    "tvmonitor", "wall", "water", "window", "wood",
)  # fmt: skip


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """mmseg's reduce_zero_label: 0 -> ignore, v -> v - 1, ignore stays ignore."""
    out = label.astype(np.int16) - 1
    out[(label == 0) | (label == IGNORE_INDEX)] = IGNORE_INDEX
    return out.astype(np.uint8)


class PascalContextDataset(VOCDataset):
    """``ImageSets/SegmentationContext/<split>.txt``, ``JPEGImages``, ``SegmentationClassContext``.

    Labels store 0 = background and 1..59 = classes; like mmseg's PascalContextDataset59
    background becomes ignore and the classes shift down to 0..58. The range check runs
    after the reduction.
    """

    name = "context"
    split_dir = "ImageSets/SegmentationContext"
    label_dir = "SegmentationClassContext"
    default_class_names = CONTEXT59_CLASSES

    def convert_label(self, label: np.ndarray) -> np.ndarray:
        return reduce_zero_label(label)
