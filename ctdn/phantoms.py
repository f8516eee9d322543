"""Procedural 2-D anatomical phantoms in HU, for training and tests without patient data.

Every phantom is drawn in millimetres on a square field of view (``FOV_MM``: 360 mm for thorax and
abdomen, 250 mm for the head), so ``size`` only sets the pixel size (``FOV_MM[kind] / size``):
``size=128`` is the same anatomy as ``size=512`` at coarser pixels. Shapes are rendered at twice
the resolution and area-averaged, so edges carry partial-volume values instead of stair steps. A
seeded smooth random field (correlation length ~1.5 mm; 1.5-3 HU, 15 HU in lung) is added to
soft tissue, fat and lung so that images are not piecewise flat. The same (kind, seed, size)
gives a bitwise identical phantom.

Typical values (HU; each phantom draws its own within these ranges):

| tissue | HU | label |
|---|---|---|
| air, bowel gas | -1000 | 0 air |
| lung parenchyma | -880 .. -820 | 1 lung |
| fat | -120 .. -80 | 2 fat |
| muscle, heart, spleen, liver, brain, CSF | 0 .. 65 | 3 soft tissue |
| contrast-enhanced vessels, kidney cortex | 150 .. 300 | 3 soft tissue |
| trabecular bone | 200 .. 400 | 4 bone |
| cortical bone, skull | 800 .. 1800 | 4 bone |
| lesions (abdomen, head) | background +- 5 .. 20 | as background |

Generation takes about 0.1-0.3 s per 512x512 phantom on a 2-core CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .errors import InputError

__all__ = ["KINDS", "TISSUES", "FOV_MM", "Lesion", "Phantom", "generate", "phantom", "cylinder"]

KINDS = ("thorax", "abdomen", "head")
TISSUES = {0: "air", 1: "lung", 2: "fat", 3: "soft_tissue", 4: "bone"}
AIR, LUNG, FAT, SOFT, BONE = 0, 1, 2, 3, 4
FOV_MM = {"thorax": 360.0, "abdomen": 360.0, "head": 250.0}
_SUPER = 2  # supersampling factor for anti-aliased edges


@dataclass(frozen=True)
class Lesion:
    """A round lesion: centre (row, col) in pixels, radius in pixels, contrast to its background."""

    center: tuple[float, float]
    radius_px: float
    contrast_hu: float
    background_hu: float


@dataclass
class Phantom:
    """A phantom slice in HU with its tissue labels, a uniform region and its lesions."""

    hu: np.ndarray
    labels: np.ndarray
    uniform: np.ndarray
    lesions: list[Lesion] = field(default_factory=list)
    pixel_size_mm: float = 0.0
    kind: str = ""
    seed: int = 0

    def lesion_mask(self, i: int, ring: bool = False) -> np.ndarray:
        """Disk of lesion ``i``, or with ``ring`` its background annulus (1.5 to 2.5 radii)."""
        les = self.lesions[i]
        rr, cc = np.indices(self.hu.shape)
        d = np.hypot(rr - les.center[0], cc - les.center[1])
        if not ring:
            return d <= les.radius_px
        mask = (d >= 1.5 * les.radius_px) & (d <= 2.5 * les.radius_px)
        for j, other in enumerate(self.lesions):
            if j != i:
                mask &= np.hypot(rr - other.center[0], cc - other.center[1]) > other.radius_px + 1
        # Keep only pixels of the lesion's own background tissue (texture is a few HU).
        return mask & (np.abs(self.hu - les.background_hu) < 25.0)


# ---------------------------------------------------------------------------------------------
# Drawing on a supersampled canvas, in millimetres
# ---------------------------------------------------------------------------------------------
class _Canvas:
    """HU and label images at ``_SUPER`` x resolution with mm coordinates (x right, y down)."""

    def __init__(self, size: int, fov_mm: float, background: float = -1000.0) -> None:
        self.n = size * _SUPER
        self.px = fov_mm / self.n
        c = (np.arange(self.n) - (self.n - 1) / 2) * self.px
        self.x = c[None, :]
        self.y = c[:, None]
        self.hu = np.full((self.n, self.n), background, dtype=np.float32)
        self.labels = np.zeros((self.n, self.n), dtype=np.uint8)

    def _window(self, cx: float, cy: float, r: float) -> tuple[slice, slice]:
        lo = lambda v: max(0, int(math.floor((v - r) / self.px + (self.n - 1) / 2)) - 1)  # noqa: E731
        hi = lambda v: min(self.n, int(math.ceil((v + r) / self.px + (self.n - 1) / 2)) + 2)  # noqa: E731
        return slice(lo(cy), hi(cy)), slice(lo(cx), hi(cx))

    def ellipse(self, cx, cy, a, b, angle=0.0) -> np.ndarray:
        """Boolean mask of a rotated ellipse (semi-axes a along x, b along y, angle in radians)."""
        mask = np.zeros((self.n, self.n), dtype=bool)
        rows, cols = self._window(cx, cy, max(a, b))
        if rows.start >= rows.stop or cols.start >= cols.stop:
            return mask
        dx, dy = self.x[:, cols] - cx, self.y[rows, :] - cy
        ca, sa = math.cos(angle), math.sin(angle)
        u = (dx * ca + dy * sa) / a
        v = (-dx * sa + dy * ca) / b
        mask[rows, cols] = u * u + v * v <= 1.0
        return mask

    def tube(self, x0, y0, x1, y1, r0, r1) -> np.ndarray:
        """Mask of a tapered segment (radius r0 at the start, r1 at the end)."""
        mask = np.zeros((self.n, self.n), dtype=bool)
        r = max(r0, r1)
        rows, cols = self._window((x0 + x1) / 2, (y0 + y1) / 2, math.hypot(x1 - x0, y1 - y0) / 2 + r)
        dx, dy = self.x[:, cols] - x0, self.y[rows, :] - y0
        sx, sy = x1 - x0, y1 - y0
        length2 = max(sx * sx + sy * sy, 1e-9)
        t = np.clip((dx * sx + dy * sy) / length2, 0.0, 1.0)
        dist = np.hypot(dx - t * sx, dy - t * sy)
        mask[rows, cols] = dist <= r0 + (r1 - r0) * t
        return mask

    def paint(self, mask: np.ndarray, hu: float, label: int) -> None:
        """Set HU and label inside ``mask``."""
        self.hu[mask] = hu
        self.labels[mask] = label

    def finish(self, rng: np.random.Generator, texture: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
        """Add texture per label, area-average to the output size; labels from one subsample."""
        field_ = rng.standard_normal(self.hu.shape).astype(np.float32)
        field_ = ndimage.gaussian_filter(field_, sigma=1.5 / self.px)
        field_ /= max(float(field_.std()), 1e-12)
        for label, amplitude in texture.items():
            sel = self.labels == label
            self.hu[sel] += amplitude * field_[sel]
        n = self.n // _SUPER
        hu = self.hu.reshape(n, _SUPER, n, _SUPER).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
        return hu, self.labels[::_SUPER, ::_SUPER].copy()

    def to_pixels(self, x: float, y: float) -> tuple[float, float]:
        """mm -> (row, col) in output pixels."""
        n = self.n // _SUPER
        opx = self.px * _SUPER
        return y / opx + (n - 1) / 2, x / opx + (n - 1) / 2


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _vertebra(cv: _Canvas, rng, cx, cy) -> None:
    r = _u(rng, 15, 20)
    cv.paint(cv.ellipse(cx, cy + r + 12, 6, 14), _u(rng, 900, 1300), BONE)  # spinous process
    cv.paint(cv.ellipse(cx, cy, r, r * 0.9), _u(rng, 1000, 1500), BONE)  # cortical shell
    cv.paint(cv.ellipse(cx, cy, r - 2.0, r * 0.9 - 2.0), _u(rng, 200, 400), BONE)  # trabecular
    cv.paint(cv.ellipse(cx, cy + r + 2, 6, 5), _u(rng, 10, 40), SOFT)  # spinal canal


def _body_wall(cv: _Canvas, rng, a: float, b: float) -> tuple[float, float]:
    """Skin/subcutaneous fat and a muscle ring; returns the cavity's semi-axes."""
    cv.paint(cv.ellipse(0, 0, a, b), _u(rng, -120, -80), FAT)
    fat = _u(rng, 8, 22)
    muscle = _u(rng, 8, 15)
    cv.paint(cv.ellipse(0, 0, a - fat, b - fat), _u(rng, 40, 60), SOFT)
    ia, ib = a - fat - muscle, b - fat - muscle
    return ia, ib


