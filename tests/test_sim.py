"""Tests of the projector and the low-dose simulator against analytic and statistical references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ctdn.errors import DoseError, InputError, InputTypeError
from ctdn.sim import (
    DEFAULT_I0,
    Geometry,
    Simulator,
    fbp,
    forward_project,
    insert_noise,
    noiseless,
    simulate,
    simulate_doses,
)

# A reduced geometry for fast tests: 128x128 images at 2.8125 mm (the 360 mm body FOV), 288 views,
# 368 channels of twice the clinical width (still a 500 mm field of view).
N = 128
PX = 360.0 / N
SMALL = dict(views=288, detectors=368, det_spacing_mm=2 * 1.2858, pixel_size_mm=PX)
SMALL_PAR = dict(kind="parallel", views=144, detectors=368, det_spacing_mm=1.41, pixel_size_mm=PX)


def _grid(n: int, px: float):
    c = (np.arange(n) - (n - 1) / 2) * px
    return np.meshgrid(c, c, indexing="xy")  # xx varies along columns, yy along rows


def _cylinder(n: int = N, px: float = PX, radius_mm: float = 150.0, hu: float = 40.0):
    xx, yy = _grid(n, px)
    r = np.hypot(xx, yy)
    return np.where(r < radius_mm, hu, -1000.0).astype(np.float32), r < radius_mm / 3


def _blob(n, px, cx, cy, sigma, amp=0.02):
    xx, yy = _grid(n, px)
    return (amp * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))).astype(np.float32)


def _blob_sinogram(geom: Geometry, cx, cy, sigma, amp=0.02):
    """Exact line integrals of a 2-D Gaussian: amp * sqrt(2 pi) sigma * exp(-d^2 / 2 sigma^2)."""
    v = geom.n_views
    ang = np.arange(v)[:, None] * geom.arc / v
    k = np.arange(geom.detectors)[None, :] - (geom.detectors - 1) / 2
    if geom.kind == "fan":
        gam = k * geom.dgamma
        sx, sy = geom.sid_mm * np.cos(ang), geom.sid_mm * np.sin(ang)
        cxr, cyr = -np.cos(ang), -np.sin(ang)
        dx = cxr * np.cos(gam) - cyr * np.sin(gam)
        dy = cxr * np.sin(gam) + cyr * np.cos(gam)
        d = np.abs((cx - sx) * dy - (cy - sy) * dx)
    else:
        d = np.abs(cx * np.cos(ang) + cy * np.sin(ang) - k * geom.spacing)
    return amp * math.sqrt(2 * math.pi) * sigma * np.exp(-(d**2) / (2 * sigma**2))


def _geom(kw: dict) -> Geometry:
    return Geometry(**{k: v for k, v in kw.items() if k != "pixel_size_mm"})


# ---------------------------------------------------------------------------------------------
# Projector
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [SMALL, SMALL_PAR], ids=["fan", "parallel"])
@pytest.mark.parametrize("shape", [(N, N), (N, N - 27)], ids=["square", "nonsquare"])
def test_forward_projection_matches_analytic_line_integrals(kw, shape):
    geom = _geom(kw)
    h, w = shape
    gx, gy = np.meshgrid((np.arange(w) - (w - 1) / 2) * PX, (np.arange(h) - (h - 1) / 2) * PX)
    img = (0.02 * np.exp(-((gx - 30.0) ** 2 + (gy + 20.0) ** 2) / (2 * 15.0**2))).astype(np.float32)
    sino = forward_project(torch.from_numpy(img)[None], geom, PX)[0].numpy()
    ref = _blob_sinogram(geom, 30.0, -20.0, 15.0)
    assert sino.shape == (geom.n_views, geom.detectors)
    assert np.abs(sino - ref).max() / ref.max() < 0.01


@pytest.mark.parametrize("kw", [SMALL, SMALL_PAR], ids=["fan", "parallel"])
def test_fbp_of_analytic_sinogram_recovers_the_object(kw):
    geom = Geometry(**{**{k: v for k, v in kw.items() if k != "pixel_size_mm"}, "filter": "ramp"})
    ref = _blob_sinogram(geom, 30.0, -20.0, 15.0)
    img = _blob(N, PX, 30.0, -20.0, 15.0)
    rec = fbp(torch.from_numpy(ref).float()[None], geom, (N, N), PX)[0].numpy()
    scale = float((rec * img).sum() / (img * img).sum())
    assert abs(scale - 1.0) < 0.01
    assert np.sqrt(((rec - img) ** 2).mean()) / img.max() < 2e-3


@pytest.mark.parametrize("kw", [SMALL, SMALL_PAR], ids=["fan", "parallel"])
def test_symmetric_and_generic_paths_agree(kw):
    geom = _geom(kw)
    img = torch.rand(2, 48, 48) * 0.02
    a = forward_project(img, geom, PX)
    b = forward_project(img, geom, PX, use_symmetry=False)
    assert torch.allclose(a, b, rtol=0, atol=1e-5 * float(b.abs().max()))
    ra = fbp(b, geom, (48, 48), PX)
    rb = fbp(b, geom, (48, 48), PX, use_symmetry=False)
    assert torch.allclose(ra, rb, rtol=0, atol=1e-4 * float(rb.abs().max()))


@pytest.fixture(scope="module")
def full_size():
    """The 300 mm soft-tissue cylinder at 512 x 0.703 mm, default geometry: (hu, roi, sim, clean)."""
    hu, roi = _cylinder(n=512, px=360.0 / 512)
    sim = Simulator(pixel_size_mm=360.0 / 512)  # default geometry, I0 and electronic noise
    return hu, roi, sim, sim.noiseless(hu)


def sim_fov(full_size) -> float:
    return full_size[2].geometry.fov_radius_mm - 2.0


def test_noiseless_reconstruction_matches_the_object_within_the_resolution_limit(full_size):
    """Documented limit, 2 pixels (1.4 mm) away from a 1040 HU edge: < 1 HU RMS inside the object,
    < 2 HU RMS in the air around it (the Hann kernel's ringing tails)."""
    hu, roi, _, clean = full_size
    xx, yy = _grid(512, 360.0 / 512)
    r = np.hypot(xx, yy)
    assert abs(float(clean[roi].mean()) - 40.0) < 0.5
    err = clean - hu
    band = 2 * 360.0 / 512
    assert np.sqrt((err[r < 150.0 - band] ** 2).mean()) < 1.0
    assert np.sqrt((err[(r > 150.0 + band) & (r < sim_fov(full_size) - 10.0)] ** 2).mean()) < 2.0
    # The edge itself is blurred, not lost: the 50 % crossing stays within a pixel of 150 mm.
    row = clean[256, 256:]
    crossing = np.argmax(row < (40.0 - 1000.0) / 2)
    assert abs(xx[256, 256 + crossing] - 150.0) < 1.5 * 360.0 / 512


@pytest.mark.parametrize("kind", ["thorax", "abdomen", "head"])
def test_noiseless_reconstruction_of_anatomical_phantoms(kind):
    """Documented limit: < 3 HU RMS more than 3 pixels from any edge (measured 1.3-2.4 HU, the
    Hann kernel smoothing the phantoms' fine texture); uniform region mean within 0.5 HU."""
    from scipy import ndimage

    from ctdn import phantoms

    ph = phantoms.generate(kind, seed=0)
    rec = noiseless(ph.hu, pixel_size_mm=ph.pixel_size_mm)
    edge = (ndimage.maximum_filter(ph.hu, 3) - ndimage.minimum_filter(ph.hu, 3)) > 50.0
    away = (ph.labels > 0) & (ndimage.distance_transform_edt(~edge) > 3)
    assert away.mean() > 0.15
    assert np.sqrt(((rec - ph.hu)[away] ** 2).mean()) < 3.0
    assert abs(float((rec - ph.hu)[ph.uniform].mean())) < 0.5


# ---------------------------------------------------------------------------------------------
# Noise statistics
# ---------------------------------------------------------------------------------------------
def _noise_std(doses, *, sigma_e=0.0, seeds=(0, 1), **kw):
    hu, roi = _cylinder()
    sim = Simulator(_geom({**SMALL, **kw}), pixel_size_mm=PX, sigma_e=sigma_e)
    clean = sim.noiseless(hu)
    out = {d: [] for d in doses}
    for s in seeds:
        for d, img in sim.simulate_doses(hu, doses, seed=s).items():
            out[d].append(float((img - clean)[roi].std()))
    return {d: float(np.mean(v)) for d, v in out.items()}


def test_noise_follows_inverse_sqrt_dose():
    doses = [1.0, 0.7, 0.5, 0.25, 0.1]
    std = _noise_std(doses)
    for d in doses[1:]:
        predicted = std[1.0] / math.sqrt(d)
        assert abs(std[d] - predicted) / predicted < 0.10, (d, std[d], predicted)


def test_electronic_noise_adds_the_predicted_variance():
    """Centre counts N: variance grows by (1 + sigma_e^2 / N) for rays through the centre."""
    sigma_e = 60.0
    geom = _geom(SMALL)
    counts = DEFAULT_I0 * geom.photon_scale * 0.1 * math.exp(-0.019 * 1.04 * 300.0)
    quiet = _noise_std([0.1])[0.1]
    loud = _noise_std([0.1], sigma_e=sigma_e)[0.1]
    predicted = math.sqrt(1 + sigma_e**2 / counts)
    assert abs(loud / quiet - predicted) / predicted < 0.10, (loud / quiet, predicted)


@pytest.mark.parametrize("dose", [1.0, 0.5, 0.25, 0.1])
def test_mean_hu_of_uniform_region_is_preserved(dose):
    hu, roi = _cylinder()
    out = simulate(hu, dose, seed=3, **SMALL)
    assert abs(float(out[roi].mean()) - 40.0) < 5.0


def test_smoother_filters_give_less_noise():
    stds = [_noise_std([0.5], filter=f, seeds=(0,))[0.5] for f in ("hann", "cosine", "shepp-logan", "ramp")]
    assert stds == sorted(stds), stds


def test_fan_and_parallel_give_the_same_noise_at_the_same_dose():
    hu, roi = _cylinder()
    stds = []
    for kw in (SMALL, SMALL_PAR):
        sim = Simulator(_geom(kw), pixel_size_mm=PX, sigma_e=0.0)
        stds.append(float((sim.simulate(hu, 0.5, seed=0) - sim.noiseless(hu))[roi].std()))
    assert abs(stds[0] - stds[1]) / stds[0] < 0.10, stds


def test_default_calibration_gives_routine_noise_at_full_dose(full_size):
    """Full dose: 8-12 HU std in the centre of a 300 mm soft-tissue body at 0.70 mm pixels."""
    hu, roi, sim, clean = full_size
    assert sim.i0 == DEFAULT_I0
    noise = sim.simulate(hu, 1.0, seed=0) - clean
    assert 8.0 <= float(noise[roi].std()) <= 12.0


def test_insert_noise_reaches_the_variance_of_the_lower_dose():
    hu, roi = _cylinder()
    sim = Simulator(_geom(SMALL), pixel_size_mm=PX)
    clean = sim.noiseless(hu)
    target = np.mean([float((sim.simulate(hu, 0.25, seed=s) - clean)[roi].std()) for s in (0, 1)])
    inserted = []
    for s in (0, 1):
        ndct = sim.simulate(hu, 1.0, seed=10 + s)
        low = sim.insert_noise(ndct, 0.25, seed=20 + s)
        inserted.append(float((low - clean)[roi].std()))
        assert abs(float(low[roi].mean()) - float(ndct[roi].mean())) < 5.0
    assert abs(np.mean(inserted) - target) / target < 0.10, (inserted, target)


def test_insert_noise_edge_cases():
    hu, _ = _cylinder(n=64, px=360.0 / 64)
    kw = dict(SMALL, pixel_size_mm=360.0 / 64)
    same = insert_noise(hu, 0.5, ndct_dose=0.5, seed=0, **kw)
    np.testing.assert_array_equal(same, hu)
    with pytest.raises(DoseError, match="only lowers the dose"):
        insert_noise(hu, 0.8, ndct_dose=0.5, **kw)


# ---------------------------------------------------------------------------------------------
# Reproducibility and safety
# ---------------------------------------------------------------------------------------------
def test_seeded_and_reproducible():
    hu, _ = _cylinder(n=64, px=360.0 / 64)
    kw = dict(SMALL, pixel_size_mm=360.0 / 64)
    a = simulate(hu, 0.25, seed=7, **kw)
    b = simulate(hu, 0.25, seed=7, **kw)
    c = simulate(hu, 0.25, seed=8, **kw)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1.0
    multi = simulate_doses(hu, [0.1, 0.25], seed=7, **kw)
    np.testing.assert_array_equal(multi[0.25], a)


def test_stack_results_do_not_depend_on_batching():
    hu, _ = _cylinder(n=48, px=360.0 / 48)
    stack = np.stack([hu, hu + 10, hu - 10])
    kw = dict(SMALL, pixel_size_mm=360.0 / 48)
    one = simulate(stack, [0.1, 0.5, 1.0], seed=3, batch_size=1, **kw)
    three = simulate(stack, [0.1, 0.5, 1.0], seed=3, batch_size=3, **kw)
    np.testing.assert_allclose(one, three, atol=1e-3)
    single = simulate(stack[1], 0.5, seed=3, **kw)
    assert not np.allclose(single, one[1])  # slice index is part of the seed: independent noise
    assert one.shape == stack.shape and one.dtype == np.float32


def test_inputs_are_never_modified():
    hu, _ = _cylinder(n=48, px=360.0 / 48)
    kw = dict(SMALL, pixel_size_mm=360.0 / 48)
    for dtype in (np.float32, np.float64, np.int16):
        x = hu.astype(dtype)
        before = x.copy()
        simulate(x, 0.5, seed=0, **kw)
        insert_noise(x, 0.5, seed=0, **kw)
        Simulator(_geom(SMALL), pixel_size_mm=360.0 / 48).project(x)
        np.testing.assert_array_equal(x, before)
    t = torch.from_numpy(hu.copy())
    simulate(t, 0.5, seed=0, **kw)
    np.testing.assert_array_equal(t.numpy(), hu)


@pytest.mark.parametrize(
    "dose",
    [0, -0.1, 1.5, float("nan"), float("inf"), "0.1", True, None, [0.1, 0.2], [[0.1]], []],
)
def test_bad_doses_are_refused(dose):
    hu, _ = _cylinder(n=32, px=360.0 / 32)
    with pytest.raises(DoseError):
        simulate(hu, dose, **dict(SMALL, pixel_size_mm=360.0 / 32))


@pytest.mark.parametrize(
    "hu, err, match",
    [
        (np.zeros(10, np.float32), InputError, "2-D or 3-D"),
        (np.zeros((1, 1, 8, 8), np.float32), InputError, "2-D or 3-D"),
        (np.zeros((0, 8), np.float32), InputError, "empty"),
        (np.full((8, 8), np.nan, np.float32), InputError, "non-finite"),
        (np.full((8, 8), np.inf, np.float32), InputError, "non-finite"),
        (np.zeros((8, 8), np.complex64), InputTypeError, "dtype"),
        (np.zeros((8, 8), bool), InputTypeError, "dtype"),
        ("not an image", InputTypeError, "dtype"),
    ],
)
def test_bad_images_are_refused(hu, err, match):
    with pytest.raises(err, match=match):
        simulate(hu, 0.5, **SMALL)


def test_bad_settings_are_refused():
    hu, _ = _cylinder(n=32, px=360.0 / 32)
    with pytest.raises(InputError, match="unknown geometry keyword"):
        simulate(hu, 0.5, view=10)
    with pytest.raises(InputError, match="unknown FBP filter"):
        simulate(hu, 0.5, filter="butterworth")
    with pytest.raises(InputError, match="kind"):
        simulate(hu, 0.5, kind="cone")
    with pytest.raises(InputError, match="seed"):
        simulate(hu, 0.5, seed=-1, **dict(SMALL, pixel_size_mm=360.0 / 32))
    with pytest.raises(InputError, match="i0"):
        simulate(hu, 0.5, i0=0.0, **dict(SMALL, pixel_size_mm=360.0 / 32))
    with pytest.raises(InputError, match="sigma_e"):
        simulate(hu, 0.5, sigma_e=-1.0, **dict(SMALL, pixel_size_mm=360.0 / 32))
    with pytest.raises(InputError, match="pixel_size_mm"):
        simulate(hu, 0.5, pixel_size_mm=float("nan"))
    with pytest.raises(DoseError):
        simulate_doses(hu, [0.1, 2.0], **dict(SMALL, pixel_size_mm=360.0 / 32))
    one = simulate_doses(hu, 0.25, seed=1, **dict(SMALL, pixel_size_mm=360.0 / 32))
    assert list(one) == [0.25]
    # A 32 x 20 mm pixel image is 640 mm across: beyond the 500 mm field of view.
    with pytest.raises(InputError, match="field of view"):
        simulate(np.zeros((32, 32), np.float32), 0.5, pixel_size_mm=20.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    hu, _ = _cylinder()
    cpu = noiseless(hu, device="cpu", **SMALL)
    gpu = noiseless(hu, device="cuda", **SMALL)
    np.testing.assert_allclose(gpu, cpu, atol=0.05)


@pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("data_store") is None,
    reason="pydicom-data (the 512x512 real CT slice 693_UNCI.dcm) is not installed",
)
def test_insert_noise_on_a_real_scanner_slice():
    """Mode (b) on real CT: added noise std grows as sqrt(1/dose - 1), no mean shift, padding kept."""
    from pydicom.data import get_testdata_file

    from ctdn.io import read_dicom

    vol = read_dicom(get_testdata_file("693_UNCI.dcm"))
    hu = vol.hu[0]
    before = hu.copy()
    body = hu > -500
    padding = hu < -1100
    assert padding.any()  # this scan is padded outside its field of view
    std = {}
    for d in (0.5, 0.1):
        out = insert_noise(hu, d, seed=0, pixel_size_mm=vol.spacing[2])
        diff = out - hu
        assert abs(float(diff[body].mean())) < 1.0
        np.testing.assert_array_equal(out[padding], hu[padding])
        std[d] = float(diff[body].std())
    predicted = math.sqrt(1 / 0.1 - 1) / math.sqrt(1 / 0.5 - 1)
    assert abs(std[0.1] / std[0.5] - predicted) / predicted < 0.10, std
    np.testing.assert_array_equal(hu, before)
