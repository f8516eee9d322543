"""The aoti backend: the model compiled to an AOTInductor package, run by ctdn's C++ runtime.

The package (``ctdn.export.to_aoti``) lives in :func:`ctdn.export.engine_dir`, named by the model's
fingerprint, the device and the precision; it is compiled on first use (a minute or two for ``edge``
on 2 CPU cores, logged) and reused after. It runs through ``ctdn._runtime`` (``csrc/``), which the
first use also compiles if it is not built yet (see :mod:`ctdn.runtime`). A cached package that no
longer fits (another torch) or is not the file its sidecar describes (size and sha256: damaged,
truncated, replaced, or from a ctdn that wrote no checksum) is compiled again.

Not chosen by ``backend="auto"`` (PRIORITY below torch's): its first use compiles for minutes, and
auto cannot know whether a package for the model is already there.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from ..errors import EngineError, InputError

NAME = "aoti"
PRIORITY = {"cpu": 5, "cuda": 5}
PRECISIONS = ("fp32",)

log = logging.getLogger("ctdn")

_ABSENT = "not compiled yet"


def unavailable(device: torch.device) -> str | None:
    if device.type not in ("cpu", "cuda"):
        return f"device type {device.type!r} is not supported"
    if device.type == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available to this torch build"
    from .. import runtime

    why = runtime.unavailable()
    if why is not None:
        return why
    if device.type == "cuda":
        from ..runtime import build

        feats = runtime.features()
        if feats is not None and "cuda" not in feats:
            return "the C++ runtime was built without CUDA (python -m ctdn.runtime.build --cuda)"
        if feats is None and build.cuda_home() is None:
            return "the C++ runtime needs nvcc to run on CUDA (set CUDA_HOME or put nvcc on PATH)"
    return None


def _stale(path) -> str | None:
    """Why the cached package at ``path`` must not be used (None: present, and as its sidecar says)."""
    from ..deploy.sidecar import integrity

    if not (path.is_file() and path.with_name(path.name + ".json").is_file()):
        return _ABSENT
    return integrity(path, require_checksum=True)


def _compile(model, path, device: torch.device) -> None:
    from .. import export
    from ..runtime import file_lock

    with file_lock(path.with_name(f".{path.name}.lock")):
        if _stale(path) is None:
            return  # another process compiled it meanwhile
        log.warning(
            "ctdn: compiling the model to an AOTInductor package for %s (once; minutes): %s", device, path
        )
        t0 = time.perf_counter()
        export.to_aoti(model, path, device=device.type)
        log.warning("ctdn: compiled %s in %.0f s", path.name, time.perf_counter() - t0)


class Runner:
    """Finds (or compiles) the package for ``model`` on ``device`` and runs it with ``Runtime.infer``."""

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str | None = None) -> None:
        from .. import export, runtime

        precision = precision or "fp32"
        if precision not in PRECISIONS:
            raise InputError(f"the aoti backend runs fp32 only, got precision {precision!r}")
        self.device, self.precision = device, precision
        mod = runtime.load()
        index = (device.index or 0) if device.type == "cuda" else 0
        slug = export.device_slug(device)
        self.path = export.engine_path(
            export.model_name(model), export.fingerprint(model), "aoti", slug, precision
        )
        why = _stale(self.path)
        if why is not None:
            if why != _ABSENT:
                log.warning("ctdn: compiling %s again: %s", self.path.name, why)
            _compile(model, self.path, device)
        try:
            self.runtime = mod.Runtime(str(self.path), device=index)
        except EngineError as exc:
            # A package in the cache that no longer fits (another torch, corrupt): compile it again.
            log.warning("ctdn: recompiling %s: %s", self.path.name, exc)
            self.path.with_name(self.path.name + ".json").unlink(missing_ok=True)
            _compile(model, self.path, device)
            self.runtime = mod.Runtime(str(self.path), device=index)
        from ..deploy.sidecar import check_model

        check_model(self.runtime.sidecar, model, self.path)  # another model's package under this name
        built = self.runtime.sidecar["device"]["type"]
        if built != device.type:  # the device slug names the device, so only a hand-placed file gets here
            raise EngineError(f"{self.path.name} was compiled for {built}, not {device.type}")

    def __call__(self, x: np.ndarray, dose: np.ndarray) -> np.ndarray:
        return self.runtime.infer(
            np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(dose, dtype=np.float32)
        )
