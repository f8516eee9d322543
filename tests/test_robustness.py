"""Robustness of the user-facing paths: sources never altered, outputs complete or absent, concurrent
runs, bitwise determinism on the CPU.

A tiny random-init model saved to a file stands in for the shipped weights (the plumbing is under
test, not the denoising).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import disc_volume, make_ct_series

from ctdn import backends
from ctdn.cli import main
from ctdn.inference import Denoiser
from ctdn.io import read_dicom
from ctdn.models import build, save_model

N, SIZE = 4, 48


def _hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (names relative to it), plus the folders' names."""
    out = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        out[key] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


def _volume(n: int = N, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return disc_volume(n, size, seed)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A read-only-by-convention folder: a DICOM series, .npy volumes (one with a NaN) and a model."""
    root = tmp_path_factory.mktemp("inputs")
    stored = np.clip(np.rint(_volume() + 1024), 0, 4095).astype(np.int64)
    make_ct_series(root / "series", n=N, rows=SIZE, cols=SIZE, stored=stored, shuffle=True)
    np.save(root / "vol.npy", _volume())
    bad = _volume()
    bad[2, 5, 7] = np.nan
    np.save(root / "nan.npy", bad)
    save_model(build("tiny"), root / "tiny.safetensors", {"name": "tiny"})
    return root


def _denoise(inputs: Path, src, dst: Path, *extra: str) -> list[str]:
    """``ctdn denoise`` arguments; ``src`` relative to ``inputs`` (or absolute)."""
    model = str(inputs / "tiny.safetensors")
    return ["denoise", str(inputs / src), str(dst), "--dose", "0.25", "--model", model, "--quiet", *extra]


# --- the sources are never altered ---------------------------------------------------------------
SIM = ["--dose", "0.5", "--pixel-size", "0.8"]  # the factory's pixels are 0.75 x 0.8 mm
CASES = {
    # name: (argv builder, expected exit code)
    "dicom->dicom": (lambda i, o: _denoise(i, "series", o / "den"), 0),
    "dicom->npy": (lambda i, o: _denoise(i, "series", o / "den.npy"), 0),
    "dicom->nifti": (lambda i, o: _denoise(i, "series", o / "den.nii.gz"), 0),
    "npy->npy": (lambda i, o: _denoise(i, "vol.npy", o / "den.npy"), 0),
    "npy->npy torch fp32 batch 3": (lambda i, o: _denoise(i, "vol.npy", o / "d.npy", "--batch-size", "3"), 0),
    "npy with NaN (fails after reading)": (lambda i, o: _denoise(i, "nan.npy", o / "den.npy"), 2),
    "bad dose": (lambda i, o: [*_denoise(i, "vol.npy", o / "den.npy")[:-1], "--dose", "1.5"], 2),
    "output inside the input": (lambda i, o: _denoise(i, "series", i / "series" / "den"), 2),
    "output is the input": (lambda i, o: _denoise(i, "vol.npy", i / "vol.npy", "--overwrite"), 2),
    "dicom output from npy": (lambda i, o: _denoise(i, "vol.npy", o / "den"), 2),
    "simulate dicom->dicom": (lambda i, o: ["simulate", f"{i}/series", f"{o}/low", *SIM], 0),
    "export onnx": (lambda i, o: ["export", str(o / "m.onnx"), "--model", str(i / "tiny.safetensors")], 0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_no_cli_path_alters_its_inputs(inputs, tmp_path, case, capsys):
    argv_of, want = CASES[case]
    before = _hashes(inputs)
    code = main(argv_of(inputs, tmp_path))
    err = capsys.readouterr().err
    assert code == want, err
    if want != 0:
        assert err.startswith("ctdn: error: ") and err.count("\n") == 1, err  # one clear line
    assert _hashes(inputs) == before, "an input file or folder was changed, added or removed"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_a_write_failing_half_way_leaves_no_dicom_output(inputs, tmp_path, monkeypatch, capsys):
    from ctdn.io import dicom

    real, calls = dicom._write_file, []

    def failing(ds, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(ds, path)

    monkeypatch.setattr(dicom, "_write_file", failing)
    before = _hashes(inputs)
    out = tmp_path / "den"
    assert main(_denoise(inputs, "series", out)) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert len(calls) == 3 and not out.exists()
    assert list(tmp_path.iterdir()) == [], "a partial or temporary output was left"
    assert _hashes(inputs) == before


def test_a_failure_half_way_leaves_no_npy_output(inputs, tmp_path, monkeypatch, capsys):
    real = Denoiser.__call__
    done = []

    def dies(self, *a, **k):
        done.append(1)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Denoiser, "__call__", dies)
    out = tmp_path / "den.npy"
    assert main(_denoise(inputs, "vol.npy", out)) == 2
    assert done and not out.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(Denoiser, "__call__", real)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()`` is true; False if it finished first."""
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.wait()
    return False


@pytest.mark.parametrize("moment", ["output begun", "half written"])
def test_killed_while_writing_the_output_is_complete_or_absent(inputs, tmp_path, moment):
    """A real crash (SIGKILL) while the DICOM series is being written: no partial series, ever."""
    n = 24  # enough files that the kill lands inside the writing
    series = tmp_path / "big"
    stored = np.clip(np.rint(_volume(n=n) + 1024), 0, 4095).astype(np.int64)
    make_ct_series(series, n=n, rows=SIZE, cols=SIZE, stored=stored)
    before = _hashes(series)
    work = tmp_path / "out"
    work.mkdir()
    out = work / "den"
    argv = [sys.executable, "-m", "ctdn", *_denoise(inputs, series, out)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def temps():
        return [p for p in work.iterdir() if p.name.startswith(".")]

    def ready():
        t = temps()
        if moment == "output begun":
            return bool(t)
        return any(p.is_dir() and len(list(p.iterdir())) >= n // 2 for p in t)

    killed = _kill_when(proc, ready)
    assert killed, f"the run ended before the moment was seen: {proc.stderr.read().decode()[-2000:]}"
    assert _hashes(series) == before
    if out.exists():  # renamed into place between the check and the kill: it must be whole
        assert read_dicom(out).hu.shape == (n, SIZE, SIZE)
    # A new run over the debris succeeds and gives the whole series.
    assert main([*_denoise(inputs, series, out), "--overwrite"]) == 0
    assert read_dicom(out).hu.shape == (n, SIZE, SIZE)


# --- concurrency -------------------------------------------------------------------------------------
def test_two_cli_instances_into_different_outputs(inputs, tmp_path):
    outs = [tmp_path / "a.npy", tmp_path / "b.npy"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ctdn", *_denoise(inputs, "vol.npy", o)], stderr=subprocess.PIPE, env=env
        )
        for o in outs
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    a, b = (np.load(o) for o in outs)
    np.testing.assert_array_equal(a, b)
    assert main([*_denoise(inputs, "vol.npy", tmp_path / "c.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), a, atol=1e-3)  # other thread count: HU


# --- determinism ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_same_input_gives_bitwise_the_same_output(inputs, backend):
    import torch

    why = backends.unavailable(backend, torch.device("cpu"))
    if why is not None:
        pytest.skip(f"{backend}: {why}")
    vol = np.load(inputs / "vol.npy")
    model = inputs / "tiny.safetensors"
    a = Denoiser(model, backend=backend, device="cpu")
    b = Denoiser(model, backend=backend, device="cpu")
    first = a(vol, 0.25)
    assert np.array_equal(first, a(vol, 0.25)) and np.array_equal(first, b(vol, 0.25))


def test_same_output_bitwise_across_processes(inputs):
    code = (
        "import hashlib, sys, numpy as np, ctdn; "
        "d = ctdn.Denoiser(sys.argv[1], backend='torch', device='cpu'); "
        "print(hashlib.sha256(d(np.load(sys.argv[2]), 0.25).tobytes()).hexdigest())"
    )
    argv = [sys.executable, "-c", code, str(inputs / "tiny.safetensors"), str(inputs / "vol.npy")]
    digests = {subprocess.run(argv, capture_output=True, text=True, check=True).stdout for _ in range(2)}
    assert len(digests) == 1
