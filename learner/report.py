"""Report figures: validation mIoU and mean reward against steps, and the policy's masks on a few images."""

from __future__ import annotations

import json
from pathlib import Path


def write_curves(metrics_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.plot(steps, [r["val_miou"] for r in rows], marker=".")
    ax1.set(xlabel="step", ylabel="val mIoU", ylim=(0, 1), title="eval/val_miou")
    ax2.plot(steps, [r["reward_mean"] for r in rows], marker=".", color="tab:orange")
    ax2.set(xlabel="step", ylabel="mean reward", title="reward/mean")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


def policy_masks(model, dataset, device, count: int = 4, seed: int = 0) -> list:
    """Per image of the first ``count`` of ``dataset``: (image (3, H, W), label, a mask sampled from the policy,
    the argmax mask), CPU tensors; the model in eval mode, sampled by a generator of its own (training's
    randomness and batch-norm statistics are left as they were)."""
    import torch

    from learner.policy import sample_actions

    was_training = model.training
    model.eval()
    rows = []
    generator = torch.Generator(device).manual_seed(seed)
    for index in range(min(count, len(dataset))):  # one at a time: images may keep sizes of their own
        images, labels = dataset.batch(torch.tensor([index]))
        with torch.inference_mode():
            logp = torch.log_softmax(model(images.to(device)), 1)
            sampled = sample_actions(logp, 1, generator)[:, 0]
            argmax = logp.argmax(1)
        rows.append((images[0], labels[0], sampled[0].cpu(), argmax[0].cpu()))
    model.train(was_training)
    return rows


def gallery_rows(model, dataset, device, count: int = 4, seed: int = 0) -> list:
    """Per val image: the image, its label, a mask sampled from the policy and the argmax mask (uint8 RGB)."""
    import numpy as np

    from rss_core.data import IGNORE_INDEX

    palette = np.asarray(dataset.palette, np.uint8)
    colour = np.zeros((256, 3), np.uint8)
    colour[: len(palette)] = palette
    colour[IGNORE_INDEX] = (255, 255, 255)  # ignore
    rows = []
    for image, label, sampled, argmax in policy_masks(model, dataset, device, count, seed):
        picture = (image.permute(1, 2, 0).numpy() * 255).clip(0, 255).astype(np.uint8)
        masks = [colour[m.numpy().astype(np.uint8)] for m in (label, sampled, argmax)]
        rows.append(np.concatenate([picture, *masks], axis=1))
    return rows


def write_gallery(before: list, after: list, png_path: Path, steps: tuple[int, int]) -> None:
    """One figure: each image's row at the start of training above its row at the end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(before), 2, figsize=(9, 1.3 * len(before) + 0.4), squeeze=False)
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        for ax, row, step in ((axes[i, 0], a, steps[0]), (axes[i, 1], b, steps[1])):
            ax.imshow(row, interpolation="nearest")
            ax.set_axis_off()
            if i == 0:
                ax.set_title(f"step {step}: image | label | sampled | argmax", fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
