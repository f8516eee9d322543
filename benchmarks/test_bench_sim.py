"""Simulator speed at 512x512 (per slice), CPU and, where present, CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctdn import phantoms
from ctdn.sim import Geometry, Simulator, fbp, forward_project

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
GEOMETRIES = {"fan-1152x736": Geometry(), "parallel-576x736": Geometry(kind="parallel")}


@pytest.fixture(scope="module")
def abdomen():
    return phantoms.generate("abdomen", seed=0, size=512)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.benchmark(group="sim-512")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_forward_projection(benchmark, abdomen, name, device):
    mu = torch.from_numpy(abdomen.hu).to(device)[None].mul(0.019 / 1000).add(0.019).clamp(min=0)

    def run():
        out = forward_project(mu, GEOMETRIES[name], abdomen.pixel_size_mm)
        _sync(device)
        return out

    assert benchmark(run).shape[1:] == (GEOMETRIES[name].n_views, 736)


@pytest.mark.benchmark(group="sim-512")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_fbp(benchmark, abdomen, name, device):
    geom = GEOMETRIES[name]
    sino = torch.rand(1, geom.n_views, geom.detectors, device=device)

    def run():
        out = fbp(sino, geom, (512, 512), abdomen.pixel_size_mm)
        _sync(device)
        return out

    assert benchmark(run).shape == (1, 512, 512)


@pytest.mark.benchmark(group="sim-512")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_simulate_one_dose(benchmark, abdomen, name, device):
    sim = Simulator(GEOMETRIES[name], pixel_size_mm=abdomen.pixel_size_mm, device=device)
    out = benchmark(sim.simulate, abdomen.hu, 0.25, seed=0)
    assert out.shape == (512, 512) and np.isfinite(out).all()


@pytest.mark.benchmark(group="sim-512")
@pytest.mark.parametrize("device", DEVICES)
def test_simulate_four_doses_sharing_one_projection(benchmark, abdomen, device):
    sim = Simulator(pixel_size_mm=abdomen.pixel_size_mm, device=device)
    out = benchmark(sim.simulate_doses, abdomen.hu, [0.1, 0.25, 0.5, 0.7], seed=0)
    assert len(out) == 4


@pytest.mark.benchmark(group="sim-batch16")
@pytest.mark.skipif(not torch.cuda.is_available(), reason="batched simulation is for CUDA")
def test_simulate_batch_of_16_on_cuda(benchmark, abdomen):
    sim = Simulator(pixel_size_mm=abdomen.pixel_size_mm, device="cuda", batch_size=16)
    stack = np.repeat(abdomen.hu[None], 16, axis=0)
    out = benchmark(sim.simulate, stack, 0.25, seed=0)
    assert out.shape == (16, 512, 512)
