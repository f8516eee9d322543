"""Procedural 2-D anatomical phantoms in HU, for training and tests without patient data.

Conventions
-----------
- Images are (row, col) = (y, x) with the patient's anterior at the top (row 0) and posterior
  (spine) at the bottom, as displayed on a scanner. Which lateral side holds the liver is not
  meant to be clinically exact (it is on the image left, the radiological convention).
- Everything is drawn in millimetres on a square field of view centred on the isocentre
  (``FOV_MM``: 360 mm for thorax and abdomen, 250 mm for the head). ``size`` only sets the pixel
  size, ``pixel_size_mm = FOV_MM[kind] / size``: ``size=128`` is the same anatomy (same shapes,
  lesions, uniform region and texture) as ``size=512`` at coarser pixels.
- Edges carry partial-volume values: each shape's coverage of a pixel is computed from its
  signed distance on a supersampled grid (2x at 512, up to 8x at small sizes) and area-averaged.
- A seeded smooth random texture (white noise filtered with a Gaussian of sigma 2 mm on a fixed
  0.5 mm grid, so the same field at every size) is added per tissue: 2-3 HU std in soft tissue
  and fat, 15 HU in lung, none in air and bone. Images are therefore not piecewise flat.
- Every lesion has its stated contrast ``contrast_hu`` (the intended, pre-texture contrast)
  between ``lesion_mask(i)`` and ``lesion_mask(i, ring=True)``: the texture's imbalance between
  the two is taken out of the lesion, so measured and intended contrast agree to rounding.
- The same (kind, seed, size) gives a bitwise identical phantom; all random draws come from
  ``np.random.default_rng`` seeded with (seed, kind).

Values (HU; each phantom draws its own within these ranges):

================================================  =============================  ===============
tissue                                            HU                             label (TISSUES)
================================================  =============================  ===============
air outside the body, bowel gas                   -1000                          0 air
lung parenchyma                                   -875 .. -825                   1 lung
subcutaneous and visceral fat                     -120 .. -80                    2 fat
CSF (ventricles), gallbladder, renal pelvis       0 .. 20                        3 soft tissue
thin sulci, interhemispheric fissure              grey matter - 16 .. - 8        3 soft tissue
white / grey / deep grey matter                   25-30 / 38-42 / 34-38          3 soft tissue
muscle / heart / spleen / liver                   40-60 / 35-45 / 45-55 / 55-65  3 soft tissue
lung vessels                                      30 .. 60                       3 soft tissue
enhanced aorta, IVC, portal veins, kidney cortex  150 .. 300                     3 soft tissue
kidney medulla (corticomedullary phase)           80 .. 120                      3 soft tissue
trabecular bone, diploe / cortical bone           200-700 / 800-1800             4 bone
abdominal lesions (liver, spleen)                 background +-5 .. 20           3 soft tissue
head lesions (white matter)                       background +-5 .. 15           3 soft tissue
lung nodules (3-15 mm)                            20 .. 60                       3 soft tissue
================================================  =============================  ===============

Generation of a 512x512 phantom on a 2-core CPU (30 seeds each): median 0.13 s, at most 0.27 s
(thorax 0.13 / 0.27 s, abdomen 0.13 / 0.22 s, head 0.12 / 0.14 s); ``size=128`` takes 0.06-0.08
s (rendered 8x supersampled), ``size=4096`` about 4 s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .errors import InputError
from .hu import TISSUE_EDGES, TISSUES

__all__ = ["KINDS", "TISSUES", "FOV_MM", "VERSION", "Lesion", "Phantom", "generate", "phantom", "cylinder"]

# Bumped whenever the same (kind, seed, size) would give different pixels; caches record it.
VERSION = 2

KINDS = ("thorax", "abdomen", "head")
AIR, LUNG, FAT, SOFT, BONE = 0, 1, 2, 3, 4
FOV_MM = {"thorax": 360.0, "abdomen": 360.0, "head": 250.0}

_SUBPIXEL_MM = 0.36  # supersample until a subpixel is at most this wide (at most 8x)
_TEXTURE_GRID_MM = 0.5  # the texture's white noise lives on this fixed grid ...
_TEXTURE_SIGMA_MM = 2.0  # ... and is smoothed with a Gaussian of this sigma
_TEXTURE = {  # texture std (HU) per tissue label
    "thorax": {SOFT: 2.5, FAT: 3.0, LUNG: 15.0},
    "abdomen": {SOFT: 2.5, FAT: 3.0},
    "head": {SOFT: 2.0},
}


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
        """Interior of lesion ``i``, or with ``ring`` its background annulus (1.5 to 2.5 radii).

        The interior is the pixels lying wholly inside the lesion (centre at least 0.75 px inside
        its edge), so partial-volume edge pixels do not dilute a contrast measurement; a lesion
        smaller than that gives the pixel holding its centre. The ring keeps only pixels of the
        ring's dominant tissue label whose 3x3 neighbourhood has that label too, outside every
        other lesion; for lesions under 2 px it is widened to at least 1 px clear of the edge.
        """
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < len(self.lesions):
            raise InputError(f"lesion index must be an integer in [0, {len(self.lesions)}), got {i!r}")
        les = self.lesions[int(i)]
        r = les.radius_px
        if not ring:
            return _disk_mask(self.hu.shape, les.center, r - 0.75, at_least_one=True)
        inner = max(1.5 * r, r + 1.0)
        outer = max(2.5 * r, inner + 1.5)
        mask = _disk_mask(self.hu.shape, les.center, outer) & ~_disk_mask(self.hu.shape, les.center, inner)
        for j, other in enumerate(self.lesions):
            if j != i:
                mask &= ~_disk_mask(self.hu.shape, other.center, other.radius_px + 1.5)
        if not mask.any():
            return mask
        dominant = np.bincount(self.labels[mask], minlength=len(TISSUES)).argmax()
        same = ndimage.binary_erosion(self.labels == dominant, np.ones((3, 3), bool), border_value=1)
        return mask & same

    def lesion_contrast(self, img: np.ndarray, i: int) -> float:
        """Measured contrast of lesion ``i`` in ``img`` (HU): mean of its interior minus its ring's."""
        inside, ring = self.lesion_mask(i), self.lesion_mask(i, ring=True)
        if not (inside.any() and ring.any()):
            return float("nan")
        return float(img[inside].mean(dtype=np.float64) - img[ring].mean(dtype=np.float64))

    def contrast_kept(self, img: np.ndarray) -> list[float]:
        """Measured / true contrast of every measurable lesion in ``img`` (1.0: fully kept)."""
        ratios = [self.lesion_contrast(img, i) / les.contrast_hu for i, les in enumerate(self.lesions)]
        return [r for r in ratios if np.isfinite(r)]


