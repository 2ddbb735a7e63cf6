"""Speed flags of the training forward: mixed precision (`--amp`), channels-last layout, torch.compile.

Autocast covers the model's forward and nothing else: `Autocast` returns float32 logits, so the
policy's softmax, sampling, log-probs and advantages (learner/policy.py, learner/advantages.py) run in
float32 whatever --amp is. Validation and the gallery call the plain model, in float32.
"""

from __future__ import annotations

import torch
from torch import nn

from learner.config import TrainArgs

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(args: TrainArgs, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of --amp on ``device`` (None: off); refuses fp16 where only CUDA has it."""
    if args.amp == "fp16" and device.type != "cuda":
        raise ValueError(f"--amp fp16 needs a CUDA device (this run is on {device.type}); use --amp bf16 there")
    return DTYPES.get(args.amp)


class Autocast(nn.Module):
    """``net``'s forward under autocast (and channels-last inputs), its outputs cast back to float32."""

    def __init__(self, net: nn.Module, device_type: str, dtype: torch.dtype | None, channels_last: bool) -> None:
        super().__init__()
        self.net, self.device_type, self.dtype, self.channels_last = net, device_type, dtype, channels_last

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device_type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            out = self.net(x, **kwargs)
        return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()


def training_model(core: nn.Module, args: TrainArgs, device: torch.device, ddp: bool) -> nn.Module:
    """What the training forwards call: ``core`` (already moved, channels-last when asked) wrapped for DDP,
    compiled, and under autocast, in that order; ``core`` itself stays what checkpoints save."""
    model = torch.nn.parallel.DistributedDataParallel(core) if ddp else core
    if args.compile:
        model = torch.compile(model)
    dtype = amp_dtype(args, device)
    if dtype is None and not args.channels_last:
        return model
    return Autocast(model, device.type, dtype, args.channels_last)


def grad_scaler(args: TrainArgs, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16's loss scaling (bf16 has float32's range and needs none)."""
    return torch.amp.GradScaler(device.type) if args.amp == "fp16" else None
