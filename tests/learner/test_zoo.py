"""torchvision and segmentation-models-pytorch networks behind the UNet's contract, and BatchNorm in training."""

from __future__ import annotations

import json

import pytest
import torch

from learner import evaluate_cli
from learner import train as train_module
from learner.config import TrainArgs
from learner.model import build_model
from learner.train import train
from learner.zoo import TV_MODELS
from tests.helpers.cli import run_rss

torch.set_num_threads(1)  # the machine's cores are shared

TINY = {"train_size": 8, "val_size": 4, "shapes_size": 32, "batch_size": 2, "eval_every": 2, "progress": False,
        "threads": 1, "device": "cpu"}


@pytest.mark.parametrize("name", TV_MODELS)
def test_torchvision_models_give_logits_at_input_size(name):
    model = build_model(5, f"tv:{name}").eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 33, 47))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 5, 33, 47)
    # no auxiliary head unless asked for; the library's key names under `net.`; normalisation not saved
    keys = list(model.state_dict())
    assert all(k.startswith("net.") for k in keys) and not any(".aux_classifier." in k for k in keys)


def test_unknown_names_are_refused_naming_the_choices():
    with pytest.raises(ValueError, match="tv:lraspp_mobilenet_v3_large, tv:deeplabv3_mobilenet_v3_large"):
        build_model(3, "tv:deeplabv3_resnet101")
    with pytest.raises(ValueError, match="'unet', 'tv:<name>' or 'smp:<Arch>:<encoder>'"):
        build_model(3, "resnet")
    with pytest.raises(ValueError, match="has no architecture 'Unett'"):
        build_model(3, "smp:Unett:resnet18")


@pytest.mark.parametrize("bad, flag", [
    ({"arch": "tv:deeplabv3_mobilenet_v3_large", "batch_size": 1}, "--batch-size"),
    ({"arch": "tv:fcn_resnet50", "aux_weight": 0.5}, "--aux-weight needs --objective ce"),
    ({"arch": "tv:lraspp_mobilenet_v3_large", "objective": "ce", "aux_weight": 0.5}, "has no auxiliary head"),
    ({"arch": "smp:Unet:resnet18", "objective": "ce", "aux_weight": 0.5}, "has no auxiliary head"),
])
def test_combinations_the_models_cannot_train_are_refused(tmp_path, bad, flag):
    with pytest.raises(ValueError, match=flag):
        train(TrainArgs(**{**TINY, **bad}, out=str(tmp_path)))


def test_ce_with_the_auxiliary_head_trains_and_evaluates(tmp_path, capsys):
    out = tmp_path / "aux"
    final = train(TrainArgs(**TINY, arch="tv:deeplabv3_mobilenet_v3_large", objective="ce", aux_weight=0.5,
                            steps=1, out=str(out)))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert any(k.startswith("net.aux_classifier.") for k in ckpt["model"])
    # Adam keeps state only for parameters that got a gradient: the auxiliary head's did too
    params = ckpt["optimizer"]["param_groups"][0]["params"]
    assert len(ckpt["optimizer"]["state"]) == len(params)
    assert evaluate_cli.main(["--checkpoint", str(out / "checkpoint.pt")]) == 0  # rebuilt with its head
    assert json.loads(capsys.readouterr().out)["val_miou"] == pytest.approx(final["val_miou"], abs=1e-4)


def test_batchnorm_trains_in_train_mode_and_evaluates_on_running_statistics(tmp_path, monkeypatch):
    """Masks are sampled from the train-mode forward whose gradient is taken (the policy that acted is the
    one updated); validation and the gallery see eval mode and leave the running statistics alone."""
    seen: list[tuple[bool, bool]] = []
    built = []

    def recording_build(*args, **kwargs):
        model = build_model(*args, **kwargs)
        model.register_forward_pre_hook(lambda m, _: seen.append((m.training, torch.is_grad_enabled())))
        built.append(model)
        return model

    monkeypatch.setattr(train_module, "build_model", recording_build)
    train(TrainArgs(**TINY, arch="tv:lraspp_mobilenet_v3_large", samples=2, steps=2, out=str(tmp_path)))
    assert {training for training, grad in seen if grad} == {True}  # every forward with a gradient
    assert {training for training, grad in seen if not grad} == {False}  # evaluation and gallery
    assert sum(grad for _, grad in seen) == 2  # one per step: the sampled masks came from it
    bn = next(m for m in built[0].modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) == 2 and built[0].training


def test_smp_model_trains_from_the_command_line(tmp_path):
    """In a fresh process: smp imports timm, which imports torchvision (learner/zoo.py's import_torchvision)."""
    model = build_model(4, "smp:Unet:resnet18").eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 33, 47)).shape == (1, 4, 33, 47)  # padded to its 32x stride, cropped back
    with pytest.raises(ValueError, match=r"has no encoder 'nope' \(it has \d+, e.g. resnet18"):
        build_model(4, "smp:Unet:nope")
    r = run_rss("train", "--arch", "smp:Unet:resnet18", "--steps", "2", "--train-size", "4", "--val-size", "2",
                "--shapes-size", "32", "--batch-size", "2", "--samples", "2", "--threads", "1", "--no-progress",
                "--out", str(tmp_path / "smp"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert 0.0 <= json.loads((tmp_path / "smp" / "final.json").read_text())["val_miou"] <= 1.0
