"""Memory: denoising never holds a second copy of the volume (issue 8, scaled down).

The full-size measurement (1000 slices of 512x512, anonymous memory of the whole process) is
benchmarks/test_bench_memory.py. Here the peak is measured with :mod:`tracemalloc`, which sees every
numpy allocation (numpy reports them to it) but not torch's own (the network's activations, a
constant per batch): it is exact and does not depend on the load of the machine. Memory-mapped
arrays are file-backed, not allocations, so they do not count; that is the point.

Bound checked: peak numpy allocation <= (bytes of the result held in memory) + ``CONSTANT``, where
``CONSTANT`` covers one batch's temporaries and the NaN/inf pre-scan's chunk, for 128x128 slices.
The old code (a float32 copy of the whole input, then the output) needed 2x the output.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from dicom_factory import disc_volume, make_ct_series

import ctdn.inference as inference
from ctdn.cli import main
from ctdn.errors import DicomError, InputError, InputTypeError
from ctdn.inference import Denoiser
from ctdn.io import read_dicom
from ctdn.io.stream import read_dicom_mapped, scratch_array
from ctdn.models import build, save_model

N, SIZE = 48, 128
OUT_BYTES = N * SIZE * SIZE * 4  # 3 MiB of float32
CONSTANT = 2 << 20  # 2 MiB: one batch of temporaries (~1 MiB at batch 1) and the 1 MiB pre-scan mask


def _body(n: int = N, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return disc_volume(n, size, seed)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build("tiny").eval()


@pytest.fixture(scope="module")
def den(model):
    return Denoiser(model, backend="torch", device="cpu", batch_size=1)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, model) -> Path:
    return save_model(model, tmp_path_factory.mktemp("model") / "tiny.safetensors", {"name": "tiny"})


@pytest.fixture()
def volume_file(tmp_path) -> Path:
    src = tmp_path / "in.npy"
    np.save(src, _body())
    return src


def _peak(fn):
    """(fn's result, peak bytes of Python/numpy allocations made while it ran)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return result, peak


def test_api_on_a_memmap_holds_only_the_output(den, volume_file):
    x = np.load(volume_file, mmap_mode="r")
    den(x[:2], 0.1)  # warm-up: lazy imports and caches are not the volume's cost
    out, peak = _peak(lambda: den(x, 0.1))
    assert peak <= OUT_BYTES + CONSTANT, f"peak {peak / 2**20:.2f} MiB, output {OUT_BYTES / 2**20:.0f} MiB"
    np.testing.assert_allclose(out, den(np.array(x), 0.1), atol=1e-5)


def test_api_out_memmap_holds_only_a_constant(den, volume_file, tmp_path):
    x = np.load(volume_file, mmap_mode="r")
    dst = np.lib.format.open_memmap(tmp_path / "out.npy", mode="w+", dtype=np.float32, shape=x.shape)
    den(x[:2], 0.1)
    got, peak = _peak(lambda: den(x, 0.1, out=dst))
    assert got is dst
    assert peak <= CONSTANT, f"peak {peak / 2**20:.2f} MiB with the output on disk"
    dst.flush()
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), den(np.array(x), 0.1), atol=1e-5)


