"""Calibration and measurement of ``ctdn.dose.estimate_dose`` on simulated phantoms and real CT files.

``python -m ctdn.train.dose_eval calibrate`` re-measures the constants of ``ctdn/dose/calibration.py``
(the noise model on Hann-filtered phantoms of every kind and size at four doses, and the noise
texture of each calibration filter at four pixel sizes) and prints them.

``python -m ctdn.train.dose_eval evaluate --out docs/dose-eval.json`` measures the estimate on
held-out phantoms (seeds disjoint from the calibration's): thorax, abdomen and head, each scaled
to several water-equivalent diameters, fan and parallel geometry, four filters (one of them,
hamming, used by no calibration step), doses 0.05-1.0; with the kernel given and with it inferred.
It prints the markdown tables of docs/dose.md.

``python -m ctdn.train.dose_eval real`` runs the estimate on the real CT slices that ship with
pydicom and pydicom-data and prints the estimate and the header values used.

Body size: the phantoms have a fixed anatomy, so a phantom generated at ``size`` pixels is given a
pixel size ``scale`` times its own: everything, the patient included, grows by ``scale``. That is
what a scanner's field of view does too (a 512 matrix over a larger patient has larger pixels).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from ctdn import phantoms
from ctdn._atomic import atomic_path
from ctdn.dose import estimate_dose
from ctdn.dose.image import slice_stats
from ctdn.sim import Geometry, Simulator
from ctdn.sim.simulator import derive_seed, torch_generator

CAL_SEED, EVAL_SEED = 7000, 8000  # phantom seeds: calibration 7000-7099, evaluation 8000-8099
DOSES = (0.05, 0.1, 0.25, 0.5, 1.0)
EVAL_FILTERS = ("hann", "shepp-logan", "ramp", "hamming")
CAL_DOSES = (0.05, 0.15, 0.5, 1.0)
CAL_FILTERS = ("hann", "cosine", "shepp-logan", "ramp")
# Scale factors of each kind's anatomy; water-equivalent diameters of about 20, 27, 35 and 45 cm
# (thorax, abdomen) and 14, 17, 20 cm (head: heads do not come in 45 cm).
EVAL_SCALES = {
    "thorax": (0.85, 1.15, 1.49, 1.91),
    "abdomen": (0.73, 0.98, 1.27, 1.64),
    "head": (0.8, 0.97, 1.14),
}
CAL_SCALES = {"abdomen": (0.7, 1.0, 1.3, 1.65), "thorax": (0.8, 1.15, 1.5, 1.9), "head": (0.8, 1.0, 1.2)}
HALF_WIDTH_MM = {"thorax": 170.0, "abdomen": 170.0, "head": 80.0}  # largest lateral half-width at scale 1


def _detectors(kind: str, scale: float) -> int:
    """Enough detector channels for the field of view to hold the scaled patient."""
    return 736 if HALF_WIDTH_MM[kind] * scale < 235 else 1000


def simulate_cell(
    kind: str,
    seed: int,
    scale: float,
    size: int,
    geometry: str,
    jobs: list[tuple[str, float]],
    cache: Path | None = None,
    noiseless: bool = False,
    views: int | None = None,
    stream: int = 1,
) -> tuple[dict, float, np.ndarray]:
    """Reconstructions of one scaled phantom: {(filter, dose): image}, the pixel size and the phantom.

    One forward projection serves every job; each dose gets one noisy sinogram, reconstructed with
    every filter asked for at that dose. ``noiseless`` adds ``(filter, 0.0)``: the noise-free image.
    """
    views_tag = ("" if views is None else f"v{views}-") + ("" if stream == 1 else f"s{stream}-")
    key = f"{kind}-{seed}-{scale:g}-{size}-{geometry}-{views_tag}" + "-".join(f"{f}{d:g}" for f, d in jobs)
    path = None if cache is None else Path(cache) / f"dose-{key}{'-nl' if noiseless else ''}.npz"
    ph = phantoms.generate(kind, seed=seed, size=size)
    px = ph.pixel_size_mm * scale
    if path is not None and path.exists():
        z = np.load(path)
        return {(k.split("|")[0], float(k.split("|")[1])): z[k] for k in z.files}, px, ph.hu
    det = _detectors(kind, scale)
    sims = {
        f: Simulator(
            Geometry(kind=geometry, views=views, filter=f, detectors=det), pixel_size_mm=px, device="cpu"
        )
        for f in sorted({f for f, _ in jobs})
    }
    first = next(iter(sims.values()))
    p = first.project(ph.hu)[0]
    out = {}
    for d in sorted({d for _, d in jobs}):
        gen = torch_generator(derive_seed(seed, stream, int(round(d * 1e6))), "cpu")
        noisy = first.noisy_sinogram(p, d, gen)[None]
        for f in {f for f, dd in jobs if dd == d}:
            out[(f, d)] = sims[f].reconstruct_hu(noisy, ph.hu.shape)[0].numpy()
    if noiseless:
        for f, s in sims.items():
            out[(f, 0.0)] = s.reconstruct_hu(p[None], ph.hu.shape)[0].numpy()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **{f"{f}|{d:g}": v for (f, d), v in out.items()})
    return out, px, ph.hu


# -- calibration ----------------------------------------------------------------------------------
CAL_STREAM = 99  # noise stream of the calibration scans (the evaluation's is 1)
CAL_MAX_DW_MM = 460.0  # larger patients are photon-starved at low doses: left out of the fit
# Kernel cells: (kind, seed, scale, size) at pixel sizes of about 0.49, 0.70, 0.98 and 1.41 mm.
KERNEL_CELLS = (
    ("abdomen", CAL_SEED + 1, 0.7, 512),
    ("head", CAL_SEED + 2, 1.0, 512),
    ("abdomen", CAL_SEED + 1, 1.0, 512),
    ("thorax", CAL_SEED + 3, 1.0, 512),
    ("abdomen", CAL_SEED + 1, 1.4, 512),
    ("abdomen", CAL_SEED + 1, 1.0, 256),
)


def noise_model_cells(size: int = 384) -> list[dict]:
    """The Hann-filtered scans of the noise-model fit: every kind and size, fan and two parallel."""
    cells = []
    for i, (kind, scales) in enumerate(CAL_SCALES.items()):
        for j, s in enumerate(scales):
            seed = CAL_SEED + 10 * (i + 1) + j + 1
            cells.append({"kind": kind, "seed": seed, "scale": s, "geometry": "fan"})
    cells += [
        {"kind": "abdomen", "seed": CAL_SEED + 15, "scale": 1.0, "geometry": "parallel"},
        {"kind": "thorax", "seed": CAL_SEED + 25, "scale": 1.5, "geometry": "parallel"},
    ]
    return [{**c, "size": size} for c in cells]


def calibrate(size: int = 384, cache: Path | None = None) -> dict:
    """Re-measure the calibration constants of ctdn/dose/calibration.py; returns (and prints) them."""
    from scipy.optimize import least_squares

    rows, hann_rho = [], []
    for c in noise_model_cells(size):
        imgs, px, _ = simulate_cell(
            c["kind"],
            c["seed"],
            c["scale"],
            size,
            c["geometry"],
            [("hann", d) for d in CAL_DOSES],
            cache,
            stream=CAL_STREAM,
        )
        for d in CAL_DOSES:
            st = slice_stats(imgs[("hann", d)], px)
            if not st.has_soft_tissue or st.water_diameter_mm > CAL_MAX_DW_MM:
                continue
            rows.append((st.norm_gnl, st.atten2, d))
            if c["geometry"] == "fan" and 0.1 < d < 0.6:
                hann_rho.append((px, st.rho1))
            print(
                f"{c['kind']} x{c['scale']:g} D_w {st.water_diameter_mm:.0f} mm dose {d:g}: "
                f"m {st.norm_gnl:.4f}"
            )

    def residuals(q):
        a, k = math.exp(q[0]), math.exp(q[1])
        return [math.log(2 * k * r / (math.sqrt(1 + 4 * k * r * m * m / a) - 1) / d) for m, r, d in rows]

    fit = least_squares(residuals, [math.log(0.3), math.log(1e-5)], loss="soft_l1", f_scale=0.15)
    res = np.array(residuals(fit.x))
    filters = _kernel_cells(cache)
    hann_rho += [(px, row[0]) for px, row in filters]
    poly = np.polyfit([p for p, _ in hann_rho], [r for _, r in hann_rho], 2)
    result = {
        "NOISE_A": round(math.exp(fit.x[0]), 4),
        "NOISE_C": float(f"{math.exp(fit.x[1]):.2g}"),
        "LOG_SCATTER": round(float(res.std()), 3),
        "within_1.3x": round(float(np.mean(np.abs(res) < math.log(1.3))), 3),
        "RHO1_HANN_POLY": [round(float(v), 4) for v in poly],
        "RHO1_FILTERS": [_decreasing(row) for row in sorted(row for _, row in filters)],
    }
    print(json.dumps(result, indent=1))
    return result


def _decreasing(row: list[float]) -> list[float]:
    """A row of autocorrelations, smooth to sharp, made strictly decreasing (by at least 0.005): at
    coarse pixels the sharpest filters' values coincide within their noise."""
    out = [row[0]]
    for v in row[1:]:
        out.append(round(min(v, out[-1] - 0.005), 3))
    return out


