"""The task-based quality report (train/task_quality.py, train/quality_report.py), honest BM3D
(ctdn.baselines.bm3d with a measured NPS), the ldct-benchmark metric convention and the demo's
quality figures.

The report's computation runs once per module at ``--quick`` sizes (a 200 mm QA phantom at 128
pixels, one scanner draw, two doses, one anatomical slice, a reduced scanner), with a Gaussian blur
as an extra "method" whose effect on texture and resolution is known.
"""

import json
import math
import sys

import numpy as np
import pytest
from scipy import ndimage

from ctdn import baselines, iq, metrics
from ctdn.errors import InputError, InputTypeError
from ctdn.qa_phantom import qa_phantom

pytest.importorskip("skimage")
pytest.importorskip("bm3d")

from ctdn.train import quality, task_measure, task_quality  # noqa: E402


def _blur(stack, dose):
    return ndimage.gaussian_filter(np.asarray(stack, np.float32), (0, 1.5, 1.5))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("task-cache")


@pytest.fixture(scope="module")
def res(cache):
    return task_quality.run({"blur": _blur}, config=task_quality.QUICK, cache=cache, progress=False)


# -- the report's computation --------------------------------------------------------------------
def test_ndct_is_its_own_reference(res):
    for per in res["doses"].values():
        q = per["ndct"]["qa"]
        assert q["f_avg_ratio"] == 1.0 and q["f_peak_ratio"] == 1.0 and q["noise_ratio"] == 1.0
        assert per["ndct"]["anatomical"] is None


def test_ldct_is_noisier_than_ndct_and_noise_falls_with_dose(res):
    noise = {float(d): per["input"]["qa"]["nps"]["noise_std"] for d, per in res["doses"].items()}
    ndct = next(iter(res["doses"].values()))["ndct"]["qa"]["nps"]["noise_std"]
    assert all(v > 1.2 * ndct for v in noise.values())
    assert noise[0.1] > noise[0.5]
    # FBP's texture does not change with dose: the input's f_avg is the normal-dose scan's.
    for per in res["doses"].values():
        assert per["input"]["qa"]["f_avg_ratio"] == pytest.approx(1.0, abs=0.15)


def test_values_are_finite_and_sane(res):
    for per in res["doses"].values():
        for m in res["methods"]:
            q = per[m]["qa"]
            n = q["nps"]
            assert n["noise_std"] > 0 and 0 < n["f_avg"] < 1 / (2 * res["qa"]["pixel_size_mm"])
            air = q["ttf"]["-1000"]
            assert air["found"] and 0 < air["f50"] < air["f10"]
            high = [t for t in q["tasks"] if abs(t["contrast_hu"]) > 50 and t["ttf_rod_hu"] is not None]
            assert len(high) >= 4 and all(t["npw"] > 0 and t["npwe"] > 0 for t in high)
            assert len(q["lesions"]) == 16
            if m != "ndct":
                a = per[m]["anatomical"]
                assert math.isfinite(a["psnr"]) and 0 < a["ssim"] <= 1 and a["rmse_hu"] > 0


def test_denoisers_lower_the_noise(res):
    for per in res["doses"].values():
        base = per["input"]["qa"]["nps"]["noise_std"]
        for m in ("nlmeans", "tv", "bm3d", "blur"):
            assert per[m]["qa"]["nps"]["noise_std"] < base


def test_a_gaussian_blur_lowers_f_avg_and_ttf_f50(res):
    for per in res["doses"].values():
        blur, inp = per["blur"]["qa"], per["input"]["qa"]
        assert blur["f_avg_ratio"] < 0.75 * inp["f_avg_ratio"]
        for rod in ("-1000", "120"):
            assert blur["ttf"][rod]["f50"] < 0.8 * inp["ttf"][rod]["f50"]
        # and loses the small lesions' contrast the normal-dose scan keeps
        small = [r for r in blur["lesions"] if r["diameter_mm"] <= 5 and abs(r["true_contrast_hu"]) > 50]
        assert np.mean([r["kept"] for r in small]) < 0.7


