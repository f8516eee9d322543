"""Task transfer function (TTF) from a circular insert, by AAPM TG-233 (Richard et al. 2012).

Steps, on the mean of the given realisations (averaging first keeps the noise of the edge low):

1. Optionally refine the insert's centre: the centroid of the background-subtracted image over
   a disc enclosing the blurred insert (an off-centre ring smears the edge).
2. Insert value: mean within 0.6 radii; background: mean in the annulus halfway between the
   edge and the outer analysis radius ``outer`` (default max(2 R, R + 8 px)). Their difference
   is the contrast; its sign sets nothing (the TTF is a magnitude).
3. Edge-spread function (ESF): pixel values binned by their distance to the centre in bins of
   ``bin_px`` pixels (0.1 by default: the ring of pixels samples the edge at sub-pixel offsets,
   as a slanted edge does); empty bins are interpolated.
4. Line-spread function (LSF): the ESF's first difference, times a Tukey window (flat between the
   centre and ``outer``, tapered over the outer quarter on each side of the edge) that damps the
   noise of the flat regions without narrowing the LSF.
5. TTF = |DFT(LSF)| (zero-padded), normalised to 1 at f = 0, divided by the known transfer
   function of the 0.1-px binning and differencing (sinc^2, at most 1.6 % at twice Nyquist), and
   reported up to 1 / pixel (twice the pixel Nyquist frequency; the oversampled ESF measures
   beyond it). ``f50`` / ``f10``: first crossings of 0.5 / 0.1 (NaN if not crossed).

A TTF is only as good as its contrast-to-noise ratio: low-contrast inserts need an ensemble of
realisations (a common rule asks for a CNR of about 15 or more on the averaged edge,
``cnr_mean``; ``cnr`` is one realisation's). Inside and background must differ by more than five
standard errors of their means, or the insert is refused as not found.

The radial ESF of a disc is not quite a straight edge's: for a Gaussian blur of std s the TTF
near f10 reads low by about 1.2 (s / R)^2 (under 1 % for R >= 10 s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ._checks import point, positive, stack

__all__ = ["TTFResult", "MIN_RADIUS_PX", "ttf"]

MIN_RADIUS_PX = 3.0  # below this the insert has too few pixels along its edge and inside it


@dataclass(frozen=True)
class TTFResult:
    """A measured TTF (frequencies in cycles/mm) with the ESF/LSF it came from."""

    f: np.ndarray  # 0 .. 1 / pixel
    ttf: np.ndarray
    f50: float
    f10: float
    r_mm: np.ndarray  # ESF bin centres (distance to the insert's centre)
    esf: np.ndarray  # HU
    lsf: np.ndarray  # windowed first difference of the ESF (HU per mm)
    contrast_hu: float  # insert minus background
    insert_hu: float
    background_hu: float
    noise_std_hu: float  # background std of one realisation
    cnr: float  # |contrast| / noise_std_hu
    cnr_mean: float  # |contrast| / background std of the averaged image
    center: tuple[float, float]  # (row, col) in pixels, after refinement
    radius_mm: float
    pixel_size_mm: float
    realisations: int


def _distances(shape, center, outer_px: float):
    """Window of rows/cols around ``center`` covering ``outer_px``, and each pixel's distance (px)."""
    r0 = int(math.floor(center[0] - outer_px - 1))
    c0 = int(math.floor(center[1] - outer_px - 1))
    r1 = int(math.ceil(center[0] + outer_px + 2))
    c1 = int(math.ceil(center[1] + outer_px + 2))
    rows = np.arange(r0, r1)[:, None] - center[0]
    cols = np.arange(c0, c1)[None, :] - center[1]
    return (slice(r0, r1), slice(c0, c1)), np.hypot(rows, cols)


