"""Task-based image quality by AAPM Task Group 233: noise texture, resolution, detectability, lesions.

- :func:`nps`: 2-D and radial noise power spectrum (HU^2 mm^2) with its noise magnitude, peak
  and mean frequency, from noise-only images (:func:`noise_from_pair`, :func:`noise_from_ensemble`).
- :func:`ttf`: task transfer function of a circular insert, with ``f50`` and ``f10``.
- :func:`detectability`: NPW and NPWE model observers' d' for a disc task (:class:`DiscTask`).
- :func:`lesion_stats` and :func:`summarize_by`: lesion contrast kept and CNR, per lesion and by
  size and contrast.

Units: HU, mm, cycles/mm. Positions are (row, col) in pixels. See docs/iq.md.
"""

from .lesions import LesionStat, lesion_masks, lesion_stats, summarize_by
from .nps import NPSResult, noise_from_ensemble, noise_from_pair, nps, roi_corners
from .observers import Detectability, DiscTask, EyeFilter, detectability, disc_spectrum
from .ttf import TTFResult, ttf

__all__ = [
    "NPSResult",
    "nps",
    "roi_corners",
    "noise_from_pair",
    "noise_from_ensemble",
    "TTFResult",
    "ttf",
    "DiscTask",
    "EyeFilter",
    "Detectability",
    "detectability",
    "disc_spectrum",
    "LesionStat",
    "lesion_masks",
    "lesion_stats",
    "summarize_by",
]
