"""Noise power spectrum (NPS) from square ROIs of noise-only images, by AAPM TG-233.

``nps(noise, pixel_size_mm)`` takes noise only: the difference of two independent realisations
of the same scan divided by sqrt(2) (:func:`noise_from_pair`), or an ensemble of realisations with
its mean removed (:func:`noise_from_ensemble`). Per ROI the mean (``detrend="mean"``) or a fitted
2-D second-order polynomial (``"poly2"``) is removed, then

    NPS(fx, fy) = dx * dy / (Nx * Ny) * < |DFT(roi)|^2 >     (HU^2 mm^2)

averaged over every ROI of every image. Its integral over the frequency plane is the variance of
the detrended ROIs (Parseval), which gives ``noise_std``. The radial NPS averages the 2-D samples
in rings one frequency step wide (centres 0, df, 2 df, ... up to the Nyquist frequency);
``f_peak`` is the frequency of its maximum and ``f_avg`` its NPS-weighted mean frequency,
sum(f * NPS(f)) / sum(NPS(f)) over the rings (TG-233's mean frequency, on the radial curve).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ._checks import pixel_pair, point, stack

__all__ = ["NPSResult", "MIN_ROI", "nps", "roi_corners", "noise_from_pair", "noise_from_ensemble"]

# Below this many pixels a side the frequency step is too coarse for a spectrum (8 rings at most).
MIN_ROI = 16
DETRENDS = ("mean", "poly2")


@dataclass(frozen=True)
class NPSResult:
    """A measured noise power spectrum (frequencies in cycles/mm, NPS in HU^2 mm^2)."""

    f: np.ndarray  # ring centres: 0, df, ..., up to the Nyquist frequency
    nps_1d: np.ndarray  # radially averaged NPS
    fx: np.ndarray  # 2-D grid axes (DC at index roi // 2), along columns ...
    fy: np.ndarray  # ... and along rows
    nps_2d: np.ndarray  # (roi, roi), DC at [roi // 2, roi // 2] (fftshift order)
    noise_std: float  # HU: sqrt of the NPS's integral
    f_peak: float
    f_avg: float
    pixel_size_mm: tuple[float, float]  # (row, col) spacing
    roi: int
    n_rois: int  # ROIs used, summed over images
    detrend: str


def noise_from_pair(a, b) -> np.ndarray:
    """Noise of one realisation from two independent ones of the same scan: (a - b) / sqrt(2).

    The signal cancels and the noise variance of the difference is twice that of one image.
    Works on (H, W) images or (K, H, W) stacks; returns float64.
    """
    x, y = stack(a, "first realisation"), stack(b, "second realisation")
    if x.shape != y.shape:
        raise InputError(f"the two realisations differ in shape: {x.shape[1:]} and {y.shape[1:]}")
    out = (x - y) / math.sqrt(2.0)
    return out[0] if np.ndim(a) == 2 else out


def noise_from_ensemble(images) -> np.ndarray:
    """Noise of each of K >= 2 realisations (K, H, W): image minus the ensemble mean, x sqrt(K/(K-1)).

    The factor undoes the variance the mean removes, so each result has one realisation's noise.
    """
    arr = stack(images, "realisations")
    if np.ndim(images) != 3 or arr.shape[0] < 2:
        raise InputError(f"an ensemble needs a (K, H, W) stack with K >= 2, got shape {np.shape(images)}")
    k = arr.shape[0]
    return (arr - arr.mean(axis=0)) * math.sqrt(k / (k - 1))


def _check_roi(roi, shape) -> int:
    if not (isinstance(roi, (int, np.integer)) and not isinstance(roi, (bool, np.bool_))):
        raise InputError(f"roi must be an integer side length in pixels, got {roi!r}")
    if roi < MIN_ROI:
        raise InputError(f"ROI of {roi} px is too small for an NPS: use at least {MIN_ROI} px a side")
    if roi > min(shape):
        raise InputError(f"ROI of {roi} px does not fit images of {shape[0]}x{shape[1]} px")
    return int(roi)


def _grid_starts(n: int, roi: int, stride: int) -> np.ndarray:
    """ROI start indices along one axis, the leftover split evenly at both ends."""
    count = (n - roi) // stride + 1
    offset = (n - roi - (count - 1) * stride) // 2
    return offset + stride * np.arange(count)


def roi_corners(shape, roi: int = 64, *, centers=None, mask=None, stride: int | None = None) -> list:
    """Top-left corners (row, col) of the square ROIs :func:`nps` uses on images of ``shape``.

    ``centers``: explicit ROI centres (row, col), each ROI wholly inside the image. Otherwise a grid
    with ``stride`` (default: ``roi`` without a mask, ``roi // 2`` with one), keeping the ROIs that
    lie wholly inside ``mask`` (a boolean image of the allowed region) where one is given.
    """
    h, w = int(shape[0]), int(shape[1])
    roi = _check_roi(roi, (h, w))
    if centers is not None:
        if mask is not None:
            raise InputError("give either ROI centers or a mask of the allowed region, not both")
        corners = []
        for c in centers:
            row, col = point(c, "ROI center")
            r0, c0 = int(round(row - (roi - 1) / 2)), int(round(col - (roi - 1) / 2))
            if r0 < 0 or c0 < 0 or r0 + roi > h or c0 + roi > w:
                raise InputError(f"the {roi} px ROI centred at ({row:g}, {col:g}) runs off the {h}x{w} image")
            corners.append((r0, c0))
        if not corners:
            raise InputError("centers is empty: give at least one ROI centre")
        return corners
    if stride is None:
        stride = roi if mask is None else max(1, roi // 2)
    if not isinstance(stride, (int, np.integer)) or isinstance(stride, bool) or stride < 1:
        raise InputError(f"stride must be a positive integer, got {stride!r}")
    rows, cols = _grid_starts(h, roi, int(stride)), _grid_starts(w, roi, int(stride))
    if mask is None:
        return [(int(r), int(c)) for r in rows for c in cols]
    m = np.asarray(mask)
    if m.shape != (h, w) or m.dtype != bool:
        raise InputError(f"mask must be a boolean image of shape {(h, w)}, got {m.dtype} {m.shape}")
    # Summed-area table: an ROI is allowed when all roi*roi of its pixels are in the mask.
    sat = np.pad(m.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    corners = [
        (int(r), int(c))
        for r in rows
        for c in cols
        if sat[r + roi, c + roi] - sat[r, c + roi] - sat[r + roi, c] + sat[r, c] == roi * roi
    ]
    if not corners:
        raise InputError(
            f"no {roi}x{roi} px ROI fits inside the allowed region ({int(m.sum())} px): use a smaller roi"
        )
    return corners


def _detrend(rois: np.ndarray, how: str) -> np.ndarray:
    """Remove each ROI's mean, or its least-squares 2-D quadratic (1, x, y, x^2, xy, y^2)."""
    if how == "mean":
        return rois - rois.mean(axis=(-2, -1), keepdims=True)
    n = rois.shape[-1]
    t = np.linspace(-1.0, 1.0, n)
    yy, xx = np.meshgrid(t, t, indexing="ij")
    basis = np.stack([np.ones_like(xx), xx, yy, xx * xx, xx * yy, yy * yy]).reshape(6, -1).T
    flat = rois.reshape(len(rois), -1).T  # (n*n, M)
    coef = np.linalg.lstsq(basis, flat, rcond=None)[0]
    return (flat - basis @ coef).T.reshape(rois.shape)


def _radial(nps2d: np.ndarray, fx: np.ndarray, fy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ring averages of a shifted 2-D spectrum, rings one frequency step wide, up to Nyquist."""
    df = max(fx[1] - fx[0], fy[1] - fy[0])
    nyquist = min(-fx[0], -fy[0])
    fr = np.hypot(fy[:, None], fx[None, :])
    ring = np.rint(fr / df).astype(np.int64).ravel()
    n_rings = int(math.floor(nyquist / df + 1e-9)) + 1
    keep = ring < n_rings
    sums = np.bincount(ring[keep], weights=nps2d.ravel()[keep], minlength=n_rings)
    counts = np.bincount(ring[keep], minlength=n_rings)
    return df * np.arange(n_rings), sums / np.maximum(counts, 1)


def nps(
    noise,
    pixel_size_mm,
    *,
    roi: int = 64,
    centers=None,
    mask=None,
    stride: int | None = None,
    detrend: str = "mean",
) -> NPSResult:
    """The NPS of noise-only images (H, W) or (K, H, W) in HU, from square ``roi`` x ``roi`` ROIs.

    ROIs are placed as :func:`roi_corners` says (``centers``, ``mask``, ``stride``) and used in
    every image of the stack. ``pixel_size_mm`` is one number or (row, col) spacings.
    """
    arr = stack(noise, "noise")
    dy, dx = pixel_pair(pixel_size_mm)
    if detrend not in DETRENDS:
        raise InputError(f"detrend must be one of {', '.join(DETRENDS)}, got {detrend!r}")
    corners = roi_corners(arr.shape[1:], roi, centers=centers, mask=mask, stride=stride)
    rois = np.stack([img[r : r + roi, c : c + roi] for img in arr for r, c in corners])
    rois = _detrend(rois, detrend)
    power = np.mean(np.abs(np.fft.fft2(rois)) ** 2, axis=0)
    nps2d = np.fft.fftshift(power * (dx * dy / (roi * roi)))
    fx = np.fft.fftshift(np.fft.fftfreq(roi, dx))
    fy = np.fft.fftshift(np.fft.fftfreq(roi, dy))
    variance = float(nps2d.sum()) / (roi * dx * roi * dy)
    f, nps1d = _radial(nps2d, fx, fy)
    total = float(nps1d[1:].sum())
    f_peak = float(f[1 + int(np.argmax(nps1d[1:]))]) if total > 0 else float("nan")
    f_avg = float((f * nps1d).sum() / total) if total > 0 else float("nan")
    return NPSResult(
        f=f,
        nps_1d=nps1d,
        fx=fx,
        fy=fy,
        nps_2d=nps2d,
        noise_std=math.sqrt(max(variance, 0.0)),
        f_peak=f_peak,
        f_avg=f_avg,
        pixel_size_mm=(dy, dx),
        roi=roi,
        n_rois=len(rois),
        detrend=detrend,
    )
