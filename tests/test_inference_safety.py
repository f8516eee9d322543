"""ctdn.Denoiser never returns a silently wrong image: padding passes through bit-exactly, integer
dtypes saturate instead of wrapping, a model that returns NaN/inf is refused, flat regions stay flat
up to the borders, a fork child runs, and tensors numpy cannot read get one clear ctdn error."""

import multiprocessing as mp

import numpy as np
import pytest
import torch

import ctdn
from ctdn.errors import CTDNError, DoseError, EngineError, InputError, InputTypeError, ModelError
from ctdn.inference import MARGIN, Denoiser, _saturate, passthrough_mask
from ctdn.models import build

INTEGERS = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build("tiny")
    with torch.no_grad():  # a non-trivial network (a fresh one is close to the identity map)
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return m.eval()


@pytest.fixture(scope="module")
def den(model):
    return Denoiser(model, backend="torch", device="cpu")


@pytest.fixture(scope="module")
def edge():
    return Denoiser("edge", backend="torch", device="cpu")


def _fov(size, pad_value, seed=0):
    """A noisy disc of soft tissue in air, padding outside the field of view; and the padding mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(yy, xx)
    hu = np.where(r < size * 0.3, 40.0, -1000.0) + rng.normal(0, 20, (size, size))
    pad = r >= size * 0.45
    hu[pad] = pad_value
    return hu.astype(np.float32), pad


# --- 6: padding passes through bit-exactly --------------------------------------------------------
@pytest.mark.parametrize("value", [-1024.0, -2000.0, -3024.0, -1001.0, -1150.0, -1200.5, -1e6])
@pytest.mark.parametrize("shape", [(64, 64), (2, 2), (1, 1), (7, 3), (1, 9), (3, 20, 17)])
def test_a_volume_of_padding_comes_out_exactly(edge, value, shape):
    x = np.full(shape, value, np.float32)
    np.testing.assert_array_equal(edge(x, 0.25), x)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float64])
def test_padding_is_exact_for_every_input_dtype(den, dtype):
    x = np.full((2, 24, 24), -1024, dtype)
    x[:, 6:18, 6:18] = 40
    for keep in (False, True):
        y = den(x, 0.25, keep_dtype=keep)
        np.testing.assert_array_equal(y[:, :6], x[:, :6])
        np.testing.assert_array_equal(y[:, :, :6], x[:, :, :6])


@pytest.mark.parametrize("value", [-1024.0, -1100.0, -1200.0, -2000.0, -3024.0])
def test_a_padding_ring_is_exact_and_the_air_next_to_it_is_denoised_as_air(den, value):
    x, pad = _fov(96, value)
    y = den(x, 0.1)
    np.testing.assert_array_equal(y[pad], x[pad])  # every padding pixel, its edge included
    # The network sees padding as air: inside the field of view the result is the one it would be
    # with air instead of padding, up to the padding's edge.
    air = np.where(pad, np.float32(-1000), x)
    np.testing.assert_array_equal(y[~pad], den(air, 0.1)[~pad])
    assert np.abs(y[~pad] - x[~pad]).max() > 1  # and the network did run there


def test_noisy_air_below_the_air_level_is_still_denoised(den):
    rng = np.random.default_rng(1)
    x = (-1000 + rng.normal(0, 20, (2, 64, 64))).astype(np.float32)
    below = x < -1000
    y = den(x, 0.1)
    assert below.mean() > 0.4
    assert np.mean(y[below] == x[below]) < 0.01
    for dtype in (np.int16, np.int32):  # integer noise: neighbours share values by chance
        xi = np.rint(x).astype(dtype)
        yi = den(xi, 0.1)
        assert np.mean(yi[xi < -1000] == xi[xi < -1000]) < 0.01


@pytest.mark.parametrize(
    "case,expected",
    [
        ("flat", [[1, 1, 1], [1, 1, 1], [1, 1, 1]]),
        ("edge", [[1, 1, 1], [1, 1, 1], [0, 0, 0]]),  # a padding band above air, edge row included
        ("deep_noisy", [[1, 1, 1], [1, 1, 1], [0, 0, 0]]),
        ("speck", [[0, 0, 0], [0, 0, 0], [0, 0, 0]]),  # one low pixel in air: noise, not padding
        ("at_air", [[0, 0, 0], [0, 0, 0], [0, 0, 0]]),  # -1000 is air, not below it
    ],
)
def test_passthrough_mask(case, expected):
    x = np.full((1, 3, 3), -1000.0, np.float32)
    if case == "flat":
        x[:] = -1024
    elif case == "edge":
        x[0, :2] = -1024
    elif case == "deep_noisy":
        x[0, :2] = [[-1200, -1300, -1250], [-1160, -1400, -2000]]
    elif case == "speck":
        x[0, 1, 1] = -1300
    np.testing.assert_array_equal(passthrough_mask(x, (-1000, 1000)), np.array([expected], bool))


# --- 7: integer dtypes saturate, never wrap --------------------------------------------------------
def _rounded(f: np.ndarray, dtype) -> np.ndarray:
    """Float HU rounded half to even and clipped to ``dtype`` in Python integers (no float bounds)."""
    r = np.iinfo(dtype)
    return np.array([min(max(int(np.rint(np.float64(v))), r.min), r.max) for v in f.flat]).reshape(f.shape)


def _check_keep_dtype(den, x):
    """``keep_dtype`` gives the input's own integers where it passes through, and the float result
    rounded and clipped to the dtype's range everywhere else."""
    y = den(x, 0.25, keep_dtype=True)
    f = den(x, 0.25)
    assert y.dtype == x.dtype
    passed = f == x.astype(np.float32)
    got, want = y.astype(object), np.where(passed, x.astype(object), _rounded(f, x.dtype))
    np.testing.assert_array_equal(got, want)
    return y, passed


