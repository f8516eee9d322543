"""Bodies that starve rays of photons: wide habitus, shoulders, the pelvis and optional metal.

Shapes are in mm on the phantoms' conventions (x to the image right, y posterior, isocentre at 0).
What is added, and why (the streaks of real scans come from long paths through dense material):

- **habitus**: extra subcutaneous fat under the whole body, up to ``max_width_mm`` (450 mm) wide;
  half of the slices stay within 20 mm of their drawn size, half spread up to the widest.
- **shoulders** (thorax slices, 40 %): scapulae on the posterior chest wall and humeral heads in
  deltoid muscle beside it, the anatomy of a slice a few cm above the heart; their purpose is the
  lateral ray path through two dense bones and 40-50 cm of tissue.
- **pelvis** (abdomen slices, 40 %): a slice at the femoral heads with acetabula, femoral necks,
  greater trochanters, gluteal, iliopsoas and obturator muscles, femoral vessels, bladder, rectum
  and coccyx. Cortical bone of the new bones is 1200-2000 HU.
- **metal** (a ``metal`` fraction of slices): a hip-prosthesis-like ball and cup (pelvis), pedicle
  screws with rods (thorax, abdomen) or a shunt-valve-like insert in the scalp (head), at
  2500-4000 HU.

The field of view grows with the body (:func:`field_of_view`), in 20 mm steps, so that the pixel
size, not the anatomy, changes.
"""

from __future__ import annotations

import math

import numpy as np

from ..phantoms import (
    _BUILDERS,
    BONE,
    FAT,
    FOV_MM,
    SOFT,
    _Anatomy,
    _body_wall,
    _both,
    _bowel_loop,
    _circle,
    _clear,
    _Combine,
    _Ellipse,
    _ellipse,
    _HalfPlane,
    _Layer,
    _ring,
    _Scene,
    _tube,
    _uniform,
)

__all__ = ["MAX_WIDTH_MM", "REGIONS", "draw_region", "build", "widen", "add_metal", "field_of_view"]

MAX_WIDTH_MM = 450.0
MAX_FOV_MM = 500.0  # the default scanner's field of view (a 251 mm radius)
REGIONS = {"thorax": ("thorax", "shoulders"), "abdomen": ("abdomen", "pelvis"), "head": ("head",)}
_SECOND_REGION = 0.4  # share of thorax slices with shoulders, of abdomen slices at the pelvis
_METAL_HU = (2500.0, 4000.0)


def draw_region(kind: str, rng: np.random.Generator, enabled: bool) -> str:
    """The body region of a slice of ``kind``: the kind itself, or shoulders / pelvis."""
    if not enabled or len(REGIONS[kind]) == 1:
        return kind
    return REGIONS[kind][1] if rng.random() < _SECOND_REGION else kind


def build(sc: _Scene, region: str) -> _Anatomy:
    """Paint the base anatomy of ``region`` (shoulders start from the thorax)."""
    if region == "pelvis":
        return _pelvis(sc)
    return _BUILDERS["thorax" if region == "shoulders" else region](sc)


def _outline(sc: _Scene) -> _Ellipse:
    """The body (or head) outline: the scene's first layer, a centred ellipse."""
    shape = sc.layers[0].shape
    assert isinstance(shape, _Ellipse) and shape.cx == 0 and shape.cy == 0
    return shape


def _put(sc: _Scene, index: int, shape, hu: float, label: int, organ: str = "") -> None:
    """Insert a layer at ``index`` (below the layers after it)."""
    sc.layers.insert(index, _Layer(shape, float(hu), int(label), shape.bbox(), organ))


