"""Shared test settings, and where the suite's caches go: one temporary folder per session.

Every on-disk cache the code under test (or a library it drives) would keep in HOME points into a
folder under the system temp, set in os.environ when this file is imported, before any test module
imports ctdn, triton or torch's compilers: ctdn's engine dir (AOTInductor packages, TensorRT
engines and timing caches) and C++ runtime builds, triton's kernel and autotune cache, inductor's
cache, the CUDA driver's JIT cache, and the XDG cache (torch hub and extensions, pip, matplotlib,
onnxruntime's device id); CI=true keeps openvino's telemetry out of ~/intel. HOME itself is left
alone: pip, git and pyenv read their settings from it. pytest-xdist workers inherit the
controller's folder through the environment; only the process that made the folder removes it, at
exit. At the end of the session the real HOME's cache folders are compared with a listing taken at
the start, and the run fails if a test wrote into them.
"""

import atexit
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

SCRATCH_VAR, OWNER_VAR = "CTDN_TEST_SCRATCH", "CTDN_TEST_SCRATCH_OWNER"
# Each variable and its folder under the session's scratch folder.
CACHE_VARS = {
    "CTDN_ENGINE_DIR": "ctdn/engines",  # ctdn.export.engine_dir (default ~/.cache/ctdn/engines)
    "CTDN_RUNTIME_DIR": "ctdn/runtime",  # ctdn.runtime.build.cache_root (default ~/.cache/ctdn/runtime)
    "TRITON_HOME": "triton",  # triton's cache, dump and override folders (default ~/.triton/...)
    "TRITON_CACHE_DIR": "triton/.triton/cache",  # the same, for a triton without TRITON_HOME
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor",  # default /tmp/torchinductor_<user>, kept across runs
    "CUDA_CACHE_PATH": "nv-compute-cache",  # the CUDA driver's PTX JIT cache (default ~/.nv/ComputeCache)
    "XDG_CACHE_HOME": "xdg-cache",  # ~/.cache: torch hub and extensions, pip, matplotlib's fallback
    "TORCH_HOME": "torch-home",  # torch.hub (default $XDG_CACHE_HOME/torch)
    "TORCH_EXTENSIONS_DIR": "torch-extensions",  # torch.utils.cpp_extension builds
    "MPLCONFIGDIR": "matplotlib",  # matplotlib's font cache (default ~/.config/matplotlib)
}
# Libraries that write into HOME whatever the cache variables say: openvino's telemetry (~/intel, at
# import) stays off when it runs in CI. (onnxruntime's device id goes to $XDG_CACHE_HOME/Microsoft.)
QUIET_VARS = {"CI": "true"}
# Folders of the real HOME that the suite must leave as they are (what the caches above default to).
# Not ~/intel or ~/.cache/Microsoft: any openvino or onnxruntime use outside the suite writes there.
WATCHED = (".cache/ctdn", ".triton", ".nv/ComputeCache", ".cache/torch", ".cache/torch_extensions")


def scratch_root() -> Path:
    """This session's cache folder: made here, or the pytest-xdist controller's (inherited)."""
    inherited = os.environ.get(SCRATCH_VAR)
    mine = os.environ.get(OWNER_VAR) == str(os.getpid())  # this file imported a second time
    if inherited and (mine or os.environ.get("PYTEST_XDIST_WORKER")) and Path(inherited).is_dir():
        return Path(inherited)
    root = Path(tempfile.mkdtemp(prefix="ctdn-test-caches-"))
    os.environ[SCRATCH_VAR], os.environ[OWNER_VAR] = str(root), str(os.getpid())
    owner = os.getpid()
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(root, ignore_errors=True))  # not forks
    return root


def point_caches_at(root: Path) -> dict[str, str]:
    """Set every variable of CACHE_VARS to its folder under ``root`` (made), and QUIET_VARS."""
    values = {var: str(root / sub) for var, sub in CACHE_VARS.items()}
    for value in values.values():
        Path(value).mkdir(parents=True, exist_ok=True)
    os.environ.update(values | QUIET_VARS)
    return values


def listing(home: Path, folders=WATCHED) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file and folder under ``home``'s ``folders`` (absent ones: nothing)."""
    out = {}
    for sub in folders:
        top = home / sub
        if not top.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            for name in ["", *dirnames, *filenames]:
                p = Path(dirpath, name)
                with contextlib.suppress(OSError):
                    st = p.lstat()
                    out[str(p.relative_to(home))] = (st.st_size, st.st_mtime_ns)
    return out


def leaks(before: dict, after: dict) -> list[str]:
    """What appeared or changed between two :func:`listing` results (removals are not writes)."""
    return sorted(k for k, v in after.items() if before.get(k) != v)


SCRATCH = scratch_root()
point_caches_at(SCRATCH)
_REAL_HOME = Path.home()  # HOME is not changed above: this is the user's
_OWNER = os.environ[OWNER_VAR] == str(os.getpid())
_HOME_BEFORE = listing(_REAL_HOME) if _OWNER else {}
_LEAKED: list[str] = []

import torch  # noqa: E402 - after the cache variables, which torch's compilers read at import

# Two pytest-xdist workers on a 2-core machine: one torch thread each avoids oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if it wrote into the real HOME's cache folders (checked once, by the controller,
    after every worker has finished)."""
    if not _OWNER:
        return
    _LEAKED[:] = leaks(_HOME_BEFORE, listing(_REAL_HOME))
    if _LEAKED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _LEAKED:
        shown = "\n  ".join(_LEAKED[:20]) + (f"\n  ... {len(_LEAKED) - 20} more" if len(_LEAKED) > 20 else "")
        terminalreporter.write_line(
            f"FAILED: the tests wrote into {_REAL_HOME} (caches must go under ${SCRATCH_VAR}, see "
            f"tests/conftest.py):\n  {shown}",
            red=True,
            bold=True,
        )


@contextlib.contextmanager
def quick_autotuning():
    """On a GPU, the fused kernels' autotuners time each config for a few runs, not triton's ~125 ms:
    the tests check results, not which tile wins, and every new shape times every config (the
    kernel tests took 199 s on 8 workers on an H200). No-op without CUDA (no autotuning there)."""
    if not torch.cuda.is_available():
        yield []
        return
    import triton.testing
    from ctdn.kernels import nafblock

    def quick(fn, quantiles):
        return triton.testing.do_bench(fn, warmup=1, rep=3, quantiles=quantiles)

    tuned = [t for t in nafblock._TUNED.values() if hasattr(t, "_do_bench")]  # triton 3.2-3.9
    saved = [(t._do_bench, getattr(t, "cache_results", False)) for t in tuned]
    for t in tuned:
        t._do_bench = quick
        if hasattr(t, "cache_results"):  # picks from a few runs must not reach the on-disk cache
            t.cache_results = False
    try:
        yield tuned
    finally:
        for t, (d, c) in zip(tuned, saved, strict=True):
            t._do_bench = d
            if hasattr(t, "cache_results"):
                t.cache_results = c


@pytest.fixture(scope="module")
def quick_autotune():
    with quick_autotuning():
        yield
