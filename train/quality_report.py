"""The task-based quality report's files (:mod:`ctdn.train.task_quality` measures) and its command line.

:func:`write` puts into ``out``: ``task-NAME.md`` (a summary by the numbers and every table, each
naming its convention), ``task-NAME.json`` (every measurement, curves included) and
``task-NAME/*.png`` (:mod:`ctdn.train.quality_figures`: NPS, TTF, d' and lesion-contrast plots,
image panels). :func:`add_arguments` and :func:`main_from_args` are ``python -m
ctdn.train.quality --task``; :func:`run_and_write` is also what ``ctdn-evaluate --task`` calls.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from ctdn._atomic import atomic_path

from .quality_figures import (
    ANAT_DIFF_HU,
    ANAT_WIDTH,
    QA_DIFF_HU,
    QA_WINDOW,
    figures,
    find_task,
    label,
    low_tasks,
    pct,
)
from .task_measure import CNR_RELIABLE, LOW_CONTRAST_HU, SIZE_BINS_MM

__all__ = ["write", "markdown", "label"]

CONVENTION_TEXT = {
    "ctdn": "ctdn's convention: PSNR and SSIM on the [-1000, 1000] HU window mapped to [0, 1] (data "
    "range 1; SSIM with an 11x11 Gaussian window, sigma 1.5), RMSE in HU after clipping to that window",
    "ldct-benchmark": "the LDCT benchmark's convention (Eulig et al., ldctbench): HU + 1024 clipped to "
    "[0, 2924], data range 2924, scikit-image's default SSIM (7x7 uniform window), RMSE in HU on that "
    "range",
}


def _n(k: int, what: str) -> str:
    return f"{k} {what}" + ("" if k == 1 else "s")


def _f(v, fmt: str = ".2f", none: str = "–") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return format(v, fmt)


# -- tables ----------------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _mean_low_kept(q: dict) -> float:
    v = [r["kept"] for r in q["lesions_low_by_size"]]
    return float(np.mean(v)) if v else float("nan")


def _dprime(q: dict, size: float, observer: str = "npwe") -> float:
    """Mean d' of the +C and -C low-contrast tasks of one size."""
    v = [
        t[observer]
        for t in q["tasks"]
        if t["diameter_mm"] == size and abs(t["contrast_hu"]) < LOW_CONTRAST_HU
    ]
    return float(np.mean(v)) if v else float("nan")


def _ttf_low(q: dict) -> float:
    v = [
        r["f50"] for hu, r in q["ttf"].items() if abs(float(hu)) < LOW_CONTRAST_HU and r["found"] and r["f50"]
    ]
    return float(np.mean(v)) if v else float("nan")


def _headline(res: dict) -> list[str]:
    methods = res["methods"]
    size = _headline_size(res)
    rows = []
    for d, per in res["doses"].items():
        for key, name, fmt in (
            ("noise", "noise std (HU)", ".2f"),
            ("f_avg_ratio", "NPS f_avg / NDCT's", ".2f"),
            ("ttf_low", "TTF f50 at ±10 HU (cycles/mm)", ".3f"),
            ("dprime", f"NPWE d' {size:g} mm ±10 HU", ".2f"),
            ("qa_kept", "QA ±10 HU lesion contrast kept", ".2f"),
            ("anat_kept", "anatomical lesion contrast kept", ".2f"),
            ("psnr", f"PSNR (dB, {res['convention']} convention)", ".2f"),
        ):
            cells = []
            for m in methods:
                q, a = per[m]["qa"], per[m]["anatomical"]
                v = {
                    "noise": q["nps"]["noise_std"],
                    "f_avg_ratio": q["f_avg_ratio"],
                    "ttf_low": _ttf_low(q),
                    "dprime": _dprime(q, size),
                    "qa_kept": _mean_low_kept(q),
                    "anat_kept": None if a is None else a["lesion_kept"],
                    "psnr": None if a is None else a["psnr"],
                }[key]
                cell = _f(v, fmt)
                low = [r for hu, r in q["ttf"].items() if abs(float(hu)) < LOW_CONTRAST_HU]
                if key == "ttf_low" and math.isfinite(v) and not all(r.get("reliable") for r in low):
                    cell = f"({cell})"  # an edge's CNR under CNR_RELIABLE: noise-limited
                cells.append(cell)
            rows.append([pct(d), name, *cells])
    table = _table(["dose", "measure", *[label(m) for m in methods]], rows)
    return table + [
        "",
        f"TTF f50 in parentheses: a ±10 HU rod's averaged edge has a CNR under {CNR_RELIABLE:g}, so the "
        "value is noise-limited. NPS, TTF, d' and the QA lesions: the QA phantom; PSNR and the anatomical "
        f"lesions: the anatomical slices ({res['convention']} convention).",
    ]


