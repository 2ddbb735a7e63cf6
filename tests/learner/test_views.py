"""Training views (`--crop-size`, learner/views.py) and images kept at their own size (`--image-size 0`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from learner.checkpoint import load_checkpoint
from learner.config import TrainArgs
from learner.evaluate import iterate_split
from learner.train import train
from learner.views import TrainViews
from rss_core.data import build_dataset
from rss_core.data.base import UnevenBatch

RUN = {"dataset": "voc", "batch_size": 3, "eval_every": 2, "checkpoint_every": 2, "progress": False, "threads": 1,
       "width": 4, "device": "cpu"}


def striped(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An image whose every pixel is unique (red = row, green = column) and its label (column % 3)."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    image = torch.stack([yy / 255, xx / 255, torch.zeros(h, w)]).float()
    return image, xx % 3


def test_a_view_is_a_window_of_the_image_with_its_labels_never_blended() -> None:
    """At scale 1 (no rescale) and no flip, a 16 px view of a 20x40 image is a 16x16 window of it, label and
    image from the same pixels; a crop larger than the image is padded with 0 and with ignore (255)."""
    image, label = striped(20, 40)
    window = TrainViews(16, scale=(16 / 16, 20 / 16), flip=False)  # shorter side 16..20: kept when it is 20
    for seed in range(8):
        view, view_label, _ = window(image, label, seed)
        assert view.shape == (3, 16, 16) and view_label.shape == (16, 16)
        assert set(view_label.unique().tolist()) <= {0, 1, 2}  # nearest: classes only
    exact = TrainViews(16, scale=(20 / 16, 20 / 16), flip=False)  # always the 20 px shorter side: no rescale
    view, view_label, spec = exact(image, label, 3)
    top, left = int(round(float(view[0, 0, 0]) * 255)), int(round(float(view[1, 0, 0]) * 255))
    assert spec.resize == (20, 40) and spec.crop == (top, left, 16, 16) and not spec.flip  # the view says it
    assert torch.equal(view, image[:, top:top + 16, left:left + 16])
    assert torch.equal(view_label, label[top:top + 16, left:left + 16])
    big = TrainViews(32, scale=(20 / 32, 20 / 32), flip=False)  # the 20x40 image stays, the crop is 32x32
    view, view_label, spec = big(image, label, 0)
    assert spec.crop[0] == 0  # the window starts inside the image and passes its bottom edge
    assert (view_label[20:] == 255).all() and (view_label[:20] != 255).all()  # 12 padded rows, ignore
    assert (view[:, 20:] == 0).all()
    again = big(image, label, 0)
    assert torch.equal(again[0], view) and again[2] == spec  # a pure function of its seed
    assert not torch.equal(TrainViews(16)(image, label, 1)[0], TrainViews(16)(image, label, 2)[0])


def test_the_aspect_ratio_is_kept() -> None:
    image, label = striped(20, 40)
    view, _, spec = TrainViews(10, scale=(1.0, 1.0), flip=False)(image, label, 0)  # shorter side 20 -> 10: half size
    assert spec.resize == (10, 20)
    columns = (view[1] * 255).round()
    assert torch.all(columns[:, 1:] - columns[:, :-1] == 2)  # every other column: 40 -> 20 wide, not 10


def write_sized(root, sizes: list[tuple[int, int]]):
    """A VOC-layout folder whose images have the given (h, w) sizes (train: all, val: all)."""
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    ids = []
    for n, (h, w) in enumerate(sizes):
        label = np.zeros((h, w), np.uint8)
        label[h // 4: h // 2, w // 4: w // 2] = 1 + n % 2
        image = np.full((h, w, 3), 40, np.uint8)
        image[label > 0] = 200
        Image.fromarray(image).save(root / "JPEGImages" / f"{n}.jpg", quality=95)
        Image.fromarray(label).save(root / "SegmentationClass" / f"{n}.png")
        ids.append(str(n))
    for split in ("train", "val"):
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def test_images_of_their_own_sizes_train_on_views_and_are_evaluated_whole(tmp_path) -> None:
    root = write_sized(tmp_path / "voc", [(40, 48), (30, 64), (50, 36), (40, 48)])
    val = build_dataset("voc", "val", root=root, image_size=None)
    shapes = [tuple(images.shape[-2:]) for images, _ in iterate_split(val, batch_size=4)]
    assert shapes == [(40, 48), (30, 64), (50, 36), (40, 48)]  # native, one at a time, never squashed
    with pytest.raises(UnevenBatch, match="different sizes .* --crop-size N"):
        val.batch(torch.arange(4))
    base = TrainArgs(**RUN, data_root=str(root), image_size=0, crop_size=24, objective="ce", steps=4)
    inline = train(dataclasses.replace(base, data_workers=0, out=str(tmp_path / "inline")))
    assert inline["val_miou"] is not None and inline["steps"] == 4
    train(dataclasses.replace(base, data_workers=2, out=str(tmp_path / "ahead")))
    a, b = (load_checkpoint(tmp_path / name / "checkpoint.pt")["model"] for name in ("inline", "ahead"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the views are drawn alike in the workers
    rl = train(dataclasses.replace(base, objective="rl", samples=2, steps=2, out=str(tmp_path / "rl")))
    assert rl["steps"] == 2  # the ground truth scores the labels of the views


def test_views_refuse_what_scores_by_image(tmp_path) -> None:
    for flags, named in (({"reward_source": "remote", "scorer": "human"}, "--scorer human"),
                         ({"replay": 8}, "--replay"), ({"image_pool": 2}, "--image-pool")):
        with pytest.raises(ValueError, match=f"--crop-size does not go with {named}"):
            TrainArgs(**RUN, data_root=str(tmp_path), crop_size=16, **flags).validate()
    TrainArgs(**RUN, data_root=str(tmp_path), crop_size=16, reward_source="remote").validate()  # gt scores views
