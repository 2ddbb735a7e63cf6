"""`--weights`: a downloaded state dict into the backbone or the whole model, or a clear refusal."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from learner.checkpoint import load_checkpoint
from learner.config import TrainArgs
from learner.model import build_model
from learner.train import train
from learner.weights import load_pretrained
from learner.zoo import import_torchvision

torch.set_num_threads(1)  # the machine's cores are shared

TINY = {"train_size": 8, "val_size": 4, "shapes_size": 32, "batch_size": 2, "eval_every": 1, "progress": False,
        "threads": 1, "device": "cpu"}


def test_a_classification_network_fills_the_backbone_and_the_run_starts_from_it(tmp_path):
    # what a user downloads: torchvision's ImageNet mobilenet_v3_large (here with a random init of its own)
    classifier = import_torchvision().models.mobilenet_v3_large(weights=None)
    torch.save(classifier.state_dict(), tmp_path / "mobilenet.pt")
    model = build_model(4, "tv:lraspp_mobilenet_v3_large")
    loaded = load_pretrained(model, tmp_path / "mobilenet.pt")
    assert loaded.startswith("backbone (backbone.*)") and "dropped (classifier." in loaded
    torch.testing.assert_close(model.net.backbone["0"][0].weight, classifier.features[0][0].weight)
    # through `rss train`: one step at a negligible learning rate keeps what it started from
    train(TrainArgs(**TINY, arch="tv:lraspp_mobilenet_v3_large", samples=2, steps=1, lr=1e-12,
                    weights=str(tmp_path / "mobilenet.pt"), out=str(tmp_path / "run")))
    started = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    torch.testing.assert_close(started["net.backbone.16.0.weight"], classifier.features[16][0].weight)


def test_a_resnet_fills_an_smp_encoder(tmp_path):
    resnet = import_torchvision().models.resnet18(weights=None)
    # torchvision's older ImageNet files have no BatchNorm num_batches_tracked: they load all the same
    torch.save({k: v for k, v in resnet.state_dict().items() if not k.endswith("num_batches_tracked")},
               tmp_path / "resnet18.pt")
    model = build_model(3, "smp:Unet:resnet18")
    loaded = load_pretrained(model, tmp_path / "resnet18.pt")
    assert loaded.startswith("backbone (encoder.*)") and "2 dropped (fc.weight, fc.bias)" in loaded
    torch.testing.assert_close(model.net.encoder.layer4[1].conv2.weight, resnet.layer4[1].conv2.weight)


def test_a_whole_model_with_another_class_count_keeps_its_head_at_init(tmp_path, caplog):
    coco = import_torchvision().models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=True)  # COCO's shapes, with aux head
    torch.save(coco.state_dict(), tmp_path / "coco.pt")
    model = build_model(4, "tv:deeplabv3_mobilenet_v3_large")
    head = model.net.classifier[4].weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="learner.weights"):
        loaded = load_pretrained(model, tmp_path / "coco.pt")
    assert loaded.startswith("whole model") and "2 left at init (class count)" in loaded and "aux_classifier" in loaded
    assert "classifier.4.weight (21 -> 4)" in caplog.text
    torch.testing.assert_close(model.net.classifier[4].weight, head)
    torch.testing.assert_close(model.net.classifier[0].project[0].weight, coco.classifier[0].project[0].weight)


def test_files_that_fit_neither_are_refused_naming_the_keys(tmp_path):
    torch.save(build_model(4, "unet", width=4).state_dict(), tmp_path / "unet.pt")
    with pytest.raises(ValueError, match=r"fits neither the whole model nor the backbone \(backbone\.\*\) .*"
                                         r"read as the .*missing \(.*\).* unexpected \(.*stem\.0\.weight"):
        load_pretrained(build_model(4, "tv:lraspp_mobilenet_v3_large"), tmp_path / "unet.pt")
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "foo.pt")
    with pytest.raises(ValueError, match=r"does not fit the whole model .*1 unexpected \(foo\.weight\)"):
        load_pretrained(build_model(4, "unet", width=4), tmp_path / "foo.pt")
    with pytest.raises(FileNotFoundError, match="--weights .*no such file"):
        load_pretrained(build_model(4, "unet", width=4), tmp_path / "missing.pt")


def test_rss_checkpoints_and_init_from_are_pointed_elsewhere(tmp_path):
    args = TrainArgs(**TINY, objective="ce", width=4, steps=1, out=str(tmp_path / "ce"))
    train(args)
    with pytest.raises(ValueError, match="an RSS checkpoint; start from it with --init-from"):
        load_pretrained(build_model(4, "unet", width=4), tmp_path / "ce" / "checkpoint.pt")
    with pytest.raises(ValueError, match="--weights and --init-from"):
        train(dataclasses.replace(args, weights="a.pt", init_from="b.pt"))
