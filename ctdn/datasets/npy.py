"""The seed project's .npy layout: ``NDCT_hu.npy`` beside ``LDCT_{10,25,50,70}_hu.npy``."""

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
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"cannot read {path} as a .npy array: {exc}") from exc

    def __len__(self) -> int:
        return self.shape[0]

    def get(self, i: int) -> np.ndarray:
        arr = self.stack[i] if self.stack is not None else self._open(self.files[i])
        if self.stack is None and arr.shape != self.shape[1:]:
            raise InputError(f"{self.files[i]}: shape {arr.shape} differs from {self.shape[1:]}")
        out = np.array(arr, dtype=np.float32)
        if not np.isfinite(out).all():
            where = self.files[i] if self.stack is None else f"{self.path} slice {i}"
            raise InputError(f"{where}: non-finite values (NaN or inf)")
        return out


def _series(folder: Path, name: str) -> Path | None:
    for cand in (folder / f"{name}.npy", folder / name):
        if cand.exists():
            return cand
    return None


class NpyDataset(PairDataset):
    """Pairs from ``NDCT_hu`` and ``LDCT_<percent>_hu`` stacks, in ``root`` or one folder per patient."""

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
            found = False
            for d in dose_list:
                path = _series(folder, f"LDCT_{int(round(d * 100))}_hu")
                if path is None:
                    continue
                ldct = _Slices(path)
                if ldct.shape != ndct.shape:
                    raise InputError(
                        f"{path} has shape {ldct.shape} but {ndct.path} has {ndct.shape}: slices must pair"
                    )
                self._series[(patient, d)] = (ldct, ndct)
                self._items += [(patient, s, d) for s in range(len(ndct))]
                found = True
            if not found:
                names = ", ".join(f"LDCT_{int(round(d * 100))}_hu" for d in dose_list)
                raise InputError(f"{folder} has NDCT_hu but none of {names}")

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        patient, s, d = self._items[i]
        ldct, ndct = self._series[(patient, d)]
        return ldct.get(s), ndct.get(s)
