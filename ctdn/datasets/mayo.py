"""Mayo Clinic / TCIA LDCT-and-Projection-data and AAPM 2016 challenge layouts.

One folder per patient (``L067``, ...), holding a full-dose and a low-dose DICOM series, either as
AAPM folders (``full_1mm``, ``quarter_1mm``, ``full_3mm``, ``quarter_3mm``; ``.IMA`` files) or
TCIA-style nested folders whose names contain "Full Dose" / "Low Dose" (or ``FD`` / ``QD``;
``.dcm`` or ``.IMA`` files, or files without an extension that carry the DICOM preamble).

Finding the series: every folder under the patient that holds DICOM files is a candidate. Its dose
is decided by the innermost folder name that says "full"/"FD" or "quarter"/"low"/"QD"; folders
whose path mentions projections (``proj``) are skipped (the TCIA collection ships raw projections
beside the images). When a patient has several series of one dose, ``thickness`` picks one: by a
``<thickness>mm`` token in the folder names, else by the ``SliceThickness`` header. A lone series
whose name or header says it is another thickness is refused rather than silently used.

Pairing: only headers are read at construction (``stop_before_pixels``); each slice's position is
the projection of ``ImagePositionPatient`` on the slice normal (cross product of
``ImageOrientationPatient``). A full-dose slice pairs with the nearest low-dose slice within a
quarter of the slice spacing; slices without a partner are dropped with a warning that counts
them. Items are the pairs in order of increasing position; ``slice`` counts the pairs. Pixels are
read lazily, one slice per item, through :func:`ctdn.io.read_dicom` (rescale applied: HU).

``dose_fraction`` is the low-dose series' fraction of the routine dose: 0.25 for the AAPM data and
the TCIA abdomen and head cases. In the TCIA collection the chest cases (``C...``) were acquired at
10 %: pass a mapping ``{patient: fraction}`` or open them separately with ``dose_fraction=0.1``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ..errors import DicomError, InputError
from ..io import read_dicom
from ..sim import check_dose
from .base import PairDataset

__all__ = ["MayoDataset"]

_FULL = re.compile(r"full|(^|[^a-z])fd([^a-z]|$)", re.I)
_LOW = re.compile(r"quarter|(^|[^a-z])(low|qd)([^a-z]|$)|low[\s_-]*dose", re.I)
_SKIP = re.compile(r"proj", re.I)
_SUFFIXES = {".dcm", ".ima", ".dicom"}
# Pairing tolerance, as a fraction of the slice spacing.
TOLERANCE = 0.25


def _is_dicom_file(f: Path) -> bool:
    if f.name.startswith(".") or not f.is_file():
        return False
    if f.suffix.lower() in _SUFFIXES:
        return True
    if f.suffix:
        return False
    try:  # no extension: accept Part 10 files (128-byte preamble, then "DICM")
        with open(f, "rb") as fh:
            return fh.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _dicom_folders(patient: Path) -> dict[Path, list[Path]]:
    out: dict[Path, list[Path]] = {}
    for f in sorted(patient.rglob("*")):
        if _is_dicom_file(f):
            out.setdefault(f.parent, []).append(f)
    return out


def _dose_class(rel: Path) -> str | None:
    """Dose class "full", "low" or None, from the innermost folder name that tells."""
    if any(_SKIP.search(part) for part in rel.parts):
        return None
    for part in reversed(rel.parts):
        full, low = bool(_FULL.search(part)), bool(_LOW.search(part))
        if full != low:
            return "full" if full else "low"
    return None


def _parse_thickness(thickness) -> float:
    if isinstance(thickness, (int, float)) and not isinstance(thickness, bool):
        value = float(thickness)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(mm)?\s*", str(thickness), re.I)
        value = float(m.group(1)) if m else float("nan")
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"thickness must be like '1mm', '3mm' or a number of mm, got {thickness!r}")
    return value


def _name_thickness(rel: Path) -> float | None:
    """The slice thickness a folder name states (``1mm``, ``3 mm``, ``1.0mm``), if any."""
    found = re.findall(r"(?<![0-9.])([0-9]*\.?[0-9]+)\s*[-_ ]?mm(?![a-z])", str(rel), re.I)
    return float(found[-1]) if found else None


def _header(f: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(f, stop_before_pixels=True)
    except InvalidDicomError:
        try:  # some exports lack the preamble; accept them if they parse as a dataset
            return pydicom.dcmread(f, stop_before_pixels=True, force=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is named in one error
            raise DicomError(f"{f}: not a readable DICOM file ({exc})") from exc
    except Exception as exc:  # noqa: BLE001
        raise DicomError(f"{f}: not a readable DICOM file ({exc})") from exc


def _header_thickness(files: list[Path]) -> float | None:
    try:
        value = _header(files[0]).get("SliceThickness")
        return float(value) if value not in (None, "") else None
    except (DicomError, TypeError, ValueError):
        return None


def _same(a: float | None, b: float) -> bool:
    return a is not None and abs(a - b) <= 0.05 * b + 1e-3


def _pick(cands: list[Path], series: dict[Path, list[Path]], patient: Path, what: str, mm: float) -> Path:
    def rel(c: Path) -> str:
        return str(c.relative_to(patient))

    if not cands:
        found = [f"{rel(f)} ({len(series[f])} files)" for f in series] or ["no DICOM files"]
        raise InputError(
            f"patient {patient.name}: no {what} series (a folder named like 'full_1mm', "
            f"'quarter_1mm', '... Full Dose ...', '... Low Dose ...', 'FD' or 'QD'); found {found}"
        )
    by_name = {c: _name_thickness(c.relative_to(patient)) for c in cands}
    if len(cands) == 1:
        (c,) = cands
        stated = by_name[c] if by_name[c] is not None else _header_thickness(series[c])
        if stated is not None and not _same(stated, mm):
            raise InputError(
                f"patient {patient.name}: the only {what} series, {rel(c)}, has {stated:g} mm slices, "
                f"not the requested {mm:g} mm: pass thickness='{stated:g}mm'"
            )
        return c
    chosen = [c for c in cands if _same(by_name[c], mm)]
    if len(chosen) != 1:
        chosen = [c for c in cands if _same(_header_thickness(series[c]), mm)]
    if len(chosen) != 1:
        raise InputError(
            f"patient {patient.name}: {len(cands)} {what} series {[rel(c) for c in cands]} and "
            f"{'none' if not chosen else len(chosen)} of them with {mm:g} mm slices (by folder name "
            "or SliceThickness): pass another thickness or remove the extra series"
        )
    return chosen[0]


def _positions(files: list[Path]) -> tuple[np.ndarray, list[Path], float | None]:
    """Positions along the slice normal (sorted), the files in that order, the nominal spacing."""
    pos, uids, nominal = [], set(), None
    for f in files:
        ds = _header(f)
        iop, ipp = ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient")
        if iop is not None and ipp is not None and len(iop) == 6 and len(ipp) == 3:
            normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
            pos.append(float(np.dot(normal, np.asarray(ipp, float))))
        elif ds.get("SliceLocation") not in (None, ""):
            pos.append(float(ds.SliceLocation))
        else:
            raise DicomError(f"{f}: no ImagePositionPatient or SliceLocation to pair slices by")
        uids.add(str(ds.get("SeriesInstanceUID", "")))
        for key in ("SpacingBetweenSlices", "SliceThickness"):
            if nominal is None and ds.get(key) not in (None, ""):
                nominal = abs(float(ds.get(key))) or None
    if len(uids) > 1:
        raise DicomError(
            f"{files[0].parent} holds {len(uids)} DICOM series; keep one series per folder "
            "(ctdn.io.list_series lists them)"
        )
    order = np.argsort(pos, kind="stable")
    return np.asarray(pos)[order], [files[k] for k in order], nominal


def _pair(fpos: np.ndarray, lpos: np.ndarray, tol: float) -> list[tuple[int, int]]:
    """(full index, low index) of nearest-position pairs within ``tol``, each slice used once."""
    pairs, used = [], set()
    for k, p in enumerate(fpos):
        if not len(lpos):
            break
        j = int(np.argmin(np.abs(lpos - p)))
        if abs(lpos[j] - p) <= tol and j not in used:
            used.add(j)
            pairs.append((k, j))
    return pairs


class MayoDataset(PairDataset):
    """Full-dose / low-dose pairs per patient, paired by slice position (see the module docstring).

    ``patients`` restricts the dataset to these patient folders; ``dose_fraction`` is a number or
    a mapping ``{patient: fraction}`` covering every patient opened.
    """

    def __init__(self, root, *, thickness="1mm", dose_fraction=0.25, patients=None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"{root} is not a folder")
        self.thickness_mm = _parse_thickness(thickness)
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if patients is not None:
            wanted = {patients} if isinstance(patients, str) else set(patients)
            missing = wanted - {p.name for p in folders}
            if missing:
                raise InputError(f"patient(s) {sorted(missing)} not found in {root}")
            folders = [p for p in folders if p.name in wanted]
        if not folders:
            raise InputError(f"no patient folders in {root}")
        doses = self._doses(dose_fraction, [p.name for p in folders])
        self._pairs: list[tuple[Path, Path]] = []
        self._items = []
        for patient in folders:
            self._add_patient(patient, doses[patient.name])

    @staticmethod
    def _doses(dose_fraction, names: list[str]) -> dict[str, float]:
        if isinstance(dose_fraction, Mapping):
            missing = [n for n in names if n not in dose_fraction]
            if missing:
                raise InputError(f"dose_fraction has no entry for patient(s) {missing}")
            return {n: float(check_dose(dose_fraction[n], name=f"dose_fraction[{n!r}]")) for n in names}
        d = float(check_dose(dose_fraction, name="dose_fraction"))
        return dict.fromkeys(names, d)

    def _add_patient(self, patient: Path, dose: float) -> None:
        series = _dicom_folders(patient)
        classes = {f: _dose_class(f.relative_to(patient)) for f in series}
        mm = self.thickness_mm
        full_dir = _pick([f for f, c in classes.items() if c == "full"], series, patient, "full-dose", mm)
        low_dir = _pick([f for f, c in classes.items() if c == "low"], series, patient, "low-dose", mm)
        fpos, ffiles, nominal = _positions(series[full_dir])
        lpos, lfiles, _ = _positions(series[low_dir])
        steps = np.diff(fpos)
        steps = steps[steps > 1e-6]
        spacing = float(np.median(steps)) if len(steps) else (nominal or self.thickness_mm)
        tol = TOLERANCE * spacing
        pairs = _pair(fpos, lpos, tol)
        if not pairs:
            raise InputError(
                f"patient {patient.name}: no full-dose slice ({len(ffiles)} in "
                f"{full_dir.relative_to(patient)}, positions {fpos.min():.2f}..{fpos.max():.2f} mm) has a "
                f"low-dose partner ({len(lfiles)} in {low_dir.relative_to(patient)}, positions "
                f"{lpos.min():.2f}..{lpos.max():.2f} mm) within {tol:.3g} mm"
            )
        n_full, n_low = len(ffiles) - len(pairs), len(lfiles) - len(pairs)
        if n_full or n_low:
            warnings.warn(
                f"patient {patient.name}: dropped {n_full + n_low} slice(s) without a partner at the "
                f"same position (within {tol:.3g} mm): {n_full} of {len(ffiles)} full-dose, "
                f"{n_low} of {len(lfiles)} low-dose",
                stacklevel=3,
            )
        for n, (k, j) in enumerate(pairs):
            self._pairs.append((lfiles[j], ffiles[k]))
            self._items.append((patient.name, n, dose))

    def files_of(self, i) -> tuple[Path, Path]:
        """(low-dose file, full-dose file) of item ``i``."""
        return self._pairs[self._index(i)]

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        low, full = self._pairs[i]
        ldct, ndct = read_dicom([low]).hu[0], read_dicom([full]).hu[0]
        if ldct.shape != ndct.shape:
            raise DicomError(f"{low} is {ldct.shape} but its full-dose partner {full} is {ndct.shape}")
        return ldct, ndct
