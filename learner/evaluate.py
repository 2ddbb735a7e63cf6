"""Validation: argmax predictions over a split into a dataset-level confusion matrix.

Under torchrun each rank predicts its own share of the split (every ``world``-th image) and the
ranks sum their confusion matrices, so the metrics are the whole split's, computed once.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from learner.metrics import ConfusionMatrix
from rss_core.data import SegDataset


def iterate_split(dataset: SegDataset, batch_size: int, rank: int = 0, world: int = 1):
    """(images, labels) batches in order, of the images ``rank, rank + world, ...``; runs of one size where
    images keep sizes of their own (--image-size 0: evaluated at their native resolution, never squashed)."""
    indices = torch.arange(rank, len(dataset), world)
    for i in range(0, len(indices), batch_size):
        yield from dataset.batches(indices[i:i + batch_size])


def evaluate(model: nn.Module, dataset: SegDataset, device: torch.device, batch_size: int = 32) -> dict:
    """Pixel accuracy, per-class IoU and mIoU (classes absent from predictions and labels excluded).

    Under torchrun every rank must call it (the confusion matrices are all-reduced)."""
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    rank = dist.get_rank() if world > 1 else 0
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(dataset.num_classes)
    with torch.inference_mode():
        for images, labels in iterate_split(dataset, batch_size, rank, world):
            pred = model(images.to(device)).argmax(1)
            cm.update(labels.to(device), pred)
    model.train(was_training)
    if world > 1:
        counts = cm.mat.to(device)
        dist.all_reduce(counts)
        cm.mat = counts.cpu()
    return cm.compute()
