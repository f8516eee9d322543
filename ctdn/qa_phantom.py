"""A TG-233-style image-quality phantom: a water cylinder with a uniform centre and circular inserts.

Layout (mm, relative to the cylinder of radius Rc = diameter / 2, water 0 HU in air):

- the uniform region: a disc of radius 0.4 Rc at the centre, for the NPS;
- TTF inserts: one rod per contrast of ``ttf_hu`` (default -1000 air, -100 fat/polyethylene-like,
  +120 acrylic-like, +10 and -10 HU), ``ttf_diameter_mm`` across (15), evenly spaced on a ring at
  0.78 Rc. Each keeps the disc a TTF needs (max(2 R, R + 8 px), :func:`ctdn.iq.ttf`) free;
- lesions for detectability and contrast: every contrast of ``lesion_hu`` (default +10, -10,
  +120, -100 HU) at every diameter of ``lesion_mm`` (3, 5, 7, 10 mm), evenly spaced on a ring at
  0.55 Rc, large and small alternating.

Values are absolute HU with water at 0, so an insert's HU is its contrast to the background.
Edges carry partial-volume values from the same supersampled renderer as :mod:`ctdn.phantoms`;
there is no texture. The layout fits cylinders of 200 to 400 mm; the field of view defaults to
max(360 mm, 1.1 x diameter), so a 300 mm cylinder at 512 pixels has the body phantoms' 0.703 mm.

:func:`simulate_qa` scans it through :class:`ctdn.sim.Simulator` (any geometry, photon budget and
electronic noise, e.g. a training slice's ``SyntheticDataset.scanner`` draws): independent noisy
realisations at a dose and the noise-free reconstruction, from one forward projection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import InputError, InputTypeError
from .iq import DiscTask, lesion_masks, roi_corners
from .phantoms import SOFT, _circle, _disk_mask, _Layer, _render
from .sim import DEFAULT_I0, DEFAULT_SIGMA_E, Geometry, Simulator, check_dose
from .sim.simulator import derive_seed, dose_key, torch_generator

__all__ = [
    "TTF_HU",
    "LESION_HU",
    "LESION_MM",
    "Insert",
    "QAPhantom",
    "QAScan",
    "qa_phantom",
    "simulate_qa",
    "simulate_qa_doses",
    "scanner_kwargs",
]

TTF_HU = (-1000.0, -100.0, 120.0, 10.0, -10.0)
LESION_HU = (10.0, -10.0, 120.0, -100.0)
LESION_MM = (3.0, 5.0, 7.0, 10.0)
DIAMETER_RANGE_MM = (200.0, 400.0)
_UNIFORM, _LESION_RING, _TTF_RING = 0.4, 0.55, 0.78  # fractions of the cylinder's radius
_QA_STREAM = 233  # seed stream of the QA realisations (apart from the training data's streams)


@dataclass(frozen=True)
class Insert:
    """A circular insert: centre (row, col) and radius in pixels, diameter in mm, HU (= contrast)."""

    name: str
    kind: str  # "ttf" or "lesion"
    center: tuple[float, float]
    radius_px: float
    diameter_mm: float
    hu: float

    @property
    def contrast_hu(self) -> float:
        """Contrast to the water background (0 HU)."""
        return self.hu


@dataclass
class QAPhantom:
    """The rendered phantom (float32 HU) with its inserts and regions."""

    hu: np.ndarray
    pixel_size_mm: float
    diameter_mm: float
    fov_mm: float
    inserts: list[Insert]
    uniform: np.ndarray  # bool: the central disc for the NPS
    body: np.ndarray  # bool: pixels wholly inside the water cylinder

    @property
    def ttf_inserts(self) -> list[Insert]:
        return [s for s in self.inserts if s.kind == "ttf"]

    @property
    def lesions(self) -> list[Insert]:
        return [s for s in self.inserts if s.kind == "lesion"]

    def insert_mask(self, i: int, ring: bool = False) -> np.ndarray:
        """Interior of insert ``i`` (or its background ring), as :func:`ctdn.iq.lesion_masks`."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < len(self.inserts):
            raise InputError(f"insert index must be an integer in [0, {len(self.inserts)}), got {i!r}")
        ins = self.inserts[int(i)]
        others = [(s.center, s.radius_px) for j, s in enumerate(self.inserts) if j != i]
        inside, background = lesion_masks(
            self.hu.shape, ins.center, ins.radius_px, others=others, valid=self.body
        )
        return background if ring else inside

    def nps_centers(self, roi: int = 64) -> list[tuple[float, float]]:
        """Centres (row, col) of the ``roi``-pixel square ROIs that fit in the uniform region."""
        return [
            (r + (roi - 1) / 2, c + (roi - 1) / 2)
            for r, c in roi_corners(self.hu.shape, roi, mask=self.uniform)
        ]

    def tasks(self) -> list[DiscTask]:
        """One detectability task per lesion (its diameter and contrast)."""
        return [DiscTask(s.diameter_mm, s.hu) for s in self.lesions]


