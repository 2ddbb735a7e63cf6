"""`rss bench loop`: the same training in-process and through the reward service, side by side.

One run trains twice with identical flags and seed, one after the other on this machine:

1. in-process: `rss train` with ground-truth rewards computed in the learner (one torch thread);
2. remote: `rss demo`, i.e. its own redis-server, `rss serve` (one worker process) and the
   learner with `--reward-source remote` on loopback, also one torch thread.

It reports learner steps/s (from each run's `sec_per_step`, which excludes evaluation and
start-up) and the final val mIoU of each, next to the loop issue's targets: the remote loop
keeps >= 80% of the in-process steps/s, with the same val mIoU within 0.01. With
`--max-inflight 0` (the default) the two runs apply the very same rewards, so their mIoU are
equal; `--max-inflight N` pipelines the remote run. Other flags go to both trainings.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RATIO_TARGET = 0.8
MIOU_TOLERANCE = 0.01


def out(line: str = "") -> None:
    print(line, flush=True)  # noqa: T201


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="rss bench loop", description=__doc__.split("\n\n")[0],
        epilog="Other flags go to both trainings (e.g. --batch-size 8); see `rss train --help`.")
    parser.add_argument("--steps", type=int, default=150, help="training steps of each run")
    parser.add_argument("--max-inflight", type=int, default=0, help="the remote run's --max-inflight")
    parser.add_argument("--out", default="runs/bench-loop", help="folder for both runs' reports and logs")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    args, train_flags = parser.parse_known_args(argv)
    if args.steps < 1 or args.max_inflight < 0:
        raise ValueError("--steps must be >= 1 and --max-inflight >= 0")
    return args, train_flags


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
    args, train_flags = parse(argv)
    root = Path(args.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    common = ["--steps", str(args.steps), "--eval-every", str(args.steps), "--no-progress", *train_flags]
    local = run(["train", "--out", str(root / "in-process"), "--threads", "1", *common],
                root / "in-process.log", "in-process")
    remote = run(["demo", "--out", str(root / "remote"), "--max-inflight", str(args.max_inflight), *common],
                 root / "remote.log", "remote")
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