def _headline_size(res: dict) -> float:
    """The lesion diameter of the headline d' (5 mm where the phantom has it)."""
    sizes = sorted({s for s, _ in low_tasks(res)})
    return 5.0 if 5.0 in sizes else float(sizes[len(sizes) // 2])


def _span(values) -> str:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return "–"
    lo, hi = min(v), max(v)
    return f"{lo:.2f}" if abs(hi - lo) < 0.005 else f"{lo:.2f}-{hi:.2f}"


def _plain(res: dict) -> list[str]:
    """One paragraph per model: ranges over the doses of what it keeps and loses, beside the baselines."""
    base = [m for m in ("nlmeans", "tv", "bm3d") if m in res["methods"]]
    models = [m for m in res["methods"] if m not in ("input", "ndct", *base)]
    per = list(res["doses"].values())
    doses = ", ".join(pct(d) for d in res["doses"])

    def span(m, fn):
        return _span([fn(p[m]) for p in per])

    def beside(fn):
        return ", ".join(f"{label(b)} {span(b, fn)}" for b in base)

    texture = lambda r: r["qa"]["f_avg_ratio"]  # noqa: E731
    qa_kept = lambda r: _mean_low_kept(r["qa"])  # noqa: E731
    anat_kept = lambda r: r["anatomical"]["lesion_kept"]  # noqa: E731
    noise = lambda r: r["qa"]["nps"]["noise_std"]  # noqa: E731
    psnr = lambda r: r["anatomical"]["psnr"]  # noqa: E731
    size = _headline_size(res)
    dprime = lambda r: _dprime(r["qa"], size)  # noqa: E731
    out = []
    for m in models:
        out.append(
            f"Over the doses {doses}, {label(m)} leaves {span(m, noise)} HU of noise in the QA phantom "
            f"(LDCT input {span('input', noise)}, {beside(noise)}) and scores {span(m, psnr)} dB PSNR on "
            f"the anatomical slices ({beside(psnr)}). It keeps {span(m, qa_kept)} of the ±10 HU QA "
            f"lesions' contrast ({beside(qa_kept)}; the LDCT input {span('input', qa_kept)}) and "
            f"{span(m, anat_kept)} of the anatomical lesions' ({beside(anat_kept)}). Its noise texture's "
            f"mean frequency is {span(m, texture)} of the normal-dose scan's ({beside(texture)}): "
            "under 1 is a coarser, blotchier texture than the scanner's own. The NPWE d' of a "
            f"{size:g} mm ±10 HU disc is {span(m, dprime)} (normal-dose scan {span('ndct', dprime)}, "
            f"{beside(dprime)}): TG-233's observer credits the noise a denoiser removes and charges "
            "only the blur its TTF shows, while the lesion contrast above measures what is left of the "
            "lesion."
        )
    return out


def _summary(res: dict) -> list[str]:
    """Plain sentences, by the numbers, for each model against the baselines."""
    out = []
    base = [m for m in ("nlmeans", "tv", "bm3d") if m in res["methods"]]
    models = [m for m in res["methods"] if m not in ("input", "ndct", *base)]
    size = _headline_size(res)
    measures = (
        ("noise texture f_avg / the normal-dose scan's", lambda r: r["qa"]["f_avg_ratio"]),
        ("QA ±10 HU lesion contrast kept", lambda r: _mean_low_kept(r["qa"])),
        ("anatomical lesion contrast kept", lambda r: r["anatomical"]["lesion_kept"]),
        (f"NPWE d' of a {size:g} mm ±10 HU disc", lambda r: _dprime(r["qa"], size)),
        ("PSNR (dB)", lambda r: r["anatomical"]["psnr"]),
    )
    for m in models:
        for d, per in res["doses"].items():
            parts = []
            for what, fn in measures:
                others = ", ".join(f"{label(b)} {_f(fn(per[b]))}" for b in ["input", *base])
                parts.append(f"{what} {_f(fn(per[m]))} ({others})")
            out.append(f"- {pct(d)} dose, {label(m)}: " + "; ".join(parts) + ".")
    return out


def _nps_table(res: dict) -> list[str]:
    rows = []
    for d, per in res["doses"].items():
        for m in res["methods"]:
            q = per[m]["qa"]
            n = q["nps"]
            rows.append(
                [
                    pct(d),
                    label(m),
                    _f(n["noise_std"]),
                    _f(q["noise_ratio"]),
                    _f(n["f_peak"], ".3f"),
                    _f(q["f_peak_ratio"]),
                    _f(n["f_avg"], ".3f"),
                    _f(q["f_avg_ratio"]),
                ]
            )
    header = ["dose", "method", "noise (HU)", "/ NDCT", "f_peak (mm⁻¹)", "/ NDCT", "f_avg (mm⁻¹)", "/ NDCT"]
    return _table(header, rows)


def _ttf_table(res: dict) -> list[str]:
    rods = [f"{hu:g}" for hu in res["qa"]["rods_hu"]]
    rows = []
    for d, per in res["doses"].items():
        for m in res["methods"]:
            cells = []
            for hu in rods:
                r = per[m]["qa"]["ttf"][hu]
                if not r["found"]:
                    cells.append("not found")
                else:
                    s = f"{_f(r['f50'], '.3f', 'none')} / {_f(r['f10'], '.3f', 'none')}"
                    cells.append(s if r["reliable"] else f"({s})")
            rows.append([pct(d), label(m), *cells])
    return _table(["dose", "method", *[f"{float(h):+g} HU" for h in rods]], rows)


def _dprime_table(res: dict, observer: str) -> list[str]:
    tasks = low_tasks(res)
    rows = []
    for d, per in res["doses"].items():
        for m in res["methods"]:
            q = per[m]["qa"]
            cells = []
            for size, hu in tasks:
                t = find_task(q, size, hu)
                cells.append(_f(t[observer]) + ("†" if t["ttf_substituted"] else ""))
            rows.append([pct(d), label(m), *cells])
    return _table(["dose", "method", *[f"{s:g} mm {h:+g}" for s, h in tasks]], rows)


def _lesion_table(res: dict, where: str, key: str) -> list[str]:
    bins = list(zip(SIZE_BINS_MM[:-1], SIZE_BINS_MM[1:], strict=True))
    rows, used = [], set()
    for per in res["doses"].values():
        for m in res["methods"]:
            blk = per[m][where]
            for r in [] if blk is None else blk[key]:
                used.add(tuple(r["size_bin_mm"]))
    bins = [b for b in bins if b in used]
    for d, per in res["doses"].items():
        for m in res["methods"]:
            blk = per[m][where]
            if blk is None:
                continue
            by = {tuple(r["size_bin_mm"]): r for r in blk[key]}
            cells = []
            for b in bins:
                r = by.get(b)
                cells.append(
                    "–" if r is None else f"{_f(r['kept'])} ± {_f(r['kept_se'])} ({_f(r['cnr'], '.1f')})"
                )
            rows.append([pct(d), label(m), *cells])
    names = [f"{lo:g}-{hi:g} mm" for lo, hi in bins]
    return _table(["dose", "method", *names], rows)


def _psnr_table(res: dict) -> list[str]:
    rows = []
    for d, per in res["doses"].items():
        for m in res["methods"]:
            a = per[m]["anatomical"]
            if a is None:
                continue
            rows.append([pct(d), label(m), _f(a["psnr"]), _f(a["ssim"], ".4f"), _f(a["rmse_hu"])])
    return _table(["dose", "method", "PSNR (dB)", "SSIM", "RMSE (HU)"], rows)


def _scanners(res: dict) -> str:
    parts = []
    for i, s in enumerate(res["qa"]["scanners"]):
        jit = ", ".join(f"{float(k) * 100:g}→{v * 100:.1f} %" for k, v in s["doses"].items())
        parts.append(
            f"{i}: {s['kind']} beam, {s['filter']} filter, I0 × {s['i0'] / 940000.0:.2f}, "
            f"σₑ {s['sigma_e']:.1f} "
            f"(doses simulated {jit})"
        )
    return "; ".join(parts)


def markdown(res: dict, name: str) -> str:
    cfg, qa = res["config"], res["qa"]
    k = cfg["realisations"]
    n_real = k * cfg["scanners"]
    figs = f"task-{name}"
    lines = [
        f"# Task-based image quality: `{name}` and the classical baselines",
        "",
        "What a radiologist looks at, measured as AAPM TG-233 does (docs/iq.md): noise magnitude and "
        "texture (NPS), resolution at several contrasts (TTF), model-observer detectability (d') and "
        "low-contrast lesion contrast, beside PSNR/SSIM/RMSE.",
        "",
        f"- **QA phantom**: a {qa['diameter_mm']:g} mm water cylinder ({qa['shape'][0]}×{qa['shape'][1]} "
        f"pixels of {qa['pixel_size_mm']:.3f} mm), rods of {', '.join(f'{h:+g}' for h in qa['rods_hu'])} HU "
        f"(15 mm) for the TTF, lesions of ±10, +120 and -100 HU at 3, 5, 7, 10 mm. Scanned like the training "
        f"data: {_n(cfg['scanners'], 'scanner draw')} of `SyntheticDataset(vary=True)` ({_scanners(res)}), "
        "each "
        f"with {k} independent noise realisations per dose, so every figure pools {n_real} scans per dose. "
        "The normal-dose scan (NDCT) is dose 100 % on the same scanners. Models are told the nominal dose.",
        "- **NPS** from each scanner's ensemble noise (realisation minus the realisations' mean) in "
        f"{cfg['roi']}-pixel ROIs of the uniform centre; f_peak and f_avg as TG-233, and their ratio to the "
        "NDCT's. A ratio under 1 is a coarser, blotchier texture than the normal-dose scan's.",
        f"- **TTF** of each rod on the mean of the {n_real} scans: f50 / f10 in cycles/mm. In parentheses: "
        f"the averaged edge's CNR is under {CNR_RELIABLE:g} (TG-233's rule of thumb), so the value is "
        "noise-limited; 'not found': the rod does not stand out of the noise.",
        "- **d'**: NPW and NPWE (eye filter 4 cycles/degree at 500 mm, life size) for each lesion task, "
        "with the method's NPS and the TTF of the rod of the same contrast. Where that rod is not found, "
        "the LDCT input and NDCT (FBP, whose TTF does not depend on contrast) use the nearest found "
        "contrast (†); a denoiser gets no d' ('–'), since its TTF at another contrast would misstate it. "
        "The NPS/TTF model observer assumes a linear, stationary system: for a denoiser it credits the "
        "noise it removes and charges only the blur its TTF shows at the task's contrast, so read d' "
        "beside the lesion contrast kept, which measures what happens to the lesion itself.",
        "- **Lesion contrast kept** = measured / true contrast (true = the same masks on the noise-free "
        f"reconstruction), mean ± standard error over lesions and realisations, (CNR) beside it. QA: the "
        f"{n_real} scans; anatomical: {_n(len(res['anatomical']['test']), 'held-out phantom slice')} of the "
        "quality report's test seed (9001), lesions of 5-20 HU, one scan each at the default scanner.",
        f"- **PSNR/SSIM/RMSE** on the anatomical slices against the noise-free reconstruction, in "
        f"{CONVENTION_TEXT[res['convention']]} (`--convention {res['convention']}`).",
        f"- **Baselines**: TV weight and NL-means h tuned per dose for the best PSNR on "
        f"{_n(len(res['anatomical']['tune']), 'other slice')} (seed 9101). BM3D is given the measured noise "
        "power spectrum (QA: the NPS of the repeated scans' ensemble noise over the whole water body; "
        "anatomical: the NPS of LDCT minus reference on the tuning slice of the same anatomy), NL-means "
        "that noise's std. The `bm3d` package is licensed for non-commercial use only (it stays an "
        "optional extra).",
        "",
        "## Summary, by the numbers",
        "",
        *_plain(res),
        "",
        "Per dose:",
        "",
        *_summary(res),
        "",
        *_headline(res),
        "",
        f"![NPS]({figs}/nps.png)",
        "",
        "## Noise magnitude and texture (QA phantom, uniform centre)",
        "",
        *_nps_table(res),
        "",
        f"![NPS, absolute]({figs}/nps-abs.png)",
        "",
        "## Resolution: TTF f50 / f10 (cycles/mm) per rod contrast",
        "",
        *_ttf_table(res),
        "",
        *[f"![TTF at {pct(d)}]({figs}/ttf-{float(d) * 100:g}.png)" for d in res["doses"]],
        "",
        "## Detectability: NPWE d' of the low-contrast tasks",
        "",
        *_dprime_table(res, "npwe"),
        "",
        "NPW d':",
        "",
        *_dprime_table(res, "npw"),
        "",
        f"![d' vs dose]({figs}/dprime.png)",
        "",
        "## Lesion contrast kept by lesion diameter: mean ± SE (CNR)",
        "",
        f"QA phantom, ±10 HU lesions ({n_real} scans × 2 lesions per size):",
        "",
        *_lesion_table(res, "qa", "lesions_low_by_size"),
        "",
        "QA phantom, +120 and -100 HU lesions:",
        "",
        *_lesion_table(res, "qa", "lesions_high_by_size"),
        "",
        "Anatomical phantoms (5-20 HU lesions):",
        "",
        *_lesion_table(res, "anatomical", "lesions_by_size"),
        "",
        f"![lesion contrast vs size]({figs}/lesions.png)",
        "",
        f"## PSNR, SSIM, RMSE (anatomical slices; {res['convention']} convention)",
        "",
        *_psnr_table(res),
        "",
        "## Image panels",
        "",
        "Full-resolution crops (one image pixel per PNG pixel), lesions circled; below each, the image "
        f"minus the noise-free reconstruction. QA: level {QA_WINDOW[0]:g}, width {QA_WINDOW[1]:g} HU, "
        f"differences on ±{QA_DIFF_HU:g} HU; anatomical: width {ANAT_WIDTH:g} HU around the lesions' "
        f"background, differences on ±{ANAT_DIFF_HU:g} HU.",
        "",
        *[f"![QA phantom at {pct(d)}]({figs}/panel-qa-{float(d) * 100:g}.png)" for d in res["doses"]],
        "",
        *[f"![anatomical at {pct(d)}]({figs}/panel-anatomical-{float(d) * 100:g}.png)" for d in res["doses"]],
        "",
        "## Settings",
        "",
        "Tuned per dose: "
        + "; ".join(
            f"{pct(d)}: TV weight {t['tv_weight']}, NL-means h {t['nlmeans_h']} "
            f"(noise {t['noise_std_hu']:.1f} HU)"
            for d, t in res["tuned"].items()
        )
        + ".",
        "",
        "This run took "
        + ", ".join(f"{k} {v:.0f} s" for k, v in res["seconds"].items())
        + " (wall-clock per stage, total, and CPU time); scans and outputs found in the cache were not "
        "recomputed.",
        *[f"\nWarning: {w}." for w in res["warnings"]],
        "",
    ]
    return "\n".join(lines)


# -- files -----------------------------------------------------------------------------------------
def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items() if not str(k).startswith("_")}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (float, np.floating)):  # 5 significant digits: beyond the measurements' precision
        return float(f"{float(o):.5g}") if math.isfinite(o) else None
    if isinstance(o, (np.integer, np.bool_)):
        return o.item()
    return o


