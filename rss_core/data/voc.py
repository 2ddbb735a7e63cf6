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

    def find_pairs(self) -> tuple[dict[str, tuple[Path, Path]], Path]:
        split_file = self.root / self.split_dir / f"{self.split}.txt"
        pairs = {
            i: (self.root / self.image_dir / f"{i}.jpg", self.root / self.label_dir / f"{i}.png")
            for i in read_split(split_file)
        }
        return pairs, split_file
