"""The tensorrt backend's parts that run without TensorRT: why it is unavailable, where it looks for an
engine and how it refuses a missing one. Running an engine needs TensorRT and a GPU (marked tests)."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import ctdn.export
import ctdn.runtime
from ctdn.backends import tensorrt as trt
from ctdn.errors import EngineError, InputError, MissingDependencyError
from ctdn.export import fingerprint
from ctdn.models import load_model

SLUG = "sm90-nvidia-h100-80gb-hbm3"
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def edge():
    return load_model("edge")


@pytest.fixture
def engines(monkeypatch, tmp_path):
    """An empty engine folder, and this 'GPU' an H100 (only its slug: nothing touches CUDA)."""
    monkeypatch.setenv("CTDN_ENGINE_DIR", str(tmp_path))
    monkeypatch.setattr(ctdn.export, "device_slug", lambda device: SLUG)
    return tmp_path


def test_unavailable_on_the_cpu():
    assert trt.unavailable(torch.device("cpu")) == "TensorRT runs on CUDA GPUs only, not on cpu"


def test_unavailable_without_a_cuda_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trt.unavailable(CUDA) == "no CUDA device (torch.cuda.is_available() is False)"


def test_unavailable_without_tensorrt_root(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("TENSORRT_ROOT", raising=False)
    monkeypatch.delitem(sys.modules, "ctdn._runtime", raising=False)
    assert "TENSORRT_ROOT is not set" in trt.unavailable(CUDA)


def test_unavailable_says_why_the_runtime_would_lack_tensorrt(monkeypatch, tmp_path):
    # TENSORRT_ROOT points at a folder without TensorRT: the build plan refuses it (or, with a CPU torch
    # as here, skips the CUDA part TensorRT needs); either way the reason is the plan's own.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("TENSORRT_ROOT", str(tmp_path))
    monkeypatch.delitem(sys.modules, "ctdn._runtime", raising=False)
    why = trt.unavailable(CUDA)
    assert why and "tensorrt" in why.lower()


def test_unavailable_asks_a_loaded_runtime(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for features, why in ((["aoti", "cuda"], "built without TensorRT"), (["aoti", "cuda", "tensorrt"], None)):
        loaded = types.SimpleNamespace(build_features=lambda f=features: f)
        monkeypatch.setitem(sys.modules, "ctdn._runtime", loaded)
        got = trt.unavailable(CUDA)
        assert got is None if why is None else why in got


def test_importing_the_backend_is_cheap():
    code = (
        "import sys, ctdn.backends.tensorrt as t, torch; t.unavailable(torch.device('cpu')); "
        "print([m for m in ('tensorrt', 'ctdn._runtime', 'ctdn.runtime', 'ctdn.export') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_engine_lookup_path(edge, engines):
    fp = fingerprint(edge)
    assert trt.engine_for(edge, "fp16", SLUG) == engines / f"edge-{fp}-tensorrt-{SLUG}-fp16.engine"
    assert trt.engine_for(edge, "fp16", SLUG) == ctdn.export.engine_path("edge", fp, "tensorrt", SLUG, "fp16")


def test_missing_engine_gives_the_build_command(edge, engines):
    fp = fingerprint(edge)
    other = engines / f"edge-{fp}-tensorrt-{SLUG}-fp32.engine"
    other.write_bytes(b"")
    want = engines / f"edge-{fp}-tensorrt-{SLUG}-fp16.engine"
    with pytest.raises(EngineError) as info:
        trt.Runner(edge, CUDA, None)  # default precision fp16
    msg = str(info.value)
    assert f"{want} does not exist" in msg
    assert f"ctdn-build-engine --model edge --precision fp16 --out {want}" in msg
    assert other.name in msg  # the engines that are there
    assert "never builds engines itself" in msg


def test_build_command():
    out = Path("/engines/my model.engine")
    assert trt.build_command("edge", "bf16", out, torch.device("cuda", 1)) == (
        "ctdn-build-engine --model edge --precision bf16 --device cuda:1 --out '/engines/my model.engine'"
    )
    # A model that is not shipped is built from its checkpoint.
    assert "--model PATH/TO/mine.safetensors" in trt.build_command("mine", "fp32", out)


def test_bad_precision_and_device(edge, engines):
    with pytest.raises(InputError, match="precision must be one of fp32, fp16, bf16"):
        trt.Runner(edge, CUDA, "int8")
    with pytest.raises(InputError, match="runs on CUDA devices"):
        trt.Runner(edge, torch.device("cpu"), "fp16")


def test_engine_present_but_runtime_without_tensorrt(edge, engines, monkeypatch):
    path = trt.engine_for(edge, "fp16", SLUG)
    path.write_bytes(b"not an engine")
    monkeypatch.setattr(
        ctdn.runtime, "load", lambda: types.SimpleNamespace(build_features=lambda: ["aoti"]), raising=False
    )
    with pytest.raises(MissingDependencyError, match="built without TensorRT .*TENSORRT_ROOT"):
        trt.Runner(edge, CUDA, "fp16")


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_engine_matches_torch(edge):
    """An fp32 engine built on this machine (ctdn-build-engine --precision fp32) against the torch backend."""
    why = trt.unavailable(CUDA)
    if why:
        pytest.skip(why)
    try:
        runner = trt.Runner(edge, CUDA, "fp32")
    except EngineError as exc:
        pytest.skip(f"no fp32 engine for edge on this GPU: {exc}")
    from ctdn.backends.pytorch import Runner as TorchRunner

    x = np.random.default_rng(0).uniform(-1, 1, (2, 1, 512, 512)).astype(np.float32)
    dose = np.array([0.1, 0.5], np.float32)
    ref = TorchRunner(edge, CUDA, "fp32")(x, dose)
    got = runner(x, dose)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 2e-3  # unit space: 2 HU
