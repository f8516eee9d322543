"""What the image itself says about its dose: statistics of one slice in HU.

- Is it in HU at all (a display image in 0-255, a normalised image in [0, 1] or [-1, 1], or one
  without air or water levels is refused in auto mode).
- The patient region and its water-equivalent diameter, as AAPM Report 220 defines it:
  ``D_w = 2 * sqrt((mean(CT) / 1000 + 1) * A / pi)`` over the patient (the largest connected
  region above -500 HU after smoothing, holes such as the lungs filled).
- Flat soft tissue: pixels whose smoothed value lies in 0-100 HU, eroded away from every edge, and
  over them the global noise level of Christianson et al. (Med Phys 42(7), 2015): the mode of the
  histogram of local standard deviations in small windows (about 5 mm).
- How much each of those windows is attenuated: the mean over view angles of exp(p) and exp(2 p),
  p the line integral of attenuation through the window's centre, from a coarse parallel-beam
  projection of the image itself. After filtered back-projection a pixel's noise variance is the
  view average of the projection noise it collects, e.g. ``exp(p) / photons`` for quantum noise, so
  dividing each local std by sqrt(mean exp(p)) takes out the patient's size, shape and make-up
  (bones, lungs) and leaves a number set by the photons, that is the dose.
- The noise texture: the median over the same windows of the lag-1 autocorrelation, which tells a
  smooth reconstruction kernel (strongly correlated noise) from a sharp one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ..hu import MU_WATER
from ..sim.geometry import Geometry
from ..sim.projector import forward_project

__all__ = ["SliceStats", "SOFT_TISSUE_HU", "WINDOW_MM", "window_px", "hu_problem", "slice_stats"]

SOFT_TISSUE_HU = (0.0, 100.0)  # flat soft tissue: the smoothed value lies in this band
MASK_SMOOTH_MM = 3.0  # Gaussian sigma of the smoothing that decides the tissue class
BODY_SMOOTH_MM = 1.0  # ... and the patient outline
EDGE_MARGIN_MM = 2.0  # windows keep at least this far from the band's boundary
WINDOW_MM = 4.9  # local standard deviation window, about this wide (7 pixels at 0.7 mm) ...
WINDOW_PX_MIN = 5  # ... and at least this many pixels a side
MIN_SOFT_PIXELS = 300  # fewer window centres than this: no flat soft tissue in the slice
MIN_SOFT_AREA_MM2 = 150.0  # ... or a smaller area than this
BODY_HU = -500.0  # the patient outline and what counts as lung inside it
BONE_HU = 300.0
PROJECTION_MM = 2.0  # pixel size of the coarse copy that is projected for the attenuation
PROJECTION_VIEWS = 48  # parallel views over 180 degrees
MAX_WINDOWS = 4000  # window centres whose attenuation is computed (an even subsample)
MIN_NOISE_HU = 0.5  # a global noise level below this is no noise at all (interpolated, processed)
MAX_BORDER_FRACTION = 0.15  # more of the image border than this inside the patient: cut by the edge


@dataclass(frozen=True)
class SliceStats:
    """One slice's statistics; ``gnl_hu`` and ``rho1`` are NaN where no flat soft tissue was found."""

    water_diameter_mm: float
    gnl_hu: float  # global noise level: mode of the local stds
    norm_gnl: float  # mode of local std / sqrt(mean exp(p)) over the same windows
    atten: float  # median over the windows of mean exp(p)
    atten2: float  # median over the windows of mean exp(2 p) / mean exp(p)
    rho1: float
    soft_pixels: int
    soft_area_mm2: float
    lung_fraction: float
    bone_fraction: float
    border_fraction: float  # share of the image border covered by the patient (cut by the edge)

    @property
    def has_soft_tissue(self) -> bool:
        return math.isfinite(self.gnl_hu)

    @property
    def has_noise(self) -> bool:
        """Flat soft tissue with measurable noise (an interpolated or processed image has none)."""
        return self.has_soft_tissue and self.gnl_hu >= MIN_NOISE_HU

    @property
    def truncated(self) -> bool:
        """The patient is cut by the image edge: the attenuation outside the image is not seen."""
        return self.border_fraction > MAX_BORDER_FRACTION