@dataclass
class QAScan:
    """A simulated scan of a QA phantom: K noisy realisations and the noise-free reconstruction."""

    dose: float
    realisations: np.ndarray  # float32 (K, H, W), independent noise
    noiseless: np.ndarray  # float32 (H, W)
    pixel_size_mm: float
    seed: int


def _real(v, name: str) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a real number, got {v!r}")
    if not math.isfinite(v):
        raise InputError(f"{name} must be finite, got {v!r}")
    return float(v)


def _values(seq, name: str, *, lo: float, hi: float) -> tuple[float, ...]:
    if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence) or not seq:
        raise InputError(f"{name} must be a non-empty sequence of numbers, got {seq!r}")
    out = tuple(_real(v, name) for v in seq)
    bad = [v for v in out if not lo <= v <= hi]
    if bad:
        raise InputError(f"{name} values must lie in [{lo:g}, {hi:g}], got {bad[0]:g}")
    return out


def _interleave(sizes: tuple[float, ...]) -> list[float]:
    """Sizes ordered large, small, next large, next small... so neighbours differ in size."""
    order = sorted(sizes)
    out = []
    while order:
        out.append(order.pop())
        if order:
            out.append(order.pop(0))
    return out


def _layout(diameter: float, ttf_hu, ttf_mm: float, lesion_hu, lesion_mm) -> list[tuple]:
    """(name, kind, x, y, radius, hu) in mm for every insert."""
    rc = diameter / 2
    out = []
    for k, hu in enumerate(ttf_hu):
        a = 2 * math.pi * k / len(ttf_hu) - math.pi / 2
        r = _TTF_RING * rc
        out.append((f"ttf{hu:+g}HU", "ttf", r * math.cos(a), r * math.sin(a), ttf_mm / 2, hu))
    ring = [(hu, d) for hu in lesion_hu for d in _interleave(lesion_mm)]
    for k, (hu, d) in enumerate(ring):
        a = 2 * math.pi * (k + 0.5) / len(ring) - math.pi / 2
        r = _LESION_RING * rc
        out.append((f"lesion{d:g}mm{hu:+g}HU", "lesion", r * math.cos(a), r * math.sin(a), d / 2, hu))
    return out


def _analysis_radius(kind: str, r: float, px: float) -> float:
    """The disc (mm) around an insert that must hold nothing else: the TTF's 2 R (its default at
    pixels up to R / 8), or the lesion ring's outer radius."""
    return 2 * r if kind == "ttf" else max(2.5 * r, max(1.5 * r, r + px) + 1.5 * px)


def _check_layout(items, diameter: float, uniform_r: float, px: float) -> None:
    rc = diameter / 2
    for i, (name, kind, x, y, r, _) in enumerate(items):
        reach = _analysis_radius(kind, r, px)
        if math.hypot(x, y) + reach > rc - 2 * px or math.hypot(x, y) - reach < uniform_r:
            raise InputError(f"insert {name} does not fit between the uniform centre and the cylinder's edge")
        for j, (other, _, x2, y2, r2, _) in enumerate(items):
            if j != i and math.hypot(x - x2, y - y2) < reach + r2:
                raise InputError(f"inserts {name} and {other} are too close: use fewer or smaller inserts")


