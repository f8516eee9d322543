"""The common shape of every dataset: (LDCT, NDCT, dose) pairs with a patient id."""

from __future__ import annotations

import numpy as np
import torch.utils.data

from ..errors import InputError

__all__ = ["PairDataset", "split_by_patient"]


class PairDataset(torch.utils.data.Dataset):
    """Items are dicts: ``ldct``, ``ndct`` (float32 (H, W) HU), ``dose``, ``patient``, ``slice``.

    Subclasses fill ``self._items`` with (patient, slice, dose) and implement ``_load(i)``.
    """

    _items: list[tuple[str, int, float]]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        i %= len(self)
        patient, slice_, dose = self._items[i]
        ldct, ndct = self._load(i)
        return {"ldct": ldct, "ndct": ndct, "dose": float(dose), "patient": patient, "slice": int(slice_)}

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def patients(self) -> list[str]:
        """Sorted patient ids."""
        return sorted({p for p, _, _ in self._items})

    def patient_of(self, i: int) -> str:
        """Patient id of item ``i``."""
        return self._items[i][0]

    def indices_for(self, patients) -> list[int]:
        """Indices of every item of these patients."""
        wanted = set(patients)
        unknown = wanted - set(self.patients)
        if unknown:
            raise InputError(f"unknown patient id(s) {sorted(unknown)}; this dataset has {self.patients}")
        return [i for i, (p, _, _) in enumerate(self._items) if p in wanted]

    def subset(self, patients) -> torch.utils.data.Subset:
        """The items of these patients as a torch ``Subset``."""
        return torch.utils.data.Subset(self, self.indices_for(patients))


def split_by_patient(patients, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> dict[str, list[str]]:
    """Deterministic train/val/test split of patient ids (never of slices).

    Every patient lands in exactly one split; each split gets at least one patient.
    """
    ids = sorted(set(patients.patients if isinstance(patients, PairDataset) else patients))
    try:
        fr = np.asarray(fractions, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"fractions must be three numbers, got {fractions!r}") from exc
    if fr.shape != (3,) or not np.isfinite(fr).all() or (fr <= 0).any() or abs(fr.sum() - 1) > 1e-6:
        raise InputError(f"fractions must be three positive numbers summing to 1, got {fractions!r}")
    if len(ids) < 3:
        raise InputError(f"a train/val/test split needs at least 3 patients, got {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = max(1, int(round(fr[1] * len(ids))))
    n_test = max(1, int(round(fr[2] * len(ids))))
    n_train = len(ids) - n_val - n_test
    if n_train < 1:
        n_train, n_val = 1, len(ids) - 1 - n_test
    shuffled = [ids[k] for k in order]
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train : n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val :]),
    }
