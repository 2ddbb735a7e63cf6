"""The policy: K sampled masks per image from per-pixel categoricals, on a PSR action grid
(`rss_core.grid` says where the actions live)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rss_core.grid import ActionGrid, lattice


def action_logits(logits: torch.Tensor, grid: ActionGrid) -> torch.Tensor:
    """(B, C, H, W) logits -> (B, C, h, w) logits of the actions on ``grid``."""
    if grid.scale == 0:
        return logits
    if grid.mode == "pool":
        return F.adaptive_avg_pool2d(logits, grid.scale)
    return lattice(logits, grid)


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
