"""Inference backends behind one small registry.

A backend is one module here that defines ``NAME``, ``PRIORITY`` (higher runs first under
``backend="auto"``), ``unavailable(device) -> str | None`` (the reason it cannot run, or None) and
``Runner(model, device, precision)``, a callable taking a batch ``x`` (N, 1, H, W) float32 in the
model's [-1, 1] window with H, W multiples of ``model.config.multiple`` and ``dose`` (N,) float32,
and returning the network output the same way. Everything around it (HU, padding, pass-through,
batching) is :class:`ctdn.Denoiser`'s job, so a new backend only runs the network.
"""

from __future__ import annotations

import contextlib
import importlib
import logging

import torch

from ..errors import InputError, MissingDependencyError

__all__ = ["BACKENDS", "register", "unavailable", "available", "resolve", "create", "ieee_fp32"]

log = logging.getLogger("ctdn")

# name -> module (imported lazily: onnxruntime, triton and tensorrt are heavy and optional).
BACKENDS: dict[str, str] = {
    "torch": "ctdn.backends.pytorch",
    "onnxruntime": "ctdn.backends.onnxruntime",
    "openvino": "ctdn.backends.openvino",
    "tensorrt": "ctdn.backends.tensorrt",
    "aoti": "ctdn.backends.aoti",
    "triton": "ctdn.backends.triton_fused",
}


def register(name: str, module: str) -> None:
    """Add a backend module (e.g. from another package) under ``name``."""
    BACKENDS[name] = module


def _module(name: str):
    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])


def unavailable(name: str, device: torch.device) -> str | None:
    """Why backend ``name`` cannot run on ``device`` (None when it can)."""
    try:
        return _module(name).unavailable(device)
    except ImportError as exc:
        return f"not installed ({exc})"


def available(device: torch.device) -> dict[str, str | None]:
    """Every registered backend with the reason it cannot run on ``device`` (None: it can)."""
    return {name: unavailable(name, device) for name in BACKENDS}


def resolve(name: str, device: torch.device) -> str:
    """The backend to use: ``name`` if it can run, or for ``"auto"`` the fastest one that can."""
    if name == "auto":
        reasons = available(device)
        ok = [n for n, why in reasons.items() if why is None]
        if not ok:
            detail = "; ".join(f"{n}: {why}" for n, why in reasons.items())
            raise MissingDependencyError(f"no backend can run on {device} ({detail})")
        best = max(ok, key=lambda n: _module(n).PRIORITY.get(device.type, -1))
        log.info("ctdn: backend %s on %s (auto; available: %s)", best, device, ", ".join(ok))
        return best
    why = unavailable(name, device)
    if why is not None:
        raise MissingDependencyError(f"backend {name!r} cannot run on {device}: {why}")
    return name


def create(name: str, model, device: torch.device, precision: str | None = None):
    """A ready ``Runner`` of backend ``name`` for ``model`` on ``device``."""
    return _module(name).Runner(model, device, precision)


@contextlib.contextmanager
def ieee_fp32():
    """fp32 convolutions and matrix products in IEEE fp32 inside the block, the caller's flags restored.

    PyTorch lets cuDNN round fp32 convolution inputs to TF32 by default (Ampere and later GPUs): about
    3e-4 relative error, which is what an fp32 reference must not have (measured on an H200).
    """
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
