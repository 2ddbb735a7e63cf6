"""`--replay`: kept pixel-level answers and preferences, learned from again every step; `--pairs region`."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from learner.checkpoint import load_checkpoint
from learner.config import TrainArgs
from learner.replay import AnswerReplay, PairReplay, pair_loss, point_queries, preferred, region_pairs, trusted
from learner.rewards import Episodes, LocalRewardSource, Rewards
from learner.train import hesitant_images, train
from rss_core.grid import ActionGrid

TINY = {"train_size": 12, "val_size": 4, "shapes_size": 32, "batch_size": 4, "eval_every": 3, "progress": False,
        "threads": 1, "width": 4, "device": "cpu"}


def test_a_confirmed_pixel_is_a_label_and_a_wrong_one_rules_its_class_out() -> None:
    replay = AnswerReplay(4, torch.device("cpu"))
    actions = torch.tensor([[[[0, 1], [1, 0]]]])  # (B=1, K=1, 2, 2)
    rewards = torch.tensor([[[[1.0, -1.0], [0.0, 1.0]]]])  # confirmed, wrong, unmarked, confirmed
    valid = torch.tensor([[[True, True], [True, False]]])  # the last pixel is ignore: says nothing
    replay.add(torch.tensor([7]), actions, rewards, valid, ActionGrid(0))
    assert replay.size == 1 and int(replay.indices[0]) == 7
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1, 0, 1] = math.log(3.0)  # pi(class 1) = 0.75 at the wrong pixel
    loss, stats = replay.loss(logits, torch.tensor([0]))
    # -log pi(0) = log 2 at the confirmed pixel; -log(1 - 0.75) = log 4 at the wrong one; mean of the two
    assert float(loss) == pytest.approx((math.log(2) + math.log(4)) / 2, rel=1e-5)
    assert stats["replay_pixels"] == 2


def test_a_balanced_replay_gives_the_ruled_out_pixels_their_own_mean() -> None:
    # three confirmed pixels of class 0 and one ruled out: unbalanced, the "no" is a quarter of the loss;
    # balanced, the mean of the confirmations plus the mean of the "no"s
    actions = torch.zeros(1, 1, 2, 2, dtype=torch.long)
    rewards = torch.tensor([[[[1.0, 1.0], [1.0, -1.0]]]])
    logits = torch.zeros(1, 2, 2, 2)  # pi = 1/2 everywhere
    losses = []
    for balance in (False, True):
        replay = AnswerReplay(4, torch.device("cpu"), balance=balance)
        replay.add(torch.tensor([0]), actions, rewards, torch.ones(1, 2, 2, dtype=torch.bool), ActionGrid(0))
        losses.append(float(replay.loss(logits, torch.tensor([0]))[0]))
    assert losses[0] == pytest.approx(math.log(2), rel=1e-5)  # (3 log 2 + log 2) / 4
    assert losses[1] == pytest.approx(2 * math.log(2), rel=1e-5)  # log 2 + log 2


def test_a_brush_answer_is_trusted_away_from_the_edges_of_the_mask_and_of_the_strokes() -> None:
    # the mask shown: class 1 in a 4x4 square; the rater painted columns 6 and 7 wrong (a stroke whose
    # left column spilled onto right pixels) and missed the thin strip of errors along the square's edge
    mask = torch.zeros(1, 8, 8, dtype=torch.uint8)
    mask[0, 2:6, 2:6] = 1
    signs = torch.ones(1, 8, 8, dtype=torch.int8)
    signs[0, :, 6:] = -1
    signs[0, 0, 0] = 0  # ignore: says nothing, whatever the margin
    kept = trusted(mask, signs, 1)[0]
    assert torch.equal(trusted(mask, signs, 0), signs)  # margin 0: every pixel as answered
    assert kept[0, 0] == 0 and kept[1, 0] == 1 and kept[7, 4] == 1  # far from every edge: a label
    assert kept[1:7, 1:7][kept[1:7, 1:7] != 0].tolist() == [1, 1, 1, 1]  # the square's core only, no rim
    assert (kept[:, 5] == 0).all()  # next to a stroke: not confirmed
    assert (kept[:, 6] == 0).all() and (kept[:, 7] == -1).all()  # the stroke's edge is not ruled out, its core is
    replay = AnswerReplay(2, torch.device("cpu"), margin=1)
    replay.add(torch.tensor([3]), mask.view(1, 1, 8, 8), signs.view(1, 1, 8, 8).float(),
               (signs != 0).view(1, 8, 8), ActionGrid(0))
    assert torch.equal(replay.rewards[0], kept)


def test_a_class_brush_answer_is_a_label_inside_its_strokes() -> None:
    # the mask shown says background (0) everywhere; the rater painted columns 2..7 wrong, naming class 3
    # in columns 2..4 and class 5 in columns 5..7; row 0 was painted with no class named (an old answer)
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    signs = torch.ones(1, 1, 8, 8)
    signs[..., 2:] = -1
    named = torch.full((1, 1, 8, 8), 255, dtype=torch.uint8)
    named[..., 1:, 2:5] = 3
    named[..., 1:, 5:] = 5
    replay = AnswerReplay(2, torch.device("cpu"), margin=1)
    replay.add(torch.tensor([0]), mask, signs, torch.ones(1, 8, 8, dtype=torch.bool), ActionGrid(0), named=named)
    actions, rewards = replay.actions[0], replay.rewards[0]
    assert rewards[4, 3] == 1 and actions[4, 3] == 3  # inside a stroke of one class: that class is the label
    assert rewards[4, 6] == 1 and actions[4, 6] == 5
    # where two named classes meet, neither is a label; background is still ruled out there
    assert rewards[4, 4] == rewards[4, 5] == -1 and actions[4, 4] == actions[4, 5] == 0
    assert rewards[4, 2] == 0 and rewards[4, 1] == 0  # the stroke's edge, and a confirmed pixel beside it
    assert rewards[0, 4] == -1 and actions[0, 4] == 0  # no class named: only background ruled out
    assert rewards[4, 0] == 1 and actions[4, 0] == 0  # far from every stroke: background confirmed


def test_the_ring_keeps_the_newest_answers() -> None:
    replay = AnswerReplay(3, torch.device("cpu"))
    for i in range(5):
        replay.add(torch.tensor([i]), torch.zeros(1, 1, 2, 2, dtype=torch.long), torch.ones(1, 1, 2, 2),
                   torch.ones(1, 2, 2, dtype=torch.bool), ActionGrid(0))
    assert replay.size == 3 and sorted(replay.indices.tolist()) == [2, 3, 4]
    with pytest.raises(ValueError, match="full-resolution"):
        replay.add(torch.tensor([0]), torch.zeros(1, 1, 2, 2, dtype=torch.long), torch.ones(1, 1, 2, 2),
                   torch.ones(1, 2, 2, dtype=torch.bool), ActionGrid(8))


def straight_and_resumed(cfg: TrainArgs, tmp_path) -> tuple[dict, dict, dict]:
    """``cfg`` (6 steps) trained straight and, in a second folder, 3 steps then resumed to 6: the straight
    run's final.json and both checkpoints, whose weights must be equal (the kept answers resume exactly)."""
    final = train(cfg)
    assert 0 <= final["val_miou"] <= 1
    split = dataclasses.replace(cfg, out=str(tmp_path / "split"), steps=3)
    train(split)
    train(dataclasses.replace(split, steps=6, resume=True))
    a, b = (load_checkpoint(tmp_path / name / "checkpoint.pt") for name in ("straight", "split"))
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    return final, a, b


