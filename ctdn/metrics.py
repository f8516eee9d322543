"""Image-quality metrics with the project's conventions (see REFERENCE.md).

Images are compared in HU; each metric first maps the HU window (default [-1000, 1000]) to [0, 1].
PSNR uses data range 1. SSIM uses an 11x11 Gaussian window (sigma 1.5, truncated at 3.5 sigma),
K1 0.01, K2 0.03, population covariances, averaged over the valid (unpadded) region: the same
number as scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1.0)``. RMSE is reported both in window units and in HU.

``convention="ldct-benchmark"`` gives instead the numbers of the LDCT benchmark of Eulig et al.
(``ldctbench.utils.metrics.Metrics``), so ctdn's figures can sit beside its published tables: both
images are shifted to HU + 1024 and clipped to [0, 2924] (air to the benchmark's bone maximum,
1900 HU), PSNR = 10 log10(2924^2 / MSE), RMSE in those units (= HU), and SSIM is scikit-image's
default ``structural_similarity(ref, img, data_range=2924)``: a 7x7 uniform window, sample
covariances (N / (N - 1)), K1 0.01, K2 0.03, averaged over the pixels 3 or more from the border.
The ``window`` argument belongs to the ctdn convention only. Identical images give an infinite
PSNR in both (the benchmark adds 1e-8 to the MSE, which changes nothing else).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError
from .hu import HU_MAX, HU_MIN, check_hu, hu_to_01

__all__ = ["mse", "rmse", "rmse_hu", "psnr", "ssim", "noise_std", "SOFT_TISSUE", "CONVENTIONS"]

SOFT_TISSUE = (-160.0, 240.0)  # level 40, width 400
CONVENTIONS = ("ctdn", "ldct-benchmark")
LDCT_BENCHMARK_OFFSET = 1024.0  # HU + 1024 ...
LDCT_BENCHMARK_RANGE = 2924.0  # ... clipped to [0, 2924]: the benchmark's data range
_DEFAULT_WINDOW = (HU_MIN, HU_MAX)


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = check_hu(a, name="image")
    b = check_hu(b, name="reference")
    if a.shape != b.shape:
        raise InputError(f"image shape {a.shape} differs from reference shape {b.shape}")
    return a, b


def _scale(window, convention: str) -> tuple[float, float]:
    """The HU interval mapped to [0, 1] under ``convention`` (its width is the data range in HU)."""
    if convention == "ctdn":
        return float(window[0]), float(window[1])
    if convention == "ldct-benchmark":
        if tuple(window) != _DEFAULT_WINDOW:
            raise InputError(
                "window applies to the ctdn convention only; the ldct-benchmark convention always "
                "uses HU + 1024 clipped to [0, 2924]"
            )
        return -LDCT_BENCHMARK_OFFSET, LDCT_BENCHMARK_RANGE - LDCT_BENCHMARK_OFFSET
    raise InputError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")


def mse(img, ref, window: tuple[float, float] = _DEFAULT_WINDOW, *, convention: str = "ctdn") -> float:
    """Mean squared error on the window (or the convention's range) mapped to [0, 1]."""
    lo, hi = _scale(window, convention)
    a, b = _pair(img, ref)
    d = hu_to_01(a, lo, hi) - hu_to_01(b, lo, hi)
    return float(np.mean(d.astype(np.float64) ** 2))


def rmse(img, ref, window: tuple[float, float] = _DEFAULT_WINDOW, *, convention: str = "ctdn") -> float:
    """Root mean squared error on the window mapped to [0, 1] (x window width gives HU)."""
    return math.sqrt(mse(img, ref, window, convention=convention))


def rmse_hu(img, ref, window: tuple[float, float] = _DEFAULT_WINDOW, *, convention: str = "ctdn") -> float:
    """Root mean squared error in HU after clipping both images to the window (or the convention's range)."""
    lo, hi = _scale(window, convention)
    return rmse(img, ref, window, convention=convention) * (hi - lo)


def psnr(img, ref, window: tuple[float, float] = _DEFAULT_WINDOW, *, convention: str = "ctdn") -> float:
    """PSNR in dB with data range 1 on the window (the convention's range); inf for identical images."""
    m = mse(img, ref, window, convention=convention)
    return math.inf if m == 0 else 10.0 * math.log10(1.0 / m)


def _gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    r = int(truncate * sigma + 0.5)
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(img, ref, window: tuple[float, float] = _DEFAULT_WINDOW, *, convention: str = "ctdn") -> float:
    """Mean SSIM of 2-D images (or the mean over slices of a stack) on the window.

    ``convention="ldct-benchmark"``: scikit-image's default SSIM on HU + 1024 clipped to [0, 2924].
    """
    lo, hi = _scale(window, convention)
    a, b = _pair(img, ref)
    if convention == "ctdn":
        g = _gaussian_window()
        kh, kw, cov_norm = g.view(1, 1, -1, 1), g.view(1, 1, 1, -1), 1.0
    else:  # uniform 7 x 7 window with sample covariances, as skimage's defaults
        box = torch.full((7,), 1.0 / 7, dtype=torch.float64)
        kh, kw, cov_norm = box.view(1, 1, -1, 1), box.view(1, 1, 1, -1), 49.0 / 48.0
    size = kh.shape[2]
    if min(a.shape[-2:]) < size:
        raise InputError(f"SSIM needs images of at least {size}x{size}, got {a.shape}")
    x = torch.from_numpy(hu_to_01(a, lo, hi)).double().reshape(-1, 1, *a.shape[-2:])
    y = torch.from_numpy(hu_to_01(b, lo, hi)).double().reshape(-1, 1, *b.shape[-2:])

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable, 'valid' = skimage's cropped border
        return F.conv2d(F.conv2d(t, kh), kw)

    mx, my = blur(x), blur(y)
    vx, vy = cov_norm * (blur(x * x) - mx * mx), cov_norm * (blur(y * y) - my * my)
    cxy = cov_norm * (blur(x * y) - mx * my)
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean(dim=(1, 2, 3)).mean())


def noise_std(img, ref, mask: np.ndarray) -> float:
    """Std of (img - ref) in HU inside a boolean mask (noise of a uniform region)."""
    a, b = _pair(img, ref)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != a.shape[-mask.ndim :] or not mask.any():
        raise InputError(f"mask of shape {mask.shape} is empty or does not fit images of shape {a.shape}")
    return float((a - b)[..., mask].std())
