"""Task-based image quality of the denoisers (AAPM TG-233): noise texture, resolution, detectability.

``python -m ctdn.train.quality --task --model edge --out docs/quality --cache cache`` measures, per
dose and method (the LDCT input, the normal-dose scan, NL-means, TV, BM3D and each model):

- on the QA phantom (:mod:`ctdn.qa_phantom`), scanned like the training data (scanner draws of
  ``SyntheticDataset(vary=True)``: geometry, filter, photon budget, electronic noise, dose jitter)
  with several independent realisations per scanner: the noise magnitude and NPS (``f_peak``,
  ``f_avg`` and their ratio to the normal-dose scan's), the TTF of each rod (``f50``, ``f10``), the
  NPW and NPWE d' of each lesion task, lesion contrast kept and CNR by size and contrast;
- on the quality report's held-out anatomical phantoms (:mod:`ctdn.train.quality`'s test seed):
  PSNR, SSIM and RMSE (in the ``ctdn`` or ``ldct-benchmark`` convention of :mod:`ctdn.metrics`)
  and lesion contrast kept and CNR by size.

The baselines: TV weight and NL-means h are tuned per dose for PSNR on separate tuning slices (as
``ctdn-evaluate`` tunes them, through the same cache). BM3D gets the measured noise power
spectrum: on the QA phantom the NPS of the repeated scans' ensemble noise (realisation minus the
mean of the realisations, which holds no signal), on the anatomical slices the NPS of LDCT minus
reference on the tuning slices of the same anatomy; NL-means gets that noise's std. Nothing is
measured on a test image's truth to set a baseline.

Everything expensive (simulated scans, every denoised stack, model outputs keyed by the model
file's sha256) is cached under ``cache``; a second run only measures (:mod:`ctdn.train.task_measure`).
The tables, plots and panels are written by :mod:`ctdn.train.quality_report`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ctdn import baselines, iq, metrics
from ctdn._atomic import atomic_path
from ctdn._cache import sha256_file
from ctdn._version import __version__
from ctdn.datasets import SyntheticDataset
from ctdn.errors import InputError
from ctdn.qa_phantom import qa_phantom, scanner_kwargs, simulate_qa_doses
from ctdn.sim import Geometry
from ctdn.sim.simulator import dose_key

from . import quality
from .task_measure import SIZE_BINS_MM, measure_anatomical, measure_qa

__all__ = [
    "TaskConfig",
    "DEFAULT",
    "QUICK",
    "run",
    "measure_qa",
    "measure_anatomical",
    "ensemble_nps",
    "tuning_nps",
    "SIZE_BINS_MM",
]

SCANNER_SEED = 233  # the scanner draws of the QA scans (SyntheticDataset(vary=True, seed=233))
QA_SEED = 23300  # noise of scanner s: simulate_qa_doses(seed=QA_SEED + s)
NDCT = 1.0
BASELINES = ("nlmeans", "tv", "bm3d")
_FORMAT = 1  # bump when what the cache files hold changes


@dataclass(frozen=True)
class TaskConfig:
    """Sizes of the task-based report. ``realisations`` are per scanner draw and dose."""

    doses: tuple[float, ...] = quality.DOSES
    scanners: int = 4
    realisations: int = 4
    anatomical: int = 6  # held-out anatomical test slices (the first of quality.TEST_SEED's)
    tune: int = 3
    qa_diameter_mm: float = 300.0
    qa_size: int = 448  # 300 mm cylinder at the body phantoms' 360 / 512 mm pixels, 315 mm field
    qa_pixel_mm: float = 360.0 / 512
    anatomical_size: int = 512
    roi: int = 64
    small_scanner: bool = False  # a sixth of the views and half the channels (tests only)

    def __post_init__(self) -> None:
        for name, low in (("scanners", 1), ("realisations", 2), ("anatomical", 1), ("tune", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise InputError(f"{name} must be an integer >= {low}, got {v!r}")


DEFAULT = TaskConfig()
QUICK = TaskConfig(
    doses=(0.1, 0.5),
    scanners=1,
    realisations=3,
    anatomical=1,
    tune=1,
    qa_diameter_mm=200.0,
    qa_size=128,
    qa_pixel_mm=1.75,
    anatomical_size=128,
    roi=24,
    small_scanner=True,
)


# -- noise spectra ---------------------------------------------------------------------------------
def ensemble_nps(stack: np.ndarray, pixel_size_mm: float, roi: int, mask) -> iq.NPSResult:
    """The NPS of repeated scans of one object: each realisation minus their mean (x sqrt(K/(K-1)))."""
    return iq.nps(iq.noise_from_ensemble(stack), pixel_size_mm, roi=roi, mask=mask)


def _body(target: np.ndarray) -> np.ndarray:
    return np.asarray(target) > -500.0


def _pooled(results: list[iq.NPSResult]) -> iq.NPSResult:
    """One spectrum from several measurements at one pixel size, weighted by their ROI counts."""
    w = np.array([r.n_rois for r in results], dtype=np.float64)
    table = np.tensordot(w / w.sum(), np.stack([r.nps_2d for r in results]), axes=1)
    var = float(np.dot(w / w.sum(), [r.noise_std**2 for r in results]))
    return dataclasses.replace(results[0], nps_2d=table, noise_std=var**0.5, n_rois=int(w.sum()))


def tuning_nps(tune: list[dict], d: float, roi: int) -> dict[str, iq.NPSResult]:
    """Per phantom kind: the NPS of LDCT minus reference over the body (above -500 HU) of the tuning
    slices at dose ``d``: what BM3D is given for the test slices of that kind (:func:`_nps_for`)."""
    by_kind: dict[str, list[iq.NPSResult]] = {}
    for s in tune:
        if d not in s["ldct"]:
            continue
        ph = s["phantom"]
        noise = s["ldct"][d].astype(np.float64) - s["target"]
        by_kind.setdefault(ph.kind, []).append(
            iq.nps(noise, ph.pixel_size_mm, roi=roi, mask=_body(s["target"]))
        )
    if not by_kind:
        raise InputError(f"no tuning slice has dose {d:g}")
    return {k: _pooled(v) for k, v in by_kind.items()}


def _nps_for(table: dict[str, iq.NPSResult], phantom) -> iq.NPSResult:
    """The tuning spectrum of the test slice's kind, else one measured at its pixel size."""
    if phantom.kind in table:
        return table[phantom.kind]
    same = [r for r in table.values() if abs(r.pixel_size_mm[0] - phantom.pixel_size_mm) < 1e-6]
    if not same:
        raise InputError(f"no tuning slice has the pixel size of the {phantom.kind} test slices")
    return _pooled(same)


