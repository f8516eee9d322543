"""What the DICOM header says about the dose: CTDIvol (or mAs and kVp) against a routine reference.

The header is a pydicom ``Dataset`` or a dict of DICOM keywords (``{"CTDIvol": 4.2, ...}``). The
dose from the header is ``CTDIvol / REFERENCE_CTDIVOL[region]``; without CTDIvol it falls back to
``mAs / pitch * MGY_PER_MAS[region] * (kVp / 120)^2.5`` (a typical scanner output, far less
certain). The region comes from BodyPartExamined when it names one, otherwise from the image.
Both tables are documented in docs/dose.md and can be overridden per call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "REFERENCE_CTDIVOL",
    "MGY_PER_MAS",
    "REGIONS",
    "HeaderInfo",
    "read_header",
    "region_from_body_part",
    "header_dose",
]

REGIONS = ("head", "chest", "abdomen")
# Routine adult CTDIvol (mGy; 16 cm phantom for the head, 32 cm for the body): between the median
# ("achievable dose") and the 75th percentile (reference level) of the ACR Dose Index Registry.
REFERENCE_CTDIVOL = {"head": 60.0, "chest": 12.0, "abdomen": 16.0}
# CTDIvol per mAs at 120 kVp, pitch 1 (mGy/mAs): typical scanner output, used without CTDIvol only.
MGY_PER_MAS = {"head": 0.17, "chest": 0.075, "abdomen": 0.075}
KVP_EXPONENT = 2.5  # scanner output grows about as kVp^2.5

_BODY_PARTS = {
    "head": ("HEAD", "BRAIN", "SKULL", "CRANIUM", "HEADNECK", "SINUS", "ORBIT"),
    "chest": ("CHEST", "THORAX", "LUNG", "HEART", "CARDIAC", "BREAST"),
    "abdomen": ("ABDOMEN", "PELVIS", "ABDOMENPELVIS", "ABDPELV", "LIVER", "KIDNEY", "PANCREAS", "COLON"),
}


@dataclass
class HeaderInfo:
    """The dose-related values found in one header (None where absent or unreadable)."""

    ctdivol_mgy: float | None = None
    mas: float | None = None
    mas_source: str | None = None
    kvp: float | None = None
    kernel: str | None = None
    water_diameter_mm: float | None = None
    pitch: float | None = None
    body_part: str | None = None
    pixel_size_mm: float | None = None
    notes: list[str] = field(default_factory=list)

    def used(self) -> dict:
        """The values present, by DICOM keyword (for the report)."""
        pairs = {
            "CTDIvol": self.ctdivol_mgy,
            self.mas_source or "mAs": self.mas,
            "KVP": self.kvp,
            "ConvolutionKernel": self.kernel,
            "WaterEquivalentDiameter": self.water_diameter_mm,
            "SpiralPitchFactor": self.pitch,
            "BodyPartExamined": self.body_part,
            "PixelSpacing": self.pixel_size_mm,
        }
        return {k: v for k, v in pairs.items() if v is not None}


def _get(header, keyword: str):
    if isinstance(header, Mapping):
        return header.get(keyword)
    try:
        return header.get(keyword)  # pydicom Dataset: the element's value, or None
    except Exception:  # noqa: BLE001 - an unreadable element counts as absent
        return None


def _number(value) -> float | None:
    """A positive finite number from a DICOM value (DS, IS, str, or the first of a multi-value)."""
    if value is None or isinstance(value, (bytes, bool)):
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    s = str(value).strip()
    return s or None


def _sequence_value(header, sequence: str, keyword: str):
    seq = _get(header, sequence)
    try:
        return _get(seq[0], keyword) if seq else None
    except (TypeError, IndexError, KeyError):
        return None


def read_header(header) -> HeaderInfo:
    """The dose-related values of a pydicom Dataset or a dict of DICOM keywords."""
    info = HeaderInfo()
    ctdi = _get(header, "CTDIvol")
    if ctdi is None:  # enhanced CT keeps it in the CT Exposure Sequence
        ctdi = _sequence_value(header, "CTExposureSequence", "CTDIvol")
    info.ctdivol_mgy = _number(ctdi)
    mas_ms = _number(_get(header, "ExposureInmAs"))
    mas = _number(_get(header, "Exposure"))
    current, time_ms = _number(_get(header, "XRayTubeCurrent")), _number(_get(header, "ExposureTime"))
    for source, value in (("ExposureInmAs", mas_ms), ("Exposure", mas)):
        if value is not None:
            info.mas, info.mas_source = value, source
            break
    if current is not None and time_ms is not None:
        product = current * time_ms / 1000.0
        if info.mas is None:
            info.mas, info.mas_source = product, "XRayTubeCurrent*ExposureTime"
        elif max(product, info.mas) / min(product, info.mas) > 1.5:
            info.notes.append(
                f"header {info.mas_source} = {info.mas:g} mAs but XRayTubeCurrent x ExposureTime = "
                f"{product:g} mAs; {info.mas_source} is used"
            )
    info.kvp = _number(_get(header, "KVP"))
    info.kernel = _text(_get(header, "ConvolutionKernel"))
    info.water_diameter_mm = _number(_get(header, "WaterEquivalentDiameter"))
    info.pitch = _number(_get(header, "SpiralPitchFactor"))
    info.body_part = _text(_get(header, "BodyPartExamined"))
    spacing = _get(header, "PixelSpacing")
    try:
        values = [float(v) for v in spacing] if spacing is not None else []
    except (TypeError, ValueError):
        values = []
    if values and all(math.isfinite(v) and v > 0 for v in values):
        info.pixel_size_mm = float(math.sqrt(values[0] * values[-1]))
    return info


def region_from_body_part(body_part: str | None) -> str | None:
    """head, chest or abdomen from BodyPartExamined (None when it names none of them)."""
    if not body_part:
        return None
    key = body_part.upper().replace(" ", "").replace("_", "").replace("-", "")
    for region, names in _BODY_PARTS.items():
        if any(key.startswith(n) or key == n for n in names):
            return region
    return None


def header_dose(
    info: HeaderInfo, region: str, reference: Mapping[str, float], mgy_per_mas: Mapping[str, float]
) -> tuple[float | None, str | None]:
    """(dose, how it was computed) from the header, or (None, None) without CTDIvol or mAs."""
    ref = reference[region]
    if info.ctdivol_mgy is not None:
        how = f"CTDIvol {info.ctdivol_mgy:.3g} mGy / routine {region} {ref:g} mGy"
        return info.ctdivol_mgy / ref, how
    if info.mas is None:
        return None, None
    kvp = info.kvp or 120.0
    pitch = info.pitch or 1.0
    ctdi = info.mas / pitch * mgy_per_mas[region] * (kvp / 120.0) ** KVP_EXPONENT
    how = (
        f"{info.mas:g} mAs ({info.mas_source}) at {kvp:g} kVp, pitch {pitch:g} -> about {ctdi:.3g} mGy "
        f"(typical {mgy_per_mas[region]:g} mGy/mAs) / routine {region} {ref:g} mGy"
    )
    return ctdi / ref, how