def _disk_mask(
    shape: tuple[int, ...], center: tuple[float, float], radius: float, at_least_one: bool = False
) -> np.ndarray:
    """Pixels whose centre lies within ``radius`` of ``center`` (row, col), in pixels."""
    rows = np.arange(shape[0])[:, None] - center[0]
    cols = np.arange(shape[1])[None, :] - center[1]
    mask = rows * rows + cols * cols <= radius * radius if radius > 0 else np.zeros(shape, dtype=bool)
    if at_least_one and not mask.any():
        r = min(max(int(round(center[0])), 0), shape[0] - 1)
        c = min(max(int(round(center[1])), 0), shape[1] - 1)
        mask[r, c] = True
    return mask


# ---------------------------------------------------------------------------------------------
# Shapes: signed distance (mm, negative inside) and a bounding box (xmin, xmax, ymin, ymax)
# ---------------------------------------------------------------------------------------------
_INF = float("inf")


class _Shape:
    """A region of the plane, x to the right and y down (posterior), in mm."""

    def sdf(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Approximate signed distance to the boundary, negative inside."""
        raise NotImplementedError

    def bbox(self) -> tuple[float, float, float, float]:
        """(xmin, xmax, ymin, ymax) enclosing the region."""
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class _Ellipse(_Shape):
    """Ellipse with semi-axes a (along x before rotation) and b, rotated by ``angle`` radians."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float = 0.0

    def sdf(self, x, y):
        """First-order distance (exact for circles, accurate near any ellipse's boundary)."""
        dx, dy = x - self.cx, y - self.cy
        if self.a == self.b:
            return np.hypot(dx, dy) - self.a
        if self.angle:
            c, s = math.cos(self.angle), math.sin(self.angle)
            dx, dy = dx * c + dy * s, dy * c - dx * s
        u, v = dx / self.a, dy / self.b
        rho2 = u * u + v * v
        grad2 = (u * u) / (self.a * self.a) + (v * v) / (self.b * self.b)
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.sqrt(grad2 / rho2)  # |grad rho|, between 1/max(a, b) and 1/min(a, b)
        k = np.fmax(k, 1.0 / max(self.a, self.b))  # 0/0 at the centre -> the smallest value
        return (np.sqrt(rho2) - 1.0) / k

    def bbox(self):
        c, s = math.cos(self.angle), math.sin(self.angle)
        hx = math.hypot(self.a * c, self.b * s)
        hy = math.hypot(self.a * s, self.b * c)
        return self.cx - hx, self.cx + hx, self.cy - hy, self.cy + hy


@dataclass(frozen=True, eq=False)
class _Tube(_Shape):
    """A segment with rounded ends whose radius tapers linearly from r0 to r1 (a vessel piece)."""

    x0: float
    y0: float
    x1: float
    y1: float
    r0: float
    r1: float

    def sdf(self, x, y):
        sx, sy = self.x1 - self.x0, self.y1 - self.y0
        dx, dy = x - self.x0, y - self.y0
        t = np.clip((dx * sx + dy * sy) / max(sx * sx + sy * sy, 1e-12), 0.0, 1.0)
        return np.hypot(dx - t * sx, dy - t * sy) - (self.r0 + (self.r1 - self.r0) * t)

    def bbox(self):
        r = max(self.r0, self.r1)
        return (
            min(self.x0, self.x1) - r,
            max(self.x0, self.x1) + r,
            min(self.y0, self.y1) - r,
            max(self.y0, self.y1) + r,
        )


@dataclass(frozen=True, eq=False)
class _Polar(_Shape):
    """A star-shaped region: boundary radius ``radii[k]`` at angle 2 pi k / len(radii)."""

    cx: float
    cy: float
    radii: np.ndarray

    def sdf(self, x, y):
        dx, dy = x - self.cx, y - self.cy
        rho = np.hypot(dx, dy)
        n = len(self.radii)
        pos = np.mod(np.arctan2(dy, dx), 2 * math.pi) * (n / (2 * math.pi))
        i0 = np.floor(pos)
        w = pos - i0
        i0 = i0.astype(np.intp) % n
        r0, r1 = self.radii[i0], self.radii[(i0 + 1) % n]
        radius = r0 + (r1 - r0) * w
        slope = (r1 - r0) * (n / (2 * math.pi)) / np.maximum(rho, 0.5 * radius)
        return (rho - radius) / np.sqrt(1.0 + slope * slope)

    def bbox(self):
        r = float(self.radii.max())
        return self.cx - r, self.cx + r, self.cy - r, self.cy + r


@dataclass(frozen=True, eq=False)
class _HalfPlane(_Shape):
    """Points with (nx, ny) . (x, y) <= c, (nx, ny) a unit vector."""

    nx: float
    ny: float
    c: float

    def sdf(self, x, y):
        return self.nx * x + self.ny * y - self.c

    def bbox(self):
        return -_INF, _INF, -_INF, _INF


@dataclass(frozen=True, eq=False)
class _Combine(_Shape):
    """Intersection ("and"), union ("or") or difference ("minus") of two shapes."""

    op: str
    a: _Shape
    b: _Shape

    def sdf(self, x, y):
        if self.op == "and":
            return np.maximum(self.a.sdf(x, y), self.b.sdf(x, y))
        if self.op == "or":
            return np.minimum(self.a.sdf(x, y), self.b.sdf(x, y))
        return np.maximum(self.a.sdf(x, y), -self.b.sdf(x, y))

    def bbox(self):
        a, b = self.a.bbox(), self.b.bbox()
        if self.op == "and":
            return max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3])
        if self.op == "or":
            return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])
        return a


def _ellipse(cx: float, cy: float, a: float, b: float, angle: float = 0.0) -> _Shape:
    """An axis-aligned or rotated ellipse (semi-axes a along x, b along y before rotation)."""
    return _Ellipse(float(cx), float(cy), float(a), float(b), float(angle))


def _circle(cx: float, cy: float, r: float) -> _Shape:
    """A disk of radius r."""
    return _Ellipse(float(cx), float(cy), float(r), float(r))


def _ring(outer: _Shape, inner: _Shape) -> _Shape:
    """The region of ``outer`` not in ``inner`` (a shell)."""
    return _Combine("minus", outer, inner)


def _both(a: _Shape, b: _Shape) -> _Shape:
    """Intersection of two shapes."""
    return _Combine("and", a, b)


def _either(*shapes: _Shape) -> _Shape:
    """Union of shapes."""
    out = shapes[0]
    for s in shapes[1:]:
        out = _Combine("or", out, s)
    return out


def _tube(x0: float, y0: float, x1: float, y1: float, r0: float, r1: float | None = None) -> _Shape:
    """A (tapering) straight vessel segment."""
    return _Tube(float(x0), float(y0), float(x1), float(y1), float(r0), float(r0 if r1 is None else r1))


def _polyline(points: list[tuple[float, float]], r0: float, r1: float) -> _Shape:
    """A vessel along a polyline, tapering from r0 to r1 over its length."""
    lengths = [math.hypot(x1 - x0, y1 - y0) for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False)]
    total, done, parts = sum(lengths), 0.0, []
    for ((x0, y0), (x1, y1)), length in zip(zip(points, points[1:], strict=False), lengths, strict=True):
        ra = r0 + (r1 - r0) * done / total
        done += length
        parts.append(_tube(x0, y0, x1, y1, ra, r0 + (r1 - r0) * done / total))
    return _either(*parts)