def _digest(*parts) -> str:
    h = hashlib.sha1()
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p, dtype=np.float32)
            h.update(str(a.shape).encode() + a.tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:12]


# -- the QA scans ----------------------------------------------------------------------------------
def _small(g: Geometry) -> Geometry:
    views = (1152 if g.kind == "fan" else 576) if g.views is None else g.views
    spacing = g.det_spacing_mm or (1.2858 if g.kind == "fan" else 0.7047)
    return dataclasses.replace(
        g, views=max(8, views // 6), detectors=g.detectors // 2, det_spacing_mm=2 * spacing
    )


def scanner_draws(cfg: TaskConfig) -> list[dict]:
    """The QA scans' scanners: slice (s, 0) draws of ``SyntheticDataset(vary=True)``, as training."""
    ds = SyntheticDataset(
        n_patients=cfg.scanners, slices_per_patient=1, doses=cfg.doses, size=64, seed=SCANNER_SEED, vary=True
    )
    out = []
    for s in range(cfg.scanners):
        d = ds.scanner(s, 0)
        if cfg.small_scanner:
            d = {**d, "geometry": _small(d["geometry"])}
        out.append(d)
    return out


def _describe(draw: dict) -> dict:
    g = draw["geometry"]
    return {
        "geometry": dataclasses.asdict(g),
        "kind": g.kind,
        "filter": g.filter,
        "i0": float(draw["i0"]),
        "sigma_e": float(draw["sigma_e"]),
        "doses": {f"{k:g}": float(v) for k, v in draw["doses"].items()},
    }


def _load_npz(path: Path, keys) -> dict | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except (OSError, ValueError, KeyError):
        return None  # unreadable or from another format: simulated again and rewritten


def _save_npz(path: Path, arrays: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def qa_scans(ph, draws: list[dict], cfg: TaskConfig, folder: Path | None) -> list[dict]:
    """Per scanner draw: ``noiseless`` (H, W), ``ndct`` (K, H, W) and ``ldct`` {nominal dose: (K, H, W)}."""
    out = []
    for s, draw in enumerate(draws):
        names = [f"d{d:g}" for d in cfg.doses]
        key = _digest(
            _FORMAT,
            __version__,
            _describe(draw),
            cfg.qa_diameter_mm,
            cfg.qa_size,
            cfg.qa_pixel_mm,
            cfg.realisations,
        )
        f = None if folder is None else folder / f"qa-scan-s{s}-{key}.npz"
        z = None if f is None else _load_npz(f, ["noiseless", "ndct", *names])
        if z is None:
            actual = {d: draw["doses"][d] for d in cfg.doses}
            wanted = {dose_key(v): v for v in [*actual.values(), NDCT]}
            scans = simulate_qa_doses(
                ph,
                sorted(wanted.values()),
                seed=QA_SEED + s,
                realisations=cfg.realisations,
                device="cpu",
                **scanner_kwargs(draw),
            )
            by_key = {dose_key(k): v for k, v in scans.items()}
            z = {"noiseless": by_key[dose_key(NDCT)].noiseless, "ndct": by_key[dose_key(NDCT)].realisations}
            for d, name in zip(cfg.doses, names, strict=True):
                z[name] = by_key[dose_key(actual[d])].realisations
            if f is not None:
                _save_npz(f, z)
        out.append(
            {
                "noiseless": z["noiseless"],
                "ndct": z["ndct"],
                "ldct": {d: z[n] for d, n in zip(cfg.doses, names, strict=True)},
            }
        )
    return out


# -- methods ---------------------------------------------------------------------------------------
Method = Callable[[np.ndarray, float], np.ndarray]  # (K, H, W) HU at a nominal dose -> (K, H, W) HU


def _per_image(fn) -> Method:
    return lambda stack, _d: np.stack([fn(x) for x in stack]).astype(np.float32)


def _model_methods(models, device: str) -> tuple[dict[str, Method], dict[str, str]]:
    """{name: method} and {name: cache tag} of the models: a shipped name or path (the torch backend on
    ``device``; tag = the file's sha256 and the device type), or any callable(stack, dose) (not cached)."""
    from ctdn.inference import Denoiser
    from ctdn.models.checkpoint import model_path

    fns, tags = {}, {}
    for name, spec in (models or {}).items():
        if callable(spec):
            fns[name], tags[name] = spec, ""
            continue
        den = Denoiser(str(spec), backend="torch", device=device)
        fns[name] = lambda stack, d, _den=den: np.asarray(_den(stack, d), dtype=np.float32)
        tags[name] = f"{sha256_file(model_path(spec))[:16]}-{den.device.type}"
    return fns, tags


def _cached_stack(folder: Path | None, name: str, fn, x: np.ndarray) -> np.ndarray:
    if folder is None or not name:
        return np.asarray(fn(), dtype=np.float32)
    f = folder / f"{name}.npy"
    if f.is_file():
        try:
            y = np.load(f, allow_pickle=False)
            if y.shape == x.shape:
                return y
        except (OSError, ValueError):
            pass
    y = np.asarray(fn(), dtype=np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(f) as tmp, open(tmp, "wb") as fh:
        np.save(fh, y)
    return y


# -- the run ---------------------------------------------------------------------------------------
def _anatomical_sets(cfg: TaskConfig, cache: Path | None):
    geometry = None
    if cfg.small_scanner:
        geometry = dataclasses.asdict(_small(Geometry()))
    tag = "" if geometry is None else "task-small-"
    test_ds = quality.synthetic_set(
        quality.TEST_SEED,
        max(cfg.anatomical, 12),
        geometry,
        cache,
        tag + "test",
        doses=cfg.doses,
        size=cfg.anatomical_size,
    )
    tune_ds = quality.synthetic_set(
        quality.TUNE_SEED, cfg.tune, geometry, cache, tag + "tune", doses=cfg.doses, size=cfg.anatomical_size
    )
    test = _first_slices(test_ds, cfg.anatomical)
    return test, quality.synthetic_slices(tune_ds)


def _first_slices(ds: SyntheticDataset, n: int) -> list[dict]:
    """The records of ``quality.synthetic_slices`` for the first ``n`` patients only (the rest of a
    larger cached set is not simulated)."""
    nd = len(ds.doses)
    out = []
    for p in range(n):
        items = [ds[p * nd + k] for k in range(nd)]
        out.append(
            {
                "id": f"{items[0]['patient']}/0",
                "patient": items[0]["patient"],
                "slice": 0,
                "phantom": ds.phantom(p, 0),
                "target": items[0]["ndct"],
                "ldct": {float(it["dose"]): it["ldct"] for it in items},
            }
        )
    return out


def _tuned(tune: list[dict], d: float, folder: Path | None) -> dict:
    from .evaluate import _tune  # the tuning ctdn-evaluate caches (same slices, same grids)

    return _tune(tune, d, True, folder)


def _anatomical_bm3d(x: np.ndarray, rec: dict, d: float, table: dict, folder: Path | None):
    from .evaluate import _baseline

    spec = _nps_for(table, rec["phantom"])
    setting = f"-psd{_digest(spec.nps_2d, list(spec.pixel_size_mm))}"
    return _baseline("bm3d", lambda z: baselines.bm3d(z, nps=spec), x, rec, d, setting, folder)[0]


def _anatomical_images(m: str, recs, d, settings, table, fns, folder, model_tags) -> list[np.ndarray]:
    from .evaluate import _baseline

    out = []
    for rec in recs:
        x = rec["ldct"][d]
        if m == "input":
            y = x
        elif m == "bm3d":
            y = _anatomical_bm3d(x, rec, d, table, folder)
        elif m in ("nlmeans", "tv"):
            fn = quality.baseline_fns(settings)[m]
            y = _baseline(m, fn, x, rec, d, quality.baseline_setting(m, settings), folder)[0]
        else:
            tag = model_tags[m]
            name = f"{rec['id'].replace('/', '_')}-d{d:g}-model-{tag}-{_digest(x)}" if tag else ""
            y = _cached_stack(folder, name, lambda x=x: fns[m](x[None], d)[0], x)
        out.append(np.asarray(y, dtype=np.float32))
    return out


def _qa_outputs(m, scans, d, settings, fns, folder, model_tags, ph, roi) -> list[np.ndarray]:
    """One method's outputs on every scanner draw's realisations at dose ``d``."""
    out = []
    for s, scan in enumerate(scans):
        x = scan["ldct"][d]
        if m == "input":
            out.append(x)
            continue
        if m in ("nlmeans", "bm3d"):  # noise measured on the repeated scans themselves (no truth)
            spec = ensemble_nps(x, ph.pixel_size_mm, roi, ph.body)
        if m == "nlmeans":
            h, sigma = settings["nlmeans_h"], spec.noise_std
            fn, tag = _per_image(lambda z, h=h, sg=sigma: baselines.nlmeans(z, sg, h)), f"h{h}-s{sigma:.3f}"
        elif m == "tv":
            w = settings["tv_weight"]
            fn, tag = _per_image(lambda z, w=w: baselines.tv(z, w)), f"w{w}"
        elif m == "bm3d":
            fn, tag = _per_image(lambda z, sp=spec: baselines.bm3d(z, nps=sp)), f"psd{_digest(spec.nps_2d)}"
        else:
            fn, tag = fns[m], model_tags[m] and f"model-{model_tags[m]}"
        name = f"qa-out-s{s}-d{d:g}-{m}-{tag}-{_digest(x)}" if tag else ""
        out.append(_cached_stack(folder, name, lambda fn=fn, x=x: fn(x, d), x))
    return out


def run(
    models=None,
    *,
    config: TaskConfig = DEFAULT,
    cache=None,
    convention: str = "ctdn",
    baselines=BASELINES,
    device: str = "cpu",
    progress: bool = True,
    keep_images: bool = True,
) -> dict:
    """Measure ``models`` ({name: shipped name, path or callable(stack, dose)}) and ``baselines``.

    Returns the results (JSON-able) and, with ``keep_images``, under ``"_images"`` the arrays the
    panels show (one realisation per method and dose, the noise-free images and the phantoms).
    """
    if convention not in metrics.CONVENTIONS:
        raise InputError(f"convention must be one of {', '.join(metrics.CONVENTIONS)}, got {convention!r}")
    t0, cpu0 = time.perf_counter(), time.process_time()
    cache = None if cache is None else Path(cache)
    folder = None if cache is None else cache / "task-quality"
    base_folder = (
        None if cache is None else cache / "evaluate-baselines" / f"synthetic-s{config.anatomical_size}"
    )
    fns, model_tags = _model_methods(models, device)
    baseline_names = [b for b in BASELINES if b in tuple(baselines)]
    bad = [b for b in baselines if b not in BASELINES]
    if bad:
        raise InputError(f"unknown baseline(s) {bad}; choose from {', '.join(BASELINES)}")
    methods = ["input", "ndct", *baseline_names, *fns]
    ph = qa_phantom(config.qa_diameter_mm, size=config.qa_size, fov_mm=config.qa_size * config.qa_pixel_mm)
    draws = scanner_draws(config)
    stage = {}
    t = time.perf_counter()
    scans = qa_scans(ph, draws, config, folder)
    test, tune = _anatomical_sets(config, cache)
    stage["simulation"] = time.perf_counter() - t
    truths = [s["noiseless"] for s in scans]
    res: dict = {
        "version": __version__,
        "config": dataclasses.asdict(config),
        "convention": convention,
        "methods": methods,
        "models": {n: (str(v) if not callable(v) else "callable") for n, v in (models or {}).items()},
        "qa": {
            "diameter_mm": ph.diameter_mm,
            "pixel_size_mm": ph.pixel_size_mm,
            "shape": list(ph.hu.shape),
            "scanners": [_describe(d) for d in draws],
            "rods_hu": [r.hu for r in ph.ttf_inserts],
        },
        "anatomical": {"test": [r["id"] for r in test], "tune": [r["id"] for r in tune]},
        "tuned": {},
        "doses": {},
        "warnings": [],
    }
    ndct = measure_qa([s["ndct"] for s in scans], truths, ph, config.roi, linear=True)
    images: dict = {"qa_truth": truths[0], "qa": {}, "anatomical": {}, "anat_truth": test[0]["target"]}
    images["qa"]["ndct"] = scans[0]["ndct"][0]
    t_base = t_model = 0.0
    for d in tqdm(config.doses, desc="doses", disable=not progress):
        settings = _tuned(tune, d, base_folder)
        table = tuning_nps(tune, d, config.roi) if "bm3d" in baseline_names else {}
        res["tuned"][f"{d:g}"] = {k: settings[k] for k in ("noise_std_hu", "tv_weight", "nlmeans_h")}
        res["warnings"] += settings.get("warnings", [])
        per: dict = {"ndct": {"qa": ndct, "anatomical": None}}
        images["qa"][d], images["anatomical"][d] = {"ndct": images["qa"]["ndct"]}, {}
        for m in [x for x in methods if x != "ndct"]:
            t = time.perf_counter()
            outs = _qa_outputs(m, scans, d, settings, fns, folder, model_tags, ph, config.roi)
            anat = _anatomical_images(m, test, d, settings, table, fns, base_folder, model_tags)
            if m in fns:
                t_model += time.perf_counter() - t
            else:
                t_base += time.perf_counter() - t
            per[m] = {
                "qa": measure_qa(outs, truths, ph, config.roi, linear=m == "input"),
                "anatomical": measure_anatomical(anat, test, convention),
            }
            images["qa"][d][m] = outs[0][0]
            images["anatomical"][d][m] = anat[0]
        _ratios(per)
        res["doses"][f"{d:g}"] = per
    stage["baselines"], stage["models"] = t_base, t_model
    res["warnings"] = sorted(set(res["warnings"]))
    res["seconds"] = {**stage, "total": time.perf_counter() - t0, "cpu": time.process_time() - cpu0}
    if keep_images:
        images["phantom"], images["anat_phantom"] = ph, test[0]["phantom"]
        res["_images"] = images
    return res


def _ratios(per: dict) -> None:
    """Each method's f_peak, f_avg and noise std relative to the normal-dose scan's."""
    ref = per["ndct"]["qa"]["nps"]
    for row in per.values():
        n = row["qa"]["nps"]
        row["qa"]["f_avg_ratio"] = n["f_avg"] / ref["f_avg"]
        row["qa"]["f_peak_ratio"] = n["f_peak"] / ref["f_peak"]
        row["qa"]["noise_ratio"] = n["noise_std"] / ref["noise_std"]
