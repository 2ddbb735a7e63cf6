"""The policy: K sampled masks per image from per-pixel categoricals, on a PSR action grid.

PSR (progressive scale rewards) shrinks the action space the reward has to explain. Two forms:

* ``grid`` (shipped): at scale ``s`` the policy acts on an ``s x s`` lattice of pixels, one
  pixel every ``stride = H // s``, at a random offset each step; the sampled ``s x s`` mask is
  scored against the label read at the same lattice. Each action is a real pixel, so the
  reward is unbiased for it: no class is favoured because it fills a cell.
* ``pool`` (DESIGN.md's first form, kept for the ablation): logits are average-pooled to
  ``s x s`` cells, one class sampled per cell and the mask upsampled (nearest) for scoring at
  full size. Objects smaller than a cell can never be right, so the best coarse mask leans to
  the majority class; the benchmark shows it collapsing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

PSR_MODES = ("grid", "pool")


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


def action_logits(logits: torch.Tensor, grid: ActionGrid) -> torch.Tensor:
    """(B, C, H, W) logits -> (B, C, h, w) logits of the actions on ``grid``."""
    if grid.scale == 0:
        return logits
    if grid.mode == "pool":
        return F.adaptive_avg_pool2d(logits, grid.scale)
    sy, sx = grid.stride(*logits.shape[-2:])
    oy, ox = grid.offset
    return logits[..., oy::sy, ox::sx][..., : grid.scale, : grid.scale]


def grid_labels(labels: torch.Tensor, grid: ActionGrid) -> torch.Tensor:
    """Labels the grid's actions are scored against: the lattice pixels (grid) or full size (pool)."""
    if grid.scale == 0 or grid.mode == "pool":
        return labels
    sy, sx = grid.stride(*labels.shape[-2:])
    oy, ox = grid.offset
    return labels[..., oy::sy, ox::sx][..., : grid.scale, : grid.scale]


def masks_for_scoring(actions: torch.Tensor, grid: ActionGrid, size: tuple[int, int]) -> torch.Tensor:
    """Sampled actions (..., h, w) -> the masks a scorer sees: pooled cells are upsampled."""
    if grid.scale == 0 or grid.mode == "grid":
        return actions
    lead = actions.shape[:-2]
    flat = actions.reshape(-1, 1, *actions.shape[-2:]).float()
    return F.interpolate(flat, size=size, mode="nearest").long().reshape(*lead, *size)


def sample_actions(logp: torch.Tensor, samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """K independent masks from per-location categoricals: (B, C, h, w) log-probs -> (B, K, h, w).

    Inverse-CDF sampling: one uniform number per sampled location, located in the
    channels-last CDF by binary search (Gumbel-max needs C numbers per location and an
    argmax across a strided axis: ~10x slower on CPU).
    """
    b, c, h, w = logp.shape
    cdf = logp.detach().exp().permute(0, 2, 3, 1).cumsum(-1)  # (B, h, w, C)
    u = torch.rand((b, h, w, samples), generator=generator, device=logp.device, dtype=cdf.dtype)
    # The class is the number of CDF steps below u; u < 1 <= cdf[..., -1] up to rounding, so
    # the last step is never counted and a last CDF value just under 1 cannot give class C.
    if c <= 32:
        steps = torch.zeros(u.shape, dtype=torch.uint8, device=u.device)
        for j in range(c - 1):
            steps += u >= cdf[..., j : j + 1]
        index = steps.long()
    else:
        index = torch.searchsorted(cdf[..., :-1].contiguous(), u, right=True)
    return index.permute(0, 3, 1, 2)


def action_log_probs(logp: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log pi(a) for each sampled action: (B, C, h, w) and (B, K, h, w) -> (B, K, h, w)."""
    k = actions.shape[1]
    return logp.unsqueeze(1).expand(-1, k, -1, -1, -1).gather(2, actions.unsqueeze(2)).squeeze(2)


def class_weights(adv: torch.Tensor, actions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Sum the K samples' advantages into a per-class map (B, C, h, w).

    ``sum_k A_k * log pi(a_k) == sum_c W_c * log pi(c)`` with ``W_c`` the summed advantage of
    the samples that chose class c: the loss and its backward pass then cost the same for
    any K (no (B, K, C, h, w) tensor in the graph).
    """
    b, _, h, w = actions.shape
    out = torch.zeros((b, num_classes, h, w), dtype=adv.dtype, device=adv.device)
    return out.scatter_add_(1, actions, adv)


class ScaleSchedule:
    """The PSR scale over training: step fractions, or move on when the reward plateaus.

    ``scales`` run coarse to fine and should end with 0 (full resolution). With ``fractions``,
    scale ``i`` starts at ``fractions[i-1] * total_steps``. With ``plateau``, the schedule moves
    on when the running mean reward has not improved by ``min_delta`` for ``patience`` steps.
    """

    def __init__(
        self,
        scales: list[int],
        total_steps: int,
        rule: str = "fractions",
        fractions: list[float] | None = None,
        patience: int = 300,
        min_delta: float = 0.002,
    ) -> None:
        if not scales:
            raise ValueError("--psr-scales needs at least one scale")
        if rule not in ("fractions", "plateau"):
            raise ValueError(f"--psr-rule must be 'fractions' or 'plateau', got {rule!r}")
        if fractions is None:
            fractions = [(i + 1) / len(scales) * 0.5 for i in range(len(scales) - 1)]
        if rule == "fractions" and len(fractions) != len(scales) - 1:
            raise ValueError(f"--psr-fractions needs {len(scales) - 1} values for {len(scales)} scales")
        self.scales, self.total, self.rule = list(scales), total_steps, rule
        self.fractions, self.patience, self.min_delta = list(fractions), patience, min_delta
        self.index, self.best, self.since_best, self.ema = 0, float("-inf"), 0, None

    @property
    def scale(self) -> int:
        return self.scales[self.index]

    def update(self, step: int, mean_reward: float) -> bool:
        """Advance after ``step``; returns True when the scale changed."""
        if self.index == len(self.scales) - 1:
            return False
        if self.rule == "fractions":
            if step + 1 >= self.fractions[self.index] * self.total:
                self.index += 1
                return True
            return False
        self.ema = mean_reward if self.ema is None else 0.98 * self.ema + 0.02 * mean_reward
        if self.ema > self.best + self.min_delta:
            self.best, self.since_best = self.ema, 0
        else:
            self.since_best += 1
        if self.since_best >= self.patience:
            self.index += 1
            self.best, self.since_best, self.ema = float("-inf"), 0, None
            return True
        return False

    def state_dict(self) -> dict:
        return {"index": self.index, "best": self.best, "since_best": self.since_best, "ema": self.ema}

    def load_state_dict(self, state: dict) -> None:
        self.index, self.best = state["index"], state["best"]
        self.since_best, self.ema = state["since_best"], state["ema"]