def widen(sc: _Scene, region: str, rng: np.random.Generator, max_width_mm: float = MAX_WIDTH_MM) -> None:
    """Extra subcutaneous fat (and, for shoulders, the shoulder girdle) up to ``max_width_mm``."""
    body = _outline(sc)
    lobe = float(rng.uniform(35, 55)) if region == "shoulders" else 0.0
    half = max_width_mm / 2
    lobe = min(lobe, max(0.0, half - body.a))
    room = max(0.0, half - body.a - lobe)
    extra = float(rng.uniform(0, min(room, 20.0)) if rng.random() < 0.5 else rng.uniform(0, room))
    ap = extra * float(rng.uniform(0.5, 0.9))
    wide = _ellipse(0, 0, body.a + extra, body.b + ap)
    _put(sc, 0, wide, sc.layers[0].hu, FAT)
    if region == "shoulders":
        _shoulders(sc, rng, wide, lobe)


def _shoulders(sc: _Scene, rng: np.random.Generator, body: _Ellipse, lobe: float) -> None:
    """Scapulae on the chest wall and humeral heads in deltoids, outside the rib cage."""
    muscle = next(layer.shape for layer in sc.layers if layer.organ == "muscle")
    k = next(i for i, layer in enumerate(sc.layers) if layer.shape is muscle)
    cavity = next(
        layer.shape
        for layer in sc.layers[k + 1 :]
        if layer.label == FAT and isinstance(layer.shape, _Ellipse) and layer.shape.cx == 0
    )
    cage = _ellipse(0, 0, cavity.a + 10, cavity.b + 10)  # the ribs lie within ~9 mm of the cavity
    outside = lambda shape: _Combine("minus", shape, cage)  # noqa: E731
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    fat_hu, muscle_hu, cortical = sc.layers[0].hu, u(40, 60), u(1200, 1900)
    outer = body.a + lobe  # the deltoids' lateral edge
    for side in (-1, 1):
        ra, rb = u(40, 52), u(45, 60)
        cx, cy = side * (outer - ra), u(-15, 20)
        sc.paint(_Combine("minus", _ellipse(cx, cy, ra, rb), body), fat_hu, FAT)
        sc.paint(outside(_ellipse(cx, cy, ra - 5, rb - 6)), muscle_hu, SOFT, "muscle")  # deltoid
        gap = u(3, 8)  # humeral head: clear of the rib cage, inside the deltoid
        rh = min(u(20, 25), (outer - 6 - cage.a - gap) / 2)
        if rh >= 14:
            hx, shell = side * (cage.a + gap + rh), u(1.5, 3.0)
            sc.paint(outside(_circle(hx, cy, rh)), u(1200, 2000), BONE)
            sc.paint(outside(_circle(hx, cy, rh - shell)), u(200, 400), BONE)
        t = u(0.45, 0.9)  # the scapula: posterolateral, on the ribs, under its muscles
        length, thick = u(35, 50), u(2.0, 3.5)
        c, s = math.cos(t), math.sin(t)
        px, py = side * (cage.a + thick + 2) * c, (cage.b + thick + 2) * s
        ang = math.atan2(cage.b * c, -side * cage.a * s)
        pad = _ellipse(px, py, length + 8, thick + 6, ang)
        sc.paint(_both(outside(pad), body), muscle_hu, SOFT, "muscle")
        sc.paint(_both(outside(_ellipse(px, py, length, thick, ang)), body), cortical, BONE)
        sc.paint(_both(outside(_ellipse(px, py, length - 3, thick - 1.5, ang)), body), u(250, 450), BONE)


