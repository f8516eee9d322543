"""Fused Triton kernels for the NAFBlock (installed as ``ctdn.kernels``).

``fuse(model)`` returns the model with every NAFBlock (and the dose scale/shift in front of it)
run by fused kernels (``nafblock.py``: three per block, five for blocks wider than 128 channels,
32 in fp32), sharing the weights; ``python -m ctdn.kernels.resources`` compiles them for a GPU
that is not there and reports their shared memory, registers and spills. Triton is optional
(``pip install "ctdn[triton]"``): importing this package is cheap and never imports triton;
``fuse`` does.
Kernels run on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (exact but slow: for
tests on small shapes).
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import os

import torch
from torch import nn

__all__ = [
    "fuse",
    "unavailable",
    "interpreting",
    "path_for",
    "check_path",
    "padded_channels",
    "PATHS",
    "TRAFFIC",
]

# Widest C (padded to a power of two) the three-pass fused path runs; wider blocks take the split-ln
# path. In fp16/bf16 at CP = 128 the fused kernels fit an H100 with BLOCK_P = 32 and 64 on 8 warps,
# at 256 pass 3 spills in every config; in fp32 (IEEE dots: twice the registers per operand) pass 3
# spills with every config from CP = 64 (docs/kernels.md, made by ``python -m ctdn.kernels.resources``).
FUSED_MAX_C = 128
FUSED_MAX_C_FP32 = 32
# C values per pixel each path moves through memory, reads and writes (kernels/nafblock.py).
TRAFFIC = {"fused": 9, "split": 14, "split-ln": 18}  # split-ln: + each LayerNorm pass reads C, writes C


def padded_channels(c: int) -> int:
    """C rounded up to a power of two, at least 16 (the smallest ``tl.dot``): the fused tiles' rows."""
    return max(16, 1 << (c - 1).bit_length())


def path_for(c: int, dtype: torch.dtype = torch.float16) -> str:
    """``"fused"`` (three passes) for blocks of up to ``FUSED_MAX_C`` channels (``FUSED_MAX_C_FP32``
    in fp32), else ``"split-ln"`` (seven). Needs no triton.

    On an H200 in fp16, from CUDA graphs (docs/kernels.md): at C = 128 fused 18.0 us a block, split-ln
    24.0, split 25.8 (batch 1); at C = 256 split-ln 47 / 372 us (batch 1 / 16), split 56 / 566, fused
    93 / 1110. ``"split"`` moves less memory (14 C a pixel, not 18) but is never picked: its GEMMs
    normalise their operand in the K loop, once per output tile, and lose more than that saves.
    """
    widest = FUSED_MAX_C_FP32 if dtype == torch.float32 else FUSED_MAX_C
    return "fused" if padded_channels(c) <= widest else "split-ln"


PATHS = ("fused", "split", "split-ln")


def check_path(path: str | None) -> str | None:
    """``path`` if it names a path (``PATHS``) or is None (chosen per block), else ValueError."""
    if path is not None and path not in PATHS:
        raise ValueError(f"path must be one of {', '.join(map(repr, PATHS))} or None, got {path!r}")
    return path


def interpreting() -> bool:
    """True under ``TRITON_INTERPRET=1``: kernels run on CPU tensors through Triton's interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _dist(dist: str) -> str:
    """The installed version of a distribution, without importing it ("" when not installed)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _version(dist: str) -> tuple[int, ...]:
    """(major, minor) of an installed distribution; () when unknown."""
    try:
        return tuple(int(v) for v in _dist(dist).split(".")[:2])
    except ValueError:
        return ()


def unavailable() -> str | None:
    """Why the fused kernels cannot run here (None: they can)."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'ctdn[triton]'; it comes with CUDA builds of torch)"
    if interpreting():
        triton_v, numpy_v = _version("triton"), _version("numpy")
        installed = f"installed: triton {_dist('triton')}, numpy {_dist('numpy')}"
        # triton < 3.4 asks for a GPU driver when an autotuner is made (nafblock makes them on import).
        if triton_v and triton_v < (3, 4) and not torch.cuda.is_available():
            return f"TRITON_INTERPRET=1 needs triton >= 3.4 on a machine without a GPU driver ({installed})"
        # The interpreter of triton < 3.7 turns a scalar kernel argument used as a loop bound into a
        # Python int through a 1-element array, which numpy >= 2.4 refuses (every kernel loops to C).
        if triton_v and numpy_v and triton_v < (3, 7) and numpy_v >= (2, 4):
            return (
                f"TRITON_INTERPRET=1 needs triton >= 3.7 with numpy >= 2.4 ({installed}): "
                "upgrade triton or install numpy < 2.4"
            )
    return None


def fuse(model: nn.Module, path: str | None = None) -> nn.Module:
    """``model`` with every reference NAFBlock replaced by a ``FusedNAFBlock`` (weights shared).

    The caller's model is not changed: the returned one is a new module tree whose parameters and
    buffers are the same tensors. A ``CondBlock`` (dose FiLM + NAFBlock) becomes one fused block.
    ``path``: ``"fused"`` (three passes), ``"split-ln"`` (seven kernels: GEMMs, with each
    LayerNorm a pass of its own; for wide blocks), ``"split"`` (five: the LayerNorms inside the GEMMs;
    slower on an H200, never picked by default) or None: by each block's channel count and the
    input's dtype (``nafblock.path_for``).
    """
    check_path(path)
    why = unavailable()
    if why is not None:
        from ctdn.errors import MissingDependencyError

        raise MissingDependencyError(why)
    from ctdn.models.layers import NAFBlock
    from ctdn.models.nafnet import CondBlock

    from .nafblock import FusedNAFBlock

    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    out = copy.deepcopy(model, memo=shared)

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, CondBlock) and isinstance(child.block, NAFBlock):
                setattr(parent, name, FusedNAFBlock(child.block, child.film, path))
            elif isinstance(child, NAFBlock):
                setattr(parent, name, FusedNAFBlock(child, path=path))
            else:
                swap(child)

    if isinstance(out, NAFBlock) or (isinstance(out, CondBlock) and isinstance(out.block, NAFBlock)):
        if isinstance(out, CondBlock):
            return FusedNAFBlock(out.block, out.film, path)
        return FusedNAFBlock(out, path=path)
    swap(out)
    return out
