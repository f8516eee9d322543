"""The task-based report's figures (:mod:`ctdn.train.quality_report` writes them beside its tables).

- ``nps.png`` (area-normalised NPS: texture) and ``nps-abs.png`` (NPS, log scale: magnitude), one
  chart per dose, every method;
- ``ttf-DOSE.png``: the TTF of each rod contrast at that dose;
- ``dprime.png``: NPWE d' of the low-contrast tasks against dose;
- ``lesions.png``: lesion contrast kept against lesion size, per dose (QA and anatomical);
- ``panel-qa-DOSE.png`` and ``panel-anatomical-DOSE.png`` (the lowest and the middle dose):
  full-resolution crops of every method with the lesions circled, above their difference from the
  noise-free image, with labelled grey scales.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctdn.viz import Chart, Series, Tile, box_marks, charts, lesion_box, lesion_panel

from .task_measure import LOW_CONTRAST_HU

__all__ = ["figures", "label", "pct", "find_task", "low_tasks", "LABELS"]

LABELS = {"input": "LDCT input", "ndct": "NDCT (100 %)", "nlmeans": "NL-means", "tv": "TV", "bm3d": "BM3D"}
QA_WINDOW = (0.0, 120.0)  # level, width: water at 0, the +-10 HU lesions visible
QA_DIFF_HU = 40.0  # difference images on [-40, +40] HU
ANAT_WIDTH, ANAT_DIFF_HU = 160.0, 60.0


def label(m: str, md: bool = True) -> str:
    """A method's name in the tables (models in backticks) or, with ``md=False``, in the plots."""
    return LABELS.get(m, f"`{m}`" if md else m)


def pct(d) -> str:
    return f"{float(d) * 100:g} %"


def find_task(q: dict, size: float, hu: float) -> dict:
    return next(t for t in q["tasks"] if t["diameter_mm"] == size and t["contrast_hu"] == hu)


def low_tasks(res: dict) -> list[tuple[float, float]]:
    q = next(iter(res["doses"].values()))["ndct"]["qa"]
    pairs = {
        (t["diameter_mm"], t["contrast_hu"]) for t in q["tasks"] if abs(t["contrast_hu"]) < LOW_CONTRAST_HU
    }
    return sorted(pairs, key=lambda p: (-p[1], p[0]))


def _series(m: str, x, y) -> Series:
    return Series(label(m, md=False), list(x), list(y), dashed=m == "ndct")


def _nps_plots(res: dict, folder: Path) -> list[str]:
    norm, absolute = [], []
    for d, per in res["doses"].items():
        s_norm, s_abs = [], []
        for m in res["methods"]:
            n = per[m]["qa"]["nps"]
            f, y = np.array(n["f"]), np.array(n["nps_1d"])
            area = float(np.sum(y[1:]) * (f[1] - f[0]))
            s_norm.append(_series(m, f[1:], y[1:] / area))
            s_abs.append(_series(m, f[1:], y[1:]))
        norm.append(Chart(f"{pct(d)} dose", "spatial frequency (cycles/mm)", "NPS / its area (mm^2)", s_norm))
        absolute.append(
            Chart(f"{pct(d)} dose", "spatial frequency (cycles/mm)", "NPS (HU^2 mm^2)", s_abs, ylog=True)
        )
    charts(norm, folder / "nps.png", title="Noise texture: area-normalised NPS (QA phantom, uniform centre)")
    charts(
        absolute, folder / "nps-abs.png", title="Noise power spectrum (QA phantom, uniform centre), log scale"
    )
    return ["nps.png", "nps-abs.png"]


def _ttf_plots(res: dict, folder: Path) -> list[str]:
    files = []
    for d, per in res["doses"].items():
        items = []
        for hu in [f"{h:g}" for h in res["qa"]["rods_hu"]]:
            ser = []
            for m in res["methods"]:
                r = per[m]["qa"]["ttf"][hu]
                if r["found"]:
                    ser.append(_series(m, r["f"], r["ttf"]))
            items.append(
                Chart(
                    f"{float(hu):+g} HU rod",
                    "spatial frequency (cycles/mm)",
                    "TTF",
                    ser,
                    ylim=(-0.05, 1.1),
                    empty="edge not found in the noise for any method",
                )
            )
        name = f"ttf-{float(d) * 100:g}.png"
        charts(
            items,
            folder / name,
            columns=3,
            title=f"Task transfer function per rod contrast, {pct(d)} dose",
            note="The ±10 HU rods' curves are noise-limited where the averaged edge's CNR is under 15 "
            "(in parentheses in the tables): wiggles and values above 1 are noise.",
        )
        files.append(name)
    return files


