"""Cityscapes fine-annotation loader (leftImg8bit images, gtFine labelTrainIds labels)."""

from __future__ import annotations

from pathlib import Path

from rss_core.data.base import DatasetError, FolderDataset

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelTrainIds.png"
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip


class CityscapesDataset(FolderDataset):
    """``root/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` with labels at
    ``root/gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png``; ids are ``<city>/<stem>``.
    """

    name = "cityscapes"
    default_class_names = CITYSCAPES_CLASSES

    def find_pairs(self) -> tuple[dict[str, tuple[Path, Path]], Path]:
        split, split_dir = self.split, self.root / "leftImg8bit" / self.split
        images = sorted(split_dir.glob(f"*/*{IMAGE_SUFFIX}")) if split_dir.is_dir() else []
        if not images:
            raise DatasetError(f"{split_dir}: split folder is missing or has no */*{IMAGE_SUFFIX} images")
        label_dir = self.root / "gtFine" / split
        pairs = {}
        for path in images:
            city, stem = path.parent.name, path.name[: -len(IMAGE_SUFFIX)]
            pairs[f"{city}/{stem}"] = (path, label_dir / city / f"{stem}{LABEL_SUFFIX}")
        return pairs, split_dir