def _boxes_overlap(a, b) -> bool:
    return a[0] <= b[1] and b[0] <= a[1] and a[2] <= b[3] and b[2] <= a[3]


# ---------------------------------------------------------------------------------------------
# A scene: shapes painted in order, each with an HU value and a tissue label
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Layer:
    shape: _Shape
    hu: float
    label: int
    bbox: tuple[float, float, float, float]
    organ: str = ""  # a finer tissue name for ctdn.augment ("liver", "muscle", ...); no effect on pixels


class _Scene:
    """An ordered list of painted shapes; later layers cover earlier ones."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.layers: list[_Layer] = []

    def u(self, lo: float, hi: float) -> float:
        """A uniform draw in [lo, hi)."""
        return float(self.rng.uniform(lo, hi))

    def paint(self, shape: _Shape, hu: float, label: int, organ: str = "") -> int:
        """Add a layer on top; returns its index."""
        self.layers.append(_Layer(shape, float(hu), int(label), shape.bbox(), organ))
        return len(self.layers) - 1

    def is_free(self, layer: int, cx: float, cy: float, radius: float, step: float = 0.7) -> bool:
        """Whether the disk lies inside layer ``layer`` and no later layer touches it.

        Decided on points ``step`` mm apart with a margin of ``step`` (shapes thinner than that
        cannot slip between points), so the answer does not depend on the output size.
        """
        own = self.layers[layer].shape
        if own.sdf(np.array([cx]), np.array([cy]))[0] > -0.5 * radius:
            return False
        k = np.arange(-math.ceil(radius / step), math.ceil(radius / step) + 1) * step
        px, py = np.meshgrid(k, k)
        keep = px * px + py * py <= radius * radius
        px, py = px[keep] + cx, py[keep] + cy
        if (own.sdf(px, py) > -step).any():
            return False
        box = (cx - radius - step, cx + radius + step, cy - radius - step, cy + radius + step)
        for later in self.layers[layer + 1 :]:
            if _boxes_overlap(box, later.bbox) and (later.shape.sdf(px, py) < step).any():
                return False
        return True

    def free_disk(self, layer: int, radius: float, tries: int = 200) -> tuple[float, float] | None:
        """A random centre whose ``radius`` disk is free in ``layer`` (see :meth:`is_free`)."""
        x0, x1, y0, y1 = self.layers[layer].bbox
        for _ in range(tries):
            cx, cy = self.u(x0 + radius, x1 - radius), self.u(y0 + radius, y1 - radius)
            if self.is_free(layer, cx, cy, radius):
                return cx, cy
        return None


@dataclass
class _Anatomy:
    """What a builder returns besides the scene: lesions and the uniform region, in mm."""

    lesions: list[tuple[float, float, float, float, float]]  # cx, cy, r, contrast, background
    uniform: tuple[float, float, float]  # cx, cy, r
    lesion_shapes: list[_Shape]


def _place_lesions(
    sc: _Scene,
    organs: list[tuple[int, float]],
    count: int,
    contrast: Callable[[float], float],
    radius_mm: tuple[float, float],
    out: _Anatomy,
    minimum: int = 1,
) -> None:
    """``count`` round lesions, each with its 2.5-radius background ring free in an organ.

    ``organs`` lists (layer index, background HU); each lesion goes to a random organ, falling back
    to the others, then to smaller radii. ``contrast(background)`` gives the lesion's contrast.
    A lesion that finds no room is dropped, unless fewer than ``minimum`` have been placed: then
    it keeps trying with the smallest radius.
    """
    for _ in range(count):
        order = list(sc.rng.permutation(len(organs)))
        r = sc.u(*radius_mm)
        placed = False
        attempts = 0
        while not placed and (r >= radius_mm[0] * 0.99 or len(out.lesions) < minimum):
            if attempts > 50:  # pragma: no cover - the organs always have room
                raise RuntimeError("no room for a lesion")
            attempts += 1
            r = max(r, radius_mm[0])
            for k in order:
                layer, background = organs[k]
                centre = _free_from_lesions(sc, layer, 2.5 * r + 1.0, r, out, tries=60)
                if centre is not None:
                    c = contrast(background)
                    shape = _circle(centre[0], centre[1], r)
                    sc.paint(shape, background + c, SOFT)
                    out.lesions.append((centre[0], centre[1], r, c, background))
                    out.lesion_shapes.append(shape)
                    placed = True
                    break
            r *= 0.8


def _free_from_lesions(sc: _Scene, layer: int, radius: float, r: float, out: _Anatomy, tries: int):
    """A free disk centre that is also clear of earlier lesions' rings (and they of its)."""
    for _ in range(tries):
        centre = sc.free_disk(layer, radius, tries=1)
        if centre is None:
            continue
        if all(
            math.hypot(centre[0] - x, centre[1] - y) > max(2.5 * r + rr, 2.5 * rr + r) + 1.5
            for x, y, rr, _c, _b in out.lesions
        ):
            return centre
    return None


def _signed(sc: _Scene, lo: float, hi: float) -> Callable[[float], float]:
    """A contrast draw: magnitude in [lo, hi), hypo- or hyperdense with equal odds."""
    return lambda _background: (1.0 if sc.rng.random() < 0.5 else -1.0) * sc.u(lo, hi)


def _uniform(sc: _Scene, organs: list[int], radius: float, margin: float = 2.0) -> tuple[float, float, float]:
    """A homogeneous disk in the first organ (layer) that has room, shrinking if none has."""
    r = radius
    while r > 3.0:
        for layer in organs:
            centre = sc.free_disk(layer, r + margin, tries=300)
            if centre is not None:
                return centre[0], centre[1], r
        r -= 1.0
    raise RuntimeError("no room for a uniform region")  # pragma: no cover - the builders leave room


# ---------------------------------------------------------------------------------------------
# Building blocks shared by the body phantoms
# ---------------------------------------------------------------------------------------------
def _body_wall(sc: _Scene, a: float, b: float) -> tuple[float, float]:
    """Body outline with subcutaneous fat and a muscle layer; returns the cavity's semi-axes."""
    sc.paint(_ellipse(0, 0, a, b), sc.u(-120, -80), FAT)
    fat_side, fat_ap = sc.u(8, 25), sc.u(8, 22)
    muscle = sc.u(8, 14)
    sc.paint(_ellipse(0, sc.u(-2, 2), a - fat_side, b - fat_ap), sc.u(40, 60), SOFT, "muscle")
    return a - fat_side - muscle, b - fat_ap - muscle


def _paraspinal(sc: _Scene, y: float) -> None:
    """Erector spinae muscles either side of the spinous process."""
    hu = sc.u(40, 60)
    for side in (-1, 1):
        sc.paint(
            _ellipse(side * sc.u(24, 30), y, sc.u(18, 24), sc.u(14, 18), side * sc.u(0, 0.3)),
            hu,
            SOFT,
            "muscle",
        )


