"""Behaviour of the VOC, Cityscapes and Pascal Context folder loaders on tiny fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rss_core.data.base import DatasetError, voc_palette
from rss_core.data.cityscapes import CityscapesDataset
from rss_core.data.context import PascalContextDataset
from rss_core.data.voc import VOCDataset

H, W = 10, 12


def _image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _label(values: list[int], h: int = H, w: int = W) -> np.ndarray:
    """Vertical bands of the given values, so every value survives a nearest resize."""
    arr = np.zeros((h, w), np.uint8)
    for k, v in enumerate(values):
        arr[:, k * w // len(values) : (k + 1) * w // len(values)] = v
    return arr


def _save_palette(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr, mode="P")
    im.putpalette(voc_palette().flatten().tolist())
    im.save(path)


def _save_rgb(arr: np.ndarray, path: Path, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)


def make_pascal(root: Path, labels: dict[str, np.ndarray], *, context: bool = False, split: str = "train") -> Path:
    """VOC (or mmseg Pascal Context) layout with one image per label, sized like its label."""
    split_dir = "SegmentationContext" if context else "Segmentation"
    label_dir = "SegmentationClassContext" if context else "SegmentationClass"
    (root / "ImageSets" / split_dir).mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / split_dir / f"{split}.txt").write_text("".join(f"{i}\n" for i in labels))
    for n, (image_id, label) in enumerate(labels.items()):
        _save_rgb(_image(n, *label.shape), root / "JPEGImages" / f"{image_id}.jpg", "JPEG")
        _save_palette(label, root / label_dir / f"{image_id}.png")
    return root


def make_cityscapes(root: Path, labels: dict[str, np.ndarray], split: str = "train") -> Path:
    """Cityscapes layout; ids are 'city/stem'. Labels are greyscale trainId PNGs."""
    for n, (image_id, label) in enumerate(labels.items()):
        city, stem = image_id.split("/")
        _save_rgb(_image(n, *label.shape), root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
        path = root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(label, mode="L").save(path)
    return root


def voc_labels() -> dict[str, np.ndarray]:
    return {"2007_000032": _label([0, 1, 255]), "2007_000033": _label([20, 255, 15]), "2008_000001": _label([3])}


def city_labels() -> dict[str, np.ndarray]:
    return {"bremen/b_000000_000019": _label([0, 18, 255]), "aachen/a_000001_000019": _label([13, 255])}


# ---- VOC ----------------------------------------------------------------------------------


def test_voc_ids_names_and_items(tmp_path: Path) -> None:
    ds = VOCDataset(make_pascal(tmp_path, voc_labels()), "train")
    assert ds.name == "voc"
    assert ds.ids == ["2007_000032", "2007_000033", "2008_000001"]
    assert len(ds) == 3 and ds.num_classes == 21
    assert ds.class_names[0] == "background" and ds.class_names[-1] == "tvmonitor" and len(ds.class_names) == 21
    x, y = ds[1]
    assert x.dtype == torch.float32 and x.shape == (3, H, W)
    assert 0.0 <= x.min().item() and x.max().item() <= 1.0
    assert y.dtype == torch.int64 and y.shape == (H, W)
    assert np.array_equal(y.numpy(), _label([20, 255, 15]))


def test_voc_load_returns_raw_uint8(tmp_path: Path) -> None:
    ds = VOCDataset(make_pascal(tmp_path, voc_labels()), "train")
    image, label = ds.load("2007_000032")
    assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    assert label.dtype == np.uint8 and np.array_equal(label, _label([0, 1, 255]))


def test_voc_ignore_survives_resize(tmp_path: Path) -> None:
    ds = VOCDataset(make_pascal(tmp_path, voc_labels()), "train", image_size=24)
    x, y = ds[0]
    assert x.shape == (3, 24, 24) and y.shape == (24, 24) and y.dtype == torch.int64
    assert set(torch.unique(y).tolist()) == {0, 1, 255}


def test_voc_num_classes_override(tmp_path: Path) -> None:
    root = make_pascal(tmp_path, {"a": _label([0, 25, 255])})
    ds = VOCDataset(root, "train", num_classes=30)
    assert ds.num_classes == 30 and ds.class_names == [f"class_{i}" for i in range(30)]
    assert set(np.unique(ds.load("a")[1]).tolist()) == {0, 25, 255}
    with pytest.raises(DatasetError, match=r"SegmentationClass/a\.png.*\[25\]"):
        VOCDataset(root, "train").load("a")


def test_voc_custom_class_names(tmp_path: Path) -> None:
    names = ["bg", "thing", "stuff"]
    ds = VOCDataset(make_pascal(tmp_path, {"a": _label([0, 2])}), "train", num_classes=3, class_names=names)
    assert ds.class_names == names


def test_voc_missing_split_file(tmp_path: Path) -> None:
    make_pascal(tmp_path, voc_labels())
    with pytest.raises(DatasetError, match=r"ImageSets/Segmentation/val\.txt: split file is missing"):
        VOCDataset(tmp_path, "val")


def test_voc_empty_split(tmp_path: Path) -> None:
    make_pascal(tmp_path, voc_labels())
    (tmp_path / "ImageSets/Segmentation/val.txt").write_text("\n  \n")
    with pytest.raises(DatasetError, match=r"ImageSets/Segmentation/val\.txt: split is empty"):
        VOCDataset(tmp_path, "val")


def test_voc_missing_label_and_image(tmp_path: Path) -> None:
    make_pascal(tmp_path, voc_labels())
    (tmp_path / "SegmentationClass/2007_000033.png").unlink()
    with pytest.raises(DatasetError, match=r"SegmentationClass/2007_000033\.png: label file is missing"):
        VOCDataset(tmp_path, "train")
    (tmp_path / "JPEGImages/2007_000032.jpg").unlink()
    with pytest.raises(DatasetError, match=r"JPEGImages/2007_000032\.jpg: image file is missing"):
        VOCDataset(tmp_path, "train")


def test_voc_size_mismatch(tmp_path: Path) -> None:
    make_pascal(tmp_path, voc_labels())
    _save_palette(_label([0, 1], h=H + 2), tmp_path / "SegmentationClass/2007_000032.png")
    ds = VOCDataset(tmp_path, "train")  # construction only checks existence
    with pytest.raises(DatasetError, match=r"SegmentationClass/2007_000032\.png: label size 12x12 does not match"):
        ds.load("2007_000032")
    with pytest.raises(DatasetError, match=r"2007_000032\.png"):
        ds[0]


def test_voc_out_of_range(tmp_path: Path) -> None:
    ds = VOCDataset(make_pascal(tmp_path, {"bad": _label([0, 21, 255])}), "train")
    with pytest.raises(DatasetError, match=r"SegmentationClass/bad\.png: label values \[21\] are out of range"):
        ds[0]


@pytest.mark.parametrize("image_id", ["nope", "../JPEGImages/2007_000032", "", None])
def test_voc_unknown_id(tmp_path: Path, image_id: object) -> None:
    ds = VOCDataset(make_pascal(tmp_path, voc_labels()), "train")
    with pytest.raises(DatasetError, match=r"ImageSets/Segmentation/train\.txt: image id .* is not in split"):
        ds.load(image_id)  # type: ignore[arg-type]


# ---- Pascal Context ------------------------------------------------------------------------


def test_context_reduces_zero_label(tmp_path: Path) -> None:
    root = make_pascal(tmp_path, {"2008_000002": _label([0, 1, 59, 255]), "2008_000003": _label([30])}, context=True)
    ds = PascalContextDataset(root, "train")
    assert ds.name == "context" and ds.ids == ["2008_000002", "2008_000003"] and len(ds) == 2
    assert ds.num_classes == 59 and len(ds.class_names) == 59
    assert ds.class_names[0] == "aeroplane" and ds.class_names[-1] == "wood"
    _, label = ds.load("2008_000002")
    assert label.dtype == np.uint8 and np.array_equal(label, _label([255, 0, 58, 255]))
    x, y = ds[1]
    assert x.shape == (3, H, W) and y.dtype == torch.int64 and set(y.unique().tolist()) == {29}
    _, y = PascalContextDataset(root, "train", image_size=7)[0]
    assert y.shape == (7, 7) and set(y.unique().tolist()) == {0, 58, 255}


def test_context_range_checked_after_reduction(tmp_path: Path) -> None:
    root = make_pascal(tmp_path, {"a": _label([0, 60])}, context=True)
    with pytest.raises(DatasetError, match=r"SegmentationClassContext/a\.png: label values \[59\] are out of range"):
        PascalContextDataset(root, "train").load("a")
    assert set(np.unique(PascalContextDataset(root, "train", num_classes=60).load("a")[1]).tolist()) == {59, 255}


def test_context_errors_name_files(tmp_path: Path) -> None:
    root = make_pascal(tmp_path, {"a": _label([1]), "b": _label([2])}, context=True)
    with pytest.raises(DatasetError, match=r"ImageSets/SegmentationContext/val\.txt: split file is missing"):
        PascalContextDataset(root, "val")
    ds = PascalContextDataset(root, "train")
    with pytest.raises(DatasetError, match=r"SegmentationContext/train\.txt: image id 'c' is not in split"):
        ds.load("c")
    (root / "SegmentationClassContext/b.png").unlink()
    with pytest.raises(DatasetError, match=r"SegmentationClassContext/b\.png: label file is missing"):
        PascalContextDataset(root, "train")


# ---- Cityscapes ----------------------------------------------------------------------------


def test_cityscapes_ids_names_and_items(tmp_path: Path) -> None:
    ds = CityscapesDataset(make_cityscapes(tmp_path, city_labels()), "train")
    assert ds.name == "cityscapes"
    assert ds.ids == ["aachen/a_000001_000019", "bremen/b_000000_000019"]
    assert len(ds) == 2 and ds.num_classes == 19 and len(ds.class_names) == 19
    assert ds.class_names[0] == "road" and ds.class_names[-1] == "bicycle"
    x, y = ds[1]
    assert x.dtype == torch.float32 and x.shape == (3, H, W) and 0.0 <= x.min() and x.max() <= 1.0
    assert y.dtype == torch.int64 and np.array_equal(y.numpy(), _label([0, 18, 255]))
    _, y = CityscapesDataset(tmp_path, "train", image_size=5)[1]
    assert y.shape == (5, 5) and set(y.unique().tolist()) == {0, 18, 255}


def test_cityscapes_num_classes_override(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path, {"x/s": _label([0, 19, 33])})
    with pytest.raises(DatasetError, match=r"gtFine/train/x/s_gtFine_labelTrainIds\.png: label values \[19, 33\]"):
        CityscapesDataset(root, "train").load("x/s")
    ds = CityscapesDataset(root, "train", num_classes=34)
    assert ds.class_names[33] == "class_33" and set(np.unique(ds.load("x/s")[1]).tolist()) == {0, 19, 33}


def test_cityscapes_missing_or_empty_split_folder(tmp_path: Path) -> None:
    make_cityscapes(tmp_path, city_labels())
    with pytest.raises(DatasetError, match=r"leftImg8bit/val: split folder is missing"):
        CityscapesDataset(tmp_path, "val")
    (tmp_path / "leftImg8bit/test/berlin").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"leftImg8bit/test: split folder is missing or has no"):
        CityscapesDataset(tmp_path, "test")


def test_cityscapes_missing_label(tmp_path: Path) -> None:
    make_cityscapes(tmp_path, city_labels())
    (tmp_path / "gtFine/train/bremen/b_000000_000019_gtFine_labelTrainIds.png").unlink()
    with pytest.raises(DatasetError, match=r"gtFine/train/bremen/b_000000_000019_gtFine_labelTrainIds\.png: label"):
        CityscapesDataset(tmp_path, "train")


def test_cityscapes_size_mismatch_and_unknown_id(tmp_path: Path) -> None:
    make_cityscapes(tmp_path, city_labels())
    label_path = tmp_path / "gtFine/train/aachen/a_000001_000019_gtFine_labelTrainIds.png"
    Image.fromarray(_label([1], w=W + 1), mode="L").save(label_path)
    ds = CityscapesDataset(tmp_path, "train")
    with pytest.raises(DatasetError, match=r"a_000001_000019_gtFine_labelTrainIds\.png: label size 13x10"):
        ds.load("aachen/a_000001_000019")
    with pytest.raises(DatasetError, match=r"leftImg8bit/train: image id 'aachen/nope' is not in split"):
        ds.load("aachen/nope")
