"""Datasets: .npy layout, Mayo/TCIA layout, synthetic pairs, cache, patient splits."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch
from dicom_factory import make_ct_series

from ctdn.datasets import (
    MayoDataset,
    NpyDataset,
    PairDataset,
    SyntheticDataset,
    build_cache,
    split_by_patient,
)
from ctdn.errors import CacheError, InputError, InputTypeError

# 64x64 phantoms (5.6 mm pixels) with 64 views x 96 channels: the fan covers a radius of
# 595 * sin(96 * 10.5 / 1085.6 / 2) = 266 mm, more than the 360 mm field of view's half-diagonal.
TINY = dict(views=64, detectors=96, det_spacing_mm=10.5)
KEYS = {"ldct", "ndct", "dose", "patient", "slice"}


def _syn(**kw):
    args = dict(n_patients=3, slices_per_patient=2, doses=(0.1, 0.5), size=64, geometry=TINY)
    args.update(kw)
    return SyntheticDataset(**args)


def _body_std(diff, hu):
    return float(diff[hu > -500].std())


# -- splits -------------------------------------------------------------------------------------
def test_split_by_patient_is_a_deterministic_partition():
    ids = [f"P{i:02d}" for i in range(17)]
    a = split_by_patient(ids, seed=1)
    assert set(a) == {"train", "val", "test"}
    assert a == split_by_patient(list(reversed(ids)) + ids[:3], seed=1)  # order and duplicates
    assert sorted(a["train"] + a["val"] + a["test"]) == ids
    assert all(a[k] for k in a)
    assert len(a["train"]) > len(a["val"]) and len(a["train"]) > len(a["test"])
    assert a != split_by_patient(ids, seed=2)


@pytest.mark.parametrize(
    "fractions", [(0.8, 0.1, 0.1), (0.02, 0.02, 0.96), (0.34, 0.33, 0.33), (0.1, 0.8, 0.1)]
)
def test_split_sizes_for_every_patient_count(fractions):
    for n in range(3, 41):
        ids = [f"id{k}" for k in range(n)]
        parts = split_by_patient(ids, fractions, seed=n)
        sizes = [len(parts[k]) for k in ("train", "val", "test")]
        assert sum(sizes) == n and min(sizes) >= 1, (n, sizes)
        assert sorted(sum(parts.values(), [])) == sorted(ids)
        if n >= 20:  # close to the fractions once rounding to >= 1 no longer dominates
            assert np.allclose(np.array(sizes) / n, fractions, atol=0.08), (n, sizes)


@pytest.mark.parametrize(
    "ids, fr, seed",
    [
        (["a", "b"], (0.8, 0.1, 0.1), 0),
        (["a", "a", "b"], (0.8, 0.1, 0.1), 0),
        (list("abcd"), (0.5, 0.5, 0.1), 0),
        (list("abcd"), (1.0, 0.0, 0.0), 0),
        (list("abcd"), (0.8, 0.2), 0),
        (list("abcd"), "x", 0),
        (list("abcd"), (0.8, 0.1, float("nan")), 0),
        (list("abcd"), (0.8, 0.1, 0.1), -1),
        ("abcd", (0.8, 0.1, 0.1), 0),
    ],
)
def test_split_errors(ids, fr, seed):
    with pytest.raises(InputError):
        split_by_patient(ids, fr, seed=seed)


# -- .npy layout --------------------------------------------------------------------------------
def _npy_patient(folder, n=3, form="stack", doses=(10, 25), seed=0):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    nd = rng.normal(0, 100, (n, 16, 12)).astype(np.float32)
    series = {"NDCT_hu": nd, **{f"LDCT_{d}_hu": nd + d for d in doses}}
    for name, arr in series.items():
        if form == "stack":
            np.save(folder / f"{name}.npy", arr)
        elif form == "slice":
            np.save(folder / f"{name}.npy", arr[0])
        else:
            (folder / name).mkdir()
            for i, sl in enumerate(arr):
                np.save(folder / name / f"{i:04d}.npy", sl)
    return nd[:1] if form == "slice" else nd


@pytest.mark.parametrize("form", ["stack", "slice", "folder"])
def test_npy_dataset_forms(tmp_path, form):
    expected = {p: _npy_patient(tmp_path / p, form=form, seed=k) for k, p in enumerate(["P2", "P1"])}
    ds = NpyDataset(tmp_path)
    n = 1 if form == "slice" else 3
    assert len(ds) == 2 * n * 2 and ds.patients == ["P1", "P2"]
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == KEYS and item["dose"] in (0.1, 0.25)
        assert ds.patient_of(i) == item["patient"]
        nd = expected[item["patient"]]
        np.testing.assert_array_equal(item["ndct"], nd[item["slice"]])
        np.testing.assert_allclose(item["ldct"], nd[item["slice"]] + round(item["dose"] * 100), rtol=1e-6)
        assert item["ldct"].dtype == np.float32 and item["ldct"].shape == (16, 12)
        seen.add((item["patient"], item["slice"], item["dose"]))
    assert len(seen) == len(ds)
    assert [ds[i]["patient"] for i in range(len(ds))] == sorted(ds[i]["patient"] for i in range(len(ds)))


def test_npy_stacks_are_memory_mapped(tmp_path):
    _npy_patient(tmp_path / "P")
    ds = NpyDataset(tmp_path / "P")
    ldct, ndct = ds._series[("P", 0.1)]
    assert isinstance(ndct.stack, np.memmap) and isinstance(ldct.stack, np.memmap)


def test_npy_single_patient_in_root_doses_and_dataloader(tmp_path):
    nd = _npy_patient(tmp_path / "only", doses=(10, 25, 70))
    ds = NpyDataset(tmp_path / "only")  # 0.5 is missing: only the three present doses
    assert ds.patients == ["only"] and len(ds) == 3 * 3
    assert sorted({ds[i]["dose"] for i in range(len(ds))}) == [0.1, 0.25, 0.7]
    assert len(NpyDataset(tmp_path / "only", doses=(0.7,))) == 3
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False)))
    assert batch["ldct"].shape == (4, 16, 12) and batch["ldct"].dtype == torch.float32
    assert batch["patient"] == ["only"] * 4 and batch["slice"].tolist() == [0, 0, 0, 1]
    torch.testing.assert_close(batch["ndct"][3], torch.from_numpy(nd[1]))
    assert torch.allclose(batch["dose"].double(), torch.tensor([0.1, 0.25, 0.7, 0.1], dtype=torch.float64))


def test_npy_shape_mismatch_names_files(tmp_path):
    _npy_patient(tmp_path / "only")
    np.save(tmp_path / "only" / "LDCT_10_hu.npy", np.zeros((2, 16, 12), np.float32))
    with pytest.raises(InputError, match=r"LDCT_10_hu\.npy.*\(2, 16, 12\).*NDCT_hu\.npy.*\(3, 16, 12\)"):
        NpyDataset(tmp_path / "only")


@pytest.mark.parametrize("form", ["stack", "folder"])
def test_npy_non_finite_names_file_and_slice(tmp_path, form):
    bad = tmp_path / "nan"
    nd = _npy_patient(bad, form=form)
    arr = nd + 25
    arr[1, 2, 3] = np.nan
    if form == "stack":
        np.save(bad / "LDCT_25_hu.npy", arr)
    else:
        np.save(bad / "LDCT_25_hu" / "0001.npy", arr[1])
    ds = NpyDataset(bad)
    for i in range(len(ds)):
        p, s, d = ds._items[i]
        if (s, d) == (1, 0.25):
            with pytest.raises(InputError, match=r"LDCT_25_hu.*slice 1.*non-finite"):
                ds[i]
        else:
            assert np.isfinite(ds[i]["ldct"]).all()


def test_npy_missing_things(tmp_path):
    with pytest.raises(InputError, match="no NDCT_hu"):
        NpyDataset(tmp_path)
    (tmp_path / "P").mkdir()
    np.save(tmp_path / "P" / "NDCT_hu.npy", np.zeros((2, 8, 8), np.float32))
    with pytest.raises(InputError, match="LDCT_10_hu"):
        NpyDataset(tmp_path)
    np.save(tmp_path / "P" / "LDCT_10_hu.npy", np.zeros((2, 8, 8), complex))
    with pytest.raises(InputError, match="real-valued"):
        NpyDataset(tmp_path)


# -- base ---------------------------------------------------------------------------------------
def test_pair_dataset_helpers(tmp_path):
    for p in ("A", "B", "C"):
        _npy_patient(tmp_path / p, n=2)
    ds = NpyDataset(tmp_path)
    assert isinstance(ds, PairDataset)
    idx = ds.indices_for(["A", "C"])
    assert idx == ds.indices_for(["C", "A"]) and len(idx) == 8
    assert {ds.patient_of(i) for i in idx} == {"A", "C"}
    assert ds.indices_for("B") == ds.indices_for(["B"])
    sub = ds.subset(["B"])
    assert len(sub) == 4 and {sub[k]["patient"] for k in range(len(sub))} == {"B"}
    assert ds[-1]["patient"] == ds[len(ds) - 1]["patient"] == "C"
    assert ds[np.int64(0)]["patient"] == "A"
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(InputError, match="Z"):
        ds.indices_for(["A", "Z"])
    split = split_by_patient(ds)
    parts = [ds.indices_for(split[k]) for k in ("train", "val", "test")]
    assert sorted(sum(parts, [])) == list(range(len(ds)))


# -- Mayo layout --------------------------------------------------------------------------------
# Full-dose slices at z = 0..4 mm. The low-dose series lacks z = 0 and is offset by 0.1 mm (within
# the quarter-spacing tolerance); L002's also has an extra slice at z = 7.5 that has no partner.
FULL_Z = [0.0, 1.0, 2.0, 3.0, 4.0]
LOW_Z = {"L001": [1.1, 2.1, 3.1, 4.1], "L002": [7.5, 1.1, 2.1, 3.1, 4.1]}


def _mayo(root):
    layouts = {
        "L001": ("full_1mm", "quarter_1mm"),
        "L002": (
            "08-24-2018-NA-NA-1/1.000000-Full Dose Images-2",
            "08-24-2018-NA-NA-1/1.000000-Low Dose Images-3",
        ),
    }
    expected = {}
    for k, (patient, (full, low)) in enumerate(layouts.items()):
        nd = make_ct_series(
            root / patient / full, rows=16, cols=16, spacing=1.0, positions=FULL_Z, seed=2 * k
        )
        ld = make_ct_series(
            root / patient / low, rows=16, cols=16, spacing=1.0, positions=LOW_Z[patient], seed=2 * k + 1
        )
        order = np.argsort(LOW_Z[patient])
        ld_by_z = {LOW_Z[patient][j]: ld[r] for r, j in enumerate(order)}
        # pair n: full slice z = n + 1, low slice z = n + 1.1
        expected[patient] = [(nd[n + 1], ld_by_z[round(n + 1.1, 1)]) for n in range(4)]
    # Another thickness for L001 (ignored for 1 mm) and raw projections for L002 (always ignored).
    make_ct_series(root / "L001" / "quarter_3mm", n=2, rows=16, cols=16, spacing=3.0)
    make_ct_series(root / "L001" / "full_3mm", n=3, rows=16, cols=16, spacing=3.0)
    make_ct_series(root / "L002" / "08-24-2018-NA-NA-1" / "Full Dose Projections", n=2, rows=16, cols=16)
    (root / "L002" / "LICENSE").write_text("not DICOM")
    return expected


def test_mayo_pairs_slices_by_position(tmp_path):
    expected = _mayo(tmp_path)
    with pytest.warns(UserWarning) as record:
        ds = MayoDataset(tmp_path)
    messages = " | ".join(str(w.message) for w in record)
    assert "L001: dropped 1 slice" in messages and "L002: dropped 2 slice" in messages
    assert ds.patients == ["L001", "L002"]
    assert len(ds) == 8 and len(ds.indices_for("L002")) == 4
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == KEYS and item["dose"] == 0.25
        assert item["ldct"].dtype == np.float32 and item["ldct"].shape == (16, 16)
        nd, ld = expected[item["patient"]][item["slice"]]
        np.testing.assert_allclose(item["ndct"], nd, atol=1e-3)
        np.testing.assert_allclose(item["ldct"], ld, atol=1e-3)
        low, full = ds.files_of(i)
        assert ("quarter" in str(low) or "Low Dose" in str(low)) and "Projections" not in str(full)


def test_mayo_thickness_patients_and_dose_mapping(tmp_path):
    _mayo(tmp_path)
    with pytest.warns(UserWarning, match="L001: dropped 1 slice"):
        thick = MayoDataset(tmp_path, thickness="3mm", patients=["L001"], dose_fraction={"L001": 0.1})
    assert thick.patients == ["L001"] and len(thick) == 2  # full_3mm has 3 slices, quarter_3mm 2
    assert "3mm" in str(thick.files_of(0)[0]) and thick[0]["dose"] == 0.1
    with pytest.raises(InputError, match="L002.*3 mm"):  # L002 only has 1 mm series
        MayoDataset(tmp_path, thickness=3, patients="L002")
    with pytest.raises(InputError, match="L002"):
        MayoDataset(tmp_path, dose_fraction={"L001": 0.25})
    with pytest.raises(InputError, match="L404"):
        MayoDataset(tmp_path, patients=["L404"])
    with pytest.raises(InputError, match="thickness"):
        MayoDataset(tmp_path, thickness="thin")


def test_mayo_fd_qd_names_header_thickness_and_extensionless_files(tmp_path):
    p = tmp_path / "C001"
    make_ct_series(p / "FD" / "a", n=3, rows=8, cols=8, spacing=1.0, seed=1)
    make_ct_series(p / "FD" / "b", n=3, rows=8, cols=8, spacing=3.0, seed=2)
    make_ct_series(p / "QD_series", n=3, rows=8, cols=8, spacing=1.0, seed=3)
    for k, f in enumerate(sorted((p / "QD_series").iterdir())):
        f.rename(f.with_name(f"IM{k:04d}"))  # no extension, like many exports
    ds = MayoDataset(tmp_path)  # two FD series: the 1 mm one is chosen by SliceThickness
    assert len(ds) == 3
    assert all("FD/a" in str(ds.files_of(i)[1]) for i in range(3))
    assert all(ds.files_of(i)[0].suffix == "" for i in range(3))


def test_mayo_missing_series_and_no_overlap(tmp_path):
    make_ct_series(tmp_path / "L009" / "full_1mm", n=3, rows=16, cols=16)
    make_ct_series(tmp_path / "L009" / "other", n=3, rows=16, cols=16)
    with pytest.raises(InputError, match=r"L009.*low-dose.*full_1mm.*other"):
        MayoDataset(tmp_path)
    make_ct_series(tmp_path / "L009" / "quarter_1mm", n=3, rows=16, cols=16, positions=[50.0, 52.5, 55.0])
    with pytest.raises(InputError, match="L009.*partner"):
        MayoDataset(tmp_path)
    shutil.rmtree(tmp_path / "L009")
    with pytest.raises(InputError, match="no patient folders"):
        MayoDataset(tmp_path)


# -- synthetic ----------------------------------------------------------------------------------
def test_synthetic_items_and_determinism():
    ds = _syn()
    assert len(ds) == 3 * 2 * 2
    assert ds.patients == ["syn0000-abdomen", "syn0001-thorax", "syn0002-head"]
    for i in (0, 3, 11):
        item = ds[i]
        assert set(item) == KEYS
        for k in ("ldct", "ndct"):
            assert item[k].shape == (64, 64) and item[k].dtype == np.float32 and np.isfinite(item[k]).all()
        p, s, d = ds.locate(i)
        assert item["patient"] == ds.patient_id(p) and item["slice"] == s and item["dose"] == d
    assert ds[3]["dose"] == 0.5 and ds[3]["slice"] == 1 and ds[3]["patient"] == "syn0000-abdomen"
    item = ds[3]
    again = _syn()[3]
    np.testing.assert_array_equal(item["ldct"], again["ldct"])
    np.testing.assert_array_equal(item["ndct"], again["ndct"])
    other = _syn(seed=1)[3]
    assert np.abs(other["ldct"] - item["ldct"]).mean() > 1.0
    # An item does not depend on which other doses the dataset has.
    alone = _syn(doses=(0.5,))[1]
    assert alone["dose"] == 0.5 and alone["slice"] == 1
    np.testing.assert_array_equal(alone["ldct"], item["ldct"])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["ldct"].shape == (3, 64, 64) and len(batch["patient"]) == 3


def test_synthetic_noise_levels_and_targets():
    clean = _syn(target="noiseless")
    ph = _syn(target="phantom")
    nd = _syn(target="ndct")
    for i_low, i_high in ((0, 1), (6, 7), (10, 11)):  # one slice at dose 0.1 and 0.5, per kind
        phantom = ph[i_low]["ndct"]
        p, s, _ = ph.locate(i_low)
        np.testing.assert_array_equal(phantom, ph.phantom(p, s).hu)
        ref = clean[i_low]["ndct"]
        np.testing.assert_array_equal(ref, clean[i_high]["ndct"])  # one target per slice
        np.testing.assert_array_equal(nd[i_low]["ndct"], nd[i_high]["ndct"])
        low = _body_std(clean[i_low]["ldct"] - ref, phantom)
        high = _body_std(clean[i_high]["ldct"] - ref, phantom)
        full = _body_std(nd[i_low]["ndct"] - ref, phantom)
        assert low > high > full > 0
        # the noiseless target has the LDCT's blur: much closer to it than the sharp phantom
        assert np.abs(clean[i_high]["ldct"] - ref).mean() < np.abs(clean[i_high]["ldct"] - phantom).mean()
        np.testing.assert_array_equal(clean[i_low]["ldct"], nd[i_low]["ldct"])  # target leaves LDCT alone


def test_synthetic_uncached_simulates_only_the_needed_dose(monkeypatch):
    ds = _syn()
    calls = []
    original = ds._simulate

    def spy(p, s, doses):
        calls.append(list(doses))
        return original(p, s, doses)

    monkeypatch.setattr(ds, "_simulate", spy)
    ds[1]
    assert calls == [[0.5]]


def test_cache_build_resume_and_equality(tmp_path):
    ds = _syn(cache_dir=tmp_path / "c")
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    for key in (
        "n_patients",
        "slices_per_patient",
        "kinds",
        "doses",
        "size",
        "seed",
        "target",
        "geometry",
        "vary",
    ):
        assert key in meta
    assert meta["geometry"]["views"] == 64 and "ctdn_version" in meta and "default_i0" in meta
    stats = build_cache(ds, progress=False)
    assert stats["simulated"] == 6 and stats["reused"] == 0 and stats["seconds"] >= 0
    files = sorted((tmp_path / "c").glob("p*.npz"))
    assert [f.name for f in files][:3] == ["p0000_s0000.npz", "p0000_s0001.npz", "p0001_s0000.npz"]
    assert len(files) == 6 and not list((tmp_path / "c").glob(".*"))  # no temporary files left
    again = build_cache(_syn(cache_dir=tmp_path / "c"), progress=False)
    assert again["simulated"] == 0 and again["reused"] == 6
    plain = _syn()
    for i in range(len(ds)):
        a, b = ds[i], plain[i]
        assert {k: a[k] for k in ("patient", "slice", "dose")} == {
            k: b[k] for k in ("patient", "slice", "dose")
        }
        assert np.abs(a["ldct"] - b["ldct"]).max() <= 0.5 + 1e-3
        assert np.abs(a["ndct"] - b["ndct"]).max() <= 0.5 + 1e-3
        np.testing.assert_array_equal(a["ldct"], np.rint(a["ldct"]))  # int16 HU


def test_cache_is_read_not_simulated_after_build(tmp_path, monkeypatch):
    ds = _syn(cache_dir=tmp_path / "c", n_patients=1)
    first = ds[1]  # the first access fills the whole slice
    assert (tmp_path / "c" / "p0000_s0000.npz").is_file()

    def fail(*args, **kwargs):
        raise AssertionError("simulated although cached")

    monkeypatch.setattr(ds, "_simulate", fail)
    np.testing.assert_array_equal(ds[1]["ldct"], first["ldct"])
    ds[0]  # the other dose of that slice comes from the same file
    with pytest.raises(AssertionError, match="simulated"):
        ds[2]  # the next slice is not cached yet


def test_cache_resumes_an_interrupted_build_with_workers(tmp_path):
    ds = _syn(cache_dir=tmp_path / "c", n_patients=2, slices_per_patient=2)
    ds[0]  # one slice already there
    stats = build_cache(ds, progress=False, workers=2)
    assert stats == {"simulated": 3, "reused": 1, "seconds": stats["seconds"]}
    plain = _syn(n_patients=2, slices_per_patient=2)
    for i in range(len(ds)):
        assert np.abs(ds[i]["ldct"] - plain[i]["ldct"]).max() <= 0.5 + 1e-3


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_cache_corrupt_file_is_regenerated(tmp_path, damage):
    ds = _syn(cache_dir=tmp_path / "c")
    build_cache(ds, progress=False)
    victim = tmp_path / "c" / "p0001_s0000.npz"
    i = ds.indices_for([ds.patients[1]])[0]
    good = ds[i]["ldct"]
    raw = bytearray(victim.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 3] ^= 0xFF  # inside the first arrays' data: the zip CRC catches it
    victim.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="corrupt"):
        again = ds[i]["ldct"]
    np.testing.assert_array_equal(again, good)
    assert build_cache(ds, progress=False)["simulated"] == 0  # the file was rewritten


def test_cache_with_other_settings_is_refused(tmp_path):
    _syn(cache_dir=tmp_path / "c")
    for kw, key in (
        (dict(doses=(0.25,)), "doses"),
        (dict(seed=3), "seed"),
        (dict(geometry=dict(TINY, filter="ramp")), "geometry"),
        (dict(vary=True), "vary"),
        (dict(target="phantom"), "target"),
    ):
        with pytest.raises(CacheError, match=key):
            _syn(cache_dir=tmp_path / "c", **kw)
    _syn(cache_dir=tmp_path / "c", device="cpu")  # the device is not a pixel setting
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    meta["phantom_version"] = -1  # a cache made with other phantoms is refused too
    (tmp_path / "c" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CacheError, match="phantom_version"):
        _syn(cache_dir=tmp_path / "c")
    (tmp_path / "c" / "meta.json").write_text("{not json")
    with pytest.raises(CacheError, match="meta.json"):
        _syn(cache_dir=tmp_path / "c")


def test_vary_is_deterministic_and_varies():
    args = dict(
        vary=True, n_patients=1, slices_per_patient=10, kinds=("abdomen",), doses=(0.25,), target="noiseless"
    )
    a, b = _syn(**args), _syn(**args)
    draws = [a.scanner(0, s) for s in range(10)]
    assert draws == [b.scanner(0, s) for s in range(10)]
    assert len({(d["geometry"].kind, d["geometry"].filter) for d in draws}) > 2
    assert len({d["geometry"].kind for d in draws}) == 2
    for d in draws:
        assert 0.7 * 9.4e5 * 0.99 <= d["i0"] <= 1.4 * 9.4e5 * 1.01 and 0 <= d["sigma_e"] <= 10
        assert 0.8 * 0.25 <= d["doses"][0.25] <= 1.25 * 0.25
    assert len({d["doses"][0.25] for d in draws}) == 10  # the simulated dose is jittered...
    assert {a[i]["dose"] for i in range(len(a))} == {0.25}  # ...the reported one is nominal
    i = random.Random(0).randrange(len(a))
    np.testing.assert_array_equal(a[i]["ldct"], b[i]["ldct"])
    # Noise level per slice (LDCT minus its noise-free reconstruction) spreads more with vary.
    fixed = _syn(**dict(args, vary=False))

    def spread(ds):
        stds = [_body_std(ds[s]["ldct"] - ds[s]["ndct"], ds.phantom(0, s).hu) for s in range(10)]
        return max(stds) / min(stds)

    assert spread(a) > 1.5 * spread(fixed)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(kinds=("pelvis",)), "pelvis"),
        (dict(kinds=()), "kind"),
        (dict(target="clean"), "target"),
        (dict(doses=(0,)), "dose"),
        (dict(doses=(0.5, 0.5)), "distinct"),
        (dict(n_patients=0), "n_patients"),
        (dict(slices_per_patient=1.5), "slices_per_patient"),
        (dict(seed=-1), "seed"),
        (dict(size=10), "size"),
        (dict(device="toaster"), "device"),
        (dict(geometry=dict(vews=3)), "unknown"),
    ],
)
def test_synthetic_errors(kw, match):
    with pytest.raises(InputError, match=match):
        _syn(**kw)


def test_synthetic_type_and_field_of_view_errors(tmp_path):
    with pytest.raises(InputTypeError, match="geometry"):
        _syn(geometry="fan")
    narrow = _syn(geometry=dict(views=32, detectors=32, det_spacing_mm=10.5))
    with pytest.raises(InputError, match="field of view"):
        narrow[0]
    with pytest.raises(InputError, match="cache_dir"):
        build_cache(_syn(), progress=False)
    with pytest.raises(InputError, match="workers"):
        build_cache(_syn(cache_dir=tmp_path), workers=-1)