def test_ndct_keeps_high_contrast_lesions(res):
    q = next(iter(res["doses"].values()))["ndct"]["qa"]
    for row in q["lesions_high_by_size"]:
        assert row["kept"] == pytest.approx(1.0, abs=0.15)


def test_d_prime_uses_a_substitute_ttf_only_for_fbp(res):
    for per in res["doses"].values():
        for m in res["methods"]:
            q = per[m]["qa"]
            for t in q["tasks"]:
                if t["ttf_substituted"]:
                    assert m in ("input", "ndct")
                if t["ttf_rod_hu"] is None:
                    assert math.isnan(t["npw"])
                elif not t["ttf_substituted"]:
                    assert t["ttf_rod_hu"] == t["contrast_hu"]


def test_rod_for_refuses_other_contrasts_for_denoisers():
    rods = [type("R", (), {"hu": h}) for h in (-1000.0, -100.0, 120.0, 10.0, -10.0)]
    ttfs = {-1000.0: object(), -100.0: object(), 120.0: object(), 10.0: "no insert found", -10.0: object()}
    assert task_measure._rod_for(10.0, rods, ttfs, linear=False) == (None, False)
    assert task_measure._rod_for(10.0, rods, ttfs, linear=True) == (-10.0, True)
    assert task_measure._rod_for(-10.0, rods, ttfs, linear=False) == (-10.0, False)


def test_a_second_run_reads_the_cache(res, cache):
    again = task_quality.run({"blur": _blur}, config=task_quality.QUICK, cache=cache, progress=False)
    assert again["seconds"]["baselines"] < 0.2 * max(res["seconds"]["baselines"], 1.0)
    for d in res["doses"]:
        for m in ("input", "bm3d", "tv"):
            assert again["doses"][d][m]["qa"]["nps"] == res["doses"][d][m]["qa"]["nps"]


def test_by_size_bins_and_pools_the_error():
    rows = [
        {"diameter_mm": 3.0, "true_contrast_hu": 10.0, "kept": 0.5, "kept_se": 0.1, "cnr": 1.0},
        {"diameter_mm": 3.0, "true_contrast_hu": -10.0, "kept": 0.7, "kept_se": 0.1, "cnr": 2.0},
        {"diameter_mm": 10.0, "true_contrast_hu": 120.0, "kept": 0.9, "kept_se": 0.1, "cnr": 9.0},
    ]
    low = task_measure.by_size(rows, True)
    assert len(low) == 1 and low[0]["kept"] == pytest.approx(0.6) and low[0]["lesions"] == 2
    assert low[0]["kept_se"] == pytest.approx(math.sqrt(0.02) / 2)
    assert [r["diameter_mm"] for r in task_measure.by_size(rows)] == [3.0, 10.0]


def test_config_refuses_bad_sizes():
    with pytest.raises(InputError, match="realisations"):
        task_quality.TaskConfig(realisations=1)
    with pytest.raises(InputError, match="convention"):
        task_quality.run({}, config=task_quality.QUICK, convention="mayo")


# -- honest BM3D ---------------------------------------------------------------------------------
def _correlated(rng, n=4, shape=(128, 128), sigma_px=1.5, std=20.0):
    w = rng.normal(0.0, 1.0, (n, *shape))
    x = ndimage.gaussian_filter(w, (0, sigma_px, sigma_px), mode="wrap")
    return x * (std / x.std())


