"""The training batches of the steps to come, read ahead by `torch.utils.data.DataLoader` worker processes.

A step's images are a pure function of (seed, step, rank) (`train.step_generator`), so the
batches of later steps are known in advance: `StepBatches` is a map-style dataset whose item
``step`` is that step's (indices, images, labels), and `Prefetcher` reads it in step order with
``--data-workers`` processes and, on a GPU, pinned memory. The loop still draws the step's
indices itself (its generator must advance the same way for everything drawn after them), and
`Prefetcher.take` checks that the batch read ahead has exactly those indices, so training is
bit-identical with and without workers, and a resumed run starts reading at its own step.

A batch carries its labels too: the in-process ground truth scores against them, and
`rewards.LabelStore` keeps a folder's labels bounded in bytes (``--label-cache-mb``) instead of
all of them at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from rss_core.data import SegDataset

log = logging.getLogger(__name__)

# indices (N,), images (N, 3, H, W), labels (N, H, W) uint8, views (N, 7) (`rss_core.views.as_tensor`; (0, 7): none)
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class StepIndices:
    """The image indices of a step: the first draw of its generator (`train.step_generator`), as the loop draws
    them. A class, not a closure, so a DataLoader worker started by spawn can unpickle it."""

    def __init__(self, length: int, count: int, seed: int, rank: int) -> None:
        self.length, self.count, self.seed, self.rank = length, count, seed, rank

    def __call__(self, step: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``generator``: the step's own, when the caller goes on drawing from it (the loop); else a fresh one."""
        from learner.train import step_generator

        if generator is None:
            generator = step_generator(self.seed, step, self.rank)
        return torch.randint(self.length, (self.count,), generator=generator)


class StepBatches(Dataset):
    """Item ``step``: the (indices, images, labels) of that step, ``draw(step)`` being its indices; with
    ``views`` (`learner.views.TrainViews`), each image and label is a random view of the image, drawn from
    (``seed``, step, ``rank``, its place in the batch)."""

    def __init__(self, dataset: SegDataset, draw: Callable[[int], torch.Tensor], views=None, seed: int = 0,
                 rank: int = 0) -> None:
        self.dataset, self.draw, self.views, self.seed, self.rank = dataset, draw, views, seed, rank

    def __getitem__(self, step: int) -> Batch:
        indices = self.draw(step)
        if self.views is None:
            images, labels = self.dataset.batch(indices)
            views = torch.zeros((0, 7), dtype=torch.long)
        else:
            from learner.views import view_seed
            from rss_core.views import as_tensor

            made = [self.views(*self.dataset[int(i)], view_seed(self.seed, step, self.rank, position))
                    for position, i in enumerate(indices)]
            images, labels = torch.stack([m[0] for m in made]), torch.stack([m[1] for m in made])
            views = torch.stack([as_tensor(m[2]) for m in made])
        return indices, images, labels.to(torch.uint8), views  # uint8: a quarter of the bytes through the workers

    def __len__(self) -> int:  # DataLoader asks; the steps are given by the sampler
        raise TypeError("StepBatches is read through its sampler of steps")


class Prefetcher:
    """Batches of steps ``start .. steps - 1`` in order, read by ``workers`` processes (``ahead`` batches each in
    flight); `take(step, indices)` hands over the next one. Close it with `close()`."""

    def __init__(self, dataset: SegDataset, draw: Callable[[int], torch.Tensor], start: int, steps: int, *,
                 workers: int, pin_memory: bool = False, ahead: int = 2, views=None, seed: int = 0,
                 rank: int = 0) -> None:
        batches = StepBatches(dataset, draw, views, seed, rank)
        self.loader = DataLoader(batches, sampler=range(start, steps), batch_size=None,
                                 num_workers=workers, pin_memory=pin_memory,
                                 prefetch_factor=ahead if workers else None, persistent_workers=False)
        self._it: Iterator[Batch] | None = iter(self.loader) if start < steps else None
        self._next = start

    def take(self, step: int, indices: torch.Tensor) -> Batch:
        if self._it is None or step != self._next:
            raise RuntimeError(f"the prefetcher reads step {self._next}, not {step}: steps are read once, in order")
        batch = next(self._it)
        self._next += 1
        if not torch.equal(batch[0], indices):
            raise RuntimeError(f"step {step}: the batch read ahead has other images than the step drew")
        return batch

    def close(self) -> None:
        self._it = None  # the loader's iterator, once unreferenced, stops its workers
