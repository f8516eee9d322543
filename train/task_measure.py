"""The task-based report's measurements of one method at one dose (:mod:`ctdn.train.task_quality`).

:func:`measure_qa` on the QA phantom's repeated scans: the NPS of the ensemble noise in the uniform
centre, the TTF of every rod on the mean of the scans, the NPW and NPWE d' of every lesion task
(with the TTF of the rod of the task's contrast), and lesion contrast kept and CNR per lesion and
by size. :func:`measure_anatomical` on the anatomical test slices: PSNR, SSIM and RMSE in a
:mod:`ctdn.metrics` convention and lesion contrast kept and CNR. Results are JSON-able dicts.
"""

from __future__ import annotations

import numpy as np

from ctdn import iq, metrics
from ctdn.errors import InputError

__all__ = ["measure_qa", "measure_anatomical", "by_size", "SIZE_BINS_MM", "LOW_CONTRAST_HU", "CNR_RELIABLE"]

SIZE_BINS_MM = (2.0, 4.0, 6.0, 8.5, 16.0)  # QA lesions 3/5/7/10 mm fall one per bin
LOW_CONTRAST_HU = 30.0  # |contrast| below this is "low contrast" (QA +-10 HU; anatomical 5-20 HU)
CNR_RELIABLE = 15.0  # TG-233's rule of thumb for a TTF edge (cnr_mean of the averaged image)


def _nps_json(r: iq.NPSResult) -> dict:
    return {
        "f": r.f.tolist(),
        "nps_1d": r.nps_1d.tolist(),
        "noise_std": r.noise_std,
        "f_peak": r.f_peak,
        "f_avg": r.f_avg,
        "n_rois": r.n_rois,
        "roi": r.roi,
    }


def _ttf(stack: np.ndarray, rod, px: float):
    try:
        return iq.ttf(stack, rod.center, rod.diameter_mm / 2, px)
    except InputError as exc:
        return str(exc)


