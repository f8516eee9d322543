"""Task-based image quality (ctdn.iq) against cases worked out by hand.

- White noise of std sigma at pixels dx x dy has a flat NPS sigma^2 dx dy whose integral over the
  Nyquist square is sigma^2 (Parseval).
- Noise filtered with a kernel of transfer function H has NPS sigma^2 dx dy |H|^2; with
  ``mode="wrap"`` the filter is an exact circular convolution, so H is the DFT of the kernel.
  An ROI's periodogram is the true spectrum seen through the ROI's window; its exact
  expectation is the DFT of the autocovariance times the triangle (1 - |lag| / N) per axis.
- A disc blurred by a Gaussian PSF of std s has the edge TTF exp(-2 pi^2 s^2 f^2). The blurred
  disc's value at distance r is P(chi'^2_2(nc=(r/s)^2) <= (R/s)^2), evaluated exactly at pixel
  centres; a supersampled render averages each pixel, which adds the pixel's variance dx^2 / 12
  to the PSF's.
- NPW d' of a disc in white noise with TTF = 1: d'^2 = int |W|^2 / NPS = C^2 (pi D^2 / 4) /
  (sigma^2 dx dy), since int |W|^2 df = int w(x)^2 dx = C^2 * area (Parseval).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.stats import ncx2

from ctdn import iq
from ctdn.errors import InputError, InputTypeError
from ctdn.iq.nps import _radial

SIGMA = 20.0


def _white(shape, seed=0, sigma=SIGMA):
    return np.random.default_rng(seed).normal(0.0, sigma, shape)


def _filtered(noise, s):
    return np.stack([ndimage.gaussian_filter(a, s, mode="wrap") for a in noise])


def _kernel_power(s, n):
    """|H|^2 of ndimage's Gaussian kernel of std ``s`` px on an n x n periodic grid (fftshifted)."""
    delta = np.zeros((n, n))
    delta[0, 0] = 1.0
    return np.fft.fftshift(np.abs(np.fft.fft2(ndimage.gaussian_filter(delta, s, mode="wrap"))) ** 2)


def _expected_periodogram(s, roi, big=256):
    """Exact mean ROI periodogram (unit-variance input, fftshifted): triangle-windowed autocovariance."""
    delta = np.zeros((big, big))
    delta[0, 0] = 1.0
    kernel = ndimage.gaussian_filter(delta, s, mode="wrap")
    acov = np.real(np.fft.ifft2(np.abs(np.fft.fft2(kernel)) ** 2))
    lags = np.r_[0:roi, -(roi - 1) : 0]
    tri = 1.0 - np.abs(lags) / roi
    sub = acov[np.ix_(lags % big, lags % big)] * tri[:, None] * tri[None, :]
    e = np.exp(-2j * np.pi * np.outer(np.arange(roi), lags) / roi)
    return np.fft.fftshift(np.real(e @ sub @ e.T))


