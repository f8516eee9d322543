"""Fidelity phantoms: the procedural phantoms with lesions, texture and photon-starving bodies.

``generate_fidelity(kind, seed=..., size=..., config=FidelityConfig())`` builds a slice in the
order: base anatomy of the drawn region (the same builder and stream as
:func:`ctdn.phantoms.generate`, so with ``body=False`` the anatomy is that phantom's), wider body,
metal, fine vessels, rendering on the field of view that holds the body, the phantoms' texture
plus the per-organ fields, the phantom's own lesions (balanced as in ``generate``), and last the
inserted lesions (so the slice with lesions minus the slice without is exactly their profiles).

Randomness: the anatomy, body, metal, texture and lesion draws each come from their own seed
(``seed`` may be a mapping with those five keys; an int derives them with
``SeedSequence(seed, spawn_key=(purpose,))``), so e.g. another lesion seed changes the lesions and
nothing else. The same seeds give a bitwise identical slice.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import InputError, InputTypeError
from ..phantoms import KINDS, Phantom, _assemble, _check, _circle, _disk_mask, _render, _Scene
from ..sim.simulator import derive_seed
from . import body as _body
from .lesions import InsertedLesion, insert_lesions, relabel, to_table
from .organs import ORGANS, layer_organs, organ_id
from .texture import add_vessels, texture_field

__all__ = [
    "FIDELITY_VERSION",
    "FIDELITY_DOSES",
    "PURPOSES",
    "FidelityConfig",
    "FidelityPhantom",
    "generate_fidelity",
]

# Bumped whenever the same seeds and config would give other pixels or masks; caches record it.
FIDELITY_VERSION = 1
# Training doses from 5 % to full dose (a dose-1 LDCT is a second full-dose realisation).
FIDELITY_DOSES = (0.05, 0.1, 0.25, 0.5, 0.7, 1.0)
PURPOSES = ("anatomy", "body", "metal", "texture", "lesions")


@dataclass(frozen=True)
class FidelityConfig:
    """What a fidelity slice gets: ``lesions``, ``texture``, ``body`` (wide bodies, shoulders,
    pelvis), metal in a ``metal`` fraction of slices (0: never, 1: every slice), and the widest
    body ``max_width_mm``."""

    lesions: bool = True
    texture: bool = True
    body: bool = True
    metal: float = 0.05
    max_width_mm: float = _body.MAX_WIDTH_MM

    def __post_init__(self) -> None:
        for name in ("lesions", "texture", "body"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InputTypeError(f"fidelity {name} must be True or False, got {getattr(self, name)!r}")
        for name, lo, hi in (("metal", 0.0, 1.0), ("max_width_mm", 250.0, 480.0)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
            if not ok or not math.isfinite(v) or not lo <= v <= hi:
                raise InputError(f"fidelity {name} must be a number in [{lo:g}, {hi:g}], got {v!r}")

    @classmethod
    def parse(cls, value) -> FidelityConfig | None:
        """None for False/None, the defaults for True, a config from a dict of its fields or itself."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - names)
            if unknown:
                raise InputError(f"unknown fidelity option(s) {unknown}; valid: {sorted(names)}")
            return cls(**value)
        raise InputTypeError(f"fidelity must be True, False, a dict or a FidelityConfig, got {value!r}")

    def to_dict(self) -> dict:
        """JSON-ready fields plus the fidelity version (what a cache records)."""
        return {**dataclasses.asdict(self), "version": FIDELITY_VERSION}


@dataclass
class FidelityPhantom(Phantom):
    """A :class:`~ctdn.phantoms.Phantom` plus ``organs`` (uint8 ids of ORGANS), ``lesion_ids``
    (uint8: 0 none, i for ``inserted[i - 1]``), ``inserted`` lesions, the ``region`` ("thorax",
    "shoulders", "abdomen", "pelvis", "head"), whether it has ``metal``, ``body_width_mm``, the
    added ``texture_hu`` (float32) and the drawn ``texture_params`` ({organ: (std HU, sigma mm)})."""

    organs: np.ndarray | None = None
    lesion_ids: np.ndarray | None = None
    inserted: list[InsertedLesion] = field(default_factory=list)
    region: str = ""
    metal: bool = False
    body_width_mm: float = 0.0
    texture_hu: np.ndarray | None = None
    texture_params: dict = field(default_factory=dict)

    def lesion_table(self) -> np.ndarray:
        """The inserted lesions as a float64 table (columns: ``ctdn.augment.LESION_FIELDS``)."""
        return to_table(self.inserted)

    def organ_mask(self, name: str) -> np.ndarray:
        """Pixels whose organ is ``name`` (one of ORGANS)."""
        if name not in ORGANS:
            raise InputError(f"unknown organ {name!r}; choose one of {', '.join(ORGANS)}")
        return self.organs == organ_id(name)


