"""Validation: argmax predictions over a split into a dataset-level confusion matrix."""

from __future__ import annotations

import torch
from torch import nn

from learner.metrics import ConfusionMatrix
from rss_core.data import SegDataset


def iterate_split(dataset: SegDataset, batch_size: int):
    """(images, labels) batches in order."""
    for i in range(0, len(dataset), batch_size):
        yield dataset.batch(torch.arange(i, min(i + batch_size, len(dataset))))


def evaluate(model: nn.Module, dataset: SegDataset, device: torch.device, batch_size: int = 32) -> dict:
    """Pixel accuracy, per-class IoU and mIoU (classes absent from predictions and labels excluded)."""
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(dataset.num_classes)
    with torch.inference_mode():
        for images, labels in iterate_split(dataset, batch_size):
            pred = model(images.to(device)).argmax(1)
            cm.update(labels.to(device), pred)
    model.train(was_training)
    return cm.compute()
