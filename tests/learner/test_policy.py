"""PSR's mapping between coarse actions and full-size masks, sampling, and the scale schedule."""

from __future__ import annotations

import torch

from learner.policy import ScaleSchedule, action_log_probs, action_logits, class_weights, sample_actions
from rss_core.grid import ActionGrid, grid_labels, masks_for_scoring, random_grid


def test_grid_mode_reads_the_lattice_at_its_offset():
    logits = torch.arange(2 * 8 * 8, dtype=torch.float32).view(1, 2, 8, 8)
    grid = ActionGrid(scale=2, mode="grid", offset=(1, 3))
    picked = action_logits(logits, grid)
    assert picked.shape == (1, 2, 2, 2)
    # stride 4: rows 1 and 5, columns 3 and 7 of each channel.
    torch.testing.assert_close(picked[0, 0], torch.tensor([[11.0, 15.0], [43.0, 47.0]]))
    labels = torch.arange(64).view(1, 8, 8)
    torch.testing.assert_close(grid_labels(labels, grid)[0], torch.tensor([[11, 15], [43, 47]]))
    # Grid masks are scored as they are, against the lattice labels.
    actions = torch.tensor([[[[1, 0], [0, 1]]]])
    assert masks_for_scoring(actions, grid, (8, 8)) is actions


def test_pool_mode_averages_cells_and_upsamples_nearest():
    logits = torch.zeros(1, 2, 4, 4)
    logits[0, 1, :2, :2] = 4.0  # top-left cell favours class 1
    grid = ActionGrid(scale=2, mode="pool")
    pooled = action_logits(logits, grid)
    torch.testing.assert_close(pooled[0, 1], torch.tensor([[4.0, 0.0], [0.0, 0.0]]))
    actions = torch.tensor([[[[1, 0], [0, 2]]]])  # (B=1, K=1, 2, 2)
    full = masks_for_scoring(actions, grid, (4, 4))
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]])
    torch.testing.assert_close(full[0, 0], expected)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    assert grid_labels(labels, grid) is labels  # pool scores at full size


def test_full_scale_is_identity():
    logits = torch.randn(2, 3, 5, 5)
    assert action_logits(logits, ActionGrid(0)) is logits


def test_random_grid_offsets_stay_inside_the_stride():
    g = torch.Generator().manual_seed(0)
    offsets = {random_grid(4, "grid", 64, 64, g).offset for _ in range(200)}
    assert all(0 <= oy < 16 and 0 <= ox < 16 for oy, ox in offsets)
    assert len(offsets) > 50


def test_sampling_follows_the_policy_and_log_probs_gather():
    logp = torch.log_softmax(torch.tensor([0.0, 1.0, 2.0]), 0).view(1, 3, 1, 1).expand(1, 3, 60, 60).contiguous()
    actions = sample_actions(logp, samples=5, generator=torch.Generator().manual_seed(0))
    assert actions.shape == (1, 5, 60, 60)
    freq = torch.bincount(actions.flatten(), minlength=3).float() / actions.numel()
    torch.testing.assert_close(freq, logp[0, :, 0, 0].exp(), atol=0.01, rtol=0)
    lp = action_log_probs(logp, actions)
    torch.testing.assert_close(lp, logp[0, :, 0, 0][actions])


def test_schedule_by_fractions_and_plateau():
    s = ScaleSchedule([8, 16, 0], total_steps=100, fractions=[0.2, 0.5])
    seen = []
    for step in range(100):
        seen.append(s.scale)
        s.update(step, 0.0)
    assert seen[19] == 8 and seen[20] == 16 and seen[49] == 16 and seen[50] == 0
    p = ScaleSchedule([8, 0], total_steps=1000, rule="plateau", patience=5, min_delta=0.01)
    for step in range(30):
        p.update(step, 0.1 + 0.05 * step)  # improving: stays coarse
    assert p.scale == 8
    changed = [p.update(30 + i, 0.1) for i in range(200)]
    assert p.scale == 0 and changed.count(True) == 1
    restored = ScaleSchedule([8, 0], total_steps=1000, rule="plateau")
    restored.load_state_dict(p.state_dict())
    assert restored.scale == 0


def test_class_weights_give_the_same_loss_and_gradient_as_per_sample_terms():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=g, requires_grad=True)
    logp = torch.log_softmax(logits, 1)
    actions = torch.randint(0, 3, (2, 6, 4, 5), generator=g)
    adv = torch.randn(2, 6, 4, 5, generator=g)
    direct = (adv * action_log_probs(logp, actions)).sum()
    folded = (class_weights(adv, actions, 3) * logp).sum()
    torch.testing.assert_close(direct, folded)
    g1 = torch.autograd.grad(direct, logits, retain_graph=True)[0]
    g2 = torch.autograd.grad(folded, logits)[0]
    torch.testing.assert_close(g1, g2)
