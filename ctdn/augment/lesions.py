"""Lesions inserted into a rendered slice, with their masks and parameters.

Every slice gets a random number of lesions (soft-tissue lesions in the organs of its region,
lung nodules in thorax slices):

- diameter 2-15 mm, log-uniform (small ones are as common as large ones per octave);
- soft-tissue lesions: contrast +-5..40 HU, log-uniform in magnitude (faint ones dominate: half
  are under 14 HU), hypo- or hyperdense with equal odds, in liver, spleen, kidney and muscle
  (abdomen), muscle (pelvis, thorax), white and grey matter (cortex and deep nuclei; head);
- lung nodules: solid (+600..900 HU over lung, 60 %) or ground-glass (+100..300 HU), in lung
  parenchyma; solid ones clear of vessels, ground-glass ones may cover them;
- shape round or irregular (lobulated: radius modulated by harmonics 2-5, within 0.6-1.4x);
- edge sharp (partial volume from the supersampled coverage, as the phantoms render shapes) or
  blurred (that coverage convolved with a Gaussian of sigma 0.2-0.5 radii, cut at 4 sigma and
  below 2e-4 of the contrast, so a lesion's support is finite).

A lesion changes the slice by exactly ``contrast_hu x profile`` (added after all texture), where
the profile is 1 inside, falls to 0 at the edge, and is 0 outside its support. Its whole support
lies in its organ (checked on the organ map, with the sub-pixel offset and the blur allowed for),
never within 2 px of the uniform region or in a phantom lesion's background ring, and no lesion's
support enters another's background ring (2.5 radii). ``contrast_hu`` is the true contrast:
the step a fully covered pixel gets (the profile's plateau; blurred small lesions peak a little
lower, at least 0.86 of it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..hu import TISSUE_EDGES
from ..phantoms import _circle, _coverage, _Polar, _window
from .organs import ORGANS, organ_id

__all__ = [
    "InsertedLesion",
    "LESION_KINDS",
    "LESION_FIELDS",
    "SITES",
    "insert_lesions",
    "relabel",
    "to_table",
    "from_table",
]

LESION_KINDS = ("lesion", "solid_nodule", "ground_glass")
LESION_FIELDS = (
    "id",  # value in the lesion id image (1, 2, ...)
    "organ",  # index in ORGANS of the organ at the centre
    "kind",  # index in LESION_KINDS
    "row",
    "col",  # centre, pixels
    "radius_mm",
    "radius_px",  # mean radius
    "contrast_hu",  # the step added (the true contrast)
    "irregular",  # 0 round, 1 lobulated
    "blur_mm",  # Gaussian sigma of the edge, 0 for a sharp edge
    "background_hu",  # mean HU under the lesion before insertion
)
# Soft-tissue sites per region: {site: (weight, organs)}; counts drawn as integers(lo, hi).
SITES = {
    "abdomen": {"liver": (3.0, ("liver",)), "spleen": (1.5, ("spleen",)), "kidney": (1.5, ("kidney",))}
    | {"muscle": (1.0, ("muscle",))},
    "pelvis": {"muscle": (1.0, ("muscle",))},
    "thorax": {"muscle": (1.0, ("muscle",))},
    "shoulders": {"muscle": (1.0, ("muscle",))},
    "head": {"white": (2.0, ("white",)), "grey": (1.5, ("grey", "deep_grey"))},
}
_COUNTS = {"abdomen": (3, 9), "pelvis": (2, 6), "thorax": (1, 4), "shoulders": (1, 4), "head": (3, 8)}
_NODULES = {"thorax": (2, 7), "shoulders": (2, 7)}
_LUNG = {"solid_nodule": ("lung",), "ground_glass": ("lung", "lung_vessel")}
_CUT = 2e-4  # profile values below this are set to 0 (at most 0.2 HU for a 900 HU nodule)


@dataclass(frozen=True)
class InsertedLesion:
    """One inserted lesion (works with :func:`ctdn.iq.lesion_stats`: center, radius_px, contrast_hu)."""

    center: tuple[float, float]
    radius_px: float
    radius_mm: float
    contrast_hu: float
    organ: str
    kind: str
    irregular: bool
    blur_mm: float
    background_hu: float


@dataclass
class _Slice:
    hu: np.ndarray
    organs: np.ndarray
    px: float
    fov: float
    keep_out: np.ndarray
    rng: np.random.Generator
    ids: np.ndarray
    placed: list  # (row, col, radius_px, outer_px)
    lesions: list


def insert_lesions(hu, organs, px: float, keep_out, rng: np.random.Generator, region: str):
    """Insert the region's lesions into ``hu`` (in place); returns (id image uint8, lesions)."""
    st = _Slice(hu, organs, px, px * hu.shape[0], keep_out, rng, np.zeros(hu.shape, np.uint8), [], [])
    present = {name for name in ORGANS if (organs == organ_id(name)).any()}
    sites = {k: v for k, v in SITES[region].items() if present & set(v[1])}
    plan = []
    if sites:
        names = list(sites)
        weights = np.asarray([sites[k][0] for k in names])
        for _ in range(int(rng.integers(*_COUNTS[region]))):
            plan.append(("lesion", sites[names[int(rng.choice(len(names), p=weights / weights.sum()))]][1]))
    if region in _NODULES and "lung" in present:
        for _ in range(int(rng.integers(*_NODULES[region]))):
            kind = "solid_nodule" if rng.random() < 0.6 else "ground_glass"
            plan.append((kind, _LUNG[kind]))
    distances: dict[tuple, np.ndarray] = {}
    for kind, site in plan:
        if site not in distances:
            allowed = np.isin(organs, [organ_id(o) for o in site]) & ~keep_out
            distances[site] = ndimage.distance_transform_edt(allowed)
        _insert_one(st, kind, distances[site])
    return st.ids, st.lesions


