"""`rss eval`: the validation metrics of a checkpoint on a dataset split."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import tyro

from learner.checkpoint import load_checkpoint
from learner.config import TrainArgs
from learner.evaluate import evaluate
from learner.model import build_model
from learner.train import build_splits, resolve_device


@dataclass
class EvalArgs:
    checkpoint: str
    """checkpoint.pt written by `rss train`"""
    dataset: str | None = None
    """dataset layout (default: the one the checkpoint was trained on)"""
    data_root: str | None = None
    """dataset folder (default: the checkpoint's)"""
    split: str = "val"
    """split to evaluate"""
    device: str = "auto"
    """`auto`, `cpu`, `cuda`, ..."""
    json: str | None = None
    """also write the metrics to this file"""


def main(argv: list[str]) -> int:
    args = tyro.cli(EvalArgs, args=argv, prog="rss eval")
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, device)
    known = {f.name for f in dataclasses.fields(TrainArgs)}
    train_args = TrainArgs(**{k: v for k, v in ckpt["args"].items() if k in known})
    overrides = {"val_split": args.split}
    if args.dataset:
        overrides["dataset"] = args.dataset
    if args.data_root:
        overrides["data_root"] = args.data_root
    train_args = dataclasses.replace(train_args, **overrides)
    _, val = build_splits(train_args)
    model = build_model(val.num_classes, train_args.arch, train_args.width, train_args.depth,
                        aux=train_args.aux_weight > 0).to(device)
    model.load_state_dict(ckpt["model"])
    metrics = evaluate(model, val, device)
    result = {"val_miou": metrics["miou"], "val_pixel_acc": metrics["pixel_acc"],
              "per_class_iou": dict(zip(val.class_names, metrics["per_class_iou"], strict=True)),
              "split": args.split, "images": len(val), "step": ckpt["step"]}
    text = json.dumps(result, indent=2)
    print(text)  # noqa: T201
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0
