"""The study's evaluation report: every model against the LDCT input and the classical baselines.

``ctdn-evaluate --model edge --model mine=runs/x/finetuned.safetensors --out report`` scores, per
dose and per method (the LDCT input, NL-means, TV, BM3D and each model), on held-out slices:

- PSNR, SSIM, RMSE and MSE on the [-1000, 1000] HU window mapped to [0, 1] (the seed's metrics),
  RMSE in HU, PSNR and SSIM on the soft-tissue window (level 40, width 400);
- RMSE in HU per tissue class of the reference (air, lung, fat, soft tissue, bone; ctdn.hu);
- on synthetic phantoms only: the noise std and mean-HU error in the phantom's uniform region and
  the fraction of the small low-contrast lesions' contrast kept;

each as the mean over slices with a 95 % Student-t confidence interval, and writes
``per_slice.csv``, ``summary.csv``, ``summary.md``, ``results.json``, ``psnr_vs_dose.png``,
``panels/dose-XX.png`` and ``index.html`` into the report folder (docs/evaluation.md).

The synthetic test and tuning slices are the quality report's (:mod:`ctdn.train.quality`: seeds
9001 and 9101, which no training run uses), simulated through the same cache. Real data (Mayo,
.npy) is split by patient exactly as ``ctdn-train`` splits it; the test part is scored, the
validation part tunes the baselines.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats
from tqdm.auto import tqdm

from ctdn import metrics
from ctdn._atomic import atomic_path
from ctdn.errors import CTDNError, InputError, MissingDependencyError
from ctdn.hu import HU_MAX, HU_MIN, TISSUE_EDGES, TISSUES, tissue_classes
from ctdn.inference import Denoiser
from ctdn.models.checkpoint import model_path, read_meta
from ctdn.sim import check_dose
from ctdn.sim.simulator import dose_key
from ctdn.viz import panel

from . import quality
from .data import real_dataset

__all__ = [
    "evaluate",
    "score",
    "tissue_rmse",
    "mean_ci",
    "paired_differences",
    "main",
    "BASELINES",
    "METRICS",
]

BASELINES = ("nlmeans", "tv", "bm3d")
LABELS = {"input": "LDCT input", "nlmeans": "NL-means", "tv": "TV", "bm3d": "BM3D"}
RESERVED = {"input", "reference", *BASELINES}
# (key, label, format) in the order of the tables.
METRICS = (
    ("psnr", "PSNR (dB)", ".2f"),
    ("ssim", "SSIM", ".4f"),
    ("rmse", "RMSE", ".5f"),
    ("mse", "MSE", ".3g"),
    ("rmse_hu", "RMSE (HU)", ".2f"),
    ("psnr_soft", "PSNR soft (dB)", ".2f"),
    ("ssim_soft", "SSIM soft", ".4f"),
    ("noise_std", "noise std (HU)", ".2f"),
    ("uniform_dhu", "uniform ΔHU", ".2f"),
    ("lesion_contrast", "lesion contrast kept", ".3f"),
)
PHANTOM_ONLY = ("noise_std", "uniform_dhu", "lesion_contrast")
TISSUE_METRICS = tuple((f"rmse_hu_{name}", name.replace("_", " ")) for name in TISSUES.values())
# Metrics of the paired comparison (method - reference model on the same slices).
PAIRED = ("psnr", "ssim", "rmse_hu", "psnr_soft", "rmse_hu_soft_tissue", "noise_std", "lesion_contrast")
DIFF_HU = 50.0  # |difference| maps are drawn on [0, DIFF_HU] HU
CONFIDENCE = 0.95


# -- metrics --------------------------------------------------------------------------------------
def tissue_rmse(img, ref) -> dict[str, float]:
    """RMSE in HU (both clipped to [-1000, 1000]) per tissue class of the reference; NaN where a
    class has no pixel."""
    img, ref = np.asarray(img, np.float64), np.asarray(ref, np.float64)
    cls = tissue_classes(ref)
    d = np.clip(img, HU_MIN, HU_MAX) - np.clip(ref, HU_MIN, HU_MAX)
    out = {}
    for k, name in TISSUES.items():
        m = cls == k
        out[f"rmse_hu_{name}"] = float(np.sqrt(np.mean(d[m] ** 2))) if m.any() else float("nan")
    return out


def score(img, ref, phantom=None) -> dict[str, float]:
    """Every metric of one slice against its reference; the phantom-only ones need ``phantom``."""
    row = {
        "psnr": metrics.psnr(img, ref),
        "ssim": metrics.ssim(img, ref),
        "rmse": metrics.rmse(img, ref),
        "mse": metrics.mse(img, ref),
        "rmse_hu": metrics.rmse_hu(img, ref),
        "psnr_soft": metrics.psnr(img, ref, metrics.SOFT_TISSUE),
        "ssim_soft": metrics.ssim(img, ref, metrics.SOFT_TISSUE),
    }
    if phantom is not None:
        u = phantom.uniform
        row["noise_std"] = metrics.noise_std(img, ref, u)
        row["uniform_dhu"] = float(np.mean(img[u], dtype=np.float64) - np.mean(ref[u], dtype=np.float64))
        kept = phantom.contrast_kept(img)
        row["lesion_contrast"] = float(np.mean(kept)) if kept else float("nan")
    row.update(tissue_rmse(img, ref))
    return row


def mean_ci(values, confidence: float = CONFIDENCE) -> tuple[int, float, float, float]:
    """(n, mean, low, high) of the finite values: mean +- t_{(1+c)/2, n-1} * s / sqrt(n), with s the
    sample standard deviation (ddof 1). The interval is NaN for fewer than two values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    n = len(v)
    if n == 0:
        return 0, math.nan, math.nan, math.nan
    mean = float(v.mean())
    if n < 2:
        return n, mean, math.nan, math.nan
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return n, mean, mean - half, mean + half