def test_replay_trains_and_resumes_exactly(tmp_path) -> None:
    """The kept answers are part of the checkpoint: a resumed run takes the very same steps."""
    cfg = TrainArgs(**TINY, reward="pixel", replay=64, replay_batch=4, steps=6, checkpoint_every=3,
                    out=str(tmp_path / "straight"))
    final, a, b = straight_and_resumed(cfg, tmp_path)
    assert a["replay"]["size"] == b["replay"]["size"] == 6 * 4  # every answer of every step kept
    without = train(dataclasses.replace(cfg, replay=0, out=str(tmp_path / "without")))
    assert without["val_miou"] != final["val_miou"] or not all(
        torch.equal(t, load_checkpoint(tmp_path / "without" / "checkpoint.pt")["model"][n])
        for n, t in a["model"].items())  # the replayed term changed the training


def test_a_preference_is_a_bradley_terry_term_where_the_two_masks_differ() -> None:
    actions = torch.tensor([[[[0, 1], [2, 2]], [[0, 2], [1, 2]]],  # pair 0-1 of image 0: differ at 2 pixels
                            [[[0, 0], [0, 0]], [[1, 1], [1, 1]]]])  # image 1: a tie, says nothing
    rewards = torch.tensor([[0.0, 1.0], [0.5, 0.5]])  # image 0: the rater preferred mask 1
    rows, win, lose = preferred(actions, rewards)
    assert rows.tolist() == [0] and torch.equal(win[0], actions[0, 1]) and torch.equal(lose[0], actions[0, 0])
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1, 0, 1] = math.log(3.0)  # pi(1) = 3 pi(2) where the loser says 1 and the winner 2
    loss, pixels = pair_loss(logits, win, lose)
    # -log(pi(w) / (pi(w) + pi(l))): log 4 where the policy favours the loser 3:1, log 2 where it is even
    assert pixels == 2 and float(loss) == pytest.approx((math.log(4) + math.log(2)) / 2, rel=1e-5)
    replay = PairReplay(8, torch.device("cpu"))
    replay.add(torch.tensor([3, 9]), actions, rewards, ActionGrid(0))
    assert replay.size == 1 and int(replay.indices[0]) == 3  # the tie is not kept
    assert float(replay.loss(logits, torch.tensor([0]))[0]) == pytest.approx(float(loss))
    logits.requires_grad_(True)
    pair_loss(logits, win, lose)[0].backward()
    grad = logits.grad[0]
    assert grad[1, 0, 1] > 0 and grad[2, 0, 1] < 0  # the loser's class down, the winner's up
    assert abs(float(grad[0, 0, 1])) < 1e-6  # and no other class moves (up to rounding)
    assert (grad[:, 0, 0] == 0).all() and (grad[:, 1, 1] == 0).all()  # where the masks agree, nothing


