"""Projection-domain low-dose simulation and noise insertion.

Physics (per detector reading):

- attenuation ``mu = MU_WATER * (1 + HU/1000)``, clipped at 0;
- line integral ``p`` by forward projection;
- counts ``N = Poisson(I0_eff * exp(-p)) + Normal(0, sigma_e^2)`` with
  ``I0_eff = i0 * dose * geometry.photon_scale``;
- counts below 1 are set to 1 before the log. Below one photon the log is undefined; clamping at 1
  is the common convention (it biases only photon-starved rays, which at the calibrated dose
  occur only behind metal or very large patients);
- ``p_noisy = log(I0_eff / N)``, filtered back-projection, back to HU.

``dose`` is the fraction of a routine full dose. ``DEFAULT_I0`` is calibrated so that dose 1 gives
about 10 HU noise std in the centre of a 300 mm soft-tissue cylinder at 0.70 mm pixels with the
default geometry and ramp filter (run :func:`calibrate_i0` to reproduce it).

Noise insertion (mode b) follows Yu et al., "Development and validation of a practical lower-dose
simulation tool for optimizing CT scan protocols", J Comput Assist Tomogr 36(4), 2012: the
projection-domain noise added to a real image acquired at full dose has variance

    (1-a)/a * exp(p)/I0 * (1 + (1+a)/a * sigma_e^2 * exp(p)/I0)

with ``a`` the dose ratio, so the result has the variance of a scan at dose ``a``.

Randomness: every (slice, dose) pair draws from its own generator seeded from
``SeedSequence(seed, spawn_key=(slice, dose))``, so a slice's noise does not depend on how slices
are batched, and ``simulate(x, 0.1, seed=s)`` equals ``simulate_doses(x, [0.1, ...], seed=s)[0.1]``.
The same seed gives the same noise on the same device type; CPU and CUDA streams differ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import DoseError, InputError
from ..hu import MU_WATER, check_hu
from .geometry import Geometry
from .projector import fbp, forward_project

__all__ = [
    "DEFAULT_I0",
    "DEFAULT_SIGMA_E",
    "DEFAULT_FOV_MM",
    "Simulator",
    "simulate",
    "simulate_doses",
    "insert_noise",
    "noiseless",
    "calibrate_i0",
    "check_dose",
]

# Photons per detector element per view at dose 1 (reference sampling; see Geometry.photon_scale).
# Calibrated with calibrate_i0(): 10 HU in a 300 mm, 40 HU cylinder at 512 x 0.703 mm, with the
# default geometry and Hann filter (a smooth kernel, as routine abdominal CT uses; the sharp ramp
# filter gives about 2.6x the noise at the same dose; python -m ctdn.sim.report).
DEFAULT_I0 = 9.4e5
# Electronic noise, std in photon counts per reading (of the order reported for clinical detectors).
DEFAULT_SIGMA_E = 5.0
# Values below this are padding outside the reconstructed field (e.g. -2000, -3024), not tissue:
# noise insertion leaves them unchanged.
PADDING_BELOW_HU = -1100.0
# Field of view assumed when no pixel size is given: 360 mm across the larger image dimension.
DEFAULT_FOV_MM = 360.0


def check_dose(dose, n: int | None = None, *, name: str = "dose") -> np.ndarray:
    """Validate a dose fraction (a scalar, or one per slice) and return it as float64 (n,)."""
    if isinstance(dose, torch.Tensor):
        dose = dose.detach().cpu().numpy()
    if isinstance(dose, (bool, np.bool_)) or dose is None or isinstance(dose, (str, bytes)):
        raise DoseError(f"{name} must be a number in (0, 1], got {dose!r}")
    try:
        arr = np.asarray(dose, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DoseError(f"{name} must be a number in (0, 1] or one per slice, got {dose!r}") from exc
    if arr.ndim > 1 or arr.size == 0:
        raise DoseError(f"{name} must be a scalar or a 1-D sequence, got shape {arr.shape}")
    if arr.ndim == 1 and n is not None and arr.size != n:
        raise DoseError(f"{name} has {arr.size} values but there are {n} slices")
    bad = ~np.isfinite(arr) | (arr <= 0) | (arr > 1)
    if bad.any():
        raise DoseError(
            f"{name} must be a fraction of the routine full dose in (0, 1] (e.g. 0.25 for 25 %), "
            f"got {arr[bad].ravel()[0]!r}"
        )
    return np.broadcast_to(arr, (n,) if n is not None else arr.shape).astype(np.float64)


def dose_key(dose: float) -> int:
    """A dose as an integer (micro-units), for seed derivation and exact comparison."""
    return int(round(dose * 1_000_000))


def derive_seed(entropy: int, *key: int) -> int:
    """A 63-bit seed for ``key`` under ``entropy``: distinct keys give independent streams."""
    ss = np.random.SeedSequence(entropy, spawn_key=key)
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def torch_generator(seed: int, device) -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def _generator(seed_entropy: int, slice_index: int, dose: float, device: torch.device) -> torch.Generator:
    return torch_generator(derive_seed(seed_entropy, slice_index, dose_key(dose)), device)


def _entropy(seed) -> int:
    if seed is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer or None, got {seed!r}")
    return int(seed)


def _is_number(v) -> bool:
    real = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
    return real and math.isfinite(v)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Simulator:
    """A geometry, photon budget and device, with the forward projection reusable across doses."""

    def __init__(
        self,
        geometry: Geometry | None = None,
        *,
        pixel_size_mm: float | None = None,
        i0: float = DEFAULT_I0,
        sigma_e: float = DEFAULT_SIGMA_E,
        device: str | torch.device | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.geometry = geometry or Geometry()
        for name, v, strict in (("i0", i0, True), ("sigma_e", sigma_e, False)):
            if not _is_number(v) or v < 0 or (strict and v == 0):
                kind = "positive" if strict else "non-negative"
                raise InputError(f"{name} must be a {kind} number, got {v!r}")
        if pixel_size_mm is not None and (not _is_number(pixel_size_mm) or pixel_size_mm <= 0):
            raise InputError(f"pixel_size_mm must be a positive number, got {pixel_size_mm!r}")
        self.pixel_size_mm = pixel_size_mm
        self.i0 = float(i0)
        self.sigma_e = float(sigma_e)
        self.device = torch.device(device) if device is not None else _default_device()
        self.batch_size = batch_size or (16 if self.device.type == "cuda" else 1)

    # -- geometry helpers -------------------------------------------------------------------------
    def pixel_size(self, shape: tuple[int, int]) -> float:
        """Pixel size in mm for an image of this shape."""
        return self.pixel_size_mm if self.pixel_size_mm is not None else DEFAULT_FOV_MM / max(shape)

    def _check_fov(self, mu: torch.Tensor, px: float) -> None:
        h, w = mu.shape[-2:]
        r_fov = self.geometry.fov_radius_mm
        if 0.5 * math.hypot(h, w) * px <= r_fov:
            return
        ys = (torch.arange(h, device=mu.device) - (h - 1) / 2) * px
        xs = (torch.arange(w, device=mu.device) - (w - 1) / 2) * px
        outside = (ys[:, None] ** 2 + xs[None, :] ** 2) > r_fov**2
        # Only real objects count (above -900 HU): noise on air outside the circle is harmless.
        if bool((mu[..., outside] > 0.1 * MU_WATER).any()):
            raise InputError(
                f"the object extends beyond the scanner's field of view (radius {r_fov:.0f} mm at "
                f"{px:.3f} mm pixels): pass the true pixel_size_mm, or more detectors"
            )

    def _to_mu(self, hu: np.ndarray) -> tuple[torch.Tensor, float]:
        # Out of place on purpose: from_numpy shares memory with the caller's array.
        mu = (torch.as_tensor(hu, device=self.device) * (MU_WATER / 1000.0) + MU_WATER).clamp_(min=0.0)
        px = self.pixel_size(hu.shape[-2:])
        self._check_fov(mu, px)
        return mu, px

    def project(self, hu) -> torch.Tensor:
        """HU (H, W) or (B, H, W) -> line integrals (B, views, detectors) on the simulator's device."""
        mu, px = self._to_mu(_stack(hu)[0])
        return forward_project(mu, self.geometry, px)

    def reconstruct_hu(self, sino: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """FBP of line integrals -> HU (B, H, W)."""
        mu = fbp(sino, self.geometry, shape, self.pixel_size(shape))
        return mu.mul_(1000.0 / MU_WATER).sub_(1000.0)

    # -- noise ------------------------------------------------------------------------------------
    def _photons(self, dose: float) -> float:
        return self.i0 * dose * self.geometry.photon_scale

    def noisy_sinogram(self, p: torch.Tensor, dose: float, gen: torch.Generator) -> torch.Tensor:
        """One noisy realisation of line integrals ``p`` (V, D) at ``dose``."""
        i0 = self._photons(dose)
        counts = torch.poisson(torch.exp(-p) * i0, generator=gen)
        if self.sigma_e > 0:
            counts += torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype) * self.sigma_e
        counts.clamp_(min=1.0)  # photon starvation: see the module docstring
        return torch.log(counts).neg_().add_(math.log(i0))

    def insertion_sinogram(
        self, p: torch.Tensor, ratio: float, i0_full: float, gen: torch.Generator
    ) -> torch.Tensor:
        """Projection noise that takes a scan at ``i0_full`` photons to ``ratio`` of its dose."""
        e = torch.exp(p) / i0_full
        var = e * ((1 - ratio) / ratio) * (1 + ((1 + ratio) / ratio) * self.sigma_e**2 * e)
        return torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype).mul_(var.sqrt_())

    # -- public operations ------------------------------------------------------------------------
    def _recon_noisy(self, p: torch.Tensor, doses, first: int, entropy: int, shape) -> np.ndarray:
        """Noisy reconstructions of a batch of projections, slice ``first + i`` at ``doses[i]``."""
        noisy = [
            self.noisy_sinogram(p[i], float(d), _generator(entropy, first + i, float(d), self.device))
            for i, d in enumerate(doses)
        ]
        return self.reconstruct_hu(torch.stack(noisy), shape).cpu().numpy()

    def simulate_doses(
        self, hu, doses: Sequence[float], *, seed=None, progress: bool = False
    ) -> dict[float, np.ndarray]:
        """Mode (a) at several doses from one forward projection: {dose: HU array like ``hu``}."""
        arr, squeeze = _stack(hu)
        dose_list = [float(d) for d in np.atleast_1d(check_dose(doses, name="doses"))]
        entropy = _entropy(seed)
        out = {d: np.empty_like(arr) for d in dose_list}
        for s0 in _batches(len(arr), self.batch_size, progress, "simulating"):
            p = self.project(arr[s0 : s0 + self.batch_size])
            for d in dose_list:
                out[d][s0 : s0 + len(p)] = self._recon_noisy(p, [d] * len(p), s0, entropy, arr.shape[-2:])
        return {d: (v[0] if squeeze else v) for d, v in out.items()}

    def simulate(self, hu, dose, *, seed=None, progress: bool = False) -> np.ndarray:
        """Mode (a): reconstruct ``hu`` as if scanned at ``dose`` (scalar or one per slice)."""
        arr, squeeze = _stack(hu)
        doses = check_dose(dose, len(arr))
        entropy = _entropy(seed)
        out = np.empty_like(arr)
        for s0 in _batches(len(arr), self.batch_size, progress, "simulating"):
            p = self.project(arr[s0 : s0 + self.batch_size])
            out[s0 : s0 + len(p)] = self._recon_noisy(p, doses[s0 : s0 + len(p)], s0, entropy, arr.shape[-2:])
        return out[0] if squeeze else out

    def noiseless(self, hu) -> np.ndarray:
        """Noise-free reconstruction: ``hu`` through the system's blur and sampling only."""
        arr, squeeze = _stack(hu)
        out = np.empty_like(arr)
        for s0 in range(0, len(arr), self.batch_size):
            p = self.project(arr[s0 : s0 + self.batch_size])
            out[s0 : s0 + len(p)] = self.reconstruct_hu(p, arr.shape[-2:]).cpu().numpy()
        return out[0] if squeeze else out

    def insert_noise(
        self, ndct_hu, dose, *, seed=None, ndct_dose: float = 1.0, progress: bool = False
    ) -> np.ndarray:
        """Mode (b): add noise to a real scan at ``ndct_dose`` so it looks scanned at ``dose``.

        Pixels below ``PADDING_BELOW_HU`` (padding outside the field of view) are left unchanged.
        """
        arr, squeeze = _stack(ndct_hu, name="ndct_hu")
        full = float(check_dose(ndct_dose, name="ndct_dose"))
        doses = check_dose(dose, len(arr))
        if (doses > full).any():
            raise DoseError(
                f"cannot insert noise to reach dose {float(doses.max())} from a scan at ndct_dose {full}: "
                "noise insertion only lowers the dose"
            )
        entropy = _entropy(seed)
        i0_full = self._photons(full)
        out = arr.copy()
        for s0 in _batches(len(arr), self.batch_size, progress, "inserting noise"):
            p = self.project(arr[s0 : s0 + self.batch_size])
            noise = []
            for i in range(len(p)):
                d = float(doses[s0 + i])
                gen = _generator(entropy, s0 + i, d, self.device)
                noise.append(self.insertion_sinogram(p[i], d / full, i0_full, gen))
            recon = fbp(torch.stack(noise), self.geometry, arr.shape[-2:], self.pixel_size(arr.shape[-2:]))
            out[s0 : s0 + len(p)] += recon.mul_(1000.0 / MU_WATER).cpu().numpy()
        # Padding outside the scanner's field of view (below any physical HU) stays as it was.
        padding = arr < PADDING_BELOW_HU
        out[padding] = arr[padding]
        return out[0] if squeeze else out