@pytest.mark.parametrize("dtype", INTEGERS)
def test_keep_dtype_at_the_ends_of_every_integer_range(den, dtype):
    r = np.iinfo(dtype)
    for v in (r.min, r.min + 1, r.max - 1, r.max):
        x = np.full((8, 8), v, dtype)
        y, _ = _check_keep_dtype(den, x)
        if v >= 1000 or v < -1000:  # outside the window: the input itself, to the last digit
            np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("dtype", INTEGERS)
def test_keep_dtype_over_the_whole_range_and_the_seams(den, dtype):
    r = np.iinfo(dtype)
    rng = np.random.default_rng(3)
    x = rng.integers(r.min, r.max, (2, 24, 24), dtype=dtype, endpoint=True)
    x[:, :, :12] = np.clip(rng.normal(0, 900, (2, 24, 12)), r.min, r.max).astype(dtype)  # the seams
    _, passed = _check_keep_dtype(den, x)
    assert passed.any() == (r.max >= 1000)  # int8 and uint8 lie inside the window: all denoised


@pytest.mark.parametrize("dtype", INTEGERS)
def test_saturate_clips_in_a_type_that_holds_the_range(dtype):
    r = np.iinfo(dtype)
    v = np.array([-3e38, float(r.min) - 1e6, float(r.max) * 4, 3e38, 0.4, -0.6, 1.5], np.float32)
    got = _saturate(v, dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got[:4], [r.min, r.min, r.max, r.max])
    np.testing.assert_array_equal(got[4:], np.clip([0, -1, 2], r.min, r.max))


# --- 8: a model that returns NaN/inf is refused, naming the model ---------------------------------
@pytest.fixture(params=["nan", "inf"])
def broken(request):
    m = build("tiny").eval()
    with torch.no_grad():
        m.encoder.head.weight.fill_(float(request.param))
    return m


