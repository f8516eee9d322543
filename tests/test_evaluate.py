"""ctdn-evaluate: the study's evaluation report (tiny synthetic slices and a tiny model)."""

import csv
import json
import math

import numpy as np
import pytest
from ctdn.train import evaluate as ev
from ctdn.train import quality
from scipy import stats

from ctdn import metrics
from ctdn.errors import InputError
from ctdn.hu import TISSUES, tissue_classes
from ctdn.models import build, save_model

DOSES = (0.1, 0.5)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "t.safetensors"
    return save_model(build("tiny"), path, {"name": "t"})


@pytest.fixture(scope="module")
def report(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("eval")
    out, cache = root / "report", root / "cache"
    res = ev.evaluate(
        {"t": tiny_model},
        out,
        doses=DOSES,
        test_slices=2,
        tune_slices=1,
        size=64,
        baselines="nlmeans,tv",
        cache=cache,
    )
    return res, out, cache


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_file_is_written(report):
    res, out, _ = report
    want = ["per_slice.csv", "summary.csv", "summary.md", "results.json", "psnr_vs_dose.png", "index.html"]
    want += ["paired.csv"]  # the other rows against the (first) model, slice by slice
    want += [f"panels/dose-{d * 100:g}.png" for d in DOSES]
    for f in want:
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert set(want) == set(res["files"])
    html = (out / "index.html").read_text()
    assert 'src="psnr_vs_dose.png"' in html and 'src="panels/dose-10.png"' in html and "http" not in html
    md = (out / "summary.md").read_text()
    assert "| LDCT input |" in md and "| NL-means |" in md and "| TV |" in md and "| t |" in md
    saved = json.loads((out / "results.json").read_text())
    assert saved["methods"] == ["input", "nlmeans", "tv", "t"] and saved["doses"] == list(DOSES)
    from PIL import Image

    assert Image.open(out / "psnr_vs_dose.png").size == (900, 540)


def test_summary_mean_is_the_mean_of_the_per_slice_rows(report):
    _, out, _ = report
    rows = _csv(out / "per_slice.csv")
    summ = _csv(out / "summary.csv")
    assert len(rows) == 2 * len(DOSES) * 4
    for s in summ:
        if s["metric"] not in ("psnr", "ssim_soft", "rmse_hu_soft_tissue", "noise_std"):
            continue
        vals = [
            float(r[s["metric"]])
            for r in rows
            if r["method"] == s["method"] and float(r["dose"]) == float(s["dose"]) and r[s["metric"]]
        ]
        assert int(s["n"]) == len(vals) == 2
        assert float(s["mean"]) == pytest.approx(np.mean(vals), rel=1e-12)
        assert float(s["ci_lo"]) <= float(s["mean"]) <= float(s["ci_hi"])


def test_ci_is_student_t_and_zero_for_identical_slices():
    v = [1.0, 2.0, 4.0, 7.0]
    n, mean, lo, hi = ev.mean_ci(v)
    want = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert n == 4 and mean == pytest.approx(3.5)
    assert (lo, hi) == pytest.approx(want)
    assert ev.mean_ci([2.5] * 5) == (5, 2.5, 2.5, 2.5)
    n, mean, lo, hi = ev.mean_ci([3.0, float("nan")])  # NaN is not a slice value
    assert n == 1 and mean == 3.0 and math.isnan(lo) and math.isnan(hi)
    assert ev.mean_ci([])[0] == 0


def _test_slices(cache):
    return quality.synthetic_slices(
        quality.synthetic_set(quality.TEST_SEED, 2, cache=cache, tag="test", doses=DOSES, size=64)
    )


def test_input_row_and_tissue_rmse_match_independent_computations(report):
    res, out, cache = report
    slices = _test_slices(cache)  # read back from the same cache
    rows = _csv(out / "per_slice.csv")
    s = slices[0]
    ldct, ref = s["ldct"][0.1], s["target"]
    row = next(r for r in rows if r["method"] == "input" and float(r["dose"]) == 0.1 and r["id"] == s["id"])
    assert float(row["psnr"]) == pytest.approx(metrics.psnr(ldct, ref), rel=1e-12)
    assert float(row["psnr_soft"]) != pytest.approx(float(row["psnr"]), abs=0.5)
    assert float(row["psnr_soft"]) == pytest.approx(metrics.psnr(ldct, ref, (-160.0, 240.0)), rel=1e-12)
    # Per-tissue RMSE by hand: classes of the reference, both clipped to [-1000, 1000].
    cls = np.digitize(ref, [-950, -400, -30, 300])
    assert np.array_equal(cls, tissue_classes(ref))
    d = np.clip(ldct.astype(np.float64), -1000, 1000) - np.clip(ref.astype(np.float64), -1000, 1000)
    for k, name in TISSUES.items():
        m = cls == k
        got = row[f"rmse_hu_{name}"]
        if m.any():
            assert float(got) == pytest.approx(np.sqrt(np.mean(d[m] ** 2)), rel=1e-9)
        else:
            assert got == ""  # an absent class is empty, not zero
    # The lesion column is the phantom's contrast_kept, averaged over the slice's lesions.
    kept = s["phantom"].contrast_kept(ldct)
    assert float(row["lesion_contrast"]) == pytest.approx(np.mean(kept), rel=1e-9)


def test_rerun_is_deterministic_and_reads_the_baseline_cache(report, tiny_model, tmp_path):
    res, out, cache = report
    cached = sorted((cache / "evaluate-baselines").rglob("*.npy"))
    assert len(cached) == 2 * len(DOSES) * 2  # (slice, dose, nlmeans/tv)
    res2 = ev.evaluate(
        {"t": tiny_model},
        tmp_path / "r2",
        doses=DOSES,
        test_slices=2,
        tune_slices=1,
        size=64,
        baselines="nlmeans,tv",
        cache=cache,
        panels=0,
    )
    assert json.dumps(ev._jsonable(res2["summary"])) == json.dumps(ev._jsonable(res["summary"]))
    assert set(res2["seconds_per_slice"]) == {"t"}  # the baselines came from the cache
    assert not (tmp_path / "r2" / "panels").exists()


def test_cli_error_cases(tmp_path, tiny_model, capsys):
    out = str(tmp_path / "rep")
    cases = [
        (["--model", str(tmp_path / "missing.safetensors")], "missing.safetensors"),
        (["--model", f"a={tiny_model}", "--model", f"a={tiny_model}"], "two models are named 'a'"),
        (["--model", f"tv={tiny_model}"], "'tv' is taken"),
        (["--model", str(tiny_model), "--doses", "0.1,1.5"], "dose"),
        (["--model", str(tiny_model), "--doses", "0.1,abc"], "doses"),
        (["--model", str(tiny_model), "--baselines", "nlmeans,wiener"], "unknown baseline"),
        (["--model", str(tiny_model), "--data", "nifti:/x"], "data must be"),
        (["--model", f"a={tiny_model}", "--paired", "b"], "--paired 'b' is not one of the models"),
    ]
    for args, msg in cases:
        assert ev.main([*args, "--out", out, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ctdn-evaluate: error: ") and msg in err, (args, err)
    assert not (tmp_path / "rep").exists()
    with pytest.raises(SystemExit) as exc:
        ev.main(["--model", str(tiny_model)])  # --out is required
    assert exc.value.code == 2 and "ctdn-evaluate: error:" in capsys.readouterr().err


def test_bare_model_path_is_named_from_its_metadata(tiny_model, tmp_path):
    assert ev.parse_model_specs([str(tiny_model), "edge"]) == {"t": str(tiny_model), "edge": "edge"}
    with pytest.raises(InputError, match="two models are named 't'"):
        ev.parse_model_specs([str(tiny_model), f"t={tiny_model}"])


def _npy_dataset(root, n_patients=5, n_slices=2, size=32):
    rng = np.random.default_rng(0)
    for p in range(n_patients):
        d = root / f"pat{p}"
        d.mkdir(parents=True)
        ndct = np.full((n_slices, size, size), -1000.0, np.float32)
        ndct[:, 6:26, 6:26] = 40.0 + p
        ndct[:, 10:14, 10:14] = -100.0
        np.save(d / "NDCT_hu.npy", ndct)
        for pct in (10, 50):
            noise = rng.normal(0, 40 / np.sqrt(pct / 10), ndct.shape).astype(np.float32)
            np.save(d / f"LDCT_{pct}_hu.npy", ndct + noise)


def test_npy_data_scores_only_the_test_patients(tmp_path, tiny_model):
    from ctdn.datasets import split_by_patient

    _npy_dataset(tmp_path / "data")
    res = ev.evaluate(
        {"t": tiny_model},
        tmp_path / "rep",
        data=f"npy:{tmp_path / 'data'}",
        doses=DOSES,
        test_slices=0,
        tune_slices=1,
        baselines="tv",
        seed=3,
    )
    parts = split_by_patient([f"pat{p}" for p in range(5)], (0.8, 0.1, 0.1), seed=3)
    rows = _csv(tmp_path / "rep" / "per_slice.csv")
    assert {r["patient"] for r in rows} == set(parts["test"]) == set(res["data"]["split"]["test"])
    assert len(rows) == len(parts["test"]) * 2 * len(DOSES) * 3
    assert all(s.split("/")[0] in parts["val"] for s in res["tune_slices"])
    # No phantoms: the phantom-only columns are absent, and the report says so.
    assert not {"noise_std", "uniform_dhu", "lesion_contrast"} & set(rows[0])
    assert res["absent_metrics"] == ["noise_std", "uniform_dhu", "lesion_contrast"]
    assert "no phantom" in (tmp_path / "rep" / "summary.md").read_text()
    # The input row is metrics.psnr of the file's own pixels.
    r = next(r for r in rows if r["method"] == "input" and float(r["dose"]) == 0.5)
    p, s = r["patient"], int(r["slice"])
    ld = np.load(tmp_path / "data" / p / "LDCT_50_hu.npy")[s]
    nd = np.load(tmp_path / "data" / p / "NDCT_hu.npy")[s]
    assert float(r["psnr"]) == pytest.approx(metrics.psnr(ld, nd), rel=1e-12)


def test_npy_errors(tmp_path, tiny_model):
    _npy_dataset(tmp_path / "few", n_patients=2)
    with pytest.raises(InputError, match="at least 3 patients"):
        ev.evaluate(
            {"t": tiny_model}, tmp_path / "r", data=f"npy:{tmp_path / 'few'}", doses=DOSES, baselines="none"
        )
    _npy_dataset(tmp_path / "ok")
    with pytest.raises(InputError, match="dose 0.25"):
        ev.evaluate(
            {"t": tiny_model},
            tmp_path / "r",
            data=f"npy:{tmp_path / 'ok'}",
            doses=(0.1, 0.25),
            baselines="none",
        )


def test_bm3d_row_on_one_small_slice(tmp_path):
    pytest.importorskip("bm3d")
    res = ev.evaluate(
        {},
        tmp_path / "rep",
        doses=(0.25,),
        test_slices=1,
        tune_slices=1,
        size=64,
        baselines="bm3d",
        cache=tmp_path / "cache",
        panels=0,
    )
    by = {(r["method"], r["metric"]): r["mean"] for r in res["summary"]}
    assert by[("bm3d", "rmse_hu")] < by[("input", "rmse_hu")]
    assert res["methods"] == ["input", "bm3d"] and res["tuned"]["0.25"]["noise_std_hu"] > 0


def test_paired_differences_are_per_slice_method_minus_reference(report):
    res, out, _ = report
    rows = _csv(out / "per_slice.csv")
    paired = _csv(out / "paired.csv")
    assert {r["vs"] for r in paired} == {"t"} and {r["method"] for r in paired} == {"input", "nlmeans", "tv"}
    for d in DOSES:
        ref = {r["id"]: float(r["psnr"]) for r in rows if float(r["dose"]) == d and r["method"] == "t"}
        tv = [r for r in rows if float(r["dose"]) == d and r["method"] == "tv"]
        diffs = [float(r["psnr"]) - ref[r["id"]] for r in tv]
        got = next(
            r for r in paired if float(r["dose"]) == d and r["method"] == "tv" and r["metric"] == "psnr"
        )
        n, mean, lo, hi = ev.mean_ci(diffs)
        assert int(got["n"]) == n == 2
        assert float(got["mean"]) == pytest.approx(mean, abs=1e-9)
        assert float(got["ci_lo"]) == pytest.approx(lo, abs=1e-9)
    assert "paired differences, method - t" in (out / "summary.md").read_text()


def test_paired_differences_remove_the_slice_spread():
    rows = []
    for i, level in enumerate((30.0, 40.0, 50.0, 60.0)):  # very different slices ...
        rows.append({"dose": 0.1, "method": "a", "id": str(i), "psnr": level})
        rows.append({"dose": 0.1, "method": "b", "id": str(i), "psnr": level + 1.0 + 0.01 * i})
    (p,) = ev.paired_differences(rows, [0.1], ["a", "b"], "a", ["psnr"])
    assert ev.paired_differences(rows, [0.1], ["a", "b"], "b", ["psnr"])[0]["mean"] == pytest.approx(-1.015)
    assert p["method"] == "b" and p["vs"] == "a" and p["n"] == 4
    assert p["mean"] == pytest.approx(1.015) and 0.9 < p["ci_lo"] < 1.015 < p["ci_hi"] < 1.1  # ... same gain
    _, _, lo, hi = ev.mean_ci([r["psnr"] for r in rows if r["method"] == "b"])
    assert hi - lo > 20  # unpaired, the same data says nothing