def _place_lesions(cv, rng, organ, background, count, contrast, radius_mm, avoid):
    """Random round lesions fully inside ``organ`` (mask at canvas resolution).

    Only pixels still holding the organ's value count, so structures painted over the organ
    (vessels, other organs, earlier lesions) are never covered or counted as background.
    """
    lesions: list[tuple[float, float, float, float]] = []
    organ = organ & (cv.hu == np.float32(background))
    ys, xs = np.nonzero(organ)
    if len(ys) == 0:
        return lesions
    for _ in range(200):
        if len(lesions) == count:
            break
        r = _u(rng, *radius_mm)
        k = int(rng.integers(len(ys)))
        cx = float(cv.x[0, xs[k]])
        cy = float(cv.y[ys[k], 0])
        # The background ring used to measure contrast (out to 2.5 radii) must fit in the organ.
        disk = cv.ellipse(cx, cy, 2.5 * r + 1.0, 2.5 * r + 1.0)
        if not (disk <= organ).all() or (disk & avoid).any():
            continue
        organ = organ & ~disk
        if any(math.hypot(cx - x, cy - y) < 2.5 * (r + rr) + 2.0 for x, y, rr, _ in lesions):
            continue
        sign = 1.0 if rng.random() < 0.5 else -1.0
        c = sign * _u(rng, *contrast)
        cv.paint(cv.ellipse(cx, cy, r, r), background + c, SOFT)
        lesions.append((cx, cy, r, c))
    return lesions


