"""Training views (`--crop-size`): a random rescale, a crop, a flip and optional colour jitter, done as
torchvision's segmentation references do them, with `torchvision.transforms.v2` on `tv_tensors`.

The image is bilinear, the label nearest (a label value is a class, never a blend); where the
rescaled image is smaller than the crop, the crop is padded, the image with 0 and the label with
255 (ignore), so padding is never learned as a class. The aspect ratio is kept: the rescale sets
the shorter side. Every view is a pure function of (seed, step, rank, position in the batch), drawn
under a forked RNG, so a run is reproducible and resumes exactly, with or without DataLoader
workers, and nothing else's randomness moves.
"""

from __future__ import annotations

import torch

from rss_core.data import IGNORE_INDEX


class TrainViews:
    """``crop`` x ``crop`` views whose shorter side is first rescaled to ``scale`` (a range) times ``crop``."""

    def __init__(self, crop: int, scale: tuple[float, float] = (0.5, 2.0), flip: bool = True,
                 jitter: float = 0.0) -> None:
        from learner.zoo import import_torchvision

        import_torchvision()
        from torchvision import tv_tensors
        from torchvision.transforms import v2

        if crop < 1 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"views need a crop >= 1 and 0 < scale min <= max, got {crop} and {scale}")
        self.crop, self.tv_tensors = crop, tv_tensors
        steps = [v2.RandomResize(max(1, round(scale[0] * crop)), max(2, round(scale[1] * crop) + 1),
                                 antialias=True)]
        if flip:
            steps.append(v2.RandomHorizontalFlip())
        steps.append(v2.RandomCrop(crop, pad_if_needed=True,
                                   fill={tv_tensors.Image: 0.0, tv_tensors.Mask: IGNORE_INDEX}))
        if jitter:
            steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
        self.transform = v2.Compose(steps)

    def __call__(self, image: torch.Tensor, label: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(3, crop, crop) float image and (crop, crop) int64 label of one (3, H, W) image and (H, W) label."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            image, label = self.transform(self.tv_tensors.Image(image), self.tv_tensors.Mask(label))
        return image.as_subclass(torch.Tensor), label.as_subclass(torch.Tensor)


def view_seed(seed: int, step: int, rank: int, position: int) -> int:
    """The seed of one view: a pure function of the run's seed, the step, the rank and the place in the batch."""
    return (((seed * 1_000_003 + step) * 101 + rank) * 4099 + position) % (2**63) + 1