def _dumps(obj) -> str:
    """JSON with one key per line, but each list of numbers (a curve) and each flat object (a lesion,
    a task) on one line."""

    def one_line(m: re.Match) -> str:
        body = " ".join(v.strip() for v in m.group(2).split("\n"))  # JSON strings hold no raw newline
        return m.group(1) + body + m.group(3)

    text = json.dumps(obj, indent=1)
    text = re.sub(r"(\[)\s*([-+0-9.eEnul,\s]+?)\s*(\])", one_line, text)
    return re.sub(r"(\{)\s*([^{}\[\]]+?)\s*(\})", one_line, text) + "\n"


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write(res: dict, out, name: str) -> list[str]:
    """Write the report of ``res`` (from :func:`ctdn.train.task_quality.run`) into ``out``; returns the
    files written, relative to ``out``."""
    out = Path(out)
    folder = out / f"task-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    pngs = figures(res, folder)
    for stale in folder.glob("*.png"):  # this folder holds only the report's figures
        if stale.name not in pngs:
            stale.unlink()
    _write_text(out / f"task-{name}.json", _dumps(_jsonable(res)))
    _write_text(out / f"task-{name}.md", markdown(res, name))
    return [f"task-{name}.md", f"task-{name}.json", *(f"task-{name}/{p}" for p in pngs)]