def qa_phantom(
    diameter_mm: float = 300.0,
    *,
    size: int = 512,
    fov_mm: float | None = None,
    ttf_hu: Sequence[float] = TTF_HU,
    ttf_diameter_mm: float = 15.0,
    lesion_hu: Sequence[float] = LESION_HU,
    lesion_mm: Sequence[float] = LESION_MM,
) -> QAPhantom:
    """The QA phantom of ``diameter_mm`` (200-400) at ``size`` x ``size`` over ``fov_mm``."""
    diameter = _real(diameter_mm, "diameter_mm")
    if not DIAMETER_RANGE_MM[0] <= diameter <= DIAMETER_RANGE_MM[1]:
        raise InputError(
            f"diameter_mm must be in [{DIAMETER_RANGE_MM[0]:g}, {DIAMETER_RANGE_MM[1]:g}], got {diameter:g}"
        )
    if (
        isinstance(size, (bool, np.bool_))
        or not isinstance(size, (int, np.integer))
        or not 64 <= size <= 4096
    ):
        raise InputError(f"size must be an integer in [64, 4096], got {size!r}")
    fov = max(360.0, 1.1 * diameter) if fov_mm is None else _real(fov_mm, "fov_mm")
    if fov < diameter + 10:
        raise InputError(f"fov_mm {fov:g} must exceed the diameter ({diameter:g} mm) by at least 10 mm")
    ttf_mm = _real(ttf_diameter_mm, "ttf_diameter_mm")
    size, px = int(size), fov / int(size)
    items = _layout(
        diameter,
        _values(ttf_hu, "ttf_hu", lo=-1000, hi=3000),
        ttf_mm,
        _values(lesion_hu, "lesion_hu", lo=-1000, hi=3000),
        _values(lesion_mm, "lesion_mm", lo=0.5, hi=30),
    )
    uniform_r = _UNIFORM * diameter / 2
    _check_layout(items, diameter, uniform_r, px)
    water = _circle(0.0, 0.0, diameter / 2)
    layers = [_Layer(water, 0.0, SOFT, water.bbox())]
    for _, _, x, y, r, hu in items:
        disc = _circle(x, y, r)
        layers.append(_Layer(disc, hu, SOFT, disc.bbox()))
    hu, _ = _render(layers, size, fov)
    centre = (size - 1) / 2
    inserts = [
        Insert(name, kind, (y / px + centre, x / px + centre), r / px, 2 * r, float(v))
        for name, kind, x, y, r, v in items
    ]
    uniform = _disk_mask((size, size), (centre, centre), uniform_r / px - 0.75, at_least_one=True)
    body = _disk_mask((size, size), (centre, centre), diameter / 2 / px - 0.75)
    return QAPhantom(hu.astype(np.float32), px, diameter, fov, inserts, uniform, body)


def _seed(seed) -> int:
    if seed is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer or None, got {seed!r}")
    return int(seed)


def simulate_qa_doses(
    phantom: QAPhantom,
    doses,
    *,
    seed=None,
    realisations: int = 2,
    geometry: Geometry | dict | None = None,
    i0: float = DEFAULT_I0,
    sigma_e: float = DEFAULT_SIGMA_E,
    device=None,
) -> dict[float, QAScan]:
    """:func:`simulate_qa` at several doses from one forward projection: {dose: QAScan}."""
    if not isinstance(phantom, QAPhantom):
        raise InputTypeError(
            f"phantom must be a QAPhantom (ctdn.qa_phantom.qa_phantom), got {type(phantom).__name__}"
        )
    dose_list = [float(d) for d in np.atleast_1d(check_dose(doses, name="doses"))]
    if isinstance(realisations, bool) or not isinstance(realisations, (int, np.integer)) or realisations < 1:
        raise InputError(f"realisations must be a positive integer, got {realisations!r}")
    if isinstance(geometry, dict):
        geometry = Geometry.from_kwargs(**geometry)
    elif geometry is not None and not isinstance(geometry, Geometry):
        raise InputTypeError(
            f"geometry must be a Geometry, a dict of its keywords or None, got {type(geometry).__name__}"
        )
    entropy = _seed(seed)
    sim = Simulator(geometry, pixel_size_mm=phantom.pixel_size_mm, i0=i0, sigma_e=sigma_e, device=device)
    shape = phantom.hu.shape
    out = {}
    with torch.no_grad():
        proj = sim.project(phantom.hu)[0]
        clean = sim.reconstruct_hu(proj[None], shape)[0].cpu().numpy()
        for d in dose_list:
            noisy = []
            for k in range(int(realisations)):
                gen = torch_generator(derive_seed(entropy, _QA_STREAM, k, dose_key(d)), sim.device)
                sino = sim.noisy_sinogram(proj, d, gen)
                noisy.append(sim.reconstruct_hu(sino[None], shape)[0].cpu().numpy())
            out[d] = QAScan(
                d,
                np.stack(noisy).astype(np.float32),
                clean.astype(np.float32),
                phantom.pixel_size_mm,
                entropy,
            )
    return out


def simulate_qa(phantom: QAPhantom, dose: float, **kwargs) -> QAScan:
    """Scan ``phantom`` at ``dose``: ``realisations`` (default 2) independent noisy reconstructions
    and the noise-free one (the line integrals reconstructed without noise).

    Keywords: ``seed`` (the same seed, dose and realisation index give the same noise),
    ``realisations``, ``geometry`` (a :class:`ctdn.sim.Geometry` or its keywords), ``i0``,
    ``sigma_e``, ``device``.
    """
    if np.ndim(dose) != 0:
        raise InputError(f"dose must be one number here (use simulate_qa_doses for several), got {dose!r}")
    return next(iter(simulate_qa_doses(phantom, [dose], **kwargs).values()))


def scanner_kwargs(draws: dict) -> dict:
    """``simulate_qa`` keywords from ``SyntheticDataset.scanner(p, s)`` draws (geometry, i0, sigma_e)."""
    return {k: draws[k] for k in ("geometry", "i0", "sigma_e")}
