"""Training views (`--crop-size`): torchvision's segmentation recipe (a random resize of the shorter side,
a horizontal flip, a crop padded with ignore), its random choices drawn here and written down as a
`rss_core.schemas.View`, then applied by `rss_core.views`, which the service runs too: a remote
reward is scored against the very view the learner trained on.

The random resize is `transforms.v2.RandomResize`'s (shorter side uniform in [min, max), aspect
ratio kept); the image is bilinear, the label nearest (a label value is a class, never a blend);
the crop window is uniform over the resized image, and where the image is smaller than the crop,
the window passes its bottom or right edge: the image is 0 there and the label 255 (ignore), so
padding is never learned as a class. Every view is a pure function of (seed, step, rank, position
in the batch), drawn under a forked RNG, so a run is reproducible and resumes exactly, with or
without DataLoader workers, and nothing else's randomness moves.
"""

from __future__ import annotations

import torch

from rss_core.schemas import View
from rss_core.views import view_image, view_label


class TrainViews:
    """``crop`` x ``crop`` views whose shorter side is first resized to ``scale`` (a range) times ``crop``."""

    def __init__(self, crop: int, scale: tuple[float, float] = (0.5, 2.0), flip: bool = True,
                 jitter: float = 0.0) -> None:
        if crop < 1 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"views need a crop >= 1 and 0 < scale min <= max, got {crop} and {scale}")
        self.crop, self.flip = crop, flip
        self.sizes = (max(1, round(scale[0] * crop)), max(2, round(scale[1] * crop) + 1))  # [min, max)
        self.jitter = None
        if jitter:  # colour only: the label is untouched, so the service needs none of it
            from learner.zoo import import_torchvision

            import_torchvision()
            from torchvision.transforms import v2

            self.jitter = v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter)

    def draw(self, height: int, width: int) -> View:
        """A random view of an ``height`` x ``width`` image (torch's global RNG: call under a seeded fork)."""
        size = int(torch.randint(self.sizes[0], self.sizes[1], ()))
        if height <= width:
            resize = (size, max(1, int(size * width / height)))
        else:
            resize = (max(1, int(size * height / width)), size)
        flip = self.flip and bool(torch.rand(()) < 0.5)
        top = int(torch.randint(0, max(resize[0] - self.crop, 0) + 1, ()))
        left = int(torch.randint(0, max(resize[1] - self.crop, 0) + 1, ()))
        return View(resize=resize, flip=flip, crop=(top, left, self.crop, self.crop))

    def __call__(self, image: torch.Tensor, label: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, View]:
        """(3, crop, crop) float image, (crop, crop) int64 label and the `View` of a (3, H, W) image and its label."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            view = self.draw(*image.shape[-2:])
            picture = view_image(image, view)
            if self.jitter is not None:
                picture = self.jitter(picture)
        return picture, view_label(label, view), view


def view_seed(seed: int, step: int, rank: int, position: int) -> int:
    """The seed of one view: a pure function of the run's seed, the step, the rank and the place in the batch."""
    return (((seed * 1_000_003 + step) * 101 + rank) * 4099 + position) % (2**63) + 1
