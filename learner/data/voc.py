"""Pascal VOC 2012 segmentation loader (ImageSets/Segmentation, JPEGImages, SegmentationClass)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from learner.data.base import (
    DatasetError,
    SegDataset,
    check_same_size,
    read_image,
    read_label,
    read_split,
    require_files,
)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


class VOCDataset(SegDataset):
    """A split listed in ``root/<split_dir>/<split>.txt`` with ``<id>.jpg`` images and ``<id>.png`` labels.

    Subclasses for other VOC-style layouts override the folder names, the default class
    names and ``convert_label``.
    """

    name = "voc"
    split_dir = "ImageSets/Segmentation"
    image_dir = "JPEGImages"
    label_dir = "SegmentationClass"
    default_class_names: tuple[str, ...] = VOC_CLASSES

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        image_size: int | None = None,
    ) -> None:
        default_n = len(self.default_class_names)
        n = default_n if num_classes is None else num_classes
        if class_names is None and n == default_n:
            class_names = list(self.default_class_names)
        super().__init__(num_classes=n, class_names=class_names, image_size=image_size)
        self.root = Path(root)
        self.split = split
        self.split_file = self.root / self.split_dir / f"{split}.txt"
        self._pairs = {
            i: (self.root / self.image_dir / f"{i}.jpg", self.root / self.label_dir / f"{i}.png")
            for i in read_split(self.split_file)
        }
        require_files(self._pairs)
        self.ids = list(self._pairs)

    def convert_label(self, label: np.ndarray) -> np.ndarray:
        """Map stored label values to class indices (identity for VOC)."""
        return label

    def load(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        paths = self._pairs.get(image_id) if isinstance(image_id, str) else None
        if paths is None:
            raise DatasetError(f"{self.split_file}: image id {image_id!r} is not in split {self.split!r}")
        image_path, label_path = paths
        image = read_image(image_path)
        label = self.convert_label(read_label(label_path))
        check_same_size(image, label, image_path, label_path)
        return image, self.check_label(label, label_path)
