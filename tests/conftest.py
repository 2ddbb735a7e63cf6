"""Shared fixtures: tiny datasets written in the standard layouts, and the CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from learner.data.base import voc_palette

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """A VOC-2012-layout folder: 6 train / 2 val images of 40x48, palette labels with a 255 border."""
    return write_voc(tmp_path)


def write_voc(tmp_path: Path) -> Path:
    """Write the `voc_root` fixture's folder under ``tmp_path``; returns its root."""
    root = tmp_path / "VOC2012"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "SegmentationClass").mkdir()
    rng = np.random.default_rng(0)
    ids = [f"2007_{i:06d}" for i in range(8)]
    for n, image_id in enumerate(ids):
        label = np.zeros((40, 48), np.uint8)
        label[10:30, 8 + n : 30 + n] = 1 + n % 3  # a box of class 1..3
        label[0, :] = 255  # VOC's "void" border
        image = rng.integers(0, 80, (40, 48, 3), dtype=np.uint8)
        image[label == 1 + n % 3] += 150
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        im = Image.fromarray(label, mode="P")
        im.putpalette(voc_palette().flatten().tolist())
        im.save(root / "SegmentationClass" / f"{image_id}.png")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids[:6]) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids[6:]) + "\n")
    return root


def run_rss(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed `rss` entry point in a subprocess, one torch thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "learner.cli", *args], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=timeout,
    )
