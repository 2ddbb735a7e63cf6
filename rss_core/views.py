"""Training views (`schemas.View`), applied alike by the learner and by the service's ground truth.

A view is what torchvision's segmentation references do to a training pair (a random resize, a
horizontal flip, a crop padded with ignore), with its random choices written down: the learner
draws them (`learner.views`), applies them here to the image and the label, and sends them with
the episode; the service applies the same functions to its label, so a remote reward equals the
in-process one bit for bit. Plain torch ops, so the service needs no torchvision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rss_core.data import IGNORE_INDEX
from rss_core.data.base import nearest
from rss_core.schemas import View


def _window(x: torch.Tensor, view: View, fill: float) -> torch.Tensor:
    """The crop window of ``x`` (..., H, W), ``fill`` past its bottom and right edges."""
    top, left, h, w = view.crop
    out = torch.full((*x.shape[:-2], h, w), fill, dtype=x.dtype)
    part = x[..., top:top + h, left:left + w]
    out[..., :part.shape[-2], :part.shape[-1]] = part
    return out


def view_label(label: torch.Tensor, view: View) -> torch.Tensor:
    """The (h, w) int64 label of ``view`` of an (H, W) label: nearest resize (a class is never blended), flip,
    window (255 = ignore past the edges)."""
    y = nearest(label, view.resize)
    if view.flip:
        y = y.flip(-1)
    return _window(y, view, IGNORE_INDEX)


def view_image(image: torch.Tensor, view: View) -> torch.Tensor:
    """The (3, h, w) float image of ``view`` of a (3, H, W) one: bilinear (antialiased) resize, flip, window
    (0 past the edges)."""
    x = image
    if tuple(x.shape[-2:]) != view.resize:
        x = F.interpolate(x[None], size=view.resize, mode="bilinear", align_corners=False, antialias=True)[0]
    if view.flip:
        x = x.flip(-1)
    return _window(x, view, 0.0)


def as_tensor(view: View) -> torch.Tensor:
    """A view as 7 int64 (resize h, w, flip, crop top, left, h, w): how a batch carries it through workers."""
    return torch.tensor([*view.resize, int(view.flip), *view.crop])


def from_tensor(row: torch.Tensor) -> View:
    values = [int(v) for v in row.tolist()]
    return View(resize=(values[0], values[1]), flip=bool(values[2]), crop=tuple(values[3:7]))
