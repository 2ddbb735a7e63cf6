"""Cityscapes fine-annotation loader (leftImg8bit images, gtFine labelTrainIds labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from learner.data.base import (
    DatasetError,
    SegDataset,
    check_same_size,
    read_image,
    read_label,
    require_files,
)

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelTrainIds.png"
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip


class CityscapesDataset(SegDataset):
    """``root/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` with labels at
    ``root/gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png``; ids are ``<city>/<stem>``.
    """

    name = "cityscapes"

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        image_size: int | None = None,
    ) -> None:
        default_n = len(CITYSCAPES_CLASSES)
        n = default_n if num_classes is None else num_classes
        if class_names is None and n == default_n:
            class_names = list(CITYSCAPES_CLASSES)
        super().__init__(num_classes=n, class_names=class_names, image_size=image_size)
        self.root = Path(root)
        self.split = split
        self.split_dir = self.root / "leftImg8bit" / split
        images = sorted(self.split_dir.glob(f"*/*{IMAGE_SUFFIX}")) if self.split_dir.is_dir() else []
        if not images:
            raise DatasetError(f"{self.split_dir}: split folder is missing or has no */*{IMAGE_SUFFIX} images")
        label_dir = self.root / "gtFine" / split
        self._pairs: dict[str, tuple[Path, Path]] = {}
        for path in images:
            city, stem = path.parent.name, path.name[: -len(IMAGE_SUFFIX)]
            self._pairs[f"{city}/{stem}"] = (path, label_dir / city / f"{stem}{LABEL_SUFFIX}")
        require_files(self._pairs)
        self.ids = list(self._pairs)

    def load(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        paths = self._pairs.get(image_id) if isinstance(image_id, str) else None
        if paths is None:
            raise DatasetError(f"{self.split_dir}: image id {image_id!r} is not in split {self.split!r}")
        image_path, label_path = paths
        image = read_image(image_path)
        label = read_label(label_path)
        check_same_size(image, label, image_path, label_path)
        return image, self.check_label(label, label_path)