# ---------------------------------------------------------------------------------------------
# NPS
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("px", [0.5, (0.4, 0.8)])
@pytest.mark.parametrize("detrend", ["mean", "poly2"])
def test_white_noise_has_a_flat_nps_whose_integral_is_the_variance(px, detrend):
    noise = _white((16, 256, 256))
    r = iq.nps(noise, px, roi=64, detrend=detrend)
    dy, dx = (px, px) if np.isscalar(px) else px
    level = SIGMA**2 * dx * dy
    assert r.nps_2d.shape == (64, 64) and r.n_rois == 16 * 16
    assert r.noise_std == pytest.approx(SIGMA, rel=0.02)  # Parseval
    # Bands of 4 rings are flat at sigma^2 dx dy.
    first = 1 if detrend == "mean" else 5  # the quadratic also takes power from the lowest rings
    rings = r.nps_1d[first : first + (len(r.nps_1d) - first) // 4 * 4]
    assert np.abs(rings.reshape(-1, 4).mean(axis=1) / level - 1).max() < 0.04
    if detrend == "poly2":
        assert r.nps_1d[1] < 0.9 * level
    assert r.nps_2d[32, 32] == pytest.approx(0.0, abs=1e-9 * level)  # DC: each ROI's mean removed
    # Frequency axes in cycles/mm: the step is 1 / (roi * pixel), the radial curve ends at Nyquist.
    assert r.fx[1] - r.fx[0] == pytest.approx(1 / (64 * dx)) and r.fy[1] - r.fy[0] == pytest.approx(
        1 / (64 * dy)
    )
    assert r.f[-1] == pytest.approx(min(0.5 / dx, 0.5 / dy), abs=r.f[1])
    # A flat spectrum's mean frequency is the mean of the ring centres (about half Nyquist).
    assert r.f_avg == pytest.approx(r.f[1:].mean(), rel=0.03)


def test_white_noise_scales_with_pixel_area_and_variance():
    base = iq.nps(_white((4, 128, 128)), 1.0, roi=64)
    for px, scale in ((0.5, 2.0), (2.0, 0.5)):
        r = iq.nps(_white((4, 128, 128)) * scale, px, roi=64)
        ratio = r.nps_1d[2:].mean() / base.nps_1d[2:].mean()
        assert ratio == pytest.approx(scale**2 * px**2, rel=0.05)


@pytest.mark.parametrize("s, roi", [(1.0, 64), (2.0, 128)])  # spectra 7 frequency steps wide
def test_filtered_white_noise_has_nps_sigma2_h2(s, roi):
    noise = _filtered(_white((32, 256, 256), seed=1), s)
    px = 0.5
    r = iq.nps(noise, px, roi=roi)
    level = SIGMA**2 * px * px
    _, naive = _radial(level * _kernel_power(s, roi), r.fx, r.fy)
    _, exact = _radial(level * _expected_periodogram(s, roi), r.fx, r.fy)
    strong = np.nonzero(naive >= 0.05 * naive[0])[0][1:]
    # The measured spectrum follows sigma^2 dx dy |H(f)|^2 (the ROI window's leakage is small) ...
    assert np.abs(r.nps_1d[strong] / naive[strong] - 1).max() < 0.10
    band = [
        r.nps_1d[strong[i : i + 3]].sum() / naive[strong[i : i + 3]].sum()
        for i in range(0, len(strong) - 2, 3)
    ]
    assert np.abs(np.array(band) - 1).max() < 0.06
    # ... and the exact expectation with the window within noise, down to 1 % of the peak.
    some = np.nonzero(exact >= 0.01 * exact[0])[0][1:]
    assert np.abs(r.nps_1d[some] / exact[some] - 1).max() < 0.07
    # Noise magnitude: sigma^2 * mean |H|^2 (Parseval on the full image).
    assert r.noise_std == pytest.approx(SIGMA * math.sqrt(_kernel_power(s, 256).mean()), rel=0.03)
    # A smoother filter moves the texture to lower frequencies.
    white = iq.nps(_white((32, 256, 256), seed=1), px, roi=roi)
    assert r.f_avg < 0.6 * white.f_avg
    assert r.f_peak < white.f[-1] / 2


def test_anisotropic_noise_keeps_rows_and_columns_apart():
    # Smoothed along rows (axis 0) only: power falls along fy, stays flat along fx.
    noise = np.stack([ndimage.gaussian_filter(a, (2.0, 0.0), mode="wrap") for a in _white((16, 256, 256))])
    r = iq.nps(noise, (0.5, 1.0), roi=64)
    mid = 32
    along_fy = r.nps_2d[mid + 8 : mid + 16, mid - 2 : mid + 3].mean()
    along_fx = r.nps_2d[mid - 2 : mid + 3, mid + 8 : mid + 16].mean()
    assert along_fy < 0.05 * along_fx
    assert r.fy[1] - r.fy[0] == pytest.approx(1 / 32) and r.fx[1] - r.fx[0] == pytest.approx(1 / 64)


def test_noise_from_pair_and_ensemble_remove_the_signal():
    rng = np.random.default_rng(3)
    signal = np.add.outer(np.linspace(-500, 500, 128), np.linspace(0, 300, 128))
    a, b = signal + rng.normal(0, 10, signal.shape), signal + rng.normal(0, 10, signal.shape)
    pair = iq.noise_from_pair(a, b)
    assert pair.shape == (128, 128) and pair.std() == pytest.approx(10, rel=0.03)
    assert iq.nps(pair, 0.7, roi=64).noise_std == pytest.approx(10, rel=0.05)
    stack = signal + rng.normal(0, 10, (6, 128, 128))
    ens = iq.noise_from_ensemble(stack)
    assert ens.shape == (6, 128, 128) and ens.std() == pytest.approx(10, rel=0.03)
    with pytest.raises(InputError, match="differ in shape"):
        iq.noise_from_pair(a, b[:-1])
    with pytest.raises(InputError, match="K >= 2"):
        iq.noise_from_ensemble(a)


def test_roi_placement_by_mask_and_centres():
    mask = np.zeros((200, 200), bool)
    mask[20:120, 30:150] = True
    corners = iq.roi_corners(mask.shape, 32, mask=mask)
    assert corners and all(mask[r : r + 32, c : c + 32].all() for r, c in corners)
    assert len(corners) == len(set(corners))
    assert iq.roi_corners((100, 100), 32, centers=[(50, 50)]) == [(34, 34)]
    r = iq.nps(_white((200, 200)), 0.5, roi=32, mask=mask)
    assert r.n_rois == len(corners)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(roi=8), "too small for an NPS"),
        (dict(roi=300), "does not fit"),
        (dict(roi=64.0), "integer"),
        (dict(detrend="linear"), "detrend"),
        (dict(centers=[(5, 5)]), "runs off"),
        (dict(mask=np.zeros((128, 128), bool)), "no 64x64 px ROI fits"),
        (dict(mask=np.ones((10, 10), bool)), "boolean image of shape"),
    ],
)
def test_nps_refuses_what_cannot_give_a_spectrum(kwargs, match):
    with pytest.raises(InputError, match=match):
        iq.nps(_white((128, 128)), 0.5, **kwargs)