def test_bm3d_psd_is_the_noise_spectrum_on_the_image_grid():
    """Gaussian-filtered white noise: E|FFT2|^2 = sigma_w^2 M N |H|^2, H the kernel's DFT."""
    rng = np.random.default_rng(0)
    shape, s = (128, 128), 1.5
    w_std = 1.0
    w = rng.normal(0.0, w_std, (16, *shape))
    noise = ndimage.gaussian_filter(w, (0, s, s), mode="wrap") * 30.0
    r = iq.nps(noise, 0.7, roi=64)
    psd = baselines.bm3d_psd(r, shape)
    delta = np.zeros(shape)
    delta[0, 0] = 1.0
    h2 = np.abs(np.fft.fft2(ndimage.gaussian_filter(delta, s, mode="wrap"))) ** 2
    expected = (30.0 * w_std) ** 2 * shape[0] * shape[1] * h2 / 2000.0**2
    assert psd.shape == shape
    assert psd.mean() == pytest.approx(expected.mean(), rel=0.05)
    strong = expected > 0.05 * expected.max()
    strong[0, 0] = False  # the detrended DC sample is interpolated from its neighbours
    assert np.median(np.abs(psd[strong] / expected[strong] - 1)) < 0.1


def test_bm3d_passes_the_psd_to_the_package(monkeypatch):
    import bm3d as pkg

    seen = {}

    def spy(z, sigma_psd, *args, **kwargs):
        seen["z"], seen["psd"] = z, np.asarray(sigma_psd)
        return z

    monkeypatch.setattr(pkg, "bm3d", spy)
    noise = _correlated(np.random.default_rng(1))
    r = iq.nps(noise, 0.7, roi=32)
    out = baselines.bm3d(noise[0], nps=r)
    assert seen["psd"].shape == noise[0].shape
    np.testing.assert_allclose(seen["psd"], baselines.bm3d_psd(r, noise[0].shape))
    # its mean over the grid is the variance on the [0, 1] scale times the pixel count
    assert seen["psd"].mean() / noise[0].size == pytest.approx((r.noise_std / 2000.0) ** 2, rel=0.05)
    assert out.shape == noise[0].shape
    baselines.bm3d(noise[0], 20.0)
    assert seen["psd"].ndim == 0 and float(seen["psd"]) == pytest.approx(0.01)


def test_the_report_gives_bm3d_the_measured_spectrum(monkeypatch):
    import bm3d as pkg

    calls = []

    def spy(z, sigma_psd, *args, **kwargs):
        calls.append(np.asarray(sigma_psd))
        return z

    monkeypatch.setattr(pkg, "bm3d", spy)
    rng = np.random.default_rng(2)
    ph = qa_phantom(200.0, size=128, fov_mm=224.0)
    stack = (ph.hu + _correlated(rng, 3)).astype(np.float32)
    scans = [{"ldct": {0.25: stack}}]
    task_quality._qa_outputs("bm3d", scans, 0.25, {}, {}, None, {}, ph, 24)
    want = baselines.bm3d_psd(
        task_quality.ensemble_nps(stack, ph.pixel_size_mm, 24, ph.body), stack.shape[1:]
    )
    assert len(calls) == 3 and all(c.shape == stack.shape[1:] for c in calls)
    np.testing.assert_allclose(calls[0], want)


def test_bm3d_refuses_no_noise_or_both():
    img = np.zeros((32, 32), np.float32)
    r = iq.nps(_correlated(np.random.default_rng(3), 2, (64, 64)), 0.7, roi=32)
    with pytest.raises(InputError, match="sigma_hu .* or nps"):
        baselines.bm3d(img)
    with pytest.raises(InputError, match="sigma_hu .* or nps"):
        baselines.bm3d(img, 10.0, nps=r)
    with pytest.raises(InputTypeError, match="ctdn.iq.nps"):
        baselines.bm3d_psd({"nps_2d": 1}, (32, 32))


def test_numpy_is_left_as_it_was():
    had = "trapz" in np.__dict__
    with baselines._numpy_trapz():
        assert np.trapz is getattr(np, "trapezoid", np.trapz)  # noqa: NPY201
    assert ("trapz" in np.__dict__) == had


