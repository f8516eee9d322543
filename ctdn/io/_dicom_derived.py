"""What a derived slice says about its making, and how its padding pixels are kept.

:func:`mark_processed` records the processing in the two places a PACS or a reader looks: a
DerivationCodeSequence item (PS3.3 C.7.6.1 General Image; for denoising DCM 113087 "Smoothing",
the code of PS3.16 CID 7203 Image Derivation closest to noise reduction) after the source's own
items, and a ContributingEquipmentSequence item (PS3.3 C.12.1 SOP Common) naming ctdn, its
version, the model and the time, with the purpose DCM 109103 "Modifying Equipment" (CID 7005).

:func:`keep_padding` makes the pixels that were padding in the source (PixelPaddingValue, up to
PixelPaddingRangeLimit when present, in the stored encoding) come out with their exact source
stored values, whatever the new HU there is; an image pixel whose new stored value falls in the
padding range is moved to the nearest value outside it, since viewers would hide it.
"""

from __future__ import annotations

import datetime

import numpy as np
from pydicom.dataset import Dataset

from .._version import __version__
from ..errors import DicomError

__all__ = ["SMOOTHING", "MODIFYING_EQUIPMENT", "mark_processed", "padding_range", "keep_padding"]

SMOOTHING = ("113087", "DCM", "Smoothing")
MODIFYING_EQUIPMENT = ("109103", "DCM", "Modifying Equipment")
_LO = 64  # characters in a Long String (LO) value
_ST = 1024  # characters in a Short Text (ST) value


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def long_string(text: str) -> str:
    """``text`` as a valid LO value: no backslash (the value separator) or control characters."""
    cleaned = "".join(" " if ord(c) < 32 or c == "\\" else c for c in text)
    return cleaned.strip()[:_LO]


def mark_processed(
    ds: Dataset,
    *,
    derivation: str,
    model: str | None,
    code: tuple[str, str, str] | None = SMOOTHING,
    now: datetime.datetime,
) -> None:
    """Add the derivation ``code`` (value, scheme, meaning; None: no code) after the source's, unless
    the source has it already, and an item for ctdn to the contributing equipment of ``ds`` (a copy
    of the source header)."""
    codes = list(ds.get("DerivationCodeSequence", None) or [])
    if code is not None and not any(
        (str(c.get("CodeValue", "")), str(c.get("CodingSchemeDesignator", ""))) == tuple(code[:2])
        for c in codes
    ):
        codes.append(_code(*code))
    if codes:
        ds.DerivationCodeSequence = codes

    item = Dataset()
    item.PurposeOfReferenceCodeSequence = [_code(*MODIFYING_EQUIPMENT)]
    item.Manufacturer = "ctdn"
    if model:
        item.ManufacturerModelName = long_string(model)
    item.SoftwareVersions = long_string(__version__)
    item.ContributionDateTime = now.strftime("%Y%m%d%H%M%S")
    item.ContributionDescription = derivation[:_ST]
    ds.ContributingEquipmentSequence = [*(ds.get("ContributingEquipmentSequence", None) or []), item]


def padding_range(src: Dataset, *, signed: bool) -> tuple[int, int] | None:
    """(lowest, highest) stored padding value of an integer source slice, or None without padding."""
    if "PixelRepresentation" not in src or src.get("PixelPaddingValue", None) is None:
        return None
    ends = [src.PixelPaddingValue]
    if src.get("PixelPaddingRangeLimit", None) is not None:
        ends.append(src.PixelPaddingRangeLimit)
    try:
        values = [_stored_int(v, signed=signed) for v in ends]
    except (TypeError, ValueError) as exc:
        raise DicomError(
            f"source header: PixelPaddingValue/PixelPaddingRangeLimit is not a number: {ends!r}"
        ) from exc
    return min(values), max(values)


def _stored_int(value, *, signed: bool) -> int:
    """A padding value (US or SS, as the pixels are) in the pixels' own encoding: one written with
    the other VR is taken back into range."""
    v = int(value)
    if signed and v >= 1 << 15:
        v -= 1 << 16
    elif not signed and v < 0:
        v += 1 << 16
    return v


def keep_padding(
    values: np.ndarray, source_hu, *, slope: float, intercept: float, pad: tuple[int, int], lo: int, hi: int
) -> int:
    """Put the source's stored value back on its padding pixels (``values``: the new stored values
    of one slice, float64, changed in place); returns how many image pixels were moved out of the
    padding range."""
    p_lo, p_hi = pad
    source = np.rint((np.asarray(source_hu, dtype=np.float64) - intercept) / slope)
    is_pad = (source >= p_lo) & (source <= p_hi)
    inside = ~is_pad & (values >= p_lo) & (values <= p_hi)
    moved = int(np.count_nonzero(inside))
    below, above = p_lo - 1, p_hi + 1
    if moved and (below >= lo or above <= hi):
        v = values[inside]
        if below < lo:
            values[inside] = above
        elif above > hi:
            values[inside] = below
        else:
            values[inside] = np.where(v - below <= above - v, below, above)
    else:
        moved = 0  # the padding range covers every stored value: nothing to move to
    values[is_pad] = source[is_pad]
    return moved