@pytest.mark.parametrize(
    "noise, px, err, match",
    [
        (np.full((64, 64), np.nan), 0.5, InputError, "non-finite"),
        (np.zeros((2, 2, 64, 64)), 0.5, InputError, "2-D or 3-D"),
        (np.zeros((64, 64), complex), 0.5, InputTypeError, "real-valued"),
        (np.zeros((64, 64)), 0.0, InputError, "pixel_size_mm"),
        (np.zeros((64, 64)), (0.5, 0.5, 0.5), InputError, "pixel_size_mm"),
    ],
)
def test_nps_refuses_bad_inputs(noise, px, err, match):
    with pytest.raises(err, match=match):
        iq.nps(noise, px, roi=32)


# ---------------------------------------------------------------------------------------------
# TTF
# ---------------------------------------------------------------------------------------------
def _blurred_disc(n, px, radius_mm, s_mm, contrast, center, background=0.0):
    """Exact Gaussian-blurred disc at the pixel centres (no pixel aperture)."""
    rows = np.arange(n)[:, None] - center[0]
    cols = np.arange(n)[None, :] - center[1]
    r = np.hypot(rows, cols) * px
    return background + contrast * ncx2.cdf((radius_mm / s_mm) ** 2, 2, (r / s_mm) ** 2)


def _supersampled_disc(n, px, radius_mm, s_mm, contrast, center, factor=8):
    """A disc rendered on a factor-x finer grid, blurred there, then averaged per pixel."""
    m = n * factor
    sub = (np.arange(m) + 0.5) / factor - 0.5  # sub-sample positions in pixel units
    rows, cols = sub[:, None] - center[0], sub[None, :] - center[1]
    fine = (np.hypot(rows, cols) * px <= radius_mm).astype(np.float64) * contrast
    fine = ndimage.gaussian_filter(fine, s_mm / px * factor)
    return fine.reshape(n, factor, n, factor).mean(axis=(1, 3))


