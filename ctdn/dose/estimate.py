"""``estimate_dose``: the dose of a CT volume from its noise and, where given, its DICOM header."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..hu import check_hu, check_hu_lazy
from ..sim.simulator import DEFAULT_FOV_MM
from . import calibration as cal
from . import header as hdr
from .image import SliceStats, hu_problem, slice_stats

__all__ = ["DoseEstimate", "DoseEstimateError", "estimate_dose", "SUPPORTED_DOSE_RANGE", "DISAGREEMENT"]

SUPPORTED_DOSE_RANGE = (0.05, 2.0)
DISAGREEMENT = 1.5  # header and image estimates further apart than this factor are reported
Z90 = 1.6449


class DoseEstimateError(InputError):
    """The dose cannot be estimated from this input; the message says why and asks for ``dose=``."""


@dataclass(frozen=True)
class DoseEstimate:
    """A dose estimate for a volume (fractions of a routine full dose) and how it was reached."""

    dose: float
    interval: tuple[float, float]
    noise_hu: float
    method: str  # "image", "header" or "image+header"
    slice_doses: np.ndarray
    slice_noise_hu: np.ndarray
    water_diameter_mm: np.ndarray
    kernel: str
    kernel_gain: float
    pixel_size_mm: float
    region: str
    image_dose: float | None = None
    header_dose: float | None = None
    header_values: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        lo, hi = self.interval
        parts = [f"dose {self.dose:.3g} (90 % {lo:.3g}-{hi:.3g}) from the {self.method}"]
        if np.isfinite(self.noise_hu):
            parts.append(f"noise {self.noise_hu:.1f} HU in soft tissue")
        dw = self.water_diameter_mm[np.isfinite(self.water_diameter_mm)]
        if dw.size:
            parts.append(f"D_w {np.median(dw) / 10:.1f} cm")
        if self.slice_doses.size > 1:
            parts.append(f"slices {self.slice_doses.min():.3g}-{self.slice_doses.max():.3g}")
        if self.header_dose is not None and self.method != "header":
            parts.append(f"header {self.header_dose:.3g}")
        line = ", ".join(parts)
        return line + (f" [{len(self.notes)} note(s)]" if self.notes else "")


# -- inputs ---------------------------------------------------------------------------------------
def _pixel_size(pixel_size_mm, infos: list[hdr.HeaderInfo], shape, notes: list[str]) -> float:
    if pixel_size_mm is not None:
        vals = np.atleast_1d(np.asarray(pixel_size_mm, dtype=object))
        ok = vals.size in (1, 2) and all(
            isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, (bool, np.bool_))
            and math.isfinite(v)
            and v > 0
            for v in vals
        )
        if not ok:
            raise InputError(
                f"pixel_size_mm must be a positive number (or a row, column pair), got {pixel_size_mm!r}"
            )
        return float(math.sqrt(float(vals[0]) * float(vals[-1])))
    spacing = [i.pixel_size_mm for i in infos if i.pixel_size_mm is not None]
    if spacing:
        notes.append(f"pixel size {spacing[0]:.3g} mm from the header's PixelSpacing")
        return float(spacing[0])
    px = DEFAULT_FOV_MM / max(shape)
    notes.append(
        f"pixel size not given: assumed {px:.3g} mm ({DEFAULT_FOV_MM:g} mm field of view / {max(shape)} "
        "pixels); the patient's size and so the dose depend on it: pass pixel_size_mm"
    )
    return px


def _headers(header, n: int) -> list[hdr.HeaderInfo]:
    if header is None:
        return []
    if isinstance(header, Mapping) or not isinstance(header, Sequence) or isinstance(header, (str, bytes)):
        return [hdr.read_header(header)]
    items = list(header)
    if len(items) not in (1, n):
        raise InputError(f"header: give one header or one per slice ({n}), got {len(items)}")
    return [hdr.read_header(h) for h in items]


def _kernel(kernel, infos: list[hdr.HeaderInfo]) -> tuple[float | None, str, str | None]:
    """(noise gain, description, why it must be inferred); gain None: infer it from the texture."""
    if kernel is not None:
        parsed = cal.parse_kernel(kernel)
        if parsed is not None:
            return cal.kernel_gain(*parsed), f"{parsed[0]}@{parsed[1]:g} (given)", None
        return None, f"{kernel} (gain inferred)", f"kernel {kernel!r} is not a ctdn.sim filter"
    names = [i.kernel for i in infos if i.kernel]
    if names:
        parsed = cal.parse_kernel(names[0])
        if parsed is not None:
            return cal.kernel_gain(*parsed), f"{parsed[0]}@{parsed[1]:g} (header)", None
        return (
            None,
            f"{names[0]} (gain inferred)",
            f"header ConvolutionKernel {names[0]!r} is not a ctdn.sim filter",
        )
    return None, "inferred from the noise texture", None


def _pick_slices(n: int, max_slices: int | None) -> np.ndarray:
    if max_slices is None or n <= max_slices:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_slices).round().astype(np.int64))


# -- per-slice doses ------------------------------------------------------------------------------
def _running_median(log_d: np.ndarray, width: int) -> np.ndarray:
    """Running median over ``width`` slices, ignoring NaN; slices without a value take the nearest."""
    n = log_d.size
    out = np.full(n, np.nan)
    half = max(0, width // 2)
    for i in range(n):
        win = log_d[max(0, i - half) : i + half + 1]
        win = win[np.isfinite(win)]
        if win.size:
            out[i] = np.median(win)
    ok = np.flatnonzero(np.isfinite(out))
    if ok.size and ok.size < n:
        out = np.interp(np.arange(n), ok, out[ok])
    return out


def _region(region, infos: list[hdr.HeaderInfo], stats: list[SliceStats], notes: list[str]) -> str:
    if region is not None:
        if region not in hdr.REGIONS:
            raise InputError(f"region must be one of {', '.join(hdr.REGIONS)}, got {region!r}")
        return region
    for info in infos:
        r = hdr.region_from_body_part(info.body_part)
        if r is not None:
            return r
    lung = np.nanmedian([s.lung_fraction for s in stats])
    bone = np.nanmedian([s.bone_fraction for s in stats])
    dw = np.nanmedian([s.water_diameter_mm for s in stats])
    guess = "chest" if lung > 0.1 else "head" if (dw < 230 and bone > 0.08) else "abdomen"
    if infos:
        notes.append(f"body region {guess!r} judged from the image (lung {lung:.0%}, bone {bone:.0%})")
    return guess


def _clip(d: float) -> float:
    return float(np.clip(d, *SUPPORTED_DOSE_RANGE))


def _header_part(infos, region, reference, mgy_per_mas, notes) -> tuple[float | None, dict]:
    doses, values = [], {}
    for info in infos:
        d, how = hdr.header_dose(info, region, reference, mgy_per_mas)
        if d is not None:
            doses.append(d)
            values.setdefault("computed", how)
        for k, v in info.used().items():
            values.setdefault(k, v)
        notes.extend(n for n in info.notes if n not in notes)
    if infos and not doses:
        notes.append("the header has neither CTDIvol nor an exposure in mAs: no dose from it")
    if doses and "CTDIvol" not in values:
        notes.append("header dose from mAs with a typical scanner output: uncertain by about 2x")
    return (float(np.median(doses)) if doses else None), values


# -- the estimate ---------------------------------------------------------------------------------
def estimate_dose(
    volume,
    *,
    pixel_size_mm=None,
    header=None,
    kernel=None,
    region: str | None = None,
    reference_ctdivol: Mapping[str, float] | None = None,
    mgy_per_mas: Mapping[str, float] | None = None,
    smooth_slices: int = 5,
    max_slices: int | None = 64,
) -> DoseEstimate:
    """Estimate the dose (fraction of a routine full dose) of a CT slice (H, W) or volume (N, H, W) in HU.

    From the image: the noise of flat soft tissue, normalised by the attenuation of the patient
    along every view through it, against the calibration of ctdn.sim (dose 1 gives about 10 HU
    in the centre of a 30 cm water-like body with the default Hann kernel); per slice, smoothed
    by a running median over ``smooth_slices`` slices. ``kernel`` is a ctdn.sim filter (``"hann"``,
    ``"ramp@0.8"``, ...); otherwise its noise gain is inferred from the noise texture. From the
    ``header`` (a pydicom Dataset or a dict of DICOM keywords, or one per slice): CTDIvol, or mAs
    and kVp, against ``reference_ctdivol`` for the body region (``region`` or BodyPartExamined, or
    judged from the image); it also supplies the pixel size and the kernel when not given.
    At most ``max_slices`` evenly spaced slices are measured (None: all); the others are
    interpolated. Raises :class:`DoseEstimateError` when neither the image nor the header gives a dose.
    """
    arr = check_hu_lazy(volume, name="volume")
    problem = hu_problem(np.asarray(arr))
    if problem is not None:
        raise DoseEstimateError(
            f"cannot estimate the dose: the image is evidently not in HU ({problem}); pass dose="
        )
    stack = arr if arr.ndim == 3 else arr[None]
    n = stack.shape[0]
    reference, per_mas = _check_args(smooth_slices, max_slices, reference_ctdivol, mgy_per_mas)
    notes: list[str] = []
    infos = _headers(header, n)
    px = _pixel_size(pixel_size_mm, infos, stack.shape[-2:], notes)
    gain, kernel_desc, why_infer = _kernel(kernel, infos)
    picked = _pick_slices(n, max_slices)
    stats = [slice_stats(check_hu(stack[i], name="volume"), px) for i in picked]
    usable = _usable(stats, notes)
    known_kernel = gain is not None
    if gain is None:
        gain, kernel_desc = _inferred_gain(stats, usable, px, kernel_desc, notes)
        if why_infer is not None and any(usable):
            notes.append(f"{why_infer}: its noise gain was inferred from the image")
    reg = _region(region, infos, stats, notes)
    header_d, header_values = _header_part(infos, reg, reference, per_mas, notes)
    dw_picked = np.array([s.water_diameter_mm for s in stats])
    _note_wed(infos, dw_picked, notes)

    image = _image_doses(stats, usable, picked, n, gain, smooth_slices)
    if image is None and header_d is None:
        raise DoseEstimateError(
            f"cannot estimate the dose: {_why_not(stats)}, and no dose in a DICOM header; pass dose="
        )
    if image is None:
        notes.append(f"{_why_not(stats)}: the dose comes from the header alone")
        method, dose, image_d = "header", header_d, None
        log_slices = np.full(n, math.log(header_d))
        scatter = math.log(1.3 if "CTDIvol" in header_values else 2.0) / Z90
    else:
        image_d, log_slices, spread = image
        method = "image+header" if any(i.used() for i in infos) else "image"
        dose = image_d
        scatter = math.hypot(cal.LOG_SCATTER if known_kernel else cal.LOG_SCATTER_INFERRED, spread)
        if header_d is not None and max(header_d, image_d) / min(header_d, image_d) > DISAGREEMENT:
            notes.append(
                f"header and image disagree by {max(header_d, image_d) / min(header_d, image_d):.1f}x "
                f"(header {header_d:.3g}: {header_values['computed']}; image {image_d:.3g}); the image "
                "estimate is used, as it measures the noise the denoiser sees"
            )
    gnl = np.full(n, np.nan)
    gnl[picked] = [s.gnl_hu for s in stats]
    dw = np.interp(np.arange(n), picked, dw_picked) if picked.size > 1 else np.full(n, dw_picked[0])
    return _finish(
        dose,
        scatter,
        log_slices,
        notes,
        method=method,
        slice_noise_hu=gnl,
        water_diameter_mm=dw,
        kernel=kernel_desc,
        kernel_gain=float(gain),
        pixel_size_mm=float(px),
        region=reg,
        image_dose=image_d,
        header_dose=header_d,
        header_values=header_values,
    )


def _check_args(smooth_slices, max_slices, reference_ctdivol, mgy_per_mas) -> tuple[dict, dict]:
    """Validate the options; return the reference and mGy-per-mAs tables with the overrides applied."""
    if isinstance(smooth_slices, bool) or not isinstance(smooth_slices, int) or smooth_slices < 1:
        raise InputError(f"smooth_slices must be a positive integer, got {smooth_slices!r}")
    if max_slices is not None and (
        isinstance(max_slices, bool) or not isinstance(max_slices, int) or max_slices < 1
    ):
        raise InputError(f"max_slices must be a positive integer or None, got {max_slices!r}")
    reference = {**hdr.REFERENCE_CTDIVOL, **(reference_ctdivol or {})}
    per_mas = {**hdr.MGY_PER_MAS, **(mgy_per_mas or {})}
    for name, table in (("reference_ctdivol", reference), ("mgy_per_mas", per_mas)):
        ok = all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
            for v in table.values()
        )
        if not ok or set(table) - set(hdr.REGIONS):
            raise InputError(f"{name} maps {', '.join(hdr.REGIONS)} to positive numbers, got {dict(table)!r}")
    return reference, per_mas


def _inferred_gain(stats, usable, px: float, desc: str, notes: list[str]) -> tuple[float, str]:
    """The kernel's noise gain from the median lag-1 autocorrelation of the usable slices."""
    rhos = [s.rho1 for s, ok in zip(stats, usable, strict=True) if ok]
    if not rhos:
        return 1.0, desc
    rho1 = float(np.median(rhos))
    gain = cal.infer_gain(rho1, px)
    if px > cal.INFERENCE_MAX_PIXEL_MM:
        notes.append(
            f"pixels of {px:.2g} mm are too coarse to tell kernels apart by their noise texture: "
            "pass kernel= for a reliable estimate"
        )
    return gain, f"{desc}: noise gain {gain:.2f} x the Hann kernel's (lag-1 correlation {rho1:.2f})"