def test_a_best_of_n_answer_is_n_minus_one_preferences_for_the_chosen_mask() -> None:
    masks = torch.arange(2 * 3 * 4).reshape(2, 3, 2, 2) % 3  # (B=2, K=3, 2, 2): distinct masks
    rewards = torch.tensor([[0.0, 1.0, 0.0],  # image 0: mask 1 chosen
                            [0.5, 0.0, 0.5]])  # image 1: two raters split between masks 0 and 2
    rows, win, lose = preferred(masks, rewards, best=True)
    assert rows.tolist() == [0, 0, 1]  # two losers for image 0; for image 1 only the unchosen mask
    assert torch.equal(win[0], masks[0, 1]) and torch.equal(win[1], masks[0, 1])
    assert torch.equal(lose[0], masks[0, 0]) and torch.equal(lose[1], masks[0, 2])
    assert torch.equal(win[2], masks[1, 0]) and torch.equal(lose[2], masks[1, 1])  # a split names the first best
    kept = preferred(masks, rewards, keep=torch.tensor([False, True]), best=True)[0]
    assert kept.tolist() == [1]  # an image whose answers did not all arrive says nothing
    replay = PairReplay(8, torch.device("cpu"))
    replay.add(torch.tensor([4, 5]), masks, rewards, ActionGrid(0), best=True)
    assert replay.size == 3 and replay.indices[:3].tolist() == [4, 4, 5]


def test_a_region_pair_switches_one_hesitant_region_to_its_second_class() -> None:
    logits = torch.zeros(2, 3, 12, 12)
    logits[:, 0] = 3.0  # class 0, sure, everywhere
    logits[0, 2, 2:6, 3:7] = 2.9  # image 0: a hesitant 4 x 4 block whose second class is 2
    logits[0, 1, 9:11, 9:11] = 2.9  # and a far-away hesitant block (second class 1): not the same question
    pairs = region_pairs(logits.log_softmax(1), 9, torch.Generator().manual_seed(1))
    assert pairs.shape == (2, 2, 12, 12) and (pairs[:, 0] == 0).all()  # the first mask is the most likely one
    switched = pairs[0, 1] != 0
    assert (switched.sum() == 16 and (pairs[0, 1][switched] == 2).all()) or (
        switched.sum() == 4 and (pairs[0, 1][switched] == 1).all())  # one block, whole, to its second class
    assert (pairs[1, 1] != 0).sum() == 1  # nowhere hesitant: one pixel is the question


