"""Image-quality metrics with the project's conventions (see REFERENCE.md).

Images are compared in HU; each metric first maps the HU window (default [-1000, 1000]) to [0, 1].
PSNR uses data range 1. SSIM uses an 11x11 Gaussian window (sigma 1.5, truncated at 3.5 sigma),
K1 0.01, K2 0.03, population covariances, averaged over the valid (unpadded) region: the same
number as scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1.0)``. RMSE is reported both in window units and in HU.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError
from .hu import HU_MAX, HU_MIN, check_hu, hu_to_01

__all__ = ["mse", "rmse", "rmse_hu", "psnr", "ssim", "noise_std", "SOFT_TISSUE"]

SOFT_TISSUE = (-160.0, 240.0)  # level 40, width 400


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = check_hu(a, name="image")
    b = check_hu(b, name="reference")
    if a.shape != b.shape:
        raise InputError(f"image shape {a.shape} differs from reference shape {b.shape}")
    return a, b


def mse(img, ref, window: tuple[float, float] = (HU_MIN, HU_MAX)) -> float:
    """Mean squared error on the window mapped to [0, 1]."""
    a, b = _pair(img, ref)
    d = hu_to_01(a, *window) - hu_to_01(b, *window)
    return float(np.mean(d.astype(np.float64) ** 2))


def rmse(img, ref, window: tuple[float, float] = (HU_MIN, HU_MAX)) -> float:
    """Root mean squared error on the window mapped to [0, 1] (x window width gives HU)."""
    return math.sqrt(mse(img, ref, window))


def rmse_hu(img, ref, window: tuple[float, float] = (HU_MIN, HU_MAX)) -> float:
    """Root mean squared error in HU after clipping both images to the window."""
    return rmse(img, ref, window) * (window[1] - window[0])


def psnr(img, ref, window: tuple[float, float] = (HU_MIN, HU_MAX)) -> float:
    """PSNR in dB with data range 1 on the window; inf for identical images."""
    m = mse(img, ref, window)
    return math.inf if m == 0 else 10.0 * math.log10(1.0 / m)


def _gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    r = int(truncate * sigma + 0.5)
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(img, ref, window: tuple[float, float] = (HU_MIN, HU_MAX)) -> float:
    """Mean SSIM of 2-D images (or the mean over slices of a stack) on the window."""
    a, b = _pair(img, ref)
    g = _gaussian_window()
    if min(a.shape[-2:]) < g.numel():
        raise InputError(f"SSIM needs images of at least {g.numel()}x{g.numel()}, got {a.shape}")
    x = torch.from_numpy(hu_to_01(a, *window)).double().reshape(-1, 1, *a.shape[-2:])
    y = torch.from_numpy(hu_to_01(b, *window)).double().reshape(-1, 1, *b.shape[-2:])
    kh, kw = g.view(1, 1, -1, 1), g.view(1, 1, 1, -1)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable, 'valid' = skimage's cropped border
        return F.conv2d(F.conv2d(t, kh), kw)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
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
