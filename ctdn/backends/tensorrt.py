"""The TensorRT backend: an engine built once on this GPU by ``ctdn-build-engine``, run by ctdn's C++
runtime (``ctdn._runtime``: TensorRT 10 execution context, CUDA graphs, pinned staging).

It never builds an engine itself (minutes, and tied to this GPU and TensorRT version): the Runner looks
up ``ctdn.export.engine_path(name, fingerprint(model), "tensorrt", device_slug(device), precision)``
under :func:`ctdn.export.engine_dir` and refuses a missing one with the exact command that builds it.
The sidecar checks (GPU, TensorRT version, file size) are the runtime's, against the TensorRT library
it actually loads (the engine's sha256, where its sidecar has one, is checked here first); the
Python ``tensorrt`` package is needed only to build engines, not to run them.

``auto`` ranks it below torch (see PRIORITY): whether an engine exists depends on the model, which
``unavailable`` does not see, and ``auto`` must not pick a backend that then refuses to start.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from ..errors import CTDNError, EngineError, InputError, MissingDependencyError

NAME = "tensorrt"
# Below torch (10): chosen by name (backend="tensorrt"), never by auto; see the module docstring.
PRIORITY = {"cuda": 1}
PRECISIONS = ("fp32", "fp16", "bf16")
DEFAULT_PRECISION = "fp16"  # what engines are built for by default: TensorRT's usual deployment precision
KIND = "tensorrt"


def _runtime_reason() -> str | None:
    """Why ctdn's C++ runtime has (or would be built) without the TensorRT kind; None if it has it."""
    ext = sys.modules.get("ctdn._runtime")
    if ext is not None:  # already loaded: ask it
        if KIND in ext.build_features():
            return None
        return (
            "the loaded ctdn runtime was built without TensorRT (set TENSORRT_ROOT and rebuild: "
            "python -m ctdn.runtime.build)"
        )
    root = os.environ.get("TENSORRT_ROOT")
    if not root:
        return "TENSORRT_ROOT is not set (ctdn's C++ runtime gets TensorRT from its install folder)"
    from ..runtime.build import plan  # no compiling: what a build here would contain (~1 s)

    try:
        p = plan()
    except CTDNError as exc:
        return str(exc)
    if KIND not in p["features"]:
        return p["skipped"].get(KIND, "the C++ runtime would be built without TensorRT")
    return None


def unavailable(device: torch.device) -> str | None:
    if device.type != "cuda":
        return f"TensorRT runs on CUDA GPUs only, not on {device.type}"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return _runtime_reason()


def _model_arg(name: str) -> str:
    """What to give ctdn-build-engine --model: a shipped name, or where the checkpoint must be."""
    from ..models.checkpoint import WEIGHTS_DIR

    if (WEIGHTS_DIR / f"{name}.safetensors").is_file():
        return name
    return f"PATH/TO/{name}.safetensors"  # a model from ctdn-train or save_model: its checkpoint file


def build_command(name: str, precision: str, out: Path, device: torch.device | None = None) -> str:
    """The ctdn-build-engine command that writes the engine this backend looks for."""
    model = _model_arg(name)
    cmd = ["ctdn-build-engine", "--model", model, "--precision", precision]
    if device is not None and device.index not in (None, 0):
        cmd += ["--device", str(device)]
    cmd += ["--out", str(out)]
    return " ".join(c if c is model else shlex.quote(c) for c in cmd)  # the placeholder stays readable


def engine_for(model, precision: str, slug: str) -> Path:
    """Where the engine of ``model`` at ``precision`` for the GPU ``slug`` lives (it may not exist)."""
    from ..export import engine_path, fingerprint, model_name

    return engine_path(model_name(model), fingerprint(model), KIND, slug, precision)


def _check_precision(precision: str | None) -> str:
    precision = precision or DEFAULT_PRECISION
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def _missing(model, path: Path, precision: str, device: torch.device) -> EngineError:
    from ..export import model_name

    name = model_name(model)
    others = sorted(p.name for p in path.parent.glob(path.name.split("-tensorrt-")[0] + "-tensorrt-*.engine"))
    seen = f" (engines of this model there: {', '.join(others)})" if others else ""
    return EngineError(
        f"no TensorRT engine for model {name!r} at {precision} on this GPU: {path} does not exist{seen}. "
        "The tensorrt backend never builds engines itself (that takes minutes and ties the engine to this "
        "GPU and TensorRT version); build it once on this machine with: "
        f"{build_command(name, precision, path, device)}  (engines are kept in $CTDN_ENGINE_DIR, default "
        "~/.cache/ctdn/engines)"
    )


def _check_checksum(path: Path) -> None:
    """Refuse an engine whose bytes are not the ones its sidecar records (size, sha256) before TensorRT
    reads it; an unreadable sidecar is left to the runtime, which refuses it as every loader does."""
    from ..deploy.sidecar import integrity, read_sidecar

    try:
        sc = read_sidecar(path)
    except EngineError:
        return
    why = integrity(path)
    if why is not None:
        raise EngineError(f"{why}; rebuild it on this machine: {sc['rebuild']}")


class Runner:
    """A ``ctdn._runtime.Runtime`` on the engine built for this model, GPU and precision (default fp16)."""

    def __init__(self, model, device: torch.device, precision: str | None = None) -> None:
        from ..deploy.sidecar import check_model
        from ..export import device_slug

        precision = _check_precision(precision)
        if device.type != "cuda":
            raise InputError(f"the tensorrt backend runs on CUDA devices, got {device}")
        self.precision = precision
        self.path = engine_for(model, precision, device_slug(device))
        if not self.path.is_file():
            raise _missing(model, self.path, precision, device)
        from .. import runtime

        ext = runtime.load()
        if KIND not in ext.build_features():
            raise MissingDependencyError(
                f"ctdn's C++ runtime was built without TensorRT (it has {', '.join(ext.build_features())}), "
                f"so it cannot run {self.path.name}: set TENSORRT_ROOT and rebuild: "
                "python -m ctdn.runtime.build"
            )
        _check_checksum(self.path)
        index = device.index if device.index is not None else torch.cuda.current_device()
        # The runtime checks the sidecar (GPU, TensorRT version, size) and raises EngineError on a mismatch.
        self.runtime = ext.Runtime(str(self.path), device=index, max_batch=0, cuda_graphs=True, check=True)
        check_model(self.runtime.sidecar, model, self.path)  # another model's engine under this name

    def __call__(self, x: np.ndarray, dose: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        dose = np.ascontiguousarray(dose, dtype=np.float32)
        return self.runtime.infer(x, dose)
