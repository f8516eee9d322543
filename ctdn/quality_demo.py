"""What ``ctdn demo`` reports besides PSNR: lesion contrast and noise texture before and after.

:func:`demo_quality` measures, on one simulated phantom slice with its noise-free reconstruction,
the fraction of the lesions' contrast kept (:func:`ctdn.iq.lesion_stats`) and the noise texture
(:func:`ctdn.iq.nps`'s mean frequency ``f_avg`` of image minus noise-free image over flat soft
tissue) of the LDCT input and of the denoised image. FBP's noise texture does not change with
dose, so the input's ``f_avg`` stands for the normal-dose scan's: the ratio is the one the
task-based report (docs/quality) gives against the normal-dose scan. :func:`demo_panel` draws the
slices at full resolution with the lesions circled and their differences on a labelled scale.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from . import iq
from .errors import InputError
from .hu import tissue_classes
from .viz import Tile, box_marks, lesion_box, lesion_panel

__all__ = ["demo_quality", "demo_panel"]

_SOFT = 3  # ctdn.hu tissue class of soft tissue


def _flat_soft_tissue(clean: np.ndarray) -> np.ndarray:
    """Soft-tissue pixels whose 9x9 neighbourhood of the noise-free image spans under 30 HU: away from
    organ edges, so image minus noise-free there is noise, not a blurred edge."""
    span = ndimage.maximum_filter(clean, 9) - ndimage.minimum_filter(clean, 9)
    return (tissue_classes(clean) == _SOFT) & (span < 30.0)


def _texture(noise: np.ndarray, px: float, mask: np.ndarray, roi: int) -> iq.NPSResult | None:
    for size in (roi, roi // 2):
        try:
            return iq.nps(noise, px, roi=size, mask=mask)
        except InputError:  # no ROI of this size fits the soft tissue: try a smaller one
            continue
    return None


def _kept(img, phantom, clean) -> float:
    if not phantom.lesions:
        return math.nan
    st = iq.lesion_stats(img, phantom.lesions, pixel_size_mm=phantom.pixel_size_mm, truth=clean)
    v = [s.kept for s in st if math.isfinite(s.kept)]
    return float(np.mean(v)) if v else math.nan


def demo_quality(noisy, denoised, clean, phantom, *, roi: int = 32, echo: bool = True, file=None) -> dict:
    """Lesion contrast kept and noise texture of ``noisy`` and ``denoised`` (HU, 2-D) against the
    noise-free ``clean`` of ``phantom`` (a :class:`ctdn.phantoms.Phantom`); printed to ``file``
    (default stdout) when ``echo``.

    Returns ``lesion_kept`` {input, denoised}, ``f_avg`` {input, denoised} (cycles/mm),
    ``f_avg_ratio`` (denoised / input), ``noise_std_hu`` {input, denoised} over flat soft tissue,
    ``lesions`` (count) and ``lines`` (the printed text).
    """
    clean = np.asarray(clean, dtype=np.float64)
    imgs = {"input": np.asarray(noisy, dtype=np.float64), "denoised": np.asarray(denoised, dtype=np.float64)}
    for name, a in imgs.items():
        if a.shape != clean.shape or a.ndim != 2:
            raise InputError(f"{name} has shape {a.shape}; the noise-free image is {clean.shape} (2-D)")
    mask = _flat_soft_tissue(clean)
    px = float(phantom.pixel_size_mm)
    out: dict = {"lesion_kept": {}, "f_avg": {}, "noise_std_hu": {}, "lesions": len(phantom.lesions)}
    for name, a in imgs.items():
        out["lesion_kept"][name] = _kept(a, phantom, clean)
        spec = _texture(a - clean, px, mask, roi)
        out["f_avg"][name] = math.nan if spec is None else spec.f_avg
        out["noise_std_hu"][name] = float((a - clean)[mask].std()) if mask.any() else math.nan
    fi, fd = out["f_avg"]["input"], out["f_avg"]["denoised"]
    out["f_avg_ratio"] = fd / fi if fi > 0 else math.nan
    k = out["lesion_kept"]
    out["lines"] = [
        f"lesion contrast kept (measured / true, {out['lesions']} lesions): LDCT {k['input']:.2f}, "
        f"denoised {k['denoised']:.2f}",
        f"noise texture (NPS mean frequency over flat soft tissue): {fi:.3f} -> {fd:.3f} cycles/mm, "
        f"f_avg ratio {out['f_avg_ratio']:.2f} (1 = the normal-dose texture; lower = blotchier)",
        "noise std over flat soft tissue: {input:.1f} -> {denoised:.1f} HU".format(**out["noise_std_hu"]),
    ]
    if echo:
        print("\n".join(out["lines"]), file=file or sys.stdout)
    return out


def demo_panel(
    noisy,
    denoised,
    clean,
    phantom,
    path: str | os.PathLike,
    *,
    labels: tuple[str, str] = ("LDCT", "denoised"),
    level: float | None = None,
    width: float = 160.0,
    diff_hu: float = 60.0,
    title: str | None = None,
    crop: int | None = None,
) -> Path:
    """A PNG of ``noisy``, ``denoised`` and ``clean`` at full resolution (nothing resampled) with the
    lesions circled, and below them each minus ``clean`` on a labelled [-diff_hu, +diff_hu] HU scale.

    ``level``: the display level (default: the lesions' median background, else 40 HU). ``crop``:
    show only a square of at most that many pixels around the lesions (still at full resolution).
    """
    clean = np.asarray(clean, dtype=np.float32)
    box = (slice(None), slice(None)) if crop is None else lesion_box(phantom.lesions, clean.shape, most=crop)
    noisy, denoised = np.asarray(noisy, np.float32)[box], np.asarray(denoised, np.float32)[box]
    full = (slice(0, clean.shape[0]), slice(0, clean.shape[1]))
    marks = box_marks(phantom.lesions, full if crop is None else box)
    clean = clean[box]
    if level is None:
        bg = [les.background_hu for les in phantom.lesions]
        level = float(np.median(bg)) if bg else 40.0
    top = [
        Tile(noisy, labels[0], level, width, marks),
        Tile(denoised, labels[1], level, width, marks),
        Tile(clean, "noise-free", level, width, marks),
    ]
    bottom = [
        Tile(
            np.asarray(noisy, np.float32) - clean, f"{labels[0]} - noise-free", 0.0, 2 * diff_hu, signed=True
        ),
        Tile(
            np.asarray(denoised, np.float32) - clean,
            f"{labels[1]} - noise-free",
            0.0,
            2 * diff_hu,
            signed=True,
        ),
    ]
    lo, hi = level - width / 2, level + width / 2
    return lesion_panel(
        [top, bottom],
        path,
        title=title,
        scales=[(lo, hi, "image (HU)"), (-diff_hu, diff_hu, "image - noise-free (HU)")],
    )
