"""The torch backend: eager PyTorch on CPU or CUDA (the reference every other backend is checked against)."""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..errors import InputError

NAME = "torch"
PRIORITY = {"cpu": 10, "cuda": 10}
PRECISIONS = ("fp32", "fp16", "bf16")


def unavailable(device: torch.device) -> str | None:
    if device.type == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available to this torch build"
    if device.type not in ("cpu", "cuda"):
        return f"device type {device.type!r} is not supported"
    return None


class Runner:
    """Runs the model under ``torch.inference_mode``; fp16/bf16 through autocast (norms stay fp32)."""

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str | None = None) -> None:
        precision = precision or "fp32"
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision != "fp32" and device.type == "cpu":
            raise InputError(f"{precision} on the CPU would be slower and less exact; use fp32 there")
        self.device, self.precision = device, precision
        # A private copy: the caller's module is never moved to another device or changed.
        self.model = copy.deepcopy(model).to(device).eval().requires_grad_(False)
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        # channels_last: oneDNN's convolutions skip a layout reorder per layer (measured 80 -> 67 ms
        # per 512x512 slice for `edge` on the 2-core CPU).
        self.memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)

    def __call__(self, x: np.ndarray, dose: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            # A buffer of torch's own (aligned as its allocator aligns), not the numpy one: oneDNN's
            # vectorised kernels take other paths on other alignments, and a numpy buffer's alignment
            # varies between processes, so the last bits of the output would too.
            xt = torch.from_numpy(x).to(self.device, non_blocking=True)
            xt = xt.clone(memory_format=self.memory_format)
            dt = torch.from_numpy(dose).to(self.device)
            with torch.autocast(
                self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None
            ):
                y = self.model(xt, dt)
            return y.float().cpu().numpy()
