"""Ground-truth rewards, pixel and image level: pure torch, shared by the learner and the service.

Why per-image mIoU averages over the classes present in the *label* only: averaging over the
classes present in the label *or* the sample makes every stray pixel of an absent class a
zero-IoU class, and a policy trained on that reward learns to predict only background
(measured: docs/benchmarks.md). A stray pixel is still penalised under the label-only mean,
through the IoU of the class it was taken from.
"""

from __future__ import annotations

import math
from typing import get_args

import numpy as np
import torch

from rss_core.data.base import IGNORE_INDEX
from rss_core.grid import ActionGrid, as_action_grid, masks_for_scoring
from rss_core.schemas import Grid, Metric

METRICS: tuple[str, ...] = get_args(Metric)


def _as_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``x`` as a tensor of its own integer dtype (uint8 masks stay uint8: no 8-fold copy to int64)."""
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)


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
    lead = pred.shape[:-2]
    n = math.prod(lead)
    cc = num_classes * num_classes
    # int32 indices where they fit: the index arithmetic over every pixel is most of the cost, and int64 costs
    # twice the memory traffic of int32 (and 8 times uint8's, the masks' own dtype)
    dtype = torch.int32 if n * cc < 2**31 else torch.int64
    index = pred.to(dtype) + label.to(dtype) * num_classes  # the label broadcasts here: K samples share it
    if lead:
        index += (torch.arange(n, device=pred.device, dtype=dtype) * cc).view(*lead, 1, 1)
    ignored = label == IGNORE_INDEX
    if bool(ignored.any()):
        index.masked_fill_(ignored.broadcast_to(index.shape), n * cc)  # the spare bin, dropped
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
    pred, label = _as_tensor(pred), _as_tensor(label)
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
    pred, label = _as_tensor(pred), _as_tensor(label)
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
    rewards, valid = score_episodes(_as_tensor(masks)[None], _as_tensor(target)[None], grid, level, num_classes,
                                    metric)
    return rewards[0], valid[0] if valid is not None else None


def score_episodes(
    masks: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor, grid: ActionGrid | Grid, level: str,
    num_classes: int, metric: str = "miou",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`score_masks` of N episodes of one shape at once: masks (N, K, h, w), their targets (N, h', w').

    Each op runs once for the N episodes instead of once each (a torch op costs microseconds however small
    its tensor: for 16 episodes of 32 masks of 32 x 32, most of the time), and each episode's rewards are
    exactly what `score_masks` gives it alone: the counts and sums are per episode either way."""
    label = _as_tensor(targets)
    preds = masks_for_scoring(_as_tensor(masks), as_action_grid(grid), tuple(label.shape[-2:]))
    label = label.unsqueeze(1)  # (N, 1, h, w): shared by each episode's K samples
    if level == "pixel":
        pixel, valid = pixel_reward(preds, label)
        return torch.where(valid, pixel, torch.nan), valid
    return image_reward(preds, label, num_classes, metric), None
