"""Anatomical texture: correlated random fields per organ, fine vessels, trabecular bone.

Added on top of the phantoms' own texture (one 2 mm field, 2-3 HU in soft tissue and fat, 15 HU
in lung), so that a noise-free slice is not piecewise flat anywhere and the fine structure a
denoiser must keep is present at realistic amplitude.

- **fields**: for every organ present, a unit-std Gaussian-correlated field (the phantoms'
  ``_texture``: white noise on a fixed 0.5 mm grid, smoothed with a Gaussian of sigma ``sigma``
  mm) times a std drawn per slice from ``TEXTURE[organ]``, weighted by the organ's area fraction
  in each pixel (so partial-volume edges blend). Each organ has its own stream, so its field does
  not depend on which other organs the slice has.
- **vessels**: 20-45 tapering, gently curved vessel pieces (0.6-1.6 mm radius, 8-30 mm long,
  +40..+120 HU over the parenchyma) in the liver and 60-140 fine ones (0.3-0.9 mm, 5-20 mm,
  0-60 HU) in the lungs, rendered with the phantoms' partial-volume edges. They stay out of the
  uniform region and the phantom's own lesions and their background rings.
- **trabecular bone**: the trabecular and cortical fields below (80-150 HU at 0.5-0.8 mm in
  marrow and diploe: the grain of trabeculae seen at CT resolution).

Std ranges (HU) and correlation lengths (sigma, mm) are rough values of the noise-free
heterogeneity of each tissue, chosen to sit between visible (above the int16 rounding) and the
routine-dose noise (10 HU), except for lung and bone, whose structure is much stronger.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..phantoms import LUNG, SOFT, _both, _Combine, _either, _polyline, _texture
from .body import _put
from .organs import ORGANS, organ_id

__all__ = ["TEXTURE", "add_vessels", "texture_field", "organ_std"]

TEXTURE: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    # organ: ((std low, high) HU, (sigma low, high) mm)
    "lung": ((20.0, 40.0), (0.6, 1.0)),
    "lung_vessel": ((3.0, 6.0), (1.0, 2.0)),
    "fat": ((5.0, 12.0), (0.8, 1.5)),
    "soft": ((3.0, 6.0), (1.0, 2.0)),
    "liver": ((4.0, 8.0), (1.5, 3.0)),
    "spleen": ((3.0, 6.0), (1.0, 2.0)),
    "kidney": ((4.0, 8.0), (0.8, 1.5)),
    "muscle": ((4.0, 8.0), (0.8, 1.5)),
    "heart": ((2.0, 5.0), (1.5, 3.0)),
    "grey": ((2.0, 4.0), (0.8, 1.5)),
    "white": ((1.5, 3.0), (1.0, 2.0)),
    "deep_grey": ((2.0, 4.0), (0.8, 1.5)),
    "fluid": ((0.5, 1.5), (2.0, 4.0)),
    "trabecular": ((80.0, 150.0), (0.5, 0.8)),
    "cortical": ((30.0, 60.0), (0.8, 1.5)),
}


def texture_field(organ_fractions: np.ndarray, seed: int, fov_mm: float) -> tuple[np.ndarray, dict]:
    """The summed texture (float32 HU) and the drawn ``{organ: (std_hu, sigma_mm)}``."""
    size = organ_fractions.shape[-1]
    out = np.zeros((size, size), dtype=np.float32)
    params = {}
    for k, name in enumerate(ORGANS[: len(organ_fractions)]):
        if name not in TEXTURE or not organ_fractions[k].any():
            continue
        rng = np.random.default_rng([seed, 1, k])
        (s0, s1), (g0, g1) = TEXTURE[name]
        std, sigma = float(rng.uniform(s0, s1)), float(rng.uniform(g0, g1))
        out += np.float32(std) * organ_fractions[k] * _texture(rng, size, fov_mm, sigma)
        params[name] = (std, sigma)
    return out, params


def add_vessels(sc, seed: int, keep_out: list) -> None:
    """Fine vessels in the liver and lungs, each set placed just above its organ's layer.

    ``keep_out``: shapes (mm) no vessel may enter (the uniform region, lesions and their rings).
    """
    rng = np.random.default_rng([seed, 0])
    avoid = _either(*keep_out) if keep_out else None
    targets = [
        (i, layer) for i, layer in enumerate(sc.layers) if layer.organ == "liver" or layer.label == LUNG
    ]
    per_lung = int(rng.integers(30, 71))
    for i, organ in reversed(targets):  # bottom-up insertion keeps the earlier indices valid
        liver = organ.organ == "liver"
        n = int(rng.integers(20, 46)) if liver else per_lung
        new = []
        for _ in range(n):
            start = _inside(organ.shape, rng, margin=3.0 if liver else 1.0)
            if start is None:
                continue
            r0 = float(rng.uniform(0.6, 1.6) if liver else rng.uniform(0.3, 0.9))
            length = float(rng.uniform(8, 30) if liver else rng.uniform(5, 20))
            ang, pts = float(rng.uniform(0, 2 * math.pi)), [start]
            for _k in range(2):
                ang += float(rng.uniform(-0.4, 0.4))
                pts.append((pts[-1][0] + length / 2 * math.cos(ang), pts[-1][1] + length / 2 * math.sin(ang)))
            shape = _both(_polyline(pts, r0, r0 * float(rng.uniform(0.4, 0.8))), organ.shape)
            if avoid is not None:
                shape = _Combine("minus", shape, avoid)
            hu = organ.hu + float(rng.uniform(40, 120)) if liver else float(rng.uniform(0, 60))
            new.append((shape, hu, "liver" if liver else "lung_vessel"))
        for shape, hu, name in reversed(new):
            _put(sc, i + 1, shape, hu, SOFT, name)


def _inside(shape, rng: np.random.Generator, margin: float, tries: int = 50):
    """A random point at least ``margin`` mm inside ``shape``, or None."""
    x0, x1, y0, y1 = shape.bbox()
    for _ in range(tries):
        x, y = float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))
        if shape.sdf(np.array([x]), np.array([y]))[0] < -margin:
            return x, y
    return None


def organ_std(texture: np.ndarray, organs: np.ndarray, name: str, erode: int = 2) -> float:
    """Std of ``texture`` over the interior of organ ``name`` (NaN if it has no interior)."""
    mask = ndimage.binary_erosion(organs == organ_id(name), iterations=erode)
    return float(texture[mask].std()) if mask.sum() >= 50 else math.nan
