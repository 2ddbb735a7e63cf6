"""Dataset-level segmentation metrics from a confusion matrix (torchvision-references style)."""

from __future__ import annotations

import math

import torch


class ConfusionMatrix:
    """Accumulates ``[true, predicted]`` counts; pixels labelled 255 drop out via the range mask."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.mat = torch.zeros((num_classes, num_classes), dtype=torch.int64)

    def update(self, target: torch.Tensor, pred: torch.Tensor) -> None:
        n = self.num_classes
        target, pred = target.flatten().long(), pred.flatten().long()
        keep = (target >= 0) & (target < n)
        index = n * target[keep] + pred[keep]
        self.mat += torch.bincount(index, minlength=n * n).reshape(n, n).cpu()

    def compute(self) -> dict:
        """Pixel accuracy, per-class IoU (None where the class is absent from both prediction
        and labels) and mIoU over the classes that have an IoU."""
        mat = self.mat.double()
        tp = mat.diag()
        union = mat.sum(0) + mat.sum(1) - tp
        per_class = [None if u == 0 else float(t / u) for t, u in zip(tp.tolist(), union.tolist(), strict=True)]
        present = [v for v in per_class if v is not None]
        total = float(mat.sum())
        return {
            "pixel_acc": float(tp.sum()) / total if total else math.nan,
            "per_class_iou": per_class,
            "miou": sum(present) / len(present) if present else math.nan,
        }
