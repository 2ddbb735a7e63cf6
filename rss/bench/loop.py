"""`rss bench loop`: the same training in-process and through the reward service, side by side.

One run trains twice with identical flags and seed, one after the other on this machine:

1. in-process: `rss train` with ground-truth rewards computed in the learner (one torch thread);
2. remote: `rss demo`, i.e. its own redis-server, `rss serve` (one worker process) and the
   learner with `--reward-source remote` on loopback, also one torch thread.

It reports learner steps/s (from each run's `sec_per_step`, which excludes evaluation and
start-up) and the final val mIoU of each, next to the loop issue's targets: the remote loop
keeps >= 80% of the in-process steps/s, with the same val mIoU within 0.01. With
`--max-inflight 0` (the default) the two runs apply the very same rewards, so their mIoU are
equal; `--max-inflight N` pipelines the remote run. Every other `rss train` flag goes to both trainings.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from learner.config import TrainArgs
from rss.bench.args import BenchArgs, parse

RATIO_TARGET = 0.8
MIOU_TOLERANCE = 0.01


def out(line: str = "") -> None:
    print(line, flush=True)  # noqa: T201


@dataclass
class LoopArgs(BenchArgs, TrainArgs):
    """`rss train`'s flags for both trainings, with the bench's defaults, and the remote run's --max-inflight."""

    steps: int = 150
    """training steps of each run"""
    max_inflight: int = 0
    """the remote run's --max-inflight (the in-process run waits for nothing)"""
    eval_every: int = 0
    """steps between validation runs (0: once, at --steps)"""
    threads: int = 1
    """each run's learner torch CPU threads"""
    out: str = "runs/bench-loop"
    """folder for both runs' reports and logs"""
    progress: bool = False
    """show each run's progress bar (in its log)"""
    reward_source: tyro.conf.Suppress[Literal["local", "remote"]] = "local"  # each run sets its own
    service_url: tyro.conf.Suppress[str] = TrainArgs.service_url
    redis_url: tyro.conf.Suppress[str] = TrainArgs.redis_url

    def train_args(self, name: str) -> TrainArgs:
        """The training of the run ``name`` (`in-process` or `remote`), its report in OUT/NAME."""
        return TrainArgs.of(self, eval_every=self.eval_every or self.steps, out=str(Path(self.out).resolve() / name),
                            max_inflight=self.max_inflight if name == "remote" else 0)

    def validate(self) -> None:
        if self.steps < 1 or self.max_inflight < 0:
            raise ValueError("--steps must be >= 1 and --max-inflight >= 0")
        if self.eval_every < 0:
            raise ValueError(f"--eval-every must be >= 0, got {self.eval_every}")
        self.train_args("in-process").validate()
        dataclasses.replace(self.train_args("remote"), reward_source="remote").validate()


def train_flags(args: TrainArgs, always: tuple[str, ...] = ("steps", "eval_every", "threads", "out")) -> list[str]:
    """`rss train` flags that parse back to ``args``: one for each field off TrainArgs' default, and for the
    fields in ``always`` (`rss demo`'s defaults of --threads and --out are not `rss train`'s)."""
    default, flags = TrainArgs(), []
    for field in dataclasses.fields(TrainArgs):
        value, flag = getattr(args, field.name), "--" + field.name.replace("_", "-")
        if value == getattr(default, field.name) and field.name not in always:
            continue
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, tuple):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]  # None too: tyro reads `None` as None
    return flags


def run(argv: list[str], log: Path, what: str) -> dict:
    """Run one training to the end; its final.json (the CLI's own errors are shown if it fails)."""
    out(f"[bench loop] {what}: rss {' '.join(argv)}")
    started = time.perf_counter()
    with log.open("w") as f:
        code = subprocess.call([sys.executable, "-m", "rss.cli", *argv], stdout=f, stderr=subprocess.STDOUT)
    if code != 0:
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"the {what} run failed (exit {code}); end of {log}:\n{tail}")
    run_out = Path(argv[argv.index("--out") + 1])
    final = json.loads((run_out / "final.json").read_text())
    out(f"[bench loop] {what}: {final['sec_per_step']:.3f} s/step, val mIoU {final['val_miou']:.4f} "
        f"({time.perf_counter() - started:.0f} s with start-up and evaluation)")
    return final


def main(argv: list[str]) -> int:
    args = parse(LoopArgs, argv, "rss bench loop", __doc__.split("\n\n")[0])
    root = Path(args.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    local = run(["train", *train_flags(args.train_args("in-process"))], root / "in-process.log", "in-process")
    remote = run(["demo", *train_flags(args.train_args("remote"))], root / "remote.log", "remote")
    figures = {
        "in_process_steps_per_s": round(1 / local["sec_per_step"], 3),
        "remote_steps_per_s": round(1 / remote["sec_per_step"], 3),
        "in_process_val_miou": local["val_miou"], "remote_val_miou": remote["val_miou"],
    }
    figures["ratio"] = round(figures["remote_steps_per_s"] / figures["in_process_steps_per_s"], 3)
    gap = abs(figures["remote_val_miou"] - figures["in_process_val_miou"])
    counts = remote["rewards"]
    out()
    out(f"| loop | steps/s | val mIoU at {args.steps} steps | reward latency ms |")
    out("| --- | --- | --- | --- |")
    out(f"| in-process | {figures['in_process_steps_per_s']:.2f} | {figures['in_process_val_miou']:.4f} | - |")
    out(f"| remote, `--max-inflight {args.max_inflight}` | {figures['remote_steps_per_s']:.2f} | "
        f"{figures['remote_val_miou']:.4f} | {counts.get('reward_latency_ms', 0):.0f} |")
    out()
    out(f"ratio remote / in-process: {figures['ratio']:.2f} (target >= {RATIO_TARGET}: "
        f"{'met' if figures['ratio'] >= RATIO_TARGET else 'MISSED'}); val mIoU gap {gap:.4f} "
        f"(target <= {MIOU_TOLERANCE}: {'met' if gap <= MIOU_TOLERANCE else 'MISSED'})")
    out(f"remote rewards: posted {counts.get('posted', 0)}, applied {counts.get('applied', 0)}, "
        f"duplicates {counts.get('duplicates', 0)}, late {counts.get('late', 0)}, "
        f"dropped {counts.get('dropped_stale', 0)}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        out(f"wrote {args.json}")
    return 0
