"""Mayo Clinic / TCIA LDCT-and-Projection-data and AAPM 2016 challenge layouts.

One folder per patient (``L067``, ...), holding a full-dose and a low-dose DICOM series, either as
AAPM folders (``full_1mm``, ``quarter_1mm``, ``full_3mm``, ``quarter_3mm``; ``.IMA`` files) or
TCIA-style nested folders whose names contain "Full Dose" / "Low Dose" (or ``FD`` / ``QD``).
Headers are read once at construction to pair slices by position along the slice normal; pixels
are read lazily, one slice per item, through :func:`ctdn.io.read_dicom`.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pydicom

from ..errors import DicomError, InputError
from ..io import read_dicom
from ..sim import check_dose
from .base import PairDataset

__all__ = ["MayoDataset"]

_FULL = re.compile(r"full|(^|[^a-z])fd([^a-z]|$)", re.I)
_LOW = re.compile(r"quarter|low|(^|[^a-z])qd([^a-z]|$)", re.I)
_SUFFIXES = {".dcm", ".ima", ""}


def _dicom_folders(patient: Path) -> dict[Path, list[Path]]:
    out: dict[Path, list[Path]] = {}
    for f in sorted(patient.rglob("*")):
        if f.is_file() and f.suffix.lower() in _SUFFIXES and not f.name.startswith("."):
            out.setdefault(f.parent, []).append(f)
    return out


def _pick(cands: list[Path], patient: Path, what: str, thickness: str) -> Path:
    if len(cands) > 1:
        thick = [c for c in cands if thickness.lower() in str(c.relative_to(patient)).lower()]
        cands = thick if thick else cands
    if len(cands) != 1:
        found = [str(c.relative_to(patient)) for c in cands]
        raise InputError(
            f"patient {patient.name}: expected one {what} series"
            + (f" of {thickness}" if len(cands) > 1 else "")
            + f", found {found or 'none'}"
        )
    return cands[0]


def _positions(files: list[Path]) -> tuple[np.ndarray, list[Path]]:
    pos, kept = [], []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is named in one error
            raise DicomError(f"{f}: not a readable DICOM file ({exc})") from exc
        iop, ipp = ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient")
        if iop is not None and ipp is not None:
            normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
            pos.append(float(np.dot(normal, np.asarray(ipp, float))))
        elif ds.get("SliceLocation") is not None:
            pos.append(float(ds.SliceLocation))
        else:
            raise DicomError(f"{f}: no ImagePositionPatient or SliceLocation to pair slices by")
        kept.append(f)
    order = np.argsort(pos)
    return np.asarray(pos)[order], [kept[k] for k in order]


class MayoDataset(PairDataset):
    """Full-dose / low-dose pairs per patient, paired by slice position."""

    def __init__(self, root, *, thickness: str = "1mm", dose_fraction: float = 0.25, patients=None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"{root} is not a folder")
        self.dose = float(check_dose(dose_fraction, name="dose_fraction"))
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if patients is not None:
            missing = set(patients) - {p.name for p in folders}
            if missing:
                raise InputError(f"patient(s) {sorted(missing)} not found in {root}")
            folders = [p for p in folders if p.name in set(patients)]
        if not folders:
            raise InputError(f"no patient folders in {root}")
        self._pairs: list[tuple[Path, Path]] = []
        self._items = []
        for patient in folders:
            series = _dicom_folders(patient)
            rel = {f: str(f.relative_to(patient)) for f in series}
            full = [f for f in series if _FULL.search(rel[f]) and not _LOW.search(rel[f])]
            low = [f for f in series if _LOW.search(rel[f])]
            full_dir = _pick(full, patient, "full-dose", thickness)
            low_dir = _pick(low, patient, "low-dose", thickness)
            fpos, ffiles = _positions(series[full_dir])
            lpos, lfiles = _positions(series[low_dir])
            step = float(np.median(np.diff(fpos))) if len(fpos) > 1 else 1.0
            tol = 0.25 * abs(step)
            n = 0
            for k, p in enumerate(fpos):
                j = int(np.argmin(np.abs(lpos - p))) if len(lpos) else -1
                if j >= 0 and abs(lpos[j] - p) <= tol:
                    self._pairs.append((lfiles[j], ffiles[k]))
                    self._items.append((patient.name, n, self.dose))
                    n += 1
            dropped = len(ffiles) + len(lfiles) - 2 * n
            if dropped:
                warnings.warn(
                    f"patient {patient.name}: {dropped} slice(s) without a partner at the same "
                    "position were dropped",
                    stacklevel=2,
                )
            if n == 0:
                raise InputError(f"patient {patient.name}: no full-dose and low-dose slices share a position")

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        low, full = self._pairs[i]
        return read_dicom([low]).hu[0], read_dicom([full]).hu[0]