def _vertebra(sc: _Scene, cx: float, cy: float, r: float) -> None:
    """Vertebral body of radius ~r (cortical shell, trabecular core), canal, arch and processes."""
    cortical = sc.u(1000, 1500)
    shell = sc.u(1.5, 2.5)
    sc.paint(_ellipse(cx, cy, r * 1.1, r), cortical, BONE)
    sc.paint(_ellipse(cx, cy, r * 1.1 - shell, r - shell), sc.u(200, 400), BONE)
    rc = sc.u(7, 9)
    ccy = cy + r + rc + sc.u(1, 3)
    arch = _both(
        _ring(_circle(cx, ccy, rc + 4), _circle(cx, ccy, rc)), _HalfPlane(0.0, -1.0, -(ccy - rc * 0.3))
    )
    sc.paint(arch, cortical, BONE)
    for side in (-1, 1):
        sc.paint(_tube(cx + side * r * 0.6, cy + r * 0.6, cx + side * (rc + 2), ccy, 3.5), cortical, BONE)
        tip = (cx + side * sc.u(20, 25), ccy + sc.u(0, 5))
        sc.paint(_tube(cx + side * (rc + 2), ccy + 1, *tip, 4.0, 3.0), cortical, BONE)  # transverse
        sc.paint(_tube(cx + side * (rc + 2), ccy + 1, *tip, 2.0, 1.2), sc.u(200, 400), BONE)
    sc.paint(_tube(cx, ccy + rc + 2, cx + sc.u(-1, 1), ccy + rc + sc.u(12, 18), 4.0, 3.0), cortical, BONE)
    sc.paint(_circle(cx, ccy, rc), sc.u(15, 35), SOFT)  # spinal canal: cord and CSF


def _bowel_loop(sc: _Scene, cx: float, cy: float, r: float) -> None:
    """A bowel loop: wall, then fluid, gas, or gas above a fluid level (supine: gas anterior)."""
    angle = sc.u(0, math.pi)
    sq = sc.u(0.7, 1.0)
    sc.paint(_ellipse(cx, cy, r, r * sq, angle), sc.u(35, 50), SOFT)
    wall = sc.u(1.5, 3.0)
    lumen = _ellipse(cx, cy, r - wall, (r - wall) * sq, angle)
    kind = sc.rng.random()
    if kind < 0.35:
        sc.paint(lumen, sc.u(5, 30), SOFT)
    elif kind < 0.7:
        sc.paint(lumen, -1000.0, AIR)
    else:
        sc.paint(lumen, sc.u(5, 30), SOFT)
        level = cy + sc.u(-0.5, 0.3) * (r - wall)
        sc.paint(_both(lumen, _HalfPlane(0.0, 1.0, level)), -1000.0, AIR)


# ---------------------------------------------------------------------------------------------
# Builders, one per kind
# ---------------------------------------------------------------------------------------------
def _thorax(sc: _Scene) -> _Anatomy:
    """Chest at the level of the heart: lungs with vessels and nodules, mediastinum, ribs, spine."""
    a, b = sc.u(150, 170), sc.u(110, 130)
    ia, ib = _body_wall(sc, a, b)
    _paraspinal(sc, b - sc.u(30, 38))
    cavity = _ellipse(0, 0, ia, ib)
    sc.paint(cavity, sc.u(-110, -80), FAT)  # mediastinal fat
    spine_y = ib - sc.u(18, 24)
    lung_hu = sc.u(-875, -825)  # leaves room for thin vessels and texture in the mean
    inner = _ellipse(0, 0, ia - 2, ib - 2)
    lungs: list[_Shape] = []
    for side in (-1, 1):
        medial = sc.u(14, 26)
        lateral = ia + 10
        main = _ellipse(
            side * (medial + lateral) / 2, sc.u(-8, 4), (lateral - medial) / 2, ib * sc.u(1.0, 1.15)
        )
        gutter = _ellipse(side * sc.u(26, 34), spine_y - sc.u(10, 20), sc.u(18, 24), sc.u(28, 36))
        lungs.append(_both(_either(main, gutter), inner))
    lung_layers = [sc.paint(shape, lung_hu, LUNG) for shape in lungs]
    _lung_vessels(sc, lungs)
    # Mediastinum: pericardial fat and heart, aortas, esophagus, vertebra, sternum, ribs.
    hx, hy = sc.u(14, 30), sc.u(-12, 8)
    ha, hb, hang = sc.u(44, 54), sc.u(36, 44), sc.u(-0.5, -0.2)
    sc.paint(_ellipse(hx, hy, ha + 3, hb + 3, hang), sc.u(-110, -80), FAT)
    heart = sc.paint(_ellipse(hx, hy, ha, hb, hang), sc.u(35, 45), SOFT, "heart")
    aorta_hu = sc.u(150, 300)
    sc.paint(_circle(sc.u(-22, -10), hy - hb - sc.u(0, 6), sc.u(13, 17)), aorta_hu, SOFT)  # ascending
    vb_r = sc.u(15, 19)
    sc.paint(_circle(sc.u(20, 28), spine_y - vb_r - sc.u(2, 8), sc.u(11, 14)), aorta_hu, SOFT)  # descending
    ex, ey = sc.u(-6, 2), spine_y - vb_r - sc.u(6, 10)
    sc.paint(_ellipse(ex, ey, 7, 5), sc.u(35, 50), SOFT)  # esophagus
    if sc.rng.random() < 0.5:
        sc.paint(_ellipse(ex, ey, 2.0, 1.5), -1000.0, AIR)
    _vertebra(sc, 0.0, spine_y, vb_r)
    sc.paint(_ellipse(0, -ib - 3, 16, 7), sc.u(800, 1200), BONE)  # sternum
    sc.paint(_ellipse(0, -ib - 3, 13, 4.5), sc.u(200, 350), BONE)
    _ribs(sc, ia, ib)
    out = _Anatomy([], (0.0, 0.0, 0.0), [])
    nodule = lambda background: sc.u(20, 60) - background  # noqa: E731 - soft tissue in lung
    _place_lesions(
        sc, [(k, lung_hu) for k in lung_layers], int(sc.rng.integers(1, 4)), nodule, (1.5, 7.5), out
    )
    out.uniform = _uniform(sc, [heart], 10.0)
    return out


