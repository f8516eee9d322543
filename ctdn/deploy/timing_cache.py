"""The TensorRT timing cache ctdn-build-engine reuses: one file per (GPU, TensorRT version), checked.

TensorRT's serialized timing cache is stored behind a ``ctdn-cache/1`` header (:mod:`ctdn._cache`)
naming the TensorRT version and the GPU (name and compute capability) it was timed on, with the
payload's size and sha256. A file that fails any check (another TensorRT or GPU, truncated, altered,
written by an older ctdn without the header, or not a cache at all) is ignored with a warning and
replaced after the build; its bytes never reach TensorRT. The file is written atomically under a
lock, merged with what another build may have written meanwhile.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .._cache import CacheInvalid, read_checked, write_checked
from ..errors import EngineError
from .sidecar import Environment, device_slug

__all__ = ["KIND", "timing_cache_path", "identity", "load", "save"]

log = logging.getLogger("ctdn")

KIND = "tensorrt-timing-cache"


def timing_cache_path(env: Environment) -> Path:
    """``<engine_dir>/timing/<gpu slug>-trt<version>.cache``: one cache per (GPU, TensorRT version)."""
    from ..export import engine_dir

    if env.compute_capability is None or env.gpu_name is None:
        raise EngineError("a TensorRT timing cache is per GPU and no CUDA GPU is visible here")
    return engine_dir() / "timing" / f"{device_slug('cuda', env)}-trt{env.tensorrt or 'unknown'}.cache"


def identity(env: Environment) -> dict:
    """What a timing cache belongs to: the TensorRT version and the GPU it was timed on."""
    return {"tensorrt": env.tensorrt, "gpu": env.gpu_name, "compute_capability": env.compute_capability}


def load(path: Path | None, ident: dict | None, *, warn: bool = True) -> bytes:
    """The TensorRT payload of the cache at ``path`` if it passes every check, else b"" (logged)."""
    if path is None:
        return b""
    try:
        return read_checked(path, kind=KIND, identity=ident or {}) or b""
    except (CacheInvalid, OSError) as exc:
        if warn:
            what = "ignoring" if isinstance(exc, CacheInvalid) else "cannot read"
            log.warning("ctdn: %s the timing cache %s (%s); starting an empty one", what, path, exc)
        return b""


def save(config, path: Path, ident: dict | None) -> None:
    """Merge what this build timed into the cache file (another build may have written it meanwhile)."""
    from ..runtime import file_lock

    cache = config.get_timing_cache()
    if cache is None:
        return
    try:
        with file_lock(path.with_name(f".{path.name}.lock")):
            blob = load(path, ident, warn=False)  # a bad file was reported when the build began
            if blob:
                previous = config.create_timing_cache(blob)
                if previous is not None and not cache.combine(previous, ignore_mismatch=True):
                    log.warning("ctdn: could not merge the old timing cache %s into the new one", path)
            write_checked(path, bytes(memoryview(cache.serialize())), kind=KIND, identity=ident or {})
    except OSError as exc:  # the engine is built; the cache only speeds up the next build
        log.warning(
            "ctdn: cannot write the timing cache %s (%s); the next build starts without it", path, exc
        )
