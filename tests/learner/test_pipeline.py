"""The pipelined loop's update: PPO's clipped surrogate against the on-policy loss it replaces."""

from __future__ import annotations

import torch

from learner.pipeline import clipped_surrogate
from learner.policy import class_weights, sample_actions


def _policy(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 5, 6, 6, generator=gen, requires_grad=True)
    logp = torch.log_softmax(logits, 1)
    actions = sample_actions(logp.detach(), 4, gen)
    adv = torch.randn(2, 4, 6, 6, generator=gen)
    return logits, actions, adv


def test_on_policy_the_surrogate_has_the_policy_gradient() -> None:
    """Ratio 1 (behaviour = current policy): same gradient as the folded loss of the synchronous loop."""
    logits, actions, adv = _policy(0)
    logp = torch.log_softmax(logits, 1)
    loss, clipfrac = clipped_surrogate(logp, actions, logp.gather(1, actions).detach(), adv, 0.2)
    (grad,) = torch.autograd.grad(loss, logits, retain_graph=True)
    folded = -(class_weights(adv, actions, 5) * logp).sum() / adv.numel()
    (expected,) = torch.autograd.grad(folded, logits)
    torch.testing.assert_close(grad, expected)
    assert clipfrac == 0.0


def test_ratios_beyond_the_clip_stop_pushing() -> None:
    """Where the policy already moved past 1 + eps in the advantage's direction, the gradient is zero."""
    logits, actions, adv = _policy(1)
    logp = torch.log_softmax(logits, 1)
    taken = logp.gather(1, actions).detach()
    behaviour = torch.where(adv > 0, taken - 1.0, taken + 1.0)  # ratio e (> 1.2) where A > 0, 1/e where A < 0
    loss, clipfrac = clipped_surrogate(logp, actions, behaviour, adv, 0.2)
    (grad,) = torch.autograd.grad(loss, logits)
    assert clipfrac == 1.0
    assert torch.count_nonzero(grad) == 0
