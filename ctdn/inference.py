"""``ctdn.denoise`` and ``ctdn.Denoiser``: HU in, HU out, any size, any backend.

One slice's path: HU -> window to [-1, 1] -> pad to the network's multiple -> backend -> crop ->
HU -> pass-through of the input outside the window. Nothing the caller gave is modified.

Pass-through seam: the network only sees the HU window (default [-1000, 1000]). Where the input,
smoothed over 3x3 pixels (so noise does not flicker the seam), is above ``high - 50`` HU the
output blends linearly into the input, and is the input from ``high`` up (bone above the window,
metal). Below the window it blends from ``low - 100`` to ``low - 150`` HU and is the input below
that (padding outside the field of view, e.g. -1024 or -3024), while air near -1000 HU stays
denoised.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import backends
from .errors import DoseError, InputError, InputTypeError
from .hu import hu_to_unit, tensor_to_numpy, unit_to_hu
from .models import CTDenoiser, load_model

__all__ = ["Denoiser", "denoise", "passthrough_weight", "SEAM_HIGH_HU", "SEAM_LOW_HU"]

SEAM_HIGH_HU = 50.0  # blend width below the window's top
SEAM_LOW_HU = (100.0, 150.0)  # blend from low - 100 to low - 150 HU


def parse_device(device) -> torch.device:
    """A torch device from a name; None means CUDA when present, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device must be like 'cpu', 'cuda' or 'cuda:1', got {device!r}") from exc


_SCAN_ELEMENTS = 1 << 20  # values per chunk of the NaN/inf pre-scan (4 MiB as float32)


def _volume(volume) -> tuple[np.ndarray, dict]:
    """The input as an (N, H, W) numpy array (a view, not a copy, of a numpy or CPU tensor input),
    checked, and how to give the result back.

    Nothing is converted here: each batch is converted to float32 when it is denoised. The NaN/inf
    check reads the input in chunks of 2**20 values (4 MiB as float32), so a memory-mapped volume
    is never held in memory whole, and runs before any denoising so no work is wasted on a bad input.
    """
    info = {"torch": None, "squeeze": False}
    if isinstance(volume, torch.Tensor):
        info["torch"] = volume.device
        if volume.is_complex() or volume.dtype == torch.bool:
            raise InputTypeError(f"volume must hold real HU values, got a {volume.dtype} tensor")
        arr = tensor_to_numpy(volume, "volume")
    elif isinstance(volume, np.ma.MaskedArray):
        raise InputTypeError(
            "volume is a masked array: fill the masked values first (e.g. volume.filled(-1024)); "
            "ctdn would silently drop the mask"
        )
    elif isinstance(volume, np.ndarray):
        arr = volume
    else:
        raise InputTypeError(
            f"volume must be a numpy array or a torch tensor in HU, got {type(volume).__name__}"
        )
    info["dtype"] = arr.dtype
    if arr.dtype.kind not in "iuf":  # kind, not issubdtype: numpy files timedelta64 under integers
        raise InputTypeError(f"volume must hold real numbers (HU), got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise InputError(f"volume must be 2-D (H, W) or 3-D (N, H, W), got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"volume is empty (shape {arr.shape})")
    if arr.ndim == 2:
        arr, info["squeeze"] = arr[None], True
    if np.issubdtype(arr.dtype, np.floating):  # integers are always finite, also as float32
        _check_finite(arr, info["squeeze"])
    return arr, info