def paired_differences(rows: list[dict], doses, methods, ref: str, keys) -> list[dict]:
    """Per dose, method and metric: the mean and 95 % CI of (method - ``ref``) over the slices both
    scored. Pairing removes the slice-to-slice spread (a head is easier than a thorax for every
    method), which dominates the unpaired intervals."""
    out = []
    for d in doses:
        base = {r["id"]: r for r in rows if r["dose"] == d and r["method"] == ref}
        for m in methods:
            if m == ref:
                continue
            sel = [r for r in rows if r["dose"] == d and r["method"] == m and r["id"] in base]
            for k in keys:
                n, mean, lo, hi = mean_ci([r[k] - base[r["id"]][k] for r in sel])
                out.append(
                    {
                        "dose": d,
                        "method": m,
                        "vs": ref,
                        "metric": k,
                        "n": n,
                        "mean": mean,
                        "ci_lo": lo,
                        "ci_hi": hi,
                    }
                )
    return out


# -- inputs ---------------------------------------------------------------------------------------
def _parse_doses(doses) -> tuple[float, ...]:
    if isinstance(doses, str):
        try:
            doses = [float(x) for x in doses.split(",") if x.strip()]
        except ValueError as exc:
            raise InputError(f"doses must be numbers separated by commas, got {doses!r}") from exc
    try:
        out = tuple(float(d) for d in np.atleast_1d(check_dose(doses, name="doses")))
    except TypeError as exc:
        raise InputError(f"doses must be fractions of the full dose in (0, 1], got {doses!r}") from exc
    if not out:
        raise InputError("doses: at least one dose is needed")
    if len({dose_key(d) for d in out}) != len(out):
        raise InputError(f"doses must be distinct, got {out}")
    return out


def _parse_baselines(b) -> tuple[str, ...]:
    if b is None:
        return BASELINES
    if isinstance(b, str):
        b = [] if b.strip() in ("", "none") else [x.strip() for x in b.split(",")]
    b = tuple(b)
    bad = [x for x in b if x not in BASELINES]
    if bad:
        raise InputError(f"unknown baseline(s) {bad}; choose from {', '.join(BASELINES)} or 'none'")
    if len(set(b)) != len(b):
        raise InputError(f"baselines named twice: {list(b)}")
    try:
        if b:  # the tuning of TV and NL-means runs whichever baselines are asked for
            import skimage.restoration  # noqa: F401
        if "bm3d" in b:
            import bm3d  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f'the {", ".join(b)} baselines need scikit-image and bm3d (pip install "ctdn[test]"), '
            f"or pass --baselines none: {exc}"
        ) from exc
    return b


def model_name(spec) -> str:
    """A model's report name: the ``name`` in its checkpoint metadata, else the file's stem."""
    path = model_path(spec)
    if not path.is_file():
        raise InputError(f"no such model file {path}")
    try:
        name = read_meta(path).get("name")
    except CTDNError:
        name = None
    return str(name) if name else path.stem


def parse_model_specs(specs) -> dict[str, str]:
    """``NAME=PATH`` or a bare path / shipped name (named by :func:`model_name`) -> {name: path}."""
    out: dict[str, str] = {}
    for spec in specs:
        spec = str(spec)
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = model_name(spec), spec
        elif not name or not path:
            raise InputError(f"--model takes NAME=PATH or PATH, got {spec!r}")
        if name in out:
            raise InputError(f"two models are named {name!r}; name them apart with --model NAME=PATH")
        out[name] = path
    return out


def _check_models(models) -> dict[str, Path]:
    if models is None:
        models = {}
    if not isinstance(models, dict):
        models = parse_model_specs(models)
    out = {}
    for name, spec in models.items():
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"model names must be non-empty strings, got {name!r}")
        if name in RESERVED:
            raise InputError(
                f"model name {name!r} is taken by a row of the report ({', '.join(sorted(RESERVED))})"
            )
        path = model_path(spec)
        if not path.is_file():
            raise InputError(f"model {name!r}: no such file {path}")
        out[name] = path
    return out


def _pick(keys: list, n: int) -> list:
    """``n`` of ``keys`` spread evenly (first and last included); all of them for n 0 or n >= len."""
    if n <= 0 or n >= len(keys):
        return list(keys)
    return [keys[k] for k in sorted(set(np.linspace(0, len(keys) - 1, n).round().astype(int)))]


def _real_records(ds, patients: list[str], doses, n: int) -> list[dict]:
    """One record per (patient, slice) of these patients, ``n`` of them spread evenly."""
    where: dict[tuple[str, int], dict[float, int]] = {}
    for i in ds.indices_for(patients):
        p, s, d = ds._items[i]  # (patient, slice, dose): read without loading pixels
        where.setdefault((p, int(s)), {})[float(d)] = i
    out = []
    for p, s in _pick(sorted(where), n):
        rec = {"id": f"{p}/{s}", "patient": p, "slice": s, "phantom": None, "ldct": {}}
        for d, i in sorted(where[(p, s)].items()):
            item = ds[i]
            if not any(dose_key(d) == dose_key(x) for x in doses):
                continue
            rec["ldct"][next(x for x in doses if dose_key(x) == dose_key(d))] = item["ldct"]
            rec["target"] = item["ndct"]
        if rec["ldct"]:
            out.append(rec)
    return out


def load_data(data: str, doses, *, n_test: int, n_tune: int, size: int, seed: int, split, cache):
    """(test records, tune-record loader, description) for ``synthetic``, ``mayo:PATH`` or ``npy:PATH``."""
    if data == "synthetic":
        if n_test < 1:
            raise InputError(f"test_slices must be at least 1 for synthetic data, got {n_test}")
        test = quality.synthetic_slices(
            quality.synthetic_set(quality.TEST_SEED, n_test, cache=cache, tag="test", doses=doses, size=size)
        )

        def tune():
            return quality.synthetic_slices(
                quality.synthetic_set(
                    quality.TUNE_SEED, n_tune, cache=cache, tag="tune", doses=doses, size=size
                )
            )

        desc = {
            "source": "synthetic",
            "phantoms": True,
            "size": size,
            "test_seed": quality.TEST_SEED,
            "tune_seed": quality.TUNE_SEED,
            "key": f"synthetic-s{size}",
        }
        return test, tune, desc
    if str(data).startswith("mayo:") and len(doses) != 1:
        raise InputError(
            f"Mayo data has one low dose per patient: pass it as --doses (e.g. 0.25), got {list(doses)}"
        )
    kind, path, ds, parts = real_dataset(data, doses=doses, mayo_dose=doses[0], split=split, seed=seed)
    if not parts["test"]:
        raise InputError(f"the test split of {path} is empty")
    test = _real_records(ds, parts["test"], doses, n_test)
    if not test:
        raise InputError(
            f"the test split of {path} (patients {parts['test']}) has no slices at doses {doses}"
        )
    for d in doses:
        if not any(d in r["ldct"] for r in test):
            raise InputError(
                f"no test slice of {path} has dose {d:g}; pass the doses the data has with --doses"
            )
    root = str(Path(path).resolve())
    desc = {
        "source": kind,
        "phantoms": False,
        "root": root,
        "split": parts,
        "split_fractions": list(split),
        "split_seed": seed,
        "key": f"{kind}-{hashlib.sha1(root.encode()).hexdigest()[:10]}",
    }
    return test, (lambda: _real_records(ds, parts["val"], doses, n_tune)), desc


# -- baselines ------------------------------------------------------------------------------------
def _digest(*arrays, extra="") -> str:
    h = hashlib.sha1(extra.encode())
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.float32)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:12]


def _robust_noise_std(tune: list[dict], d: float) -> float:
    """Noise std (HU) of real LDCT: 1.4826 x the median absolute deviation of (LDCT - NDCT) over the
    soft-tissue pixels of the reference, mean over the tuning slices. The NDCT's own noise is in it,
    so it overestimates a little (by sqrt(1 + var_ndct / var_ldct))."""
    vals = []
    for s in tune:
        if d not in s["ldct"]:
            continue
        m = tissue_classes(s["target"]) == 3
        if m.sum() < 16:
            m = np.ones_like(m, dtype=bool)
        diff = (s["ldct"][d] - s["target"])[m].astype(np.float64)
        vals.append(1.4826 * float(np.median(np.abs(diff - np.median(diff)))))
    if not vals:
        raise InputError(f"no tuning slice has dose {d:g}")
    return float(np.mean(vals))


def _tune(tune: list[dict], d: float, phantoms: bool, folder: Path | None) -> dict:
    """The tuned baseline settings at dose ``d`` (cached in ``folder`` by the tuning pixels)."""
    tune = [s for s in tune if d in s["ldct"]]
    sigma = quality.uniform_noise_std(tune, d) if phantoms else _robust_noise_std(tune, d)
    key = _digest(
        *[a for s in tune for a in (s["ldct"][d], s["target"])],
        extra=json.dumps([sigma, quality.TV_GRID, quality.NLM_GRID]),
    )
    f = None if folder is None else folder / f"tuned-d{d:g}-{key}.json"
    if f is not None and f.is_file():
        try:
            return json.loads(f.read_text())
        except (OSError, ValueError):
            pass  # recomputed and rewritten below
    settings = quality.tune_baselines(tune, d, sigma)
    if f is not None:
        _write_text(f, json.dumps(settings, indent=2) + "\n")
    return settings


def _baseline(method: str, fn, x: np.ndarray, rec: dict, d: float, setting: str, folder: Path | None):
    """``fn(x)``, read from or written to the cache folder when there is one."""
    if folder is None:
        return fn(x), True
    safe = rec["id"].replace("/", "_").replace("\\", "_")
    f = folder / f"{safe}-d{d:g}-{method}{setting}-{_digest(x)}.npy"
    if f.is_file():
        try:
            y = np.load(f, allow_pickle=False)
            if y.shape == x.shape:
                return y, False
        except (OSError, ValueError):
            pass
    y = np.asarray(fn(x), dtype=np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(f) as tmp:
        np.save(tmp, y)
    return y, True


# -- the report -----------------------------------------------------------------------------------
def evaluate(
    models=None,
    out="report",
    *,
    data: str = "synthetic",
    doses=quality.DOSES,
    test_slices: int = 12,
    tune_slices: int = 3,
    size: int = 512,
    baselines=BASELINES,
    cache=None,
    panels: int = 1,
    seed: int = 0,
    split=(0.8, 0.1, 0.1),
    device="cpu",
    progress: bool = False,
    paired_with=(),
) -> dict:
    """Score ``models`` ({name: path or shipped name}, or a list of specs) and the baselines; write
    the report into ``out`` and return what ``results.json`` holds.

    ``test_slices``: number of test slices (for real data spread evenly over the test patients'
    slices; 0: all of them). ``tune_slices``: slices that tune TV and NL-means per dose (real data:
    from the validation patients). ``seed``/``split``: the patient split of real data (as
    ``ctdn-train``'s ``seed``/``split``). ``cache``: folder for simulated pairs, tuned settings and
    baseline outputs. ``paired_with``: the model(s) every other row is compared with slice by
    slice (a name or a list; default ``()``: the first model; None: no paired comparison).
    """
    t0 = time.perf_counter()
    models = _check_models(models)
    if paired_with is None:
        paired_with = []
    elif isinstance(paired_with, str):
        paired_with = [paired_with]
    else:
        paired_with = list(paired_with) or list(models)[:1]
    for ref in paired_with:
        if ref not in models:
            raise InputError(f"--paired {ref!r} is not one of the models ({', '.join(models) or 'none'})")
    doses = _parse_doses(doses)
    base_methods = _parse_baselines(baselines)
    for what, v, low in (
        ("test_slices", test_slices, 0),
        ("tune_slices", tune_slices, 1),
        ("panels", panels, 0),
    ):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise InputError(f"{what} must be an integer >= {low}, got {v!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    cache = None if cache is None else Path(cache)
    dens = {n: Denoiser(str(p), backend="torch", device=device) for n, p in models.items()}
    test, tune_loader, desc = load_data(
        data,
        doses,
        n_test=int(test_slices),
        n_tune=int(tune_slices),
        size=size,
        seed=seed,
        split=split,
        cache=cache,
    )
    phantoms = desc["phantoms"]
    tune = tune_loader() if base_methods else []
    key = desc.pop("key")
    folder = None if cache is None else cache / "evaluate-baselines" / key
    methods = ["input", *base_methods, *models]
    rows: list[dict] = []
    tuned: dict = {}
    warnings: list[str] = []
    timing: dict[str, list[float]] = {}
    images: dict[float, dict[str, list[np.ndarray]]] = {}  # panel slices per dose and method
    for d in tqdm(doses, desc="doses", disable=not progress):
        settings = None
        if base_methods:
            settings = _tune(tune, d, phantoms, folder)
            tuned[f"{d:g}"] = {k: settings[k] for k in ("noise_std_hu", "tv_weight", "nlmeans_h")}
            warnings += settings.get("warnings", [])
            fns = quality.baseline_fns(settings)
        recs = [r for r in test if d in r["ldct"]]
        images[d] = {m: [] for m in [*methods, "reference"]}
        for k, rec in enumerate(recs):
            x, ref = rec["ldct"][d], rec["target"]
            for m in methods:
                t = time.perf_counter()
                if m == "input":
                    y, fresh = x, False
                elif m in models:
                    y, fresh = dens[m](x, d), True
                else:
                    y, fresh = _baseline(m, fns[m], x, rec, d, quality.baseline_setting(m, settings), folder)
                if fresh:
                    timing.setdefault(m, []).append(time.perf_counter() - t)
                rows.append(
                    {
                        "dose": d,
                        "method": m,
                        "patient": rec["patient"],
                        "slice": rec["slice"],
                        "id": rec["id"],
                        **score(y, ref, rec["phantom"]),
                    }
                )
                if k < panels:
                    images[d][m].append(y)
            if k < panels:
                images[d]["reference"].append(ref)
    keys = [k for k, _, _ in METRICS if phantoms or k not in PHANTOM_ONLY] + [k for k, _ in TISSUE_METRICS]
    summary = []
    for d in doses:
        for m in methods:
            sel = [r for r in rows if r["dose"] == d and r["method"] == m]
            for key in keys:
                n, mean, lo, hi = mean_ci([r[key] for r in sel])
                summary.append(
                    {"dose": d, "method": m, "metric": key, "n": n, "mean": mean, "ci_lo": lo, "ci_hi": hi}
                )
    pkeys = [k for k in PAIRED if k in keys]
    paired = [p for ref in paired_with for p in paired_differences(rows, doses, methods, ref, pkeys)]
    res = {
        "data": desc,
        "doses": list(doses),
        "test_slices": sorted({r["id"] for r in rows}),
        "tune_slices": [s["id"] for s in tune],
        "methods": methods,
        "labels": {m: LABELS.get(m, m) for m in methods},
        "models": {n: str(p) for n, p in models.items()},
        "baselines": list(base_methods),
        "metrics": keys,
        "absent_metrics": [] if phantoms else list(PHANTOM_ONLY),
        "confidence": CONFIDENCE,
        "tuned": tuned,
        "warnings": sorted(set(warnings)),
        "seconds_per_slice": {m: float(np.mean(v)) for m, v in timing.items()},
        "summary": summary,
        "paired_with": paired_with,
        "paired": paired,
    }
    out.mkdir(parents=True, exist_ok=True)
    files = _write_report(out, res, rows, keys, images)
    res["files"] = files
    res["seconds"] = time.perf_counter() - t0
    _write_text(out / "results.json", json.dumps(_jsonable(res), indent=2) + "\n")
    _write_text(out / "summary.md", markdown(res))
    return res


def _jsonable(o):
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    return o


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _write_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})


def _pct(d: float) -> str:
    return f"{d * 100:g}"


def _write_report(out: Path, res: dict, rows: list[dict], keys: list[str], images) -> list[str]:
    _write_csv(out / "per_slice.csv", ["dose", "method", "patient", "slice", "id", *keys], rows)
    _write_csv(
        out / "summary.csv", ["dose", "method", "metric", "n", "mean", "ci_lo", "ci_hi"], res["summary"]
    )
    files = ["per_slice.csv", "summary.csv", "summary.md", "results.json", "psnr_vs_dose.png"]
    if res["paired"]:
        header = ["dose", "method", "vs", "metric", "n", "mean", "ci_lo", "ci_hi"]
        _write_csv(out / "paired.csv", header, res["paired"])
        files.insert(2, "paired.csv")
    psnr_plot(res, out / "psnr_vs_dose.png")
    for d, per in images.items():
        if not per["reference"]:
            continue
        name = f"panels/dose-{_pct(d)}.png"
        _panel(res, per, d, out / name)
        files.append(name)
    files.append("index.html")
    res["files"] = files
    _write_text(out / "index.html", to_html(res))
    return files


def _panel(res: dict, per: dict, d: float, path: Path) -> None:
    methods = res["methods"]
    labels = res["labels"]
    ims, titles, wins = [], [], []
    for k, ref in enumerate(per["reference"]):
        for m in methods:
            ims.append(per[m][k])
            titles.append(f"{labels[m]} ({_pct(d)} %)" if m == "input" else labels[m])
            wins.append(None)
        ims.append(ref)
        titles.append("reference")
        wins.append(None)
        for m in methods:
            ims.append(np.abs(per[m][k] - ref))
            titles.append(f"|{labels[m]} - ref|")
            wins.append((DIFF_HU / 2, DIFF_HU))
        bar = np.broadcast_to(np.linspace(0, DIFF_HU, ref.shape[1], dtype=np.float32), ref.shape)
        ims.append(bar)
        titles.append(f"|diff| scale: 0 to {DIFF_HU:g} HU")
        wins.append((DIFF_HU / 2, DIFF_HU))
    panel(ims, titles, path, level=40, width=400, columns=len(methods) + 1, windows=wins)


# -- the PSNR-vs-dose plot (Pillow only) ----------------------------------------------------------
_COLOURS = [
    (0, 0, 0),
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]


def _nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    span = max(hi - lo, 1e-9)
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def psnr_plot(res: dict, path: Path, metric: str = "psnr") -> Path:
    """Mean PSNR (with its 95 % CI as error bars) against dose, one line per method, as a PNG."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    W, H, left, right, top, bottom = 900, 540, 70, 190, 40, 60
    img = Image.new("RGB", (W, H), "white")
    dr = ImageDraw.Draw(img)
    by = {(r["method"], r["dose"]): r for r in res["summary"] if r["metric"] == metric}
    doses = res["doses"]
    vals = [v for r in by.values() for v in (r["mean"], r["ci_lo"], r["ci_hi"]) if np.isfinite(v)]
    if not vals:
        vals = [0.0, 1.0]
    ylo, yhi = min(vals), max(vals)
    pad = max((yhi - ylo) * 0.08, 0.1)
    ylo, yhi = ylo - pad, yhi + pad
    xlo, xhi = min(doses) * 100, max(doses) * 100
    if xhi - xlo < 1e-9:
        xlo, xhi = xlo - 5, xhi + 5
    xpad = (xhi - xlo) * 0.06
    xlo, xhi = xlo - xpad, xhi + xpad
    pw, ph = W - left - right, H - top - bottom

    def px(x: float) -> float:
        return left + (x - xlo) / (xhi - xlo) * pw

    def py(y: float) -> float:
        return top + (yhi - y) / (yhi - ylo) * ph

    dr.rectangle([left, top, left + pw, top + ph], outline="black")
    for t in _nice_ticks(ylo, yhi):
        y = py(t)
        dr.line([left, y, left + pw, y], fill=(225, 225, 225))
        dr.line([left - 5, y, left, y], fill="black")
        dr.text((left - 8, y), f"{t:g}", fill="black", font=font, anchor="rm")
    for d in doses:
        x = px(d * 100)
        dr.line([x, top + ph, x, top + ph + 5], fill="black")
        dr.text((x, top + ph + 8), f"{d * 100:g}", fill="black", font=font, anchor="mt")
    dr.text((left + pw / 2, H - 18), "dose (% of full dose)", fill="black", font=font, anchor="mm")
    label = "PSNR (dB)" if metric == "psnr" else metric
    dr.text(
        (left, top - 22),
        f"{label} vs dose: mean and {res['confidence']:.0%} CI over slices",
        fill="black",
        font=font,
    )
    n, px0 = len(res["methods"]), px
    for i, m in enumerate(res["methods"]):
        c = _COLOURS[i % len(_COLOURS)]
        square = (i // len(_COLOURS)) % 2 == 1  # colours repeat after 11 methods: squares then
        dodge = (i - (n - 1) / 2) * min(3.0, 40.0 / max(n, 1))  # error bars side by side, not on top

        def px(x: float, _dodge=dodge) -> float:
            return px0(x) + _dodge

        pts = [(px(d * 100), py(by[(m, d)]["mean"])) for d in doses if np.isfinite(by[(m, d)]["mean"])]
        if len(pts) > 1:
            dr.line(pts, fill=c, width=2)
        for d in doses:
            r = by[(m, d)]
            if not np.isfinite(r["mean"]):
                continue
            x, y = px(d * 100), py(r["mean"])
            if np.isfinite(r["ci_lo"]):
                dr.line([x, py(r["ci_lo"]), x, py(r["ci_hi"])], fill=c, width=1)
                for yy in (py(r["ci_lo"]), py(r["ci_hi"])):
                    dr.line([x - 4, yy, x + 4, yy], fill=c)
            (dr.rectangle if square else dr.ellipse)([x - 4, y - 4, x + 4, y + 4], fill=c)
        ly = top + 10 + i * 22
        dr.line([left + pw + 15, ly, left + pw + 40, ly], fill=c, width=3)
        (dr.rectangle if square else dr.ellipse)([left + pw + 24, ly - 4, left + pw + 32, ly + 4], fill=c)
        dr.text((left + pw + 46, ly), res["labels"][m], fill="black", font=font, anchor="lm")
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


# -- tables ---------------------------------------------------------------------------------------
def _cell(r: dict, fmt: str) -> str:
    if r is None or r["n"] == 0:
        return "–"
    s = format(r["mean"], fmt)
    if np.isfinite(r["ci_lo"]):
        s += " ± " + format((r["ci_hi"] - r["ci_lo"]) / 2, fmt if "g" not in fmt else ".2g")
    return s


def _tables(res: dict):
    """Per dose: (title, header, rows) for the main metrics and the per-tissue RMSE."""
    by = {(r["dose"], r["method"], r["metric"]): r for r in res["summary"]}
    main = [(k, lab, f) for k, lab, f in METRICS if k in res["metrics"]]
    for d in res["doses"]:
        yield (
            f"{_pct(d)} % dose",
            ["method", *[lab for _, lab, _ in main]],
            [[res["labels"][m], *[_cell(by.get((d, m, k)), f) for k, _, f in main]] for m in res["methods"]],
        )
        pby = {(r["dose"], r["method"], r["vs"], r["metric"]): r for r in res.get("paired", [])}
        pk = [
            (k, lab, f)
            for k, lab, f in METRICS + (("rmse_hu_soft_tissue", "RMSE soft tissue (HU)", ".2f"),)
            if k in {r["metric"] for r in res.get("paired", [])}
        ]
        for ref in res.get("paired_with", []):
            yield (
                f"{_pct(d)} % dose: paired differences, method - {res['labels'].get(ref, ref)}, same slices",
                ["method", *[f"Δ {lab}" for _, lab, _ in pk]],
                [
                    [res["labels"][m], *[_cell(pby.get((d, m, ref, k)), f) for k, _, f in pk]]
                    for m in res["methods"]
                    if m != ref
                ],
            )
        yield (
            f"{_pct(d)} % dose: RMSE (HU) per tissue class of the reference",
            ["method", *[lab for _, lab in TISSUE_METRICS]],
            [
                [res["labels"][m], *[_cell(by.get((d, m, k)), ".2f") for k, _ in TISSUE_METRICS]]
                for m in res["methods"]
            ],
        )


def _tissue_edges() -> str:
    names = [n.replace("_", " ") for n in TISSUES.values()]
    out = names[0]
    for edge, name in zip(TISSUE_EDGES, names[1:], strict=True):
        out += f" < {edge:g} <= {name}"
    return out


def _description(res: dict) -> list[str]:
    data = res["data"]
    n = len(res["test_slices"])
    if data["source"] == "synthetic":
        src = (
            f"{n} synthetic test slices ({data['size']}x{data['size']}, phantom seed {data['test_seed']}, "
            f"which no training run uses), reference = the noiseless reconstruction"
        )
        tune = f"{len(res['tune_slices'])} other synthetic slices (seed {data['tune_seed']})"
    else:
        src = (
            f"{n} {data['source']} test slices from the test patients {', '.join(data['split']['test'])} "
            f"(patient split {data['split_fractions']}, seed {data['split_seed']}, as ctdn-train), "
            "reference = the normal-dose scan"
        )
        tune = (
            f"{len(res['tune_slices'])} slices of the validation patients {', '.join(data['split']['val'])}"
        )
    lines = [
        src + ".",
        "Mean ± half-width of the 95 % confidence interval over slices (Student t, n - 1 degrees of "
        "freedom); '–' where no slice has the value.",
        "PSNR, SSIM, RMSE, MSE on the [-1000, 1000] HU window mapped to [0, 1] (data range 1); RMSE (HU) "
        "after clipping to that window; 'soft' = the soft-tissue window (level 40, width 400 HU). "
        f"Per-tissue RMSE (HU): pixels classed by the reference's HU ({_tissue_edges()}).",
    ]
    if data["phantoms"]:
        lines.append(
            "Noise std and uniform ΔHU: std and mean of (image - reference) in each phantom's uniform "
            "region; lesion contrast kept: measured / true contrast of the phantom's small low-contrast "
            "lesions, mean per slice."
        )
    else:
        lines.append(
            "Real data has no phantom: the uniform-region noise, uniform ΔHU and lesion-contrast columns "
            "are absent (not estimated)."
        )
    if res["baselines"]:
        lines.append(
            f"TV weight and NL-means h tuned per dose for the best PSNR on {tune}; NL-means and BM3D are "
            "given the noise std of the LDCT"
            + (
                " (in the phantoms' uniform regions)."
                if data["phantoms"]
                else " (1.4826 x MAD of LDCT - NDCT over soft tissue of the tuning slices)."
            )
        )
    if res.get("paired"):
        lines.append(
            "Paired differences: per slice, the method's value minus the reference model's ("
            + ", ".join(f"`{r}`" for r in res["paired_with"])
            + ") on the same slice, then mean ± 95 % CI half-width over slices; an interval that "
            "excludes 0 is a difference beyond the slice-to-slice spread."
        )
    if res["models"]:
        lines.append(
            "Models: "
            + "; ".join(f"`{n}` = {p}" for n, p in res["models"].items())
            + ". Each is told the true dose."
        )
    return lines


def markdown(res: dict) -> str:
    lines = ["# Evaluation report", ""]
    for s in _description(res):
        lines += [s, ""]
    for title, header, body in _tables(res):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        lines.append("")
    if res["tuned"]:
        lines.append(
            "Tuned baseline settings: "
            + "; ".join(
                f"{_pct(float(d))} %: noise {t['noise_std_hu']:.1f} HU, TV weight {t['tv_weight']}, "
                f"NL-means h {t['nlmeans_h']}"
                for d, t in res["tuned"].items()
            )
            + "."
        )
        lines.append("")
    if res["seconds_per_slice"]:
        lines.append(
            "Seconds per slice (computed in this run, not read from the cache): "
            + ", ".join(f"{res['labels'][m]} {s:.3f}" for m, s in res["seconds_per_slice"].items())
            + "."
        )
        lines.append("")
    if "seconds" in res:
        lines += [f"Run time: {res['seconds']:.0f} s.", ""]
    lines += [f"Warning: {w}." for w in res["warnings"]]
    return "\n".join(lines).rstrip() + "\n"


def to_html(res: dict) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>ctdn evaluation report</title>',
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #bbb;"
        "padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%;border:1px solid #ddd}</style></head><body>",
        "<h1>ctdn evaluation report</h1>",
    ]
    parts += [f"<p>{e(s.replace('`', ''))}</p>" for s in _description(res)]
    links = [f for f in res.get("files", []) if not f.endswith(".png") and f != "index.html"]
    parts.append("<p>Files: " + ", ".join(f'<a href="{e(f)}">{e(f)}</a>' for f in links) + "</p>")
    parts.append('<h2>PSNR vs dose</h2><img src="psnr_vs_dose.png" alt="PSNR vs dose">')
    for title, header, body in _tables(res):
        parts.append(
            f"<h2>{e(title)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"
        )
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in body]
        parts.append("</table>")
    panels = [f for f in res.get("files", []) if f.startswith("panels/")]
    if panels:
        parts.append(
            "<h2>Image panels</h2><p>Top: soft-tissue window (level 40, width 400 HU); bottom: |image - "
            f"reference| on 0 to {DIFF_HU:g} HU.</p>"
        )
        for f in panels:
            parts.append(f'<h3>{e(Path(f).stem)}</h3><img src="{e(f)}" alt="{e(f)}">')
    if res["warnings"]:
        parts += [f"<p>Warning: {e(w)}.</p>" for w in res["warnings"]]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# -- command line ---------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: exit 2 with the program's prefix
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None) -> int:
    p = _Parser(
        prog="ctdn-evaluate",
        description="Evaluation report: models against the LDCT input and classical baselines, per dose.",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a model to score: NAME=PATH.safetensors, a bare path or a shipped name (repeatable)",
    )
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--data", default="synthetic", help="synthetic (default), mayo:PATH or npy:PATH")
    p.add_argument("--doses", default=None, help="comma-separated dose fractions (default 0.1,0.25,0.5,0.7)")
    p.add_argument("--test-slices", type=int, default=12, help="test slices (real data: 0 = all)")
    p.add_argument("--tune-slices", type=int, default=3, help="slices that tune TV and NL-means")
    p.add_argument("--size", type=int, default=512, help="synthetic slice size in pixels")
    p.add_argument("--baselines", default="nlmeans,tv,bm3d", help="comma-separated, or 'none'")
    p.add_argument("--cache", help="folder for simulated pairs, tuned settings and baseline outputs")
    p.add_argument("--panels", type=int, default=1, help="slices shown in each dose's image panel")
    p.add_argument("--seed", type=int, default=0, help="patient-split seed for real data (as ctdn-train)")
    p.add_argument("--device", default="cpu", help="device the models run on")
    p.add_argument(
        "--paired",
        action="append",
        default=[],
        metavar="NAME",
        help="model the others are compared with slice by slice (repeatable; default: the first model; "
        "'none': no comparison)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(  # task-based image quality (issue 23): train/task_quality.py, train/quality_report.py
        "--task",
        action="store_true",
        help="also the task-based report (QA phantom NPS, TTF, d', lesion contrast by size; synthetic "
        "phantoms whatever --data) as OUT/task-quality.md and OUT/task-quality/*.png, same models and doses",
    )
    a = p.parse_args(argv)
    try:
        doses = a.doses
        if doses is None:
            doses = (0.25,) if a.data.startswith("mayo:") else quality.DOSES
        res = evaluate(
            parse_model_specs(a.model),
            a.out,
            data=a.data,
            doses=doses,
            test_slices=a.test_slices,
            tune_slices=a.tune_slices,
            size=a.size,
            baselines=a.baselines,
            cache=a.cache,
            panels=a.panels,
            seed=a.seed,
            device=a.device,
            progress=not a.quiet,
            paired_with=None if a.paired == ["none"] else a.paired,
        )
        if a.task:  # task-based image quality (issue 23): synthetic QA phantom and phantom slices
            from dataclasses import replace

            from .quality_report import run_and_write
            from .task_quality import DEFAULT

            run_and_write(
                parse_model_specs(a.model),
                a.out,
                "quality",
                config=replace(DEFAULT, doses=_parse_doses(doses), tune=a.tune_slices),
                cache=a.cache,
                convention="ctdn",
                baselines=res["baselines"],
                device=a.device,
                progress=not a.quiet,
            )
    except CTDNError as exc:
        print(f"ctdn-evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(markdown(res))
    print(f"report written to {Path(a.out) / 'index.html'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
