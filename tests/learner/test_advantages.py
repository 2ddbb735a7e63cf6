"""PSD, baselines and SyncAN on hand-made tensors."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from learner.advantages import (
    baseline_advantages,
    likelihood_weights,
    pixel_advantages,
    psd_advantages,
    psd_from_differences,
    syncan,
)


def test_psd_two_samples_credits_only_disagreeing_cells():
    actions = torch.tensor([[[[0, 1], [2, 2]], [[0, 2], [2, 1]]]])  # (B=1, K=2, 2, 2)
    rewards = torch.tensor([[0.75, 0.25]])
    adv = psd_advantages(rewards, actions, num_classes=3)
    expected = torch.tensor([[[[0.0, 0.5], [0.0, 0.5]], [[0.0, -0.5], [0.0, -0.5]]]])
    torch.testing.assert_close(adv, expected)


def test_psd_three_samples_matches_formula_by_hand():
    # One cell, K = 3: a = (0, 0, 1), R = (1, 0.5, 0).
    actions = torch.tensor([0, 0, 1]).view(1, 3, 1, 1)
    rewards = torch.tensor([[1.0, 0.5, 0.0]])
    adv = psd_advantages(rewards, actions, num_classes=2).flatten()
    # A_0 = 1/2 * [(1-0.5)*0 + (1-0)*1] = 0.5; A_1 = 1/2 * [(0.5-1)*0 + (0.5-0)*1] = 0.25
    # A_2 = 1/2 * [(0-1)*1 + (0-0.5)*1] = -0.75
    torch.testing.assert_close(adv, torch.tensor([0.5, 0.25, -0.75]))


def test_psd_fast_path_equals_pairwise_definition():
    g = torch.Generator().manual_seed(0)
    actions = torch.randint(0, 4, (3, 5, 6, 7), generator=g)
    rewards = torch.rand((3, 5), generator=g)
    diff = rewards[:, :, None] - rewards[:, None, :]
    torch.testing.assert_close(psd_advantages(rewards, actions, 4), psd_from_differences(diff, actions))


def test_psd_from_a_preference():
    # A rater prefers sample 1 over sample 0: R_0 - R_1 = -1.
    actions = torch.tensor([[[[1, 0]], [[1, 1]]]])
    diff = torch.tensor([[[0.0, -1.0], [1.0, 0.0]]])
    adv = psd_from_differences(diff, actions)
    torch.testing.assert_close(adv, torch.tensor([[[[0.0, -1.0]], [[0.0, 1.0]]]]))


def test_psd_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2 samples"):
        psd_advantages(torch.ones(1, 1), torch.zeros(1, 1, 2, 2, dtype=torch.long), 2)


def test_summed_psd_gradient_equals_leave_one_out_for_two_samples():
    # Where the samples agree their PSD terms cancel in the summed gradient (DESIGN.md).
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    actions = torch.randint(0, 3, (1, 2, 4, 4), generator=torch.Generator().manual_seed(1))
    rewards = torch.tensor([[0.9, 0.2]])
    logp = torch.log_softmax(logits, 1)
    lp = logp.unsqueeze(1).expand(-1, 2, -1, -1, -1).gather(2, actions.unsqueeze(2)).squeeze(2)
    g_psd = torch.autograd.grad((psd_advantages(rewards, actions, 3) * lp).sum(), logits, retain_graph=True)[0]
    g_loo = torch.autograd.grad((baseline_advantages(rewards, (4, 4)) * lp).sum(), logits)[0]
    torch.testing.assert_close(g_psd, g_loo)


def test_baselines():
    r = torch.tensor([[1.0], [0.0]])
    torch.testing.assert_close(baseline_advantages(r, (1, 1)).flatten(), torch.tensor([0.5, -0.5]))
    r = torch.tensor([[1.0, 0.0, 0.5]])
    torch.testing.assert_close(baseline_advantages(r, (1, 1)).flatten(), torch.tensor([0.75, -0.75, 0.0]))


def test_pixel_advantages_respect_ignore_and_weights():
    r = torch.tensor([[[[1.0, 0.0, 1.0]]]])
    valid = torch.tensor([[[True, True, False]]])
    probs = torch.tensor([[[[0.5, 0.9, 0.01]]]])
    adv = pixel_advantages(r, valid, likelihood=True) * likelihood_weights(probs.log(), max_weight=20)
    torch.testing.assert_close(adv, torch.tensor([[[[2.0, 0.0, 0.0]]]]))
    torch.testing.assert_close(likelihood_weights(probs.log(), 20), torch.tensor([[[[2.0, 1 / 0.9, 20.0]]]]))
    # REINFORCE with K = 1: batch-mean baseline over the valid pixels only (mean 0.5).
    torch.testing.assert_close(pixel_advantages(r, valid), torch.tensor([[[[0.5, -0.5, 0.0]]]]))


def test_a_wrong_answer_carries_no_likelihood_weighted_advantage():
    """A rater's "wrong" (-1) under 1/pi(a) weighting moves mass to the likeliest class (the expected step on
    the logits is proportional to pi): it is dropped there, and --replay uses it instead."""
    r = torch.tensor([[[[1.0, -1.0, 0.0]]]])
    valid = torch.ones(1, 1, 3, dtype=torch.bool)
    torch.testing.assert_close(pixel_advantages(r, valid, likelihood=True), torch.tensor([[[[1.0, 0.0, 0.0]]]]))
    # what it would have done: the exact expectation over a ~ pi of the descent step -(1/pi(a)) grad_z log pi(a)
    # over the wrong classes a != y = 0, which is (C - 1) p - 1[c != y]
    p = torch.tensor([0.05, 0.8, 0.15])
    step = -sum((torch.eye(3)[a] - p) for a in (1, 2))
    torch.testing.assert_close(step, 2 * p - torch.tensor([0.0, 1.0, 1.0]))
    assert step[1] > step[0]  # the likeliest class, called wrong, gains on the true one


def test_likelihood_weighting_is_unbiased_for_cross_entropy_gradient():
    # E_a[r/pi(a) grad log pi(a)] = grad log pi(y): check the expectation exactly over all actions.
    logits = torch.tensor([0.3, -0.5, 1.0], requires_grad=True)  # pi(y) = 0.13, above the weight cap
    y = 1
    probs = torch.softmax(logits, 0)
    expected_grad = torch.zeros(3)
    for a in range(3):
        r = torch.tensor([[[[1.0 if a == y else 0.0]]]])
        weight = likelihood_weights(torch.log(probs[a]).view(1, 1, 1, 1), max_weight=20)
        adv = pixel_advantages(r, torch.ones(1, 1, 1, dtype=torch.bool), likelihood=True) * weight
        g = torch.autograd.grad(adv.flatten()[0] * torch.log_softmax(logits, 0)[a], logits)[0]
        expected_grad += probs[a].detach() * g
    ce_grad = torch.autograd.grad(torch.log_softmax(logits, 0)[y], logits)[0]
    torch.testing.assert_close(expected_grad, ce_grad)


def test_syncan_scales_by_std_of_nonzero_entries():
    adv = torch.tensor([0.0, 1.0, -1.0, 0.0, 3.0])
    out, std = syncan(adv)
    nz = torch.tensor([1.0, -1.0, 3.0])
    assert std == pytest.approx(nz.std(unbiased=False).item())
    torch.testing.assert_close(out, adv / nz.std(unbiased=False))
    assert out[0] == 0 and out[3] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _syncan_rank(rank: int, world: int, port: int, parts: list[torch.Tensor], results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        out, std = syncan(parts[rank].clone())
        results[rank] = (out, std)
    finally:
        dist.destroy_process_group()


def test_syncan_under_two_gloo_processes_equals_single_process():
    g = torch.Generator().manual_seed(3)
    full = torch.randn(8, 2, 5, 5, generator=g) * (torch.rand(8, 2, 5, 5, generator=g) > 0.4)
    parts = [full[:4], full[4:]]
    expected, expected_std = syncan(full.clone())
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_syncan_rank, args=(2, _free_port(), parts, results), nprocs=2, start_method="spawn")
        out0, std0 = results[0]
        out1, std1 = results[1]
    assert std0 == std1 == pytest.approx(expected_std, rel=1e-12)
    torch.testing.assert_close(torch.cat([out0, out1]), expected)
