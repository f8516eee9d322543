"""Latency of ``ctdn.denoise`` per 512x512 slice: presets ``edge`` and ``paper``, every available backend.

The ``edge`` numbers use the shipped weights when they are present (the weights do not change the
cost); ``paper`` has no shipped weights and runs a freshly initialised model of the same shape.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctdn import backends, phantoms
from ctdn.errors import InputError
from ctdn.inference import Denoiser
from ctdn.models import build, count_macs
from ctdn.models.checkpoint import WEIGHTS_DIR, load_model

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def slice512():
    return phantoms.generate("abdomen", seed=0, size=512).hu


def _model(preset: str):
    if preset == "edge" and (WEIGHTS_DIR / "edge.safetensors").exists():
        return load_model("edge")
    return build(preset).eval()


@pytest.mark.benchmark(group="denoise-512")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", sorted(backends.BACKENDS))
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("preset", ["edge", "paper"])
def test_denoise_slice(benchmark, slice512, preset, backend, device, precision):
    why = backends.unavailable(backend, torch.device(device))
    if why is not None:
        pytest.skip(f"backend {backend} on {device}: {why}")
    model = _model(preset)
    try:
        den = Denoiser(model, backend=backend, device=device, precision=precision)
    except InputError as exc:  # a precision this backend or device does not run
        pytest.skip(str(exc))
    den(slice512, 0.1)  # warm-up
    out = benchmark(den, slice512, 0.1)
    assert out.shape == (512, 512) and np.isfinite(out).all()
    benchmark.extra_info.update(
        preset=preset,
        backend=backend,
        device=device,
        precision=precision,
        gmacs_per_slice=count_macs(model, torch.zeros(1, 1, 512, 512), torch.tensor([0.1])) / 1e9,
        params_m=sum(p.numel() for p in model.parameters()) / 1e6,
    )
