"""Training data: pairs from the data layer, held in memory, cut into seeded random patches.

Every batch is a pure function of (seed, stage, step), so a resumed run sees exactly the batches
the uninterrupted run would have seen. Under DDP each process takes its share of that same global
batch (:meth:`PairBank.batch` with ``rank``/``world``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ctdn.datasets import MayoDataset, NpyDataset, SyntheticDataset, split_by_patient
from ctdn.errors import InputError
from ctdn.hu import hu_to_unit

from .recipe import Recipe

__all__ = ["PairBank", "datasets_for", "real_dataset"]

_STAGE_SALT = {"teacher": 11, "student": 23, "finetune": 37}


def _key(d: dict) -> str:
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def datasets_for(r: Recipe, cache: Path | None) -> tuple[object, object, dict]:
    """(train, validation, description) datasets for a recipe; splits by patient."""
    if r.data == "synthetic":
        kw = dict(r.synthetic)
        kw.setdefault("seed", r.seed)
        vkw = dict(r.val_synthetic)
        vkw.setdefault("seed", r.seed + 1000)  # other seeds: other patients than training
        tdir = vdir = None
        if cache is not None:
            tdir = cache / f"train-{_key({**kw, 'doses': list(r.doses)})}"
            vdir = cache / f"val-{_key({**vkw, 'doses': list(r.doses)})}"
        train = SyntheticDataset(doses=r.doses, cache_dir=tdir, **kw)
        val = SyntheticDataset(doses=r.doses, cache_dir=vdir, **vkw)
        desc = {"source": "synthetic", "train": train.meta(), "val": val.meta()}
        return train, val, desc
    kind, path, ds, parts = real_dataset(
        r.data, doses=r.doses, mayo_dose=r.mayo_dose, split=r.split, seed=r.seed
    )
    desc = {"source": kind, "root": str(Path(path).resolve()), "split": parts}
    return ds.subset(parts["train"]), ds.subset(parts["val"]), desc


def real_dataset(data: str, *, doses, mayo_dose: float, split, seed: int):
    """(kind, path, dataset, patient split) of ``mayo:PATH`` or ``npy:PATH``: the split by patient that
    ``ctdn-train`` trains on and ``ctdn-evaluate`` scores the test part of."""
    kind, _, path = str(data).partition(":")
    if kind not in ("mayo", "npy") or not path:
        raise InputError(f"data must be 'synthetic', 'mayo:PATH' or 'npy:PATH', got {data!r}")
    ds = MayoDataset(path, dose_fraction=mayo_dose) if kind == "mayo" else NpyDataset(path, doses=doses)
    return kind, path, ds, split_by_patient(ds.patients, split, seed=seed)


class PairBank:
    """All (LDCT, target, dose) pairs of a dataset in memory (int16 HU) and seeded patch batches."""

    def __init__(self, ds, *, progress: bool = True, what: str = "pairs") -> None:
        if len(ds) == 0:
            raise InputError("the training split is empty: more patients or another split are needed")
        ldct, tgt, dose = [], [], []
        for i in tqdm(range(len(ds)), desc=f"loading {what}", unit="pair", disable=not progress):
            item = ds[i]
            ldct.append(_i16(item["ldct"]))
            tgt.append(_i16(item["ndct"]))
            dose.append(float(item["dose"]))
        shapes = {a.shape for a in ldct}
        if len(shapes) != 1:
            raise InputError(f"training slices must share one size, found {sorted(shapes)}")
        self.ldct, self.target = np.stack(ldct), np.stack(tgt)
        self.dose = np.asarray(dose, np.float32)

    def __len__(self) -> int:
        return len(self.dose)

    @property
    def doses(self) -> list[float]:
        return sorted({round(float(d), 6) for d in self.dose})

    def batch(
        self, seed: int, stage: str, step: int, size: int, patch: int, *, rank: int = 0, world: int = 1
    ) -> dict[str, torch.Tensor]:
        """Batch number ``step``: an epoch-wise permutation of the pairs, random crops and flips/rot90.

        ``size`` is the global batch. With ``world`` > 1 (DDP) process ``rank`` gets the contiguous
        slice ``[rank * size // world, (rank + 1) * size // world)`` of exactly the pairs and crops a
        single process would draw for this step. That is what a ``DistributedSampler`` does with an
        epoch-wise permutation, but the batch stays a pure function of the step, so a resume stays
        exact and N processes train on the same data as one. ``size`` must divide by ``world``.
        """
        if world < 1 or not 0 <= rank < world:
            raise InputError(f"rank {rank} is not one of {world} processes")
        if size % world:
            raise InputError(
                f"the batch ({size}) is global and must divide evenly among the {world} processes"
            )
        n = len(self)
        epoch, pos = divmod(step * size, n)
        perm = np.random.default_rng([seed, _STAGE_SALT[stage], epoch]).permutation(n)
        idx = np.concatenate(
            [perm, np.random.default_rng([seed, _STAGE_SALT[stage], epoch + 1]).permutation(n)]
        )
        idx = idx[pos : pos + size]
        rng = np.random.default_rng([seed, _STAGE_SALT[stage], 7, step])
        h, w = self.ldct.shape[1:]
        if patch > min(h, w):
            raise InputError(f"patch {patch} is larger than the slices ({h}x{w})")
        # Every crop of the global batch is drawn (in order, so the stream matches one process);
        # this process cuts only its own share.
        crops = []
        for i in idx:
            r0, c0 = rng.integers(0, h - patch + 1), rng.integers(0, w - patch + 1)
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            crops.append((i, r0, c0, k, flip))
        share = size // world
        crops = crops[rank * share : (rank + 1) * share]
        xs, ys = [], []
        for i, r0, c0, k, flip in crops:
            for src, dst in ((self.ldct, xs), (self.target, ys)):
                p = src[i, r0 : r0 + patch, c0 : c0 + patch]
                p = np.rot90(p, k)
                dst.append(p[:, ::-1] if flip else p)
        idx = np.asarray([c[0] for c in crops], dtype=np.int64)
        unit = lambda a: torch.from_numpy(hu_to_unit(np.stack(a).astype(np.float32)))[:, None]  # noqa: E731
        return {"ldct": unit(xs), "ndct": unit(ys), "dose": torch.from_numpy(self.dose[idx].copy())}


def _i16(hu) -> np.ndarray:
    a = np.asarray(hu, dtype=np.float32)
    return np.clip(np.rint(a), -32768, 32767).astype(np.int16)
