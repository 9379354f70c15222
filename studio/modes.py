"""How a model runs for a block of code: eval mode (optionally frozen weights) and autocast precision.

One precision vocabulary for YAML and code: "auto" (bf16 autocast on CUDA, fp32 elsewhere), "fp32",
"bf16" and "fp16" (autocast to that dtype on the tensors' device).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable, Sequence

import torch
from torch import nn

from studio.errors import StudioError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@contextmanager
def eval_mode(model: nn.Module, freeze: bool = False):
    """The model in eval mode (batch norm on running stats; with `freeze`, no weight gradients either) for
    the block, then exactly as it was."""
    training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()] if freeze else []
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(training)


def cpu_training_precision() -> str:
    """Lightning's precision for training on this CPU: bf16 autocast where the CPU computes bf16 natively
    (AVX512-BF16 or AMX), fp32 elsewhere. Measured (bench/bench_precision.py): bf16 trains small_cnn 1.5x
    faster than fp32 on an AVX-512 CPU at the same accuracy, but 2.8x slower (the diffusion U-Net 8x) on an AVX2 CPU, which
    emulates it. The trainer and diffusion configs ask for it as ${cpu_precision:}."""
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16-mixed" if native else "32-true"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise StudioError(f"unknown precision {precision!r}; choose from: {', '.join(PRECISIONS)}")
    return precision


def autocast(device: torch.device | str, precision: str = "auto"):
    """The autocast context for `precision` on `device` (a null context for fp32)."""
    device = torch.device(device)
    precision = check_precision(precision)
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


@torch.no_grad()
def forward_batches(model: nn.Module, images: torch.Tensor, hooks: Sequence[tuple[nn.Module, Callable]],
                    batch_size: int = 500) -> None:
    """Run `model` over `images` in batches, in eval mode on the model's device, with the forward hooks
    (module, hook) registered for the duration: what the hooks record is the result."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    device = next(model.parameters()).device
    try:
        with eval_mode(model):
            for start in range(0, len(images), batch_size):
                model(images[start:start + batch_size].to(device))
    finally:
        for handle in handles:
            handle.remove()
