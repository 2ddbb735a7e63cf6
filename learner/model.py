"""Segmentation networks: a compact UNet by default; torchvision and segmentation-models-pytorch ones
through learner/zoo.py."""

from __future__ import annotations

import math

import torch
from torch import nn

from learner.zoo import build_smp, build_tv


def _norm(channels: int, kind: str) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(math.gcd(8, channels), channels)


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), _norm(cout, norm), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), _norm(cout, norm), nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """A small UNet: ``depth`` downsamplings, channels ``width * 2**level``; logits at input size.

    GroupNorm by default: its output does not depend on the batch, so a policy sampled in one
    batch and updated in another (and every DDP rank) sees the same function.
    """

    # ImageNet statistics; the inputs are [0, 1] RGB.
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, num_classes: int, width: int = 8, depth: int = 3, norm: str = "group") -> None:
        super().__init__()
        if norm not in ("group", "batch"):
            raise ValueError(f"norm must be 'group' or 'batch', got {norm!r}")
        chans = [width * 2**i for i in range(depth + 1)]
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.stem = _Block(3, chans[0], norm)
        self.down = nn.ModuleList(_Block(chans[i], chans[i + 1], norm) for i in range(depth))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.dec = nn.ModuleList(_Block(2 * chans[i], chans[i], norm) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], num_classes, 1)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        factor = 2**self.depth
        pad_h, pad_w = (-h) % factor, (-w) % factor
        x = (x - self.mean) / self.std
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(nn.functional.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up, dec in zip(self.up, self.dec, strict=True):
            y = dec(torch.cat([up(y), skips.pop()], dim=1))
        return self.head(y)[..., :h, :w]


def build_model(num_classes: int, arch: str = "unet", width: int = 8, depth: int = 3, norm: str = "group",
                aux: bool = False) -> nn.Module:
    """``unet`` (built in), ``tv:<name>`` (torchvision, extra ``tv``; ``aux``: with its auxiliary head) or
    ``smp:<Arch>:<encoder>`` (segmentation-models-pytorch, extra ``smp``); none with pretrained weights."""
    if arch == "unet":
        return UNet(num_classes, width=width, depth=depth, norm=norm)
    if arch.startswith("tv:"):
        return build_tv(arch.removeprefix("tv:"), num_classes, aux)
    if arch.startswith("smp:"):
        return build_smp(arch.removeprefix("smp:"), num_classes)
    raise ValueError(f"--arch must be 'unet', 'tv:<name>' or 'smp:<Arch>:<encoder>', got {arch!r}")
