"""`--weights`: a state dict the user downloaded (torchvision's, timm's, ...), into a run's backbone or its
whole model. `--init-from` (learner/checkpoint.py) is the other way in: an RSS run's own weights, same model.

The file's keys are matched two ways, and the one that fits is loaded:

- the whole model, in its library's own key names (a torchvision or smp model's ``state_dict()``): every
  tensor must be there; tensors that differ from the model's only in their first dimension (the class
  count of a head, e.g. COCO's 21) stay at their random init and are logged; an auxiliary head the run
  does not build (``aux_classifier.*``) is dropped and counted;
- the backbone alone (``backbone.*`` of a torchvision model, ``encoder.*`` of an smp one), from a
  classification network's state dict: torchvision's segmentation backbones keep their classifier's
  key names (resnet's ``layer1...``, mobilenet's ``features.N`` as ``N``), so every backbone tensor must
  be found; the classification head (``fc.*``, ``classifier.*``, ``head.*``) is dropped and counted.

A file that fits neither is refused with the closer match's missing, unexpected and misshapen keys.
BatchNorm's ``num_batches_tracked`` may be missing (torchvision's older ImageNet files lack it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from learner.zoo import Normalized

log = logging.getLogger(__name__)

BACKBONES = ("backbone.", "encoder.")  # torchvision's, segmentation-models-pytorch's
CLASSIFICATION_HEADS = ("fc.", "classifier.", "head.")
# torchvision's mobilenets keep their layers under `features.`; the segmentation backbone is that module.
SOURCE_PREFIXES = ("", "features.")
OPTIONAL = "num_batches_tracked"


@dataclass
class Match:
    """One reading of the file: what would load, what would not, and why."""

    scope: str  # "whole model" or "backbone (backbone.*)"
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    misshapen: list[str] = field(default_factory=list)
    reinit: list[str] = field(default_factory=list)  # class-count heads left at init
    dropped: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return bool(self.tensors) and not (self.missing or self.unexpected or self.misshapen)

    def problems(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.misshapen)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"--weights {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike for a file that is not its own
        raise ValueError(f"--weights {path}: not a PyTorch state dict ({type(exc).__name__})") from exc
    if isinstance(state, dict) and "format_version" in state and "schedule" in state:
        raise ValueError(f"--weights {path}: an RSS checkpoint; start from it with --init-from")
    for wrapper in ("state_dict", "model"):  # training scripts' checkpoints (torchvision references, timm)
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"--weights {path}: holds no state dict of tensors")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def match_whole(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> Match:
    m = Match("whole model")
    for key, value in state.items():
        if key not in own:
            (m.dropped if key.startswith("aux_classifier.") else m.unexpected).append(key)
        elif value.shape == own[key].shape:
            m.tensors[key] = value
        elif value.shape[1:] == own[key].shape[1:]:
            m.reinit.append(f"{key} ({value.shape[0]} -> {own[key].shape[0]})")
        else:
            m.misshapen.append(f"{key}: {tuple(value.shape)} there, {tuple(own[key].shape)} here")
    reinit = {r.split(" ")[0] for r in m.reinit}
    m.missing = [k for k in own if k not in state and k not in reinit and not k.endswith(OPTIONAL)]
    return m


def match_backbone(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], prefix: str, source: str) -> Match:
    m = Match(f"backbone ({prefix}*)")
    for key, value in state.items():
        if key.startswith(CLASSIFICATION_HEADS):
            m.dropped.append(key)
            continue
        mine = prefix + key.removeprefix(source)
        if mine not in own:
            m.unexpected.append(key)
        elif value.shape != own[mine].shape:
            m.misshapen.append(f"{key}: {tuple(value.shape)} there, {tuple(own[mine].shape)} here")
        else:
            m.tensors[mine] = value
    m.missing = [k for k in own if k.startswith(prefix) and k not in m.tensors and not k.endswith(OPTIONAL)]
    return m


def few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def load_pretrained(model: nn.Module, path: str | Path) -> str:
    """Load ``path`` into ``model``'s backbone or the whole of it (module docstring); returns what was
    loaded, for the log. Raises ValueError naming missing and unexpected keys when it fits neither."""
    path = Path(path)
    state = read_state_dict(path)
    target = model.net if isinstance(model, Normalized) else model  # the library's own key names
    own = target.state_dict()
    matches = [match_whole(state, own)]
    for prefix in BACKBONES:
        if any(k.startswith(prefix) for k in own):
            matches += [match_backbone(state, own, prefix, source) for source in SOURCE_PREFIXES]
    fitting = [m for m in matches if m.fits]
    if not fitting:
        best = min(matches, key=Match.problems)
        parts = [f"{len(best.missing)} of the model's tensors missing ({few(best.missing)})"] if best.missing else []
        parts += [f"{len(best.unexpected)} unexpected ({few(best.unexpected)})"] if best.unexpected else []
        parts += [f"{len(best.misshapen)} of another shape ({few(best.misshapen)})"] if best.misshapen else []
        scopes = list(dict.fromkeys(m.scope for m in matches))
        fits = f"does not fit the {scopes[0]}" if len(scopes) == 1 else f"fits neither the {' nor the '.join(scopes)}"
        raise ValueError(f"--weights {path}: {fits} of this --arch; read as the {best.scope}: {'; '.join(parts)}")
    m = max(fitting, key=lambda m: len(m.tensors))
    target.load_state_dict(m.tensors, strict=False)
    if m.reinit:
        log.warning("--weights %s: %d tensors of another class count stay at their random init: %s", path,
                    len(m.reinit), few(m.reinit, 4))
    notes = [f"{len(m.reinit)} left at init (class count)"] if m.reinit else []
    notes += [f"{len(m.dropped)} dropped ({few(m.dropped, 2)})"] if m.dropped else []
    return f"{m.scope}, {len(m.tensors)} tensors" + (f"; {', '.join(notes)}" if notes else "")
