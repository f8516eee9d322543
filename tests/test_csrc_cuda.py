"""The CUDA HU pre/post kernels (csrc/src/hu_cuda.cu) against ctdn.Denoiser's Python arithmetic.

nvcc compiles the kernels with a small C test harness (csrc/tests/hu_cuda_capi.cu) into a shared
library loaded with ctypes. Without a GPU the harness runs the kernels' own per-pixel functions in a
host loop (checks indexing, padding and arithmetic); with one (``-m gpu``) it launches the kernels.
Needs only numpy, torch and ctdn.inference / ctdn.hu, so ``pytest tests/test_csrc_cuda.py`` runs on a
bare GPU machine with nvcc.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ctdn.hu import hu_to_unit, unit_to_hu
from ctdn.inference import MARGIN, _saturate, blend, pad_for_network, padded_size

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
# sm_80 (A100), sm_90 (H100/H200) machine code and compute_90 PTX that newer GPUs JIT-compile.
ARCHS = [
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
    "-gencode=arch=compute_90,code=compute_90",
]


def find_nvcc() -> str | None:
    """nvcc from $CUDACXX, PATH, $CUDA_HOME/bin or /usr/local/cuda/bin."""
    candidates = [os.environ.get("CUDACXX"), shutil.which("nvcc")]
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            candidates.append(str(Path(home) / "bin" / "nvcc"))
    return next((c for c in candidates if c and Path(c).is_file() and os.access(c, os.X_OK)), None)


NVCC = find_nvcc()
needs_nvcc = pytest.mark.skipif(
    NVCC is None, reason="nvcc not found (install the CUDA toolkit, or set CUDACXX / CUDA_HOME)"
)


FLAGS = ["-std=c++17", "-O2", "-Xcompiler=-fPIC,-Wall,-Wextra", f"-I{CSRC / 'include'}", *ARCHS]


def nvcc(*args: str) -> str:
    """Run nvcc; returns its stderr (warnings) and fails the test with nvcc's output on an error."""
    cmd = [NVCC, *FLAGS, *args]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"nvcc failed ({' '.join(cmd)}):\n{res.stdout}\n{res.stderr}")
    return res.stderr


def own_warnings(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "warning" in ln.lower() and "csrc/" in ln]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    if NVCC is None:
        pytest.skip("nvcc not found (install the CUDA toolkit, or set CUDACXX / CUDA_HOME)")
    out = tmp_path_factory.mktemp("hu_cuda") / "libctdn_hu_cuda_test.so"
    err = nvcc("-shared", str(CSRC / "tests" / "hu_cuda_capi.cu"), "-o", str(out))
    assert not own_warnings(err), err
    so = ctypes.CDLL(str(out))
    i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    so.ctdn_test_device_count.argtypes = [ctypes.c_char_p, i]
    so.ctdn_test_pre.argtypes = [i, i, p, p, i, i, i, i, i, i, f, f, ctypes.c_char_p, i]
    count = ctypes.POINTER(ctypes.c_ulonglong)
    so.ctdn_test_post.argtypes = [i, i, p, p, p, i, i, i, i, i, i, f, f, count, ctypes.c_char_p, i]
    so.ctdn_test_pre_checks.argtypes = [i, i, i, i, i, f, f, ctypes.c_char_p, i]
    return so


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.c_void_p)


class Kernels:
    """pre/post through the harness; mode 0 launches the CUDA kernels, mode 1 runs them on the host."""

    def __init__(self, so, mode: int):
        self.so, self.mode = so, mode

    def _check(self, rc: int, err) -> None:
        if rc != 0:
            raise RuntimeError(err.value.decode())

    def pre(self, hu: np.ndarray, hp: int, wp: int, window, margin: int = 0) -> np.ndarray:
        n, h, w = hu.shape
        x = np.full((n, 1, hp, wp), np.nan, np.float32)
        err = ctypes.create_string_buffer(512)
        dtype = 0 if hu.dtype == np.int16 else 1
        args = (n, h, w, hp, wp, margin, *window)
        rc = self.so.ctdn_test_pre(dtype, self.mode, _ptr(hu), _ptr(x), *args, err, 512)
        self._check(rc, err)
        return x

    def post(self, y: np.ndarray, hu: np.ndarray, window, margin: int = 0) -> tuple[np.ndarray, int]:
        """The output HU and how many NaN/inf network values the crop read."""
        n, h, w = hu.shape
        hp, wp = y.shape[2:]
        out = np.zeros_like(hu)
        bad = ctypes.c_ulonglong(12345)
        err = ctypes.create_string_buffer(512)
        rc = self.so.ctdn_test_post(
            0 if hu.dtype == np.int16 else 1,
            self.mode,
            _ptr(y),
            _ptr(hu),
            _ptr(out),
            n,
            h,
            w,
            hp,
            wp,
            margin,
            *window,
            ctypes.byref(bad),
            err,
            512,
        )
        self._check(rc, err)
        return out, bad.value