def _batches(n: int, size: int, progress: bool, desc: str):
    """Start indices of slice batches, with a progress bar over slices when asked."""
    if not progress:
        yield from range(0, n, size)
        return
    from tqdm.auto import tqdm

    with tqdm(total=n, desc=desc, unit="slice") as bar:
        for s0 in range(0, n, size):
            yield s0
            bar.update(min(size, n - s0))


def _stack(hu, *, name: str = "hu") -> tuple[np.ndarray, bool]:
    arr = check_hu(hu, name=name)
    return (arr[None], True) if arr.ndim == 2 else (arr, False)


def _split(kwargs: dict) -> tuple[dict, dict]:
    sim_keys = {"pixel_size_mm", "i0", "sigma_e", "device", "batch_size"}
    sim = {k: v for k, v in kwargs.items() if k in sim_keys}
    return sim, {k: v for k, v in kwargs.items() if k not in sim_keys}


def _simulator(kwargs: dict) -> Simulator:
    sim_kw, geo_kw = _split(kwargs)
    return Simulator(Geometry.from_kwargs(**geo_kw), **sim_kw)


def simulate(hu, dose, *, seed=None, progress: bool = False, **geometry) -> np.ndarray:
    """Simulate a scan of clean ``hu`` (H, W) or (N, H, W) at ``dose`` (fraction of routine dose).

    Keywords: any :class:`Geometry` field (``kind``, ``views``, ``detectors``, ``filter``, ...) and
    ``pixel_size_mm`` (default 360 mm / larger image side), ``i0``, ``sigma_e``, ``device``.
    """
    return _simulator(geometry).simulate(hu, dose, seed=seed, progress=progress)


