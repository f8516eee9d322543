"""Fidelity training data: inserted lesions and their masks, texture, wide bodies, metal, the dataset."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from ctdn.augment import (
    FIDELITY_DOSES,
    LESION_FIELDS,
    MAX_WIDTH_MM,
    ORGANS,
    SITES,
    TEXTURE,
    FidelityConfig,
    from_table,
    generate_fidelity,
)
from ctdn.augment.fidelity import PURPOSES
from ctdn.augment.texture import organ_std
from ctdn.datasets import SyntheticDataset, build_cache
from ctdn.errors import CacheError, InputError, InputTypeError
from ctdn.phantoms import generate
from ctdn.sim import check_dose

SIZE = 256
SEEDS = range(6)
TINY = dict(views=64, detectors=96, det_spacing_mm=10.5)  # covers a 266 mm radius: the widest bodies
NODULE_ORGANS = {"solid_nodule": {"lung"}, "ground_glass": {"lung", "lung_vessel"}}


@functools.cache
def _slice(kind: str, seed: int, **cfg):
    return generate_fidelity(kind, seed=seed, size=SIZE, config=FidelityConfig(**cfg))


def _slices():
    return [_slice(kind, s) for kind in ("abdomen", "thorax", "head") for s in SEEDS]


def _allowed(ph, les) -> set[str]:
    if les.kind in NODULE_ORGANS:
        return NODULE_ORGANS[les.kind]
    groups = [set(organs) for _w, organs in SITES[ph.region].values() if les.organ in organs]
    assert groups, f"a {les.organ} lesion in a {ph.region} slice"
    return groups[0]


def _organ_names(ph, mask) -> set[str]:
    return {ORGANS[k] for k in np.unique(ph.organs[mask])}


# -- lesions ------------------------------------------------------------------------------------
def test_lesions_lie_inside_their_tissue_and_the_body():
    for ph in _slices():
        assert 1 <= len(ph.inserted) == int(ph.lesion_ids.max())
        body = ph.organs != ORGANS.index("air")
        near_uniform = ndimage.binary_dilation(ph.uniform, iterations=2)
        for i, les in enumerate(ph.inserted):
            support = ph.lesion_ids == i + 1
            assert support.any() and body[support].all()
            assert _organ_names(ph, support) <= _allowed(ph, les), (ph.kind, ph.seed, les)
            assert not (support & near_uniform).any()
            r, c = (int(round(v)) for v in les.center)
            assert support[r, c]  # the centre is inside its own support


def test_lesion_sizes_contrasts_shapes_and_edges_cover_their_ranges():
    lesions = [les for ph in _slices() for les in ph.inserted]
    assert len(lesions) > 60
    for les in lesions:
        assert 1.0 - 1e-9 <= les.radius_mm <= 7.5 + 1e-9  # 2-15 mm across
        c = les.contrast_hu
        if les.kind == "lesion":
            assert 5.0 <= abs(c) <= 40.0
        elif les.kind == "solid_nodule":
            assert 600.0 <= c <= 900.0
        else:
            assert 100.0 <= c <= 300.0
        assert les.blur_mm == 0 or 0.2 * les.radius_mm - 1e-9 <= les.blur_mm <= 0.5 * les.radius_mm + 1e-9
    soft = [les for les in lesions if les.kind == "lesion"]
    assert min(les.contrast_hu for les in soft) < 0 < max(les.contrast_hu for les in soft)
    assert {les.kind for les in lesions} == {"lesion", "solid_nodule", "ground_glass"}
    assert {les.irregular for les in lesions} == {True, False}
    assert any(les.blur_mm > 0 for les in lesions) and any(les.blur_mm == 0 for les in lesions)
    organs = {les.organ for les in lesions}
    assert {"liver", "spleen", "kidney", "muscle", "white", "lung"} <= organs
    assert organs & {"grey", "deep_grey"}
    assert max(les.radius_mm for les in lesions) > 5.0 and min(les.radius_mm for les in lesions) < 2.0


@pytest.mark.parametrize("kind, seed", [("abdomen", 1), ("thorax", 2), ("head", 3)])
def test_masks_are_exactly_where_the_lesions_changed_the_slice(kind, seed):
    with_ = _slice(kind, seed)
    without = _slice(kind, seed, lesions=False)
    diff = with_.hu.astype(np.float64) - without.hu
    np.testing.assert_array_equal(diff != 0, with_.lesion_ids > 0)
    np.testing.assert_array_equal(with_.organs, without.organs)
    assert without.lesion_ids.max() == 0 and not without.inserted
    for i, les in enumerate(with_.inserted):
        profile = diff[with_.lesion_ids == i + 1] / les.contrast_hu
        assert profile.min() > 0 and profile.max() <= 1 + 1e-4
        if les.radius_px > 3:
            assert profile.max() > 0.85  # a plateau at the stated contrast


def test_lesion_table_round_trip_and_fields():
    ph = _slice("thorax", 0)
    table = ph.lesion_table()
    assert table.shape == (len(ph.inserted), len(LESION_FIELDS)) and table.dtype == np.float64
    assert from_table(np.vstack([table, np.zeros((3, len(LESION_FIELDS)))])) == ph.inserted
    assert list(table[:, 0]) == list(range(1, len(ph.inserted) + 1))


# -- texture ------------------------------------------------------------------------------------
def test_texture_std_per_tissue_is_in_its_documented_range():
    seen = set()
    for ph in _slices():
        air = ndimage.binary_erosion(ph.organs == ORGANS.index("air"), iterations=2)  # clear of edges
        assert ph.texture_hu is not None and not ph.texture_hu[air].any()
        for organ, (std, sigma) in ph.texture_params.items():
            (s0, s1), (g0, g1) = TEXTURE[organ]
            assert s0 <= std <= s1 and g0 <= sigma <= g1
            measured = organ_std(ph.texture_hu, ph.organs, organ)
            if math.isfinite(measured):
                assert 0.65 * std <= measured <= 1.35 * std, (organ, measured, std)
                seen.add(organ)
    assert {"liver", "muscle", "lung", "fat", "white", "trabecular", "kidney", "spleen"} <= seen


def test_texture_is_signal_in_the_noise_free_slice():
    textured = _slice("abdomen", 1)
    flat = _slice("abdomen", 1, texture=False)
    liver = ndimage.binary_erosion(textured.organ_mask("liver"), iterations=3) & (textured.lesion_ids == 0)
    assert textured.hu[liver].std() > 2 * flat.hu[liver & flat.organ_mask("liver")].std()
    assert flat.texture_hu is None and not flat.texture_params


# -- bodies and metal ---------------------------------------------------------------------------
def test_bodies_up_to_45_cm_in_a_field_of_view_that_holds_them():
    widths = []
    for kind in ("abdomen", "thorax"):
        for s in range(12):
            ph = generate_fidelity(
                kind, seed=s, size=128, config=FidelityConfig(lesions=False, texture=False)
            )
            widths.append(ph.body_width_mm)
            assert ph.body_width_mm <= MAX_WIDTH_MM + ph.pixel_size_mm
            n = ph.hu.shape[0]
            rows, cols = np.nonzero(ph.labels > 0)
            radius = np.hypot(rows - (n - 1) / 2, cols - (n - 1) / 2).max() * ph.pixel_size_mm
            assert radius < 251.0  # inside the default scanner's 500 mm field of view
            assert 360 <= ph.pixel_size_mm * n <= 500
            if ph.region in ("shoulders", "pelvis"):
                bone = np.isin(ph.organs, [ORGANS.index("cortical"), ORGANS.index("trabecular")])
                x = (np.nonzero(bone)[1] - (n - 1) / 2) * ph.pixel_size_mm
                assert x.min() < -60 and x.max() > 60  # humeral heads or hips on both sides
    assert max(widths) > 400


def test_metal_only_when_asked():
    metal_id = ORGANS.index("metal")
    bare = dict(lesions=False, texture=False)
    for kind, seed in (("abdomen", 0), ("abdomen", 1), ("thorax", 1), ("head", 0)):
        without = generate_fidelity(kind, seed=seed, size=128, config=FidelityConfig(metal=0.0, **bare))
        assert not without.metal and not (without.organs == metal_id).any() and without.hu.max() < 2200
        with_ = generate_fidelity(kind, seed=seed, size=128, config=FidelityConfig(metal=1.0, **bare))
        assert with_.metal and (with_.organs == metal_id).any() and with_.hu.max() > 2400
        assert (with_.region == "pelvis") == ((kind, seed) == ("abdomen", 0))  # a hip, and the other inserts
    off = FidelityConfig(body=False, **bare)  # the default fraction of 5 %
    rate = np.mean([generate_fidelity("head", seed=s, size=64, config=off).metal for s in range(30)])
    assert 0 < rate < 0.2


# -- seeds --------------------------------------------------------------------------------------
def test_same_seed_same_slice_and_independent_streams():
    a = generate_fidelity("thorax", seed=4, size=128)
    b = generate_fidelity("thorax", seed=4, size=128)
    for name in ("hu", "labels", "organs", "lesion_ids", "uniform"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.inserted == b.inserted
    seeds = {p: 100 + k for k, p in enumerate(PURPOSES)}
    base = generate_fidelity("abdomen", seed=seeds, size=128)
    other = generate_fidelity("abdomen", seed=seeds | {"lesions": 999}, size=128)
    changed = base.hu != other.hu
    assert changed.any()
    assert not (changed & (base.lesion_ids == 0) & (other.lesion_ids == 0)).any()  # lesions only
    np.testing.assert_array_equal(base.organs, other.organs)
    assert np.abs(generate_fidelity("abdomen", seed=seeds | {"anatomy": 7}, size=128).hu - base.hu).mean() > 5


def test_all_off_is_the_plain_phantom():
    off = FidelityConfig(lesions=False, texture=False, body=False, metal=0.0)
    for kind in ("abdomen", "thorax", "head"):
        ph, plain = generate_fidelity(kind, seed=3, size=128, config=off), generate(kind, seed=3, size=128)
        np.testing.assert_array_equal(ph.hu, plain.hu)
        np.testing.assert_array_equal(ph.labels, plain.labels)
        assert ph.pixel_size_mm == plain.pixel_size_mm and ph.lesions == plain.lesions


@pytest.mark.parametrize(
    "value, error, match",
    [
        (dict(metal=1.5), InputError, "metal"),
        (dict(metal=True), InputError, "metal"),
        (dict(max_width_mm=600), InputError, "max_width_mm"),
        (dict(lesions="yes"), InputTypeError, "lesions"),
        (dict(lesion=True), InputError, "unknown fidelity option"),
        ("on", InputTypeError, "fidelity"),
    ],
)
def test_fidelity_option_errors(value, error, match):
    with pytest.raises(error, match=match):
        FidelityConfig.parse(value)
    with pytest.raises(error, match=match):
        SyntheticDataset(n_patients=1, slices_per_patient=1, size=64, fidelity=value)


def test_seed_errors():
    with pytest.raises(InputError, match="lack"):
        generate_fidelity("head", seed={"anatomy": 1}, size=64)
    with pytest.raises(InputError, match="seed"):
        generate_fidelity("head", seed=-1, size=64)
    with pytest.raises(InputError, match="kind"):
        generate_fidelity("pelvis", seed=0, size=64)


# -- the dataset --------------------------------------------------------------------------------
def _fid(**kw):
    args = dict(n_patients=3, slices_per_patient=1, doses=(0.05, 1.0), size=128, geometry=TINY, fidelity=True)
    return SyntheticDataset(**(args | kw))


def test_doses_from_5_percent_to_full_dose():
    np.testing.assert_array_equal(check_dose(FIDELITY_DOSES, name="doses"), FIDELITY_DOSES)
    ds = _fid(n_patients=1, target="noiseless")
    low, full = ds[0], ds[1]
    assert (low["dose"], full["dose"]) == (0.05, 1.0)
    body = ds.phantom(0, 0).labels > 0
    noise_low, noise_full = (float((x["ldct"] - x["ndct"])[body].std()) for x in (low, full))
    assert noise_low > 3 * noise_full > 0
    ndct = _fid(n_patients=1)[1]
    assert not np.array_equal(ndct["ldct"], ndct["ndct"])  # a second, independent dose-1 realisation
    ratio = float((ndct["ldct"] - full["ndct"])[body].std()) / float(
        (ndct["ndct"] - full["ndct"])[body].std()
    )
    assert 0.8 < ratio < 1.25


def test_fidelity_items_cache_round_trip_and_collate(tmp_path):
    from ctdn.train.data import PairBank

    ds = _fid(cache_dir=tmp_path / "c", n_patients=2)
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["fidelity"] == FidelityConfig().to_dict()
    assert build_cache(ds, progress=False)["simulated"] == 2
    plain = _fid(n_patients=2)
    for i in range(len(ds)):
        a, b = ds[i], plain[i]
        assert {"lesion_ids", "lesion_table", "organs", "pixel_size_mm"} <= set(a)
        assert np.abs(a["ldct"] - b["ldct"]).max() <= 0.5 + 1e-3
        for key in ("lesion_ids", "organs", "lesion_table"):
            np.testing.assert_array_equal(a[key], b[key])
    for p in range(2):
        ph, a = ds.phantom(p, 0), ds[2 * p]
        np.testing.assert_array_equal(a["lesion_ids"], ph.lesion_ids)
        np.testing.assert_array_equal(a["organs"], ph.organs)
        assert from_table(a["lesion_table"]) == ph.inserted and a["pixel_size_mm"] == ph.pixel_size_mm
    with np.load(ds.cache_file(0, 0)) as z:
        assert z["lesion_ids"].dtype == np.uint8 and z["lesion_table"].shape[1] == len(LESION_FIELDS)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["lesion_ids"].shape == (4, 128, 128) and batch["lesion_table"].shape[0] == 4
    bank = PairBank(ds, progress=False)
    assert len(bank) == len(ds) and bank.doses == [0.05, 1.0]


def test_caches_with_other_fidelity_settings_are_refused(tmp_path):
    _fid(cache_dir=tmp_path / "plain", fidelity=False)
    with pytest.raises(CacheError, match="fidelity"):
        _fid(cache_dir=tmp_path / "plain")
    _fid(cache_dir=tmp_path / "fid")
    for other in (False, dict(metal=0.5)):
        with pytest.raises(CacheError, match="fidelity"):
            _fid(cache_dir=tmp_path / "fid", fidelity=other)
    meta_path = tmp_path / "fid" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["fidelity"]["version"] = 0  # a cache of an older fidelity generator
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CacheError, match="fidelity"):
        _fid(cache_dir=tmp_path / "fid")
    # A cache written before the fidelity option existed (no such key) still serves plain data.
    meta = json.loads((tmp_path / "plain" / "meta.json").read_text())
    del meta["fidelity"]
    (tmp_path / "plain" / "meta.json").write_text(json.dumps(meta))
    _fid(cache_dir=tmp_path / "plain", fidelity=False)


def test_fidelity_cache_file_without_masks_is_simulated_again(tmp_path):
    ds = _fid(cache_dir=tmp_path / "c", n_patients=1)
    good = ds[0]
    path = ds.cache_file(0, 0)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k not in ("lesion_ids", "lesion_table")}
    np.savez(path, **arrays)  # the image-only layout
    with pytest.warns(UserWarning, match="corrupt"):
        again = ds[0]
    np.testing.assert_array_equal(again["lesion_ids"], good["lesion_ids"])
    np.testing.assert_array_equal(again["ldct"], good["ldct"])