def _uniform_disk(cv, rng, organ, avoid, radius_mm=9.0):
    """A disk inside ``organ`` away from ``avoid`` (mask at canvas resolution), or None.

    Only pixels still holding the organ's value count, so later structures are excluded.
    """
    values = cv.hu[organ]
    if values.size == 0:
        return None
    same = organ & (cv.hu == np.median(values))
    inner = ndimage.binary_erosion(same & ~avoid, iterations=max(1, int((radius_mm + 3) / cv.px)))
    ys, xs = np.nonzero(inner)
    if len(ys) == 0:
        return None
    k = int(rng.integers(len(ys)))
    return float(cv.x[0, xs[k]]), float(cv.y[ys[k], 0]), radius_mm


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------
def _thorax(cv: _Canvas, rng) -> tuple[list, tuple]:
    a, b = _u(rng, 150, 170), _u(rng, 110, 130)
    ia, ib = _body_wall(cv, rng, a, b)
    cavity = cv.ellipse(0, 0, ia, ib)
    cv.paint(cavity, _u(rng, 30, 45), SOFT)  # mediastinal soft tissue
    # Ribs: small bony ellipses in the chest wall, cortical rim around marrow.
    for k in range(14):
        t = (k + 0.5) / 14 * 2 * math.pi + _u(rng, -0.08, 0.08)
        rx, ry = (ia + 5) * math.cos(t), (ib + 5) * math.sin(t)
        if ry > ib * 0.7:  # no ribs over the spine
            continue
        ang = t + math.pi / 2
        cv.paint(cv.ellipse(rx, ry, 9, 4.5, ang), _u(rng, 800, 1500), BONE)
        cv.paint(cv.ellipse(rx, ry, 6.5, 2.2, ang), _u(rng, 200, 320), BONE)
    lung_hu = _u(rng, -880, -820)
    lungs = np.zeros_like(cavity)
    for side in (-1, 1):
        la, lb = _u(rng, 48, 62), _u(rng, 72, 92)
        m = cv.ellipse(side * _u(rng, 62, 74), _u(rng, -12, 4), la, lb, side * _u(rng, 0.0, 0.2))
        lungs |= m & cv.ellipse(0, 0, ia - 4, ib - 4)
    cv.paint(lungs, lung_hu, LUNG)
    # Heart, aorta, spine, sternum.
    hx, hy = _u(rng, 5, 25), _u(rng, -15, 10)
    heart = cv.ellipse(hx, hy, _u(rng, 42, 52), _u(rng, 38, 46), _u(rng, -0.4, 0.4))
    cv.paint(heart, _u(rng, 35, 45), SOFT)
    cv.paint(cv.ellipse(_u(rng, -12, 0), _u(rng, -35, -25), 14, 14), _u(rng, 150, 300), SOFT)  # ascending
    cv.paint(cv.ellipse(_u(rng, 18, 28), ib - 45, 12, 12), _u(rng, 150, 300), SOFT)  # descending aorta
    _vertebra(cv, rng, 0.0, ib - 22)
    cv.paint(cv.ellipse(0, -ib - 2, 14, 7), _u(rng, 800, 1200), BONE)
    # Lung vessels: tapering branches from each hilum, drawn only inside the lungs.
    vessel_hu = _u(rng, 30, 60)
    vessels = np.zeros_like(lungs)
    for side in (-1, 1):
        outward = 0.0 if side > 0 else math.pi
        stack = [(side * 35.0, _u(rng, -10, 5), outward + _u(rng, -1.2, 1.2), 4.0, 0)]
        while stack:
            x, y, ang, r, depth = stack.pop()
            length = _u(rng, 18, 34)
            x1, y1 = x + length * math.cos(ang), y + length * math.sin(ang)
            r1 = max(0.6, r * 0.7)
            vessels |= cv.tube(x, y, x1, y1, r, r1)
            if depth < 4:
                for turn in (-1, 1):
                    stack.append((x1, y1, ang + turn * _u(rng, 0.3, 0.7), r1, depth + 1))
    cv.paint(vessels & lungs, vessel_hu, SOFT)
    # Nodules: small soft-tissue lesions in the lungs (high contrast against lung).
    lesions = []
    lung_core = ndimage.binary_erosion(lungs & ~vessels, iterations=int(6 / cv.px))
    for cx, cy, r, _c in _place_lesions(
        cv, rng, lung_core, lung_hu, int(rng.integers(1, 4)), (0, 1), (1.5, 7.5), vessels
    ):
        nodule = _u(rng, 20, 60)
        cv.paint(cv.ellipse(cx, cy, r, r), nodule, SOFT)
        lesions.append((cx, cy, r, nodule - lung_hu, lung_hu))
    uniform = _uniform_disk(cv, rng, heart, np.zeros_like(heart), radius_mm=9.0)
    return lesions, uniform