def _check_fits(shape, center, outer_px: float, radius_mm: float, px: float) -> None:
    h, w = shape
    row, col = center
    if row - outer_px - 1 < 0 or col - outer_px - 1 < 0 or row + outer_px + 2 > h or col + outer_px + 2 > w:
        raise InputError(
            f"the insert at ({row:.1f}, {col:.1f}) is too close to the image border: its TTF needs "
            f"a disc of {outer_px * px:.1f} mm ({outer_px:.1f} px) around it, for a {radius_mm:g} mm radius"
        )


def _levels(img: np.ndarray, r: np.ndarray, radius: float, outer: float):
    """(insert mean, background mean, background std, pixels inside, pixels in background)."""
    inside = r < 0.6 * radius
    ring = (r >= 0.5 * (radius + outer)) & (r <= outer)
    vin, vbg = img[inside], img[ring]
    return float(vin.mean()), float(vbg.mean()), float(vbg.std()), vin.size, vbg.size


def _refine(mean_img: np.ndarray, center, radius: float, outer: float, shape) -> tuple[float, float]:
    """Centroid of (image - background) over the disc halfway to ``outer``, iterated."""
    c = center
    for _ in range(3):
        (rs, cs), r = _distances(shape, c, outer)
        if rs.start < 0 or cs.start < 0 or rs.stop > shape[0] or cs.stop > shape[1]:
            return c  # moved towards the border: the caller's check names the problem
        sub = mean_img[rs, cs]
        _, bg, _, _, _ = _levels(sub, r, radius, outer)
        disc = r <= 0.5 * (radius + outer)
        wgt = np.where(disc, sub - bg, 0.0)
        total = wgt.sum()
        if total == 0:
            return c
        rows = np.arange(rs.start, rs.stop)[:, None]
        cols = np.arange(cs.start, cs.stop)[None, :]
        c = (float((wgt * rows).sum() / total), float((wgt * cols).sum() / total))
    return c


def _tukey(x: np.ndarray, left: float, right: float, frac: float = 0.25) -> np.ndarray:
    """1 between ``left`` and ``right`` (around 0), cosine tapers over the outer ``frac`` of each side."""
    w = np.ones_like(x)
    for side, length in ((x < 0, left), (x >= 0, right)):
        t = np.abs(x[side]) / length  # 0 at the edge, 1 at the window's end
        taper = np.clip((t - (1 - frac)) / frac, 0.0, 1.0)
        w[side] = np.where(t > 1, 0.0, 0.5 * (1 + np.cos(np.pi * taper)))
    return w


def _crossing(f: np.ndarray, y: np.ndarray, level: float) -> float:
    below = np.nonzero(y < level)[0]
    if below.size == 0 or below[0] == 0:
        return float("nan")
    i = below[0]
    return float(f[i - 1] + (level - y[i - 1]) * (f[i] - f[i - 1]) / (y[i] - y[i - 1]))


def _esf(mean_img, center, outer: float, bin_px: float, shape):
    """Radially binned ESF over [0, outer] px: (bin centres in px, values), empty bins interpolated."""
    (rs, cs), r = _distances(shape, center, outer)
    sub = mean_img[rs, cs]
    n_bins = int(math.ceil(outer / bin_px))
    idx = np.floor(r / bin_px).astype(np.int64).ravel()
    keep = idx < n_bins
    sums = np.bincount(idx[keep], weights=sub.ravel()[keep], minlength=n_bins)
    where = np.bincount(idx[keep], weights=r.ravel()[keep], minlength=n_bins)
    counts = np.bincount(idx[keep], minlength=n_bins)
    centres = (np.arange(n_bins) + 0.5) * bin_px
    full = counts > 0
    # Each bin's mean value sits at its pixels' mean distance, not at the bin centre.
    return centres, np.interp(centres, where[full] / counts[full], sums[full] / counts[full])