def hu_problem(volume: np.ndarray) -> str | None:
    """Why ``volume`` is evidently not a CT image in HU (None: it may well be one)."""
    lo, hi = float(volume.min()), float(volume.max())
    integral = volume.dtype.kind in "iu" or bool(np.all(volume == np.round(volume)))
    if volume.dtype == np.uint8 or (integral and lo >= 0 and hi <= 255):
        return f"values are integers in 0-255 (min {lo:g}, max {hi:g}): a display image, not HU"
    if lo >= -1.0 and hi <= 1.0:
        return f"values lie within [{lo:.3g}, {hi:.3g}]: a normalised image, not HU"
    n = volume.size
    below = np.count_nonzero(volume < BODY_HU) / n
    water = np.count_nonzero((volume >= -150) & (volume <= 150)) / n
    if below < 1e-3:
        return (
            f"no air or lung (nothing below {BODY_HU:g} HU; min {lo:g}): not HU, or stored values "
            "without the rescale slope and intercept"
        )
    if water < 1e-2:
        return f"no water or soft-tissue level ({100 * water:.2g} % of pixels in -150..150 HU)"
    return None


def _patient(sm: np.ndarray) -> np.ndarray:
    """The patient: the largest connected region above BODY_HU, holes (lungs, bowel gas) filled."""
    lab, n = ndimage.label(sm > BODY_HU)
    if n == 0:
        return np.zeros(sm.shape, bool)
    sizes = np.bincount(lab.ravel())[1:]
    return ndimage.binary_fill_holes(lab == 1 + int(np.argmax(sizes)))


def water_diameter(img: np.ndarray, body: np.ndarray, px: float) -> float:
    """AAPM TG-220 water-equivalent diameter (mm) of the region ``body`` (values clipped at -1000)."""
    if not body.any():
        return float("nan")
    mean = float(np.clip(img[body], -1000.0, None).mean(dtype=np.float64))
    area = float(body.sum()) * px * px
    return 2.0 * math.sqrt(max(mean / 1000.0 + 1.0, 0.0) * area / math.pi)


def _mode(values: np.ndarray) -> float:
    """Mode of a positive sample: the peak of a smoothed histogram of its logarithm."""
    logs = np.log(values[values > 0])
    lo, hi = np.percentile(logs, [0.5, 99.5])
    if hi <= lo:
        return float(np.exp(lo))
    bins = int(np.clip(math.sqrt(logs.size), 20, 150))
    hist, edges = np.histogram(logs, bins=bins, range=(lo, hi))
    hist = ndimage.gaussian_filter1d(hist.astype(np.float64), 1.5)
    k = int(np.argmax(hist))
    return float(np.exp(0.5 * (edges[k] + edges[k + 1])))


def _rough_noise(x: np.ndarray, sm: np.ndarray, body: np.ndarray) -> float:
    """A rough noise std (HU) from the pixel-scale residual in soft tissue and fat."""
    sel = body & (sm > -150) & (sm < 250)
    if sel.sum() < MIN_SOFT_PIXELS:
        return 0.0
    r = (x - ndimage.gaussian_filter(x, 1.0))[sel]
    return float(1.4826 * np.median(np.abs(r - np.median(r))))


def window_px(px: float) -> int:
    """The local-std window (odd, pixels a side) at pixel size ``px``: about WINDOW_MM wide, so that
    it spans the same stretch of correlated noise at every pixel size."""
    return max(WINDOW_PX_MIN, 2 * round((WINDOW_MM / px - 1) / 2) + 1)


