"""What the DICOM reader keeps of each slice header, and what must agree across a series.

Kept headers (``Volume.headers``) are small whatever the files hold: :func:`slim_header` drops
bulk data that a CT slice does not need to be read or written again -- any element (a sequence
counted with its items) larger than :data:`BULK_LIMIT`, the icon image, a whole overlay or curve
group whose data is bulk, and private elements beyond :data:`PRIVATE_BUDGET` per header (largest
first). The Modality LUT is always kept (the reader applies it) and a VOI LUT up to 1 MiB.

:func:`check_series` refuses a series whose slices disagree on how pixels become HU (a slice that
lacks a RescaleIntercept or RescaleSlope its neighbours have, different rescale types, a Modality
LUT on some slices and a rescale on others) or that holds one SOPInstanceUID twice. Values that
are present but differ between slices are each slice's own and are allowed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from ..errors import DicomError

__all__ = ["BULK_LIMIT", "PRIVATE_BUDGET", "check_series", "raw_item", "slim_header"]

BULK_LIMIT = 64 * 1024  # bytes: a larger element is not kept in a header held in memory
PRIVATE_BUDGET = 256 * 1024  # bytes of private elements kept per header
_LUT_LIMIT = 1 << 20  # a VOI LUT is kept up to this size

_MODALITY_LUT = 0x00283000  # ModalityLUTSequence: needed to read the pixels as HU
_VOI_LUT = 0x00283010  # VOILUTSequence: display windows, kept for the derived series
_ICON_IMAGE = 0x00880200  # IconImageSequence: a thumbnail of the source pixels
_REPEATING_GROUPS = ((0x5000, 0x50FF), (0x6000, 0x60FF))  # curves, overlays: one module per group
_UNDEFINED_LENGTH = 0xFFFFFFFF
_SHOWN = 5


# ---------------------------------------------------------------------------------------------
# Kept headers
def raw_item(ds: Dataset, tag: int):
    """The element at ``tag`` without reading a deferred value from the file."""
    try:
        return ds.get_item(tag, keep_deferred=True)
    except TypeError:  # pragma: no cover - pydicom 2.x (no deferred reads are used there)
        return ds.get_item(tag)


def element_size(elem) -> int:
    """Bytes of an element's value as read (a sequence: its items); a deferred value counts whole."""
    if isinstance(elem, RawDataElement):
        if elem.length != _UNDEFINED_LENGTH:
            return int(elem.length)
        return len(elem.value) if isinstance(elem.value, bytes) else _UNDEFINED_LENGTH
    value = elem.value
    if isinstance(value, DicomSequence):
        return sum(dataset_size(item) + 8 for item in value)
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    if isinstance(value, (list, tuple, MultiValue)):
        return sum(len(v) if isinstance(v, (bytes, str)) else 8 for v in value)
    return 8


def dataset_size(ds: Dataset) -> int:
    """Bytes of the values in ``ds``, sequences included (an estimate of what it holds)."""
    return sum(element_size(raw_item(ds, tag)) + 8 for tag in list(ds.keys()))


def slim_header(ds: Dataset) -> None:
    """Drop bulk and excess private data from a header kept in memory (see the module docstring)."""
    dropped_groups: set[int] = set()
    for tag in list(ds.keys()):
        elem = raw_item(ds, tag)
        size = element_size(elem)
        if tag == _MODALITY_LUT or (tag == _VOI_LUT and size <= _LUT_LIMIT):
            if isinstance(elem, RawDataElement) and elem.value is None:
                ds[tag]  # a deferred LUT is read now: the kept header must not need the file
            continue
        if tag == _ICON_IMAGE or size > BULK_LIMIT:
            del ds[tag]
            if any(lo <= tag.group <= hi for lo, hi in _REPEATING_GROUPS):
                dropped_groups.add(tag.group)
    for tag in [t for t in ds.keys() if t.group in dropped_groups]:
        del ds[tag]  # the rest of an overlay or curve module whose data is gone
    _trim_private(ds)


def _trim_private(ds: Dataset) -> None:
    private = [
        (element_size(raw_item(ds, tag)), tag)
        for tag in ds.keys()
        if tag.is_private and not tag.is_private_creator
    ]
    total = sum(size for size, _ in private)
    for size, tag in sorted(private, reverse=True):
        if total <= PRIVATE_BUDGET:
            break
        del ds[tag]
        total -= size


