"""Datasets: the built-in procedural `shapes` and `scenes`, and folder loaders for VOC, Cityscapes and Pascal
Context."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from rss_core.data.base import IGNORE_INDEX, DatasetError, SegDataset
from rss_core.schemas import PROCEDURAL, DatasetName

DATASETS: tuple[str, ...] = get_args(DatasetName)


def build_dataset(
    name: str,
    split: str,
    *,
    root: str | Path | None = None,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    image_size: int | None = None,
    shapes_size: int = 64,
    shapes_length: int | None = None,
    seed: int = 0,
    scenes_size: int = 128,
) -> SegDataset:
    """One split of a dataset by name; folder datasets need ``root``. ``shapes_length`` and ``seed`` are
    those of either procedural dataset (`shapes`, `scenes`); each has its own image size."""
    if name in PROCEDURAL:
        from rss_core.data.procedural import ProceduralDataset
        from rss_core.data.scenes import ScenesDataset
        from rss_core.data.shapes import ShapesDataset

        kind: type[ProceduralDataset] = ShapesDataset if name == "shapes" else ScenesDataset
        return kind(
            split, size=shapes_size if name == "shapes" else scenes_size, length=shapes_length, seed=seed,
            num_classes=num_classes, class_names=class_names, image_size=image_size,
        )
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})")
    if root is None:
        raise DatasetError(f"dataset {name!r} needs --data-root pointing at its folder")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: data root is not a directory")
    kwargs = {"num_classes": num_classes, "class_names": class_names, "image_size": image_size}
    if name == "voc":
        from rss_core.data.voc import VOCDataset

        return VOCDataset(root, split, **kwargs)
    if name == "cityscapes":
        from rss_core.data.cityscapes import CityscapesDataset

        return CityscapesDataset(root, split, **kwargs)
    from rss_core.data.context import PascalContextDataset

    return PascalContextDataset(root, split, **kwargs)


__all__ = ["DATASETS", "IGNORE_INDEX", "PROCEDURAL", "DatasetError", "SegDataset", "build_dataset"]
