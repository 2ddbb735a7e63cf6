"""Reading ahead (`--data-workers`, learner/data.py) and a folder's bounded label store (learner/rewards.py)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from learner.checkpoint import load_checkpoint
from learner.config import TrainArgs
from learner.data import Prefetcher, StepIndices
from learner.rewards import LabelStore
from learner.train import train
from rss_core.data import build_dataset

VOC = {"dataset": "voc", "image_size": 32, "batch_size": 4, "eval_every": 3, "checkpoint_every": 3,
       "progress": False, "threads": 1, "width": 4, "device": "cpu"}


@pytest.mark.parametrize("objective", ["rl", "ce"])
def test_workers_read_ahead_the_very_batches_the_loop_draws_resume_included(tmp_path, voc_root, objective):
    """Two DataLoader workers against none, and a run stopped at step 3 and resumed: the same weights, bit for
    bit (the ground truth scores the labels the workers read, through the label store)."""
    base = TrainArgs(**VOC, data_root=str(voc_root), objective=objective, samples=2, steps=6)
    train(dataclasses.replace(base, data_workers=0, out=str(tmp_path / "inline")))
    ahead = dataclasses.replace(base, data_workers=2, out=str(tmp_path / "ahead"), steps=3)
    train(ahead)
    final = train(dataclasses.replace(ahead, steps=6, resume=True))
    a, b = (load_checkpoint(tmp_path / name / "checkpoint.pt") for name in ("inline", "ahead"))
    assert a["step"] == b["step"] == 6
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    # per step of all 6 (before, a resumed run divided 6 steps' seconds by the 3 since the resume)
    assert final["images_per_s"] * final["sec_per_step"] == pytest.approx(VOC["batch_size"], rel=1e-3)
    last = json.loads((tmp_path / "ahead" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["sec_per_step"] == pytest.approx(final["sec_per_step"], rel=1e-6)


def test_a_folders_label_store_is_bounded_in_bytes(voc_root):
    dataset = build_dataset("voc", "train", root=voc_root, image_size=32)
    store = LabelStore(dataset, torch.device("cpu"), max_bytes=2 * 32 * 32)  # two labels
    labels = store(torch.tensor([0, 1, 2, 0]))
    for got, i in zip(labels, [0, 1, 2, 0], strict=True):
        assert torch.equal(got, dataset[i][1])
    assert store.bytes <= 2 * 32 * 32 and store.misses == 4  # 0 was evicted by 2, so read again
    store.put(torch.tensor([3]), dataset[3][1][None].to(torch.uint8))  # what a prefetched batch carries
    assert torch.equal(store(torch.tensor([3]))[0], dataset[3][1]) and store.misses == 4


def test_the_prefetcher_hands_over_steps_once_in_order(voc_root):
    dataset = build_dataset("voc", "train", root=voc_root, image_size=32)
    draw = StepIndices(len(dataset), 4, seed=0, rank=0)
    prefetch = Prefetcher(dataset, draw, start=3, steps=6, workers=1)
    try:
        with pytest.raises(RuntimeError, match="reads step 3, not 4"):
            prefetch.take(4, draw(4))
        indices, images, labels, views = prefetch.take(3, draw(3))
        assert torch.equal(indices, draw(3)) and images.shape == (4, 3, 32, 32) and labels.dtype == torch.uint8
        assert views.shape == (0, 7)  # no --crop-size: whole images
        with pytest.raises(RuntimeError, match="other images than the step drew"):
            prefetch.take(4, draw(5))
    finally:
        prefetch.close()
