"""Checkpoints: one dict (model, optimizer, step, PSR schedule, args), loaded with weights_only; and a
run's starting weights from another run or a state dict (``--init-from``)."""

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


def load_weights(model: torch.nn.Module, path: str | Path, device: torch.device | str = "cpu") -> str:
    """``--init-from``: the weights of an RSS checkpoint (another run, e.g. CE on a few labelled images)
    or of a plain state dict, into ``model``; refuses one of another architecture, naming what differs.

    Returns what was loaded, for the log. Only weights: the optimizer, step and schedule start anew."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--init-from {path}: no such file")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike for a file that is not its own
        raise ValueError(f"--init-from {path}: not a PyTorch checkpoint or state dict ({type(exc).__name__})") from exc
    kind = "state dict"
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state, kind = state["model"], f"checkpoint of step {state.get('step', '?')}"
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"--init-from {path}: holds neither an RSS checkpoint nor a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from a DDP-wrapped model
    own = model.state_dict()
    missing, unknown = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    problems = [f"{len(missing)} tensors missing (e.g. {missing[0]})"] if missing else []
    problems += [f"{len(unknown)} unknown (e.g. {unknown[0]})"] if unknown else []
    problems += [f"{k} is {tuple(state[k].shape)} there, {tuple(own[k].shape)} here"
                 for k in sorted(own.keys() & state.keys()) if state[k].shape != own[k].shape][:3]
    if problems:
        raise ValueError(f"--init-from {path}: its weights do not fit this model (--arch, --width, --depth and the "
                         f"dataset's class count must match the run that saved them): {'; '.join(problems)}")
    model.load_state_dict(state)
    return f"{kind}, {len(state)} tensors"
