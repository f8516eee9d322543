"""ctdn: anatomy-aware denoising of low-dose CT.

Submodules are imported lazily so ``import ctdn`` stays cheap:

- :mod:`ctdn.hu` — HU window conventions.
- :mod:`ctdn.phantoms` — procedural anatomical phantoms in HU.
- :mod:`ctdn.sim` — projection-domain low-dose simulation and noise insertion.
- :mod:`ctdn.io` — DICOM series in and out.
- :mod:`ctdn.datasets` — Mayo, .npy and synthetic datasets of (LDCT, NDCT, dose) pairs.
- :mod:`ctdn.metrics` — PSNR, SSIM, RMSE with the project's window conventions.
- :mod:`ctdn.iq` — task-based image quality (AAPM TG-233): NPS, TTF, model-observer d', lesion contrast.
- :mod:`ctdn.dose` — the dose of a scan from its image and DICOM header (:func:`estimate_dose`).
- :mod:`ctdn.qa_phantom` — a TG-233-style QA phantom (water cylinder, inserts) and its simulation.
- :mod:`ctdn.models` — the reference NAFBlock, NAFNet teacher/student, presets, checkpoints.
- :mod:`ctdn.backends` — the inference backend registry.

The main entry points: :func:`denoise`, :class:`Denoiser` and :func:`load_model`.
"""

from __future__ import annotations

import importlib

from ._version import __version__
from .errors import CTDNError

__all__ = [
    "__version__",
    "CTDNError",
    "denoise",
    "Denoiser",
    "load_model",
    "estimate_dose",
    "DoseEstimate",
    "hu",
    "phantoms",
    "sim",
    "io",
    "datasets",
    "metrics",
    "iq",
    "dose",
    "qa_phantom",
    "models",
    "backends",
    "errors",
]

_SUBMODULES = {
    "hu",
    "phantoms",
    "sim",
    "io",
    "datasets",
    "metrics",
    "iq",
    "dose",
    "qa_phantom",
    "viz",
    "errors",
    "cli",
    "models",
    "backends",
    "inference",
}
_FUNCTIONS = {
    "denoise": "ctdn.inference",
    "Denoiser": "ctdn.inference",
    "load_model": "ctdn.models",
    "estimate_dose": "ctdn.dose",
    "DoseEstimate": "ctdn.dose",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"ctdn.{name}")
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(_FUNCTIONS[name]), name)
    raise AttributeError(f"module 'ctdn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