def _abdomen(cv: _Canvas, rng) -> tuple[list, tuple]:
    a, b = _u(rng, 150, 170), _u(rng, 105, 125)
    ia, ib = _body_wall(cv, rng, a, b)
    cavity = cv.ellipse(0, 0, ia, ib)
    cv.paint(cavity, _u(rng, -110, -85), FAT)  # visceral fat
    liver_hu = _u(rng, 55, 65)
    liver = cv.ellipse(-ia * 0.42, _u(rng, -20, 0), _u(rng, 58, 72), _u(rng, 52, 66), _u(rng, -0.4, 0.2))
    liver &= cv.ellipse(0, 0, ia - 3, ib - 3)
    cv.paint(liver, liver_hu, SOFT)
    spleen_hu = _u(rng, 45, 55)
    spleen = cv.ellipse(ia * 0.62, _u(rng, 5, 25), _u(rng, 24, 32), _u(rng, 38, 48), _u(rng, -0.5, 0.0))
    spleen &= cv.ellipse(0, 0, ia - 3, ib - 3)
    cv.paint(spleen, spleen_hu, SOFT)
    # Kidneys (enhancing cortex, lower medulla), psoas, spine, great vessels.
    for side in (-1, 1):
        kx, ky = side * _u(rng, 50, 60), ib - _u(rng, 48, 58)
        ang = side * _u(rng, 0.2, 0.5)
        cv.paint(cv.ellipse(kx, ky, 21, 32, ang), _u(rng, 150, 200), SOFT)
        cv.paint(cv.ellipse(kx, ky, 11, 20, ang), _u(rng, 60, 110), SOFT)
        cv.paint(cv.ellipse(side * 28, ib - 30, 14, 18), _u(rng, 45, 60), SOFT)
    _vertebra(cv, rng, 0.0, ib - 25)
    aorta = cv.ellipse(_u(rng, 10, 16), ib - 58, 11, 11)
    ivc = cv.ellipse(_u(rng, -22, -16), ib - 56, 13, 9)
    cv.paint(aorta, _u(rng, 150, 300), SOFT)
    cv.paint(ivc, _u(rng, 120, 200), SOFT)
    vessels = aorta | ivc
    # Bowel loops in the anterior abdomen: wall, contents, some gas.
    organs = liver | spleen
    for _ in range(int(rng.integers(5, 9))):
        for _try in range(20):
            bx, by = _u(rng, -30, ia * 0.5), _u(rng, -ib + 20, 15)
            r = _u(rng, 9, 16)
            loop = cv.ellipse(bx, by, r, r * _u(rng, 0.7, 1.0), _u(rng, 0, math.pi))
            if not (loop & organs).any() and (loop <= cavity).all():
                break
        else:
            continue
        cv.paint(loop, _u(rng, 35, 50), SOFT)
        inner = cv.ellipse(bx, by, r - 2.5, (r - 2.5) * 0.8)
        if rng.random() < 0.5:
            cv.paint(inner, -1000.0, AIR)  # gas
        else:
            cv.paint(inner, _u(rng, 10, 30), SOFT)
    # Low-contrast lesions in liver and spleen.
    lesions = []
    n_total = int(rng.integers(3, 7))
    n_liver = max(2, n_total - int(rng.integers(1, 3)))
    avoid = np.zeros_like(liver)
    for organ, bg, n in ((liver, liver_hu, n_liver), (spleen, spleen_hu, n_total - n_liver)):
        for cx, cy, r, c in _place_lesions(cv, rng, organ, bg, n, (5, 20), (2.0, 7.5), avoid):
            lesions.append((cx, cy, r, c, bg))
            avoid |= cv.ellipse(cx, cy, r + 6, r + 6)
    uniform = _uniform_disk(cv, rng, liver, avoid | vessels, radius_mm=9.0)
    return lesions, uniform


