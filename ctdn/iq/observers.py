"""Model-observer detectability d' of a disc from a measured NPS and TTF, by AAPM TG-233.

For a disc of diameter D and contrast C the task function is the disc's Fourier transform,
``W(f) = C * pi R^2 * 2 J1(2 pi R f) / (2 pi R f)`` (HU mm^2, R = D / 2). On the NPS's 2-D
frequency grid, with the TTF made 2-D by its radial value T(|f|):

    NPW:   d'^2 = [sum |W|^2 T^2]^2 / sum |W|^2 T^2 NPS
    NPWE:  d'^2 = [sum |W|^2 T^2 E^2]^2 / (sum |W|^2 T^2 E^4 NPS + sum |W|^2 T^2 E^2 N_i)

(sums times the frequency-cell area). ``E`` is the eye filter :class:`EyeFilter`, normalised to
a peak of 1, and ``N_i`` an optional internal noise (HU^2 mm^2, 0 by default).

Two sampling details keep the sums honest. The NPS's DC sample is zero after per-ROI detrending,
which is an artefact of the estimate, not of the noise: it is replaced by the mean of its four
neighbours. And a sum over frequency cells of width 1/L equals the integral of |W|^2 only if
L is at least the disc's diameter (Poisson summation: the disc's autocorrelation reaches D);
the grid is kept at L >= 2 D, leaving room for the noise correlation in the denominator, by
interpolating the NPS (bilinearly, periodically) onto a finer grid where the ROI is smaller. The sums run over
the Nyquist square, so the part of the disc's spectrum above the Nyquist frequency is left out
(for a 10 mm disc at 0.5 mm pixels about 2 % of |W|^2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.special import j1

from ..errors import InputError, InputTypeError
from ._checks import is_number, positive
from .nps import NPSResult
from .ttf import TTFResult

__all__ = ["DiscTask", "EyeFilter", "Detectability", "detectability", "disc_spectrum"]


@dataclass(frozen=True)
class DiscTask:
    """Detect a uniform disc of ``diameter_mm`` and ``contrast_hu`` (either sign) on its background."""

    diameter_mm: float
    contrast_hu: float

    def __post_init__(self) -> None:
        positive(self.diameter_mm, "task diameter_mm")
        if not is_number(self.contrast_hu) or self.contrast_hu == 0:
            raise InputError(f"task contrast_hu must be a non-zero number, got {self.contrast_hu!r}")


@dataclass(frozen=True)
class EyeFilter:
    """The human visual system's response E(rho) = rho^n exp(-c rho^2), rho in cycles/degree.

    TG-233's form: n = 1.3 and c = n / (2 rho_peak^2), so E peaks at ``peak_cpd`` = 4 cycles/degree.
    An image frequency f (cycles/mm in the object) is seen at rho = f * R * pi / (180 * zoom)
    cycles/degree, for a viewing distance R and a display ``zoom`` (displayed mm per object mm;
    TG-233's D / FOV, a display of size D showing a field of view FOV). The defaults, 500 mm and
    life size, put the peak at 0.46 cycles/mm.
    """

    n: float = 1.3
    peak_cpd: float = 4.0
    viewing_distance_mm: float = 500.0
    zoom: float = 1.0

    def __post_init__(self) -> None:
        for name in ("n", "peak_cpd", "viewing_distance_mm", "zoom"):
            positive(getattr(self, name), f"eye filter {name}")

    def cycles_per_degree(self, f_mm) -> np.ndarray:
        """Object frequency (cycles/mm) -> visual frequency (cycles/degree)."""
        return np.asarray(f_mm, dtype=np.float64) * self.viewing_distance_mm * math.pi / (180.0 * self.zoom)

    def __call__(self, f_mm) -> np.ndarray:
        rho = self.cycles_per_degree(np.abs(f_mm))
        c = self.n / (2.0 * self.peak_cpd**2)
        peak = self.peak_cpd**self.n * math.exp(-c * self.peak_cpd**2)
        return rho**self.n * np.exp(-c * rho * rho) / peak


@dataclass(frozen=True)
class Detectability:
    """NPW and NPWE d' of one disc task, with the settings used."""

    npw: float
    npwe: float
    task: DiscTask
    eye: EyeFilter = field(default_factory=EyeFilter)
    internal_noise: float = 0.0


def disc_spectrum(f_mm, diameter_mm: float, contrast_hu: float) -> np.ndarray:
    """Fourier transform of a disc (HU mm^2) at radial frequencies ``f_mm``: C pi R^2 jinc."""
    f = np.abs(np.asarray(f_mm, dtype=np.float64))
    radius = 0.5 * diameter_mm
    x = 2.0 * math.pi * radius * f
    safe = np.where(x > 0, x, 1.0)
    return contrast_hu * math.pi * radius**2 * np.where(x > 0, 2.0 * j1(safe) / safe, 1.0)


def _grid(nps_result: NPSResult, diameter_mm: float):
    """(fy, fx, NPS) on a grid fine enough for the task: cell size at most 1 / (2 D) cycles/mm."""
    table = np.array(nps_result.nps_2d, dtype=np.float64)
    n = table.shape[0]
    mid = n // 2
    table[mid, mid] = 0.25 * (
        table[mid - 1, mid] + table[mid + 1, mid] + table[mid, mid - 1] + table[mid, mid + 1]
    )
    dy, dx = nps_result.pixel_size_mm
    m = max(1, math.ceil(2.0 * diameter_mm / (n * min(dx, dy)) - 1e-9))
    if m == 1:
        return nps_result.fy[:, None], nps_result.fx[None, :], table
    k = np.arange(-(n * m) // 2, (n * m) // 2) / m  # fine grid in units of the coarse step
    rows, cols = np.meshgrid(k + mid, k + mid, indexing="ij")
    fine = ndimage.map_coordinates(table, [rows, cols], order=1, mode="grid-wrap")
    return (k / (n * dy))[:, None], (k / (n * dx))[None, :], fine


def detectability(
    nps_result: NPSResult,
    ttf_result: TTFResult | None,
    task: DiscTask | None = None,
    *,
    diameter_mm: float | None = None,
    contrast_hu: float | None = None,
    eye: EyeFilter | None = None,
    internal_noise: float = 0.0,
) -> Detectability:
    """NPW and NPWE d' of a disc task (a :class:`DiscTask`, or ``diameter_mm`` and ``contrast_hu``).

    ``ttf_result`` None means an ideal system (TTF = 1 at every frequency).
    """
    if not isinstance(nps_result, NPSResult):
        raise InputTypeError(f"nps_result must be what ctdn.iq.nps returns, got {type(nps_result).__name__}")
    if ttf_result is not None and not isinstance(ttf_result, TTFResult):
        raise InputTypeError(
            f"ttf_result must be what ctdn.iq.ttf returns or None, got {type(ttf_result).__name__}"
        )
    if task is None:
        if diameter_mm is None or contrast_hu is None:
            raise InputError("give a DiscTask, or both diameter_mm and contrast_hu")
        task = DiscTask(diameter_mm, contrast_hu)
    elif not isinstance(task, DiscTask):
        raise InputTypeError(f"task must be a DiscTask, got {type(task).__name__}")
    eye = eye or EyeFilter()
    if not is_number(internal_noise) or internal_noise < 0:
        raise InputError(f"internal_noise must be a non-negative number (HU^2 mm^2), got {internal_noise!r}")
    fy, fx, noise = _grid(nps_result, task.diameter_mm)
    fr = np.hypot(fy, fx)
    cell = float((fx[0, 1] - fx[0, 0]) * (fy[1, 0] - fy[0, 0]))
    signal = disc_spectrum(fr, task.diameter_mm, task.contrast_hu) ** 2
    if ttf_result is not None:
        signal = signal * np.interp(fr, ttf_result.f, ttf_result.ttf, right=0.0) ** 2
    if not float((signal * noise).sum()) > 0:
        raise InputError("the noise power spectrum is zero where the task has signal: d' is undefined")
    npw = float(signal.sum()) * cell / math.sqrt(float((signal * noise).sum()) * cell)
    e2 = eye(fr) ** 2
    den = float((signal * e2 * (e2 * noise + internal_noise)).sum()) * cell
    npwe = float((signal * e2).sum()) * cell / math.sqrt(den)
    return Detectability(npw=npw, npwe=npwe, task=task, eye=eye, internal_noise=float(internal_noise))
