"""``ctdn.denoise`` on 512x512 slices: presets ``edge`` and ``paper``, every available backend, batch 1
and 16, fp32/fp16/bf16 where the backend and device run them, plus eager torch under ``torch.compile``.

Each timed call is one ``Denoiser`` call on a batch of slices (HU in, HU out, host to host).
``extra_info``: slices per call, slices/s, ms per slice, counted GMACs per slice, parameters, and
the peak memory of one call: host RSS growth above the level before the call (sampled every
millisecond, so a brief peak can be missed by up to a millisecond's allocations) and, on CUDA,
``torch.cuda.max_memory_allocated`` during the call.

The ``edge`` numbers use the shipped weights when they are present (the weights do not change the
cost); ``paper`` has no shipped weights and runs a freshly initialised model of the same shape.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from ctdn import backends, phantoms
from ctdn.errors import InputError
from ctdn.inference import Denoiser
from ctdn.models import build, count_macs
from ctdn.models.checkpoint import WEIGHTS_DIR, load_model

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
COMPILED = "torch.compile"  # the torch backend with its model under torch.compile (not a registry backend)


@pytest.fixture(scope="module")
def slice512():
    return phantoms.generate("abdomen", seed=0, size=512).hu


def _model(preset: str):
    if preset == "edge" and (WEIGHTS_DIR / "edge.safetensors").exists():
        return load_model("edge")
    return build(preset).eval()


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def peak_memory(fn, *args) -> dict:
    """Run ``fn(*args)`` once; its peak host RSS growth (sampled, bytes) and CUDA peak allocation."""
    base, peak, stop = _rss(), [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    t = threading.Thread(target=sample, daemon=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t.start()
    try:
        fn(*args)
    finally:
        stop.set()
        t.join()
    out = {"peak_rss_growth_mb": max(0, max(peak[0], _rss()) - base) / 2**20}
    if torch.cuda.is_available():
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


@pytest.mark.benchmark(group="denoise-512")
@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", [*sorted(backends.BACKENDS), COMPILED])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("preset", ["edge", "paper"])
def test_denoise_slice(benchmark, slice512, preset, backend, device, precision, batch):
    name = "torch" if backend == COMPILED else backend
    why = backends.unavailable(name, torch.device(device))
    if why is not None:
        pytest.skip(f"backend {backend} on {device}: {why}")
    model = _model(preset)
    try:
        den = Denoiser(model, backend=name, device=device, precision=precision, batch_size=batch)
    except InputError as exc:  # a precision this backend or device does not run
        pytest.skip(str(exc))
    if backend == COMPILED:
        den._runner.model = torch.compile(den._runner.model)
    x = np.broadcast_to(slice512, (batch, 512, 512)) if batch > 1 else slice512
    den(x, 0.1)  # warm-up (and compilation)
    mem = peak_memory(den, x, 0.1)
    out = benchmark(den, x, 0.1)
    assert out.shape == x.shape and np.isfinite(out).all()
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update(
        preset=preset,
        backend=backend,
        device=device,
        precision=precision,
        batch=batch,
        slices_per_s=batch / mean,
        ms_per_slice=1e3 * mean / batch,
        gmacs_per_slice=count_macs(model, torch.zeros(1, 1, 512, 512), torch.tensor([0.1])) / 1e9,
        params_m=sum(p.numel() for p in model.parameters()) / 1e6,
        **mem,
    )