def _gauss_mtf(f, s):
    return np.exp(-2 * math.pi**2 * s**2 * f**2)


def _f_at(level, s):
    return math.sqrt(math.log(1 / level) / (2 * math.pi**2)) / s


@pytest.mark.parametrize("s", [0.5, 1.0])
@pytest.mark.parametrize("contrast", [100.0, -1000.0])
def test_ttf_of_a_gaussian_blurred_disc_is_the_gaussian_mtf(s, contrast):
    px, radius, center = 0.5, 10.0, (63.3, 64.1)
    img = _blurred_disc(128, px, radius, s, contrast, center, background=40.0)
    r = iq.ttf(img, center, radius, px)
    truth = _gauss_mtf(r.f, s)
    upto = r.f <= _f_at(0.1, s)
    assert np.abs(r.ttf[upto] / truth[upto] - 1).max() < 0.03
    assert r.f50 == pytest.approx(_f_at(0.5, s), rel=0.01)
    assert r.f10 == pytest.approx(_f_at(0.1, s), rel=0.01)
    assert r.ttf[0] == pytest.approx(1.0)
    assert r.contrast_hu == pytest.approx(contrast, rel=1e-3) and r.background_hu == pytest.approx(
        40.0, abs=0.05
    )
    assert r.f[-1] == pytest.approx(1 / px, abs=r.f[1])
    assert np.hypot(r.center[0] - center[0], r.center[1] - center[1]) < 0.02


def test_ttf_of_a_supersampled_noisy_ensemble_includes_the_pixel_aperture():
    px, radius, s, center = 0.5, 10.0, 0.75, (63.6, 64.2)
    clean = _supersampled_disc(128, px, radius, s, 1000.0, center)
    noisy = clean + np.random.default_rng(5).normal(0.0, 10.0, (8, 128, 128))
    r = iq.ttf(noisy, center, radius, px)
    s_eff = math.sqrt(s**2 + px**2 / 12)  # the pixel average adds a box of variance px^2 / 12
    truth = _gauss_mtf(r.f, s_eff)
    upto = r.f <= _f_at(0.1, s_eff)
    assert np.abs(r.ttf[upto] - truth[upto]).max() < 0.03
    assert r.f50 == pytest.approx(_f_at(0.5, s_eff), rel=0.03)
    assert r.f10 == pytest.approx(_f_at(0.1, s_eff), rel=0.03)
    assert r.realisations == 8 and r.noise_std_hu == pytest.approx(10.0, rel=0.1)
    assert r.cnr == pytest.approx(100.0, rel=0.1) and r.cnr_mean > r.cnr


def test_ttf_ranks_sharper_systems_higher_and_finds_an_offset_centre():
    px, radius, true_center = 0.5, 8.0, (60.0, 61.0)
    sharp = iq.ttf(_blurred_disc(128, px, radius, 0.5, 200.0, true_center), (60.4, 60.7), radius, px)
    soft = iq.ttf(_blurred_disc(128, px, radius, 1.0, 200.0, true_center), true_center, radius, px)
    assert sharp.f50 > 1.8 * soft.f50
    assert np.hypot(sharp.center[0] - 60.0, sharp.center[1] - 61.0) < 0.05
    unrefined = iq.ttf(
        _blurred_disc(128, px, radius, 0.5, 200.0, true_center), (60.4, 60.7), radius, px, refine_center=False
    )
    assert unrefined.f50 < 0.97 * sharp.f50  # an off-centre ring smears the edge