def _seeds(seed) -> dict[str, int]:
    if isinstance(seed, Mapping):
        missing = [p for p in PURPOSES if p not in seed]
        if missing:
            raise InputError(f"fidelity seeds lack {missing}; give all of {list(PURPOSES)}")
        out = {p: seed[p] for p in PURPOSES}
    else:
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InputError(f"phantom seed must be a non-negative integer, got {seed!r}")
        out = {
            p: (int(seed) if p == "anatomy" else derive_seed(int(seed), k)) for k, p in enumerate(PURPOSES)
        }
    for p, v in out.items():
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 0:
            raise InputError(f"fidelity seed {p!r} must be a non-negative integer, got {v!r}")
    return {p: int(v) for p, v in out.items()}


def generate_fidelity(kind: str, *, seed=0, size: int = 512, config: FidelityConfig | None = None):
    """A fidelity slice of ``kind`` ("thorax", "abdomen", "head") at size x size; see the module doc."""
    cfg = FidelityConfig() if config is None else FidelityConfig.parse(config)
    seeds = _seeds(seed)
    _check(kind, seeds["anatomy"], size)
    size = int(size)
    sc = _Scene(np.random.default_rng([seeds["anatomy"], KINDS.index(kind)]))
    body_rng = np.random.default_rng(seeds["body"])
    region = _body.draw_region(kind, body_rng, cfg.body)
    anatomy = _body.build(sc, region)
    if cfg.body and region != "head":
        _body.widen(sc, region, body_rng, cfg.max_width_mm)
    metal_rng = np.random.default_rng(seeds["metal"])
    metal = bool(metal_rng.random() < cfg.metal)
    if metal:
        _body.add_metal(sc, region, metal_rng)
    if cfg.texture:
        add_vessels(sc, seeds["texture"], _keep_out_shapes(anatomy))
    fov = _body.field_of_view(sc, kind)
    hu, fractions, organ_fr = _render(sc.layers, size, fov, layer_organs(sc.layers))
    extra, params = None, {}
    if cfg.texture:
        extra, params = texture_field(organ_fr, seeds["texture"], fov)
    ph = _assemble(anatomy, hu, fractions, kind, seeds["anatomy"], fov, extra)
    organs = organ_fr.argmax(axis=0).astype(np.uint8)
    ids, inserted = np.zeros((size, size), np.uint8), []
    if cfg.lesions:
        ids, inserted = insert_lesions(
            ph.hu,
            organs,
            ph.pixel_size_mm,
            _keep_out_mask(ph),
            np.random.default_rng(seeds["lesions"]),
            region,
        )
        relabel(ph.labels, ph.hu, ids)
    return FidelityPhantom(
        **{f.name: getattr(ph, f.name) for f in dataclasses.fields(Phantom)},
        organs=organs,
        lesion_ids=ids,
        inserted=inserted,
        region=region,
        metal=metal,
        body_width_mm=_width(ph),
        texture_hu=extra,
        texture_params=params,
    )


def _keep_out_shapes(anatomy) -> list:
    """Shapes (mm) fine vessels stay out of: the uniform region and each lesion with its ring."""
    ux, uy, ur = anatomy.uniform
    shapes = [_circle(ux, uy, ur + 3.0)] if ur > 0 else []
    return shapes + [_circle(cx, cy, 2.5 * r + 1.5) for cx, cy, r, _c, _b in anatomy.lesions]


def _keep_out_mask(ph: Phantom) -> np.ndarray:
    """Pixels inserted lesions stay out of: near the uniform region, in phantom lesions' rings."""
    out = ndimage.binary_dilation(ph.uniform, iterations=2)
    for les in ph.lesions:
        out |= _disk_mask(ph.hu.shape, les.center, 2.5 * les.radius_px + 1.5)
    return out


def _width(ph: Phantom) -> float:
    """Lateral extent of the body (non-air pixels), mm."""
    cols = np.flatnonzero((ph.labels > 0).any(axis=0))
    return float((cols[-1] - cols[0] + 1) * ph.pixel_size_mm) if len(cols) else 0.0