def _kernel_cells(cache: Path | None) -> list[tuple[float, list[float]]]:
    """(pixel size, median lag-1 autocorrelation per calibration filter) of each kernel cell."""
    out = []
    for kind, seed, scale, size in KERNEL_CELLS:
        jobs = [(f, 0.5) for f in CAL_FILTERS]
        imgs, px, _ = simulate_cell(kind, seed, scale, size, "fan", jobs, cache, stream=CAL_STREAM)
        row = [round(slice_stats(imgs[(f, 0.5)], px).rho1, 3) for f in CAL_FILTERS]
        print(
            f"{kind} x{scale:g} at {px:.2f} mm: "
            + ", ".join(f"{f} {v:.3f}" for f, v in zip(CAL_FILTERS, row, strict=True))
        )
        out.append((px, row))
    return out


# -- evaluation -----------------------------------------------------------------------------------
def eval_design() -> list[dict]:
    """The held-out cells: every (kind, scale, geometry), each dose with one filter in rotation."""
    cells, k = [], 0
    for i, (kind, scales) in enumerate(EVAL_SCALES.items()):
        for j, s in enumerate(scales):
            for g in ("fan", "parallel"):
                jobs = [(EVAL_FILTERS[(k + n) % len(EVAL_FILTERS)], d) for n, d in enumerate(DOSES)]
                cells.append(
                    {"kind": kind, "seed": EVAL_SEED + 10 * i + j, "scale": s, "geometry": g, "jobs": jobs}
                )
                k += 1
    return cells