def test_cli_npy_to_npy_streams(model_file, volume_file, tmp_path, capsys):
    dst = tmp_path / "out.npy"
    argv = ["denoise", str(volume_file), str(dst), "--dose", "0.1", "--model", str(model_file), "--quiet"]
    main([*argv[:2], str(tmp_path / "warm.npy"), *argv[3:]])  # warm-up (imports, model loading)
    code, peak = _peak(lambda: main(argv))
    assert code == 0
    # The model's file (tiny: ~0.1 MiB) is read inside the measurement too.
    assert peak <= CONSTANT, f"peak {peak / 2**20:.2f} MiB for a {OUT_BYTES / 2**20:.0f} MiB volume"
    np.testing.assert_array_equal(np.load(dst), np.load(tmp_path / "warm.npy"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy", "out.npy", "warm.npy"]


def test_cli_dicom_to_npy_streams(model_file, tmp_path, capsys):
    src = tmp_path / "series"
    hu = make_ct_series(src, n=N, rows=SIZE, cols=SIZE, shuffle=False)
    dst = tmp_path / "out.npy"
    argv = ["denoise", str(src), str(dst), "--dose", "0.1", "--model", str(model_file), "--quiet"]
    main([*argv[:2], str(tmp_path / "warm.npy"), *argv[3:]])
    code, peak = _peak(lambda: main(argv))
    assert code == 0
    # pydicom holds one header per slice (a few KiB each) and decodes one slice at a time.
    assert peak <= CONSTANT + N * (16 << 10), f"peak {peak / 2**20:.2f} MiB"
    out = np.load(dst)
    assert out.shape == hu.shape and np.isfinite(out).all()


def test_cli_names_the_file_for_a_bad_dtype(model_file, tmp_path, capsys):
    src = tmp_path / "c.npy"
    np.save(src, np.zeros((2, 8, 8), np.complex64))
    code = main(["denoise", str(src), str(tmp_path / "o.npy"), "--dose", "0.1", "--model", str(model_file)])
    err = capsys.readouterr().err
    assert code == 2 and f"{src}: volume must hold real numbers" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npy"]


def test_read_dicom_mapped_refuses_a_huge_header_before_allocating(tmp_path, monkeypatch):
    import ctdn.io.stream as stream

    asked = []
    monkeypatch.setattr(stream, "scratch_array", lambda *a, **k: asked.append(a))
    make_ct_series(tmp_path / "s", n=3, rows=8, cols=8, tweak=lambda ds, k: setattr(ds, "Rows", 65535))
    with pytest.raises(DicomError):
        read_dicom_mapped(tmp_path / "s", scratch_dir=tmp_path)
    assert asked == []  # the first slice was read and refused before any scratch file was asked for


def test_read_dicom_mapped_is_read_dicom(tmp_path):
    make_ct_series(tmp_path / "s", n=7, rows=24, cols=20, shuffle=True, slope=0.5, intercept=-1000)
    ref = read_dicom(tmp_path / "s")
    got = read_dicom_mapped(tmp_path / "s", scratch_dir=tmp_path)
    assert isinstance(got.hu, np.memmap) and got.hu.dtype == np.float32
    np.testing.assert_array_equal(got.hu, ref.hu)
    assert (got.spacing, got.origin, got.orientation, got.series_uid, got.files) == (
        ref.spacing, ref.origin, ref.orientation, ref.series_uid, ref.files
    )
    assert [h.SOPInstanceUID for h in got.headers] == [h.SOPInstanceUID for h in ref.headers]
    assert list(tmp_path.iterdir()) == [tmp_path / "s"]  # the scratch file has no name


def test_npy_output_is_absent_after_a_failure_half_way(model_file, volume_file, tmp_path, monkeypatch):
    monkeypatch.setattr(inference.backends, "create", _failing(inference.backends.create))
    dst = tmp_path / "out.npy"
    with pytest.raises(RuntimeError, match="half-way"):
        main(["denoise", str(volume_file), str(dst), "--dose", "0.1", "--model", str(model_file), "--quiet"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]


def _failing(create):
    """backends.create whose runner raises on its fourth batch."""

    def make(*a, **k):
        runner = create(*a, **k)
        count = [0]

        def run(x, d):
            count[0] += 1
            if count[0] > 3:
                raise RuntimeError("killed half-way")
            return runner(x, d)

        return run

    return make


@pytest.mark.filterwarnings("error")
def test_nan_scan_in_chunks_names_the_first(den, monkeypatch):
    monkeypatch.setattr(inference, "_SCAN_ELEMENTS", 3 * 8 * 8)  # 3 slices per chunk
    x = np.zeros((10, 8, 8), np.float64)
    x[7, 1, 2] = np.nan
    x[4, 5, 6] = 1e300  # inf as float32: named as out of range, without numpy's cast warning
    x[9, 0, 0] = -np.inf
    with pytest.raises(InputError, match=r"3 NaN/inf values \(1 of them finite but beyond float32's range"):
        den(x, 0.1)
    with pytest.raises(InputError, match=r"first at index \(4, 5, 6\)\)"):
        den(x, 0.1)
    with pytest.raises(InputError, match=r"1 NaN/inf values \(first at index \(1, 2\)\)"):
        den(x[7], 0.1)


def test_out_argument(den, tmp_path):
    x = _body(3, 16)
    ref = den(x, 0.1)
    out = np.full(x.shape, np.nan, np.float32)
    assert den(x, 0.1, out=out) is out
    np.testing.assert_allclose(out, ref, atol=1e-5)
    out2 = np.empty((16, 16), np.float32)  # a 2-D input writes a 2-D out
    den(x[0], 0.1, out=out2)
    np.testing.assert_allclose(out2, ref[0], atol=1e-5)
    t = torch.from_numpy(x.copy())
    assert den(t, 0.1, out=out) is out  # a tensor input with out= returns out
    ints = np.rint(x).astype(np.int16)
    out_i = np.empty(x.shape, np.int16)
    den(ints, 0.1, keep_dtype=True, out=out_i)
    np.testing.assert_array_equal(out_i, den(ints, 0.1, keep_dtype=True))
    mm = scratch_array(x.shape, np.float32, tmp_path)
    den(x, 0.1, out=mm)
    np.testing.assert_allclose(mm, ref, atol=1e-5)


@pytest.mark.parametrize(
    "make,err,match",
    [
        (lambda x: [0.0], InputTypeError, "numpy array"),
        (lambda x: torch.zeros(x.shape), InputTypeError, "numpy array"),
        (lambda x: np.empty((2, 16, 16), np.float32), InputError, "shape"),
        (lambda x: np.empty(x.shape, np.float64), InputError, "dtype float32"),
        (lambda x: np.empty(x.shape, np.int16), InputError, "dtype float32"),
        (lambda x: x, InputError, "shares memory"),
        (lambda x: np.broadcast_to(np.float32(0), x.shape), InputError, "read-only"),
    ],
)
def test_bad_out(den, make, err, match):
    x = _body(3, 16)
    before = x.copy()
    with pytest.raises(err, match=match):
        den(x, 0.1, out=make(x))
    np.testing.assert_array_equal(x, before)


def test_cli_dicom_to_dicom_streams(model_file, tmp_path, capsys):
    """write_dicom checks and converts one slice at a time (it held a float32 copy and two masks)."""
    src = tmp_path / "series"
    make_ct_series(src, n=N, rows=SIZE, cols=SIZE, shuffle=False)
    out = tmp_path / "out"
    argv = ["denoise", str(src), str(out), "--dose", "0.1", "--model", str(model_file), "--quiet"]
    main([*argv[:2], str(tmp_path / "warm"), *argv[3:]])
    code, peak = _peak(lambda: main(argv))
    assert code == 0
    # Headers in and out (a few KiB per slice each), one slice at a time otherwise.
    assert peak <= CONSTANT + N * (32 << 10), f"peak {peak / 2**20:.2f} MiB for {OUT_BYTES / 2**20:.0f} MiB"
    assert read_dicom(tmp_path / "out").hu.shape == (N, SIZE, SIZE)
