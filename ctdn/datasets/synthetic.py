"""Phantoms + simulator as a dataset for any dose, with an optional on-disk cache.

Patient ``p`` is a phantom kind (``kinds[p % len(kinds)]``) with ``slices_per_patient`` slices,
each a phantom seeded from (seed, p, slice). Items enumerate (patient, slice, dose). Targets:
``"ndct"`` (the phantom simulated at dose 1 with its own noise, like real data), ``"noiseless"``
(the noise-free reconstruction: same blur as the LDCT, no noise) or ``"phantom"``.

``vary=True`` draws per slice, deterministically, what a real scanner changes: fan or parallel
geometry, the reconstruction filter (hann, shepp-logan, cosine, hamming), I0 x U(0.7, 1.4),
electronic noise U(0, 10) counts, and a dose error: the simulated dose is the nominal dose x
U(0.8, 1.25) (capped at 1) while the item reports the nominal dose.

Cache: with ``cache_dir``, the first access to a slice simulates all its doses and the target at
once (one forward projection) and stores them as int16 HU (rounded; the DICOM convention; the
rounding adds 0.29 HU std) in ``p{patient:04d}_s{slice:04d}.npz``, written atomically. A
``meta.json`` records every setting that changes pixels; opening a cache made with other settings
raises :class:`~ctdn.errors.CacheError` naming them. A corrupt file is re-simulated with a warning.
:func:`build_cache` fills a cache with a progress bar and resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .._atomic import atomic_path
from .._version import __version__
from ..errors import CacheError, InputError
from ..phantoms import KINDS, generate
from ..sim import DEFAULT_I0, DEFAULT_SIGMA_E, Geometry, Simulator, check_dose
from ..sim.simulator import _entropy
from .base import PairDataset

__all__ = ["SyntheticDataset", "build_cache"]

TARGETS = ("ndct", "noiseless", "phantom")
VARY_FILTERS = ("hann", "shepp-logan", "cosine", "hamming")


def _derive(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint32)[0])


def _as_parallel(g: Geometry) -> Geometry:
    """The parallel-beam counterpart of a fan geometry: same sampling at the isocenter."""
    return dataclasses.replace(
        g,
        kind="parallel",
        views=None if g.views is None else max(8, g.views // 2),
        det_spacing_mm=g.aperture_iso_mm if g.det_spacing_mm is not None else None,
    )


class SyntheticDataset(PairDataset):
    """On-the-fly (LDCT, NDCT) pairs from seeded phantoms and the projection-domain simulator."""

    def __init__(
        self,
        *,
        n_patients: int = 8,
        slices_per_patient: int = 4,
        kinds=KINDS,
        doses=(0.1, 0.25, 0.5, 0.7),
        size: int = 512,
        seed: int = 0,
        target: str = "ndct",
        geometry=None,
        vary: bool = False,
        cache_dir=None,
        device="cpu",
    ) -> None:
        for name, v in (("n_patients", n_patients), ("slices_per_patient", slices_per_patient)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        kinds = tuple(kinds)
        bad = [k for k in kinds if k not in KINDS]
        if not kinds or bad:
            raise InputError(f"unknown phantom kind(s) {bad}; choose from {', '.join(KINDS)}")
        if target not in TARGETS:
            raise InputError(f"target must be one of {TARGETS}, got {target!r}")
        self.doses = tuple(float(d) for d in np.atleast_1d(check_dose(doses, name="doses")))
        if isinstance(geometry, dict):
            geometry = Geometry.from_kwargs(**geometry)
        self.geometry = geometry or Geometry()
        self.kinds, self.size, self.seed = kinds, size, _entropy(seed)
        self.n_patients, self.slices_per_patient = n_patients, slices_per_patient
        self.target, self.vary, self.device = target, bool(vary), device
        generate(kinds[0], seed=0, size=size)  # validates size early, with the phantoms' message
        self._items = [
            (self._patient_id(p), s, d)
            for p in range(n_patients)
            for s in range(slices_per_patient)
            for d in self.doses
        ]
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        if self.cache_dir is not None:
            self._open_cache()

    # -- identity -----------------------------------------------------------------------------
    def _patient_id(self, p: int) -> str:
        return f"syn{p:04d}-{self.kinds[p % len(self.kinds)]}"

    def meta(self) -> dict:
        """Every setting that changes the pixels (what a cache must match)."""
        return {
            "n_patients": self.n_patients,
            "slices_per_patient": self.slices_per_patient,
            "kinds": list(self.kinds),
            "doses": list(self.doses),
            "size": self.size,
            "seed": self.seed,
            "target": self.target,
            "geometry": dataclasses.asdict(self.geometry),
            "vary": self.vary,
            "default_i0": DEFAULT_I0,
            "default_sigma_e": DEFAULT_SIGMA_E,
            "ctdn_version": __version__,
        }

    # -- simulation ---------------------------------------------------------------------------
    def _settings(self, p: int, s: int) -> tuple[Simulator, dict[float, float]]:
        """The simulator for slice (p, s) and the simulated dose for each nominal dose."""
        g, i0, sigma_e = self.geometry, DEFAULT_I0, DEFAULT_SIGMA_E
        actual = {d: d for d in self.doses}
        if self.vary:
            rng = np.random.default_rng([self.seed, p, s, 1])
            if rng.random() < 0.5:
                g = _as_parallel(g)
            g = dataclasses.replace(g, filter=VARY_FILTERS[int(rng.integers(len(VARY_FILTERS)))])
            i0 = DEFAULT_I0 * float(rng.uniform(0.7, 1.4))
            sigma_e = float(rng.uniform(0.0, 10.0))
            actual = {d: min(1.0, d * float(rng.uniform(0.8, 1.25))) for d in self.doses}
        return Simulator(g, i0=i0, sigma_e=sigma_e, device=self.device), actual

    def _slice(self, p: int, s: int, doses) -> tuple[dict[float, np.ndarray], np.ndarray]:
        """LDCT at each nominal dose in ``doses`` and the target, for slice (p, s)."""
        ph = generate(self.kinds[p % len(self.kinds)], seed=_derive(self.seed, p, s), size=self.size)
        sim, actual = self._settings(p, s)
        sim.pixel_size_mm = ph.pixel_size_mm
        proj = sim.project(ph.hu)
        shape = ph.hu.shape
        noise_seed = _derive(self.seed, p, s, 2)
        ldct = {d: sim._recon_noisy(proj, [actual[d]], 0, noise_seed, shape)[0] for d in doses}
        if self.target == "ndct":
            target = sim._recon_noisy(proj, [1.0], 0, _derive(self.seed, p, s, 3), shape)[0]
        elif self.target == "noiseless":
            target = sim.reconstruct_hu(proj, shape)[0].cpu().numpy()
        else:
            target = ph.hu
        return ldct, target

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        per_patient = self.slices_per_patient * len(self.doses)
        p, rest = divmod(i, per_patient)
        s = rest // len(self.doses)
        d = self._items[i][2]
        if self.cache_dir is None:
            ldct, target = self._slice(p, s, [d])
            return ldct[d], target
        data = self._cached(p, s)
        return data[f"ldct_{self.doses.index(d)}"].astype(np.float32), data["target"].astype(np.float32)

    # -- cache --------------------------------------------------------------------------------
    def _open_cache(self) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        meta_path = self.cache_dir / "meta.json"
        meta = json.loads(json.dumps(self.meta()))  # normalise tuples/floats as JSON stores them
        if meta_path.exists():
            try:
                stored = json.loads(meta_path.read_text())
            except (OSError, ValueError) as exc:
                raise CacheError(f"{meta_path} is unreadable ({exc}); delete the cache folder") from exc
            diff = sorted(k for k in set(meta) | set(stored) if meta.get(k) != stored.get(k))
            if diff:
                detail = "; ".join(f"{k}: cache {stored.get(k)!r} vs now {meta.get(k)!r}" for k in diff)
                raise CacheError(f"cache {self.cache_dir} was built with other settings ({detail})")
        else:
            with atomic_path(meta_path) as tmp:
                tmp.write_text(json.dumps(meta, indent=2))

    def _cache_file(self, p: int, s: int) -> Path:
        return self.cache_dir / f"p{p:04d}_s{s:04d}.npz"

    def _read_cached(self, p: int, s: int) -> dict | None:
        path = self._cache_file(p, s)
        if not path.exists():
            return None
        keys = ["target"] + [f"ldct_{k}" for k in range(len(self.doses))]
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in keys}
            if any(v.shape != (self.size, self.size) or v.dtype != np.int16 for v in data.values()):
                raise ValueError("unexpected array shape or dtype")
            return data
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            warnings.warn(f"cache file {path} is corrupt ({exc}); simulating it again", stacklevel=3)
            return None

    def _cached(self, p: int, s: int) -> dict:
        data = self._read_cached(p, s)
        if data is None:
            data = self._fill(p, s)
        return data

    def _fill(self, p: int, s: int) -> dict:
        ldct, target = self._slice(p, s, self.doses)
        data = {"target": _to_int16(target)}
        data.update({f"ldct_{k}": _to_int16(ldct[d]) for k, d in enumerate(self.doses)})
        with atomic_path(self._cache_file(p, s)) as tmp, open(tmp, "wb") as f:
            np.savez(f, **data)
        return data


def _to_int16(hu: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(hu), -32768, 32767).astype(np.int16)


def build_cache(dataset: SyntheticDataset, *, progress: bool = True) -> dict:
    """Simulate every slice not yet cached (resumable); returns counts and seconds."""
    if getattr(dataset, "cache_dir", None) is None:
        raise InputError("build_cache needs a SyntheticDataset created with cache_dir=...")
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    simulated = reused = 0
    slices = [(p, s) for p in range(dataset.n_patients) for s in range(dataset.slices_per_patient)]
    for p, s in tqdm(slices, desc="simulating pairs", unit="slice", disable=not progress):
        if dataset._read_cached(p, s) is not None:
            reused += 1
        else:
            dataset._fill(p, s)
            simulated += 1
    return {"simulated": simulated, "reused": reused, "seconds": time.perf_counter() - t0}
