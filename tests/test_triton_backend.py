"""The triton backend: fused model through ctdn.Denoiser, against the torch backend.

Without CUDA it runs under Triton's interpreter on the CPU (TRITON_INTERPRET=1, tiny model, small
slices); the CUDA-graph path runs only on a GPU (marked ``gpu``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from ctdn import backends, kernels
from ctdn.inference import Denoiser
from ctdn.models import build

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are imported (see tests/test_kernels.py)

needs_triton = pytest.mark.skipif(kernels.unavailable() is not None, reason=str(kernels.unavailable()))
pytestmark = pytest.mark.usefixtures("quick_autotune")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _ieee_fp32_reference():
    """The fp32 reference in IEEE fp32: on a GPU, cuDNN's default TF32 convolutions are ~3e-4 off."""
    with backends.ieee_fp32():
        yield


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build("tiny").eval()
    with torch.no_grad():  # a non-trivial network (beta, gamma and the FiLM start at zero)
        for p in m.parameters():
            p.normal_(0, 0.2)
    return m


@pytest.fixture(scope="module")
def slices():
    return np.random.default_rng(0).normal(40, 300, (2, 20, 28)).astype(np.float32)  # HU


def test_registered_and_never_auto_on_the_cpu(monkeypatch):
    assert backends.BACKENDS["triton"] == "ctdn.backends.triton_fused"
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    why = backends.unavailable("triton", torch.device("cpu"))
    assert why is not None and ("CUDA" in why or "triton is not installed" in why)
    assert backends.resolve("auto", torch.device("cpu")) != "triton"


@needs_triton
def test_matches_the_torch_backend_and_leaves_the_model_alone(model, slices):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref = Denoiser(model, backend="torch", device=DEVICE)(slices, [0.1, 0.5])
    den = Denoiser(model, backend="triton", device=DEVICE, precision="fp32")
    assert den.backend == "triton"
    got = den(slices, [0.1, 0.5])
    assert got.shape == slices.shape and got.dtype == slices.dtype
    assert np.abs(got - ref).max() < 0.01  # HU (measured 4e-4 under the interpreter)
    after = model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


@needs_triton
def test_half_precision_keeps_the_callers_model_in_fp32(model, slices):
    den = Denoiser(model, backend="triton", device=DEVICE, precision="fp16")
    ref = Denoiser(model, backend="torch", device=DEVICE)(slices[:1], 0.25)
    got = den(slices[:1], 0.25)
    assert np.isfinite(got).all() and np.abs(got - ref).max() < 5  # HU (measured 1.1, random weights)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with pytest.raises(Exception, match="precision must be one of"):
        Denoiser(model, backend="triton", device=DEVICE, precision="int8")


@needs_triton
def test_a_runner_can_force_one_path_on_every_block(model, slices):
    """What the model benchmark's ``fused-split-ln`` runs: every block on the "split-ln" path."""
    from ctdn.kernels.nafblock import FusedNAFBlock

    from ctdn.backends.triton_fused import Runner

    run = Runner(model, torch.device(DEVICE), "fp32", path="split-ln")
    fused = [m for m in run.model.modules() if isinstance(m, FusedNAFBlock)]
    assert fused and {m.path for m in fused} == {"split-ln"}
    x = np.clip(slices / 1000.0, -1, 1)[:, None].astype(np.float32)  # the HU window as the network sees it
    dose = np.full(len(x), 0.25, np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x), torch.from_numpy(dose)).numpy()
    assert np.abs(run(x, dose) - ref).max() < 1e-4
    with pytest.raises(ValueError, match="path must be one of"):
        Runner(model, torch.device(DEVICE), "fp32", path="fast")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@needs_triton
def test_cuda_graphs_replay_per_shape(model, slices, monkeypatch):
    from ctdn.backends import triton_fused

    den = Denoiser(model, backend="triton", device="cuda", precision="fp16")
    runner = den._runner
    a = den(slices, 0.25)
    b = den(slices[:, :16, :24], 0.25)
    assert len(runner._graphs) == 2
    np.testing.assert_array_equal(den(slices, 0.25), a)  # a replay gives the captured result
    monkeypatch.setattr(runner, "use_graphs", False)
    np.testing.assert_allclose(den(slices, 0.25), a, atol=0.05)  # eager: same kernels, same numbers
    np.testing.assert_allclose(den(slices[:, :16, :24], 0.25), b, atol=0.05)
    assert triton_fused.MAX_GRAPHS >= 2