# ---------------------------------------------------------------------------------------------
# Series-level checks
def check_series(entries: Sequence[Any]) -> None:
    """Refuse inconsistent rescales and duplicated SOPInstanceUIDs; ``entries`` have ``.path`` and
    ``.ds`` (a header whose own values have already been checked)."""
    _check_unique_instances(entries)
    _check_rescale(entries)


def _check_unique_instances(entries: Sequence[Any]) -> None:
    seen: dict[str, Path] = {}
    dups: list[tuple[str, Path, Path]] = []
    for e in entries:
        uid = _present(e.ds, "SOPInstanceUID")
        if uid is None:
            continue
        uid = str(uid).strip()
        if uid in seen:
            dups.append((uid, seen[uid], e.path))
        else:
            seen[uid] = e.path
    if not dups:
        return
    uid, a, b = dups[0]
    same_file = os.path.realpath(a) == os.path.realpath(b)
    raise DicomError(
        f"the same SOPInstanceUID {uid} is in {a.name} and {b.name}"
        + (" (the same file given twice)" if same_file else " (one image twice, or a damaged series)")
        + f"; {len(dups)} duplicate(s) in all: remove the copies"
    )


def _check_rescale(entries: Sequence[Any]) -> None:
    with_lut = [e for e in entries if _has_lut(e.ds)]
    if with_lut and len(with_lut) < len(entries):
        without = [e for e in entries if not _has_lut(e.ds)]
        raise DicomError(
            f"{len(with_lut)} of {len(entries)} slice(s) map pixels to HU with a Modality LUT "
            f"({_names(with_lut)}) and {len(without)} with RescaleSlope/RescaleIntercept "
            f"({_names(without)}); one series must use one or the other"
        )
    if not with_lut:
        for keyword, default in (("RescaleIntercept", 0), ("RescaleSlope", 1)):
            _check_present_everywhere(entries, keyword, default)
    _check_same_type(entries, lut=bool(with_lut))


def _check_present_everywhere(entries: Sequence[Any], keyword: str, default: int) -> None:
    have = [e for e in entries if _present(e.ds, keyword) is not None]
    if not have or len(have) == len(entries):
        return
    lacking = [e for e in entries if _present(e.ds, keyword) is None]
    example = have[0]
    raise DicomError(
        f"{keyword} is missing from {len(lacking)} of {len(entries)} slice(s) ({_names(lacking)}) "
        f"but present in the others (e.g. {example.path.name}: {_present(example.ds, keyword)}); "
        f"those slices would be read with {keyword} {default}, unlike their neighbours"
    )


def _check_same_type(entries: Sequence[Any], *, lut: bool) -> None:
    keyword = "ModalityLUTType" if lut else "RescaleType"
    by_type: dict[str, list[Any]] = {}
    for e in entries:
        where = e.ds.ModalityLUTSequence[0] if lut else e.ds
        value = _present(where, keyword)
        if value is not None:
            kind = str(value).strip().upper()
        elif str(e.ds.get("Modality", "") or "").strip() == "CT":
            kind = "HU"  # the CT Image module requires RescaleType only when it is not HU
        else:
            kind = "(none)"
        by_type.setdefault(kind, []).append(e)
    if len(by_type) > 1:
        parts = "; ".join(
            f"{kind} in {len(es)} slice(s) ({_names(es)})" for kind, es in sorted(by_type.items())
        )
        raise DicomError(f"mixed {keyword} in one series: {parts}; the slices' values are not in one unit")


def _has_lut(ds: Dataset) -> bool:
    return "ModalityLUTSequence" in ds and len(ds.ModalityLUTSequence) > 0


def _present(ds: Dataset, keyword: str):
    """The value of ``keyword``, or None when it is absent or empty."""
    value = ds.get(keyword, None)
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return None
    return value


def _names(entries: Sequence[Any]) -> str:
    names = [e.path.name for e in entries[:_SHOWN]]
    return ", ".join(names) + (f", ... ({len(entries)} in all)" if len(entries) > _SHOWN else "")
