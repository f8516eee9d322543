"""ctdn.denoise / ctdn.Denoiser: shapes, padding, pass-through, dose checks, determinism, threads.

The safety guarantees (exact padding, integer dtypes, finite output, flat borders, fork, tensor
kinds) are in test_inference_safety.py.
"""

import threading

import numpy as np
import pytest
import torch

import ctdn
from ctdn import backends
from ctdn.errors import DoseError, InputError, InputTypeError, MissingDependencyError
from ctdn.inference import MARGIN, Denoiser, passthrough_weight
from ctdn.models import build


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


def _ct(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(40, 30, shape)).astype(np.float32)


@pytest.mark.parametrize("shape", [(37, 53), (1, 16, 16), (3, 17, 31), (2, 5, 3), (1, 1), (2, 64, 9)])
def test_any_shape(den, shape):
    x = _ct(shape)
    y = den(x, 0.25)
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()


def _net(model, hu, dose):
    unit = torch.from_numpy(np.clip(hu, -1000, 1000) / 1000).float()[:, None]
    with torch.no_grad():
        return model(unit, torch.tensor([dose]))[:, 0].numpy() * 1000


def _with_margin(x, m, k=MARGIN):
    """``x`` (N, H, W) with ``k`` replicated pixels on every side, then replicated at the bottom and
    right to multiples of ``m``: what the network is given."""
    h, w = x.shape[1:]
    hp, wp = -(-(h + 2 * k) // m) * m, -(-(w + 2 * k) // m) * m
    return np.pad(x, ((0, 0), (k, hp - h - k), (k, wp - w - k)), mode="edge")


@pytest.mark.parametrize("extra", [(0, 0), (3, 1)], ids=["multiple", "odd"])
def test_the_network_sees_a_replicated_margin_that_is_cropped_off(den, model, extra):
    m = model.config.multiple
    h, w = 8 * m + extra[0], 4 * m + extra[1]
    x = _ct((1, h, w), seed=1)
    ref = _net(model, _with_margin(x, m), 0.3)[:, MARGIN : MARGIN + h, MARGIN : MARGIN + w]
    np.testing.assert_allclose(den(x, 0.3), ref, atol=1e-3)


def test_input_is_not_modified(den):
    x = _ct((2, 20, 20))
    keep = x.copy()
    den(x, 0.1)
    np.testing.assert_array_equal(x, keep)
    t = torch.from_numpy(keep.copy())
    out = den(t, 0.1)
    assert isinstance(out, torch.Tensor) and out.shape == t.shape
    np.testing.assert_array_equal(t.numpy(), keep)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.int16])
def test_torch_dtypes(den, dtype):
    t = torch.full((2, 16, 16), 40).to(dtype)
    out = den(t, 0.5)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == t.shape
    assert den(t, 0.5, keep_dtype=True).dtype == (torch.int16 if dtype == torch.int16 else torch.float32)


def test_integer_input_and_keep_dtype(den):
    x = np.full((2, 16, 16), 40, np.int16)
    assert den(x, 0.5).dtype == np.float32
    y = den(x, 0.5, keep_dtype=True)
    assert y.dtype == np.int16


def test_passthrough_outside_window(den):
    x = _ct((1, 48, 48))
    x[0, 10:20, 10:20] = 3000  # metal
    x[0, :, :6] = -3024  # padding outside the field of view
    y = den(x, 0.1)
    np.testing.assert_array_equal(y[0, 11:19, 11:19], x[0, 11:19, 11:19])
    np.testing.assert_array_equal(y[0, :, :4], x[0, :, :4])
    inside = (slice(30, 45), slice(20, 45))
    assert not np.allclose(y[0][inside], x[0][inside])  # the network ran there
    assert np.abs(y[0, 10:20, 10:20]).max() == 3000  # not clipped to the window


@pytest.mark.parametrize(
    "hu,weight",
    [(-3024, 1), (-1200, 1), (-1125, 0.5), (-1000, 0), (0, 0), (960, 0.2), (975, 0.5), (1000, 1), (1500, 1)],
)
def test_passthrough_weight_seam(hu, weight):
    w = passthrough_weight(np.full((1, 5, 5), hu, np.float32), (-1000, 1000))
    np.testing.assert_allclose(w, weight, atol=1e-6)


def test_passthrough_weight_smooths_noise():
    x = np.full((1, 9, 9), 900, np.float32)
    x[0, 4, 4] = 1400  # one noisy pixel does not flip the seam: its 3x3 mean is 955.6 HU
    assert passthrough_weight(x, (-1000, 1000))[0, 4, 4] < 0.2


@pytest.mark.parametrize("dose", [0, -0.1, 1.5, float("nan"), float("inf"), [0.1, 0.2], "low", [[0.1]]])
def test_bad_dose(den, dose):
    with pytest.raises(DoseError, match="dose"):
        den(_ct((3, 16, 16)), dose)


def test_dose_per_slice(den):
    x = _ct((2, 16, 16))
    both = den(np.stack([x[0], x[0]]), [0.1, 0.7])
    np.testing.assert_allclose(both[0], den(x[0], 0.1), atol=1e-4)
    np.testing.assert_allclose(both[1], den(x[0], 0.7), atol=1e-4)
    assert not np.allclose(both[0], both[1])


