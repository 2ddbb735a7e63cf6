"""Ground-truth rewards, pixel and image level: pure torch, shared by the learner and the service.

Why per-image mIoU averages over the classes present in the *label* only: averaging over the
classes present in the label *or* the sample makes every stray pixel of an absent class a
zero-IoU class, and a policy trained on that reward learns to predict only background
(measured: docs/benchmarks.md). A stray pixel is still penalised under the label-only mean,
through the IoU of the class it was taken from.
"""

from __future__ import annotations

from typing import get_args

import numpy as np
import torch

from rss_core.data.base import IGNORE_INDEX
from rss_core.grid import ActionGrid, as_action_grid, masks_for_scoring
from rss_core.schemas import Grid, Metric

METRICS: tuple[str, ...] = get_args(Metric)


def _as_long(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).long()


def _check_shapes(pred: torch.Tensor, label: torch.Tensor) -> None:
    """``label`` must have ``pred``'s rank and broadcast to its shape (K samples share a label)."""
    try:
        ok = pred.ndim >= 2 and pred.ndim == label.ndim
        ok = ok and torch.broadcast_shapes(pred.shape, label.shape) == pred.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"mask shape {tuple(pred.shape)} does not match label shape {tuple(label.shape)}")


def per_image_confusion(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[..., true, predicted]`` counts over the non-ignored pixels of each mask.

    ``pred`` is (..., H, W); ``label`` broadcasts to it, so K samples of one image share one
    label without copying it. Ignored pixels go to a spare bin that is dropped.
    """
    label = label.broadcast_to(pred.shape)
    lead = pred.shape[:-2]
    n = int(torch.tensor(lead).prod()) if lead else 1
    cc = num_classes * num_classes
    offset = (torch.arange(n, device=pred.device) * cc).view(*lead, 1, 1) if lead else 0
    index = offset + label * num_classes + pred
    index = torch.where(label == IGNORE_INDEX, n * cc, index)
    counts = torch.bincount(index.flatten(), minlength=n * cc + 1)[: n * cc]
    return counts.view(*lead, num_classes, num_classes)


def image_reward(
    pred: torch.Tensor | np.ndarray,
    label: torch.Tensor | np.ndarray,
    num_classes: int,
    metric: str = "miou",
) -> torch.Tensor:
    """One reward in [0, 1] per mask of class indices.

    ``pred`` is (N, H, W) with ``label`` (N, H, W), or (N, K, H, W) for K samples per image
    with ``label`` (N, 1, H, W) or (N, K, H, W); the result has ``pred``'s leading shape.
    An image whose label is all ignore gets reward 0 (nothing to be right about).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} (choose from {', '.join(METRICS)})")
    pred, label = _as_long(pred), _as_long(label)
    _check_shapes(pred, label)
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise ValueError(f"mask values must be class indices in [0, {num_classes})")
    conf = per_image_confusion(pred, label, num_classes).double()
    tp = conf.diagonal(dim1=-2, dim2=-1)
    gt_count, pred_count = conf.sum(-1), conf.sum(-2)
    if metric == "pixel_acc":
        return (tp.sum(-1) / gt_count.sum(-1).clamp(min=1)).float()
    if metric == "dice":
        score = 2 * tp / (gt_count + pred_count).clamp(min=1)
    else:
        score = tp / (gt_count + pred_count - tp).clamp(min=1)
    counted = gt_count > 0
    if metric == "miou_union":
        counted = counted | (pred_count > 0)
    return ((score * counted).sum(-1) / counted.sum(-1).clamp(min=1)).float()


def pixel_reward(
    pred: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel correctness ``1[pred == label]`` and the mask of pixels that count (label != 255)."""
    pred, label = _as_long(pred), _as_long(label)
    _check_shapes(pred, label)
    valid = (label != IGNORE_INDEX).broadcast_to(pred.shape)
    return ((pred == label) & valid).float(), valid


def score_masks(
    masks: np.ndarray, target: np.ndarray, grid: ActionGrid | Grid, level: str, num_classes: int,
    metric: str = "miou",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rewards of an episode's K masks (K, h, w) on ``grid`` (learner or wire form) against ``target``
    (the grid's label, `rss_core.labels.label_at_grid`).

    Image level: ``(K,)`` rewards and None. Pixel level: ``(K, h, w)`` float rewards with NaN
    where the label is ignore, and the (K, h, w) valid mask. This is the service's `gt` scorer
    and the learner's in-process source in one definition.
    """
    label = _as_long(target)
    preds = masks_for_scoring(_as_long(masks), as_action_grid(grid), tuple(label.shape[-2:]))
    label = label.unsqueeze(0)  # (1, h, w): shared by the K samples
    if level == "pixel":
        pixel, valid = pixel_reward(preds, label)
        return torch.where(valid, pixel, torch.nan), valid
    return image_reward(preds, label, num_classes, metric), None
