"""--amp, --channels-last and --compile on CPU: bf16 trains with the policy's math in float32, fp16 is refused."""

from __future__ import annotations

import json

import pytest
import torch

from learner import train as train_module
from learner.config import TrainArgs
from learner.model import build_model
from learner.precision import Autocast
from learner.train import setup, train

torch.set_num_threads(1)  # the machine's cores are shared

TINY = {"train_size": 8, "val_size": 4, "shapes_size": 32, "batch_size": 2, "eval_every": 2, "progress": False,
        "threads": 1, "width": 4, "depth": 2, "device": "cpu"}


def test_autocast_runs_the_forward_in_bf16_and_returns_float32():
    model = build_model(3, "unet", width=4, depth=2)
    dtypes = []
    model.head.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    logits = Autocast(model, "cpu", torch.bfloat16, channels_last=True)(torch.rand(1, 3, 16, 16))
    assert dtypes == [torch.bfloat16] and logits.dtype == torch.float32


@pytest.mark.parametrize("objective", ["ce", "rl"])
def test_bf16_trains_on_cpu_with_the_policy_in_float32(tmp_path, monkeypatch, objective):
    sampled = []
    real = train_module.sample_actions
    monkeypatch.setattr(train_module, "sample_actions", lambda logp, *a: sampled.append(logp.dtype) or real(logp, *a))
    out = tmp_path / objective
    final = train(TrainArgs(**TINY, objective=objective, samples=2, amp="bf16", channels_last=objective == "ce",
                            steps=2, out=str(out)))
    assert sampled == ([torch.float32] * 2 if objective == "rl" else [])
    saved = json.loads((out / "final.json").read_text())
    assert saved["images_per_s"] > 0 and saved["peak_cuda_memory_bytes"] is None
    assert saved["config"]["amp"] == "bf16" and final["val_miou"] == saved["val_miou"]


def test_fp16_off_cuda_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--amp fp16 needs a CUDA device .* use --amp bf16"):
        train(TrainArgs(**TINY, amp="fp16", steps=1, out=str(tmp_path)))


def test_compile_wraps_the_training_forward_and_not_what_checkpoints_save(tmp_path, monkeypatch):
    # torch.compile itself is not run: importing its compiler alone takes seconds, compiling on CPU minutes
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model: compiled.append(model) or torch.nn.Sequential(model))
    run = setup(TrainArgs(**TINY, compile=True, amp="bf16", steps=1, out=str(tmp_path)))
    assert compiled == [run.core] and isinstance(run.model, Autocast)  # compiled, then under autocast
    assert run.model.net[0] is run.core and all(k.startswith(("stem.", "down.", "up.", "dec.", "head."))
                                                  for k in run.core.state_dict())