# ---------------------------------------------------------------------------------------------
def _pelvis(sc: _Scene) -> _Anatomy:
    """Pelvis at the femoral heads: hips, gluteal and hip muscles, bladder, rectum, coccyx."""
    a, b = sc.u(165, 185), sc.u(105, 125)
    ia, ib = _body_wall(sc, a, b)
    sc.paint(_ellipse(0, 0, ia, ib), sc.u(-110, -80), FAT)  # pelvic fat
    skin = _ellipse(0, 0, a - 6, b - 6)
    inside = _ellipse(0, 0, ia - 3, ib - 3)
    muscle_hu = sc.u(40, 60)
    fx, fy, fr = a * sc.u(0.46, 0.52), sc.u(-8, 8), sc.u(21, 26)
    for side in (-1, 1):  # gluteus maximus and medius behind the hips
        glut = _ellipse(side * fx * sc.u(0.7, 0.9), fy + fr + sc.u(15, 25), sc.u(40, 55), sc.u(28, 38))
        sc.paint(_both(glut, skin), muscle_hu, SOFT, "muscle")
    for side in (-1, 1):
        _hip(sc, side * fx, fy, fr, skin)
        sc.paint(
            _ellipse(side * (fx - 4), fy - fr - sc.u(12, 16), sc.u(14, 19), sc.u(10, 13)),
            muscle_hu,
            SOFT,
            "muscle",
        )  # iliopsoas
        sc.paint(
            _ellipse(side * (fx - fr - sc.u(14, 18)), fy + sc.u(-4, 4), sc.u(6, 8), sc.u(16, 22)),
            muscle_hu,
            SOFT,
            "muscle",
        )  # obturator internus
        vx, vy = side * (fx - sc.u(18, 24)), fy - fr - sc.u(10, 16)
        sc.paint(_circle(vx, vy, sc.u(4, 5)), sc.u(150, 300), SOFT)  # femoral artery
        sc.paint(_circle(vx - side * sc.u(10, 12), vy + sc.u(-2, 2), sc.u(5, 7)), sc.u(120, 220), SOFT)
    by, bx, bz = -ib * sc.u(0.25, 0.4), sc.u(25, 42), sc.u(18, 30)
    sc.paint(_both(_ellipse(0, by, bx + 2.5, bz + 2.5), inside), sc.u(35, 50), SOFT)  # bladder wall
    bladder = sc.paint(_both(_ellipse(0, by, bx, bz), inside), sc.u(0, 15), SOFT, "fluid")
    ry = ib * sc.u(0.45, 0.6)
    sc.paint(_ellipse(0, (by + bz + ry) / 2 + 4, sc.u(14, 20), sc.u(10, 14)), sc.u(35, 50), SOFT)  # prostate
    _bowel_loop(sc, 0.0, ry, sc.u(12, 17))  # rectum
    sc.paint(_ellipse(0, ry + sc.u(22, 28), sc.u(8, 12), sc.u(5, 7)), sc.u(1000, 1500), BONE)  # coccyx
    taken = [_circle(0, by, max(bx, bz) + 6), _circle(0, ry, 24)]
    taken += [_circle(side * fx, fy, fr + 30) for side in (-1, 1)]
    for _ in range(int(sc.rng.integers(1, 4))):  # small-bowel loops in front
        for _try in range(30):
            r = sc.u(9, 14)
            loop = _circle(sc.u(-ia * 0.6, ia * 0.6), sc.u(-ib, by), r + 1)
            if _clear(loop, taken, inside):
                taken.append(loop)
                _bowel_loop(sc, loop.cx, loop.cy, r)
                break
    out = _Anatomy([], _uniform(sc, [bladder], 9.0), [])
    return out


def _hip(sc: _Scene, cx: float, cy: float, r: float, skin) -> None:
    """Acetabulum, femoral head, neck and greater trochanter of the hip at (cx, cy)."""
    side = 1.0 if cx > 0 else -1.0
    cortical, trab = sc.u(1200, 2000), sc.u(220, 450)
    medial = _HalfPlane(side, 0.0, abs(cx) + 4.0)  # the cup covers the medial half of the head
    cup = sc.u(7, 10)
    sc.paint(_circle(cx, cy, r + 1.5), sc.u(60, 90), SOFT)  # cartilage and capsule
    sc.paint(_both(_ring(_circle(cx, cy, r + cup), _circle(cx, cy, r + 1.5)), medial), cortical, BONE)
    sc.paint(_both(_ring(_circle(cx, cy, r + cup - 1.5), _circle(cx, cy, r + 3)), medial), trab, BONE)
    tx, ty = cx + side * (r + sc.u(14, 20)), cy + sc.u(2, 10)
    neck = sc.u(11, 14)
    ta, tb = sc.u(12, 16), sc.u(15, 20)
    shell = sc.u(1.5, 3.0)
    sc.paint(_tube(cx, cy, tx, ty, neck), cortical, BONE)
    sc.paint(_both(_ellipse(tx, ty, ta, tb), skin), cortical, BONE)
    sc.paint(_circle(cx, cy, r), cortical, BONE)
    sc.paint(_tube(cx, cy, tx, ty, neck - 2.5), trab, BONE)
    sc.paint(_both(_ellipse(tx, ty, ta - shell, tb - shell), skin), trab, BONE)
    sc.paint(_circle(cx, cy, r - shell), trab, BONE)
    sc.hips = [*getattr(sc, "hips", []), (cx, cy, r)]