# -- the ldct-benchmark convention ---------------------------------------------------------------
@pytest.fixture
def pair():
    rng = np.random.default_rng(4)
    ref = rng.normal(40.0, 300.0, (2, 48, 56)).astype(np.float32)
    ref[:, :6] = -1500.0  # below the benchmark's floor (HU + 1024 < 0)
    ref[:, -4:] = 2500.0  # above its ceiling (1900 HU)
    img = ref + rng.normal(0.0, 40.0, ref.shape).astype(np.float32)
    return img, ref


def test_ldct_benchmark_matches_scikit_image(pair):
    from skimage.metrics import structural_similarity

    img, ref = pair
    t = np.clip(ref.astype(np.float64) + 1024.0, 0.0, 2924.0)
    p = np.clip(img.astype(np.float64) + 1024.0, 0.0, 2924.0)
    for k in range(2):
        ssim = structural_similarity(t[k], p[k], data_range=2924.0)
        mse = np.mean((t[k] - p[k]) ** 2)
        assert metrics.ssim(img[k], ref[k], convention="ldct-benchmark") == pytest.approx(ssim, abs=1e-6)
        assert metrics.psnr(img[k], ref[k], convention="ldct-benchmark") == pytest.approx(
            10 * np.log10(2924.0**2 / mse), abs=1e-5
        )
        assert metrics.rmse_hu(img[k], ref[k], convention="ldct-benchmark") == pytest.approx(
            np.sqrt(mse), rel=1e-5
        )
    stack = np.mean([structural_similarity(t[k], p[k], data_range=2924.0) for k in range(2)])
    assert metrics.ssim(img, ref, convention="ldct-benchmark") == pytest.approx(stack, abs=1e-6)


def test_conventions_differ_and_ctdn_is_the_default(pair):
    img, ref = pair
    assert metrics.psnr(img[0], ref[0]) == metrics.psnr(img[0], ref[0], convention="ctdn")
    assert metrics.ssim(img[0], ref[0]) == metrics.ssim(img[0], ref[0], convention="ctdn")
    assert metrics.psnr(img[0], ref[0], convention="ldct-benchmark") != metrics.psnr(img[0], ref[0])
    assert metrics.psnr(ref[0], ref[0], convention="ldct-benchmark") == math.inf


def test_conventions_refuse_bad_arguments(pair):
    img, ref = pair
    with pytest.raises(InputError, match="convention must be one of"):
        metrics.psnr(img[0], ref[0], convention="mayo")
    with pytest.raises(InputError, match="window applies to the ctdn convention"):
        metrics.ssim(img[0], ref[0], metrics.SOFT_TISSUE, convention="ldct-benchmark")


# -- the command line ------------------------------------------------------------------------------
def test_cli_writes_the_report(res, cache, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["--task", "--quick", "--model", "edge", "--out", str(out), "--cache", str(cache)]
    assert quality.main(args) == 0
    md = (out / "task-edge.md").read_text()
    assert "ctdn's convention" in md and "## Detectability" in md and "non-commercial" in md
    data = json.loads((out / "task-edge.json").read_text())
    assert data["methods"] == ["input", "ndct", "nlmeans", "tv", "bm3d", "edge"]
    assert "_images" not in data
    pngs = {p.name for p in (out / "task-edge").glob("*.png")}
    assert {"nps.png", "nps-abs.png", "dprime.png", "lesions.png", "ttf-10.png", "panel-qa-50.png"} <= pngs
    assert any(n.startswith("panel-anatomical-") for n in pngs)
    for name in pngs:
        assert f"task-edge/{name}" in md
    printed = capsys.readouterr().out
    assert "NPS f_avg / NDCT's" in printed and "`edge`" in printed


def test_cli_ldct_benchmark_convention_is_stated(cache, tmp_path):
    out = tmp_path / "bench"
    args = ["--task", "--quick", "--baselines-only", "--out", str(out), "--cache", str(cache)]
    assert quality.main([*args, "--convention", "ldct-benchmark", "--name", "b"]) == 0
    md = (out / "task-b.md").read_text()
    assert "LDCT benchmark's convention" in md and "; ldct-benchmark convention)" in md
    assert "PSNR (dB, ldct-benchmark convention)" in md  # the headline table states it too
    assert json.loads((out / "task-b.json").read_text())["convention"] == "ldct-benchmark"


def test_ctdn_evaluate_task_writes_the_task_report_beside_its_own(res, cache, tmp_path, monkeypatch):
    from ctdn.train import evaluate

    monkeypatch.setattr(task_quality, "DEFAULT", task_quality.QUICK)  # the --quick sizes
    out = tmp_path / "ev"
    args = ["--model", "edge", "--out", str(out), "--size", "64", "--test-slices", "1", "--tune-slices", "1"]
    args += ["--baselines", "none", "--doses", "0.1,0.5", "--cache", str(cache), "--panels", "0", "--quiet"]
    assert evaluate.main([*args, "--task"]) == 0
    assert (out / "summary.md").is_file() and (out / "task-quality" / "nps.png").is_file()
    data = json.loads((out / "task-quality.json").read_text())
    assert data["methods"] == ["input", "ndct", "edge"] and list(data["doses"]) == ["0.1", "0.5"]


def test_cli_names_a_missing_model(tmp_path, capsys):
    args = ["--task", "--quick", "--model", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path)]
    assert quality.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0] and "nope.safetensors" in err[0]