@pytest.mark.parametrize(
    "image, center, radius, match",
    [
        (np.zeros((128, 128)), (64, 64), 10.0, "no insert found"),
        (_white((128, 128), sigma=5.0), (64, 64), 10.0, "no insert found"),
        (
            _blurred_disc(128, 0.5, 10.0, 0.5, 100.0, (20, 64)),
            (20, 64),
            10.0,
            "too close to the image border",
        ),
        (_blurred_disc(128, 0.5, 1.0, 0.5, 100.0, (64, 64)), (64, 64), 1.0, "too small for a TTF"),
        (np.full((128, 128), np.nan), (64, 64), 10.0, "non-finite"),
    ],
)
def test_ttf_refuses_what_cannot_give_a_measurement(image, center, radius, match):
    with pytest.raises(InputError, match=match):
        iq.ttf(image, center, radius, 0.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(center=(64,)), "center"),
        (dict(center=(64, float("nan"))), "center"),
        (dict(radius_mm=-1.0), "radius_mm"),
        (dict(pixel_size_mm=0), "pixel_size_mm"),
        (dict(bin_px=2.0), "bin_px"),
        (dict(outer_mm=10.5), "background"),
    ],
)
def test_ttf_refuses_bad_arguments(kwargs, match):
    args = dict(center=(64, 64), radius_mm=10.0, pixel_size_mm=0.5) | kwargs
    with pytest.raises(InputError, match=match):
        iq.ttf(_blurred_disc(128, 0.5, 10.0, 0.5, 100.0, (64, 64)), **args)


# ---------------------------------------------------------------------------------------------
# Detectability
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def white_nps():
    return iq.nps(_white((32, 256, 256), seed=8), 0.5, roi=64)


@pytest.mark.parametrize("diameter", [5.0, 10.0, 20.0, 40.0])
def test_npw_dprime_in_white_noise_matches_the_closed_form(white_nps, diameter):
    contrast, px = 10.0, 0.5
    closed = math.sqrt(contrast**2 * math.pi * diameter**2 / 4 / (SIGMA**2 * px * px))
    d = iq.detectability(white_nps, None, iq.DiscTask(diameter, contrast))
    assert d.npw == pytest.approx(closed, rel=0.04)  # the measured NPS: within its estimation noise
    # With the exact flat NPS only the sum's stop at Nyquist remains: the disc's spectrum above it
    # (about 2 / (pi^2 D f_N) of |W|^2: 4 % at 5 mm and 1 cycle/mm) is missing from d'^2. The
    # 20 and 40 mm discs are wider than half the 32 mm ROI: they run on the refined grid.
    exact = dataclasses.replace(white_nps, nps_2d=np.full((64, 64), SIGMA**2 * px * px))
    ideal = iq.detectability(exact, None, iq.DiscTask(diameter, contrast)).npw
    lost = 2 / (math.pi**2 * diameter * 1.0)
    assert ideal <= closed * (1 + 1e-6)
    assert ideal == pytest.approx(closed * math.sqrt(1 - lost), rel=0.01)
    flipped = iq.detectability(white_nps, None, diameter_mm=diameter, contrast_hu=-contrast)
    assert flipped.npw == pytest.approx(d.npw)


def test_npw_dprime_scales_with_contrast_and_noise(white_nps):
    base = iq.detectability(white_nps, None, diameter_mm=6.0, contrast_hu=10.0)
    double = iq.detectability(white_nps, None, diameter_mm=6.0, contrast_hu=20.0)
    assert double.npw == pytest.approx(2 * base.npw) and double.npwe == pytest.approx(2 * base.npwe)
    louder = iq.nps(2 * _white((32, 256, 256), seed=8), 0.5, roi=64)
    assert iq.detectability(louder, None, diameter_mm=6.0, contrast_hu=10.0).npw == pytest.approx(
        base.npw / 2
    )