# ---------------------------------------------------------------------------------------------
def add_metal(sc: _Scene, region: str, rng: np.random.Generator) -> None:
    """A metal insert suited to the region (on top of everything it overlaps)."""
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    hu = u(*_METAL_HU)
    if region == "pelvis":
        hips = sc.hips if rng.random() < 0.2 else [sc.hips[int(rng.integers(2))]]
        for cx, cy, r in hips:  # a prosthetic head in a metal cup with a polyethylene liner
            side = 1.0 if cx > 0 else -1.0
            ball, liner = r * u(0.6, 0.75), u(3, 5)
            sc.paint(_circle(cx, cy, r + 2), u(40, 60), SOFT)
            cup = _ring(_circle(cx, cy, r + 2), _circle(cx, cy, ball + liner))
            sc.paint(_both(cup, _HalfPlane(side, 0.0, abs(cx) + 2.0)), hu, BONE, "metal")
            sc.paint(_circle(cx, cy, ball + liner), u(-100, -60), FAT)
            sc.paint(_circle(cx, cy, ball), hu, BONE, "metal")
    elif region == "head":
        head = _outline(sc)
        t = u(0.5, 1.2) * (1 if rng.random() < 0.5 else -1) + math.pi / 2
        x, y = (head.a - 4) * math.cos(t), (head.b - 4) * math.sin(t)
        ang = math.atan2(head.b * math.cos(t), -head.a * math.sin(t))
        sc.paint(_ellipse(x, y, u(4, 7), u(1.5, 2.5), ang), hu, BONE, "metal")  # a shunt valve
    else:
        cy, r = _vertebral_body(sc)
        for side in (-1, 1):  # pedicle screws into the vertebral body and the rods behind them
            x0, y0 = side * u(10, 14), cy + r + u(12, 18)
            sc.paint(_tube(x0, y0, side * u(3, 6), cy - r * u(0.2, 0.5), u(2.5, 3.5)), hu, BONE, "metal")
            sc.paint(_circle(side * u(14, 20), y0 + u(6, 10), u(2.5, 3.0)), hu, BONE, "metal")


def _vertebral_body(sc: _Scene) -> tuple[float, float]:
    """(centre y, radius) of the vertebral body: the first midline bone ellipse behind the centre."""
    for layer in sc.layers:
        s = layer.shape
        if layer.label == BONE and isinstance(s, _Ellipse) and s.cx == 0 and s.cy > 0 and s.a > s.b:
            return s.cy, s.b
    raise RuntimeError("no vertebra in this scene")  # pragma: no cover - thorax and abdomen have one


def field_of_view(sc: _Scene, kind: str, margin_mm: float = 8.0) -> float:
    """The phantom's field of view (mm): the kind's default, or wider in 20 mm steps to hold the body."""
    extent = 0.0
    for layer in sc.layers:
        box = np.abs(np.asarray(layer.bbox, dtype=np.float64))
        if np.isfinite(box).all():
            extent = max(extent, float(box.max()))
    need = math.ceil((2 * extent + 2 * margin_mm) / 20.0) * 20.0
    return float(min(max(FOV_MM[kind], need), MAX_FOV_MM))
