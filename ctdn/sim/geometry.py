"""Scanner geometry for the simulator.

Defaults follow a third-generation clinical scanner (Siemens Definition class): equiangular curved
detector, source-isocenter 595 mm, source-detector 1085.6 mm, 736 channels of 1.2858 mm (0.7047 mm
at the isocenter, a 500 mm field of view), 1152 views over 360 degrees. The parallel-beam option
keeps the same sampling at the isocenter and 576 views over 180 degrees (the same angular density).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..errors import InputError

__all__ = ["Geometry", "FILTERS", "REFERENCE_VIEWS", "REFERENCE_APERTURE_MM"]

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")

# Photon fluence is defined for this sampling; other samplings rescale I0 so that the same dose
# means the same number of photons through the patient (see Geometry.photon_scale).
REFERENCE_VIEWS = 1152
REFERENCE_APERTURE_MM = 1.2858 * 595.0 / 1085.6  # detector element width at the isocenter


@dataclass(frozen=True)
class Geometry:
    """Acquisition and reconstruction settings; every field is a keyword of ``simulate``."""

    kind: str = "fan"  # "fan" (equiangular, 360 degrees) or "parallel" (180 degrees)
    views: int | None = None  # default 1152 (fan) or 576 (parallel)
    detectors: int = 736
    sid_mm: float = 595.0  # source to isocenter (fan only)
    sdd_mm: float = 1085.6  # source to detector (fan only)
    det_spacing_mm: float | None = None  # at the detector; default 1.2858 (fan) or 0.7047 (parallel)
    filter: str = (
        "hann"  # FBP apodisation: hann (soft-tissue-like), ramp (Ram-Lak), shepp-logan, cosine, hamming
    )
    filter_cutoff: float = 1.0  # fraction of the detector Nyquist frequency kept
    step: float = 1.0  # forward-projector sample step in pixels (Joseph-like bilinear sampling)

    def __post_init__(self) -> None:
        if self.kind not in ("fan", "parallel"):
            raise InputError(f"geometry kind must be 'fan' or 'parallel', got {self.kind!r}")
        if self.filter not in FILTERS:
            raise InputError(f"unknown FBP filter {self.filter!r}; choose one of {', '.join(FILTERS)}")
        for name in ("detectors",) + (("views",) if self.views is not None else ()):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 8:
                raise InputError(f"geometry {name} must be an integer >= 8, got {v!r}")
        for name in ("sid_mm", "sdd_mm", "filter_cutoff", "step") + (
            ("det_spacing_mm",) if self.det_spacing_mm is not None else ()
        ):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
                raise InputError(f"geometry {name} must be a positive number, got {v!r}")
        if self.kind == "fan" and self.sdd_mm <= self.sid_mm:
            raise InputError(f"sdd_mm ({self.sdd_mm}) must exceed sid_mm ({self.sid_mm})")
        if self.filter_cutoff > 1.0:
            raise InputError(f"filter_cutoff must be in (0, 1], got {self.filter_cutoff}")
        if self.kind == "fan" and self.fan_angle_rad / 2 >= math.pi / 2:
            raise InputError("the fan is wider than 180 degrees: reduce detectors or det_spacing_mm")

    @classmethod
    def from_kwargs(cls, **kwargs) -> Geometry:
        """Build from ``simulate``-style keywords, naming any unknown one."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise InputError(f"unknown geometry keyword(s) {unknown}; valid: {sorted(names)}")
        return cls(**kwargs)

    # Derived quantities -------------------------------------------------------------------------
    @property
    def n_views(self) -> int:
        """Number of projections."""
        if self.views is not None:
            return self.views
        return REFERENCE_VIEWS if self.kind == "fan" else REFERENCE_VIEWS // 2

    @property
    def spacing(self) -> float:
        """Detector element width at the detector, mm."""
        if self.det_spacing_mm is not None:
            return float(self.det_spacing_mm)
        return 1.2858 if self.kind == "fan" else REFERENCE_APERTURE_MM

    @property
    def aperture_iso_mm(self) -> float:
        """Detector element width projected to the isocenter, mm."""
        if self.kind == "fan":
            return self.spacing * self.sid_mm / self.sdd_mm
        return self.spacing

    @property
    def dgamma(self) -> float:
        """Angular width of one fan-beam channel, radians."""
        return self.spacing / self.sdd_mm

    @property
    def fan_angle_rad(self) -> float:
        """Full fan angle, radians."""
        return self.detectors * self.spacing / self.sdd_mm

    @property
    def fov_radius_mm(self) -> float:
        """Radius of the circle every view sees (the reconstructable field of view)."""
        if self.kind == "fan":
            return self.sid_mm * math.sin(self.fan_angle_rad / 2)
        return self.detectors * self.spacing / 2

    @property
    def arc(self) -> float:
        """Angular range of the views, radians."""
        return 2 * math.pi if self.kind == "fan" else math.pi

    @property
    def photon_scale(self) -> float:
        """Factor on I0 that keeps the photon fluence of the reference sampling.

        Fewer views or wider elements collect more photons each, so the total fluence (and the
        noise at a given dose) stays put. A 180-degree parallel scan has half the views of the
        360-degree fan, so each of its lines gets the photons the fan spends on two.
        """
        return (REFERENCE_VIEWS / self.n_views) * (self.aperture_iso_mm / REFERENCE_APERTURE_MM)
