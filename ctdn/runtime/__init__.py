"""ctdn's C++ runtime from Python: ``load()`` gives the ``ctdn._runtime`` extension module.

The module is the one installed with ctdn (``CTDN_BUILD_RUNTIME=1 pip install .``) if it was built
against this torch, else a cached build (``ctdn.runtime.build.build()``), compiled here on first
use when a C++ compiler is present (about 20 s on 2 cores; logged). A file lock keeps two processes
from building at once. Nothing here is needed by ctdn's Python paths.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import threading
import time
from pathlib import Path

from ..errors import MissingDependencyError

__all__ = ["load", "unavailable", "features", "file_lock"]

log = logging.getLogger("ctdn")

_MODULE = None
_LOCK = threading.Lock()
_NAME = "ctdn._runtime"


def _public(v: str) -> str:
    return v.split("+")[0]


def _installed():
    """The extension installed in the ctdn package, if built against this torch and these sources."""
    import torch

    try:
        spec = importlib.util.find_spec(_NAME)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    try:
        mod = importlib.import_module(_NAME)
    except ImportError as exc:  # e.g. built against another libtorch: undefined symbols
        log.warning(
            "ctdn.runtime: ignoring the installed %s (%s); building one for this torch", spec.origin, exc
        )
        return None
    if _public(getattr(mod, "torch_version", "")) != _public(torch.__version__):
        log.warning(
            "ctdn.runtime: the installed %s was built for torch %s, this is %s; building one for this torch",
            spec.origin,
            getattr(mod, "torch_version", "?"),
            torch.__version__,
        )
        sys.modules.pop(_NAME, None)
        return None
    from .build import csrc_dir, sources_key

    src = csrc_dir()
    if src is not None and getattr(mod, "sources_key", None) != sources_key(src):
        log.warning(
            "ctdn.runtime: the installed %s was built from other sources than %s; building one",
            spec.origin,
            src,
        )
        sys.modules.pop(_NAME, None)
        return None
    return mod


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock on ``path`` across processes (a no-op where fcntl is missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(_NAME, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules[_NAME] = mod
    return mod


def load():
    """The ``ctdn._runtime`` module, building it into the cache on first use (see the module docstring)."""
    global _MODULE
    with _LOCK:
        if _MODULE is not None:
            return _MODULE
        import torch  # noqa: F401 - loads libtorch before the extension that links it

        mod = _installed()
        if mod is None:
            from . import build as b

            p = b.plan()
            target = b.cached(p, warn=False)  # None: absent, or failed its checks (size, sha256)
            if target is None:
                with file_lock(b.cache_root() / f".{p['key']}.lock"):
                    target = b.cached(p)  # another process may have built it meanwhile; or say why not
                    if target is None:
                        if os.environ.get("CTDN_NO_RUNTIME_BUILD"):
                            raise MissingDependencyError(
                                "the C++ runtime is not built and CTDN_NO_RUNTIME_BUILD forbids building it: "
                                "run python -m ctdn.runtime.build"
                            )
                        log.warning(
                            "ctdn.runtime: building the C++ runtime (%s) into %s, once per version",
                            ", ".join(p["features"]),
                            b.cache_root() / p["key"],
                        )
                        t0 = time.perf_counter()
                        target = b.build()
                        log.warning("ctdn.runtime: built in %.0f s", time.perf_counter() - t0)
            mod = _import(target)
        _MODULE = mod
        return mod


def features() -> list[str] | None:
    """What the loaded runtime contains (e.g. ``["aoti", "cuda"]``); None before :func:`load`."""
    return list(_MODULE.build_features()) if _MODULE is not None else None


def unavailable() -> str | None:
    """Why the C++ runtime cannot be had here (None: it is built, or can be built on first use)."""
    if _MODULE is not None:
        return None
    try:
        if importlib.util.find_spec(_NAME) is not None:
            return None
    except (ImportError, ValueError):
        pass
    from . import build as b

    if b.csrc_dir() is None:
        return "the C++ runtime is not built and its sources (csrc/) are not installed"
    if b.compiler() is None:
        return "the C++ runtime is not built and no C++ compiler (g++) was found to build it"
    if os.environ.get("CTDN_NO_RUNTIME_BUILD"):
        return "the C++ runtime is not built and CTDN_NO_RUNTIME_BUILD forbids building it"
    return None
