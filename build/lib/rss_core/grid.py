"""The PSR action grid: where a step's actions live, shared by the learner, the service and raters.

PSR (progressive scale rewards) shrinks the action space the reward has to explain. Two forms:

* ``grid`` (shipped): at scale ``s`` the policy acts on an ``s x s`` lattice of pixels, one
  pixel every ``stride = H // s``, at a random offset each step; the sampled ``s x s`` mask is
  scored against the label read at the same lattice. Each action is a real pixel, so the
  reward is unbiased for it: no class is favoured because it fills a cell.
* ``pool`` (the first form, kept for the ablation): logits are average-pooled to ``s x s``
  cells, one class sampled per cell and the mask upsampled (nearest) for scoring at full
  size. Objects smaller than a cell can never be right, so the best coarse mask leans to the
  majority class; the benchmark shows it collapsing.

`ActionGrid` is the learner's form; `rss_core.schemas.Grid` is the same thing on the wire
(`as_action_grid` / `as_wire_grid` convert).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import torch
import torch.nn.functional as F

from rss_core.schemas import Grid, GridMode

PSR_MODES: tuple[str, ...] = get_args(GridMode)


@dataclass(frozen=True)
class ActionGrid:
    """Where the actions of one step live. ``scale == 0`` means full resolution."""

    scale: int
    mode: str = "grid"
    offset: tuple[int, int] = (0, 0)

    def stride(self, height: int, width: int) -> tuple[int, int]:
        if self.scale == 0:
            return 1, 1
        return max(1, height // self.scale), max(1, width // self.scale)


def random_grid(scale: int, mode: str, height: int, width: int, generator: torch.Generator) -> ActionGrid:
    """A grid at ``scale`` with a random lattice offset (grid mode) drawn from ``generator``."""
    if mode not in PSR_MODES:
        raise ValueError(f"--psr-mode must be one of {', '.join(PSR_MODES)}, got {mode!r}")
    grid = ActionGrid(scale, mode)
    if scale == 0 or mode == "pool":
        return grid
    sy, sx = grid.stride(height, width)
    oy = int(torch.randint(sy, (1,), generator=generator))
    ox = int(torch.randint(sx, (1,), generator=generator))
    return ActionGrid(scale, mode, (oy, ox))


def lattice(x: torch.Tensor, grid: ActionGrid) -> torch.Tensor:
    """The values of (..., H, W) ``x`` at the lattice pixels of a grid-mode ``grid``: at most scale x scale."""
    sy, sx = grid.stride(*x.shape[-2:])
    oy, ox = grid.offset
    return x[..., oy::sy, ox::sx][..., : grid.scale, : grid.scale]


def lattice_shape(height: int, width: int, grid: ActionGrid) -> tuple[int, int]:
    """The shape `lattice` gives for an image of ``height x width``, without an array."""
    sy, sx = grid.stride(height, width)
    return (min(len(range(grid.offset[0], height, sy)), grid.scale),
            min(len(range(grid.offset[1], width, sx)), grid.scale))


def grid_labels(labels: torch.Tensor, grid: ActionGrid) -> torch.Tensor:
    """Labels the grid's actions are scored against: the lattice pixels (grid) or full size (pool)."""
    if grid.scale == 0 or grid.mode == "pool":
        return labels
    return lattice(labels, grid)


def masks_for_scoring(actions: torch.Tensor, grid: ActionGrid, size: tuple[int, int]) -> torch.Tensor:
    """Sampled actions (..., h, w) -> the masks a scorer sees: pooled cells are upsampled."""
    if grid.scale == 0 or grid.mode == "grid":
        return actions
    lead = actions.shape[:-2]
    flat = actions.reshape(-1, 1, *actions.shape[-2:]).float()
    return F.interpolate(flat, size=size, mode="nearest").long().reshape(*lead, *size)




def as_action_grid(grid: Grid | ActionGrid) -> ActionGrid:
    """The wire `Grid` of an episode or task as the `ActionGrid` the scoring functions take."""
    if isinstance(grid, ActionGrid):
        return grid
    return ActionGrid(grid.scale, grid.mode, tuple(grid.offset))


def as_wire_grid(grid: ActionGrid) -> Grid:
    return Grid(scale=grid.scale, mode=grid.mode, offset=grid.offset)
