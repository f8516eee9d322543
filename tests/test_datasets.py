"""Datasets: .npy layout, Mayo/TCIA layout, synthetic pairs, cache, patient splits."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from dicom_factory import make_ct_series

from ctdn.datasets import MayoDataset, NpyDataset, SyntheticDataset, build_cache, split_by_patient
from ctdn.errors import CacheError, InputError

# 64x64 phantoms (5.6 mm pixels) with 64 views x 96 channels covering the 360 mm field of view.
TINY = dict(views=64, detectors=96, det_spacing_mm=10.5)


def _syn(**kw):
    args = dict(n_patients=3, slices_per_patient=2, doses=(0.1, 0.5), size=64, geometry=TINY)
    args.update(kw)
    return SyntheticDataset(**args)


# -- splits -------------------------------------------------------------------------------------
def test_split_by_patient_is_a_deterministic_partition():
    ids = [f"P{i:02d}" for i in range(17)]
    a = split_by_patient(ids, seed=1)
    assert a == split_by_patient(list(reversed(ids)), seed=1)
    assert sorted(a["train"] + a["val"] + a["test"]) == ids
    assert all(a[k] for k in ("train", "val", "test"))
    assert not set(a["train"]) & set(a["test"]) and not set(a["val"]) & set(a["test"])
    assert a != split_by_patient(ids, seed=2)
    assert len(split_by_patient(ids[:3])["train"]) == 1


@pytest.mark.parametrize(
    "ids, fr",
    [
        (["a", "b"], (0.8, 0.1, 0.1)),
        (list("abcd"), (0.5, 0.5, 0.1)),
        (list("abcd"), (1.0, 0.0, 0.0)),
        (list("abcd"), "x"),
    ],
)
def test_split_errors(ids, fr):
    with pytest.raises(InputError):
        split_by_patient(ids, fr)


# -- .npy layout --------------------------------------------------------------------------------
def _npy_patient(folder, n=3, form="stack", doses=(10, 25)):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    nd = rng.normal(0, 100, (n, 16, 16)).astype(np.float32)
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
    return nd


@pytest.mark.parametrize("form", ["stack", "slice", "folder"])
def test_npy_dataset_forms(tmp_path, form):
    nd = _npy_patient(tmp_path / "P1", form=form)
    _npy_patient(tmp_path / "P2", form=form)
    ds = NpyDataset(tmp_path)
    n = 1 if form == "slice" else 3
    assert len(ds) == 2 * n * 2 and ds.patients == ["P1", "P2"]
    item = ds[ds.indices_for(["P1"])[-1]]
    assert item["patient"] == "P1" and item["dose"] == 0.25
    np.testing.assert_allclose(item["ldct"], nd[item["slice"]] + 25)
    np.testing.assert_allclose(item["ndct"], nd[item["slice"]])
    assert item["ldct"].dtype == np.float32


def test_npy_single_patient_in_root_and_errors(tmp_path):
    _npy_patient(tmp_path / "only")
    assert NpyDataset(tmp_path / "only").patients == ["only"]
    np.save(tmp_path / "only" / "LDCT_10_hu.npy", np.zeros((2, 16, 16), np.float32))
    with pytest.raises(InputError, match="shape"):
        NpyDataset(tmp_path / "only")
    bad = tmp_path / "nan"
    _npy_patient(bad)
    arr = np.load(bad / "LDCT_25_hu.npy")
    arr[1, 2, 3] = np.nan
    np.save(bad / "LDCT_25_hu.npy", arr)
    ds = NpyDataset(bad)
    with pytest.raises(InputError, match="non-finite"):
        ds[[i for i, it in enumerate(ds._items) if it[1] == 1 and it[2] == 0.25][0]]


def test_npy_missing_everything(tmp_path):
    with pytest.raises(InputError, match="no NDCT_hu"):
        NpyDataset(tmp_path)


# -- Mayo layout --------------------------------------------------------------------------------
def _mayo(root):
    # AAPM names for L001, TCIA-style nested names for L002; one extra unpaired full-dose slice.
    layouts = {
        "L001": ("full_1mm", "quarter_1mm"),
        "L002": ("1.000-Full Dose Images-1", "1.000-Low Dose Images-2"),
    }
    expected = {}
    for patient, (full, low) in layouts.items():
        f = root / patient / full
        q = root / patient / "study" / low if patient == "L002" else root / patient / low
        f.mkdir(parents=True)
        q.mkdir(parents=True)
        nd = make_ct_series(f, n=5, rows=16, cols=16, spacing=1.0, shuffle=True)
        ld = make_ct_series(q, n=4, rows=16, cols=16, spacing=1.0, shuffle=True)
        expected[patient] = (nd, ld)
    (root / "L001" / "quarter_3mm").mkdir()  # another thickness: must be ignored for 1mm
    make_ct_series(root / "L001" / "quarter_3mm", n=2, rows=16, cols=16, spacing=3.0)
    return expected


def test_mayo_pairs_slices_by_position(tmp_path):
    expected = _mayo(tmp_path)
    with pytest.warns(UserWarning, match="without a partner"):
        ds = MayoDataset(tmp_path)
    assert ds.patients == ["L001", "L002"]
    assert len(ds) == 8  # 4 pairs each: the fifth full-dose slice has no partner
    for i in range(len(ds)):
        item = ds[i]
        nd, ld = expected[item["patient"]]
        assert item["dose"] == 0.25
        np.testing.assert_allclose(item["ndct"], nd[item["slice"]], atol=0.5)
        np.testing.assert_allclose(item["ldct"], ld[item["slice"]], atol=0.5)


def test_mayo_missing_series(tmp_path):
    (tmp_path / "L009" / "full_1mm").mkdir(parents=True)
    make_ct_series(tmp_path / "L009" / "full_1mm", n=3, rows=16, cols=16)
    with pytest.raises(InputError, match="L009.*low-dose"):
        MayoDataset(tmp_path)


# -- synthetic ----------------------------------------------------------------------------------
def test_synthetic_items_and_determinism():
    ds = _syn()
    assert len(ds) == 3 * 2 * 2 and len(ds.patients) == 3
    item = ds[3]
    assert set(item) == {"ldct", "ndct", "dose", "patient", "slice"}
    assert item["ldct"].shape == (64, 64) and item["ldct"].dtype == np.float32
    assert item["dose"] == 0.5 and item["slice"] == 1
    again = _syn()[3]
    np.testing.assert_array_equal(item["ldct"], again["ldct"])
    other = _syn(seed=1)[3]
    assert np.abs(other["ldct"] - item["ldct"]).mean() > 1.0


def test_synthetic_noise_levels_and_targets():
    clean = _syn(target="noiseless")
    ph = _syn(target="phantom")
    nd = _syn(target="ndct")
    i_low, i_high = 0, 1  # same slice at dose 0.1 and 0.5
    ref = clean[i_low]["ndct"]
    body = ph[i_low]["ndct"] > -500
    low = float((clean[i_low]["ldct"] - ref)[body].std())
    high = float((clean[i_high]["ldct"] - ref)[body].std())
    full = float((nd[i_low]["ndct"] - ref)[body].std())
    assert low > high > full > 0
    np.testing.assert_array_equal(clean[i_low]["ldct"], nd[i_low]["ldct"])  # target does not change LDCT


def test_cache_build_resume_and_equality(tmp_path):
    ds = _syn(cache_dir=tmp_path / "c")
    stats = build_cache(ds, progress=False)
    assert stats["simulated"] == 6 and stats["reused"] == 0
    assert (tmp_path / "c" / "meta.json").is_file() and len(list((tmp_path / "c").glob("p*.npz"))) == 6
    assert build_cache(_syn(cache_dir=tmp_path / "c"), progress=False)["simulated"] == 0
    plain = _syn()
    for i in range(len(ds)):
        assert np.abs(ds[i]["ldct"] - plain[i]["ldct"]).max() <= 0.5 + 1e-3
        assert np.abs(ds[i]["ndct"] - plain[i]["ndct"]).max() <= 0.5 + 1e-3


def test_cache_corrupt_file_is_regenerated_and_settings_are_checked(tmp_path):
    ds = _syn(cache_dir=tmp_path / "c")
    build_cache(ds, progress=False)
    victim = tmp_path / "c" / "p0001_s0000.npz"
    good = ds[ds.indices_for([ds.patients[1]])[0]]["ldct"]
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.warns(UserWarning, match="corrupt"):
        again = ds[ds.indices_for([ds.patients[1]])[0]]["ldct"]
    np.testing.assert_array_equal(again, good)
    with pytest.raises(CacheError, match="doses"):
        _syn(cache_dir=tmp_path / "c", doses=(0.25,))
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["size"] == 64


def test_vary_is_deterministic_and_varies():
    a, b = (
        _syn(vary=True, n_patients=4, slices_per_patient=3),
        _syn(vary=True, n_patients=4, slices_per_patient=3),
    )
    kinds = set()
    for p in range(4):
        for s in range(3):
            sim, actual = a._settings(p, s)
            kinds.add((sim.geometry.kind, sim.geometry.filter))
            assert all(0.8 * d - 1e-9 <= v <= min(1.0, 1.25 * d) + 1e-9 for d, v in actual.items())
    assert len(kinds) > 1
    i = random.Random(0).randrange(len(a))
    np.testing.assert_array_equal(a[i]["ldct"], b[i]["ldct"])


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(kinds=("pelvis",)), "pelvis"),
        (dict(target="clean"), "target"),
        (dict(doses=(0,)), "dose"),
        (dict(n_patients=0), "n_patients"),
        (dict(size=10), "size"),
        (dict(geometry=dict(vews=3)), "unknown"),
    ],
)
def test_synthetic_errors(kw, match):
    with pytest.raises(InputError, match=match):
        _syn(**kw)