def test_a_model_returning_nan_is_refused(broken):
    den = Denoiser(broken, backend="torch", device="cpu")
    x = np.zeros((3, 16, 16), np.float32)
    with pytest.raises(ModelError, match=r"model 'custom' on the torch backend returned \d+ NaN/inf") as e:
        den(x, 0.25)
    assert "finite input" in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, CTDNError)
    with pytest.raises(ModelError, match="weights or the backend"):
        ctdn.denoise(x, 0.25, model=broken, backend="torch")


def test_nothing_non_finite_is_written(broken, tmp_path):
    den = Denoiser(broken, backend="torch", device="cpu")
    x = np.zeros((2, 16, 16), np.int16)
    out = np.lib.format.open_memmap(tmp_path / "out.npy", mode="w+", dtype=np.float32, shape=x.shape)
    out[:] = 7.0
    with pytest.raises(ModelError, match="nothing was returned or written"):
        den(x, 0.25, out=out)
    np.testing.assert_array_equal(out, 7.0)
    with pytest.raises(ModelError):  # the integer path would have rounded NaN to some number
        den(x, 0.25, keep_dtype=True)


def test_the_message_names_the_model_file(broken, tmp_path):
    den = Denoiser(broken, backend="torch", device="cpu")
    den._source = tmp_path / "nan.safetensors"  # as Denoiser(path) records it
    with pytest.raises(ModelError, match="nan.safetensors"):
        den(np.zeros((16, 16), np.float32), 0.25)


# --- 9: a flat region stays flat, borders included ------------------------------------------------
def _flat_error(den, level, shape, dose=0.1):
    x = np.full(shape, level, np.float32)
    e = np.abs(den(x, dose) - x)
    if min(shape) <= 2 * MARGIN:
        return e.max(), None
    inner = e[MARGIN:-MARGIN, MARGIN:-MARGIN].max()
    e[MARGIN:-MARGIN, MARGIN:-MARGIN] = 0
    return e.max(), inner


@pytest.mark.parametrize("level", [-500.0, 0.0, 40.0])
@pytest.mark.parametrize("shape", [(2, 2), (7, 3), (64, 64), (37, 100)])
def test_a_flat_image_stays_flat_to_its_borders(edge, level, shape):
    border, _ = _flat_error(edge, level, shape)
    assert border <= 2.5


def test_the_reproducer_512(edge):
    x = np.full((512, 512), 40.0, np.float32)
    y = edge(x, 0.1)
    assert abs(y[1, 1] - 40) <= 1.5 and np.abs(y - 40).max() <= 2.5


@pytest.mark.parametrize("level", [-900.0, 500.0, 900.0])
def test_borders_are_no_worse_than_the_interior(edge, level):
    """Where the model itself is off on a noiseless flat field (low lung, near the window's top),
    the border pixels are computed like the interior ones."""
    border, inner = _flat_error(edge, level, (64, 64))
    assert border <= inner + 1.5


class _Spy:
    """A runner that records the shape the backend is given; ``sidecar`` as an engine's."""

    def __init__(self, runner, height=None):
        self.runner, self.shapes = runner, []
        if height is not None:
            self.sidecar = {"shapes": {"height": [16, height, height], "width": [16, height, height]}}

    def __call__(self, x, dose):
        self.shapes.append(x.shape[2:])
        return self.runner(x, dose)


@pytest.mark.parametrize("height,expect", [(None, (96, 96)), (1024, (96, 96)), (64, (64, 64))])
def test_an_engine_profile_the_margin_does_not_fit_gets_its_own_size(model, height, expect):
    den = Denoiser(model, backend="torch", device="cpu")
    den._runner = spy = _Spy(den._runner, height)
    den._limit = ctdn.inference._size_limit(spy)
    y = den(np.full((64, 64), 40.0, np.float32), 0.25)
    assert spy.shapes == [expect] and y.shape == (64, 64)


# --- 11: fork ------------------------------------------------------------------------------------
def _child(den, x, q):
    q.put((torch.get_num_threads(), den(x, 0.25)))


