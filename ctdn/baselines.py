"""Classical denoisers the learnt models are compared against: NL-means, total variation, BM3D.

Each works on the HU window mapped to [0, 1] (the metric scale) and returns HU. The noise level
they are given is in HU; the study passes the true one (generous to the baselines) and tunes
their strength per dose on separate slices with :func:`tune`.
"""

from __future__ import annotations

import numpy as np

from .errors import MissingDependencyError
from .hu import HU_MAX, HU_MIN, check_hu

__all__ = ["nlmeans", "tv", "bm3d", "tune", "METHODS"]

_SPAN = HU_MAX - HU_MIN


def _to01(hu) -> np.ndarray:
    return ((np.clip(check_hu(hu, ndim=(2,)), HU_MIN, HU_MAX) - HU_MIN) / _SPAN).astype(np.float64)


def _to_hu(x: np.ndarray) -> np.ndarray:
    return (x * _SPAN + HU_MIN).astype(np.float32)


def _skimage():
    try:
        from skimage import restoration
    except ImportError as exc:
        raise MissingDependencyError(
            "the NL-means and TV baselines need scikit-image: pip install scikit-image"
        ) from exc
    return restoration


def nlmeans(hu, sigma_hu: float, h: float = 0.8) -> np.ndarray:
    """scikit-image non-local means (fast mode, 5x5 patches, 13x13 search), filter strength ``h * sigma``."""
    s = sigma_hu / _SPAN
    y = _skimage().denoise_nl_means(
        _to01(hu), h=h * s, sigma=s, fast_mode=True, patch_size=5, patch_distance=6
    )
    return _to_hu(y)


def tv(hu, weight: float) -> np.ndarray:
    """scikit-image total variation (Chambolle) with ``weight`` on the [0, 1] scale."""
    return _to_hu(_skimage().denoise_tv_chambolle(_to01(hu), weight=weight))


def bm3d(hu, sigma_hu: float) -> np.ndarray:
    """BM3D (the ``bm3d`` package, all stages) for white noise of std ``sigma_hu``."""
    try:
        import bm3d as _bm3d
    except ImportError as exc:
        raise MissingDependencyError("the BM3D baseline needs the bm3d package: pip install bm3d") from exc
    return _to_hu(np.asarray(_bm3d.bm3d(_to01(hu), sigma_psd=sigma_hu / _SPAN), dtype=np.float64))


METHODS = {"nlmeans": nlmeans, "tv": tv, "bm3d": bm3d}


def tune(fn, grid, pairs, score) -> tuple[float, list[float]]:
    """The ``grid`` value maximising the mean ``score(fn(ldct, value), ref)`` over ``pairs``.

    Returns that value and the mean score of every grid value.
    """
    means = [float(np.mean([score(fn(x, v), ref) for x, ref in pairs])) for v in grid]
    return grid[int(np.argmax(means))], means
