"""`--replay N`: keep the last N answered images' pixel-level answers and learn from them again every step.

A human answer is the scarcest input of the system; on-policy RL uses it in one update and throws
it away. A pixel-level answer pins pixels down, whoever gave it (a rater's brush, an endpoint, the
ground truth): where it says the sampled class is right, that class *is* the label; where it says
wrong, that class is ruled out. So each step adds, over a batch drawn from the kept answers, the
supervised term

    L_replay = mean over answered pixels of  -log pi(a)         where r > 0   (a confirmed label)
                                             -log (1 - pi(a))   where r < 0   (a ruled-out class)

(the second is the "unlikelihood" of Welleck et al., ICLR 2020). Pixels with r = 0 (unmarked,
ignored) say nothing. It needs no behaviour log-probabilities: a label holds whichever policy
sampled it, so an answer stays right however old it is.

Image-level answers (scores, preferences) do not pin a pixel down; they are not kept here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rss_core.grid import ActionGrid


class AnswerReplay:
    """A ring of the last ``capacity`` answered images: image index, sampled classes and their rewards."""

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.capacity, self.device = capacity, device
        self.indices: torch.Tensor | None = None  # (N,) on the CPU, where the images are read
        self.actions: torch.Tensor | None = None  # (N, H, W) uint8
        self.rewards: torch.Tensor | None = None  # (N, H, W) int8 in {-1, 0, 1}
        self.next = 0  # where the next answer goes once the ring is full
        self.size = 0

    def add(self, indices: torch.Tensor, actions: torch.Tensor, pixel_rewards: torch.Tensor, valid: torch.Tensor,
            grid: ActionGrid, keep: torch.Tensor | None = None) -> None:
        """Keep each sample of a step's pixel-level answers: ``actions`` and ``pixel_rewards`` (B, K, h, w),
        ``valid`` (B, h, w); ``keep`` (B,): the images whose answers all arrived (None: all)."""
        if grid.scale != 0:
            raise ValueError("--replay keeps full-resolution pixel answers (--reward pixel, no PSR grid)")
        rows = torch.arange(len(indices)) if keep is None else keep.cpu().nonzero().flatten()
        on = rows.to(self.device)
        signs = torch.sign(pixel_rewards.to(self.device)[on]) * valid.to(self.device)[on].unsqueeze(1)
        new_indices = indices.cpu()[rows].repeat_interleave(actions.shape[1])
        new_actions = actions.to(self.device)[on].flatten(0, 1).to(torch.uint8)  # (B' * K, h, w)
        new_rewards = signs.flatten(0, 1).to(torch.int8)
        if self.indices is None:
            shape = new_actions.shape[1:]
            self.indices = torch.zeros(self.capacity, dtype=torch.long)
            self.actions = torch.zeros((self.capacity, *shape), dtype=torch.uint8, device=self.device)
            self.rewards = torch.zeros((self.capacity, *shape), dtype=torch.int8, device=self.device)
        assert self.actions is not None and self.rewards is not None
        n = min(new_indices.shape[0], self.capacity)  # more than fit: the newest
        slots = (self.next + torch.arange(n)) % self.capacity
        self.indices[slots] = new_indices[-n:]
        on = slots.to(self.device)
        self.actions[on], self.rewards[on] = new_actions[-n:], new_rewards[-n:]
        self.next, self.size = (self.next + n) % self.capacity, min(self.size + n, self.capacity)

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Slots of ``batch`` kept answers, drawn uniformly (with replacement) by ``generator`` (on the CPU)."""
        return torch.randint(self.size, (batch,), generator=generator)

    def loss(self, logits: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The supervised term over the answered pixels of ``slots``, given the policy's ``logits`` (n, C, H, W)
        for their images."""
        assert self.actions is not None and self.rewards is not None
        slots = slots.to(self.device)
        actions, rewards = self.actions[slots].long(), self.rewards[slots]
        logp = F.log_softmax(logits, dim=1).gather(1, actions.unsqueeze(1)).squeeze(1)  # (n, H, W)
        confirmed, ruled_out = rewards > 0, rewards < 0
        # log(1 - pi(a)) from log pi(a), clamped away from log(0) where the policy is sure of a wrong class
        log_not = torch.log1p(-logp.exp().clamp(max=1 - 1e-6))
        total = -(logp * confirmed).sum() - (log_not * ruled_out).sum()
        count = int(confirmed.sum() + ruled_out.sum())
        return total / max(count, 1), {"replay_pixels": count / max(len(slots), 1)}

    def state_dict(self) -> dict:
        if self.indices is None:
            return {}
        return {"indices": self.indices.cpu(), "actions": self.actions.cpu(), "rewards": self.rewards.cpu(),
                "next": self.next, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.indices, self.actions = state["indices"], state["actions"].to(self.device)
        self.rewards, self.next, self.size = state["rewards"].to(self.device), state["next"], state["size"]