def test_blur_lowers_dprime_and_npwe_follows_the_eye_filter(white_nps):
    px, radius = 0.5, 10.0
    blur = iq.ttf(_blurred_disc(128, px, radius, 1.0, 300.0, (64, 64)), (64, 64), radius, px)
    sharp = iq.detectability(white_nps, None, diameter_mm=2.0, contrast_hu=10.0)
    blurred = iq.detectability(white_nps, blur, diameter_mm=2.0, contrast_hu=10.0)
    assert blurred.npw < 0.9 * sharp.npw and blurred.npwe < sharp.npwe
    eye = iq.EyeFilter()
    f = np.linspace(0.01, 2.0, 2000)
    assert eye.cycles_per_degree(f[np.argmax(eye(f))]) == pytest.approx(4.0, rel=0.01)
    assert eye(f).max() == pytest.approx(1.0, rel=1e-3)
    # Internal noise lowers NPWE d' only; a zoomed display moves the eye's peak to higher frequency.
    noisy_eye = iq.detectability(white_nps, None, diameter_mm=2.0, contrast_hu=10.0, internal_noise=1.0)
    assert noisy_eye.npwe < sharp.npwe and noisy_eye.npw == pytest.approx(sharp.npw)
    zoomed = iq.EyeFilter(zoom=2.0)
    assert f[np.argmax(zoomed(f))] == pytest.approx(2 * f[np.argmax(eye(f))], rel=0.01)


def test_detectability_refuses_bad_inputs(white_nps):
    with pytest.raises(InputTypeError, match="nps_result"):
        iq.detectability("nps", None, diameter_mm=5.0, contrast_hu=10.0)
    with pytest.raises(InputTypeError, match="ttf_result"):
        iq.detectability(white_nps, white_nps, diameter_mm=5.0, contrast_hu=10.0)
    with pytest.raises(InputError, match="DiscTask"):
        iq.detectability(white_nps, None)
    with pytest.raises(InputError, match="contrast_hu"):
        iq.DiscTask(5.0, 0.0)
    with pytest.raises(InputError, match="diameter_mm"):
        iq.DiscTask(float("nan"), 10.0)
    with pytest.raises(InputError, match="internal_noise"):
        iq.detectability(white_nps, None, diameter_mm=5.0, contrast_hu=10.0, internal_noise=-1.0)
    with pytest.raises(InputError, match="viewing_distance_mm"):
        iq.EyeFilter(viewing_distance_mm=0.0)
    silent = iq.nps(np.zeros((128, 128)), 0.5, roi=64)
    with pytest.raises(InputError, match="zero"):
        iq.detectability(silent, None, diameter_mm=5.0, contrast_hu=10.0)


# ---------------------------------------------------------------------------------------------
# Lesions
# ---------------------------------------------------------------------------------------------
def _lesion_image(lesions, n=160, background=40.0, noise=0.0, seed=0):
    img = np.full((n, n), background)
    rows, cols = np.arange(n)[:, None], np.arange(n)[None, :]
    for (r0, c0), rad, con in lesions:
        img[np.hypot(rows - r0, cols - c0) <= rad] += con
    return img + np.random.default_rng(seed).normal(0.0, noise, img.shape) if noise else img


LESIONS = [((40, 40), 4.0, 10.0), ((40, 110), 8.0, -20.0), ((110, 40), 3.0, 20.0), ((110, 110), 6.0, 10.0)]


def test_lesion_contrast_kept_and_cnr():
    truth = _lesion_image(LESIONS)
    img = 40.0 + 0.5 * (truth - 40.0) + np.random.default_rng(1).normal(0.0, 2.0, truth.shape)
    stats = iq.lesion_stats(img, LESIONS, pixel_size_mm=0.5)
    assert [s.index for s in stats] == [0, 1, 2, 3]
    for s, (_, rad, con) in zip(stats, LESIONS, strict=True):
        assert s.diameter_mm == pytest.approx(2 * rad * 0.5)
        assert s.true_contrast_hu == con
        assert s.kept == pytest.approx(0.5, abs=0.12)
        assert s.background_std_hu == pytest.approx(2.0, rel=0.25)
        assert s.cnr == pytest.approx(abs(0.5 * con) / 2.0, rel=0.35) and s.cnr > 0
    # Truth measured with the same masks gives the same kept fractions as the stated contrasts.
    by_truth = iq.lesion_stats(img, [(c, r) for c, r, _ in LESIONS], pixel_size_mm=0.5, truth=truth)
    assert [s.kept for s in by_truth] == pytest.approx([s.kept for s in stats], abs=1e-9)
    # A lesion shown with the wrong polarity has a negative CNR and kept fraction.
    flipped = iq.lesion_stats(80.0 - img, LESIONS, pixel_size_mm=0.5)
    assert all(s.kept < 0 and s.cnr < 0 for s in flipped)