def test_a_fork_child_runs_after_the_parent_has(den):
    x = np.random.default_rng(0).normal(40, 30, (2, 32, 32)).astype(np.float32)
    ref = den(x, 0.25)  # the parent's intra-op thread pool is now started
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(den, x, q))
    p.start()
    p.join(120)
    if p.is_alive():
        p.kill()
        p.join()
        pytest.fail("the fork child hung in its first torch call")
    assert p.exitcode == 0
    threads, got = q.get(timeout=10)
    assert threads == 1
    np.testing.assert_allclose(got, ref, atol=1e-2)


def test_a_cuda_denoiser_from_the_parent_is_refused_in_a_child(den):
    import copy

    other = copy.copy(den)
    other.device, other._pid = torch.device("cuda"), -1  # as a fork child sees its parent's
    with pytest.raises(EngineError, match="spawn"):
        other(np.zeros((16, 16), np.float32), 0.25)


# --- 12: tensors numpy cannot read ----------------------------------------------------------------
_VOLUMES = {
    "coo": (lambda: torch.zeros(16, 16).to_sparse(), "sparse_coo"),
    "csr": (lambda: torch.zeros(16, 16).to_sparse_csr(), "sparse_csr"),
    "csc": (lambda: torch.zeros(16, 16).to_sparse_csc(), "sparse_csc"),
    "quantized": (lambda: torch.quantize_per_tensor(torch.zeros(16, 16), 0.5, 0, torch.qint8), "dequantize"),
    "nested": (lambda: torch.nested.nested_tensor([torch.zeros(16, 16), torch.zeros(8, 8)]), "nested"),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch: nested and sparse CSR are prototypes
@pytest.mark.parametrize("kind", list(_VOLUMES))
def test_tensor_kinds_numpy_cannot_read_as_the_volume(den, kind):
    make, match = _VOLUMES[kind]
    with pytest.raises(InputTypeError, match=match) as e:
        den(make(), 0.25)
    assert "\n" not in str(e.value)
    with pytest.raises(InputTypeError, match=match):  # the metrics read tensors the same way
        ctdn.metrics.psnr(make(), np.zeros((16, 16), np.float32))


_DOSES = {
    "meta": (lambda: torch.tensor(0.5, device="meta"), "meta device"),
    "coo": (lambda: torch.tensor([0.5]).to_sparse(), "sparse_coo"),
    "quantized": (lambda: torch.quantize_per_tensor(torch.tensor([0.5]), 0.1, 0, torch.qint8), "dequantize"),
    "nested": (lambda: torch.nested.nested_tensor([torch.tensor([0.5])]), "nested"),
}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kind", list(_DOSES))
def test_tensor_kinds_numpy_cannot_read_as_the_dose(den, kind):
    make, match = _DOSES[kind]
    with pytest.raises(DoseError, match=match) as e:
        den(np.zeros((16, 16), np.float32), make())
    assert "\n" not in str(e.value)


def test_ordinary_tensors_of_every_layout_still_work(den):
    x = np.random.default_rng(2).normal(40, 30, (3, 16, 16)).astype(np.float32)
    ref = den(x, 0.25)
    t = torch.from_numpy(x)
    four = t[:, None].contiguous(memory_format=torch.channels_last)
    views = {
        "requires_grad": t.clone().requires_grad_(True),
        "permuted": t.permute(0, 2, 1).contiguous().permute(0, 2, 1),
        "strided": torch.from_numpy(np.repeat(x, 2, axis=2))[:, :, ::2],
        "channels_last slice": four[:, 0],
    }
    for name, v in views.items():
        got = den(v, torch.tensor(0.25, requires_grad=True))
        assert isinstance(got, torch.Tensor), name
        np.testing.assert_array_equal(got.numpy(), ref, err_msg=name)
    with pytest.raises(InputError, match="meta device"):  # no values: the one a tensor cannot give
        den(torch.zeros(3, 16, 16, device="meta"), 0.25)