def evaluate(size: int = 512, cache: Path | None = None, out: Path | None = None) -> dict:
    """Measure the estimate on the held-out cells; returns the per-slice rows and the summary."""
    t0 = time.time()
    rows = []
    for c in eval_design():
        imgs, px, _ = simulate_cell(c["kind"], c["seed"], c["scale"], size, c["geometry"], c["jobs"], cache)
        for f, d in c["jobs"]:
            given = estimate_dose(imgs[(f, d)], pixel_size_mm=px, kernel=f)
            inferred = estimate_dose(imgs[(f, d)], pixel_size_mm=px)
            rows.append(
                {
                    **{k: c[k] for k in ("kind", "scale", "geometry")},
                    "filter": f,
                    "dose": d,
                    "pixel_mm": round(px, 3),
                    "d_w_mm": round(float(given.water_diameter_mm[0]), 1),
                    "noise_hu": round(given.noise_hu, 2),
                    "given": round(given.dose, 4),
                    "inferred": round(inferred.dose, 4),
                    "inferred_gain": round(inferred.kernel_gain, 3),
                }
            )
            r = rows[-1]
            print(
                f"{r['kind']:8s} x{r['scale']:<5g} {r['geometry']:8s} {f:12s} dose {d:<5g} "
                f"D_w {r['d_w_mm']:5.0f} "
                f"px {px:.2f}: given {r['given']:.3f} inferred {r['inferred']:.3f}",
                flush=True,
            )
    res = {"size": size, "rows": rows, "summary": summarise(rows), "seconds": round(time.time() - t0)}
    if out is not None:
        with atomic_path(Path(out)) as tmp:
            Path(tmp).write_text(json.dumps(res, indent=1))
    return res


def _size_band(d_w: float) -> str:
    for lo, hi in ((0, 180), (180, 240), (240, 310), (310, 390), (390, 10_000)):
        if lo <= d_w < hi:
            return f"{lo / 10:g}-{hi / 10:g} cm" if hi < 10_000 else f">= {lo / 10:g} cm"
    return "?"


def _stats(ratios: list[float]) -> dict:
    r = np.array(ratios)
    lr = np.log(r)
    return {
        "slices": int(r.size),
        "within_1.3x": round(float(np.mean(np.abs(lr) <= math.log(1.3))), 3),
        "median_ratio": round(float(np.exp(np.median(lr))), 3),
        "p10_ratio": round(float(np.exp(np.percentile(lr, 10))), 3),
        "p90_ratio": round(float(np.exp(np.percentile(lr, 90))), 3),
    }


