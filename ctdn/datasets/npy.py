"""The seed project's .npy layout: ``NDCT_hu.npy`` beside ``LDCT_{10,25,50,70}_hu.npy``.

The number in ``LDCT_<percent>_hu`` is the dose in percent of the routine dose. The files sit either
directly in ``root`` (one patient, named after the folder) or in one sub-folder per patient. Each
series is a 3-D stack (N, H, W), a single 2-D slice, or a folder ``NDCT_hu/`` (``LDCT_10_hu/``,
...) of per-slice 2-D ``.npy`` files taken in name order. Stacks are memory-mapped: an item reads
one slice of each file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..sim import check_dose
from .base import PairDataset

__all__ = ["NpyDataset"]


class _Slices:
    """One series: a 3-D stack or 2-D slice (.npy, memory-mapped) or a folder of 2-D .npy files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_dir():
            self.files = sorted(path.glob("*.npy"))
            if not self.files:
                raise InputError(f"{path} holds no .npy slices")
            first = self._open(self.files[0])
            if first.ndim != 2:
                raise InputError(f"{self.files[0]}: per-slice files must be 2-D, got shape {first.shape}")
            self.shape = (len(self.files), *first.shape)
            self.stack = None
        else:
            arr = self._open(path)
            if arr.ndim not in (2, 3):
                raise InputError(f"{path}: expected a 2-D slice or a 3-D stack, got shape {arr.shape}")
            self.stack = arr[None] if arr.ndim == 2 else arr
            self.shape = self.stack.shape

    @staticmethod
    def _open(path: Path) -> np.ndarray:
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"cannot read {path} as a .npy array: {exc}") from exc
        if not isinstance(arr, np.ndarray) or not (
            np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
        ):
            raise InputError(f"{path}: expected a real-valued HU array, got {getattr(arr, 'dtype', arr)!r}")
        return arr

    def __len__(self) -> int:
        return self.shape[0]

    def get(self, i: int) -> np.ndarray:
        arr = self.stack[i] if self.stack is not None else self._open(self.files[i])
        if self.stack is None and arr.shape != self.shape[1:]:
            raise InputError(f"{self.files[i]}: shape {arr.shape} differs from {self.shape[1:]}")
        out = np.array(arr, dtype=np.float32)
        bad = int((~np.isfinite(out)).sum())
        if bad:
            where = self.files[i] if self.stack is None else self.path
            raise InputError(f"{where}, slice {i}: {bad} non-finite value(s) (NaN or inf)")
        return out


def _name(dose: float) -> str:
    return f"LDCT_{int(round(dose * 100))}_hu"


def _series(folder: Path, name: str) -> Path | None:
    for cand in (folder / f"{name}.npy", folder / name):
        if cand.exists():
            return cand
    return None


class NpyDataset(PairDataset):
    """Pairs from ``NDCT_hu`` and ``LDCT_<percent>_hu`` series, in ``root`` or one folder per patient.

    Items enumerate (patient, slice, dose) for each of ``doses`` whose series exists. Shapes are
    checked at construction (every LDCT series must match the NDCT one); non-finite values raise
    :class:`~ctdn.errors.InputError` naming the file and slice when the item is read.
    """

    def __init__(self, root, *, doses=(0.1, 0.25, 0.5, 0.7)) -> None:
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"{root} is not a folder")
        dose_list = [float(d) for d in np.atleast_1d(check_dose(doses, name="doses"))]
        folders = (
            [root]
            if _series(root, "NDCT_hu")
            else sorted(p for p in root.iterdir() if p.is_dir() and _series(p, "NDCT_hu"))
        )
        if not folders:
            raise InputError(f"no NDCT_hu.npy (or NDCT_hu/ folder) in {root} or its sub-folders")
        self._series: dict[tuple[str, float], tuple[_Slices, _Slices]] = {}
        self._items = []
        for folder in folders:
            patient = folder.name
            ndct = _Slices(_series(folder, "NDCT_hu"))
            present = []
            for d in dose_list:
                path = _series(folder, _name(d))
                if path is None:
                    continue
                ldct = _Slices(path)
                if ldct.shape != ndct.shape:
                    raise InputError(
                        f"{ldct.path} has shape {ldct.shape} but {ndct.path} has {ndct.shape}: "
                        "the LDCT and NDCT series of a patient must have the same slices"
                    )
                self._series[(patient, d)] = (ldct, ndct)
                present.append(d)
            if not present:
                names = ", ".join(_name(d) for d in dose_list)
                raise InputError(f"{folder} has NDCT_hu but none of {names} (.npy file or folder)")
            self._items += [(patient, s, d) for s in range(len(ndct)) for d in present]

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        patient, s, d = self._items[i]
        ldct, ndct = self._series[(patient, d)]
        return ldct.get(s), ndct.get(s)
