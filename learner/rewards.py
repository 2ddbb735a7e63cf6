"""Where rewards come from: the `RewardSource` interface and its in-process implementation.

The learner hands a source the sampled masks of one step and gets rewards back; it never
sees labels itself. `LocalRewardSource` calls the very functions the reward service uses
(`rss_core.scoring`); a remote source (the loop issue) posts the same episodes over
HTTP and reads results from Redis.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import torch

from rss_core import scoring
from rss_core.data import SegDataset
from rss_core.data.base import FolderDataset
from rss_core.grid import ActionGrid, grid_labels, masks_for_scoring


@dataclass
class Episodes:
    """The masks sampled in one step: ``actions`` (B, K, h, w) on ``grid`` for ``indices``; ``query``
    (B, h, w) bool, pixel level: the only pixels a rater is asked about (point verification; None: all)."""

    indices: torch.Tensor
    actions: torch.Tensor
    grid: ActionGrid
    image_size: tuple[int, int]
    level: str
    query: torch.Tensor | None = None
    labels: torch.Tensor | None = None  # (B, H, W): the labels of these very views (--crop-size); None: by index
    views: torch.Tensor | None = None  # (B, 7): the views themselves (`rss_core.views.as_tensor`), for the service


@dataclass
class Rewards:
    """Image level: ``image`` (B, K). Pixel level: ``pixel`` (B, K, h, w) and ``valid`` (B, h, w).

    ``keep`` (B,) marks the images whose rewards all arrived (a remote source may lose some to
    failures or timeouts); None means all of them.
    """

    image: torch.Tensor | None = None
    pixel: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    keep: torch.Tensor | None = None
    named: torch.Tensor | None = None  # pixel level, a class brush: (B, K, h, w) uint8 class painted, 255 none


class RewardSource(Protocol):
    policy_version: int

    def score(self, episodes: Episodes) -> Rewards: ...

    def commit(self, step: int) -> None:
        """Called after the optimizer step of ``step`` that applied the last rewards."""

    def checkpointed(self, step: int) -> None:
        """Called once a checkpoint of ``step`` steps is written."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict, step: int) -> None: ...

    def report(self, summary: dict, model: torch.nn.Module) -> None:
        """Called with each evaluation's summary (rank 0): a remote source posts it to the service."""

    def stats(self) -> dict[str, float]: ...

    def close(self) -> None: ...


class LabelStore:
    """Labels of a split by index, as uint8. An in-memory dataset's (procedural: `shapes`, `scenes`) are built
    all at once on first use and kept on ``device``; a folder's are read per index and kept on the CPU up to
    ``max_bytes`` (least recently used out), fed too by the batches the prefetcher reads (`put`), so memory is
    bounded by the cache, not by the dataset."""

    def __init__(self, dataset: SegDataset, device: torch.device, max_bytes: int | None = None) -> None:
        self.dataset, self.device, self.max_bytes = dataset, device, max_bytes
        self.cached = max_bytes is not None and isinstance(dataset, FolderDataset)
        self._labels: torch.Tensor | None = None
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.bytes = self.misses = 0

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        if not self.cached:
            if self._labels is None:
                labels = self.dataset.batch(torch.arange(len(self.dataset)))[1]
                self._labels = labels.to(torch.uint8).to(self.device)
            return self._labels[indices.to(self.device)].long()
        out = []
        for i in indices.tolist():
            label = self._cache.get(i)
            if label is None:
                self.misses += 1
                label = self._add(i, self.dataset.label(i).to(torch.uint8))
            else:
                self._cache.move_to_end(i)
            out.append(label)
        return torch.stack(out).to(self.device).long()

    def put(self, indices: torch.Tensor, labels: torch.Tensor) -> None:
        """Labels read with a batch (uint8, (N, H, W)): a folder's are kept for the scoring that follows."""
        if self.cached:
            for i, label in zip(indices.tolist(), labels, strict=True):
                self._add(i, label.to(torch.uint8).clone())

    def _add(self, index: int, label: torch.Tensor) -> torch.Tensor:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        self._cache[index] = label
        self.bytes += label.numel()
        while self.bytes > self.max_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self.bytes -= old.numel()
        return label


class LocalRewardSource:
    """Ground-truth rewards computed in-process, with the same code the service runs."""

    policy_version = 0

    def __init__(self, dataset: SegDataset, device: torch.device, metric: str = "miou",
                 labels: LabelStore | None = None) -> None:
        if metric not in scoring.METRICS:
            raise ValueError(f"--metric must be one of {', '.join(scoring.METRICS)}, got {metric!r}")
        self.labels, self.metric, self.num_classes = labels or LabelStore(dataset, device), metric, dataset.num_classes

    def score(self, episodes: Episodes) -> Rewards:
        labels = episodes.labels if episodes.labels is not None else self.labels(episodes.indices)
        labels = grid_labels(labels.to(self.labels.device).long(), episodes.grid)  # (B, h, w)
        masks = masks_for_scoring(episodes.actions, episodes.grid, tuple(labels.shape[-2:]))
        target = labels.unsqueeze(1)  # (B, 1, h, w): shared by the K samples
        if episodes.level == "pixel":
            pixel, valid = scoring.pixel_reward(masks, target)
            valid = valid[:, 0] if episodes.query is None else valid[:, 0] & episodes.query.to(valid.device)
            return Rewards(pixel=pixel * valid.unsqueeze(1), valid=valid)
        return Rewards(image=scoring.image_reward(masks, target, self.num_classes, self.metric))

    def commit(self, step: int) -> None:
        pass

    def checkpointed(self, step: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict, step: int) -> None:
        pass

    def report(self, summary: dict, model: torch.nn.Module) -> None:
        pass  # metrics.jsonl has it: there is no service to tell

    def stats(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass
