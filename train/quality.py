"""The shipped model's quality study: held-out synthetic slices, classical baselines, generalisation.

``python -m ctdn.train.quality --model edge --out docs/quality`` writes ``edge.json`` and ``edge.md``:

- per dose, on a test set made with seeds no training run uses: PSNR/SSIM/RMSE on [-1000, 1000]
  against the noiseless phantom, low-contrast lesion contrast kept (measured / true) and the mean-HU
  error of uniform regions, for the LDCT input, NL-means and TV (strength tuned per dose on
  separate tuning slices), BM3D (given the true noise std) and the model;
- generalisation: the model on parallel-beam pairs, ramp-filter pairs, and with the dose it is told
  off by a factor of 1.5 either way.

With ``--task`` it writes the task-based report instead (``task-NAME.md``, ``.json`` and PNGs: noise
texture, TTF, d', lesion contrast by size on the QA phantom and the anatomical slices;
:mod:`ctdn.train.task_quality`, :mod:`ctdn.train.quality_report`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ctdn import baselines, metrics
from ctdn._atomic import atomic_path
from ctdn.datasets import SyntheticDataset
from ctdn.inference import Denoiser

DOSES = (0.1, 0.25, 0.5, 0.7)
TEST_SEED, TUNE_SEED = 9001, 9101
# Grids wide enough that every tuned value lands inside (checked in the report).
TV_GRID = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.006, 0.008, 0.012)
NLM_GRID = (0.6, 0.8, 1.0, 1.2, 1.5, 1.8, 2.2, 2.7)


def synthetic_set(
    seed: int,
    n: int,
    geometry=None,
    cache: Path | None = None,
    tag: str = "",
    *,
    doses=DOSES,
    size: int = 512,
) -> SyntheticDataset:
    """The held-out synthetic slices of seed ``seed`` (one slice per patient, noiseless target).

    Shared with ``ctdn-evaluate``; the cache folder is ``quality-{tag}-{seed}-{n}`` (plus the size and
    doses where they are not the defaults), so both reuse one set of simulated pairs.
    """
    doses = tuple(float(d) for d in doses)
    suffix = ("" if size == 512 else f"-s{size}") + (
        "" if doses == DOSES else "-d" + "-".join(f"{d:g}" for d in doses)
    )
    return SyntheticDataset(
        n_patients=n,
        slices_per_patient=1,
        doses=doses,
        size=size,
        seed=seed,
        target="noiseless",
        geometry=geometry,
        cache_dir=None if cache is None else Path(cache) / f"quality-{tag}-{seed}-{n}{suffix}",
    )


def synthetic_slices(ds: SyntheticDataset) -> list[dict]:
    """One record per slice: ``id``, ``patient``, ``slice``, the ``phantom``, the ``target`` and the
    LDCT at every dose (``ldct``: {dose: image})."""
    out = []
    nd = len(ds.doses)
    for i in range(0, len(ds), nd):
        items = [ds[i + k] for k in range(nd)]
        p, s, _ = ds.locate(i)
        out.append(
            {
                "id": f"{items[0]['patient']}/{s}",
                "patient": items[0]["patient"],
                "slice": s,
                "phantom": ds.phantom(p, s),
                "target": items[0]["ndct"],
                "ldct": {float(it["dose"]): it["ldct"] for it in items},
            }
        )
    return out


def _score(img: np.ndarray, s: dict) -> dict:
    ph, ref = s["phantom"], s["target"]
    return {
        "psnr": metrics.psnr(img, ref),
        "ssim": metrics.ssim(img, ref),
        "rmse_hu": metrics.rmse_hu(img, ref),
        "lesion": ph.contrast_kept(img),
        "uniform_dhu": float(img[ph.uniform].mean() - ref[ph.uniform].mean()),
    }


def _summary(rows: list[dict]) -> dict:
    les = [v for r in rows for v in r["lesion"]]
    return {
        "psnr": float(np.mean([r["psnr"] for r in rows])),
        "ssim": float(np.mean([r["ssim"] for r in rows])),
        "rmse_hu": float(np.mean([r["rmse_hu"] for r in rows])),
        "lesion_contrast": float(np.mean(les)) if les else float("nan"),
        "lesion_contrast_min": float(np.min(les)) if les else float("nan"),
        "uniform_abs_dhu": float(np.mean([abs(r["uniform_dhu"]) for r in rows])),
        "uniform_max_abs_dhu": float(np.max([abs(r["uniform_dhu"]) for r in rows])),
        "slices": len(rows),
        "lesions": len(les),
    }


def uniform_noise_std(slices: list[dict], d: float) -> float:
    """Mean over slices of the LDCT noise std in the uniform region (what NL-means and BM3D are given)."""
    return float(
        np.mean([metrics.noise_std(s["ldct"][d], s["target"], s["phantom"].uniform) for s in slices])
    )


def tune_baselines(tune: list[dict], d: float, sigma: float) -> dict:
    """TV weight and NL-means h maximising the mean PSNR over the tuning slices at dose ``d``.

    ``tune``: records with ``ldct`` ({dose: image}) and ``target``; ``sigma``: the noise std (HU)
    NL-means and BM3D are given. Returns ``noise_std_hu``, ``tv_weight``, ``nlmeans_h`` and
    ``warnings`` (a value tuned to the edge of its grid).
    """
    pairs = [(s["ldct"][d], s["target"]) for s in tune]
    w_tv, _ = baselines.tune(baselines.tv, TV_GRID, pairs, metrics.psnr)
    h_nlm, _ = baselines.tune(
        lambda x, h, sg=sigma: baselines.nlmeans(x, sg, h), NLM_GRID, pairs, metrics.psnr
    )
    warnings = [
        f"{what} tuned to the edge of its grid at dose {d}: {v}"
        for what, v, grid in (("TV weight", w_tv, TV_GRID), ("NL-means h", h_nlm, NLM_GRID))
        if v in (grid[0], grid[-1])
    ]
    return {"noise_std_hu": float(sigma), "tv_weight": w_tv, "nlmeans_h": h_nlm, "warnings": warnings}


def baseline_fns(settings: dict) -> dict:
    """The LDCT input and the classical baselines as functions HU -> HU, with tuned ``settings``."""
    sigma, h, w = settings["noise_std_hu"], settings["nlmeans_h"], settings["tv_weight"]
    return {
        "input": lambda x: x,
        "nlmeans": lambda x: baselines.nlmeans(x, sigma, h),
        "tv": lambda x: baselines.tv(x, w),
        "bm3d": lambda x: baselines.bm3d(x, sigma),
    }


def baseline_setting(method: str, settings: dict) -> str:
    """The part of a cache key that names a baseline's setting (empty for the input)."""
    return {
        "input": "",
        "nlmeans": f"-h{settings['nlmeans_h']}",
        "tv": f"-w{settings['tv_weight']}",
        "bm3d": f"-s{settings['noise_std_hu']:.4f}",
    }[method]


