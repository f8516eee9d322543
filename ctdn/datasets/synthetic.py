"""Phantoms + simulator as a dataset for any dose, with an optional on-disk cache.

Patient ``p`` (id ``syn0003-head``) is the phantom kind ``kinds[p % len(kinds)]``, with
``slices_per_patient`` slices, each a phantom seeded from (seed, p, slice). Items enumerate
(patient, slice, dose), in that order. Pixel size is the phantom's (360 mm body / 250 mm head field
of view over ``size`` pixels). Targets:

- ``"ndct"``: the phantom simulated at dose 1 with its own, independent noise (like real data);
- ``"noiseless"``: the noise-free reconstruction (the same blur and sampling as the LDCT);
- ``"phantom"``: the phantom itself.

``vary=True`` draws per slice, deterministically from the seed, what differs between real
scanners and protocols: the geometry (fan or parallel beam, the same sampling at the isocenter;
see :func:`ctdn.sim.Geometry`), the reconstruction filter (any of ``ctdn.sim.FILTERS``: hann,
hamming, cosine, shepp-logan or the sharp ramp, all at full cutoff), the photon budget
I0 x U(0.7, 1.4) and the electronic noise sigma_e ~ U(0, 10) counts. It also jitters the dose as
tube-current modulation and dose reporting do: the LDCT at nominal dose d is simulated at
d x U(0.8, 1.25) (capped at 1) while the item reports d. The NDCT target is simulated at exactly
dose 1 with the slice's I0 and sigma_e. :meth:`SyntheticDataset.scanner` returns a slice's draws.

``fidelity=True`` (or a dict of :class:`ctdn.augment.FidelityConfig` fields) serves
:func:`ctdn.augment.generate_fidelity` slices: inserted lesions (2-15 mm, +-5..40 HU, lung
nodules), per-organ texture, bodies up to 45 cm with shoulders and pelvis, metal in a few (see
docs/data.md). Its items also hold ``lesion_ids`` (uint8 (H, W): 0 none, i the lesion in row
i - 1 of the table), ``lesion_table`` (float64 (MAX_LESIONS, len(LESION_FIELDS)), zero rows
after the last lesion), ``organs`` (uint8 (H, W), ids of ``ctdn.augment.ORGANS``) and
``pixel_size_mm`` (the field of view grows with the body), all of fixed shape so that torch's
default collate batches them; the cache stores them beside the images.

Randomness: the phantom, the scanner draws, the dose jitter and every noise realisation come from
their own ``numpy.random.SeedSequence(seed, spawn_key=(patient, slice, purpose, dose))``, so an item
does not depend on which other doses, patients or items exist or were read before: the same
arguments give bitwise the same item on the same device type (CPU and CUDA streams differ).

Cache: with ``cache_dir``, the first access to a slice simulates all its doses and the target at
once (one forward projection) and stores them in ``p{patient:04d}_s{slice:04d}.npz`` as int16 HU,
rounded and clipped to the int16 range (the DICOM convention; rounding adds uniform error of std
1/sqrt(12) = 0.29 HU, at most 0.5 HU), written atomically (temporary file, then ``os.replace``).
Later accesses read the file (about 0.5 MB per image at 512 x 512). ``meta.json`` records every
setting that changes pixels (every constructor argument except ``cache_dir`` and ``device``, the
ctdn version, the simulator's DEFAULT_I0 and DEFAULT_SIGMA_E and the cache format); opening a
cache made with other settings raises :class:`~ctdn.errors.CacheError` naming the keys that
differ. A corrupt or truncated file is simulated again with a warning. :func:`build_cache` fills a
cache with a progress bar and resumes where an interrupted build stopped. Without ``cache_dir``
every access simulates the needed dose and the target only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .._atomic import atomic_path
from .._version import __version__
from ..augment import FidelityConfig, generate_fidelity
from ..errors import CacheError, InputError, InputTypeError
from ..phantoms import KINDS, Phantom, generate
from ..phantoms import VERSION as PHANTOM_VERSION
from ..sim import DEFAULT_I0, DEFAULT_SIGMA_E, FILTERS, Geometry, Simulator, check_dose
from ..sim.simulator import derive_seed, dose_key, torch_generator
from ._fidelity import MAX_LESIONS, cache_arrays, check_cached, item_extras
from .base import PairDataset

__all__ = ["SyntheticDataset", "build_cache", "TARGETS", "VARY_FILTERS", "MAX_LESIONS"]

TARGETS = ("ndct", "noiseless", "phantom")
VARY_FILTERS = FILTERS
# Bump when the way pixels are made or stored changes without a version change.
CACHE_FORMAT = 2
_PHANTOM, _SCANNER, _JITTER, _LDCT, _NDCT, _BODY, _METAL, _TEXTURE, _LESIONS = range(9)
_FIDELITY_PURPOSES = {"anatomy": _PHANTOM, "body": _BODY, "metal": _METAL, "texture": _TEXTURE}
_FIDELITY_PURPOSES["lesions"] = _LESIONS


def _seed(seed: int, p: int, s: int, purpose: int, extra: int = 0) -> int:
    """A 63-bit seed for one purpose of slice (p, s), independent of every other."""
    return derive_seed(seed, p, s, purpose, extra)


def _as_parallel(g: Geometry) -> Geometry:
    """The parallel-beam counterpart of a fan geometry: the same sampling at the isocenter."""
    if g.kind == "parallel":
        return g
    return dataclasses.replace(
        g,
        kind="parallel",
        views=None if g.views is None else max(8, g.views // 2),  # 180 instead of 360 degrees
        det_spacing_mm=None if g.det_spacing_mm is None else g.aperture_iso_mm,
    )


def _is_int(v, low: int) -> bool:
    return not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, np.integer)) and v >= low


class SyntheticDataset(PairDataset):
    """On-the-fly (LDCT, NDCT) pairs from seeded phantoms and the projection-domain simulator.

    ``geometry`` is a :class:`~ctdn.sim.Geometry`, a dict of its keywords, or None (the default
    clinical geometry). ``device`` runs the simulator ("cpu", "cuda"; None: CUDA when present).
    See the module docstring for ``target``, ``vary``, ``fidelity`` and ``cache_dir``.
    """

    def __init__(
        self,
        *,
        n_patients: int = 8,
        slices_per_patient: int = 4,
        kinds=("abdomen", "thorax", "head"),
        doses=(0.1, 0.25, 0.5, 0.7),
        size: int = 512,
        seed: int = 0,
        target: str = "ndct",
        geometry=None,
        vary: bool = False,
        fidelity=False,
        cache_dir=None,
        device="cpu",
    ) -> None:
        for name, v in (("n_patients", n_patients), ("slices_per_patient", slices_per_patient)):
            if not _is_int(v, 1):
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        if not _is_int(seed, 0):
            raise InputError(f"seed must be a non-negative integer, got {seed!r}")
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        bad = [k for k in kinds if k not in KINDS]
        if not kinds or bad:
            given = bad or "(none given)"
            raise InputError(f"unknown phantom kind(s) {given}; choose from {', '.join(KINDS)}")
        if target not in TARGETS:
            raise InputError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        doses = tuple(float(d) for d in np.atleast_1d(check_dose(doses, name="doses")))
        if len({dose_key(d) for d in doses}) != len(doses):
            raise InputError(f"doses must be distinct, got {doses}")
        if isinstance(geometry, dict):
            geometry = Geometry.from_kwargs(**geometry)
        elif geometry is not None and not isinstance(geometry, Geometry):
            raise InputTypeError(
                f"geometry must be a Geometry, a dict of its keywords or None, got {type(geometry).__name__}"
            )
        if not isinstance(vary, (bool, np.bool_)):
            raise InputTypeError(f"vary must be True or False, got {vary!r}")
        self.fidelity = FidelityConfig.parse(fidelity)
        generate(kinds[0], seed=0, size=size)  # validates size early, with the phantoms' message
        self.n_patients, self.slices_per_patient = int(n_patients), int(slices_per_patient)
        self.kinds, self.doses, self.size, self.seed = kinds, doses, int(size), int(seed)
        self.target, self.geometry, self.vary = target, geometry or Geometry(), bool(vary)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise InputError(f"device must be like 'cpu', 'cuda' or 'cuda:1', got {device!r}") from exc
        self._items = [
            (self.patient_id(p), s, d)
            for p in range(self.n_patients)
            for s in range(self.slices_per_patient)
            for d in self.doses
        ]
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        if self.cache_dir is not None:
            self._open_cache()

    # -- identity -----------------------------------------------------------------------------
    def patient_id(self, p: int) -> str:
        """Id of patient number ``p``: ``syn{p:04d}-{kind}``."""
        return f"syn{p:04d}-{self.kinds[p % len(self.kinds)]}"

    def locate(self, i) -> tuple[int, int, float]:
        """(patient number, slice, nominal dose) of item ``i``."""
        p, rest = divmod(self._index(i), self.slices_per_patient * len(self.doses))
        s, k = divmod(rest, len(self.doses))
        return p, s, self.doses[k]

    def meta(self) -> dict:
        """Every setting that changes the pixels (what a cache must match), JSON-ready."""
        meta = {
            "n_patients": self.n_patients,
            "slices_per_patient": self.slices_per_patient,
            "kinds": list(self.kinds),
            "doses": list(self.doses),
            "size": self.size,
            "seed": self.seed,
            "target": self.target,
            "geometry": dataclasses.asdict(self.geometry),
            "vary": self.vary,
            "fidelity": None if self.fidelity is None else self.fidelity.to_dict(),
            "default_i0": DEFAULT_I0,
            "default_sigma_e": DEFAULT_SIGMA_E,
            "ctdn_version": __version__,
            "cache_format": CACHE_FORMAT,
            "phantom_version": PHANTOM_VERSION,
        }
        return json.loads(json.dumps(meta))  # tuples -> lists, as meta.json stores them

    # -- simulation ---------------------------------------------------------------------------
    def phantom(self, p: int, s: int) -> Phantom:
        """The phantom of slice ``s`` of patient number ``p``."""
        kind = self.kinds[p % len(self.kinds)]
        if self.fidelity is None:
            return generate(kind, seed=_seed(self.seed, p, s, _PHANTOM), size=self.size)
        seeds = {name: _seed(self.seed, p, s, k) for name, k in _FIDELITY_PURPOSES.items()}
        return generate_fidelity(kind, seed=seeds, size=self.size, config=self.fidelity)

    def scanner(self, p: int, s: int) -> dict:
        """The acquisition of slice (p, s): ``geometry``, ``i0``, ``sigma_e`` and ``doses``
        ({nominal dose: simulated dose}); without ``vary`` the defaults and the nominal doses."""
        g, i0, sigma_e = self.geometry, DEFAULT_I0, DEFAULT_SIGMA_E
        actual = {d: d for d in self.doses}
        if self.vary:
            rng = np.random.default_rng(_seed(self.seed, p, s, _SCANNER))
            if rng.random() < 0.5:
                g = _as_parallel(g)
            g = dataclasses.replace(g, filter=VARY_FILTERS[int(rng.integers(len(VARY_FILTERS)))])
            i0 = DEFAULT_I0 * float(rng.uniform(0.7, 1.4))
            sigma_e = float(rng.uniform(0.0, 10.0))
            for d in self.doses:
                jitter = np.random.default_rng(_seed(self.seed, p, s, _JITTER, dose_key(d)))
                actual[d] = min(1.0, d * float(jitter.uniform(0.8, 1.25)))
        return {"geometry": g, "i0": i0, "sigma_e": sigma_e, "doses": actual}

    def _simulate(self, p: int, s: int, doses, ph=None) -> tuple[dict[float, np.ndarray], np.ndarray]:
        """LDCT at each nominal dose in ``doses`` and the target of slice (p, s), from one projection
        (of ``ph``, its phantom, when the caller has it)."""
        ph = self.phantom(p, s) if ph is None else ph
        sc = self.scanner(p, s)
        sim = Simulator(
            sc["geometry"],
            pixel_size_mm=ph.pixel_size_mm,
            i0=sc["i0"],
            sigma_e=sc["sigma_e"],
            device=self.device,
        )
        with torch.no_grad():
            proj = sim.project(ph.hu)[0]
            sinos = []
            for d in doses:
                gen = torch_generator(_seed(self.seed, p, s, _LDCT, dose_key(d)), self.device)
                sinos.append(sim.noisy_sinogram(proj, sc["doses"][d], gen))
            if self.target == "ndct":
                sinos.append(
                    sim.noisy_sinogram(proj, 1.0, torch_generator(_seed(self.seed, p, s, _NDCT), self.device))
                )
            elif self.target == "noiseless":
                sinos.append(proj)
            # One image at a time on the CPU (batched FBP was 1.5x slower there), batches on a GPU.
            step = sim.batch_size
            recon = np.concatenate(
                [
                    sim.reconstruct_hu(torch.stack(sinos[k : k + step]), ph.hu.shape).cpu().numpy()
                    for k in range(0, len(sinos), step)
                ]
            )
        ldct = {d: recon[k] for k, d in enumerate(doses)}
        target = ph.hu.astype(np.float32, copy=True) if self.target == "phantom" else recon[len(doses)]
        return ldct, target

    def __getitem__(self, i) -> dict:
        if self.fidelity is None:
            return super().__getitem__(i)
        i = self._index(i)
        patient, slice_, dose = self._items[i]
        ldct, ndct, extras = self._load_all(i)
        item = {"ldct": ldct, "ndct": ndct, "dose": float(dose), "patient": patient, "slice": int(slice_)}
        return item | extras

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self._load_all(i)[:2]

    def _load_all(self, i: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """(LDCT, target, fidelity extras: {} without fidelity) of item ``i``."""
        p, s, d = self.locate(i)
        if self.cache_dir is None:
            if self.fidelity is None:
                ldct, target = self._simulate(p, s, [d])
                return ldct[d], target, {}
            ph = self.phantom(p, s)
            ldct, target = self._simulate(p, s, [d], ph)
            return ldct[d], target, item_extras(cache_arrays(ph))
        key = f"ldct_{self.doses.index(d)}"
        data = self._read_cached(p, s, [key, "target", *self._extra_keys()])
        if data is None:
            data = self._fill(p, s)
        extras = item_extras(data) if self.fidelity is not None else {}
        return data[key].astype(np.float32), data["target"].astype(np.float32), extras

    # -- cache --------------------------------------------------------------------------------
    def _open_cache(self) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"cannot create the cache folder {self.cache_dir}: {exc}") from exc
        meta_path = self.cache_dir / "meta.json"
        meta = self.meta()
        if meta_path.exists():
            try:
                stored = json.loads(meta_path.read_text())
                if not isinstance(stored, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as exc:
                raise CacheError(
                    f"{meta_path} is unreadable ({exc}); delete the cache folder to rebuild it"
                ) from exc
            diff = sorted(k for k in set(meta) | set(stored) if meta.get(k) != stored.get(k))
            if diff:
                detail = "; ".join(f"{k}: cache {stored.get(k)!r}, now {meta.get(k)!r}" for k in diff)
                raise CacheError(
                    f"the cache {self.cache_dir} was built with other settings ({detail}); "
                    "use another cache_dir or delete this one"
                )
        else:
            with atomic_path(meta_path) as tmp:
                tmp.write_text(json.dumps(meta, indent=2) + "\n")

    def cache_file(self, p: int, s: int) -> Path:
        """Path of the cache file of slice (p, s) (the dataset must have a ``cache_dir``)."""
        return self.cache_dir / f"p{p:04d}_s{s:04d}.npz"

    def _keys(self) -> list[str]:
        return ["target"] + [f"ldct_{k}" for k in range(len(self.doses))] + self._extra_keys()

    def _extra_keys(self) -> list[str]:
        return [] if self.fidelity is None else ["lesion_ids", "lesion_table", "organs", "pixel_size_mm"]

    def _read_cached(self, p: int, s: int, keys=None) -> dict | None:
        """The stored int16 arrays ``keys`` (default all) of slice (p, s), or None if absent or bad."""
        path = self.cache_file(p, s)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                stored = [float(d) for d in z["doses"]]
                if [dose_key(d) for d in stored] != [dose_key(d) for d in self.doses]:
                    raise ValueError(f"it holds doses {stored}, expected {list(self.doses)}")
                data = {k: z[k] for k in (keys or self._keys())}
            check_cached(data, self.size)
            for k, v in data.items():
                if k in self._extra_keys():
                    continue
                if v.shape != (self.size, self.size) or v.dtype != np.int16:
                    raise ValueError(f"{k} is {v.dtype} {v.shape}, expected int16 {(self.size, self.size)}")
            return data
        except Exception as exc:  # noqa: BLE001 - whatever is wrong, the file is simulated again
            warnings.warn(f"cache file {path} is corrupt ({exc}); simulating it again", stacklevel=4)
            return None

    def _fill(self, p: int, s: int) -> dict:
        """Simulate every dose and the target of slice (p, s) and store them; returns the arrays."""
        ph = self.phantom(p, s) if self.fidelity is not None else None
        ldct, target = (
            self._simulate(p, s, self.doses, ph) if ph is not None else self._simulate(p, s, self.doses)
        )
        data = {"target": _to_int16(target)}
        if ph is not None:
            data.update(cache_arrays(ph))
        data.update({f"ldct_{k}": _to_int16(ldct[d]) for k, d in enumerate(self.doses)})
        with atomic_path(self.cache_file(p, s)) as tmp, open(tmp, "wb") as f:
            np.savez(f, doses=np.asarray(self.doses, dtype=np.float64), **data)
        return data


def _to_int16(hu: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(hu), -32768, 32767).astype(np.int16)


# -- build_cache ------------------------------------------------------------------------------
_WORKER_DATASET: SyntheticDataset | None = None


def _init_worker(dataset: SyntheticDataset, threads: int) -> None:
    global _WORKER_DATASET
    _WORKER_DATASET = dataset
    torch.set_num_threads(threads)


def _fill_in_worker(p: int, s: int) -> None:
    _WORKER_DATASET._fill(p, s)


def build_cache(dataset: SyntheticDataset, *, progress: bool = True, workers: int = 0) -> dict:
    """Simulate every slice of ``dataset`` not yet in its cache; returns counts and seconds.

    Slices whose file is present and readable are skipped (so an interrupted build resumes); a
    corrupt one is simulated again with a warning. ``workers > 0`` simulates in that many
    processes (spawned; the CPU cores are shared out among them as torch threads, since
    oversubscribed torch threads slow the CPU projector down several-fold); a script that uses
    them needs the usual ``if __name__ == "__main__":`` guard. Returns
    ``{"simulated": n, "reused": m, "seconds": t}``.
    """
    if not isinstance(dataset, SyntheticDataset) or dataset.cache_dir is None:
        raise InputError("build_cache needs a SyntheticDataset created with cache_dir=...")
    if not _is_int(workers, 0):
        raise InputError(f"workers must be a non-negative integer, got {workers!r}")
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    slices = [(p, s) for p in range(dataset.n_patients) for s in range(dataset.slices_per_patient)]
    todo = [(p, s) for p, s in slices if dataset._read_cached(p, s) is None]
    reused = len(slices) - len(todo)
    bar = tqdm(total=len(slices), initial=reused, desc="simulating pairs", unit="slice", disable=not progress)
    with bar:
        if workers == 0 or len(todo) <= 1:
            for p, s in todo:
                dataset._fill(p, s)
                bar.update(1)
        else:
            import concurrent.futures
            import multiprocessing

            n = min(workers, len(todo))
            threads = max(1, (os.cpu_count() or 1) // n)
            pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=n,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(dataset, threads),
            )
            try:
                futures = [pool.submit(_fill_in_worker, p, s) for p, s in todo]
                for fut in concurrent.futures.as_completed(futures):
                    fut.result()
                    bar.update(1)
            finally:  # on an error or Ctrl-C, drop the queued slices: a later call resumes
                pool.shutdown(wait=True, cancel_futures=True)
    return {"simulated": len(todo), "reused": reused, "seconds": time.perf_counter() - t0}
