"""`rss bench convergence`: CE vs pixel- and image-level RSS on `shapes` (or `--dataset scenes`), one table.

Every row uses the same model, optimiser, batch, data and seed. CE, pixel and the image-level
ablations share the CE step budget; `image_best` (the configuration `rss train --reward image`
uses by default) gets ``--best-factor`` times that budget.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from learner.config import IMAGE_BEST, PIXEL_DEFAULT, TrainArgs
from learner.train import train
from rss.bench.args import BenchArgs, parse

log = logging.getLogger(__name__)

# Each row: overrides of TrainArgs on top of the shared settings.
# The image-level ablations use the plain policy gradient (`reinforce`), as in the paper;
# image_best adds what the benchmark found (docs/benchmarks.md, "Convergence").
ROWS: dict[str, dict] = {
    "ce": {"objective": "ce"},
    "pixel": {"reward": "pixel", **PIXEL_DEFAULT},
    "image_naive": {"reward": "image", "samples": 1, "psd": False, "syncan": False, "psr": False,
                    "estimator": "reinforce"},
    "image_psd": {"reward": "image", "samples": 2, "psd": True, "syncan": True, "psr": False,
                  "estimator": "reinforce"},
    "image_psd_psr": {"reward": "image", "samples": 2, "psd": True, "syncan": True, "psr": True,
                      "psr_scales": IMAGE_BEST["psr_scales"], "estimator": "reinforce"},
    "image_best": {"reward": "image", **IMAGE_BEST},
}
# What every row sets under the ROWS settings, whatever `rss train` flags were given (--dataset is one of
# those flags: `shapes` by default, `scenes` the harder one).
SHARED = {"checkpoint_every": 10**9, "progress": False}


@dataclass
class ConvergenceArgs(BenchArgs, TrainArgs):
    """CE vs pixel- and image-level RSS on one dataset, one table. Every `rss train` flag goes to every row
    (defaults `rss train`'s); each row sets its own objective, reward and estimator settings (ROWS)."""

    ce_steps: int = 3000
    """step budget of CE, pixel and the image-level ablations"""
    best_factor: float = 4.0
    """image_best trains for this many times the CE budget"""
    ablation_factor: float = 1.0
    """the image-level ablations (naive, psd, psd_psr) train for this many times the CE budget"""
    rows: tuple[str, ...] = tuple(ROWS)
    """which rows to run (ce always runs first: the ratios need it)"""
    out: str = "runs/bench-convergence"
    """folder: one sub-folder per row plus curves.png"""

    def steps_of(self, name: str) -> int:
        """Row ``name``'s step budget."""
        factor = 1.0
        if name.startswith("image"):
            factor = self.best_factor if name == "image_best" else self.ablation_factor
        return max(1, round(self.ce_steps * factor))

    def row(self, name: str) -> TrainArgs:
        """Row ``name``'s training: the `rss train` flags given, then SHARED, the row's ROWS settings, its
        step budget and its sub-folder of --out."""
        return TrainArgs.of(self, **{**SHARED, **ROWS[name], "steps": self.steps_of(name),
                                     "out": str(Path(self.out) / name)})

    def validate(self) -> None:
        BenchArgs.validate(self)
        unknown = [r for r in self.rows if r not in ROWS]
        if unknown:
            raise ValueError(f"--rows: unknown {unknown} (choose from {', '.join(ROWS)})")
        TrainArgs.of(self, **SHARED).validate()


def run(args: ConvergenceArgs) -> list[dict]:
    args.validate()
    names = ["ce"] + [r for r in args.rows if r != "ce"]
    rows = []
    for name in names:
        cfg = args.row(name)
        steps = cfg.steps
        log.info("bench convergence: %s for %d steps", name, steps)
        final = train(cfg)
        rows.append({
            "method": name, "steps": steps, "seconds": final["seconds"], "sec_per_step": final["sec_per_step"],
            "val_miou": final["val_miou"], "samples": final["samples"], "overrides": ROWS[name],
        })
    ce = rows[0]
    for row in rows:
        row["ratio_to_ce"] = row["val_miou"] / ce["val_miou"] if ce["val_miou"] else float("nan")
        row["step_cost_vs_ce"] = row["sec_per_step"] / ce["sec_per_step"] if ce["sec_per_step"] else float("nan")
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"{'method':<15}{'steps':>7}{'seconds':>10}{'sec/step':>10}{'cost/CE':>9}{'val mIoU':>10}{'ratio to CE':>13}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['method']:<15}{r['steps']:>7}{r['seconds']:>10.1f}{r['sec_per_step']:>10.4f}"
            f"{r['step_cost_vs_ce']:>9.2f}{r['val_miou']:>10.4f}{r['ratio_to_ce']:>13.3f}"
        )
    return "\n".join(lines)


def plot(rows: list[dict], out: Path, dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        path = out / r["method"] / "metrics.jsonl"
        points = [json.loads(line) for line in path.read_text().splitlines()]
        ax.plot([p["step"] for p in points], [p["val_miou"] for p in points], label=r["method"])
    ax.set(xlabel="step", ylabel="val mIoU", title=f"rss bench convergence ({dataset})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=90)
    plt.close(fig)


def main(argv: list[str]) -> int:
    args = parse(ConvergenceArgs, argv, "rss bench convergence", __doc__.split("\n\n")[0])
    rows = run(args)
    out = Path(args.out)
    plot(rows, out, args.dataset)
    table = format_table(rows)
    print(table)  # noqa: T201
    print(f"curves: {out / 'curves.png'}")  # noqa: T201
    if args.json:
        payload = {"rows": [{k: r[k] for k in ("method", "steps", "seconds", "sec_per_step", "val_miou", "ratio_to_ce")}
                            for r in rows], "details": rows, "args": dataclasses.asdict(args)}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0