def _head(cv: _Canvas, rng) -> tuple[list, tuple]:
    a, b = _u(rng, 70, 80), _u(rng, 88, 98)
    ang = _u(rng, -0.1, 0.1)
    cv.paint(cv.ellipse(0, 0, a, b, ang), _u(rng, 30, 50), SOFT)  # scalp
    scalp = _u(rng, 4, 6)
    skull = _u(rng, 5, 8)
    cv.paint(cv.ellipse(0, 0, a - scalp, b - scalp, ang), _u(rng, 1000, 1800), BONE)
    ga, gb = a - scalp - skull, b - scalp - skull
    grey_hu, white_hu = _u(rng, 38, 42), _u(rng, 25, 30)
    cv.paint(cv.ellipse(0, 0, ga, gb, ang), _u(rng, 2, 8), SOFT)  # thin CSF layer
    cv.paint(cv.ellipse(0, 0, ga - 1.5, gb - 1.5, ang), grey_hu, SOFT)
    cortex = _u(rng, 3, 5)
    white = cv.ellipse(0, 0, ga - 1.5 - cortex, gb - 1.5 - cortex, ang)
    cv.paint(white, white_hu, SOFT)
    # Ventricles: two lateral ventricles near the midline.
    csf = _u(rng, 0, 15)
    ventricles = np.zeros_like(white)
    for side in (-1, 1):
        v = cv.ellipse(side * _u(rng, 8, 12), _u(rng, -8, 4), _u(rng, 4, 7), _u(rng, 18, 26), side * 0.25)
        ventricles |= v
    cv.paint(ventricles, csf, SOFT)
    lesions = []
    avoid = cv.ellipse(0, 0, 30, 40)  # keep lesions out of the ventricle region
    core = ndimage.binary_erosion(white, iterations=int(3 / cv.px))
    for cx, cy, r, c in _place_lesions(
        cv, rng, core, white_hu, int(rng.integers(1, 4)), (5, 15), (3.0, 8.0), avoid
    ):
        lesions.append((cx, cy, r, c, white_hu))
        avoid |= cv.ellipse(cx, cy, r + 6, r + 6)
    uniform = _uniform_disk(cv, rng, core, avoid | ventricles, radius_mm=8.0)
    return lesions, uniform