def summarise(rows: list[dict]) -> dict:
    """Within-1.3x fraction and ratio percentiles, overall and by kind, size, filter, geometry, dose."""
    out = {}
    for mode in ("given", "inferred"):
        groups = {"all": {"all": [r[mode] / r["dose"] for r in rows]}}
        for by, key in (
            ("kind", lambda r: r["kind"]),
            ("size", lambda r: _size_band(r["d_w_mm"])),
            ("filter", lambda r: r["filter"]),
            ("geometry", lambda r: r["geometry"]),
            ("dose", lambda r: f"{r['dose']:g}"),
        ):
            g: dict = {}
            for r in rows:
                g.setdefault(key(r), []).append(r[mode] / r["dose"])
            groups[by] = g
        out[mode] = {by: {k: _stats(v) for k, v in g.items()} for by, g in groups.items()}
    return out


def markdown(res: dict) -> str:
    s = res["summary"]
    lines = [
        f"Held-out slices: {len(res['rows'])} ({res['size']} px matrix), run time {res['seconds']} s.",
        "",
        "| group | slices | within 1.3x, kernel given | median ratio (p10-p90) "
        "| within 1.3x, kernel inferred | median ratio (p10-p90) |",
        "|---|---|---|---|---|---|",
    ]
    for by in ("all", "kind", "size", "filter", "geometry", "dose"):
        for k, g in s["given"][by].items():
            i = s["inferred"][by][k]
            label = "all" if by == "all" else f"{by}: {k}"
            lines.append(
                f"| {label} | {g['slices']} | {g['within_1.3x']:.0%} | {g['median_ratio']:.2f} "
                f"({g['p10_ratio']:.2f}-{g['p90_ratio']:.2f}) | {i['within_1.3x']:.0%} "
                f"| {i['median_ratio']:.2f} ({i['p10_ratio']:.2f}-{i['p90_ratio']:.2f}) |"
            )
    return "\n".join(lines)


# -- real CT --------------------------------------------------------------------------------------
REAL_FILES = (
    "CT_small.dcm",
    "693_UNCI.dcm",
    "693_UNCR.dcm",
    "bad_sequence.dcm",
    "explicit_VR-UN.dcm",
    "J2K_pixelrep_mismatch.dcm",
)


def real_ct() -> list[dict]:
    """The estimate on pydicom's and pydicom-data's real CT slices (those that can be found here)."""
    import pydicom
    from pydicom.data import get_testdata_file

    out = []
    for name in REAL_FILES:
        try:
            path = get_testdata_file(name)
        except Exception:  # noqa: BLE001 - pydicom-data absent or offline
            path = None
        if path is None:
            print(f"{name}: not found (install pydicom-data)")
            continue
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1)) + float(
            ds.get("RescaleIntercept", 0)
        )
        est = estimate_dose(hu, header=ds)
        rec = {
            "file": name,
            "shape": list(hu.shape),
            "estimate": str(est),
            "dose": round(est.dose, 3),
            "interval": [round(v, 3) for v in est.interval],
            "method": est.method,
            "image_dose": None if est.image_dose is None else round(est.image_dose, 3),
            "header_dose": None if est.header_dose is None else round(est.header_dose, 3),
            "noise_hu": round(est.noise_hu, 2),
            "d_w_mm": round(float(est.water_diameter_mm[0]), 1),
            "kernel": est.kernel,
            "region": est.region,
            "header_values": {
                k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in est.header_values.items()
            },
            "notes": list(est.notes),
        }
        out.append(rec)
        print(json.dumps(rec, indent=1))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ctdn.train.dose_eval", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("calibrate", help="re-measure the calibration constants and print them")
    c.add_argument("--size", type=int, default=384, help="matrix of the noise-model phantoms")
    c.add_argument("--cache", type=Path, help="folder for the simulated images")
    e = sub.add_parser("evaluate", help="measure the estimate on held-out phantoms")
    e.add_argument("--size", type=int, default=512)
    e.add_argument("--cache", type=Path, help="folder for the simulated images")
    e.add_argument("--out", type=Path, help="write the rows and the summary as JSON")
    sub.add_parser("real", help="the estimate on pydicom's real CT files")
    a = p.parse_args(argv)
    if a.cmd == "calibrate":
        calibrate(a.size, a.cache)
    elif a.cmd == "evaluate":
        print(markdown(evaluate(a.size, a.cache, a.out)))
    else:
        real_ct()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
