"""Where rewards come from: the `RewardSource` interface and its in-process implementation.

The learner hands a source the sampled masks of one step and gets rewards back; it never
sees labels itself. `LocalRewardSource` calls the very functions the reward service uses
(`rss_core.scoring`); a remote source (the loop issue) posts the same episodes over
HTTP and reads results from Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from rss_core import scoring
from rss_core.data import SegDataset
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


class RewardSource(Protocol):
    policy_version: int

    def score(self, episodes: Episodes) -> Rewards: ...

    def commit(self, step: int) -> None:
        """Called after the optimizer step of ``step`` that applied the last rewards."""

    def checkpointed(self, step: int) -> None:
        """Called once a checkpoint of ``step`` steps is written."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict, step: int) -> None: ...

    def stats(self) -> dict[str, float]: ...

    def close(self) -> None: ...


class LabelStore:
    """Labels of a split by index, kept on ``device`` as uint8 (built on first use)."""

    def __init__(self, dataset: SegDataset, device: torch.device) -> None:
        self.dataset, self.device = dataset, device
        self._labels: torch.Tensor | None = None

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        if self._labels is None:
            labels = self.dataset.batch(torch.arange(len(self.dataset)))[1]
            self._labels = labels.to(torch.uint8).to(self.device)
        return self._labels[indices.to(self.device)].long()


class LocalRewardSource:
    """Ground-truth rewards computed in-process, with the same code the service runs."""

    policy_version = 0

    def __init__(self, dataset: SegDataset, device: torch.device, metric: str = "miou") -> None:
        if metric not in scoring.METRICS:
            raise ValueError(f"--metric must be one of {', '.join(scoring.METRICS)}, got {metric!r}")
        self.labels, self.metric, self.num_classes = LabelStore(dataset, device), metric, dataset.num_classes

    def score(self, episodes: Episodes) -> Rewards:
        labels = grid_labels(self.labels(episodes.indices), episodes.grid)  # (B, h, w)
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

    def stats(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass
