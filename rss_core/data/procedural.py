"""What the procedural datasets (`shapes`, `scenes`) share: a split of ids drawn in code, each image a pure
function of (seed, split, index), so the reward service regenerates the label of any id without files."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from rss_core.data.base import DatasetError, SegDataset, to_tensors

SPLITS = ("train", "val")


class ProceduralDataset(SegDataset):
    """A split of a generator's images; ids are ``{split}/{index:06d}``. Subclasses set the class names, the
    generator (seed, split, index, size) -> (image, label), its version, and the default and smallest sizes."""

    name = "procedural"
    default_class_names: tuple[str, ...] = ()
    generator_version = 0
    default_size = 64
    min_size = 16
    make: Callable[[int, str, int, int], tuple[np.ndarray, np.ndarray]]

    def __init__(
        self,
        split: str = "train",
        *,
        size: int | None = None,
        length: int | None = None,
        seed: int = 0,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        image_size: int | None = None,
    ) -> None:
        name, n = self.name, len(self.default_class_names)
        if split not in SPLITS:
            raise DatasetError(f"{name}: unknown split {split!r} (choose from {', '.join(SPLITS)})")
        if num_classes not in (None, n):
            raise DatasetError(f"{name}: has exactly {n} classes, got --num-classes {num_classes}")
        super().__init__(num_classes=n, class_names=class_names or list(self.default_class_names),
                         image_size=image_size)
        size = self.default_size if size is None else size
        if size < self.min_size:
            raise DatasetError(f"{name}: image size must be at least {self.min_size}, got {size}")
        self.split, self.size, self.seed = split, size, seed
        length = length if length is not None else (2000 if split == "train" else 200)
        if length < 1:
            raise DatasetError(f"{name}: split {split!r} would be empty (length {length})")
        self.ids = [f"{split}/{i:06d}" for i in range(length)]
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def identity(self) -> dict:
        """The generator's settings; the length is left out, so a learner on the first n images of a split
        has the same data as a service serving more of it (ids outside the service's are refused anyway)."""
        return {**super().identity(), "size": self.size, "seed": self.seed, "generator": self.generator_version}

    def load(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        split, _, index = image_id.partition("/")
        if split != self.split or not index.isdigit() or not 0 <= int(index) < len(self.ids):
            raise DatasetError(f"{self.name}: unknown image id {image_id!r} in split {self.split!r}")
        return self.make(self.seed, split, int(index), self.size)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.tensors()
        return images[indices], labels[indices]

    def batches(self, indices: torch.Tensor):
        yield self.batch(indices)  # one size, in memory: one slice

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split as (N, 3, S, S) float and (N, S, S) int64 tensors, built once."""
        if self._cache is None:
            pairs = [to_tensors(*self.load(i), self.image_size) for i in self.ids]
            self._cache = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
        return self._cache
