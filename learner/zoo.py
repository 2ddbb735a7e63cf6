"""Networks from other libraries behind the UNet's contract: [0, 1] RGB in, logits at input size out.

`tv:<name>`: torchvision's segmentation models (extra ``tv``); `smp:<Arch>:<encoder>`:
segmentation-models-pytorch (extra ``smp``). Both are built with no pretrained weights (nothing is
downloaded at run time); `--weights` loads a file the user has (learner/weights.py).

These use BatchNorm, unlike the UNet's GroupNorm. The training loop is correct for it: the model is in
train mode for every forward that samples masks and for the forward whose gradient is taken (the same
one on-policy, so the sampled policy is the differentiated one), and in eval mode, on running
statistics, for validation, the gallery and --image-pool's look at candidates. What BatchNorm does
change: a train-mode forward depends on the rest of its batch, DDP ranks each normalise over their
own batch (their running statistics are rank 0's, broadcast each forward), and torchvision's DeepLabV3
cannot take a batch of one image in train mode (its image-pooling branch normalises a 1 x 1 map), so
`TrainArgs.validate` refuses --batch-size 1 for it.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

TV_MODELS = ("lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "fcn_resnet50")
# Their torchvision builders make an auxiliary head (on the backbone's 'aux' features) with aux_loss=True.
TV_AUX = ("deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "fcn_resnet50")
# Keeps the stand-in operator schemas of `import_torchvision` registered for the life of the process.
_TV_SHIM: list = []


class Normalized(nn.Module):
    """``net`` behind ImageNet normalisation of [0, 1] RGB inputs, padded to a multiple of ``pad_to``
    (smp's encoders need one) and cropped back; returns the logits tensor at input size, or with
    ``aux=True`` (logits, auxiliary logits) from a torchvision model built with its auxiliary head.

    ``net`` keeps its own library's key names under ``net.``: learner/weights.py loads files into it."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, pad_to: int = 1) -> None:
        super().__init__()
        self.net, self.pad_to = net, pad_to
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h, w = x.shape[-2:]
        x = (x - self.mean) / self.std
        pad_h, pad_w = (-h) % self.pad_to, (-w) % self.pad_to
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        out = self.net(x)
        if isinstance(out, dict):  # torchvision: {'out': ..., 'aux': ...} (aux only with aux_loss=True)
            if aux:
                return out["out"][..., :h, :w], out["aux"][..., :h, :w]
            out = out["out"]
        elif aux:
            raise ValueError("this model has no auxiliary head (--aux-weight needs tv:deeplabv3_* or tv:fcn_*)")
        return out[..., :h, :w]


def import_torchvision():
    """torchvision, importable also where its C++ operators cannot load.

    PyPI's Linux torchvision wheel links its operators (nms, roi_align, ...) against CUDA torch; next to
    the CPU torch this project pins, that library fails to load, and torchvision 0.28's import then stops
    at registering a fake kernel for ``torchvision::nms``, which is not guarded like the others. The
    segmentation models need none of those operators: after that one failure, the two schemas it names
    are defined (calling them would fail) and the import is tried once more."""
    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _TV_SHIM.append(lib)
        import torchvision
    except ImportError as exc:
        raise ImportError("torchvision is not installed: pip install 'rss[tv]'") from exc
    return torchvision


def build_tv(name: str, num_classes: int, aux: bool = False) -> Normalized:
    """torchvision's segmentation model ``name`` (one of TV_MODELS) with ``num_classes`` outputs, random
    init; ``aux``: with its auxiliary head (TV_AUX only)."""
    if name not in TV_MODELS:
        raise ValueError(f"--arch tv:{name}: unknown torchvision model; choose one of "
                         + ", ".join(f"tv:{n}" for n in TV_MODELS))
    if aux and name not in TV_AUX:
        raise ValueError(f"--aux-weight: tv:{name} has no auxiliary head (these do: {', '.join(TV_AUX)})")
    try:
        segmentation = import_torchvision().models.segmentation
    except ImportError as exc:
        raise ValueError(f"--arch tv:{name} needs torchvision: pip install 'rss[tv]'") from exc
    # weights=None, weights_backbone=None: nothing is downloaded at run time.
    extra = {"aux_loss": aux} if name in TV_AUX else {}
    net = getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=num_classes, **extra)
    return Normalized(net)


def build_smp(spec: str, num_classes: int) -> Normalized:
    """``<Arch>[:<encoder>]`` (default encoder resnet18) from segmentation-models-pytorch, random init."""
    try:
        import_torchvision()  # smp imports timm, which imports torchvision
        import segmentation_models_pytorch as smp
    except ImportError as exc:
        raise ValueError(f"--arch smp:{spec} needs segmentation-models-pytorch: pip install 'rss[smp]'") from exc
    name, _, encoder = spec.partition(":")
    if not hasattr(smp, name):
        raise ValueError(f"--arch smp:{spec}: segmentation-models-pytorch has no architecture {name!r}")
    encoder = encoder or "resnet18"
    try:  # encoder_weights=None: nothing is downloaded at run time
        net = getattr(smp, name)(encoder_name=encoder, encoder_weights=None, classes=num_classes)
    except KeyError as exc:  # smp's message lists every encoder it has: a few of them are enough here
        names = smp.encoders.get_encoder_names()
        raise ValueError(f"--arch smp:{spec}: segmentation-models-pytorch has no encoder {encoder!r} (it has "
                         f"{len(names)}, e.g. {', '.join(names[:4])}; timm's as tu-<name>)") from exc
    return Normalized(net, pad_to=32)  # the encoders downsample 32x