# -- plots, panels and the demo's figures --------------------------------------------------------
def test_charts_and_full_resolution_panels(tmp_path):
    from PIL import Image

    from ctdn.viz import Chart, Series, Tile, charts, lesion_panel

    ch = [Chart("a", "x", "y", [Series("one", [0, 1, 2], [1, math.nan, 3]), Series("two", [0, 2], [2, 1])])]
    p = charts(ch + [Chart("empty", "x", "y")], tmp_path / "c.png")
    assert Image.open(p).size[0] > 2 * 460
    img = np.zeros((70, 90), np.float32)
    tiles = [[Tile(img, "a", marks=[(35, 45, 10)]), Tile(img, "b")], [Tile(img - 5, "d", 0, 80, signed=True)]]
    p = lesion_panel(tiles, tmp_path / "p.png", title="t", scales=[(-40, 40, "HU")])
    w, h = Image.open(p).size
    assert w >= 2 * 90 and h >= 2 * 70  # full resolution: nothing resampled down
    arr = np.asarray(Image.open(p).convert("RGB"))
    assert (arr == (255, 210, 0)).all(axis=-1).any()  # the lesion is circled


def test_demo_quality_reports_contrast_and_texture(tmp_path, capsys):
    from ctdn import phantoms
    from ctdn.quality_demo import demo_panel, demo_quality

    ph = phantoms.generate("abdomen", seed=0, size=256)
    rng = np.random.default_rng(5)
    clean = ph.hu.astype(np.float32)
    noisy = clean + ndimage.gaussian_filter(rng.normal(0, 60.0, clean.shape), 0.7).astype(np.float32)
    denoised = ndimage.gaussian_filter(noisy, 2.0)
    q = demo_quality(noisy, denoised, clean, ph, file=sys.stdout)
    assert q["f_avg_ratio"] < 0.8 and q["noise_std_hu"]["denoised"] < q["noise_std_hu"]["input"]
    assert q["lesions"] == len(ph.lesions) > 0
    assert q["lesion_kept"]["denoised"] < q["lesion_kept"]["input"]
    out = capsys.readouterr().out
    assert "lesion contrast kept" in out and "f_avg ratio" in out
    from PIL import Image

    p = demo_panel(noisy, denoised, clean, ph, tmp_path / "demo.png", labels=("LDCT 10 %", "blur"))
    assert Image.open(p).size[0] >= 3 * 256
    p = demo_panel(noisy, denoised, clean, ph, tmp_path / "crop.png", crop=96)
    assert Image.open(p).size[0] < 3 * 256
    with pytest.raises(InputError, match="shape"):
        demo_quality(noisy[:10], denoised, clean, ph, echo=False)
