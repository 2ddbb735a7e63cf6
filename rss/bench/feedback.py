"""`rss bench feedback`: what an hour of a rater's time buys, measured against labelling at equal human time.

Simulated raters (`rss.raters`: the answer code `rss rater-sim` uses, with a person's imperfections)
answer from ground truth, in-process, and each feedback configuration trains for a budget of answers.
Every answer costs seconds of human time (the cost table below, every value a flag); a warm start's
labelled images count at the labelling cost. Beside them, in the same run, cross-entropy trains on the
number of pixel-labelled images the same hours buy. The report: val mIoU against answers and against
human-hours, one table (best evaluation within each budget, both sides), one plot, and ``--json``.

The answers become rewards through the same mapping the service's human scorer applies
(`rss_core.answers`): a preference gives the preferred mask 1 and the other 0, a score is the mask's
reward, a brush answer is +1 on confirmed and -1 on painted-wrong pixels.

Default costs (seconds of human time per answer). Labelling: 239.7 s per fully labelled Pascal VOC
image (Bearman et al., "What's the Point", ECCV 2016), rounded to 240. The others are assumptions,
conservative, until the annotator UI measures real ones: 3 s per pairwise answer, 4 s per score,
10 s per brush answer.

Only the built-in procedural data (`shapes`, `scenes`) for now: CE on n labelled images uses
`--train-size n`, which folder datasets do not take yet.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from learner.config import TrainArgs
from learner.remote import read_jsonl
from learner.rewards import Episodes, LocalRewardSource, Rewards
from learner.train import train
from rss.bench.args import BenchArgs, parse
from rss.raters import Imperfection, brush, choose_best, name_classes, prefer, score, verify
from rss_core.answers import PIXEL_REWARD, PREFERENCE, WRONG
from rss_core.data import PROCEDURAL, SegDataset

log = logging.getLogger(__name__)


PIXEL_ANSWERS = ("brush", "class_brush", "points")


@dataclass(frozen=True)
class Config:
    kind: str  # the task kind a rater answers: pairwise, best (of --best-of masks), score, brush, points
    warm_start: bool
    replay: bool = False  # keep every answer and learn from it again each step (learner/replay.py)
    reuse: bool = False  # and: --reuse-updates more updates on kept answers per answered step; brush raters
    # are shown the policy's most likely mask (--first-mask mode)
    region: bool = False  # pairwise: the pair is a question about one region (--pairs region)

    margin: int = 0  # brush: trust kept answers only this far from the edges of the mask and of the strokes
    # (--replay-margin; 0: the run's own --replay-margin)
    random_points: bool = False  # points: asked anywhere, not where the policy hesitates
    image_pool: int = 1  # ask about the images the policy hesitates most about, of this many times a batch

    @property
    def reward(self) -> str:
        return "pixel" if self.kind in PIXEL_ANSWERS else "image"

    def samples(self, best_of: int) -> int:
        return 1 if self.kind in PIXEL_ANSWERS else best_of if self.kind == "best" else 2

    def answers_per_image(self, points: int) -> int:
        """Answers one image's K samples take: one per pair, one per mask, one per point, or one choice."""
        if self.kind == "points":
            return points
        if self.kind == "best":
            return 1
        return self.samples(2) // 2 if self.kind == "pairwise" else self.samples(2)


CONFIGS = {f"{kind}{'_warm' if warm else ''}": Config(kind, warm)
           for kind in ("pairwise", "score", "brush") for warm in (False, True)}