def _check_finite(arr: np.ndarray, squeeze: bool) -> None:
    """Raise if ``arr`` (N, H, W) has values that are not finite as float32 (NaN, inf, or beyond
    float32's range in a wider float): their count and the first index."""
    step = max(1, _SCAN_ELEMENTS // (arr.shape[1] * arr.shape[2]))
    wide = arr.dtype.itemsize > 4
    count, big, first = 0, 0, None
    for i in range(0, arr.shape[0], step):
        chunk = arr[i : i + step]
        with np.errstate(over="ignore"):  # out-of-range values are reported below, not warned about
            bad = ~np.isfinite(np.asarray(chunk, dtype=np.float32))
        n = int(np.count_nonzero(bad))
        if n and first is None:
            first = np.argwhere(bad)[0] + (i, 0, 0)
        if n and wide:
            big += int(np.count_nonzero(bad & np.isfinite(chunk)))
        count += n
    if count:
        where = tuple(int(k) for k in (first[1:] if squeeze else first))
        what = "NaN/inf values"
        if big:
            what = f"NaN/inf values ({big} of them finite but beyond float32's range, about 3.4e38)"
        raise InputError(f"volume has {count} {what} (first at index {where}); fix or mask them first")


def _check_out(out, shape: tuple[int, ...], dtype: np.dtype, source: np.ndarray) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise InputTypeError(f"out must be a numpy array (e.g. a np.memmap), got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise InputError(f"out has shape {tuple(out.shape)} but the volume has shape {tuple(shape)}")
    if out.dtype != dtype:
        raise InputError(f"out must have dtype {dtype} for this input, got {out.dtype}")
    if not out.flags.writeable:
        raise InputError("out is read-only")
    if np.may_share_memory(out, source):
        raise InputError("out shares memory with the volume; the input is never modified")
    return out


def _doses(dose, n: int) -> np.ndarray:
    if isinstance(dose, torch.Tensor):
        t = dose.detach().cpu()
        dose = (t.double() if t.is_floating_point() else t).numpy()  # bfloat16 has no numpy dtype
    # Numbers only: np.asarray would take "0.5", b"0.5" and True (as 1.0) for doses.
    raw = np.asarray(dose) if not isinstance(dose, (str, bytes)) else None
    if raw is None or raw.dtype.kind not in "iuf":
        raise DoseError(f"dose must be a number or one number per slice, got {dose!r}")
    try:
        d = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DoseError(f"dose must be a number or one number per slice, got {dose!r}") from exc
    if d.ndim > 1 or (d.ndim == 1 and d.size not in (1, n)):
        raise DoseError(f"dose must be one value or one per slice ({n}), got shape {d.shape}")
    if not np.all(np.isfinite(d)) or np.any(d <= 0) or np.any(d > 1):
        raise DoseError(f"dose is the fraction of a routine full dose, in (0, 1]; got {dose!r}")
    return np.broadcast_to(d.reshape(-1), (n,)).astype(np.float32)


def passthrough_weight(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Per-pixel weight of the input in the output (0: network, 1: input), from a 3x3 mean of (N, H, W) HU."""
    lo, hi = window
    t = torch.from_numpy(hu)[:, None]
    s = F.avg_pool2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), 3, stride=1)[:, 0].numpy()
    w_hi = np.clip((s - (hi - SEAM_HIGH_HU)) / SEAM_HIGH_HU, 0, 1)
    a, b = SEAM_LOW_HU
    w_lo = np.clip(((lo - a) - s) / (b - a), 0, 1)
    return np.maximum(w_hi, w_lo).astype(np.float32)


def pad_to_multiple(x: np.ndarray, m: int) -> np.ndarray:
    """Pad (..., H, W) at the bottom and right so H and W are multiples of ``m`` (crop back after)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if not (ph or pw):
        return x
    t = torch.from_numpy(x)
    # Reflect keeps the image statistics at the border; tiny images cannot reflect that far.
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(t, (0, pw, 0, ph), mode=mode).numpy()


class Denoiser:
    """A loaded model on a backend, reused across calls; ``__call__`` is :func:`denoise`.

    ``model``: a shipped name (``"edge"``), a .safetensors path, or a :class:`ctdn.models.CTDenoiser`
    module. ``backend``: ``"auto"`` or a name from :data:`ctdn.backends.BACKENDS`. ``precision``:
    ``fp32`` (default), ``fp16``/``bf16`` where the backend and device support them.
    Calls from several threads are safe (the model is read-only once loaded).
    """

    def __init__(
        self,
        model="edge",
        *,
        backend: str = "auto",
        device=None,
        precision: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.device = parse_device(device)
        if isinstance(model, torch.nn.Module):
            if not isinstance(model, CTDenoiser):
                raise InputTypeError(
                    f"model must be a ctdn CTDenoiser, a name or a path, got {type(model).__name__}"
                )
            net = model
        elif isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
            net = load_model(model)
        else:
            raise InputTypeError(f"model must be a name, a path or a CTDenoiser, got {type(model).__name__}")
        self.model = net
        self.config = net.config
        self.backend = backends.resolve(backend, self.device)
        self._runner = backends.create(self.backend, net, self.device, precision)
        self.batch_size = (
            self._check_batch(batch_size)
            if batch_size is not None
            else (8 if self.device.type == "cuda" else 1)
        )

    @staticmethod
    def _check_batch(b) -> int:
        if not isinstance(b, (int, np.integer)) or isinstance(b, bool) or b < 1:
            raise InputError(f"batch_size must be a positive integer, got {b!r}")
        return int(b)

    def __repr__(self) -> str:
        name = getattr(self.model, "meta", {}).get("name", "custom")
        return f"Denoiser(model={name!r}, backend={self.backend!r}, device='{self.device}')"

    def __call__(
        self,
        volume,
        dose=0.1,
        *,
        batch_size: int | None = None,
        progress: bool = False,
        keep_dtype: bool = False,
        out: np.ndarray | None = None,
    ):
        """Denoise a 2-D slice or an (N, H, W) volume in HU; returns the same shape in HU.

        ``dose``: fraction of a routine full dose in (0, 1], one value or one per slice.
        Returns float32 (a numpy array, or a tensor on the input's device for a tensor input);
        with ``keep_dtype`` an integer input gets its own dtype back (rounded and clipped).

        ``out``: a numpy array of the input's shape (e.g. a ``np.memmap`` on disk) that receives the
        result batch by batch and is returned (also for a tensor input); its dtype must be float32,
        or the input's integer dtype with ``keep_dtype``. Without it the result is a new array.
        Either way the input is read one batch at a time and never copied whole, so the memory
        needed beyond the result is a constant (a few batches), whatever the number of slices.
        """
        x, info = _volume(volume)
        d = _doses(dose, x.shape[0])
        b = self._check_batch(batch_size) if batch_size is not None else self.batch_size
        lo, hi = self.config.hu_window
        m = self.config.multiple
        dtype = info["dtype"]
        to_int = keep_dtype and np.issubdtype(dtype, np.integer)
        out_dtype = np.dtype(dtype) if to_int else np.dtype(np.float32)
        shape = x.shape[1:] if info["squeeze"] else x.shape
        if out is None:
            result = np.empty(shape, dtype=out_dtype)
        else:
            result = _check_out(out, shape, out_dtype, x)
        dst = result[None] if info["squeeze"] else result
        h, w = x.shape[1:]
        with tqdm(total=x.shape[0], desc="denoising", unit="slice", disable=not progress) as bar:
            for i in range(0, x.shape[0], b):
                xs = np.array(x[i : i + b], dtype=np.float32)  # this batch only; the input is untouched
                unit = hu_to_unit(xs, lo, hi).astype(np.float32)
                y = unit_to_hu(
                    self._runner(pad_to_multiple(unit[:, None], m), d[i : i + b])[:, 0, :h, :w], lo, hi
                )
                wgt = passthrough_weight(xs, (lo, hi))
                ys = y + wgt * (xs - y)
                if to_int:
                    r = np.iinfo(dtype)
                    ys = np.clip(np.rint(ys), r.min, r.max)
                dst[i : i + b] = ys
                bar.update(len(xs))
        if out is not None:
            return out
        if info["torch"] is not None:
            return torch.from_numpy(result).to(info["torch"])
        return result


_CACHE: dict = {}
_LOCK = threading.Lock()


def denoise(
    volume,
    dose=0.1,
    *,
    model=None,
    backend: str = "auto",
    device=None,
    batch_size: int | None = None,
    progress: bool = False,
    keep_dtype: bool = False,
    out: np.ndarray | None = None,
):
    """Denoise ``volume`` (HU, (H, W) or (N, H, W)) at ``dose`` (fraction of full dose), by default with
    the shipped model.

    The model and backend are loaded once per (model, backend, device) and reused; see
    :class:`Denoiser` for the arguments (``out=``: an array, e.g. a ``np.memmap``, to write into).
    """
    model = "edge" if model is None else model
    key = (model if not isinstance(model, torch.nn.Module) else id(model), backend, str(parse_device(device)))
    with _LOCK:
        den = _CACHE.get(key)
        if den is None or (isinstance(model, torch.nn.Module) and den.model is not model):
            den = _CACHE[key] = Denoiser(model, backend=backend, device=device)
    return den(volume, dose, batch_size=batch_size, progress=progress, keep_dtype=keep_dtype, out=out)