_BUILDERS = {"thorax": _thorax, "abdomen": _abdomen, "head": _head}
_TEXTURE = {
    "thorax": {SOFT: 2.0, FAT: 3.0, LUNG: 15.0},
    "abdomen": {SOFT: 2.0, FAT: 3.0},
    "head": {SOFT: 1.5},
}


def _check(kind, seed, size) -> None:
    if kind not in KINDS:
        raise InputError(f"unknown phantom kind {kind!r}; choose one of {', '.join(KINDS)}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 64 <= size <= 4096:
        raise InputError(f"phantom size must be an integer in [64, 4096], got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"phantom seed must be a non-negative integer, got {seed!r}")


def generate(kind: str, *, seed: int = 0, size: int = 512) -> Phantom:
    """A seeded anatomical phantom of ``kind`` ("thorax", "abdomen", "head") at size x size."""
    _check(kind, seed, size)
    size, seed = int(size), int(seed)
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    cv = _Canvas(size, FOV_MM[kind])
    raw_lesions, uniform = _BUILDERS[kind](cv, rng)
    hu, labels = cv.finish(rng, _TEXTURE[kind])
    opx = FOV_MM[kind] / size
    lesions = []
    for cx, cy, r, contrast, background in raw_lesions:
        lesions.append(Lesion(cv.to_pixels(cx, cy), r / opx, float(contrast), float(background)))
    umask = np.zeros((size, size), dtype=bool)
    if uniform is not None:
        ux, uy, ur = uniform
        row, col = cv.to_pixels(ux, uy)
        rr, cc = np.indices((size, size))
        umask = np.hypot(rr - row, cc - col) <= ur / opx
    return Phantom(hu, labels, umask, lesions, opx, kind, seed)


def phantom(kind: str, *, seed: int = 0, size: int = 512) -> np.ndarray:
    """The phantom's HU image (float32, size x size)."""
    return generate(kind, seed=seed, size=size).hu


def cylinder(
    *, size: int = 512, diameter_mm: float = 300.0, hu: float = 40.0, fov_mm: float = 360.0
) -> Phantom:
    """A uniform disk in air without texture (noise calibration); ``uniform`` is its central third."""
    _check("head", 0, size)
    if not (0 < diameter_mm <= fov_mm):
        raise InputError(f"diameter_mm must be in (0, fov_mm], got {diameter_mm}")
    cv = _Canvas(size, fov_mm)
    cv.paint(cv.ellipse(0, 0, diameter_mm / 2, diameter_mm / 2), float(hu), SOFT)
    n = size
    img = cv.hu.reshape(n, _SUPER, n, _SUPER).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
    labels = cv.labels[::_SUPER, ::_SUPER].copy()
    c = (np.arange(n) - (n - 1) / 2) * (fov_mm / n)
    r = np.hypot(c[None, :], c[:, None])
    return Phantom(img, labels, r <= diameter_mm / 6, [], fov_mm / n, "cylinder", 0)
