"""Hounsfield-unit conventions, in one place.

The model works on the HU window [-1000, 1000] mapped linearly to [-1, 1] (the seed's
normalisation). Metrics use the same window mapped to [0, 1]. Physical attenuation uses
``mu = MU_WATER * (1 + HU / 1000)``.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError, InputTypeError

__all__ = [
    "HU_MIN",
    "HU_MAX",
    "MU_WATER",
    "HU_AIR",
    "hu_to_unit",
    "unit_to_hu",
    "hu_to_01",
    "hu_to_mu",
    "mu_to_hu",
    "check_hu",
    "check_hu_lazy",
    "tensor_to_numpy",
    "tensor_problem",
    "window",
    "TISSUES",
    "TISSUE_EDGES",
    "tissue_classes",
]

HU_MIN = -1000.0
HU_MAX = 1000.0
HU_AIR = -1000.0
# Linear attenuation of water at an effective energy of ~70 keV, in 1/mm (the seed's value).
MU_WATER = 0.019

# Tissue classes by HU (the phantoms' labels use the same ids and edges): air < -950 <= lung < -400
# <= fat < -30 <= soft tissue < 300 <= bone. Used by the anatomy prior's loss weighting and the per-tissue
# metrics, so they work on real scans that have no labels.
TISSUES = {0: "air", 1: "lung", 2: "fat", 3: "soft_tissue", 4: "bone"}
TISSUE_EDGES = (-950.0, -400.0, -30.0, 300.0)


def hu_to_unit(hu, lo: float = HU_MIN, hi: float = HU_MAX):
    """HU -> [-1, 1] after clipping to [lo, hi] (the model's input scale)."""
    return 2.0 * (_clip(hu, lo, hi) - lo) / (hi - lo) - 1.0


def unit_to_hu(x, lo: float = HU_MIN, hi: float = HU_MAX):
    """[-1, 1] -> HU; the inverse of :func:`hu_to_unit` inside the window."""
    return (x + 1.0) * 0.5 * (hi - lo) + lo


def hu_to_01(hu, lo: float = HU_MIN, hi: float = HU_MAX):
    """HU -> [0, 1] after clipping (the metric scale: PSNR with data range 1)."""
    return (_clip(hu, lo, hi) - lo) / (hi - lo)


def hu_to_mu(hu, mu_water: float = MU_WATER):
    """HU -> linear attenuation in 1/mm, clipped at 0 (nothing attenuates less than vacuum)."""
    mu = mu_water * (1.0 + hu / 1000.0)
    return mu.clip(min=0.0) if hasattr(mu, "clip") else max(mu, 0.0)


def mu_to_hu(mu, mu_water: float = MU_WATER):
    """Linear attenuation in 1/mm -> HU."""
    return (mu / mu_water - 1.0) * 1000.0


def window(hu, level: float, width: float):
    """Display window (level, width) -> [0, 1]; e.g. soft tissue is (40, 400)."""
    return hu_to_01(hu, level - width / 2.0, level + width / 2.0)


def tissue_classes(hu):
    """Tissue class per pixel (0 air, 1 lung, 2 fat, 3 soft tissue, 4 bone) from HU thresholds.

    numpy in -> uint8 numpy out; a torch tensor in -> an int64 tensor on its device.
    """
    if type(hu).__module__.startswith("torch"):  # a tensor, without importing torch here
        import torch

        return torch.bucketize(hu.contiguous(), hu.new_tensor(TISSUE_EDGES), right=True)
    return np.digitize(np.asarray(hu), TISSUE_EDGES).astype(np.uint8)


def tensor_problem(t) -> str | None:
    """Why a torch tensor cannot be read as an array of values (None: it can): a sparse, quantized,
    nested or other non-strided tensor, with the call that makes it an ordinary one."""
    import torch

    if t.is_nested:
        return "is a nested tensor; pass an ordinary one (one call per slice size)"
    if t.is_quantized:
        return f"is a quantized tensor ({t.dtype}); pass .dequantize() of it"
    if t.layout != torch.strided:
        return f"is a {str(t.layout).removeprefix('torch.')} tensor; pass .to_dense() of it"
    return None


def tensor_to_numpy(t, name: str) -> np.ndarray:
    """A torch tensor's values as numpy (a view of a CPU tensor where possible); bfloat16 and float8,
    which numpy lacks, as float32. A meta tensor (no values) is an InputError; a sparse, quantized or
    nested tensor an InputTypeError saying how to convert it."""
    import torch

    why = tensor_problem(t)
    if why is not None:
        raise InputTypeError(f"{name} {why}")
    if t.device.type == "meta":
        raise InputError(f"{name} is a tensor on the meta device: it has no values")
    t = t.detach().cpu()
    if t.is_floating_point() and t.dtype not in (torch.float16, torch.float32, torch.float64):
        t = t.float()
    return t.numpy()


def _real_array(hu, name: str) -> np.ndarray:
    """``hu`` as a numpy array of real numbers (a view where possible), or a clear type error."""
    import torch

    if isinstance(hu, torch.Tensor):
        hu = tensor_to_numpy(hu, name)
    if isinstance(hu, np.ma.MaskedArray):
        raise InputTypeError(
            f"{name}: a masked array; fill the masked values first (e.g. .filled(-1024)), a mask is not kept"
        )
    if not isinstance(hu, np.ndarray):
        try:
            hu = np.asarray(hu)
        except Exception as exc:  # noqa: BLE001 - anything unconvertible is a type problem
            raise InputTypeError(f"{name}: cannot convert {type(hu).__name__} to an array") from exc
    # dtype.kind, not issubdtype: numpy files timedelta64 under the integers.
    if hu.dtype.kind not in "iuf":
        raise InputTypeError(f"{name}: expected a real-valued array in HU, got dtype {hu.dtype}")
    return hu


def check_hu_lazy(hu, *, name: str = "image", ndim: tuple[int, ...] = (2, 3)) -> np.ndarray:
    """Validate a user's HU array like :func:`check_hu` without copying or converting it.

    The finiteness check (as float32) reads one leading-axis slice at a time, so a memory-mapped
    volume is never loaded whole; convert each slice when it is used.
    """
    hu = _real_array(hu, name)
    if hu.ndim not in ndim:
        want = " or ".join(f"{d}-D" for d in ndim)
        raise InputError(f"{name}: expected a {want} array in HU, got shape {tuple(hu.shape)}")
    if hu.size == 0:
        raise InputError(f"{name}: the array is empty (shape {tuple(hu.shape)})")
    if hu.dtype.kind == "f":  # integers are finite, also as float32
        planes = hu.reshape((-1, *hu.shape[-2:])) if hu.ndim > 2 else hu[None]
        count, first = 0, None
        for i in range(planes.shape[0]):
            with np.errstate(over="ignore"):  # beyond float32's range: reported as inf below
                bad = ~np.isfinite(np.asarray(planes[i], dtype=np.float32))
            n = int(np.count_nonzero(bad))
            if n and first is None:
                first = (i, *np.argwhere(bad)[0]) if hu.ndim > 2 else tuple(np.argwhere(bad)[0])
            count += n
        if count:
            raise InputError(
                f"{name}: {count} non-finite value(s) (NaN or inf), first at index "
                f"{tuple(int(i) for i in first)}"
            )
    return hu


def check_hu(hu, *, name: str = "image", ndim: tuple[int, ...] = (2, 3)) -> np.ndarray:
    """Validate a user's HU array and return it as float32 without touching the original.

    Raises a clear :class:`~ctdn.errors.InputError` for the wrong number of dimensions, an empty
    array, or non-finite values, and :class:`~ctdn.errors.InputTypeError` for non-real dtypes.
    """
    return check_hu_lazy(hu, name=name, ndim=ndim).astype(np.float32, copy=True)


def _clip(x, lo, hi):
    return x.clip(lo, hi) if hasattr(x, "clip") else min(max(x, lo), hi)