def _lung_vessels(sc: _Scene, lungs: list[_Shape]) -> None:
    """Branching, tapering pulmonary vessels from each hilum and vessels cut in cross-section."""
    hu = sc.u(30, 60)
    for side, lung in zip((-1, 1), lungs, strict=True):
        hilum_x, hilum_y = side * sc.u(28, 38), sc.u(-8, 8)
        for trunk in range(3):
            base = (0.0 if side > 0 else math.pi) + (trunk - 1) * side * 1.0 + sc.u(-0.3, 0.3)
            stack = [(hilum_x, hilum_y, base, sc.u(2.5, 4.0), 0)]
            while stack:
                x, y, ang, r, depth = stack.pop()
                length = sc.u(18, 30) * (0.85**depth)
                pts = [(x, y)]
                for _ in range(2):  # a gently curving branch
                    ang += sc.u(-0.25, 0.25)
                    x, y = x + length / 2 * math.cos(ang), y + length / 2 * math.sin(ang)
                    pts.append((x, y))
                r1 = max(0.45, r * 0.75)
                if depth == 0 or sc.rng.random() < 0.7:  # the others leave the slice
                    sc.paint(_both(_polyline(pts, r, r1), lung), hu, SOFT, "lung_vessel")
                if depth < 4:
                    for turn in (-1, 1):
                        stack.append((x, y, ang + turn * sc.u(0.25, 0.6), r1, depth + 1))
        x0, x1, y0, y1 = lung.bbox()
        for _ in range(int(sc.rng.integers(15, 30))):
            x, y = sc.u(x0, x1), sc.u(y0, y1)
            dist = math.hypot(x - hilum_x, y - hilum_y)
            r = max(0.5, 2.5 - dist / 45.0) * sc.u(0.6, 1.1)
            sc.paint(_both(_circle(x, y, r), lung), hu, SOFT, "lung_vessel")


def _ribs(sc: _Scene, ia: float, ib: float) -> None:
    """Rib cross-sections along the chest wall: cortical rim around marrow."""
    cortical = sc.u(800, 1500)
    marrow = sc.u(200, 320)
    n = int(sc.rng.integers(10, 14))
    for k in range(n):
        t = (k + 0.5) / n * 2 * math.pi + sc.u(-0.1, 0.1)
        c, s = math.cos(t), math.sin(t)
        if s > 0.75 or s < -0.85:  # none over the spine or the sternum
            continue
        rx, ry = (ia + 4) * c, (ib + 4) * s
        ang = math.atan2(ia * c, -ib * s)  # along the wall
        length, width = sc.u(7, 11), sc.u(4, 5)
        sc.paint(_ellipse(rx, ry, length, width, ang), cortical, BONE)
        sc.paint(_ellipse(rx, ry, length - 2, width - 1.8, ang), marrow, BONE)


def _abdomen(sc: _Scene) -> _Anatomy:
    """Upper abdomen: liver, spleen, kidneys, great vessels, pancreas, bowel, spine, lesions."""
    a, b = sc.u(150, 170), sc.u(105, 125)
    ia, ib = _body_wall(sc, a, b)
    cavity = _ellipse(0, 0, ia, ib)
    sc.paint(cavity, sc.u(-110, -80), FAT)  # visceral fat
    spine_y = ib * sc.u(0.45, 0.6)
    _paraspinal(sc, b - sc.u(30, 40))
    inside = _ellipse(0, 0, ia - 3, ib - 3)
    # Liver (image left) with portal-venous vessels; gallbladder.
    liver_hu = sc.u(55, 65)
    right_lobe = _ellipse(-ia * sc.u(0.5, 0.58), sc.u(-12, 2), sc.u(52, 62), sc.u(60, 72), sc.u(-0.3, 0.2))
    liver_shape = _both(right_lobe, inside)
    if sc.rng.random() < 0.6:  # the left lobe reaches across the midline at higher levels
        left_lobe = _ellipse(
            -sc.u(15, 25), -ib * sc.u(0.55, 0.65), sc.u(30, 42), sc.u(15, 22), sc.u(-0.3, 0.0)
        )
        liver_shape = _both(_either(right_lobe, left_lobe), inside)
    liver = sc.paint(liver_shape, liver_hu, SOFT, "liver")
    vessel_hu = sc.u(150, 220)
    px_, py_ = right_lobe.cx + right_lobe.a * sc.u(0.5, 0.7), right_lobe.cy + sc.u(5, 20)  # porta hepatis
    for _ in range(int(sc.rng.integers(2, 5))):
        ang = math.pi + sc.u(-1.2, 1.2)  # towards the lateral liver
        length = sc.u(25, 45)
        pts = [(px_, py_)]
        for _k in (1, 2):
            ang += sc.u(-0.3, 0.3)
            pts.append((pts[-1][0] + length / 2 * math.cos(ang), pts[-1][1] + length / 2 * math.sin(ang)))
        sc.paint(_both(_polyline(pts, sc.u(2.0, 3.5), sc.u(0.6, 1.2)), liver_shape), vessel_hu, SOFT)
    for _ in range(int(sc.rng.integers(3, 8))):  # vessels cut across
        x0, x1, y0, y1 = liver_shape.bbox()
        sc.paint(_both(_circle(sc.u(x0, x1), sc.u(y0, y1), sc.u(1.0, 3.0)), liver_shape), vessel_hu, SOFT)
    if sc.rng.random() < 0.6:
        sc.paint(
            _ellipse(right_lobe.cx + sc.u(20, 35), sc.u(-45, -25), sc.u(12, 18), sc.u(8, 12), sc.u(-1, 1)),
            sc.u(0, 20),
            SOFT,
            "fluid",
        )  # gallbladder
    # Spleen (image right, posterolateral) and stomach.
    spleen_hu = sc.u(45, 55)
    spleen_ellipse = _ellipse(ia * sc.u(0.6, 0.7), sc.u(5, 30), sc.u(22, 30), sc.u(42, 55), sc.u(-0.7, -0.3))
    spleen_shape = _both(spleen_ellipse, inside)
    spleen = sc.paint(spleen_shape, spleen_hu, SOFT, "spleen")
    sx, sy = ia * sc.u(0.25, 0.4), -ib * sc.u(0.35, 0.5)
    sr = sc.u(20, 30)
    stomach = sc.rng.random() < 0.7
    if stomach:
        _bowel_loop(sc, sx, sy, sr)
    # Kidneys with perirenal fat, pancreas, aorta, IVC, vertebra, psoas.
    cortex_hu = sc.u(150, 200)
    retro: list[_Shape] = []  # retroperitoneal organs, kept clear of bowel
    for side in (-1, 1):
        kx, ky = side * sc.u(55, 68), spine_y + sc.u(-8, 8)
        ang = side * sc.u(0.3, 0.6)  # the hilum faces anteromedially
        ka, kb = sc.u(18, 23), sc.u(25, 31)
        retro.append(_ellipse(kx, ky, ka + 5, kb + 5, ang))
        sc.paint(retro[-1], sc.u(-110, -80), FAT)
        sc.paint(_ellipse(kx, ky, ka, kb, ang), cortex_hu, SOFT, "kidney")
        sc.paint(_ellipse(kx, ky, ka - 5, kb - 6, ang), sc.u(80, 120), SOFT, "kidney")  # medulla
        mx, my = -side * math.cos(ang), -side * math.sin(ang)  # towards the hilum
        off = ka * sc.u(0.65, 0.75)
        sinus = _ellipse(kx + off * mx, ky + off * my, ka * 0.55, kb * 0.4, ang)  # cuts a notch
        sc.paint(sinus, sc.u(-110, -80), FAT)
        sc.paint(_ellipse(sinus.cx, sinus.cy, ka * 0.3, kb * 0.22, ang), sc.u(0, 20), SOFT, "fluid")  # pelvis
        sc.paint(
            _ellipse(side * sc.u(26, 32), spine_y + sc.u(-2, 6), sc.u(11, 15), sc.u(14, 18)),
            sc.u(40, 55),
            SOFT,
            "muscle",
        )  # psoas
    vb_r = sc.u(16, 20)
    aorta_r = sc.u(9, 12)
    ax, ay = sc.u(4, 12), spine_y - vb_r - aorta_r - sc.u(1, 4)
    sc.paint(_circle(ax, ay, aorta_r), sc.u(150, 300), SOFT)
    ivc = _ellipse(-sc.u(18, 26), ay + sc.u(-4, 4), sc.u(10, 14), sc.u(7, 10))
    sc.paint(ivc, sc.u(150, 250), SOFT)
    retro += [_circle(ax, ay, aorta_r + 3), _ellipse(ivc.cx, ivc.cy, ivc.a + 3, ivc.b + 3)]
    # Pancreas from in front of the IVC towards the splenic hilum, splenic vein along its back.
    head = (-sc.u(10, 18), ay - aorta_r - sc.u(8, 14))
    tail = (spleen_ellipse.cx - sc.u(30, 38), spleen_ellipse.cy - sc.u(5, 15))
    pr = sc.u(8, 11)
    retro.append(_tube(*head, *tail, pr + 3, pr * 0.7 + 3))
    sc.paint(_tube(*head, *tail, pr, pr * 0.7), sc.u(40, 50), SOFT)
    nx, ny = tail[1] - head[1], head[0] - tail[0]  # normal, pointing posterior
    norm = math.hypot(nx, ny) * (1 if ny > 0 else -1)
    off = pr * 0.75
    sc.paint(
        _tube(
            head[0] + 6 + nx / norm * off,
            head[1] + ny / norm * off,
            tail[0] + nx / norm * off * 0.7,
            tail[1] + ny / norm * off * 0.7,
            3.0,
            2.5,
        ),
        vessel_hu,
        SOFT,
    )  # splenic vein
    _vertebra(sc, 0.0, spine_y, vb_r)
    # Colon in the flanks, small-bowel loops in front.
    organs = [liver_shape, spleen_shape, _circle(0, spine_y, 40), *retro]
    if stomach:
        organs.append(_circle(sx, sy, sr + 3))
    for side in (-1, 1):
        for _try in range(10):
            r = sc.u(13, 19)
            cx, cy = side * (ia - r - sc.u(3, 10)), sc.u(-40, 30)
            if _clear(_circle(cx, cy, r + 2), organs, inside):
                organs.append(_circle(cx, cy, r + 2))
                _bowel_loop(sc, cx, cy, r)
                break
    for _ in range(int(sc.rng.integers(5, 10))):
        for _try in range(40):
            r = sc.u(8, 15)
            cx, cy = sc.u(-ia, ia), sc.u(-ib, spine_y - 20)
            loop = _circle(cx, cy, r + 1)
            if _clear(loop, organs, inside):
                organs.append(loop)
                _bowel_loop(sc, cx, cy, r)
                break
    out = _Anatomy([], (0.0, 0.0, 0.0), [])
    organs_ = [(liver, liver_hu), (liver, liver_hu), (spleen, spleen_hu)]  # liver twice as likely
    _place_lesions(sc, organs_, int(sc.rng.integers(3, 7)), _signed(sc, 5, 20), (2.0, 7.5), out, minimum=3)
    out.uniform = _uniform(sc, [liver, spleen], 10.0)
    return out


