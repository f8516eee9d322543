"""Lesion contrast and contrast-to-noise ratio, per lesion and by size and contrast bins.

A lesion is a disc: a centre (row, col) and a radius in pixels, optionally its true contrast.
Its measured contrast is the mean of its interior minus the mean of a surrounding ring, with the
masks of :meth:`ctdn.phantoms.Phantom.lesion_mask`: the interior is the pixels whose centre lies
at least 0.75 px inside the edge (the centre pixel for tiny lesions), so partial-volume edge
pixels do not dilute it; the ring spans max(1.5 R, R + 1) to max(2.5 R, inner + 1.5) px, minus
the neighbourhood (R + 1.5 px) of every other lesion and anything outside ``valid``.

``kept`` = measured / true contrast (1: fully kept; the true contrast is the lesion's own, or
measured on ``truth``, e.g. the noise-free reconstruction, with the same masks).
``cnr`` = measured contrast / background std, signed so that a lesion shown with its true
polarity is positive; the std is the ring's in ``noise`` where given (e.g. the noise of a pair of
realisations), else in the image itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..hu import check_hu
from ._checks import is_number, point, positive

__all__ = ["LesionStat", "lesion_masks", "lesion_stats", "summarize_by"]


@dataclass(frozen=True)
class LesionStat:
    """One lesion's measurement (HU, mm; NaN where unknown or not measurable)."""

    index: int
    center: tuple[float, float]
    radius_px: float
    diameter_mm: float
    true_contrast_hu: float
    contrast_hu: float
    kept: float
    background_std_hu: float
    cnr: float
    n_inside: int
    n_ring: int


def _disk(shape, center, radius: float) -> np.ndarray:
    rows = np.arange(shape[0])[:, None] - center[0]
    cols = np.arange(shape[1])[None, :] - center[1]
    return rows * rows + cols * cols <= radius * radius if radius > 0 else np.zeros(shape, dtype=bool)


def lesion_masks(shape, center, radius_px: float, *, others=(), valid=None) -> tuple[np.ndarray, np.ndarray]:
    """(interior, background ring) boolean masks of the disc at ``center`` with ``radius_px``.

    ``others``: (center, radius_px) of the other lesions, kept out of the ring; ``valid``: a
    boolean image the ring must stay inside (e.g. the uniform part of a phantom).
    """
    c = point(center)
    r = positive(radius_px, "lesion radius_px")
    inside = _disk(shape, c, r - 0.75)
    if not inside.any():
        row = min(max(int(round(c[0])), 0), shape[0] - 1)
        col = min(max(int(round(c[1])), 0), shape[1] - 1)
        inside[row, col] = True
    inner = max(1.5 * r, r + 1.0)
    outer = max(2.5 * r, inner + 1.5)
    ring = _disk(shape, c, outer) & ~_disk(shape, c, inner)
    for oc, orad in others:
        ring &= ~_disk(shape, point(oc), float(orad) + 1.5)
    if valid is not None:
        ring &= valid
    return inside, ring


def _parse(lesion, i: int) -> tuple[tuple[float, float], float, float]:
    """(center, radius_px, true contrast or NaN) from an object, a mapping or a tuple."""
    if isinstance(lesion, Mapping):
        center, radius, contrast = lesion.get("center"), lesion.get("radius_px"), lesion.get("contrast_hu")
    elif hasattr(lesion, "center") and hasattr(lesion, "radius_px"):
        center, radius, contrast = lesion.center, lesion.radius_px, getattr(lesion, "contrast_hu", None)
    elif isinstance(lesion, Sequence) and len(lesion) in (2, 3):
        center, radius, contrast = lesion[0], lesion[1], lesion[2] if len(lesion) == 3 else None
    else:
        raise InputError(
            f"lesion {i}: give an object with .center and .radius_px, a dict, "
            "or (center, radius_px[, contrast])"
        )
    if contrast is not None and not is_number(contrast):
        raise InputError(f"lesion {i}: contrast_hu must be a number, got {contrast!r}")
    return (
        point(center, f"lesion {i} center"),
        positive(radius, f"lesion {i} radius_px"),
        (float(contrast) if contrast is not None else math.nan),
    )


def _image(x, name: str, shape=None) -> np.ndarray:
    arr = check_hu(x, name=name, ndim=(2,)).astype(np.float64)
    if shape is not None and arr.shape != shape:
        raise InputError(f"{name} has shape {arr.shape}, the image {shape}")
    return arr