def test_a_best_of_k_region_question_switches_another_region_in_each_variant() -> None:
    logits = torch.zeros(1, 3, 12, 12)
    logits[:, 0] = 3.0
    logits[0, 2, 1:4, 1:4] = 2.9  # three hesitant blocks, far apart, each its own question
    logits[0, 1, 8:11, 1:4] = 2.9
    logits[0, 2, 8:11, 8:11] = 2.9
    masks = region_pairs(logits.log_softmax(1), 5, torch.Generator().manual_seed(0), k=4)
    assert masks.shape == (1, 4, 12, 12) and (masks[0, 0] == 0).all()  # the most likely mask first
    blocks = {(1, 1, 2): 0, (8, 1, 1): 0, (8, 8, 2): 0}
    for variant in masks[0, 1:]:
        switched = (variant != 0).nonzero()
        assert len(switched) == 9  # one whole block, nothing else
        y, x = switched.min(0).values.tolist()
        blocks[(y, x, int(variant[y, x]))] += 1  # switched to that block's second class
    assert list(blocks.values()) == [1, 1, 1]  # centres drawn without replacement: three different regions
    pairs = region_pairs(logits.log_softmax(1), 5, torch.Generator().manual_seed(0))
    assert torch.equal(pairs, region_pairs(logits.log_softmax(1), 5, torch.Generator().manual_seed(0), k=2))