def _flat_soft_tissue(img: np.ndarray, body: np.ndarray, px: float) -> np.ndarray:
    """Window centres whose whole window lies in flat soft tissue, away from every edge.

    The tissue class comes from a smoothed copy; very noisy images get a wider smoothing, so that
    the noise left in the copy (about sigma * px / (2 sqrt(pi) s) for a Gaussian of sigma s) stays
    near 6 HU, and a correspondingly wider margin from the edges.
    """
    smooth = MASK_SMOOTH_MM
    sm = ndimage.gaussian_filter(img, smooth / px)
    smooth_needed = _rough_noise(img, sm, body) * px / (2 * math.sqrt(math.pi) * 6.0)
    if smooth_needed > smooth:
        smooth = min(smooth_needed, 25.0)
        sm = ndimage.gaussian_filter(img, smooth / px)
    soft = (sm >= SOFT_TISSUE_HU[0]) & (sm <= SOFT_TISSUE_HU[1]) & body
    margin_mm = EDGE_MARGIN_MM + 0.7 * (smooth - MASK_SMOOTH_MM)
    k = window_px(px)
    reach = math.ceil((k // 2) * math.sqrt(2)) + max(1, round(margin_mm / px))
    valid = ndimage.distance_transform_edt(soft) > reach
    b = k  # windows never wrap around the image border
    valid[:b], valid[-b:], valid[:, :b], valid[:, -b:] = False, False, False, False
    return valid


def view_attenuation(img: np.ndarray, px: float, rows: np.ndarray, cols: np.ndarray):
    """Mean over view angles of exp(p) and of exp(2 p) through the pixels (rows, cols).

    ``p`` comes from a parallel-beam projection of a coarse (about 2 mm) copy of the image in
    attenuation units; values below air (padding outside the field of view) count as air.
    """
    f = max(1, round(PROJECTION_MM / px))
    h, w = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    hu = img[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))
    mu = np.clip(MU_WATER * (1.0 + hu / 1000.0), 0.0, None).astype(np.float32)
    pc = px * f
    n_det = int(math.ceil(math.hypot(*mu.shape))) + 4
    geom = Geometry(kind="parallel", views=PROJECTION_VIEWS, detectors=n_det, det_spacing_mm=pc)
    p = forward_project(torch.from_numpy(mu)[None], geom, pc)[0].double().numpy()
    # Ray offset of each point at each angle, about the cropped copy's centre.
    y = (rows - (h - 1) / 2) * px
    x = (cols - (w - 1) / 2) * px
    ang = np.arange(PROJECTION_VIEWS) * (math.pi / PROJECTION_VIEWS)
    k = (np.cos(ang)[:, None] * x + np.sin(ang)[:, None] * y) / pc + (n_det - 1) / 2
    k0 = np.clip(np.floor(k).astype(np.int64), 0, n_det - 2)
    frac = np.clip(k - k0, 0.0, 1.0)
    v = np.arange(PROJECTION_VIEWS)[:, None]
    pv = p[v, k0] * (1 - frac) + p[v, k0 + 1] * frac
    return np.exp(pv).mean(axis=0), np.exp(2 * pv).mean(axis=0)


def _local_noise(x: np.ndarray, valid: np.ndarray, px: float) -> dict:
    """The noise statistics over the windows centred on ``valid``."""
    k = window_px(px)
    m = ndimage.uniform_filter(x, k)
    var = ndimage.uniform_filter(x * x, k) - m * m
    v = np.maximum(var[valid], 1e-12)
    std = np.sqrt(v * (k * k / (k * k - 1.0)))
    cov = np.zeros_like(v)
    for axis in (0, 1):  # lag one pixel along rows and columns
        xs, ms = np.roll(x, -1, axis=axis), np.roll(m, -1, axis=axis)
        cov += (ndimage.uniform_filter(x * xs, k) - m * ms)[valid]
    rows, cols = np.nonzero(valid)
    pick = np.unique(np.linspace(0, rows.size - 1, min(rows.size, MAX_WINDOWS)).astype(np.int64))
    e1, e2 = view_attenuation(x, px, rows[pick], cols[pick])
    return {
        "gnl_hu": _mode(std),
        "norm_gnl": _mode(std[pick] / np.sqrt(e1)),
        "atten": float(np.median(e1)),
        "atten2": float(np.median(e2 / e1)),
        "rho1": float(np.median(cov / (2.0 * v))),
    }


def slice_stats(img: np.ndarray, px: float) -> SliceStats:
    """Statistics of one slice (H, W) in HU at pixel size ``px`` mm."""
    x = img.astype(np.float64, copy=False)
    body = _patient(ndimage.gaussian_filter(x, BODY_SMOOTH_MM / px))
    n_body = int(body.sum())
    border = np.concatenate([body[0], body[-1], body[:, 0], body[:, -1]])
    inside = x[body] if n_body else np.zeros(1)
    valid = _flat_soft_tissue(x, body, px)
    n = int(valid.sum())
    nan = float("nan")
    noise = {"gnl_hu": nan, "norm_gnl": nan, "atten": nan, "atten2": nan, "rho1": nan}
    if n >= MIN_SOFT_PIXELS and n * px * px >= MIN_SOFT_AREA_MM2:
        noise = _local_noise(x, valid, px)
    return SliceStats(
        water_diameter_mm=water_diameter(x, body, px),
        **noise,
        soft_pixels=n,
        soft_area_mm2=n * px * px,
        lung_fraction=float(np.count_nonzero(inside < BODY_HU) / max(n_body, 1)),
        bone_fraction=float(np.count_nonzero(inside > BONE_HU) / max(n_body, 1)),
        border_fraction=float(border.mean()),
    )
