"""Advantages: image-level baselines, PSD, pixel-level baselines, and SyncAN normalisation.

Shapes: B images, K samples per image, actions on an h x w grid.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def psd_from_differences(diff: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """PSD with reward differences given pair by pair (DESIGN.md section 2).

    ``diff[b, i, j] = R_i - R_j`` (antisymmetric); a human preference of sample i over j is
    ``+1`` (``-1`` the other way, ``0`` a tie). Returns (B, K, h, w):
    ``A_ic = 1/(K-1) * sum_{j != i} diff_ij * 1[a_ic != a_jc]``.
    """
    k = actions.shape[1]
    if k < 2:
        raise ValueError("PSD needs at least 2 samples per image (--samples >= 2)")
    disagree = (actions.unsqueeze(2) != actions.unsqueeze(1)).to(diff.dtype)  # (B, K, K, h, w)
    return (diff[..., None, None] * disagree).sum(2) / (k - 1)


def psd_advantages(rewards: torch.Tensor, actions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """PSD from scalar rewards (B, K): same result as ``psd_from_differences`` in O(B K C h w).

    With ``n_c(k)`` the number of samples choosing class k at cell c and ``S_c(k)`` their reward
    sum, ``sum_j (R_i - R_j) 1[a_jc == a_ic] = R_i n_c(a_ic) - S_c(a_ic)``, so neither the
    K x K pair tensor nor a one-hot over classes is built.
    """
    b, k = rewards.shape
    if k < 2:
        raise ValueError("PSD needs at least 2 samples per image (--samples >= 2)")
    r = rewards[:, :, None, None].expand(actions.shape)
    zeros = torch.zeros((b, num_classes, *actions.shape[2:]), dtype=rewards.dtype, device=rewards.device)
    count = zeros.scatter_add(1, actions, torch.ones_like(r))  # (B, C, h, w)
    rsum = zeros.scatter_add(1, actions, r)
    # (R_i n - S) over the samples that agree with sample i, n including i itself.
    same = r * count.gather(1, actions) - rsum.gather(1, actions)
    total = k * rewards - rewards.sum(1, keepdim=True)  # sum_j (R_i - R_j), (B, K)
    return (total[:, :, None, None] - same).div_(k - 1)


def baseline_advantages(rewards: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Image-level REINFORCE without PSD, broadcast to every cell of each sample.

    K = 1: batch-mean baseline. K >= 2: leave-one-out baseline over the image's other samples.
    """
    b, k = rewards.shape
    if k == 1:
        adv = rewards - rewards.mean()
    else:
        adv = rewards - (rewards.sum(1, keepdim=True) - rewards) / (k - 1)
    return adv[:, :, None, None].expand(b, k, *shape).clone()


def pixel_advantages(pixel_rewards: torch.Tensor, valid: torch.Tensor, likelihood: bool = False) -> torch.Tensor:
    """Pixel-level advantages (B, K, h, w) from rewards ``r`` in {0, 1}; ignored pixels get 0.

    REINFORCE: K = 1 subtracts the batch-mean pixel reward; K >= 2 subtracts the other
    samples' mean reward at the same pixel (zero where samples agree). Its expected gradient
    is ``grad pi(y)``, which vanishes where the policy is confidently wrong.

    ``likelihood``: no baseline, ``A = max(r, 0) / K``; once divided by pi(a) (`likelihood_weights`),
    its expectation over ``a ~ pi`` is cross-entropy's ``grad log pi(y)``: a correct pixel tells
    the learner the class, and the weight undoes how rarely it was sampled. A negative reward (a
    rater's "wrong", -1) is dropped here: weighted by 1 / pi(a), its expected step on the logits is
    ``(C - 1) pi_c - 1[c != y]``, so a wrong class that is already likely gains on the true one
    (measured: brush answers collapsed the policy to val mIoU 0.02-0.09, `rss bench feedback`).
    What "wrong" says is used by `--replay`, as the unlikelihood of the class it rules out.
    """
    k = pixel_rewards.shape[1]
    valid_k = valid.unsqueeze(1).expand_as(pixel_rewards)
    if likelihood:
        adv = pixel_rewards.clamp(min=0) / k
    elif k == 1:
        adv = pixel_rewards - pixel_rewards[valid_k].mean() if valid_k.any() else pixel_rewards
    else:
        adv = pixel_rewards - (pixel_rewards.sum(1, keepdim=True) - pixel_rewards) / (k - 1)
    return adv * valid_k


def likelihood_weights(log_prob: torch.Tensor, max_weight: float) -> torch.Tensor:
    """``1 / pi``, capped at ``max_weight`` to bound the variance of rare hits.

    Computed on the (B, C, h, w) policy and gathered at the actions afterwards: C values per
    cell instead of K.
    """
    return log_prob.detach().exp().clamp(min=1.0 / max_weight).reciprocal()


def syncan(adv: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, float]:
    """SyncAN: divide by the std of the non-zero advantages over the *global* batch.

    Count, sum and sum of squares are all-reduced across DDP ranks (when a process group is
    up), so every rank divides by the same number: the one a single process computes on the
    concatenated batch. Zero entries (agreeing pixels under PSD, ignored pixels) are left out,
    as they carry no signal. Advantages are scaled, not centred: PSD's zeros stay zero.
    """
    # float64 accumulators without a float64 copy of the advantages.
    stats = torch.stack([
        torch.count_nonzero(adv).to(torch.float64),
        adv.sum(dtype=torch.float64),
        (adv * adv).sum(dtype=torch.float64),
    ])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats)
    count, total, sq = stats.tolist()
    if count < 2:
        return adv, 0.0
    var = max(sq / count - (total / count) ** 2, 0.0)
    std = var**0.5
    if std <= eps:
        return adv, 0.0
    return adv / std, std
