"""Argument checks shared by the image-quality metrics (one clear error per bad input)."""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from ..hu import check_hu


def is_number(v) -> bool:
    """A finite real number (not a bool)."""
    real = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
    return real and math.isfinite(float(v))


def positive(v, name: str) -> float:
    """``v`` as a float, or an InputError naming ``name`` unless it is a finite positive number."""
    if not is_number(v) or float(v) <= 0:
        raise InputError(f"{name} must be a positive number, got {v!r}")
    return float(v)


def stack(x, name: str) -> np.ndarray:
    """A 2-D image or a (K, H, W) ensemble as float64 (K, H, W); NaN, inf, empty or 4-D refused."""
    arr = check_hu(x, name=name).astype(np.float64)
    return arr[None] if arr.ndim == 2 else arr


def pixel_pair(pixel_size_mm) -> tuple[float, float]:
    """A pixel size (one number, or (row, col) spacings) as (dy, dx) in mm."""
    if isinstance(pixel_size_mm, (tuple, list, np.ndarray)):
        vals = list(np.ravel(pixel_size_mm))
        if len(vals) != 2:
            raise InputError(f"pixel_size_mm must be one number or a (row, col) pair, got {pixel_size_mm!r}")
        return positive(vals[0], "pixel_size_mm"), positive(vals[1], "pixel_size_mm")
    px = positive(pixel_size_mm, "pixel_size_mm")
    return px, px


def point(center, name: str = "center") -> tuple[float, float]:
    """A (row, col) position in pixels as two floats."""
    try:
        vals = [float(v) for v in np.ravel(np.asarray(center, dtype=np.float64))]
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a (row, col) pair of numbers, got {center!r}") from exc
    if len(vals) != 2 or not all(math.isfinite(v) for v in vals):
        raise InputError(f"{name} must be a (row, col) pair of finite numbers, got {center!r}")
    return vals[0], vals[1]