def _image_doses(stats, usable, picked: np.ndarray, n: int, gain: float, smooth: int):
    """(volume dose, per-slice log doses, their spread) from the image, or None."""
    if not any(usable):
        return None
    raw = np.full(n, np.nan)
    raw[picked] = [
        math.log(cal.dose_from_noise(s.norm_gnl, s.atten2, gain)) if ok else np.nan
        for s, ok in zip(stats, usable, strict=True)
    ]
    # The running median runs over the measured slices; the others take interpolated values.
    log_slices = _running_median(raw, smooth)
    known = np.flatnonzero(np.isfinite(raw))
    filled = np.interp(np.arange(n), known, log_slices[known])
    log_slices = np.where(np.isfinite(raw) | ~np.isin(np.arange(n), picked), filled, log_slices)
    image_d = float(math.exp(np.median(log_slices[picked])))
    spread = 1.4826 * float(np.median(np.abs(log_slices[picked] - math.log(image_d))))
    return image_d, log_slices, spread


def _usable(stats: list[SliceStats], notes: list[str]) -> list[bool]:
    """Which measured slices give an image estimate; notes say why the others do not."""
    counts = {
        "no flat soft tissue (smoothed 0-100 HU, away from edges)": sum(not s.has_soft_tissue for s in stats),
        "no measurable noise in soft tissue (an interpolated or processed image)": sum(
            s.has_soft_tissue and not s.has_noise for s in stats
        ),
        "the patient cut by the image edge (the attenuation outside it is not seen)": sum(
            s.has_noise and s.truncated for s in stats
        ),
    }
    usable = [s.has_noise and not s.truncated for s in stats]
    if any(usable):
        for why, k in counts.items():
            if k:
                notes.append(f"{why} in {k} of {len(stats)} measured slice(s): their dose is interpolated")
    return usable