CONFIGS |= {f"brush{'_warm' if warm else ''}_replay": Config("brush", warm, replay=True) for warm in (False, True)}
for _warm in (False, True):
    _w = "_warm" if _warm else ""
    CONFIGS[f"brush{_w}_reuse"] = Config("brush", _warm, replay=True, reuse=True)
    CONFIGS[f"brush{_w}_trust"] = Config("brush", _warm, replay=True, reuse=True, margin=1)
    CONFIGS[f"class_brush{_w}"] = Config("class_brush", _warm, replay=True, reuse=True, margin=1)
    CONFIGS[f"pairwise{_w}_reuse"] = Config("pairwise", _warm, replay=True, reuse=True)
    CONFIGS[f"pairwise{_w}_region"] = Config("pairwise", _warm, replay=True, reuse=True, region=True)
    CONFIGS[f"best{_w}_reuse"] = Config("best", _warm, replay=True, reuse=True)
    CONFIGS[f"best{_w}_region"] = Config("best", _warm, replay=True, reuse=True, region=True)
    CONFIGS[f"pairwise{_w}_region_active"] = Config("pairwise", _warm, replay=True, reuse=True, region=True,
                                                    image_pool=4)
    CONFIGS[f"points{_w}"] = Config("points", _warm, replay=True, reuse=True)
    CONFIGS[f"points{_w}_random"] = Config("points", _warm, replay=True, reuse=True, random_points=True)