# -- command line (``python -m ctdn.train.quality --task``, ``ctdn-evaluate --task``) -------------
def add_arguments(p) -> None:
    """The task-based report's options of ``python -m ctdn.train.quality``."""
    from ctdn.metrics import CONVENTIONS

    from .task_quality import DEFAULT

    g = p.add_argument_group("task-based image quality (--task; docs/quality/task-NAME.md)")
    g.add_argument(
        "--task",
        action="store_true",
        help="the task-based report (QA phantom NPS, TTF, d', lesions; anatomical lesions, PSNR/SSIM) "
        "instead of the PSNR table",
    )
    g.add_argument(
        "--quick", action="store_true", help="tiny sizes (tests and a smoke run; not a measurement)"
    )
    g.add_argument("--convention", choices=CONVENTIONS, default="ctdn", help="PSNR/SSIM/RMSE convention")
    g.add_argument("--scanners", type=int, default=DEFAULT.scanners, help="QA scanner draws")
    g.add_argument(
        "--realisations",
        type=int,
        default=DEFAULT.realisations,
        help="QA noise realisations per scanner and dose",
    )
    g.add_argument("--anatomical-slices", type=int, default=DEFAULT.anatomical, help="anatomical test slices")
    g.add_argument(
        "--also-model", action="append", default=[], metavar="NAME=PATH", help="another model (repeatable)"
    )
    g.add_argument("--device", default="cpu", help="where the models run (torch backend)")