def lesion_stats(
    image, lesions, *, pixel_size_mm: float | None = None, truth=None, noise=None, valid=None
) -> list[LesionStat]:
    """Contrast, fraction of true contrast kept and CNR of each lesion in ``image`` (H, W, HU).

    ``lesions``: :class:`ctdn.phantoms.Lesion` or QA-phantom inserts, dicts or tuples (see
    :func:`_parse`). ``pixel_size_mm`` gives the diameters in mm.
    """
    img = _image(image, "image")
    ref = None if truth is None else _image(truth, "truth", img.shape)
    nse = None if noise is None else _image(noise, "noise", img.shape)
    if valid is not None:
        valid = np.asarray(valid)
        if valid.shape != img.shape or valid.dtype != bool:
            raise InputError(f"valid must be a boolean image of shape {img.shape}")
    px = math.nan if pixel_size_mm is None else positive(pixel_size_mm, "pixel_size_mm")
    parsed = [_parse(les, i) for i, les in enumerate(lesions)]
    out = []
    for i, (center, radius, true_c) in enumerate(parsed):
        others = [(c, r) for j, (c, r, _) in enumerate(parsed) if j != i]
        inside, ring = lesion_masks(img.shape, center, radius, others=others, valid=valid)
        measured = std = math.nan
        if ring.sum() >= 2:
            measured = float(img[inside].mean() - img[ring].mean())
            std = float((nse if nse is not None else img)[ring].std())
            if ref is not None:
                true_c = float(ref[inside].mean() - ref[ring].mean())
        kept = measured / true_c if is_number(true_c) and true_c != 0 else math.nan
        sign = (
            math.copysign(1.0, true_c) if is_number(true_c) and true_c != 0 else math.copysign(1.0, measured)
        )
        cnr = sign * measured / std if std > 0 else math.nan
        out.append(
            LesionStat(
                i,
                center,
                radius,
                2 * radius * px,
                true_c,
                measured,
                kept,
                std,
                cnr,
                int(inside.sum()),
                int(ring.sum()),
            )
        )
    return out


def _bins(values: np.ndarray, edges) -> list[tuple[float, float]]:
    """Half-open bins [lo, hi) from ``edges``, or one bin per distinct value (rounded to 0.1)."""
    if edges is None:
        uniq = np.unique(np.round(values[np.isfinite(values)], 1))
        return [(float(u), float(u)) for u in uniq]
    e = [float(v) for v in edges]
    if len(e) < 2 or any(b <= a for a, b in zip(e, e[1:], strict=False)):
        raise InputError(f"bin edges must be at least two increasing numbers, got {edges!r}")
    return list(zip(e[:-1], e[1:], strict=True))


def _in(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.round(values, 1) == lo if lo == hi else (values >= lo) & (values < hi)


def summarize_by(stats: Sequence[LesionStat], size_bins_mm=None, contrast_bins_hu=None) -> list[dict]:
    """Mean measurements by lesion diameter (mm) and |true contrast| (HU) bins.

    Bins are half-open [lo, hi) from the given edges; without edges, one bin per distinct value.
    Each row: size and contrast bounds, ``n`` lesions, and the means of ``kept``, ``cnr`` and
    ``contrast_hu`` over the lesions that have them (NaN where none does). Empty bins are left out.
    """
    if not stats:
        return []
    size = np.array([s.diameter_mm for s in stats], dtype=np.float64)
    if not np.isfinite(size).any():
        raise InputError("lesion sizes are unknown: pass pixel_size_mm to lesion_stats")
    contrast = np.abs(np.array([s.true_contrast_hu for s in stats], dtype=np.float64))
    rows = []
    for s_lo, s_hi in _bins(size, size_bins_mm):
        for c_lo, c_hi in _bins(contrast, contrast_bins_hu):
            sel = [
                st
                for st, a, b in zip(stats, _in(size, s_lo, s_hi), _in(contrast, c_lo, c_hi), strict=True)
                if a and b
            ]
            if not sel:
                continue
            row = {"size_bin_mm": (s_lo, s_hi), "contrast_bin_hu": (c_lo, c_hi), "n": len(sel)}
            for key in ("kept", "cnr", "contrast_hu"):
                vals = np.array([getattr(st, key) for st in sel], dtype=np.float64)
                vals = vals[np.isfinite(vals)]
                row[f"mean_{key}"] = float(vals.mean()) if vals.size else math.nan
            rows.append(row)
    return rows