# ---- the Python reference: ctdn.Denoiser's own lines ----


def ref_pre(hu: np.ndarray, m: int, window, margin: int) -> np.ndarray:
    lo, hi = window
    unit = hu_to_unit(hu.astype(np.float32), lo, hi).astype(np.float32)
    return pad_for_network(unit[:, None], m, margin)


def ref_post(y: np.ndarray, hu: np.ndarray, window, margin: int) -> np.ndarray:
    lo, hi = window
    n, h, w = hu.shape
    xs = hu.astype(np.float32)
    yhu = unit_to_hu(y[:, 0, margin : margin + h, margin : margin + w], lo, hi)
    out, exact = blend(yhu, xs, (lo, hi))
    if hu.dtype == np.int16:  # what passes through is copied from the integer input
        out = _saturate(out, hu.dtype)
        out[exact] = hu[exact]
    return out


def hu_volume(n: int, h: int, w: int, dtype, seed: int) -> np.ndarray:
    """HU with soft tissue, both seams, values far outside the window and int16 extremes."""
    rng = np.random.default_rng(seed)
    v = rng.normal(0.0, 600.0, (n, h, w))
    special = np.array([-3000, 3000, -1024, -1000, -1100, -1125, -1150, 950, 975, 1000, 1500, -32768, 32767])
    mask = rng.random((n, h, w)) < 0.25
    v[mask] = rng.choice(special, mask.sum())
    if h >= 4 and w >= 4:  # a block of metal and one of padding, so whole 3x3 means leave the window
        v[:, : h // 2, : w // 2] = 3000
        v[:, h // 2 :, w // 2 :] = -3024
    if dtype == np.int16:
        return np.clip(np.rint(v), -32768, 32767).astype(np.int16)
    return (v + rng.random((n, h, w)) - 0.5).astype(np.float32)


def net_output(n: int, hp: int, wp: int, seed: int) -> np.ndarray:
    """Unit-space network output, mostly in [-1.2, 1.2], some values that map far outside int16."""
    rng = np.random.default_rng(seed + 100)
    y = rng.uniform(-1.2, 1.2, (n, 1, hp, wp)).astype(np.float32)
    far = rng.random(y.shape) < 0.02
    y[far] = rng.choice(np.array([-80.0, 40.0, 3.0], np.float32), far.sum())
    return y


# (n, h, w, multiple): with MARGIN, edge padding on every side; without (an engine whose profile cannot
# take the margin), 1x1 and 3x2 pad by replication, the others by reflection.
SHAPES = [(1, 1, 1, 8), (2, 7, 5, 8), (1, 3, 2, 4), (3, 513, 300, 8), (1, 16, 24, 8), (2, 9, 33, 1)]
WINDOWS = [(-1000.0, 1000.0), (-160.0, 240.0)]
MARGINS = [MARGIN, 0]


def _check_against_reference(k: Kernels, shape, dtype, window, seed=0, margin=MARGIN):
    n, h, w, m = shape
    hu = hu_volume(n, h, w, dtype, seed)
    hp, wp = padded_size(h, w, m, margin)
    x = k.pre(hu, hp, wp, window, margin)
    np.testing.assert_array_equal(x, ref_pre(hu, m, window, margin))
    y = net_output(n, hp, wp, seed)
    out, bad = k.post(y, hu, window, margin)
    assert bad == 0
    ref = ref_post(y, hu, window, margin)
    assert out.dtype == hu.dtype
    if dtype == np.int16:
        # Same float32 operations in the same order: equal, but allow a rare one-step rint flip.
        diff = np.abs(out.astype(np.int32) - ref.astype(np.int32))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-4, diff.max()
    else:
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-3)
    return x, out


@needs_nvcc
def test_hu_cuda_compiles():
    """hu_cuda.cu alone, as the runtime build compiles it: sm_80, sm_90 and compute_90 PTX, no warnings."""
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"ctdn_hu_cuda_{os.getpid()}.o"
    try:
        err = nvcc("-c", str(CSRC / "src" / "hu_cuda.cu"), "-o", str(out))
        assert out.stat().st_size > 0
        assert not own_warnings(err), err
    finally:
        out.unlink(missing_ok=True)


@pytest.mark.parametrize("dtype", [np.int16, np.float32], ids=["int16", "float32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kernel_arithmetic_on_host(lib, shape, dtype):
    """The kernels' per-pixel functions (compiled by nvcc, run on the host) equal the Python reference."""
    for window in WINDOWS:
        for margin in MARGINS:
            _check_against_reference(Kernels(lib, mode=1), shape, dtype, window, margin=margin)


@pytest.mark.parametrize("dtype", [np.int16, np.float32], ids=["int16", "float32"])
def test_padding_passes_through_bit_exactly_on_host(lib, dtype):
    """Flat padding below -1000 HU (any value, up to the slice's edge) comes out as it went in."""
    hu = np.full((1, 24, 20), -1024, dtype)
    hu[0, :, 10:] = -3024 if dtype == np.int16 else np.float32(-3024.5)
    hu[0, 8:16, 2:7] = 40  # anatomy inside the -1024 part: no padding pixel has more than 3 of it around
    hp, wp = padded_size(24, 20, 16)
    y = net_output(1, hp, wp, seed=3)
    out, _ = Kernels(lib, mode=1).post(y, hu, (-1000.0, 1000.0), MARGIN)
    pad = hu < -1000
    assert pad.sum() > 300
    np.testing.assert_array_equal(out[pad], hu[pad])
    assert not np.array_equal(out[~pad], hu[~pad])  # the anatomy is the network's


def test_nonfinite_network_values_are_counted_on_host(lib):
    """post counts the NaN/inf values inside the crop (the runtime refuses the batch), not the margin's."""
    hu = np.zeros((2, 5, 6), np.float32)
    hp, wp = padded_size(5, 6, 8)
    y = np.zeros((2, 1, hp, wp), np.float32)
    y[0, 0, 0, 0] = np.nan  # in the margin: never read
    y[0, 0, MARGIN, MARGIN] = np.nan
    y[1, 0, MARGIN + 4, MARGIN + 5] = np.inf
    y[1, 0, MARGIN + 2, MARGIN + 1] = -np.inf
    _, bad = Kernels(lib, mode=1).post(y, hu, (-1000.0, 1000.0), MARGIN)
    assert bad == 3


def test_bad_arguments_are_refused(lib):
    k = Kernels(lib, mode=1)
    with pytest.raises(RuntimeError, match="smaller than the slice"):
        k.pre(np.zeros((1, 8, 8), np.int16), 4, 8, (-1000.0, 1000.0))
    err = ctypes.create_string_buffer(512)
    assert lib.ctdn_test_pre_checks(1, 4, 4, 8, 8, 10.0, -10.0, err, 512) == -1
    assert "lo < hi" in err.value.decode()
    assert lib.ctdn_test_pre_checks(1, 0, 4, 8, 8, -1.0, 1.0, err, 512) == -1
    assert "h, w >= 1" in err.value.decode()


@pytest.fixture(scope="module")
def gpu(lib):
    err = ctypes.create_string_buffer(512)
    if lib.ctdn_test_device_count(err, 512) < 1:
        pytest.skip(f"no CUDA device ({err.value.decode() or 'cudaGetDeviceCount returned 0'})")
    return Kernels(lib, mode=0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.int16, np.float32], ids=["int16", "float32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kernels_on_gpu(lib, gpu, shape, dtype):
    """The CUDA kernels equal the Python reference and, bit for bit, their own host copies."""
    for seed, window in enumerate(WINDOWS):
        for margin in MARGINS:
            x, out = _check_against_reference(gpu, shape, dtype, window, seed, margin)
            host = Kernels(lib, mode=1)
            host_x, host_out = _check_against_reference(host, shape, dtype, window, seed, margin)
            np.testing.assert_array_equal(x, host_x)
            np.testing.assert_array_equal(out, host_out)


@pytest.mark.gpu
def test_empty_batch_on_gpu(gpu):
    x = gpu.pre(np.zeros((0, 5, 5), np.float32), 8, 8, (-1000.0, 1000.0))
    assert x.shape == (0, 1, 8, 8)