def ttf(
    image,
    center,
    radius_mm: float,
    pixel_size_mm: float,
    *,
    outer_mm: float | None = None,
    bin_px: float = 0.1,
    refine_center: bool = True,
) -> TTFResult:
    """The TTF of the circular insert of ``radius_mm`` at ``center`` (row, col, pixels).

    ``image``: one image (H, W) in HU, or K realisations of the same scan (K, H, W), averaged
    first. ``outer_mm``: the analysis radius (default max(2 R, R + 8 px)); the disc it spans must
    hold nothing but the insert and its uniform background.
    """
    arr = stack(image, "image")
    px = positive(pixel_size_mm, "pixel_size_mm")
    radius = positive(radius_mm, "radius_mm") / px
    bin_px = positive(bin_px, "bin_px")
    if radius < MIN_RADIUS_PX:
        raise InputError(
            f"insert radius {radius_mm:g} mm is {radius:.2f} px: too small for a TTF "
            f"(needs at least {MIN_RADIUS_PX:g} px; use a larger insert)"
        )
    outer = max(2 * radius, radius + 8) if outer_mm is None else positive(outer_mm, "outer_mm") / px
    if outer < radius + 3:
        raise InputError(f"outer_mm {outer * px:g} mm leaves under 3 px of background outside the insert")
    if not 0 < bin_px <= 0.5:
        raise InputError(f"bin_px must be in (0, 0.5] pixels, got {bin_px}")
    shape = arr.shape[1:]
    c = point(center)
    _check_fits(shape, c, outer, radius_mm, px)
    mean_img = arr.mean(axis=0)
    if refine_center:
        refined = _refine(mean_img, c, radius, outer, shape)
        if math.hypot(refined[0] - c[0], refined[1] - c[1]) > 0.5 * radius:
            raise InputError(f"no insert found at ({c[0]:.1f}, {c[1]:.1f}): nothing there stands out")
        c = refined
        _check_fits(shape, c, outer, radius_mm, px)
    (rs, cs), r = _distances(shape, c, outer)
    fg, bg, sd_mean, n_in, n_bg = _levels(mean_img[rs, cs], r, radius, outer)
    contrast = fg - bg
    stderr = sd_mean * math.sqrt(1 / n_in + 1 / n_bg)
    if not abs(contrast) > max(5 * stderr, 1e-3):
        raise InputError(
            f"no insert found at ({c[0]:.1f}, {c[1]:.1f}) with radius {radius_mm:g} mm: inside and "
            f"background differ by {contrast:.3g} HU, within the noise ({stderr:.3g} HU standard error)"
        )
    sd_one = float(np.mean([_levels(img[rs, cs], r, radius, outer)[2] for img in arr]))
    centres, esf = _esf(mean_img, c, outer, bin_px, shape)
    lsf = np.diff(esf) / (bin_px * px)
    x = centres[:-1] + 0.5 * bin_px - radius  # each difference sits between two bin centres
    lsf = lsf * _tukey(x, radius, outer - radius)
    n_fft = max(4096, 1 << int(math.ceil(math.log2(4 * lsf.size))))
    spectrum = np.abs(np.fft.rfft(lsf, n_fft))
    f = np.fft.rfftfreq(n_fft, bin_px * px)
    keep = f <= 1.0 / px + 1e-12
    f, spectrum = f[keep], spectrum[keep]
    curve = spectrum / spectrum[0] / np.sinc(f * bin_px * px) ** 2
    return TTFResult(
        f=f,
        ttf=curve,
        f50=_crossing(f, curve, 0.5),
        f10=_crossing(f, curve, 0.1),
        r_mm=centres * px,
        esf=esf,
        lsf=lsf,
        contrast_hu=contrast,
        insert_hu=fg,
        background_hu=bg,
        noise_std_hu=sd_one,
        cnr=abs(contrast) / sd_one if sd_one > 0 else math.inf,
        cnr_mean=abs(contrast) / sd_mean if sd_mean > 0 else math.inf,
        center=c,
        radius_mm=float(radius_mm),
        pixel_size_mm=px,
        realisations=arr.shape[0],
    )