class FixedLogits(torch.nn.Module):
    """A 'model' whose logits for image i are ``logits[i]``, whatever the pixels (images carry their index)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits[images[:, 0, 0, 0].long()]


def test_the_image_pool_asks_about_the_images_the_policy_hesitates_about() -> None:
    logits = torch.zeros(6, 3, 8, 8)
    logits[:, 0] = 5.0  # sure of class 0...
    logits[1, 1, :4] = 5.0  # ...but images 1 and 4 tie classes 0 and 1 on half of their pixels
    logits[4, 1, :2] = 5.0  # (image 4 on a quarter)
    images = torch.arange(6.0).view(6, 1, 1, 1).expand(6, 3, 8, 8)
    indices = torch.tensor([10, 11, 12, 13, 14, 15])
    model = FixedLogits(logits)
    chosen, kept = hesitant_images(model, indices, images, 2)
    assert chosen.tolist() == [11, 14] and torch.equal(kept, images[[1, 4]])  # the batch, in draw order
    assert model.training  # left as it was
    with pytest.raises(ValueError, match="--image-pool must be >= 1"):
        TrainArgs(**TINY, image_pool=0).validate()
    with pytest.raises(ValueError, match="--image-pool needs --objective rl"):
        TrainArgs(**TINY, image_pool=2, objective="ce").validate()


def test_point_questions_go_where_the_policy_hesitates() -> None:
    logits = torch.zeros(2, 3, 16, 16)
    logits[:, 0] = 6.0  # sure of class 0 everywhere...
    logits[:, 1, 4:6, 4:8] = 6.0  # ...but for 8 pixels where classes 0 and 1 tie
    logp = logits.log_softmax(1)
    query = point_queries(logp, 8, "uncertain", torch.Generator().manual_seed(0))
    assert query.shape == (2, 16, 16) and (query.sum((1, 2)) == 8).all()  # 8 distinct pixels an image
    assert query[:, 4:6, 4:8].all()  # exactly the hesitant ones: certain pixels weigh ~1e-6 ** 4 each
    anywhere = point_queries(logp, 8, "random", torch.Generator().manual_seed(0))
    assert (anywhere.sum((1, 2)) == 8).all() and not anywhere[:, 4:6, 4:8].all()


class YesNo(LocalRewardSource):
    """Ground truth as a rater's point answers: +1 yes, -1 no where asked (the GT source's wrong is 0)."""

    def score(self, episodes: Episodes) -> Rewards:
        truth = super().score(episodes)
        assert truth.pixel is not None and truth.valid is not None
        return Rewards(pixel=(2 * truth.pixel - 1) * truth.valid.unsqueeze(1), valid=truth.valid)


def test_point_verification_trains_on_the_asked_pixels_only(tmp_path) -> None:
    cfg = TrainArgs(**TINY, reward="pixel", samples=1, points=5, replay=64, replay_batch=4, replay_updates=1,
                    steps=3, checkpoint_every=3, out=str(tmp_path / "points"))
    train(cfg, lambda args, dataset, device: YesNo(dataset, device, args.metric))
    kept = load_checkpoint(tmp_path / "points" / "checkpoint.pt")["replay"]
    answered = (kept["rewards"][: kept["size"]] != 0).sum((1, 2))
    assert kept["size"] == 3 * 4 and (answered == 5).all()  # 5 answers a kept image, nothing else


def test_region_pairs_train_from_preferences_and_resume_exactly(tmp_path) -> None:
    cfg = TrainArgs(**TINY, reward="image", samples=2, psr=False, pairs="region", replay=64, replay_batch=4,
                    replay_updates=2, steps=6, checkpoint_every=3, out=str(tmp_path / "straight"))
    _, a, b = straight_and_resumed(cfg, tmp_path)
    assert 0 < a["replay"]["size"] == b["replay"]["size"] <= 6 * 4  # one pair per image, ties left out


def test_replay_updates_learn_more_from_the_same_answers(tmp_path) -> None:
    """--replay-updates adds updates on kept answers alone: the same rewards, a different model."""
    cfg = TrainArgs(**TINY, reward="pixel", replay=64, replay_batch=4, steps=4, first_mask="mode",
                    out=str(tmp_path / "once"))
    once = train(cfg)
    more = train(dataclasses.replace(cfg, replay_updates=3, out=str(tmp_path / "more")))
    assert once["rewards"] == more["rewards"] or once["val_miou"] != more["val_miou"]
    a, b = (load_checkpoint(tmp_path / n / "checkpoint.pt") for n in ("once", "more"))
    assert a["replay"]["size"] == b["replay"]["size"] == 4 * 4
    assert not all(torch.equal(t, b["model"][n]) for n, t in a["model"].items())


@pytest.mark.parametrize(("changes", "flag"), [
    ({"reward": "image"}, "it needs --no-psr and an even --samples"),
    ({"reward": "image", "samples": 3, "psr": False}, "an even --samples .* or --human-task best"),
    ({"reward": "image", "samples": 9, "psr": False, "human_task": "best"}, "--samples must be 2 to 8, got 9"),
    ({"replay_batch": 0}, "--replay-batch >= 1"),
    ({"replay_margin": -1}, "--replay-margin must be >= 0"),
    ({"replay_margin": 1, "points": 4}, "--replay-margin trusts brush answers"),
    ({"replay_balance": True, "reward": "image", "samples": 2, "psr": False}, "--replay-balance weighs"),
    ({"replay_margin": 1, "reward": "image", "samples": 2, "psr": False}, "it needs --reward pixel"),
    ({"replay": 0, "replay_updates": 2}, "--replay-updates needs --replay"),
    ({"reward": "image", "samples": 2, "psr": False, "first_mask": "mode"}, "--first-mask mode needs --reward pixel"),
    ({"reward": "image", "samples": 4, "psr": False, "pairs": "region"}, "--pairs region needs"),
    ({"reward": "image", "samples": 9, "psr": False, "pairs": "region", "human_task": "best"}, "2 to 8"),
    ({"pairs": "region"}, "--pairs region needs --reward image"),
    ({"points": 4, "samples": 2}, "--points needs --reward pixel and --samples 1"),
])
def test_replay_flags_are_checked(changes: dict, flag: str) -> None:
    with pytest.raises(ValueError, match=flag):
        TrainArgs(**TINY, **{"reward": "pixel", "replay": 8, **changes}).validate()
