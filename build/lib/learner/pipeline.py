"""The pipelined remote loop: sample and post the next batch while earlier rewards are in flight.

With `--max-inflight N` the learner keeps up to N batches posted and not yet applied. Each
iteration samples a batch with the current policy (no gradient) and posts it, then, once more
than N batches are waiting, applies the oldest: a forward pass with gradient on its images
and the PPO-style clipped surrogate (Schulman et al. 2017), because its masks were sampled by
an older policy (the behaviour policy, whose log-probs of the sampled actions are kept):

    ratio = pi_theta(a) / pi_behaviour(a),  loss = -mean(min(ratio * A, clip(ratio, 1-eps, 1+eps) * A))

At ratio 1 this is exactly the on-policy gradient. A batch more than `--max-staleness` policy
versions old when its rewards arrive is dropped and counted, never applied.

The batches in flight are part of a checkpoint (`state_dict`: their image indices, grid,
sampled actions, behaviour log-probs and episode ids; the images are re-read on resume), so
a resumed run waits for their rewards again instead of losing them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from learner.config import TrainArgs
from learner.policy import action_logits, sample_actions
from learner.remote import Pending, RemoteRewardSource
from learner.rewards import Episodes
from rss_core.grid import ActionGrid


@dataclass
class Inflight:
    step: int
    indices: torch.Tensor
    images: torch.Tensor
    grid: ActionGrid
    actions: torch.Tensor  # (B, K, h, w)
    behaviour: torch.Tensor  # (B, K, h, w) log-probs of the actions when sampled
    pending: Pending


class Pipeline:
    def __init__(self, args: TrainArgs, source: RemoteRewardSource) -> None:
        self.args, self.source = args, source
        self.queue: deque[Inflight] = deque()

    def sample_and_post(self, model: torch.nn.Module, step: int, indices: torch.Tensor, images: torch.Tensor,
                        grid: ActionGrid, generator: torch.Generator) -> None:
        with torch.no_grad():
            logits = model(images)
            logp = F.log_softmax(action_logits(logits, grid), dim=1)
            actions = sample_actions(logp, self.args.resolved_samples(), generator)
            behaviour = logp.gather(1, actions)
        self.source.policy_version = step
        pending = self.source.post(Episodes(indices, actions, grid, tuple(logits.shape[-2:]), self.args.reward))
        self.queue.append(Inflight(step, indices, images, grid, actions, behaviour, pending))

    def state_dict(self) -> list[dict]:
        """The batches posted and not yet applied, as a checkpoint keeps them."""
        return [{"step": item.step, "indices": item.indices.cpu(), "actions": item.actions.to(torch.uint8).cpu(),
                 "behaviour": item.behaviour.cpu(), "grid": [item.grid.scale, item.grid.mode, list(item.grid.offset)],
                 "episodes": sorted(item.pending.ids, key=item.pending.ids.__getitem__)} for item in self.queue]

    def load_state_dict(self, state: list[dict], images_of: Callable[[torch.Tensor], torch.Tensor],
                        device: torch.device) -> None:
        """Wait again for the rewards of the batches a checkpoint recorded in flight."""
        for saved in state:
            scale, mode, offset = saved["grid"]
            actions = saved["actions"].to(device).long()
            pending = self.source.restore(saved["episodes"], tuple(actions.shape), device, saved["step"])
            self.queue.append(Inflight(saved["step"], saved["indices"], images_of(saved["indices"]),
                                       ActionGrid(scale, mode, tuple(offset)), actions,
                                       saved["behaviour"].to(device), pending))

    def due(self, last: bool) -> bool:
        """A batch should be applied now: more than --max-inflight wait, or the run is ending."""
        return len(self.queue) > self.args.max_inflight or (last and bool(self.queue))

    def apply_oldest(self, model: torch.nn.Module, step: int, advantages) -> tuple[torch.Tensor, dict] | None:
        """The clipped surrogate loss of the oldest batch (None when it was dropped as too stale)."""
        item = self.queue.popleft()
        staleness = step - item.step
        fresh = staleness <= self.args.max_staleness
        rewards = self.source.collect(item.pending, apply=fresh)  # collected either way: acknowledged, counted
        if not fresh:
            return None
        logp = F.log_softmax(action_logits(model(item.images), item.grid), dim=1)
        adv, stats = advantages(self.args, logp, item.actions, rewards)
        loss, clipfrac = clipped_surrogate(logp, item.actions, item.behaviour, adv, self.args.ppo_clip)
        return loss, {**stats, "clipfrac": clipfrac, "staleness": staleness}


def clipped_surrogate(logp: torch.Tensor, actions: torch.Tensor, behaviour: torch.Tensor, adv: torch.Tensor,
                      eps: float) -> tuple[torch.Tensor, float]:
    """PPO's clipped surrogate loss over sampled actions, and the fraction of clipped ratios.

    ``logp`` (B, C, h, w) is the current policy, ``actions`` and ``behaviour`` (B, K, h, w) the
    sampled classes and their log-probs when sampled, ``adv`` (B, K, h, w) their advantages.
    """
    ratio = (logp.gather(1, actions) - behaviour).exp()
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)
    with torch.no_grad():
        clipfrac = float(((ratio - 1).abs() > eps).float().mean())
    return -surrogate.sum() / adv.numel(), clipfrac