def _clear(shape: _Shape, others: list[_Shape], container: _Shape) -> bool:
    """Whether ``shape`` lies inside ``container`` and overlaps none of ``others`` (on its outline)."""
    assert isinstance(shape, _Ellipse)
    t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    x, y = shape.cx + shape.a * np.cos(t), shape.cy + shape.b * np.sin(t)
    x, y = np.append(x, shape.cx), np.append(y, shape.cy)
    if (container.sdf(x, y) > 0).any():
        return False
    return all((o.sdf(x, y) > 0).all() for o in others)


def _head(sc: _Scene) -> _Anatomy:
    """Head at the level of the lateral ventricles: scalp, skull, cortex with sulci, deep grey."""
    a, b = sc.u(68, 78), sc.u(86, 96)
    sc.paint(_ellipse(0, 0, a, b), sc.u(30, 50), SOFT)  # scalp
    scalp = sc.u(4, 6)
    oa, ob = a - scalp, b - scalp
    t_lat, t_ap = sc.u(5, 7), sc.u(6, 8)
    cortical = sc.u(1000, 1800)
    sc.paint(_ellipse(0, 0, oa, ob), cortical, BONE)
    sc.paint(_ellipse(0, 0, oa - 2.0, ob - 2.0), sc.u(400, 700), BONE)  # diploe
    sc.paint(_ellipse(0, 0, oa - t_lat + 1.6, ob - t_ap + 1.6), cortical, BONE)  # inner table
    ga, gb = oa - t_lat, ob - t_ap
    csf = sc.u(2, 12)
    sc.paint(_ellipse(0, 0, ga, gb), csf, SOFT, "fluid")  # subarachnoid CSF
    layer = sc.u(1.0, 2.0)
    grey_hu, white_hu = sc.u(38, 42), sc.u(25, 30)
    sc.paint(_ellipse(0, 0, ga - layer, gb - layer), grey_hu, SOFT, "grey")
    # White matter: the cortex ribbon recedes into gyri around sulci.
    n = 1024
    theta = np.arange(n) * (2 * math.pi / n)
    surface = (
        (ga - layer) * (gb - layer) / np.hypot((gb - layer) * np.cos(theta), (ga - layer) * np.sin(theta))
    )
    cortex = sc.u(2.5, 3.5)
    n_sulci = int(sc.rng.integers(34, 46))
    angles = (np.arange(n_sulci) + sc.rng.uniform(-0.3, 0.3, n_sulci)) * (2 * math.pi / n_sulci)
    depths = sc.rng.uniform(3.0, 9.0, n_sulci)
    recess = np.zeros(n)
    for ang, depth in zip(angles, depths, strict=True):
        arc = np.angle(np.exp(1j * (theta - ang))) * surface  # signed arc length (mm)
        recess = np.maximum(recess, depth * np.exp(-0.5 * (arc / 2.2) ** 2))
    white_shape = _Polar(0.0, 0.0, (surface - cortex - recess).astype(np.float64))
    white = sc.paint(white_shape, white_hu, SOFT, "white")
    # Sulci and the fissure are thinner than a slice is thick: partial volume with grey matter.
    sulcal = grey_hu - sc.u(8, 16)
    for ang, depth in zip(angles, depths, strict=True):
        r_out = float(np.interp(ang, theta, surface)) + 0.6
        length = depth + cortex - 0.6
        tilt = sc.u(-0.25, 0.25)
        x, y = r_out * math.cos(ang), r_out * math.sin(ang)
        xm, ym = x - length / 2 * math.cos(ang + tilt), y - length / 2 * math.sin(ang + tilt)
        tilt += sc.u(-0.3, 0.3)
        xe, ye = xm - length / 2 * math.cos(ang + tilt), ym - length / 2 * math.sin(ang + tilt)
        sc.paint(_polyline([(x, y), (xm, ym), (xe, ye)], sc.u(0.35, 0.55), 0.2), sulcal, SOFT)
    # Midline: interhemispheric fissure with the falx, front and back.
    falx_hu = sc.u(45, 60)
    for y0, y1 in ((-(gb - layer) - 1, -sc.u(30, 40)), ((gb - layer) + 1, sc.u(40, 50))):
        sc.paint(_tube(0, y0, 0, y1, 1.2, 0.8), sulcal, SOFT)
        sc.paint(_tube(0, y0, 0, y1, 0.4), falx_hu, SOFT)
    # Basal ganglia level: caudate heads, lentiform nuclei, thalami (deep grey matter), then the
    # frontal horns, the third ventricle between the thalami and the occipital horns (CSF).
    deep_hu = sc.u(34, 38)
    for side in (-1, 1):
        sc.paint(
            _ellipse(side * sc.u(11, 14), sc.u(-20, -14), sc.u(5, 7), sc.u(8, 11), -side * 0.3),
            deep_hu,
            SOFT,
            "deep_grey",
        )
        sc.paint(
            _ellipse(side * sc.u(22, 27), sc.u(-6, 2), sc.u(5, 7), sc.u(14, 18), side * sc.u(0.1, 0.3)),
            deep_hu,
            SOFT,
            "deep_grey",
        )
        sc.paint(
            _ellipse(side * sc.u(8, 10), sc.u(10, 16), sc.u(7, 9), sc.u(10, 13)), deep_hu, SOFT, "deep_grey"
        )
    vent_csf = sc.u(0, 15)
    for side in (-1, 1):
        front = (side * sc.u(10, 14), -sc.u(28, 34))
        r0 = sc.u(2.5, 3.5)  # the septum pellucidum keeps the two horns ~2 mm apart
        sc.paint(_tube(side * (r0 + 1.0), sc.u(-8, -4), *front, r0, sc.u(4.0, 6.0)), vent_csf, SOFT, "fluid")
        trigone = (side * sc.u(17, 21), sc.u(24, 30))
        sc.paint(
            _tube(*trigone, side * sc.u(20, 26), sc.u(40, 48), sc.u(4.0, 6.0), sc.u(1.5, 2.5)),
            vent_csf,
            SOFT,
            "fluid",
        )
    third = _tube(0, sc.u(0, 4), 0, sc.u(18, 24), sc.u(1.2, 2.2))  # the third ventricle
    sc.paint(third, vent_csf, SOFT, "fluid")
    out = _Anatomy([], (0.0, 0.0, 0.0), [])
    _place_lesions(sc, [(white, white_hu)], int(sc.rng.integers(1, 4)), _signed(sc, 5, 15), (2.5, 6.0), out)
    out.uniform = _uniform(sc, [white], 9.0)
    return out