def _why_not(stats: list[SliceStats]) -> str:
    """Why no measured slice gives an image estimate (the commonest reason)."""
    if not any(s.has_soft_tissue for s in stats):
        return "no flat soft tissue (smoothed 0-100 HU, away from edges) in any slice"
    if not any(s.has_noise for s in stats):
        return (
            "no measurable noise in the soft tissue of any slice (the image looks interpolated or processed)"
        )
    return "the patient is cut by the image edge in every slice, so its attenuation is not known"


def _note_wed(infos, dw_picked: np.ndarray, notes: list[str]) -> None:
    weds = [i.water_diameter_mm for i in infos if i.water_diameter_mm is not None]
    ok = dw_picked[np.isfinite(dw_picked)]
    if weds and ok.size:
        h, m = float(np.median(weds)), float(np.median(ok))
        if abs(h - m) > 0.1 * h:
            notes.append(f"header WaterEquivalentDiameter {h:.0f} mm, image {m:.0f} mm")


def _finish(dose: float, scatter: float, log_slices: np.ndarray, notes: list[str], **fields) -> DoseEstimate:
    """The estimate: the interval from the log scatter, everything clipped to the supported range."""
    lo_d, hi_d = SUPPORTED_DOSE_RANGE
    lo, hi = dose * math.exp(-Z90 * scatter), dose * math.exp(Z90 * scatter)
    slices = np.exp(log_slices)
    if not lo_d <= dose <= hi_d or ((slices < lo_d) | (slices > hi_d)).any():
        notes.append(
            f"estimate {dose:.3g} (slices {slices.min():.3g}-{slices.max():.3g}) clipped to the supported "
            f"range {lo_d:g}-{hi_d:g}"
        )
    noise = fields.pop("slice_noise_hu")
    finite = noise[np.isfinite(noise)]
    return DoseEstimate(
        dose=_clip(dose),
        interval=(_clip(lo), _clip(hi)),
        noise_hu=float(np.median(finite)) if finite.size else float("nan"),
        slice_doses=np.clip(slices, lo_d, hi_d),
        slice_noise_hu=noise,
        notes=tuple(notes),
        **fields,
    )