def run_and_write(models: dict, out, name: str, *, config, cache, convention, baselines, device, progress):
    """Run :func:`ctdn.train.task_quality.run` and :func:`write` its report; (results, files)."""
    from .task_quality import run

    res = run(
        models,
        config=config,
        cache=cache,
        convention=convention,
        baselines=baselines,
        device=device,
        progress=progress,
    )
    return res, write(res, out, name)


def main_from_args(a, prog: str = "python -m ctdn.train.quality") -> int:
    """``python -m ctdn.train.quality --task ...``: run, write, print the headline table."""
    import dataclasses
    import sys

    from ctdn.errors import CTDNError

    from .evaluate import parse_model_specs
    from .task_quality import DEFAULT, QUICK

    try:
        models = {} if a.baselines_only else parse_model_specs([a.model, *a.also_model])
        base = QUICK if a.quick else DEFAULT
        changes = {}  # --quick keeps its own sizes
        if not a.quick:
            changes = dict(
                scanners=a.scanners,
                realisations=a.realisations,
                anatomical=a.anatomical_slices,
                tune=a.tune_slices,
            )
        config = dataclasses.replace(base, **changes)
        name = a.name or (next(iter(models)) if models else "baselines")
        res, files = run_and_write(
            models,
            a.out,
            name,
            config=config,
            cache=a.cache,
            convention=a.convention,
            baselines=("nlmeans", "tv") if a.no_bm3d else ("nlmeans", "tv", "bm3d"),
            device=a.device,
            progress=True,
        )
    except CTDNError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(_headline(res)))
    print(f"\nwrote {', '.join(files[:2])} and {len(files) - 2} PNGs into {a.out}")
    return 0
