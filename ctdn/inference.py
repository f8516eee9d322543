"""``ctdn.denoise`` and ``ctdn.Denoiser``: HU in, HU out, any size, any backend.

One slice's path: HU -> window to [-1, 1] -> pad (``MARGIN`` replicated pixels on every side, then
to the network's multiple) -> backend -> crop -> HU -> pass-through of the input outside the window.
Nothing the caller gave is modified.

Border margin: the network's convolutions zero-pad, which darkens or brightens the outermost pixels
of whatever it is given. Each slice is therefore extended by ``MARGIN`` replicated pixels on every
side (measured better than reflection on cropped anatomy) and the margin is cropped off, so a
slice's own border pixels are computed like its interior. A backend whose engine has a fixed size
profile (TensorRT, AOTInductor) that the margin would not fit gets the slice padded at the bottom
and right only, as that engine was built for.

Pass-through seam: the network only sees the HU window (default [-1000, 1000]). Where the input,
smoothed over 3x3 pixels (so noise does not flicker the seam), is above ``high - 50`` HU the
output blends linearly into the input, and is the input from ``high`` up (bone above the window,
metal). Below the window it blends from ``low - 100`` to ``low - 150`` HU and is the input below
that (the smoothing counts values below ``low - 150`` as ``low - 150``, so padding does not pull
the air next to it out of the denoised range), while air near -1000 HU stays denoised.

Padding passes through bit-exactly: a pixel below the air level (the window's low end) whose value
at least half of its neighbours share exactly (flat padding such as -1024, -2000 or -3024 HU, up
to its edge), or that is at or below ``low - 150`` HU with at least half of its neighbours there
too, comes out exactly as it went in, as does every pixel whose seam weight is 1. The network sees
padding clipped to the window's low end, i.e. as air, so it does not disturb the pixels next to it.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import backends
from .errors import DoseError, EngineError, InputError, InputTypeError, ModelError
from .hu import hu_to_unit, tensor_problem, tensor_to_numpy, unit_to_hu
from .models import CTDenoiser, load_model

__all__ = [
    "Denoiser",
    "denoise",
    "passthrough_weight",
    "passthrough_mask",
    "pad_for_network",
    "SEAM_HIGH_HU",
    "SEAM_LOW_HU",
    "MARGIN",
]

SEAM_HIGH_HU = 50.0  # blend width below the window's top
SEAM_LOW_HU = (100.0, 150.0)  # blend from low - 100 to low - 150 HU
MARGIN = 16  # replicated pixels of context around each slice (the network's convolutions zero-pad)
# The 3x3 smoothing adds nine values: above this, a float32 sum could overflow to inf.
_SMOOTH_MAX = float(np.finfo(np.float32).max) / 9


def _one_thread_after_fork() -> None:
    """In a fork child, run torch on one thread: the parent's OpenMP pool does not survive a fork,
    and its first parallel region in the child would wait forever for threads that are not there."""
    torch.set_num_threads(1)


os.register_at_fork(after_in_child=_one_thread_after_fork)


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
        why = tensor_problem(volume)
        if why is not None:
            raise InputTypeError(f"volume {why}")
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
        why = tensor_problem(dose)
        if why is not None:
            raise DoseError(f"dose {why}")
        if dose.device.type == "meta":
            raise DoseError("dose is a tensor on the meta device: it has no values")
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


def padded_size(h: int, w: int, m: int, margin: int = MARGIN) -> tuple[int, int]:
    """The network's input size for an H x W slice: ``margin`` on every side, rounded up to ``m``."""
    return -(-(h + 2 * margin) // m) * m, -(-(w + 2 * margin) // m) * m


def pad_for_network(x: np.ndarray, m: int, margin: int = MARGIN) -> np.ndarray:
    """Pad (N, C, H, W) by ``margin`` replicated pixels on every side and then at the bottom and right
    to multiples of ``m``; the slice sits at ``[margin : margin + H, margin : margin + W]``.
    ``margin=0`` is :func:`pad_to_multiple` (bottom and right only, reflected)."""
    if margin == 0:
        return pad_to_multiple(x, m)
    h, w = x.shape[-2:]
    hp, wp = padded_size(h, w, m, margin)
    pads = ((0, 0), (0, 0), (margin, hp - h - margin), (margin, wp - w - margin))
    return np.pad(x, pads, mode="edge")


def _size_limit(runner) -> tuple[int, int] | None:
    """The largest (H, W) the runner's engine takes, from its sidecar's size profile (the tensorrt
    and aoti backends keep it on ``runner.runtime.sidecar``); None where any size runs."""
    for holder in (runner, getattr(runner, "runtime", None)):
        shapes = getattr(holder, "sidecar", None)
        if isinstance(shapes, dict) and isinstance(shapes.get("shapes"), dict):
            try:
                return int(shapes["shapes"]["height"][2]), int(shapes["shapes"]["width"][2])
            except (KeyError, IndexError, TypeError, ValueError):
                return None
    return None


def passthrough_mask(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Pixels of (N, H, W) HU that are padding and pass through bit-exactly: below the window's low
    end (the air level) and flat (at least half of their neighbours inside the slice have exactly
    their value), or at or below ``low - 150`` HU with at least half of their neighbours there too."""
    lo = float(window[0])
    below = hu < lo
    if not below.any():
        return below
    deep_hu = lo - SEAM_LOW_HU[1]
    deep = hu <= deep_hu
    h, w = hu.shape[1:]
    p = np.pad(hu, ((0, 0), (1, 1), (1, 1)), constant_values=np.nan)  # NaN: never equal, never deep
    inside = np.pad(np.ones((1, h, w), np.uint8), ((0, 0), (1, 1), (1, 1)))
    same = np.zeros(hu.shape, np.uint8)
    low = np.zeros(hu.shape, np.uint8)
    real = np.zeros((1, h, w), np.uint8)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy == dx == 1:
                continue
            nb = p[:, dy : dy + h, dx : dx + w]
            same += nb == hu
            low += nb <= deep_hu
            real += inside[:, dy : dy + h, dx : dx + w]
    return below & ((2 * same >= real) | (deep & (2 * low >= real)))


def blend(net_hu: np.ndarray, hu: np.ndarray, window: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The output HU from the network's (N, H, W) HU and the input's, and where it is the input
    bit-exactly (padding, or seam weight 1)."""
    lo = float(window[0])
    # Deep padding counts as low - 150 in the smoothing, so the air next to it stays denoised; the
    # top bound keeps the 3x3 sum of the largest float32 values finite.
    wgt = passthrough_weight(np.clip(hu, lo - SEAM_LOW_HU[1], _SMOOTH_MAX), window)
    exact = (wgt == 1) | passthrough_mask(hu, window)
    out = net_hu + wgt * (hu - net_hu)
    out[exact] = hu[exact]
    return out, exact


def _slices(first: int, n: int) -> str:
    return f"slice {first}" if n == 1 else f"slices {first}..{first + n - 1}"


def _saturate(v: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float HU rounded to the integer ``dtype``, saturating at its range. Decided in float64, where
    every bound but int64's and uint64's max is exact; those (2**63 - 1, 2**64 - 1 round up to a
    power of two no cast can take) are set directly."""
    r = np.iinfo(dtype)
    v = np.rint(v.astype(np.float64))
    top = float(r.max)
    if int(top) > r.max:
        top = float(np.nextafter(top, 0.0))  # the largest float64 that is still in range
    out = np.clip(v, float(r.min), top).astype(dtype)
    out[v > top] = r.max
    return out


class Denoiser:
    """A loaded model on a backend, reused across calls; ``__call__`` is :func:`denoise`.

    ``model``: a shipped name (``"edge"``), a .safetensors path, or a :class:`ctdn.models.CTDenoiser`
    module. ``backend``: ``"auto"`` or a name from :data:`ctdn.backends.BACKENDS`. ``precision``:
    ``fp32`` (default), ``fp16``/``bf16`` where the backend and device support them.
    Calls from several threads are safe (the model is read-only once loaded). A CPU Denoiser also
    runs in a ``fork`` child, on one torch thread there (the parent's thread pool does not survive
    the fork); a CUDA one is refused in a fork child (EngineError: use ``spawn``). A backend output
    with NaN/inf is refused (ModelError, naming the model) before anything is returned or written.
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
        source = None
        if isinstance(model, torch.nn.Module):
            if not isinstance(model, CTDenoiser):
                raise InputTypeError(
                    f"model must be a ctdn CTDenoiser, a name or a path, got {type(model).__name__}"
                )
            net = model
        elif isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
            net = load_model(model)
            source = model
        else:
            raise InputTypeError(f"model must be a name, a path or a CTDenoiser, got {type(model).__name__}")
        self.model = net
        self.config = net.config
        self.backend = backends.resolve(backend, self.device)
        self._runner = backends.create(self.backend, net, self.device, precision)
        self._source = source  # the name or path given, for messages
        self._limit = _size_limit(self._runner)
        self._pid = os.getpid()
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

    def _check_process(self) -> None:
        """CUDA does not survive a fork: a CUDA Denoiser used in a fork child is refused here."""
        if self.device.type == "cuda" and os.getpid() != self._pid:
            raise EngineError(
                "this Denoiser runs on CUDA and was created in the parent of this forked process, where "
                "CUDA cannot run; create the Denoiser in the child or start it with the 'spawn' method"
            )

    def _margin(self, h: int, w: int) -> int:
        """The border margin for an H x W slice: ``MARGIN``, or 0 where the engine's size profile
        cannot take the slice with it (the engine then gets what it was built for)."""
        if self._limit is None:
            return MARGIN
        hp, wp = padded_size(h, w, self.config.multiple)
        return MARGIN if hp <= self._limit[0] and wp <= self._limit[1] else 0

    def _network(self, unit: np.ndarray, dose: np.ndarray, first: int) -> np.ndarray:
        """The backend's output for a batch of (N, H, W) unit slices, cropped to (N, H, W); refused
        (ModelError, naming the model) if it is not finite, so no NaN/inf is ever returned or written."""
        h, w = unit.shape[1:]
        k = self._margin(h, w)
        padded = pad_for_network(unit[:, None], self.config.multiple, k)
        y = self._runner(padded, dose)[:, 0, k : k + h, k : k + w]
        if not np.isfinite(y).all():
            bad = int(np.count_nonzero(~np.isfinite(y)))
            raise ModelError(
                f"model {self._name} on the {self.backend} backend returned {bad} NaN/inf values for finite "
                f"input ({_slices(first, len(y))}): its weights or the backend are broken; "
                "nothing was returned or written for these slices"
            )
        return y

    @property
    def _name(self) -> str:
        """The model as messages name it: its metadata name, and the path it was loaded from."""
        name = str(getattr(self.model, "meta", {}).get("name", "custom"))
        given = None if self._source is None else os.fsdecode(os.fspath(self._source))
        return repr(name) if given in (None, name) else f"{name!r} ({given})"

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
        dtype = info["dtype"]
        to_int = keep_dtype and np.issubdtype(dtype, np.integer)
        out_dtype = np.dtype(dtype) if to_int else np.dtype(np.float32)
        shape = x.shape[1:] if info["squeeze"] else x.shape
        if out is None:
            result = np.empty(shape, dtype=out_dtype)
        else:
            result = _check_out(out, shape, out_dtype, x)
        dst = result[None] if info["squeeze"] else result
        self._check_process()
        with tqdm(total=x.shape[0], desc="denoising", unit="slice", disable=not progress) as bar:
            for i in range(0, x.shape[0], b):
                xs = np.array(x[i : i + b], dtype=np.float32)  # this batch only; the input is untouched
                unit = hu_to_unit(xs, lo, hi).astype(np.float32)
                y = unit_to_hu(self._network(unit, d[i : i + b], i), lo, hi)
                ys, exact = blend(y, xs, (lo, hi))
                if to_int:  # what passes through is copied from the input: float32 cannot hold every int32
                    ys = _saturate(ys, dtype)
                    ys[exact] = np.asarray(x[i : i + b])[exact]
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
