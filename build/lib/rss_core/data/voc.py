"""Pascal VOC 2012 segmentation loader (ImageSets/Segmentation, JPEGImages, SegmentationClass)."""

from __future__ import annotations

from pathlib import Path

from rss_core.data.base import FolderDataset, read_split

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


class VOCDataset(FolderDataset):
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
        super().__init__(num_classes=num_classes, class_names=class_names, image_size=image_size)
        self.root, self.split = Path(root), split
        split_file = self.root / self.split_dir / f"{split}.txt"
        pairs = {
            i: (self.root / self.image_dir / f"{i}.jpg", self.root / self.label_dir / f"{i}.png")
            for i in read_split(split_file)
        }
        self.set_pairs(pairs, split_file)