@dataclass
class FeedbackArgs(BenchArgs, TrainArgs):
    """Every `rss train` flag sets the base configuration of each run (data, model, batch, lr, seed,
    threads, device); the bench sets the objective, reward, samples, steps, warm start and output."""

    budgets_h: tuple[float, ...] = (1.0, 4.0, 16.0)
    """human-hour budgets the table reports"""
    configs: tuple[str, ...] = tuple(CONFIGS)
    """feedback configurations: pairwise, score, brush, each from scratch or `_warm` (from CE on
    --warm-images labelled images); `brush_replay`, `brush_warm_replay` keep every answer (--replay);
    `*_reuse` also learn from kept answers between answers (--reuse-updates; brush raters see the policy's
    most likely mask; pairwise ones full-resolution sampled pairs); `brush_trust`, `brush_warm_trust` are
    `brush_reuse` trusting each answer only 1 pixel away from the edges of the mask shown and of the strokes
    (--replay-margin 1: a brush misses thin errors along edges and spills past them); `class_brush`,
    `class_brush_warm` are `brush_trust` with each stroke painted in the class that belongs there (a
    trusted painted pixel is a label, not only a class ruled out); `pairwise_region`,
    `pairwise_warm_region` ask about one region where the policy hesitates (--pairs region); `points`,
    `points_warm` verify --points-per-image pixels where the policy hesitates (`_random`: anywhere), every
    answer kept and reused; `best_reuse`, `best_warm_reuse` pick the best of --best-of sampled masks, kept as
    N - 1 preferences and reused; `best_region`, `best_warm_region` the best of the most likely mask and
    N - 1 variants with one hesitant region switched each (--pairs region --human-task best);
    `pairwise_region_active`, `pairwise_warm_region_active` ask region pairs about the images the policy
    hesitates most about, of 4 batches drawn (--image-pool 4)"""
    reuse_updates: int = 24
    """`*_reuse`, `*_region` configurations: updates on kept answers alone after each brush step
    (--replay-updates); the others get as many per second of human time (a pairwise step, 3 s an answer,
    24 * 3 / 10 = 7), so every configuration's learner computes as much while its raters work"""
    seconds_pairwise: float = 3.0
    """human seconds per pairwise answer (assumption)"""
    best_of: int = 4
    """`best*` configurations: masks per question (2 to 8)"""
    seconds_best: float | None = None
    """human seconds per best-of-N answer (None: 2 + N, an assumption until the UI measures it)"""
    seconds_score: float = 4.0
    """human seconds per score (assumption)"""
    seconds_brush: float = 10.0
    """human seconds per brush answer: strokes over what is wrong, the rest confirmed (assumption)"""
    seconds_class_brush: float = 15.0
    """human seconds per class brush answer: a brush answer whose strokes are each painted in the class
    that belongs there, picked by hotkey (assumption: the brush's 10 s and a few classes picked)"""
    seconds_point: float = 1.5
    """human seconds per point answer, yes or no (an assumption until measured, in the
    range Benenson and Ferrari, 2022, report for point-wise annotation)"""
    points_per_image: int = 10
    """`points*` configurations: questions per image (--points)"""
    point_error: float = 0.05
    """simulated raters: probability that a point answer is wrong"""
    seconds_label: float = 240.0
    """human seconds per fully labelled image (Bearman et al., ECCV 2016: 239.7 s per VOC image)"""
    warm_images: int = 16
    """labelled images the warm start's CE model trains on (their labelling counts in its hours)"""
    warm_lr: float | None = 3e-4
    """learning rate of the feedback runs that start warm (None: --lr); at 1e-3 every warm configuration fell
    below its CE start (measured, docs/benchmarks.md)"""
    ce_steps: int = 2000
    """steps of each CE-on-labels run (its best evaluation counts)"""
    eval_points: int = 10
    """evaluations per run at least (and two within the smallest budget)"""
    flip: float = 0.1
    """simulated raters: probability that a preference names the worse mask"""
    jitter: float = 0.1
    """simulated raters: standard deviation of a score's noise"""
    brush_width: int = 3
    """simulated raters: brush strokes are this wide (odd); thinner wrong regions are missed"""
    brush_spill: int = 1
    """simulated raters: strokes spill this many pixels past a wrong region's edge"""
    out: str = "runs/bench-feedback"
    """folder: one sub-folder per run, feedback.png"""
    progress: bool = False
    """show a progress bar per run"""
    reuse_ce: bool = False
    """keep each CE-on-labels run already finished under --out with the same images and --ce-steps instead of
    training it again (to add configurations beside an earlier bench's)"""
    report_only: bool = False
    """train nothing: the table, plot and --json from the runs already under --out (a bench stopped early
    reports each run's evaluations so far; a run not started is refused)"""
    jobs: int = 1
    """runs trained at once, each in its own process with --threads threads (CE runs first, then the
    feedback configurations)"""

    def seconds(self, kind: str) -> float:
        return {"pairwise": self.seconds_pairwise, "score": self.seconds_score, "brush": self.seconds_brush,
                "class_brush": self.seconds_class_brush, "points": self.seconds_point,
                "best": self.seconds_best or 2.0 + self.best_of}[kind]

    def validate(self) -> None:
        super().validate()
        unknown = [c for c in self.configs if c not in CONFIGS]
        if unknown:
            raise ValueError(f"--configs: unknown {', '.join(unknown)} (choose from {', '.join(CONFIGS)})")
        if self.dataset not in PROCEDURAL:
            raise ValueError("rss bench feedback: only the procedural --dataset shapes or scenes for now (CE on n "
                             "labelled images uses --train-size, which folder datasets do not take)")
        if not self.budgets_h or min(self.budgets_h) <= 0:
            raise ValueError(f"--budgets-h must be positive, got {self.budgets_h}")
        if not 2 <= self.best_of <= 8:
            raise ValueError(f"--best-of must be 2 to 8, got {self.best_of}")
        if self.seconds_best is not None and self.seconds_best <= 0:
            raise ValueError(f"--seconds-best must be positive, got {self.seconds_best}")
        if self.points_per_image < 1:
            raise ValueError(f"--points-per-image must be >= 1, got {self.points_per_image}")
        for name in ("seconds_pairwise", "seconds_score", "seconds_brush", "seconds_class_brush", "seconds_point",
                     "seconds_label"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.ce_steps < 1 or self.eval_points < 1 or self.warm_images < 1 or self.jobs < 1:
            raise ValueError("--ce-steps, --eval-points, --warm-images and --jobs must be >= 1")
        if self.warm_lr is not None and self.warm_lr <= 0:
            raise ValueError(f"--warm-lr must be positive, got {self.warm_lr}")


class SimulatedRaters(LocalRewardSource):
    """Rewards from simulated raters' answers: ground truth, then a person's imperfections, then the
    answer-to-reward mapping of the service's human scorer. Counts the answers it gave."""

    def __init__(self, dataset: SegDataset, device: torch.device, metric: str, kind: str, noise: Imperfection,
                 seed: int) -> None:
        super().__init__(dataset, device, metric)
        self.kind, self.noise, self.rng, self.answers = kind, noise, np.random.default_rng(seed), 0
        self.painted = 0.0  # brush answers: the sum of the fractions of their masks painted wrong
        self.generator = torch.Generator(device).manual_seed(seed)

    def score(self, episodes: Episodes) -> Rewards:
        truth = super().score(episodes)
        if self.kind == "points":
            assert truth.pixel is not None and truth.valid is not None and episodes.query is not None
            asked = truth.valid.unsqueeze(1)
            yes = verify(truth.pixel > 0, self.noise, self.generator)
            self.answers += int(asked.sum())
            return Rewards(pixel=torch.where(yes, 1.0, -1.0) * asked, valid=truth.valid)
        if self.kind in ("brush", "class_brush"):
            assert truth.pixel is not None and truth.valid is not None
            painted = brush(truth.pixel > 0, truth.valid.unsqueeze(1), self.noise)
            self.answers += painted.shape[0] * painted.shape[1]
            self.painted += float((painted == WRONG).float().mean(dim=(-2, -1)).sum())
            pixel = torch.from_numpy(PIXEL_REWARD).to(painted.device)[painted.long()]
            named = None
            if self.kind == "class_brush":
                labels = episodes.labels if episodes.labels is not None else self.labels(episodes.indices)
                named = name_classes(painted, truth.pixel > 0, labels.to(painted.device).unsqueeze(1), self.noise)
            return Rewards(pixel=pixel, valid=truth.valid, named=named)
        assert truth.image is not None
        true = truth.image.cpu().numpy()
        answered = np.zeros_like(true)
        for b in range(true.shape[0]):
            if self.kind == "best":
                answered[b, choose_best(true[b].tolist(), self.noise, self.rng)] = 1.0
                self.answers += 1
            elif self.kind == "pairwise":
                for i in range(0, true.shape[1] - 1, 2):
                    answered[b, i:i + 2] = PREFERENCE[prefer(true[b, i], true[b, i + 1], self.noise, self.rng)]
                    self.answers += 1
            else:
                for i in range(true.shape[1]):
                    answered[b, i] = score(float(true[b, i]), self.noise, self.rng)
                    self.answers += 1
        return Rewards(image=torch.from_numpy(answered).to(truth.image.device))

    def stats(self) -> dict[str, float]:
        stats: dict[str, float] = {"answers": self.answers}
        if self.kind in ("brush", "class_brush"):
            stats["painted_fraction"] = self.painted / max(self.answers, 1)
        return stats


def evaluations(out: Path) -> list[dict]:
    return read_jsonl(out / "metrics.jsonl")


def finished_ce(out: Path, images: int, steps: int) -> bool:
    """Whether ``out`` holds a finished CE run on ``images`` labelled images of ``steps`` steps."""
    try:
        config = json.loads((out / "final.json").read_text())["config"]
    except (OSError, ValueError, KeyError):
        return False
    done = (config.get("objective"), config.get("train_size"), config.get("steps")) == ("ce", images, steps)
    if done:
        log.info("bench feedback: keeping the finished CE run in %s (--reuse-ce)", out)
    return done and (out / "checkpoint.pt").exists()


def ce_on_labels(args: FeedbackArgs, images: int) -> tuple[float, Path]:
    """Best val mIoU of CE trained on ``images`` labelled images, and its checkpoint."""
    out = Path(args.out) / f"ce_{images}"
    if not args.report_only and not (args.reuse_ce and finished_ce(out, images, args.ce_steps)):
        train(TrainArgs.of(args, objective="ce", train_size=images, steps=args.ce_steps, out=str(out),
                           init_from=None, eval_every=max(1, args.ce_steps // args.eval_points),
                           checkpoint_every=args.ce_steps, resume=False))
    return max(e["val_miou"] for e in evaluations(out)), out / "checkpoint.pt"


def cost_of(args: FeedbackArgs, name: str) -> tuple[float, float, int]:
    """A configuration's human seconds per answer, the hours of its warm start, and its answers per step."""
    config = CONFIGS[name]
    warm_h = args.warm_images * args.seconds_label / 3600 if config.warm_start else 0.0
    return args.seconds(config.kind), warm_h, args.batch_size * config.answers_per_image(args.points_per_image)


def points_of(args: FeedbackArgs, name: str, warm: tuple[float, Path] | None, trained: bool = True) -> dict:
    """A configuration's points (answers, hours, val mIoU): the warm start's, then every evaluation of its run
    (``trained``: it has one)."""
    config = CONFIGS[name]
    cost, warm_h, per_step = cost_of(args, name)
    result = {"name": name, "kind": config.kind, "warm_start": config.warm_start, "points": []}
    if config.warm_start:
        assert warm is not None
        result["points"].append({"answers": 0, "hours": round(warm_h, 4), "val_miou": warm[0]})
    for e in evaluations(Path(args.out) / name) if trained else []:
        used = e["step"] * per_step
        result["points"].append({"answers": used, "hours": round(warm_h + used * cost / 3600, 4),
                                 "val_miou": e["val_miou"]})
    return result


def run_config(args: FeedbackArgs, name: str, warm: tuple[float, Path] | None) -> dict:
    """Train one feedback configuration up to the largest budget; its points (answers, hours, val mIoU)."""
    config = CONFIGS[name]
    noise = Imperfection(args.flip, args.jitter, args.brush_width, args.brush_spill, args.point_error)
    cost, warm_h, per_step = cost_of(args, name)
    steps = math.floor((max(args.budgets_h) - warm_h) * 3600 / cost) // per_step
    out = Path(args.out) / name
    if steps < 1:
        log.warning("%s: the largest budget does not pay for one step (%d answers a step)", name, per_step)
        return points_of(args, name, warm, trained=False)
    if args.report_only:
        return points_of(args, name, warm)
    # at least --eval-points evaluations, and two within the smallest budget, so every budget has a point
    first = min((h for h in args.budgets_h if h > warm_h), default=max(args.budgets_h))
    eval_every = max(1, min(steps // args.eval_points, int(3600 / cost / per_step * (first - warm_h) / 2)))
    run = TrainArgs.of(args, objective="rl", reward=config.reward, samples=config.samples(args.best_of), steps=steps,
                    out=str(out), human_task="best" if config.kind == "best" else "score",
                    eval_every=eval_every, checkpoint_every=steps, resume=False,
                    init_from=str(warm[1]) if config.warm_start and warm else None,
                    lr=args.warm_lr if config.warm_start and args.warm_lr else args.lr,
                    replay=steps * per_step if config.replay else 0, replay_margin=config.margin or args.replay_margin,
                    replay_updates=max(1, round(args.reuse_updates * per_step * cost
                                                / (args.batch_size * args.seconds_brush))) if config.reuse else 0,
                    points=args.points_per_image if config.kind == "points" else 0,
                    point_query="random" if config.random_points else "uncertain",
                    first_mask="mode" if config.reuse and config.kind in ("brush", "class_brush") else "sample",
                    pairs="region" if config.region else "sample", image_pool=config.image_pool,
                    psr=args.psr and not (config.replay and config.reward == "image"))
    log.info("bench feedback: %s, %d steps of %d answers (%.0f s each)", name, steps, per_step, cost)
    final = train(run, lambda a, dataset, device: SimulatedRaters(dataset, device, a.metric, config.kind, noise,
                                                                  args.seed))
    assert final["rewards"]["answers"] == steps * per_step  # every answer paid for is counted
    return points_of(args, name, warm)


def best_within(points: list[dict], hours: float) -> float | None:
    inside = [p["val_miou"] for p in points if p["hours"] <= hours + 1e-9]
    return max(inside) if inside else None


def log_progress() -> None:
    """A worker process logs its runs' progress as `rss` does."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def parallel(args: FeedbackArgs, fn: Callable, calls: list[tuple]) -> list:
    """``fn(args, *call)`` for each call, --jobs at a time in their own processes (in order, in-process for 1)."""
    if args.jobs == 1 or len(calls) < 2:
        return [fn(args, *call) for call in calls]
    with ProcessPoolExecutor(min(args.jobs, len(calls)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=log_progress) as pool:
        return list(pool.map(fn, [args] * len(calls), *zip(*calls, strict=True)))


def feedback(args: FeedbackArgs) -> dict:
    args.validate()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    bought = {hours: int(hours * 3600 // args.seconds_label) for hours in args.budgets_h}  # labelled images
    sizes = set(bought.values()) - {0}
    if any(CONFIGS[c].warm_start for c in args.configs):
        sizes.add(args.warm_images)
    if args.report_only:
        missing = [str(Path(args.out) / n) for n in [f"ce_{i}" for i in sorted(sizes)] + list(args.configs)
                   if not evaluations(Path(args.out) / n)]
        if missing:
            raise ValueError(f"--report-only: no evaluations in {', '.join(missing)} (run the bench, or leave "
                             "those configurations out)")
    log.info("bench feedback: CE on %s labelled images", ", ".join(map(str, sorted(sizes))))
    cache = dict(zip(sorted(sizes), parallel(args, ce_on_labels, [(n,) for n in sorted(sizes)]), strict=True))
    ce: dict[str, dict] = {}
    for hours, images in bought.items():
        ce[f"{hours:g}"] = {"images": images, "val_miou": cache[images][0] if images else None}
    warm = cache.get(args.warm_images)
    configs = parallel(args, run_config, [(name, warm) for name in args.configs])
    report = {
        "budgets_h": list(args.budgets_h), "ce_on_labels": ce, "configs": configs,
        "costs_s": {"pairwise": args.seconds_pairwise, "score": args.seconds_score, "brush": args.seconds_brush,
                    "class_brush": args.seconds_class_brush, "points": args.seconds_point, "best": args.seconds("best"),
                    "label": args.seconds_label},
        "imperfection": {"flip": args.flip, "jitter": args.jitter, "brush_width": args.brush_width,
                         "brush_spill": args.brush_spill, "point_error": args.point_error},
    }
    write_plot(report, Path(args.out) / "feedback.png")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


def table(report: dict) -> str:
    budgets = report["budgets_h"]
    head = "| supervision | " + " | ".join(f"{h:g} h" for h in budgets) + " |"
    lines = [head, "| --- |" + " --- |" * len(budgets)]

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    ce = report["ce_on_labels"]
    lines.append("| CE on labelled images (n) | " + " | ".join(
        f"{cell(ce[f'{h:g}']['val_miou'])} (n={ce[f'{h:g}']['images']})" for h in budgets) + " |")
    for config in report["configs"]:
        lines.append(f"| {config['name']} | " + " | ".join(cell(best_within(config["points"], h)) for h in budgets)
                     + " |")
    return "\n".join(lines)


def write_plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ce = [(h, report["ce_on_labels"][f"{h:g}"]["val_miou"]) for h in report["budgets_h"]]
    ce = [(h, m) for h, m in ce if m is not None]
    if ce:
        ax.plot(*zip(*ce, strict=True), "k--o", label="CE on the images the hours label")
    for config in report["configs"]:
        if config["points"]:
            ax.plot([p["hours"] for p in config["points"]], [p["val_miou"] for p in config["points"]], ".-",
                    label=config["name"])
    ax.set_xscale("log")
    ax.set_xlabel("human-hours")
    ax.set_ylabel("val mIoU")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    args = parse(FeedbackArgs, argv, "rss bench feedback", __doc__.split("\n\n")[0])
    report = feedback(args)
    print(table(report))  # noqa: T201
    print(f"plot: {Path(args.out) / 'feedback.png'}" + (f"; json: {args.json}" if args.json else ""))  # noqa: T201
    return 0