def test_lesion_masks_avoid_edges_and_neighbours():
    inside, ring = iq.lesion_masks((100, 100), (50, 50), 6.0, others=[((50, 62), 3.0)])
    rows, cols = np.nonzero(inside)
    assert np.hypot(rows - 50, cols - 50).max() <= 6.0 - 0.75
    r_ring = np.hypot(*np.nonzero(ring) - np.array([[50], [50]]))
    assert r_ring.min() >= 9.0 and r_ring.max() <= 15.0
    assert not ring[np.hypot(np.arange(100)[:, None] - 50, np.arange(100)[None, :] - 62) <= 4.5].any()
    tiny_inside, _ = iq.lesion_masks((100, 100), (20.2, 30.4), 0.5)
    assert tiny_inside.sum() == 1 and tiny_inside[20, 30]
    valid = np.zeros((100, 100), bool)
    valid[:, :50] = True
    _, half = iq.lesion_masks((100, 100), (50, 50), 6.0, valid=valid)
    assert half.any() and not half[:, 50:].any()


def test_phantom_lesions_are_accepted():
    from ctdn import phantoms

    ph = phantoms.generate("abdomen", seed=0, size=256)
    stats = iq.lesion_stats(ph.hu, ph.lesions, pixel_size_mm=ph.pixel_size_mm)
    assert len(stats) == len(ph.lesions)
    measurable = [s for s in stats if s.radius_px >= 2]
    assert measurable and all(abs(s.kept - 1) < 0.25 for s in measurable)


def test_summarize_by_size_and_contrast():
    truth = _lesion_image(LESIONS)
    img = 40.0 + 0.8 * (truth - 40.0)
    stats = iq.lesion_stats(img, LESIONS, pixel_size_mm=0.5)
    rows = iq.summarize_by(stats, size_bins_mm=[0, 3.5, 10], contrast_bins_hu=[0, 15, 30])
    assert sum(r["n"] for r in rows) == 4
    small = next(r for r in rows if r["size_bin_mm"] == (0.0, 3.5))
    assert small["contrast_bin_hu"] == (15.0, 30.0) and small["n"] == 1  # the 3 mm lesion of 20 HU
    assert small["mean_kept"] == pytest.approx(0.8, abs=0.02)
    large_low = next(
        r for r in rows if r["size_bin_mm"] == (3.5, 10.0) and r["contrast_bin_hu"] == (0.0, 15.0)
    )
    assert large_low["n"] == 2 and large_low["mean_contrast_hu"] == pytest.approx(8.0, abs=0.2)
    by_value = iq.summarize_by(stats)
    assert sorted((r["size_bin_mm"][0], r["contrast_bin_hu"][0]) for r in by_value) == [
        (3.0, 20.0),
        (4.0, 10.0),
        (6.0, 10.0),
        (8.0, 20.0),
    ]
    assert iq.summarize_by([]) == []
    with pytest.raises(InputError, match="increasing"):
        iq.summarize_by(stats, size_bins_mm=[5, 1])
    with pytest.raises(InputError, match="pixel_size_mm"):
        iq.summarize_by(iq.lesion_stats(img, LESIONS))


@pytest.mark.parametrize(
    "lesions, kwargs, match",
    [
        ([((40, 40), -1.0)], {}, "radius_px"),
        ([((40,), 3.0)], {}, "center"),
        ([object()], {}, "radius_px"),
        ([((40, 40), 3.0, "ten")], {}, "contrast_hu"),
        (LESIONS, dict(truth=np.zeros((10, 10))), "shape"),
        (LESIONS, dict(valid=np.ones((160, 160))), "boolean"),
    ],
)
def test_lesion_stats_refuses_bad_inputs(lesions, kwargs, match):
    with pytest.raises(InputError, match=match):
        iq.lesion_stats(_lesion_image(LESIONS), lesions, **kwargs)