_BUILDERS: dict[str, Callable[[_Scene], _Anatomy]] = {"thorax": _thorax, "abdomen": _abdomen, "head": _head}


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
def _supersampling(pixel_mm: float) -> int:
    """Subpixels per pixel side: subpixels of at most ~0.36 mm, between 1 and 8."""
    return int(min(8, max(1, math.ceil(pixel_mm / _SUBPIXEL_MM - 1e-9))))


def _window(bbox, centre: float, step: float, n: int) -> tuple[slice, slice]:
    """Row and column ranges of an n x n grid (spacing ``step``) covering ``bbox`` plus a margin."""
    x0, x1, y0, y1 = bbox
    lo = lambda v: max(0, int(math.floor(v / step + centre)) - 1) if v > -_INF else 0  # noqa: E731
    hi = lambda v: min(n, int(math.ceil(v / step + centre)) + 2) if v < _INF else n  # noqa: E731
    return slice(lo(y0), hi(y1)), slice(lo(x0), hi(x1))


def _render(layers: list[_Layer], size: int, fov_mm: float, tags=None) -> tuple[np.ndarray, ...]:
    """Paint the layers on a supersampled grid; return (HU, per-label area fractions).

    ``tags``: one small integer per layer (e.g. an organ id); then the area fractions of every tag
    value 0..max(tags) are returned too, drawn like the labels.
    """
    s = _supersampling(fov_mm / size)
    n = size * s
    step = fov_mm / n
    centre = (n - 1) / 2
    coords = ((np.arange(n) - centre) * step).astype(np.float32)
    hu = np.full((n, n), -1000.0, dtype=np.float32)
    labels = np.zeros((n, n), dtype=np.uint8)
    tag_map = None if tags is None else np.zeros((n, n), dtype=np.uint8)
    for k, layer in enumerate(layers):
        rows, cols = _window(layer.bbox, centre, step, n)
        if rows.start >= rows.stop or cols.start >= cols.stop:
            continue
        cov = layer.shape.sdf(coords[None, cols], coords[rows, None]).astype(np.float32, copy=False)
        cov *= -1.0 / step
        cov += 0.5
        np.clip(cov, 0.0, 1.0, out=cov)
        sub = hu[rows, cols]
        sub *= 1.0 - cov
        sub += layer.hu * cov
        labels[rows, cols][cov >= 0.5] = layer.label
        if tag_map is not None:
            tag_map[rows, cols][cov >= 0.5] = tags[k]
    out = hu.reshape(size, s, size, s).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
    fractions = np.stack(
        [(labels == k).reshape(size, s, size, s).mean(axis=(1, 3), dtype=np.float32) for k in TISSUES]
    )
    if tag_map is None:
        return out, fractions
    return out, fractions, _tag_fractions(tag_map, size, s, max(tags, default=0) + 1)


def _tag_fractions(tag_map: np.ndarray, size: int, s: int, k: int) -> np.ndarray:
    """(k, size, size) area fractions of the tags 0..k-1 of a supersampled map (one counting pass)."""
    block = np.arange(size * s) // s
    idx = (block[:, None] * size + block[None, :]) * k + tag_map
    counts = np.bincount(idx.ravel(), minlength=size * size * k).reshape(size, size, k)
    return np.ascontiguousarray((counts / (s * s)).astype(np.float32).transpose(2, 0, 1))


def _coverage(shape: _Shape, size: int, fov_mm: float) -> np.ndarray:
    """Area fraction of each output pixel covered by ``shape`` (float32, size x size)."""
    s = _supersampling(fov_mm / size)
    out = np.zeros((size, size), dtype=np.float32)
    rows, cols = _window(shape.bbox(), (size - 1) / 2, fov_mm / size, size)
    if rows.start >= rows.stop or cols.start >= cols.stop:
        return out
    step = fov_mm / (size * s)
    c = (np.arange(size * s) - (size * s - 1) / 2) * step
    r_sub, c_sub = c[rows.start * s : rows.stop * s], c[cols.start * s : cols.stop * s]
    cov = np.clip(0.5 - shape.sdf(c_sub[None, :], r_sub[:, None]) / step, 0.0, 1.0)
    h, w = rows.stop - rows.start, cols.stop - cols.start
    out[rows, cols] = cov.reshape(h, s, w, s).mean(axis=(1, 3))
    return out