def _dprime_plot(res: dict, folder: Path) -> str:
    doses = [float(d) * 100 for d in res["doses"]]
    items = []
    for size, hu in low_tasks(res):
        ser = [
            _series(m, doses, [find_task(per[m]["qa"], size, hu)["npwe"] for per in res["doses"].values()])
            for m in res["methods"]
        ]
        for s in ser:
            s.markers = True
        items.append(Chart(f"{size:g} mm, {hu:+g} HU disc", "dose (% of full dose)", "NPWE d'", ser))
    charts(
        items, folder / "dprime.png", columns=4, title="Detectability (NPWE d') of low-contrast discs vs dose"
    )
    return "dprime.png"


def _lesion_plot(res: dict, folder: Path) -> str:
    items = []
    for where, key, what in (
        ("qa", "lesions_low_by_size", "QA ±10 HU"),
        ("anatomical", "lesions_by_size", "anatomical 5-20 HU"),
    ):
        for d, per in res["doses"].items():
            ser = []
            for m in res["methods"]:
                blk = per[m][where]
                if blk is None:
                    continue
                rows = blk[key]
                s = _series(m, [r["diameter_mm"] for r in rows], [r["kept"] for r in rows])
                s.markers = True
                ser.append(s)
            items.append(Chart(f"{what}, {pct(d)}", "lesion diameter (mm)", "contrast kept", ser, hline=1.0))
    charts(
        items, folder / "lesions.png", columns=len(res["doses"]), title="Lesion contrast kept vs lesion size"
    )
    return "lesions.png"


# -- panels ----------------------------------------------------------------------------------------
def _panel(res, images, truth, lesions, box, path, window, diff, title) -> None:
    marks = box_marks(lesions, box)
    top, bottom = [], []
    for m in res["methods"]:
        img = images.get(m)
        if img is None:
            continue
        top.append(Tile(img[box], label(m, md=False), window[0], window[1], marks))
        bottom.append(Tile((img - truth)[box], f"{label(m, md=False)} diff.", 0.0, 2 * diff, signed=True))
    top.append(Tile(truth[box], "noise-free", window[0], window[1], marks))
    lo, hi = window[0] - window[1] / 2, window[0] + window[1] / 2
    lesion_panel(
        [top, bottom],
        path,
        title=title,
        scales=[(lo, hi, "image (HU)"), (-diff, diff, "image - noise-free (HU)")],
    )


def _panel_doses(res: dict) -> list[str]:
    """The doses shown in panels: the lowest and the middle one (the files stay small)."""
    doses = list(res["doses"])
    return list(dict.fromkeys([doses[0], doses[len(doses) // 2]]))


def _panels(res: dict, folder: Path) -> list[str]:
    im = res.get("_images")
    if not im:
        return []
    files = []
    ph = im["phantom"]
    low = [les for les in ph.lesions if les.hu == 10.0] or ph.lesions
    box = lesion_box(low, ph.hu.shape, pad=8, most=200)
    for d in _panel_doses(res):
        dd = float(d)
        name = f"panel-qa-{dd * 100:g}.png"
        _panel(
            res,
            im["qa"][dd],
            im["qa_truth"],
            ph.lesions,
            box,
            folder / name,
            QA_WINDOW,
            QA_DIFF_HU,
            f"QA phantom, +10 HU lesions (3-10 mm), {pct(d)} dose",
        )
        files.append(name)
    aph = im["anat_phantom"]
    if aph.lesions:
        abox = lesion_box(aph.lesions, aph.hu.shape, pad=16, most=256)
        level = float(np.median([les.background_hu for les in aph.lesions]))
        for d in _panel_doses(res):
            dd = float(d)
            name = f"panel-anatomical-{dd * 100:g}.png"
            _panel(
                res,
                im["anatomical"][dd],
                im["anat_truth"],
                aph.lesions,
                abox,
                folder / name,
                (level, ANAT_WIDTH),
                ANAT_DIFF_HU,
                f"{aph.kind} phantom (test slice {res['anatomical']['test'][0]}), {pct(d)} dose",
            )
            files.append(name)
    return files


def figures(res: dict, folder: Path) -> list[str]:
    """Every figure of ``res`` into ``folder``; their file names."""
    pngs = (
        _nps_plots(res, folder)
        + _ttf_plots(res, folder)
        + [_dprime_plot(res, folder), _lesion_plot(res, folder)]
    )
    return pngs + _panels(res, folder)
