"""The JSON sidecar beside every deployed engine or package (format ``ctdn-engine/1``).

``edge.engine`` gets ``edge.engine.json`` saying what the file is (model, fingerprint, shapes,
precision) and what it was built for (GPU and compute capability, TensorRT / CUDA / torch versions,
compatibility modes), so a loader can refuse a mismatch with a message that names the field, both
values and the command that rebuilds the file, instead of TensorRT's deserialisation errors.

The rules (:func:`check_sidecar`; the C++ runtime in ``csrc/`` applies the same ones):

- ``format`` is ``ctdn-engine/1`` and ``kind`` is the loader's (``tensorrt`` or ``aoti``);
- the file exists and has ``bytes`` bytes (else it is corrupt or was replaced), and the sha256 of its
  bytes is ``sha256`` (written by every ctdn since it was added; older sidecars lack it, and the C++
  runtime checks the size only);
- ``tensorrt``: this GPU's compute capability equals ``device.compute_capability`` (hardware
  compatibility ``none`` or ``same_compute_capability``) or is 8.0 or newer (``ampere_plus``);
  this TensorRT's major.minor equals ``versions.tensorrt``'s, or with ``version_compatible`` is the
  same or newer (TensorRT runs version-compatible engines on later runtimes, never earlier ones);
- ``aoti``: ``device.type`` is the requested device's type, a CUDA package's compute capability is
  this GPU's (its kernels are compiled per architecture), and this torch's version is
  ``versions.torch`` (AOTInductor packages are tied to the torch that compiled them).

The machine is read through :func:`probe` (torch.cuda, a lazy ``import tensorrt``); every check takes
an :class:`Environment` instead, so each rule is tested without a GPU.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from .._atomic import atomic_path
from .._cache import sha256_file
from .._version import __version__
from ..errors import EngineError, InputError

__all__ = [
    "check_model",
    "FORMAT",
    "KINDS",
    "HARDWARE",
    "PRECISIONS",
    "Environment",
    "probe",
    "device_slug",
    "sidecar_path",
    "make_sidecar",
    "write_sidecar",
    "read_sidecar",
    "check_sidecar",
    "integrity",
]

log = logging.getLogger("ctdn")

FORMAT = "ctdn-engine/1"
KINDS = ("tensorrt", "aoti")
HARDWARE = ("none", "ampere_plus", "same_compute_capability")
PRECISIONS = ("fp32", "fp16", "bf16")
IO = {"x": "x", "dose": "dose", "y": "y"}
_REQUIRED = (
    "format", "kind", "ctdn_version", "created", "model", "hu_window", "multiple", "io", "shapes",
    "precision", "device", "versions", "compatibility", "bytes", "rebuild",
)  # fmt: skip


@dataclass(frozen=True)
class Environment:
    """What a deployed file depends on, as found on this machine (None: not present)."""

    torch: str | None = None  # "2.13.0" (without the "+cu130" build tag)
    cuda: str | None = None  # CUDA version torch was built with, e.g. "13.0"
    gpu_name: str | None = None  # e.g. "NVIDIA H100 80GB HBM3"
    compute_capability: str | None = None  # e.g. "9.0"
    tensorrt: str | None = None  # e.g. "10.13.0.35"; None: TensorRT is not installed

    def replace(self, **changes) -> Environment:
        return dataclasses.replace(self, **changes)


def _cuda_index(device) -> int:
    if device is None:
        return 0
    if isinstance(device, int):
        return device
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        raise InputError(f"expected a CUDA device, got {device!r}")
    return dev.index if dev.index is not None else torch.cuda.current_device()


def _tensorrt_version() -> str | None:
    try:
        import tensorrt  # noqa: PLC0415 - heavy and optional: imported only when an engine needs it
    except ImportError:
        return None
    return str(getattr(tensorrt, "__version__", "unknown"))


def probe(device=None, *, tensorrt: bool = True) -> Environment:
    """This machine: torch and CUDA versions, the GPU ``device`` (default cuda:0) and TensorRT's version.

    Without a CUDA GPU the GPU fields are None; ``tensorrt=False`` skips the (slow) TensorRT import.
    """
    import torch

    env = Environment(torch=torch.__version__.split("+")[0], cuda=torch.version.cuda)
    if torch.cuda.is_available() and (
        device is None or str(device).startswith("cuda") or isinstance(device, int)
    ):
        idx = _cuda_index(device)
        major, minor = torch.cuda.get_device_capability(idx)
        env = env.replace(gpu_name=torch.cuda.get_device_name(idx), compute_capability=f"{major}.{minor}")
    if tensorrt:
        env = env.replace(tensorrt=_tensorrt_version())
    return env


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def device_slug(device="cpu", env: Environment | None = None) -> str:
    """``cpu``, or for a GPU ``sm<cc>-<name>`` like ``sm90-nvidia-h100-80gb-hbm3`` (engine file names)."""
    import torch

    dev = torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    if dev.type != "cuda":
        return dev.type
    env = env or probe(dev, tensorrt=False)
    if env.compute_capability is None or env.gpu_name is None:
        raise EngineError(f"no CUDA GPU here for device {device!r}")
    return f"sm{env.compute_capability.replace('.', '')}-{_slug(env.gpu_name)}"


def sidecar_path(path) -> Path:
    """``edge.engine`` -> ``edge.engine.json`` (a path already ending in .json is returned as is)."""
    path = Path(path)
    return path if path.name.endswith(".json") else path.with_name(path.name + ".json")


def _model_info(model, name: str | None) -> dict:
    """name, fingerprint, config, hu_window, multiple from a CTDenoiser or a dict (ctdn.export.onnx_meta)."""
    if isinstance(model, dict):
        try:
            info = {k: model[k] for k in ("fingerprint", "config", "hu_window", "multiple")}
            info["name"] = name or model["name"]
        except KeyError as exc:
            raise InputError(f"model info lacks {exc}; pass ctdn.export.onnx_meta(...) or a model") from exc
        return info
    from ..export import fingerprint, model_name

    return {
        "name": name or model_name(model),
        "fingerprint": fingerprint(model),
        "config": model.config.to_dict(),
        "hu_window": list(model.config.hu_window),
        "multiple": model.config.multiple,
    }


def check_model(sc: dict, model, path) -> None:
    """Refuse (EngineError) an engine/package whose sidecar describes another model than ``model``.

    The message says what differs: the HU window, the config fields, or (same config) the weights,
    and which ctdn wrote the file; then the command that rebuilds it.
    """
    here = _model_info(model, None)
    built = sc.get("model") or {}
    if built.get("fingerprint") == here["fingerprint"]:
        return
    diffs = []
    window = [float(v) for v in here["hu_window"]]
    if [float(v) for v in sc.get("hu_window") or []] != window:
        diffs.append(f"HU window {sc.get('hu_window')} vs {window}")
    cfg = built.get("config") or {}
    fields = sorted(k for k in set(cfg) | set(here["config"]) if cfg.get(k) != here["config"].get(k))
    diffs += [f"{k} {cfg.get(k)!r} vs {here['config'].get(k)!r}" for k in fields if k != "hu_window"]
    if not diffs:
        diffs.append("same config, other weights")
    raise EngineError(
        f"{Path(path).name} was built from another model than this one (fingerprint "
        f"{built.get('fingerprint')} vs {here['fingerprint']}: {'; '.join(diffs)}; written by ctdn "
        f"{sc.get('ctdn_version')}, this is {__version__}); rebuild it for this model: {sc.get('rebuild')}"
    )


def _shapes(shapes: dict) -> dict:
    out = {}
    for key in ("batch", "height", "width"):
        v = shapes.get(key) if isinstance(shapes, dict) else None
        if not (isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(i, int) for i in v)):
            raise InputError(f"shapes[{key!r}] must be [min, opt, max] integers, got {v!r}")
        if not 1 <= v[0] <= v[1] <= v[2]:
            raise InputError(f"shapes[{key!r}] must satisfy 1 <= min <= opt <= max, got {list(v)}")
        out[key] = [int(i) for i in v]
    return out


def make_sidecar(
    *,
    kind: str,
    model,
    shapes: dict,
    precision: str,
    device,
    rebuild: str,
    name: str | None = None,
    compatibility: dict | None = None,
    env: Environment | None = None,
) -> dict:
    """The sidecar dict (without ``bytes``) for an engine/package built here for ``device``.

    ``model``: a CTDenoiser or the dict :func:`ctdn.export.onnx_meta` returns. ``device``: "cpu",
    "cuda", "cuda:1" or a torch.device. ``env``: this machine (default: :func:`probe`).
    """
    import torch

    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    compat = {"hardware": "none", "version_compatible": False, **(compatibility or {})}
    if compat["hardware"] not in HARDWARE:
        raise InputError(
            f"compatibility.hardware must be one of {', '.join(HARDWARE)}, got {compat['hardware']!r}"
        )
    dev = torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    env = env or probe(dev, tensorrt=kind == "tensorrt")
    if dev.type == "cuda":
        if env.compute_capability is None:
            raise EngineError(f"a {kind} file for {dev} must be built on a machine with that CUDA GPU")
        dev_info = {"type": "cuda", "name": env.gpu_name, "compute_capability": env.compute_capability}
    else:
        dev_info = {"type": dev.type}
    versions = {"cuda": env.cuda}
    if kind == "tensorrt":
        versions["tensorrt"] = env.tensorrt
    else:
        versions["torch"] = env.torch
    info = _model_info(model, name)
    return {
        "format": FORMAT,
        "kind": kind,
        "ctdn_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": {"name": info["name"], "fingerprint": info["fingerprint"], "config": info["config"]},
        "hu_window": [float(v) for v in info["hu_window"]],
        "multiple": int(info["multiple"]),
        "io": dict(IO),
        "shapes": _shapes(shapes),
        "precision": precision,
        "device": dev_info,
        "versions": versions,
        "compatibility": {
            "hardware": compat["hardware"],
            "version_compatible": bool(compat["version_compatible"]),
        },
        "rebuild": str(rebuild),
    }


def write_sidecar(path, sidecar: dict | None = None, **fields) -> Path:
    """Write ``<path>.json`` for the engine/package at ``path`` (which must exist); returns its path.

    Either a dict from :func:`make_sidecar` or that function's keywords. ``bytes`` is the file's size,
    ``sha256`` the checksum of its bytes.
    """
    path = Path(path)
    if sidecar is None:
        sidecar = make_sidecar(**fields)
    elif fields:
        raise InputError("write_sidecar takes a sidecar dict or make_sidecar's keywords, not both")
    if not path.is_file():
        raise InputError(f"cannot write a sidecar for {path}: the file does not exist")
    data = {**sidecar, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise InputError(f"sidecar for {path.name} lacks {', '.join(missing)}")
    out = sidecar_path(path)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return out


def read_sidecar(path) -> dict:
    """The sidecar of ``path`` (the engine/package or its .json), checked to be a ctdn-engine/1 sidecar."""
    sc_path = sidecar_path(path)
    if not sc_path.is_file():
        raise EngineError(
            f"{sc_path} not found: every ctdn engine/package has a sidecar beside it; rebuild the file "
            "with ctdn-build-engine (TensorRT) or ctdn.export.to_aoti (AOTInductor)"
        )
    try:
        data = json.loads(sc_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineError(f"{sc_path} is not a readable JSON sidecar ({exc})") from exc
    if not isinstance(data, dict):
        raise EngineError(f"{sc_path} is not a ctdn sidecar (a JSON object expected)")
    rebuild = data.get("rebuild") or "ctdn-build-engine (see its --help)"
    if data.get("format") != FORMAT:
        raise EngineError(
            f"{sc_path}: format is {data.get('format')!r} but this ctdn reads {FORMAT!r}; "
            f"rebuild it on this machine: {rebuild}"
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise EngineError(
            f"{sc_path} lacks {', '.join(missing)}: corrupt; rebuild it on this machine: {rebuild}"
        )
    return data


def _mm(version: str | None) -> tuple[int, int] | None:
    """(major, minor) of a version string like "10.13.0.35" (None when absent or unreadable)."""
    m = re.match(r"\s*(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def _cc(cc: str | None) -> tuple[int, int] | None:
    return _mm(cc)


class _Refusal:
    """Collects mismatches; raises the first (or logs them all when ``check`` is off)."""

    def __init__(self, path: Path, rebuild: str, check: bool) -> None:
        self.path, self.rebuild, self.check = path, rebuild, check

    def __call__(self, field: str, built, here, why: str = "") -> None:
        msg = (
            f"{self.path.name}: {field} is {built!r} in its sidecar but {here!r} here"
            f"{f' ({why})' if why else ''}; rebuild it on this machine: {self.rebuild}"
        )
        if self.check:
            raise EngineError(msg)
        log.warning("ctdn: %s (check disabled: loading anyway)", msg)


def check_sidecar(
    path, *, kind: str, device=None, env: Environment | None = None, check: bool = True
) -> dict:
    """Read the sidecar of ``path`` and refuse (EngineError) a file that cannot run here; returns the sidecar.

    ``kind``: the loader's kind. ``device``: the device the caller wants (default: cuda for
    tensorrt, the sidecar's device type for aoti). ``env``: this machine (default :func:`probe`).
    ``check=False`` logs machine mismatches instead of raising (format errors always raise).
    """
    import torch

    path = Path(path)
    if path.name.endswith(".json"):
        path = path.with_name(path.name[: -len(".json")])
    sc = read_sidecar(path)
    refuse = _Refusal(path, sc["rebuild"], check)
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if sc["kind"] != kind:
        raise EngineError(
            f"{path.name}: kind is {sc['kind']!r} in its sidecar but this loader opens {kind!r} files; "
            f"use the {sc['kind']} backend, or rebuild it on this machine: {sc['rebuild']}"
        )
    if not path.is_file():
        raise EngineError(
            f"{path} not found (its sidecar is there); rebuild it on this machine: {sc['rebuild']}"
        )
    size = path.stat().st_size
    changed = "the file is corrupt or was replaced after its sidecar was written"
    if size != sc["bytes"]:
        refuse("bytes", sc["bytes"], size, changed)
    elif "sha256" in sc and (digest := sha256_file(path)) != sc["sha256"]:
        refuse("sha256", sc["sha256"], digest, changed)
    want = sc["device"].get("type", "cpu")
    if device is not None:
        want = (torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)).type
    elif kind == "tensorrt":
        want = "cuda"
    env = env or probe(device if want == "cuda" else "cpu", tensorrt=kind == "tensorrt")
    if kind == "tensorrt":
        _check_tensorrt(sc, env, refuse, want)
    else:
        _check_aoti(sc, env, refuse, want)
    return sc


def integrity(path, *, require_checksum: bool = False) -> str | None:
    """Why the file at ``path`` is not the one its sidecar describes (None: size and sha256 match).

    ``require_checksum``: a sidecar without ``sha256`` (an older ctdn's) fails too; for files ctdn
    compiles itself, which it can compile again.
    """
    try:
        sc = read_sidecar(path)
    except EngineError as exc:
        return str(exc)
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"{path.name} cannot be read ({exc})"
    if size != sc["bytes"]:
        return f"{path.name} has {size} bytes, its sidecar says {sc['bytes']}"
    if "sha256" not in sc:
        old = f"its sidecar has no sha256 (written by ctdn {sc.get('ctdn_version')})"
        return old if require_checksum else None
    if sha256_file(path) != sc["sha256"]:
        return f"{path.name} does not match the sha256 in its sidecar (damaged or replaced)"
    return None


def _check_gpu(sc: dict, env: Environment, refuse: _Refusal, hardware: str) -> None:
    built = sc["device"].get("compute_capability")
    if env.compute_capability is None:
        refuse("device.compute_capability", built, None, "no CUDA GPU is visible here")
        return
    here = env.compute_capability
    if hardware == "ampere_plus":
        if (_cc(here) or (0, 0)) < (8, 0):
            refuse(
                "device.compute_capability", built, here,
                f"built with hardware compatibility ampere_plus, which needs compute capability 8.0 or newer "
                f"({env.gpu_name} has {here})",
            )  # fmt: skip
    elif _cc(here) != _cc(built):
        refuse(
            "device.compute_capability", built, here,
            f"built on {sc['device'].get('name')}, this GPU is {env.gpu_name}",
        )  # fmt: skip
    elif hardware == "none" and sc["device"].get("name") and env.gpu_name != sc["device"]["name"]:
        # Same compute capability, another model: TensorRT documents engines as specific to the device
        # they were built on unless hardware compatibility is enabled; usually works, so only warn.
        log.warning(
            "ctdn: %s was built on %s, this GPU is %s (same compute capability %s); TensorRT engines "
            "are tuned for the GPU that built them: rebuild for best speed: %s",
            refuse.path.name, sc["device"]["name"], env.gpu_name, here, sc["rebuild"],
        )  # fmt: skip


def _check_tensorrt(sc: dict, env: Environment, refuse: _Refusal, want: str) -> None:
    if want != "cuda":
        refuse("device.type", sc["device"].get("type"), want, "TensorRT engines run on CUDA GPUs only")
    compat = sc.get("compatibility") or {}
    hardware = compat.get("hardware", "none")
    if hardware not in HARDWARE:
        raise EngineError(f"{refuse.path.name}: unknown compatibility.hardware {hardware!r} in its sidecar")
    _check_gpu(sc, env, refuse, hardware)
    built = sc["versions"].get("tensorrt")
    if env.tensorrt is None:
        raise EngineError(
            f"{refuse.path.name} needs TensorRT {built}, which is not installed here (pip install tensorrt, "
            f"or NVIDIA's packages); then rebuild it on this machine if the versions differ: {refuse.rebuild}"
        )
    b, h = _mm(built), _mm(env.tensorrt)
    if compat.get("version_compatible"):
        if b is None or h is None or h < b or h[0] != b[0]:
            refuse(
                "versions.tensorrt", built, env.tensorrt,
                "a version-compatible engine runs on the same or a later TensorRT of the same major version",
            )  # fmt: skip
    elif b is None or h != b:
        refuse(
            "versions.tensorrt",
            built,
            env.tensorrt,
            "TensorRT engines need the TensorRT major.minor that built them",
        )


def _check_aoti(sc: dict, env: Environment, refuse: _Refusal, want: str) -> None:
    built_type = sc["device"].get("type")
    if built_type != want:
        refuse(
            "device.type",
            built_type,
            want,
            "an AOTInductor package runs only on the device type it was compiled for",
        )
    elif built_type == "cuda":
        _check_gpu(sc, env, refuse, "same_compute_capability")
    built = sc["versions"].get("torch")
    here = env.torch
    if (built or "").split("+")[0] != (here or "").split("+")[0]:
        refuse("versions.torch", built, here, "AOTInductor packages are tied to the torch that compiled them")
