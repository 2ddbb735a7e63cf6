"""Report figures: validation mIoU and mean reward against steps."""

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
