"""Simulated raters: answers from ground truth with a person's imperfections, shared by `rss rater-sim`
(which answers the service's tasks over HTTP) and `rss bench feedback` (which trains in-process).

* a preference is wrong with probability ``flip`` (a tie stays a tie); a best-of-N choice too (then
  it names one of the other masks at random);
* a score is the mask's reward plus Gaussian ``jitter``, clipped to [0, 1];
* a brush answer paints what is wrong with strokes ``brush_width`` pixels wide, so a wrong region
  thinner than that is missed (a morphological opening), and spilling ``brush_spill`` pixels over
  its edges onto right pixels (a dilation); everything not painted is confirmed correct; a class brush
  (`name_classes`) paints each stroke in the class that belongs there, and its spill carries the class
  of the region it spilled from;
* a point answer ("is this <class>?", yes or no) is wrong with probability ``point_error``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rss_core.answers import CORRECT, LABEL_NONE, UNMARKED, WRONG


@dataclass(frozen=True)
class Imperfection:
    flip: float = 0.1
    """probability that a preference names the worse mask"""
    jitter: float = 0.1
    """standard deviation of the noise on a score in [0, 1]"""
    brush_width: int = 3
    """brush strokes are this many pixels wide (odd): thinner wrong regions are missed"""
    brush_spill: int = 1
    """brush strokes spill this many pixels past a wrong region's edge"""
    point_error: float = 0.05
    """probability that a point answer (yes or no) is wrong"""

    def __post_init__(self) -> None:
        if not 0 <= self.flip <= 1 or self.jitter < 0:
            raise ValueError(f"--flip must be in [0, 1] and --jitter >= 0, got {self.flip}, {self.jitter}")
        if not 0 <= self.point_error <= 1:
            raise ValueError(f"--point-error must be in [0, 1], got {self.point_error}")
        if self.brush_width < 1 or self.brush_width % 2 == 0 or self.brush_spill < 0:
            raise ValueError(f"--brush-width must be odd and >= 1, --brush-spill >= 0, got {self.brush_width}, "
                             f"{self.brush_spill}")


def prefer(reward_a: float, reward_b: float, noise: Imperfection, rng: np.random.Generator) -> str:
    """``a``, ``b`` or ``tie``: which of two masks with these true rewards the rater calls better."""
    if reward_a == reward_b:
        return "tie"
    better = "a" if reward_a > reward_b else "b"
    if rng.random() < noise.flip:
        return "b" if better == "a" else "a"
    return better


def choose_best(rewards: list[float], noise: Imperfection, rng: np.random.Generator) -> int:
    """The position of the mask the rater calls best among masks with these true rewards."""
    best = int(np.argmax(rewards))
    if len(rewards) > 1 and rng.random() < noise.flip:
        return int(rng.choice([i for i in range(len(rewards)) if i != best]))
    return best


def score(reward: float, noise: Imperfection, rng: np.random.Generator) -> float:
    return float(np.clip(reward + rng.normal(0, noise.jitter), 0, 1))


def _dilate(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.max_pool2d(x, size, stride=1, padding=size // 2)


def brush(correct: torch.Tensor, valid: torch.Tensor, noise: Imperfection) -> torch.Tensor:
    """Painted answers (..., h, w) uint8 (0 unmarked/ignored, 1 correct, 2 wrong) for masks whose
    per-pixel correctness is ``correct`` (bool, ...) where ``valid`` (the label is not ignore)."""
    shape = correct.shape
    wrong = (~correct.bool() & valid.bool()).reshape(-1, 1, *shape[-2:]).float()
    if noise.brush_width > 1:  # opening: what a stroke this wide cannot cover is not painted
        wrong = _dilate(-_dilate(-wrong, noise.brush_width), noise.brush_width)
    if noise.brush_spill:
        wrong = _dilate(wrong, 2 * noise.brush_spill + 1)
    painted = torch.where(wrong.reshape(shape) > 0, WRONG, CORRECT).to(torch.uint8)
    return torch.where(valid.bool().broadcast_to(shape), painted, torch.full_like(painted, UNMARKED))


def verify(correct: torch.Tensor, noise: Imperfection, generator: torch.Generator | None = None) -> torch.Tensor:
    """Yes (True) or no to "is this <class>?" at pixels whose class is ``correct`` (bool), each answer
    wrong with probability ``point_error``."""
    wrong = torch.rand(correct.shape, generator=generator, device=correct.device) < noise.point_error
    return correct.bool() ^ wrong


def name_classes(painted: torch.Tensor, correct: torch.Tensor, labels: torch.Tensor,
                 noise: Imperfection) -> torch.Tensor:
    """The class a class brush paints each pixel of ``painted`` answers (..., h, w; 2 wrong) in, for masks
    whose per-pixel correctness is ``correct``: the true label (``labels``, broadcast) where the mask is
    wrong, and where a stroke spilled over a right pixel, the class of a wrong pixel within ``brush_spill``
    of it (the stroke it spilled from; the largest such class where strokes of two classes meet);
    ``LABEL_NONE`` (255) where nothing is painted."""
    shape = painted.shape
    labels = labels.broadcast_to(shape).long()
    painted_wrong = painted == WRONG
    truly_wrong = painted_wrong & ~correct.bool().broadcast_to(shape) & (labels < LABEL_NONE)
    named = torch.where(truly_wrong, labels, torch.full_like(labels, -1))
    if noise.brush_spill:
        near = _dilate((named + 1).reshape(-1, 1, *shape[-2:]).float(), 2 * noise.brush_spill + 1)
        named = torch.where(truly_wrong, named, near.reshape(shape).long() - 1)
    keep = painted_wrong & (named >= 0)
    return torch.where(keep, named, torch.full_like(named, LABEL_NONE)).to(torch.uint8)
