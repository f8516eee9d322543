"""Classical denoisers the learnt models are compared against: NL-means, total variation, BM3D.

Each works on the HU window mapped to [0, 1] (the metric scale) and returns HU. The noise level
they are given is in HU; the study passes the true one (generous to the baselines) and tunes
their strength per dose on separate slices with :func:`tune`.

CT noise is correlated (the reconstruction filter shapes it), and BM3D is built for that case: it
takes the noise power spectrum. :func:`bm3d` with ``nps=`` (a :func:`ctdn.iq.nps` measurement,
e.g. of the difference of two realisations, or of LDCT minus reference on tuning slices) hands it
that spectrum through :func:`bm3d_psd`; with ``sigma_hu`` alone it assumes white noise, which
under-smooths CT's low-frequency noise. The ``bm3d`` package is licensed for non-commercial use
only (Tampere University); it is an optional extra, never a dependency.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
from scipy import ndimage

from .errors import InputError, InputTypeError, MissingDependencyError
from .hu import HU_MAX, HU_MIN, check_hu

__all__ = ["nlmeans", "tv", "bm3d", "bm3d_psd", "tune", "METHODS"]

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


def bm3d_psd(nps, shape, span: float = _SPAN) -> np.ndarray:
    """The noise PSD the ``bm3d`` package expects for an image of ``shape``, from a measured NPS.

    ``bm3d(z, sigma_psd=psd)`` takes E|FFT2(noise)|^2 on the image's own FFT grid (numpy order, DC
    at [0, 0]) in the units of ``z``: white noise of std s is s^2 M N at every frequency (what
    ``bm3d`` builds itself from a sigma). ``nps`` (:class:`ctdn.iq.NPSResult`, HU^2 mm^2 on its
    ROI's grid) is dx dy / n^2 E|DFT_roi|^2, so on an M x N image of the same pixel size
    E|FFT2|^2 = M N NPS(f) / (dx dy): the NPS is interpolated (bilinear, periodic) from the ROI's
    frequency grid onto the image's and divided by ``span``^2 for the [0, 1] metric scale. The DC
    sample, zeroed by the ROIs' detrending, is the mean of its four neighbours.
    """
    from .iq import NPSResult

    if not isinstance(nps, NPSResult):
        raise InputTypeError(f"nps must be what ctdn.iq.nps returns, got {type(nps).__name__}")
    if len(shape) != 2 or min(shape) < 8:
        raise InputError(f"bm3d_psd needs a 2-D image shape of at least 8 x 8, got {tuple(shape)}")
    table = np.array(nps.nps_2d, dtype=np.float64)
    n, mid = table.shape[0], table.shape[0] // 2
    table[mid, mid] = 0.25 * (
        table[mid - 1, mid] + table[mid + 1, mid] + table[mid, mid - 1] + table[mid, mid + 1]
    )
    if not np.isfinite(table).all() or table.min() < 0 or not table.sum() > 0:
        raise InputError("the noise power spectrum must be finite, non-negative and not all zero")
    m_rows, m_cols = int(shape[0]), int(shape[1])
    # Image frequencies in units of the ROI's frequency step, shifted so DC sits at the table's mid.
    rows = np.fft.fftfreq(m_rows)[:, None] * n + mid
    cols = np.fft.fftfreq(m_cols)[None, :] * n + mid
    rows, cols = np.broadcast_arrays(rows, cols)
    fine = ndimage.map_coordinates(table, [rows, cols], order=1, mode="grid-wrap")
    dy, dx = nps.pixel_size_mm
    return np.maximum(fine, 0.0) * (m_rows * m_cols / (dx * dy)) / span**2


@contextlib.contextmanager
def _numpy_trapz():
    """bm3d's correlated-noise path (``bm4d``'s parameter estimate) calls ``np.trapz``, which NumPy 2.4
    removed: lend it ``np.trapezoid`` (the same function) for the call, then restore NumPy as it was."""
    trapezoid = getattr(np, "trapezoid", None)
    if trapezoid is None:  # NumPy 1.x: np.trapz is the function itself
        yield
        return
    missing = "trapz" not in np.__dict__
    saved = np.__dict__.get("trapz")
    np.trapz = trapezoid  # noqa: NPY201 - the name bm4d calls
    try:
        yield
    finally:
        if missing:
            del np.trapz  # noqa: NPY201
        else:
            np.trapz = saved  # noqa: NPY201


def bm3d(hu, sigma_hu: float | None = None, *, nps=None) -> np.ndarray:
    """BM3D (the ``bm3d`` package, all stages): for white noise of std ``sigma_hu``, or, with ``nps``
    (a :func:`ctdn.iq.nps` of the image's noise at its pixel size), for that correlated noise."""
    if (sigma_hu is None) == (nps is None):
        raise InputError("bm3d needs the noise: give sigma_hu (white noise) or nps (its power spectrum)")
    if sigma_hu is not None and not (isinstance(sigma_hu, (int, float)) and math.isfinite(sigma_hu)):
        raise InputError(f"sigma_hu must be a finite number of HU, got {sigma_hu!r}")
    try:
        import bm3d as _bm3d
    except ImportError as exc:
        raise MissingDependencyError("the BM3D baseline needs the bm3d package: pip install bm3d") from exc
    z = _to01(hu)
    noise = sigma_hu / _SPAN if nps is None else bm3d_psd(nps, z.shape)
    with _numpy_trapz():
        y = _bm3d.bm3d(z, sigma_psd=noise)
    return _to_hu(np.asarray(y, dtype=np.float64))


METHODS = {"nlmeans": nlmeans, "tv": tv, "bm3d": bm3d}


def tune(fn, grid, pairs, score) -> tuple[float, list[float]]:
    """The ``grid`` value maximising the mean ``score(fn(ldct, value), ref)`` over ``pairs``.

    Returns that value and the mean score of every grid value.
    """
    means = [float(np.mean([score(fn(x, v), ref) for x, ref in pairs])) for v in grid]
    return grid[int(np.argmax(means))], means
