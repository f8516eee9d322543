"""The image estimate's calibration against ctdn.sim: noise model, kernel gains, kernel inference.

Noise model (reference kernel: the simulator's default Hann filter at cutoff 1). In flat soft
tissue, the mode over small windows of ``local std / sqrt(A)``, ``A`` the view average of exp(p)
through the window (:mod:`ctdn.dose.image`), follows

    m^2 = G^2 * NOISE_A / dose * (1 + NOISE_C * R / dose)

with ``G`` the kernel's noise gain, ``R`` the median of mean exp(2p) / mean exp(p) (the
electronic-noise term, which grows as 1/dose^2 where few photons arrive). ``dose`` follows by
solving this quadratic in 1/dose. How the constants were measured: docs/dose.md and
``python -m ctdn.train.dose_eval calibrate``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..errors import InputError
from ..sim.geometry import FILTERS, REFERENCE_APERTURE_MM

__all__ = [
    "NOISE_A",
    "NOISE_C",
    "LOG_SCATTER",
    "LOG_SCATTER_INFERRED",
    "RHO1_HANN_POLY",
    "RHO1_FILTERS",
    "REFERENCE_KERNEL",
    "kernel_gain",
    "parse_kernel",
    "infer_gain",
    "dose_from_noise",
]

REFERENCE_KERNEL = ("hann", 1.0)
NOISE_A = 0.305  # m^2 * dose at the reference kernel where electronic noise is negligible
NOISE_C = 6.0e-6  # weight of the electronic-noise term
LOG_SCATTER = 0.21  # std of ln(estimate / true dose) per slice on the calibration set, kernel known
LOG_SCATTER_INFERRED = 0.41  # ... with the kernel inferred (std on the evaluation set)
ROLL_OFF_POWER = 3  # noise power roll-off sinc(f a)^3 of the projector's and back-projector's interpolation
GAIN_LIMITS = (0.5, 3.0)  # an inferred gain never leaves this range

# Kernel inference. The median lag-1 autocorrelation of the noise in flat soft tissue depends on
# the kernel and on the pixel size (and, less, on where the tissue lies in the fan). For the Hann
# reference it is the quadratic RHO1_HANN_POLY in the pixel size (mm, highest power first); the
# other calibration filters' values, measured on the same images, map from the Hann value through
# RHO1_FILTERS (columns: hann, cosine, shepp-logan, ramp; values within 0.005 of the
# previous column's are moved to keep the rows decreasing).
RHO1_HANN_POLY = (0.5701, -1.9043, 1.6161)
RHO1_FILTER_NAMES = ("hann", "cosine", "shepp-logan", "ramp")
RHO1_FILTERS = (
    (0.077, -0.022, -0.040, -0.045),
    (0.262, 0.125, -0.009, -0.046),
    (0.463, 0.330, 0.115, 0.044),
    (0.569, 0.420, 0.168, 0.087),
    (0.772, 0.667, 0.470, 0.404),
    (0.817, 0.722, 0.533, 0.465),
)
INFERENCE_MAX_PIXEL_MM = 1.1  # coarser pixels sample the noise too sparsely to tell kernels apart


def _window(name: str, f: np.ndarray) -> np.ndarray:
    """ctdn.sim's apodisation windows on frequency / cutoff frequency (1 at the cutoff)."""
    if name == "ramp":
        w = np.ones_like(f)
    elif name == "shepp-logan":
        w = np.sinc(f / 2)
    elif name == "cosine":
        w = np.cos(np.pi * f / 2)
    elif name == "hamming":
        w = 0.54 + 0.46 * np.cos(np.pi * f)
    else:
        w = 0.5 + 0.5 * np.cos(np.pi * f)
    return np.where(f <= 1.0, w, 0.0)


@lru_cache(maxsize=64)
def kernel_gain(name: str, cutoff: float = 1.0) -> float:
    """Noise std of a ctdn.sim FBP filter relative to the reference kernel at the same dose.

    From the 2-D noise power of filtered back-projection, ``f * W(f)^2`` times the interpolation
    roll-off, integrated up to the detector's Nyquist frequency.
    """
    a = REFERENCE_APERTURE_MM
    f = np.linspace(0.0, 0.5 / a, 4001)[1:]
    roll = np.sinc(f * a) ** ROLL_OFF_POWER

    def power(n: str, c: float) -> float:
        return float(np.sum(f * f * _window(n, f / (c * 0.5 / a)) ** 2 * roll))

    return math.sqrt(power(name, cutoff) / power(*REFERENCE_KERNEL))


def parse_kernel(kernel) -> tuple[str, float] | None:
    """A ctdn.sim filter given as ``"hann"``, ``"hann@0.8"`` or ``("hann", 0.8)``; None if it is not one."""
    if isinstance(kernel, (tuple, list)) and len(kernel) == 2:
        name, cutoff = kernel
    elif isinstance(kernel, str):
        name, _, cut = kernel.strip().lower().partition("@")
        try:
            cutoff = float(cut) if cut else 1.0
        except ValueError:
            return None
    else:
        return None
    name = str(name).strip().lower().replace("_", "-")
    name = {"ram-lak": "ramp", "shepp_logan": "shepp-logan", "hanning": "hann"}.get(name, name)
    if name not in FILTERS:
        return None
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not 0 < cutoff <= 1:
        raise InputError(f"kernel cutoff must be a number in (0, 1], got {cutoff!r}")
    return name, float(cutoff)


def infer_gain(rho1: float, px: float) -> float:
    """Kernel noise gain from the measured lag-1 autocorrelation at pixel size ``px`` (mm).

    Each calibration filter's expected autocorrelation at ``px`` is looked up; ln(gain) is then
    interpolated between the filters at the measured value, and extrapolated along the end
    segments (kernels smoother than Hann or sharper than the ramp) within ``GAIN_LIMITS``.
    """
    hann = float(np.polyval(RHO1_HANN_POLY, float(np.clip(px, 0.45, 1.6))))
    cols = np.array(RHO1_FILTERS).T
    pts = sorted(
        (float(np.interp(hann, cols[0], cols[i])), math.log(kernel_gain(name)))
        for i, name in enumerate(RHO1_FILTER_NAMES)
    )
    xs, ys = (np.array(v) for v in zip(*pts, strict=True))
    if rho1 > xs[-1]:
        g = ys[-1] + (rho1 - xs[-1]) * (ys[-1] - ys[-2]) / max(xs[-1] - xs[-2], 1e-3)
    elif rho1 < xs[0]:
        g = ys[0] + (rho1 - xs[0]) * (ys[1] - ys[0]) / max(xs[1] - xs[0], 1e-3)
    else:
        g = float(np.interp(rho1, xs, ys))
    return float(np.clip(math.exp(g), *GAIN_LIMITS))


def dose_from_noise(norm_gnl: float, atten2: float, gain: float) -> float:
    """Dose that gives the normalised noise level ``norm_gnl`` (see the module docstring)."""
    y = norm_gnl**2 / (gain * gain * NOISE_A)  # = 1/dose + NOISE_C * R / dose^2
    cr = NOISE_C * atten2
    if cr * y < 1e-9:
        return 1.0 / y
    return 2.0 * cr / (math.sqrt(1.0 + 4.0 * cr * y) - 1.0)
