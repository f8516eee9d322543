"""The common shape of every dataset: (LDCT, NDCT, dose) pairs with a patient id."""

from __future__ import annotations

import math
import operator

import numpy as np
import torch.utils.data

from ..errors import InputError

__all__ = ["PairDataset", "split_by_patient", "SPLITS"]

SPLITS = ("train", "val", "test")


class PairDataset(torch.utils.data.Dataset):
    """Items are dicts: ``ldct``, ``ndct`` (float32 (H, W) HU), ``dose``, ``patient``, ``slice``.

    ``dose`` is the LDCT's fraction of the routine dose (a float); ``slice`` the index of the slice
    within its patient's series. torch's default collate turns a batch into tensors ``(B, H, W)``,
    a float64 tensor of doses, a list of patient ids and an int64 tensor of slices.

    Subclasses fill ``self._items`` with one (patient, slice, dose) tuple per item and implement
    ``_load(i) -> (ldct, ndct)``.
    """

    _items: list[tuple[str, int, float]]

    def __len__(self) -> int:
        return len(self._items)

    def _index(self, i) -> int:
        try:
            k = operator.index(i)
        except TypeError as exc:
            raise TypeError(f"dataset indices must be integers, got {type(i).__name__}") from exc
        if not -len(self) <= k < len(self):
            raise IndexError(f"index {k} out of range for {len(self)} items")
        return k % len(self)

    def __getitem__(self, i) -> dict:
        i = self._index(i)
        patient, slice_, dose = self._items[i]
        ldct, ndct = self._load(i)
        return {"ldct": ldct, "ndct": ndct, "dose": float(dose), "patient": patient, "slice": int(slice_)}

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def patients(self) -> list[str]:
        """Sorted patient ids."""
        return sorted({p for p, _, _ in self._items})

    def patient_of(self, i) -> str:
        """Patient id of item ``i``."""
        return self._items[self._index(i)][0]

    def indices_for(self, patients) -> list[int]:
        """Indices of every item of these patients (one id or several), in dataset order."""
        wanted = {patients} if isinstance(patients, str) else set(patients)
        unknown = wanted - set(self.patients)
        if unknown:
            raise InputError(f"unknown patient id(s) {sorted(unknown)}; this dataset has {self.patients}")
        return [i for i, (p, _, _) in enumerate(self._items) if p in wanted]

    def subset(self, patients) -> torch.utils.data.Subset:
        """The items of these patients as a torch ``Subset``."""
        return torch.utils.data.Subset(self, self.indices_for(patients))


def split_by_patient(patients, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> dict[str, list[str]]:
    """Deterministic train/val/test split of patient ids (never of slices).

    ``patients`` is a list of ids or a :class:`PairDataset`. The ids are sorted (so their order
    and duplicates do not matter), shuffled with ``seed`` and cut into three parts whose sizes are
    ``fractions * n`` rounded by largest remainder, with at least one patient in each split (taken
    from the largest). Needs at least 3 patients; ``fractions`` must be three positive numbers
    summing to 1. Returns ``{"train": [...], "val": [...], "test": [...]}``, each sorted.
    """
    if isinstance(patients, PairDataset):
        patients = patients.patients
    if isinstance(patients, (str, bytes)):
        raise InputError(f"patients must be a list of patient ids, got the string {patients!r}")
    try:
        ids = sorted(set(patients))
    except TypeError as exc:
        raise InputError(f"patients must be an iterable of comparable ids (e.g. strings): {exc}") from exc
    try:
        fr = np.asarray(fractions, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"fractions must be three numbers (train, val, test), got {fractions!r}") from exc
    if fr.shape != (3,) or not np.isfinite(fr).all() or (fr <= 0).any() or abs(fr.sum() - 1) > 1e-6:
        raise InputError(
            f"fractions must be three positive numbers (train, val, test) summing to 1, got {fractions!r}"
        )
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    n = len(ids)
    if n < 3:
        raise InputError(f"a train/val/test split needs at least 3 patients, got {n}: {ids}")
    counts = _allocate(fr, n)
    order = np.random.default_rng(int(seed)).permutation(n)
    shuffled = [ids[k] for k in order]
    bounds = np.cumsum([0, *counts])
    return {name: sorted(shuffled[bounds[k] : bounds[k + 1]]) for k, name in enumerate(SPLITS)}


def _allocate(fr: np.ndarray, n: int) -> list[int]:
    """Sizes summing to ``n``, proportional to ``fr`` (largest remainder), each at least 1."""
    ideal = fr / fr.sum() * n
    counts = [math.floor(v) for v in ideal]
    # Largest fractional part first; ties go to the earlier split (train, then val).
    for k in sorted(range(3), key=lambda k: (-(ideal[k] - counts[k]), k))[: n - sum(counts)]:
        counts[k] += 1
    for k in range(3):
        if counts[k] == 0:
            donor = max(range(3), key=lambda j: (counts[j], -j))
            counts[donor] -= 1
            counts[k] = 1
    return counts
