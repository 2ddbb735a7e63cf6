"""The dataset-level confusion matrix against a hand-computed case."""

from __future__ import annotations

import pytest
import torch

from learner.metrics import ConfusionMatrix


def test_confusion_matrix_metrics_by_hand():
    cm = ConfusionMatrix(num_classes=4)
    target = torch.tensor([0, 0, 1, 1, 2, 255, 255])
    pred = torch.tensor([0, 1, 1, 1, 0, 3, 2])
    cm.update(target, pred)
    cm.update(torch.tensor([0]), torch.tensor([0]))  # accumulates across batches
    m = cm.compute()
    # class 0: tp 2, fp 1, fn 1 -> 0.5; class 1: tp 2, fp 1 -> 2/3; class 2: fn 1 -> 0; class 3 absent from both.
    assert m["per_class_iou"][0] == pytest.approx(0.5)
    assert m["per_class_iou"][1] == pytest.approx(2 / 3)
    assert m["per_class_iou"][2] == 0.0
    assert m["per_class_iou"][3] is None  # ignored pixels predicted 3 do not count
    assert m["miou"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert m["pixel_acc"] == pytest.approx(4 / 6)