def run(
    model="edge",
    out="docs/quality",
    n_test: int = 12,
    n_tune: int = 3,
    cache=None,
    bm3d: bool = True,
    progress: bool = True,
    label: str | None = None,
) -> dict:
    cache = None if cache is None else Path(cache)
    t0 = time.perf_counter()
    den = None if model is None else Denoiser(model, backend="torch", device="cpu")
    name = "baselines" if den is None else label or getattr(den.model, "meta", {}).get("name", str(model))
    out = Path(out)
    base_file = out / "baselines.json"
    base = json.loads(base_file.read_text()) if base_file.exists() else {}
    test = synthetic_slices(synthetic_set(TEST_SEED, n_test, cache=cache, tag="test"))
    tune = synthetic_slices(synthetic_set(TUNE_SEED, n_tune, cache=cache, tag="tune"))
    res: dict = {
        "model": str(model),
        "name": name,
        "test_seed": TEST_SEED,
        "tune_seed": TUNE_SEED,
        "n_test": n_test,
        "n_tune": n_tune,
        "doses": {},
        "generalisation": {},
        "tuned": {},
    }
    methods = ["input", "nlmeans", "tv"] + (["bm3d"] if bm3d else []) + ["model"]
    res["bm3d"] = bm3d
    res["warnings"] = []
    for d in tqdm(DOSES, desc="doses", disable=not progress):
        sigma = uniform_noise_std(tune, d)
        settings = tune_baselines(tune, d, sigma)
        res["tuned"][str(d)] = {k: settings[k] for k in ("noise_std_hu", "tv_weight", "nlmeans_h")}
        res.setdefault("warnings", []).extend(settings["warnings"])
        fns = baseline_fns(settings)
        # The baselines do not depend on the model: each (dose, method, setting) is computed once
        # and kept in out/baselines.json.
        setting = {m: baseline_setting(m, settings) for m in fns}
        res["doses"][str(d)] = {}
        for m in methods[:-1]:
            key = f"{TEST_SEED}-{n_test}-{TUNE_SEED}-{n_tune}-{d}-{m}{setting[m]}"
            if key not in base:
                base[key] = _summary([_score(fns[m](s["ldct"][d]), s) for s in test])
                _write_json(base_file, base)
            res["doses"][str(d)][m] = base[key]
        if den is None:
            continue
        y = den(np.stack([s["ldct"][d] for s in test]), d)
        res["doses"][str(d)]["model"] = _summary([_score(y[k], s) for k, s in enumerate(test)])
    if den is None:
        return res
    # Generalisation: other geometry, other filter, the dose it is told off by 1.5x.
    gens = {
        "parallel beam": synthetic_slices(
            synthetic_set(TEST_SEED, n_test // 2, {"kind": "parallel"}, cache, "parallel")
        ),
        "ramp filter": synthetic_slices(
            synthetic_set(TEST_SEED, n_test // 2, {"filter": "ramp"}, cache, "ramp")
        ),
    }
    for label, sl in gens.items():
        res["generalisation"][label] = {}
        for d in DOSES:
            vol = np.stack([s["ldct"][d] for s in sl])
            y = den(vol, d)
            res["generalisation"][label][str(d)] = {
                "input": _summary([_score(s["ldct"][d], s) for s in sl]),
                "model": _summary([_score(y[k], s) for k, s in enumerate(sl)]),
            }
    for label, f in (("dose told x1.5", 1.5), ("dose told /1.5", 1 / 1.5)):
        res["generalisation"][label] = {}
        for d in DOSES:
            vol = np.stack([s["ldct"][d] for s in test])
            y = den(vol, min(1.0, d * f))
            res["generalisation"][label][str(d)] = {
                "input": res["doses"][str(d)]["input"],
                "model": _summary([_score(y[k], s) for k, s in enumerate(test)]),
            }
    if not res["warnings"]:
        del res["warnings"]
    res["seconds"] = time.perf_counter() - t0
    _write_json(out / f"{name}.json", res)
    with atomic_path(out / f"{name}.md") as tmp:
        tmp.write_text(markdown(res))
    return res


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def markdown(res: dict) -> str:
    lines = [
        f"# Quality of the `{res['name']}` model on held-out synthetic slices",
        "",
        f"{res['n_test']} test slices (phantom seed {res['test_seed']}, fan beam, hann filter; "
        f"no training run uses this seed), reference = the noiseless phantom reconstruction. "
        "PSNR/SSIM/RMSE on the [-1000, 1000] HU window (PSNR and SSIM on [0, 1], data range 1). "
        "Lesion contrast: measured / true contrast of the phantoms' small low-contrast lesions, mean "
        "(and worst lesion). Uniform: |mean HU error| in the uniform region, mean (and worst slice). "
        f"TV weight and NL-means h tuned per dose on {res['n_tune']} other slices (seed {res['tune_seed']}); "
        "NL-means and BM3D are given the true noise std.",
        "",
        "| dose | method | PSNR (dB) | SSIM | RMSE (HU) | lesion contrast kept | uniform ΔHU |",
        "|---|---|---|---|---|---|---|",
    ]
    label = {
        "input": "LDCT input",
        "nlmeans": "NL-means",
        "tv": "TV",
        "bm3d": "BM3D",
        "model": f"ctdn `{res['name']}`",
    }
    for d, rows in res["doses"].items():
        for m, s in rows.items():
            lines.append(
                f"| {float(d):.0%} | {label[m]} | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['rmse_hu']:.1f} | "
                f"{s['lesion_contrast']:.3f} ({s['lesion_contrast_min']:.2f}) | "
                f"{s['uniform_abs_dhu']:.1f} ({s['uniform_max_abs_dhu']:.1f}) |"
            )
    lines += ["", "Acceptance checks (computed from the table above):", ""]
    for d, rows in res["doses"].items():
        if "model" not in rows:
            continue
        m = rows["model"]
        beats = [k for k in rows if k not in ("input", "model")]
        lost = [label[k] for k in beats if not (m["psnr"] > rows[k]["psnr"] and m["ssim"] > rows[k]["ssim"])]
        checks = [
            "beats " + ", ".join(label[k] for k in beats) + " in PSNR and SSIM"
            if not lost
            else "does NOT beat " + ", ".join(lost) + " in both PSNR and SSIM",
            f"lesion contrast {m['lesion_contrast']:.2f} "
            + (">= 0.85" if m["lesion_contrast"] >= 0.85 else "< 0.85 (FAILS)"),
            f"uniform-region error {m['uniform_abs_dhu']:.1f} HU "
            + ("<= 3" if m["uniform_max_abs_dhu"] <= 3 else "(worst slice > 3 HU: FAILS)"),
        ]
        lines.append(f"- {float(d):.0%} dose: " + "; ".join(checks) + ".")
    lines += [
        "",
        "## Generalisation beyond the default simulator",
        "",
        "| condition | dose | input PSNR | model PSNR | input SSIM | model SSIM | lesion contrast kept "
        "| uniform ΔHU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cond, per in res["generalisation"].items():
        for d, r in per.items():
            i, m = r["input"], r["model"]
            lines.append(
                f"| {cond} | {float(d):.0%} | {i['psnr']:.2f} | {m['psnr']:.2f} | {i['ssim']:.4f} | "
                f"{m['ssim']:.4f} | "
                f"{m['lesion_contrast']:.3f} | {m['uniform_abs_dhu']:.1f} |"
            )
    lines += [
        "",
        "Tuned baseline settings per dose: "
        + "; ".join(
            f"{float(d):.0%}: noise {t['noise_std_hu']:.1f} HU, TV weight {t['tv_weight']}, "
            f"NL-means h {t['nlmeans_h']}"
            for d, t in res["tuned"].items()
        )
        + ".",
        "",
        f"Run time: {res['seconds']:.0f} s.",
        *(f"Warning: {w}." for w in res.get("warnings", [])),
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ctdn.train.quality", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="edge")
    p.add_argument("--out", default="docs/quality")
    p.add_argument("--test-slices", type=int, default=12)
    p.add_argument("--tune-slices", type=int, default=3)
    p.add_argument("--cache", help="cache folder for the simulated test pairs")
    p.add_argument("--no-bm3d", action="store_true")
    p.add_argument("--name", help="name of the report files (default: the model's name)")
    p.add_argument(
        "--baselines-only", action="store_true", help="compute and keep the classical baselines only"
    )
    # Task-based image quality (issue 23): train/task_quality.py computes, train/quality_report.py writes.
    from . import quality_report

    quality_report.add_arguments(p)
    a = p.parse_args(argv)
    if a.task:
        return quality_report.main_from_args(a)
    res = run(
        None if a.baselines_only else a.model,
        a.out,
        a.test_slices,
        a.tune_slices,
        a.cache,
        bm3d=not a.no_bm3d,
        label=a.name,
    )
    if a.baselines_only:
        return 0
    print(markdown(res))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
