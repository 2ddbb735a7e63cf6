"""`--replay`: kept pixel-level answers, learned from again every step."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from learner.checkpoint import load_checkpoint
from learner.config import TrainArgs
from learner.replay import AnswerReplay
from learner.train import train
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


def test_the_ring_keeps_the_newest_answers() -> None:
    replay = AnswerReplay(3, torch.device("cpu"))
    for i in range(5):
        replay.add(torch.tensor([i]), torch.zeros(1, 1, 2, 2, dtype=torch.long), torch.ones(1, 1, 2, 2),
                   torch.ones(1, 2, 2, dtype=torch.bool), ActionGrid(0))
    assert replay.size == 3 and sorted(replay.indices.tolist()) == [2, 3, 4]
    with pytest.raises(ValueError, match="full-resolution"):
        replay.add(torch.tensor([0]), torch.zeros(1, 1, 2, 2, dtype=torch.long), torch.ones(1, 1, 2, 2),
                   torch.ones(1, 2, 2, dtype=torch.bool), ActionGrid(8))


def test_replay_trains_and_resumes_exactly(tmp_path) -> None:
    """The kept answers are part of the checkpoint: a resumed run takes the very same steps."""
    cfg = TrainArgs(**TINY, reward="pixel", replay=64, replay_batch=4, steps=6, checkpoint_every=3,
                    out=str(tmp_path / "straight"))
    final = train(cfg)
    assert 0 <= final["val_miou"] <= 1
    split = dataclasses.replace(cfg, out=str(tmp_path / "split"), steps=3)
    train(split)
    train(dataclasses.replace(split, steps=6, resume=True))
    a, b = (load_checkpoint(tmp_path / name / "checkpoint.pt") for name in ("straight", "split"))
    assert a["replay"]["size"] == b["replay"]["size"] == 6 * 4  # every answer of every step kept
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    without = train(dataclasses.replace(cfg, replay=0, out=str(tmp_path / "without")))
    assert without["val_miou"] != final["val_miou"] or not all(
        torch.equal(t, load_checkpoint(tmp_path / "without" / "checkpoint.pt")["model"][n])
        for n, t in a["model"].items())  # the replayed term changed the training


@pytest.mark.parametrize(("changes", "flag"), [({"reward": "image"}, "--replay needs --reward pixel"),
                                               ({"replay_batch": 0}, "--replay-batch >= 1")])
def test_replay_flags_are_checked(changes: dict, flag: str) -> None:
    with pytest.raises(ValueError, match=flag):
        TrainArgs(**TINY, **{"reward": "pixel", "replay": 8, **changes}).validate()
