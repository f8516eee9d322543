"""ctdn: anatomy-aware denoising of low-dose CT.

Submodules are imported lazily so ``import ctdn`` stays cheap:

- :mod:`ctdn.hu` — HU window conventions.
- :mod:`ctdn.phantoms` — procedural anatomical phantoms in HU.
- :mod:`ctdn.sim` — projection-domain low-dose simulation and noise insertion.
- :mod:`ctdn.io` — DICOM series in and out.
- :mod:`ctdn.datasets` — Mayo, .npy and synthetic datasets of (LDCT, NDCT, dose) pairs.
- :mod:`ctdn.metrics` — PSNR, SSIM, RMSE with the project's window conventions.
"""

from __future__ import annotations

import importlib

from ._version import __version__
from .errors import CTDNError

__all__ = ["__version__", "CTDNError", "hu", "phantoms", "sim", "io", "datasets", "metrics", "errors"]

_SUBMODULES = {"hu", "phantoms", "sim", "io", "datasets", "metrics", "viz", "errors", "cli"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"ctdn.{name}")
    raise AttributeError(f"module 'ctdn' has no attribute {name!r}")