def _draw(rng: np.random.Generator, kind: str) -> dict:
    """The lesion's size (mm), contrast, shape and edge."""
    r = math.exp(rng.uniform(math.log(2.0), math.log(15.0))) / 2
    if kind == "lesion":
        c = (1.0 if rng.random() < 0.5 else -1.0) * math.exp(rng.uniform(math.log(5.0), math.log(40.0)))
    else:
        c = float(rng.uniform(600, 900) if kind == "solid_nodule" else rng.uniform(100, 300))
    shape = None
    if rng.random() < 0.5:  # lobulated: relative radius 1 + sum of harmonics 2..5
        theta = np.arange(64) * (2 * math.pi / 64)
        shape = np.ones(64)
        for k in range(2, 6):
            shape += rng.uniform(0, 0.3 / k) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
        shape = np.clip(shape, 0.6, 1.4)
    rel_blur = float(rng.uniform(0.2, 0.5)) if rng.random() < 0.5 else 0.0
    return {"r": float(r), "c": float(c), "shape": shape, "rel_blur": rel_blur}


def _insert_one(st: _Slice, kind: str, dist: np.ndarray) -> None:
    """Place one lesion where it fits, shrinking it until it does (or giving up under 2 mm)."""
    d = _draw(st.rng, kind)
    r = d["r"]
    while r >= 1.0:
        reach = r * (1.0 if d["shape"] is None else float(d["shape"].max()))
        blur = d["rel_blur"] * r
        outer = (reach + 4 * blur) / st.px + 1.0  # support radius bound, px (+ 1 px of blur rounding)
        cand = np.flatnonzero(dist >= outer + 1.5)  # + the sub-pixel offset and a partial pixel
        for k in st.rng.choice(cand, size=min(len(cand), 30), replace=False) if len(cand) else []:
            row, col = divmod(int(k), st.hu.shape[1])
            row, col = row + float(st.rng.uniform(-0.5, 0.5)), col + float(st.rng.uniform(-0.5, 0.5))
            if _clear_of_others(st, row, col, r / st.px, outer):
                _paint(st, kind, d, row, col, r, blur, outer)
                return
        r *= 0.8


def _clear_of_others(st: _Slice, row: float, col: float, r_px: float, outer: float) -> bool:
    for r0, c0, rr, oo in st.placed:
        if math.hypot(row - r0, col - c0) < max(2.5 * r_px + oo, 2.5 * rr + outer) + 1.5:
            return False
    return True


def _paint(
    st: _Slice, kind: str, d: dict, row: float, col: float, r: float, blur: float, outer: float
) -> None:
    size = st.hu.shape[0]
    cx, cy = (col - (size - 1) / 2) * st.px, (row - (size - 1) / 2) * st.px
    shape = _circle(cx, cy, r) if d["shape"] is None else _Polar(cx, cy, (r * d["shape"]).astype(np.float64))
    profile = _coverage(shape, size, st.fov)
    if blur > 0:
        margin = int(4 * blur / st.px + 0.5) + 2
        rows, cols = _window(shape.bbox(), (size - 1) / 2, st.px, size)
        rows = slice(max(0, rows.start - margin), min(size, rows.stop + margin))
        cols = slice(max(0, cols.start - margin), min(size, cols.stop + margin))
        sub = ndimage.gaussian_filter(profile[rows, cols], blur / st.px, mode="constant", truncate=4.0)
        sub[sub < _CUT] = 0.0
        profile[rows, cols] = sub
    support = profile > 0
    lid = len(st.lesions) + 1
    background = float(np.average(st.hu[support], weights=profile[support]))
    st.hu += np.float32(d["c"]) * profile
    st.ids[support] = lid
    st.placed.append((row, col, r / st.px, outer))
    organ = ORGANS[
        int(st.organs[min(max(int(round(row)), 0), size - 1), min(max(int(round(col)), 0), size - 1)])
    ]
    st.lesions.append(
        InsertedLesion(
            (row, col), r / st.px, r, d["c"], organ, kind, d["shape"] is not None, blur, background
        )
    )


def relabel(labels: np.ndarray, hu: np.ndarray, ids: np.ndarray) -> None:
    """Give the pixels of lesion supports the tissue label of their new HU (nodules in lung)."""
    inside = ids > 0
    labels[inside] = np.digitize(hu[inside], TISSUE_EDGES).astype(np.uint8)


def to_table(lesions) -> np.ndarray:
    """The lesions as a float64 (n, len(LESION_FIELDS)) table."""
    rows = [
        (
            i + 1,
            organ_id(les.organ),
            LESION_KINDS.index(les.kind),
            les.center[0],
            les.center[1],
            les.radius_mm,
            les.radius_px,
            les.contrast_hu,
            float(les.irregular),
            les.blur_mm,
            les.background_hu,
        )
        for i, les in enumerate(lesions)
    ]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(LESION_FIELDS))


def from_table(table: np.ndarray) -> list[InsertedLesion]:
    """:class:`InsertedLesion` objects back from a table (rows with id 0 are padding)."""
    out = []
    f = {name: k for k, name in enumerate(LESION_FIELDS)}
    for row in np.asarray(table, dtype=np.float64):
        if row[f["id"]] == 0:
            continue
        out.append(
            InsertedLesion(
                (float(row[f["row"]]), float(row[f["col"]])),
                float(row[f["radius_px"]]),
                float(row[f["radius_mm"]]),
                float(row[f["contrast_hu"]]),
                ORGANS[int(row[f["organ"]])],
                LESION_KINDS[int(row[f["kind"]])],
                bool(row[f["irregular"]]),
                float(row[f["blur_mm"]]),
                float(row[f["background_hu"]]),
            )
        )
    return out