def _texture(
    rng: np.random.Generator, size: int, fov_mm: float, sigma_mm: float = _TEXTURE_SIGMA_MM
) -> np.ndarray:
    """Unit-std smooth random field sampled at the pixel centres; the same field at every size.

    ``sigma_mm`` is the correlation length (the Gaussian's sigma); ctdn.augment varies it per tissue.
    """
    m = int(math.ceil(fov_mm / _TEXTURE_GRID_MM)) + 8
    noise = rng.standard_normal((m, m), dtype=np.float32)
    smooth = ndimage.gaussian_filter(noise, sigma_mm / _TEXTURE_GRID_MM, mode="wrap")
    smooth /= max(float(smooth.std()), 1e-12)
    pos = (np.arange(size) - (size - 1) / 2) * (fov_mm / size) / _TEXTURE_GRID_MM + (m - 1) / 2
    i0 = np.floor(pos).astype(np.intp)
    w = (pos - i0).astype(np.float32)
    rows = smooth[i0, :] * (1 - w)[:, None] + smooth[i0 + 1, :] * w[:, None]
    return rows[:, i0] * (1 - w)[None, :] + rows[:, i0 + 1] * w[None, :]


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check(kind, seed, size) -> None:
    if not isinstance(kind, str) or kind not in KINDS:
        raise InputError(f"unknown phantom kind {kind!r}; choose one of {', '.join(KINDS)}")
    _check_size(size)
    if not _is_int(seed) or seed < 0:
        raise InputError(f"phantom seed must be a non-negative integer, got {seed!r}")


def _check_size(size) -> None:
    if not _is_int(size) or not 64 <= size <= 4096:
        raise InputError(f"phantom size must be an integer in [64, 4096], got {size!r}")


def generate(kind: str, *, seed: int = 0, size: int = 512) -> Phantom:
    """A seeded anatomical phantom of ``kind`` ("thorax", "abdomen", "head") at size x size."""
    _check(kind, seed, size)
    size, seed = int(size), int(seed)
    fov = FOV_MM[kind]
    stream = KINDS.index(kind)
    scene = _Scene(np.random.default_rng([seed, stream]))
    anatomy = _BUILDERS[kind](scene)
    hu, fractions = _render(scene.layers, size, fov)
    return _assemble(anatomy, hu, fractions, kind, seed, fov)


def _assemble(anatomy, hu, fractions, kind: str, seed: int, fov: float, extra=None) -> Phantom:
    """A rendered scene's phantom: labels, texture (plus ``extra`` HU), lesions, uniform region."""
    size, stream = hu.shape[0], KINDS.index(kind)
    px = fov / size
    labels = fractions.argmax(axis=0).astype(np.uint8)
    amplitude = np.zeros((size, size), dtype=np.float32)
    for label, std in _TEXTURE[kind].items():
        amplitude += std * fractions[label]
    hu += amplitude * _texture(np.random.default_rng([seed, stream, 1]), size, fov)
    if extra is not None:
        hu += extra
    to_px = lambda v: v / px + (size - 1) / 2  # noqa: E731 - mm -> pixel index
    lesions = [
        Lesion((to_px(cy), to_px(cx)), r / px, float(c), float(bg)) for cx, cy, r, c, bg in anatomy.lesions
    ]
    ux, uy, ur = anatomy.uniform
    shrink = max(0.0, 0.71 * px - 2.0)  # keep whole pixels inside the 2 mm margin at coarse sizes
    uniform = _disk_mask((size, size), (to_px(uy), to_px(ux)), (ur - shrink) / px, at_least_one=True)
    ph = Phantom(hu, labels, uniform, lesions, px, kind, seed)
    _balance_lesions(ph, anatomy.lesion_shapes, fov)
    return ph


def _balance_lesions(ph: Phantom, shapes: list[_Shape], fov_mm: float) -> None:
    """Shift each lesion so that interior minus ring equals ``contrast_hu`` despite the texture.

    Only where the interior is wholly covered by the lesion (not for sub-pixel lesions at coarse
    sizes, whose contrast cannot be measured anyway).
    """
    size = ph.hu.shape[0]
    for i, (les, shape) in enumerate(zip(ph.lesions, shapes, strict=True)):
        core, ring = ph.lesion_mask(i), ph.lesion_mask(i, ring=True)
        if not ring.any():
            continue
        cov = _coverage(shape, size, fov_mm)
        gain = float(cov[core].mean() - cov[ring].mean())
        if gain < 0.9:
            continue
        measured = float(ph.hu[core].mean(dtype=np.float64) - ph.hu[ring].mean(dtype=np.float64))
        ph.hu += np.float32((les.contrast_hu - measured) / gain) * cov


def phantom(kind: str, *, seed: int = 0, size: int = 512) -> np.ndarray:
    """The phantom's HU image (float32, size x size)."""
    return generate(kind, seed=seed, size=size).hu


def _label_for(hu: float) -> int:
    """Tissue label of a material of this HU (air, lung, fat, soft tissue, bone)."""
    for label, upper in zip((AIR, LUNG, FAT, SOFT), TISSUE_EDGES, strict=True):
        if hu < upper:
            return label
    return BONE


def cylinder(
    *, size: int = 512, diameter_mm: float = 300.0, hu: float = 40.0, fov_mm: float = 360.0
) -> Phantom:
    """A uniform disk in air without texture (noise calibration); ``uniform`` is its central third."""
    _check_size(size)
    for name, value in (("diameter_mm", diameter_mm), ("hu", hu), ("fov_mm", fov_mm)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)
        ):
            raise InputError(f"cylinder {name} must be a real number, got {value!r}")
        if not math.isfinite(value):
            raise InputError(f"cylinder {name} must be finite, got {value!r}")
    if fov_mm <= 0:
        raise InputError(f"cylinder fov_mm must be positive, got {fov_mm}")
    if not 0 < diameter_mm <= fov_mm:
        raise InputError(f"cylinder diameter_mm must be in (0, fov_mm={fov_mm}], got {diameter_mm}")
    size, fov = int(size), float(fov_mm)
    label = _label_for(float(hu))
    disk = _circle(0, 0, diameter_mm / 2)
    img, fractions = _render([_Layer(disk, float(hu), label, disk.bbox())], size, fov)
    labels = fractions.argmax(axis=0).astype(np.uint8)
    px = fov / size
    centre = ((size - 1) / 2, (size - 1) / 2)
    uniform = _disk_mask((size, size), centre, diameter_mm / 6 / px, at_least_one=True)
    return Phantom(img, labels, uniform, [], px, "cylinder", 0)
