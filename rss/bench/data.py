"""`rss bench data`: the memory and time a folder dataset costs the learner, per --data-workers, side by side.

It writes a VOC-layout folder of ``--images`` synthetic images at ``--size`` (smooth colour fields
with 1-3 labelled rectangles, 21 classes; kept, and reused when it is there) and runs ``rss train
--objective ce`` for ``--steps`` steps on it once per ``--workers`` value, each in its own process.
It samples the summed PSS (shared pages split between the processes that share them) of the
trainer and its DataLoader workers every 0.1 s and reports the peak, with the wall time. The
default is the measurement in docs/learner.md: 2,000 images at 512x512, batch 16, 3 steps.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rss.bench.args import BenchArgs, parse
from rss.procs import children


@dataclass
class DataArgs(BenchArgs):
    """`rss bench data`: the memory and time a folder dataset costs the learner, per --data-workers."""

    root: str = "runs/bench-data/voc"
    """the VOC-layout folder (written when it has no train split yet)"""
    images: int = 2000
    """training images in the folder"""
    size: int = 512
    """image side in pixels (the runs train at this --image-size)"""
    steps: int = 3
    """CE steps of each run"""
    batch_size: int = 16
    """images per step"""
    workers: tuple[int, ...] = (0, 2)
    """--data-workers of the runs, one run each"""
    out: str = "runs/bench-data"
    """folder of the runs' outputs"""

    def validate(self) -> None:
        super().validate()
        for name in ("images", "size", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.workers or min(self.workers) < 0:
            raise ValueError("--workers needs one or more values >= 0")


def write_folder(root: Path, images: int, size: int) -> None:
    """A VOC-layout split `train` of ``images`` images (val: the first 16), unless ``root`` has one already."""
    from PIL import Image

    split = root / "ImageSets/Segmentation"
    if (split / "train.txt").is_file():
        return
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    ids = []
    for i in range(images):
        label = np.zeros((size, size), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            y0, x0 = rng.integers(0, max(1, size - size // 4), 2)
            h, w = rng.integers(max(1, size // 12), max(2, size // 4), 2)
            label[y0:y0 + h, x0:x0 + w] = rng.integers(1, 21)
        image = np.stack([(xx + i) % 256, (yy * 2) % 256, label * 12], -1).astype(np.uint8)
        name = f"{i:06d}"
        Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg", quality=80)
        Image.fromarray(label).save(root / "SegmentationClass" / f"{name}.png")
        ids.append(name)
    (split / "val.txt").write_text("\n".join(ids[:16]) + "\n")
    (split / "train.txt").write_text("\n".join(ids) + "\n")  # last: its presence says the folder is complete


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    found = [pid]
    for child in children(pid) or []:
        found += process_tree(child)
    return found


def measure(args: DataArgs, workers: int) -> dict:
    """One `rss train` run: its peak summed PSS, its wall time, and how many processes were alive at the peak."""
    out = Path(args.out) / f"workers-{workers}"
    command = [sys.executable, "-m", "rss.cli", "train", "--dataset", "voc", "--data-root", args.root,
               "--image-size", str(args.size), "--objective", "ce", "--steps", str(args.steps), "--batch-size",
               str(args.batch_size), "--eval-every", str(args.steps), "--checkpoint-every", str(args.steps),
               "--threads", "1", "--no-progress", "--data-workers", str(workers), "--out", str(out)]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak, alive = 0, 1
    while proc.poll() is None:
        pids = process_tree(proc.pid)
        total = sum(pss_kib(p) for p in pids)
        if total > peak:
            peak, alive = total, len(pids)
        time.sleep(0.1)
    error = proc.stderr.read().decode()
    if proc.returncode:
        raise RuntimeError(f"rss train --data-workers {workers} exited with {proc.returncode}:\n{error[-2000:]}")
    return {"workers": workers, "peak_pss_mib": round(peak / 1024, 1), "processes": alive,
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str]) -> int:
    args = parse(DataArgs, argv, "rss bench data", __doc__.split("\n\n")[0])
    print(f"folder: {args.images} images of {args.size}x{args.size} in {args.root}", flush=True)  # noqa: T201
    write_folder(Path(args.root), args.images, args.size)
    rows = []
    for workers in args.workers:
        rows.append(measure(args, workers))
        row = rows[-1]
        print(f"--data-workers {workers}: peak {row['peak_pss_mib']:.0f} MiB over {row['processes']} "  # noqa: T201
              f"processes, {row['seconds']:.0f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "args": asdict(args)}, indent=2) + "\n")
    return 0