@pytest.mark.parametrize(
    "volume,err,match",
    [
        (np.zeros((2, 3, 4, 5)), InputError, "2-D"),
        (np.zeros((0, 8, 8)), InputError, "empty"),
        (np.array([[np.nan, 0], [0, 0]]), InputError, "NaN"),
        (np.array([[np.inf, 0], [0, 0]]), InputError, "NaN/inf"),
        (np.zeros((4, 4), bool), InputTypeError, "real"),
        (np.zeros((4, 4), complex), InputTypeError, "real"),
        ([[0.0, 1.0]], InputTypeError, "numpy array"),
    ],
)
def test_bad_volume(den, volume, err, match):
    with pytest.raises(err, match=match):
        den(volume, 0.1)
    assert issubclass(err, (ValueError, TypeError))


def test_bad_construction(model):
    with pytest.raises(InputError, match="unknown backend"):
        Denoiser(model, backend="nope")
    with pytest.raises(InputTypeError, match="CTDenoiser"):
        Denoiser(torch.nn.Linear(2, 2))
    with pytest.raises(InputError, match="batch_size"):
        Denoiser(model, batch_size=0)
    with pytest.raises(InputError, match="precision"):
        Denoiser(model, precision="int8")
    if not torch.cuda.is_available():
        with pytest.raises(MissingDependencyError, match="CUDA"):
            Denoiser(model, backend="torch", device="cuda")


def test_deterministic_and_batch_independent(den):
    x = _ct((5, 24, 40), seed=3)
    a = den(x, 0.25)
    np.testing.assert_array_equal(a, den(x, 0.25))
    np.testing.assert_allclose(a, den(x, 0.25, batch_size=3), atol=5e-3)  # HU; GEMM blocking differs


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_threads(model, backend):
    """One Denoiser shared by four threads gives each the result it gives alone (every CPU backend)."""
    why = backends.unavailable(backend, torch.device("cpu"))
    if why is not None:
        pytest.skip(f"{backend}: {why}")
    den = Denoiser(model, backend=backend, device="cpu")
    xs = [_ct((2, 32, 24), seed=s) for s in range(4)]
    ref = [den(x, 0.1) for x in xs]
    got = [None] * 4

    def work(i):
        got[i] = den(xs[i], 0.1)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_array_equal(g, r)


def test_module_function_reuses_the_denoiser(model):
    x = _ct((16, 16))
    a = ctdn.denoise(x, 0.1, model=model, backend="torch")
    b = ctdn.denoise(x, 0.1, model=model, backend="torch")
    np.testing.assert_array_equal(a, b)


def test_auto_backend_and_registry():
    cpu = torch.device("cpu")
    assert backends.available(cpu)["torch"] is None
    assert backends.resolve("auto", cpu) in backends.BACKENDS


def test_caller_model_is_not_moved_or_changed(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Denoiser(model, backend="torch")(_ct((16, 16)), 0.1)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])


@pytest.mark.parametrize(
    ("volume", "dose", "err", "match"),
    [
        (np.zeros((2, 16, 16), np.float32), "0.5", DoseError, "must be a number"),
        (np.zeros((2, 16, 16), np.float32), b"0.5", DoseError, "must be a number"),
        (np.zeros((2, 16, 16), np.float32), True, DoseError, "must be a number"),
        (np.zeros((2, 16, 16), np.float32), np.array([True, False]), DoseError, "must be a number"),
        (np.zeros((2, 16, 16), "timedelta64[s]"), 0.5, InputTypeError, "timedelta64"),
        (np.ma.masked_array(np.zeros((2, 16, 16), np.float32)), 0.5, InputTypeError, "masked array"),
        (torch.zeros(2, 16, 16, device="meta"), 0.5, InputError, "meta device"),
    ],
    ids=["str dose", "bytes dose", "bool dose", "bool array dose", "timedelta", "masked", "meta tensor"],
)
def test_values_that_only_look_like_numbers_are_refused(den, volume, dose, err, match):
    """Found by tests/test_fuzz.py's cases: numpy would take each of these silently."""
    with pytest.raises(err, match=match):
        den(volume, dose)


def test_dtypes_numpy_lacks_are_converted(den):
    x = torch.zeros(2, 16, 16)
    ref = den(x, 0.5)
    torch.testing.assert_close(den(x, torch.tensor(0.5, dtype=torch.bfloat16)), ref)
    got = den(x.to(torch.float8_e4m3fn), 0.5)
    assert got.dtype == torch.float32 and torch.equal(got, ref)


def test_ieee_fp32_turns_tf32_off_and_restores_the_callers_flags():
    flags = lambda: (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)  # noqa: E731
    before = flags()
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default for convolutions
    try:
        with pytest.raises(RuntimeError, match="inside"):
            with backends.ieee_fp32():
                assert flags() == (False, False)
                raise RuntimeError("inside")
        assert flags() == (True, before[1])
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
