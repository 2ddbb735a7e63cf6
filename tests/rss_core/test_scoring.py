"""Ground-truth reward functions against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rss_core.scoring import image_reward, pixel_reward

LABEL = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 255]])
PRED = torch.tensor([[0, 1, 1, 1], [0, 0, 2, 2]])
# Over the 7 non-ignored pixels: class 0: tp 3, fp 0, fn 1 -> IoU 3/4; class 1: tp 2, fp 1, fn 1 -> 2/4;
# class 2 (absent from the label): fp 1.


def test_miou_counts_the_label_classes_only():
    r = image_reward(PRED[None], LABEL[None], num_classes=3)
    assert r.item() == pytest.approx((3 / 4 + 2 / 4) / 2)


def test_miou_union_also_counts_sampled_classes():
    r = image_reward(PRED[None], LABEL[None], num_classes=3, metric="miou_union")
    assert r.item() == pytest.approx((3 / 4 + 2 / 4 + 0) / 3)


def test_pixel_acc_and_dice():
    assert image_reward(PRED[None], LABEL[None], 3, "pixel_acc").item() == pytest.approx(5 / 7)
    dice = (2 * 3 / (4 + 3) + 2 * 2 / (3 + 3)) / 2
    assert image_reward(PRED[None], LABEL[None], 3, "dice").item() == pytest.approx(dice)


def test_batched_and_numpy_inputs_agree():
    preds = torch.stack([PRED, LABEL.clamp(max=2)])
    labels = torch.stack([LABEL, LABEL])
    r = image_reward(preds.numpy(), labels.numpy(), 3)
    assert r.shape == (2,)
    assert r[1].item() == pytest.approx(1.0)
    assert r[0].item() == pytest.approx(image_reward(PRED[None], LABEL[None], 3).item())


def test_all_ignored_image_scores_zero():
    label = np.full((1, 2, 2), 255)
    assert image_reward(np.zeros((1, 2, 2)), label, 3).item() == 0.0


def test_pixel_reward_respects_ignore():
    r, valid = pixel_reward(PRED, LABEL)
    assert valid.sum() == 7
    assert r[1, 3] == 0 and not valid[1, 3]
    assert r.sum() == 5


def test_shape_mismatch_and_unknown_metric_are_errors():
    with pytest.raises(ValueError, match="does not match"):
        image_reward(PRED[None, :, :2], LABEL[None], 3)
    with pytest.raises(ValueError, match="unknown metric"):
        image_reward(PRED[None], LABEL[None], 3, "f1")


def test_k_samples_share_one_label_without_copies():
    preds = torch.stack([PRED, LABEL.clamp(max=2), torch.zeros_like(PRED)])[None]  # (1, K=3, H, W)
    r = image_reward(preds, LABEL[None, None], 3)
    assert r.shape == (1, 3)
    for k in range(3):
        assert r[0, k].item() == pytest.approx(image_reward(preds[0, k][None], LABEL[None], 3).item())
    pix, valid = pixel_reward(preds, LABEL[None, None])
    assert pix.shape == valid.shape == (1, 3, 2, 4)


def test_out_of_range_mask_values_are_errors():
    with pytest.raises(ValueError, match="class indices"):
        image_reward(torch.full((1, 2, 4), 3), LABEL[None], 3)