def simulate_doses(hu, doses, *, seed=None, **geometry) -> dict[float, np.ndarray]:
    """:func:`simulate` at several doses, sharing one forward projection."""
    return _simulator(geometry).simulate_doses(hu, doses, seed=seed)


def insert_noise(
    ndct_hu, dose, *, seed=None, ndct_dose: float = 1.0, progress: bool = False, **geometry
) -> np.ndarray:
    """Add projection-domain noise to a real normal-dose scan so it has the noise of ``dose``."""
    return _simulator(geometry).insert_noise(ndct_hu, dose, seed=seed, ndct_dose=ndct_dose, progress=progress)


def noiseless(hu, **geometry) -> np.ndarray:
    """Noise-free reconstruction of ``hu`` with the given geometry (the resolution reference)."""
    return _simulator(geometry).noiseless(hu)


def calibrate_i0(
    target_std_hu: float = 10.0,
    *,
    diameter_mm: float = 300.0,
    size: int = 512,
    fov_mm: float = 360.0,
    hu: float = 40.0,
    seeds: int = 2,
    **geometry,
) -> tuple[float, float]:
    """I0 giving ``target_std_hu`` noise at dose 1 in the centre of a uniform cylinder.

    Measures the std of (noisy - noiseless) in the central disk of a third of the diameter at
    ``i0=DEFAULT_I0`` without electronic noise, then scales I0 by (std / target)^2, since quantum
    noise std goes as 1/sqrt(I0). Returns (i0, measured std at DEFAULT_I0).
    """
    from ..phantoms import cylinder

    ph = cylinder(size=size, diameter_mm=diameter_mm, hu=hu, fov_mm=fov_mm)
    sim = Simulator(Geometry.from_kwargs(**geometry), pixel_size_mm=ph.pixel_size_mm, sigma_e=0.0)
    clean = sim.noiseless(ph.hu)
    stds = [float((sim.simulate(ph.hu, 1.0, seed=s) - clean)[ph.uniform].std()) for s in range(seeds)]
    measured = float(np.mean(stds))
    return DEFAULT_I0 * (measured / target_std_hu) ** 2, measured