def _ttf_json(r) -> dict:
    if isinstance(r, str):
        return {"found": False, "reason": r, "f50": None, "f10": None}
    # The curve up to the pixel Nyquist frequency, about 40 samples (f50 and f10 come from all of it).
    keep = r.f <= 0.5 / r.pixel_size_mm + 1e-9
    step = max(1, int(keep.sum()) // 40)
    return {
        "found": True,
        "f": r.f[keep][::step].tolist(),
        "ttf": r.ttf[keep][::step].tolist(),
        "f50": r.f50,
        "f10": r.f10,
        "contrast_hu": r.contrast_hu,
        "cnr_mean": r.cnr_mean,
        "reliable": bool(r.cnr_mean >= CNR_RELIABLE),
    }


def _rod_for(task_hu: float, rods, ttfs: dict, linear: bool) -> tuple[float | None, bool]:
    """The rod whose TTF goes with a task of contrast ``task_hu`` (the nearest contrast) and whether it
    stands in for another. Only for a ``linear`` method (FBP: its TTF does not depend on contrast)
    does the nearest found rod stand in when that one's edge is not found; a denoiser's TTF at
    another contrast would misstate its d', so it gets none."""
    order = sorted(rods, key=lambda r: abs(r.hu - task_hu))
    for i, rod in enumerate(order if linear else order[:1]):
        if not isinstance(ttfs[rod.hu], str):
            return rod.hu, i > 0
    return None, False


def _lesion_rows(stats: list[list[iq.LesionStat]]) -> list[dict]:
    """Per lesion (over realisations): diameter, true contrast, mean kept (and its standard error),
    mean CNR."""
    rows = []
    for i in range(len(stats[0])):
        per = [s[i] for s in stats]
        kept = np.array([p.kept for p in per], dtype=np.float64)
        cnr = np.array([p.cnr for p in per], dtype=np.float64)
        kept, cnr = kept[np.isfinite(kept)], cnr[np.isfinite(cnr)]
        rows.append(
            {
                "diameter_mm": per[0].diameter_mm,
                "true_contrast_hu": float(np.mean([p.true_contrast_hu for p in per])),
                "kept": float(kept.mean()) if kept.size else float("nan"),
                "kept_se": float(kept.std(ddof=1) / np.sqrt(kept.size)) if kept.size > 1 else float("nan"),
                "cnr": float(cnr.mean()) if cnr.size else float("nan"),
                "n": int(kept.size),
            }
        )
    return rows


def by_size(rows: list[dict], low_contrast: bool | None = None) -> list[dict]:
    """Mean kept (with a pooled standard error) and CNR per lesion-diameter bin of ``SIZE_BINS_MM``;
    ``low_contrast``: only lesions under (True) or over (False) ``LOW_CONTRAST_HU``."""
    out = []
    for lo, hi in zip(SIZE_BINS_MM[:-1], SIZE_BINS_MM[1:], strict=True):
        sel = [
            r
            for r in rows
            if lo <= r["diameter_mm"] < hi
            and np.isfinite(r["kept"])
            and (low_contrast is None or (abs(r["true_contrast_hu"]) < LOW_CONTRAST_HU) == low_contrast)
        ]
        if not sel:
            continue
        se = [r["kept_se"] for r in sel if np.isfinite(r["kept_se"])]
        out.append(
            {
                "size_bin_mm": [lo, hi],
                "diameter_mm": float(np.mean([r["diameter_mm"] for r in sel])),
                "lesions": len(sel),
                "kept": float(np.mean([r["kept"] for r in sel])),
                "kept_se": float(np.sqrt(np.sum(np.square(se))) / len(se))
                if len(se) == len(sel)
                else float("nan"),
                "cnr": float(np.nanmean([r["cnr"] for r in sel])),
            }
        )
    return out


def measure_qa(
    outputs: list[np.ndarray], truths: list[np.ndarray], ph, roi: int, linear: bool = False
) -> dict:
    """Every QA measurement of one method at one dose: ``outputs`` (K, H, W) per scanner draw and
    the noise-free reconstruction of each draw (``truths``). ``linear``: the method is FBP itself
    (the LDCT input, the normal-dose scan), whose TTF does not depend on contrast."""
    px = ph.pixel_size_mm
    noise = [iq.noise_from_ensemble(o) for o in outputs]
    spectrum = iq.nps(np.concatenate(noise), px, roi=roi, mask=ph.uniform)
    stack = np.concatenate(outputs)
    rods = ph.ttf_inserts
    ttfs = {rod.hu: _ttf(stack, rod, px) for rod in rods}
    tasks = []
    for les in ph.lesions:
        task = iq.DiscTask(les.diameter_mm, les.hu)
        rod, substitute = _rod_for(les.hu, rods, ttfs, linear)
        d = None if rod is None else iq.detectability(spectrum, ttfs[rod], task)
        tasks.append(
            {
                "diameter_mm": les.diameter_mm,
                "contrast_hu": les.hu,
                "npw": float("nan") if d is None else d.npw,
                "npwe": float("nan") if d is None else d.npwe,
                "ttf_rod_hu": rod,
                "ttf_substituted": substitute,
            }
        )
    stats = [
        iq.lesion_stats(o[k], ph.lesions, pixel_size_mm=px, truth=t, noise=n[k], valid=ph.body)
        for o, t, n in zip(outputs, truths, noise, strict=True)
        for k in range(len(o))
    ]
    lesions = _lesion_rows(stats)
    return {
        "nps": _nps_json(spectrum),
        "ttf": {f"{hu:g}": _ttf_json(r) for hu, r in ttfs.items()},
        "tasks": tasks,
        "lesions": lesions,
        "lesions_low_by_size": by_size(lesions, True),
        "lesions_high_by_size": by_size(lesions, False),
    }


def measure_anatomical(images: list[np.ndarray], recs: list[dict], convention: str) -> dict:
    """PSNR/SSIM/RMSE (``convention``) against the reference and lesion contrast kept and CNR (noise =
    image - reference) of one method at one dose on the anatomical test slices."""
    scores, lesions = [], []
    for img, rec in zip(images, recs, strict=True):
        ref, ph = rec["target"], rec["phantom"]
        scores.append(
            {
                "psnr": metrics.psnr(img, ref, convention=convention),
                "ssim": metrics.ssim(img, ref, convention=convention),
                "rmse_hu": metrics.rmse_hu(img, ref, convention=convention),
            }
        )
        if ph.lesions:
            st = iq.lesion_stats(
                img, ph.lesions, pixel_size_mm=ph.pixel_size_mm, truth=ref, noise=np.asarray(img) - ref
            )
            lesions += [
                {
                    "slice": rec["id"],
                    "diameter_mm": s.diameter_mm,
                    "true_contrast_hu": s.true_contrast_hu,
                    "kept": s.kept,
                    "kept_se": float("nan"),
                    "cnr": s.cnr,
                    "n": 1,
                }
                for s in st
            ]
    kept = np.array([r["kept"] for r in lesions], dtype=np.float64)
    kept = kept[np.isfinite(kept)]
    out = {k: float(np.mean([s[k] for s in scores])) for k in ("psnr", "ssim", "rmse_hu")}
    out.update(
        {
            "slices": len(images),
            "lesions": lesions,
            "lesion_kept": float(kept.mean()) if kept.size else float("nan"),
            "lesion_kept_se": float(kept.std(ddof=1) / np.sqrt(kept.size)) if kept.size > 1 else float("nan"),
            "lesions_by_size": by_size(lesions),
        }
    )
    return out
