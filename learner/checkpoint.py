"""Checkpoints: one dict (model, optimizer, step, PSR schedule, args), loaded with weights_only."""

from __future__ import annotations

import os
from pathlib import Path

import torch

FORMAT_VERSION = 1


def save_checkpoint(path: Path, **state: object) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format_version": FORMAT_VERSION, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    ckpt = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not an RSS checkpoint of format {FORMAT_VERSION}")
    return ckpt
