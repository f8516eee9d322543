"""Shared test settings."""

import contextlib
import os

import pytest
import torch

# Two pytest-xdist workers on a 2-core machine: one torch thread each avoids oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


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
