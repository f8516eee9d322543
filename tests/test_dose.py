"""ctdn.dose.estimate_dose: simulated slices of known dose, the DICOM header path, every refusal."""

from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest
from ctdn.train.dose_eval import simulate_cell
from pydicom.dataset import Dataset

from ctdn import phantoms
from ctdn.dose import (
    MGY_PER_MAS,
    REFERENCE_CTDIVOL,
    SUPPORTED_DOSE_RANGE,
    DoseEstimate,
    DoseEstimateError,
    estimate_dose,
    kernel_gain,
)
from ctdn.dose import calibration as cal
from ctdn.dose.header import read_header, region_from_body_part
from ctdn.errors import InputError

# Small, fast scans of seeds no calibration or evaluation uses, at a size and with a filter the
# calibration never saw: a head scaled by 0.9 (D_w about 16 cm, 1.17 mm pixels), Hamming-filtered.
HEAD = dict(kind="head", seed=4242, scale=0.9, size=192, geometry="fan", views=384)
HEAD_DOSES = (0.05, 0.1, 0.25, 0.5)
# At 1.2 mm pixels a 7-pixel window holds 2 HU of anatomy and reconstruction artefacts, a floor
# that the 3-4 HU of noise at dose 0.5 no longer dominates (docs/dose.md, limits): the 1.3x check
# runs up to 0.25 here; the evaluation's 512 matrices cover the higher doses.
ACCURATE_DOSES = (0.05, 0.1, 0.25)
# An abdomen scaled by 0.75 (D_w about 21 cm) in parallel geometry, same noise, two kernels.
ABDOMEN = dict(kind="abdomen", seed=4243, scale=0.75, size=224, geometry="parallel", views=192)


@pytest.fixture(scope="module")
def head():
    jobs = [("hamming", d) for d in HEAD_DOSES] + [("ramp", 0.25), ("hann", 0.25)]
    imgs, px, clean = simulate_cell(jobs=jobs, **HEAD)
    return imgs, px, clean


@pytest.fixture(scope="module")
def abdomen():
    imgs, px, clean = simulate_cell(jobs=[("shepp-logan", 0.1), ("hann", 0.1)], **ABDOMEN)
    return imgs, px, clean


def _ratio(est: DoseEstimate, dose: float) -> float:
    return max(est.dose, dose) / min(est.dose, dose)


# -- simulated slices of known dose ---------------------------------------------------------------
@pytest.mark.parametrize("dose", ACCURATE_DOSES)
def test_known_dose_uncalibrated_size_and_filter(head, dose):
    imgs, px, _ = head
    est = estimate_dose(imgs[("hamming", dose)], pixel_size_mm=px, kernel="hamming")
    assert _ratio(est, dose) <= 1.3, (dose, est.dose)
    assert est.method == "image" and est.slice_doses.shape == (1,)
    assert est.interval[0] <= est.dose <= est.interval[1]
    assert 150 < est.water_diameter_mm[0] < 175  # the head scaled by 0.9


def test_known_dose_parallel_geometry_and_sharp_kernel(abdomen):
    imgs, px, _ = abdomen
    for f in ("shepp-logan", "hann"):
        est = estimate_dose(imgs[(f, 0.1)], pixel_size_mm=px, kernel=f)
        assert _ratio(est, 0.1) <= 1.3, (f, est.dose)


def test_lower_dose_gives_lower_estimate(head):
    imgs, px, _ = head
    est = [estimate_dose(imgs[("hamming", d)], pixel_size_mm=px, kernel="hamming") for d in HEAD_DOSES]
    doses, noise = [e.dose for e in est], [e.noise_hu for e in est]
    assert all(a < b for a, b in zip(doses, doses[1:], strict=False)), doses
    assert all(a > b for a, b in zip(noise, noise[1:], strict=False)), noise


def test_the_kernel_matters_and_is_inferred_from_the_texture(head):
    imgs, px, _ = head
    # The same noisy sinogram through a sharp and a smooth filter: the named kernel makes up for it.
    ramp = estimate_dose(imgs[("ramp", 0.25)], pixel_size_mm=px, kernel="ramp")
    hann = estimate_dose(imgs[("hann", 0.25)], pixel_size_mm=px, kernel="hann")
    assert _ratio(hann, 0.25) <= 1.3
    assert _ratio(ramp, 0.25) <= 1.5  # 2.6x the noise of Hann: one slice, per-slice scatter 1.22x
    wrong = estimate_dose(imgs[("ramp", 0.25)], pixel_size_mm=px, kernel="hann")
    assert wrong.dose < 0.25 / 3  # a ramp image read as Hann looks like a far lower dose
    assert ramp.image_dose / wrong.image_dose == pytest.approx(kernel_gain("ramp") ** 2, rel=0.2)
    inferred_ramp = estimate_dose(imgs[("ramp", 0.25)], pixel_size_mm=px)
    inferred_hann = estimate_dose(imgs[("hann", 0.25)], pixel_size_mm=px)
    assert inferred_ramp.kernel_gain > 1.6 * inferred_hann.kernel_gain
    assert "inferred" in inferred_ramp.kernel


def test_kernel_gains_follow_the_filters_smoothness():
    order = [
        ("ramp", 1.0),
        ("shepp-logan", 1.0),
        ("cosine", 1.0),
        ("hamming", 1.0),
        ("hann", 1.0),
        ("hann", 0.8),
    ]
    gains = [kernel_gain(*k) for k in order]
    assert all(a > b for a, b in zip(gains, gains[1:], strict=False)), gains
    assert gains[4] == pytest.approx(1.0)
    assert 2.3 < gains[0] < 2.9  # docs/simulation.md: the ramp filter gives about 2.6x the noise
    assert cal.parse_kernel("Hann@0.8") == ("hann", 0.8) == cal.parse_kernel(("hann", 0.8))
    assert cal.parse_kernel("B30f") is None
    with pytest.raises(InputError, match="cutoff"):
        cal.parse_kernel(("hann", 1.5))


def test_volume_smoothing_follows_a_step_and_drops_an_outlier(head):
    imgs, px, _ = head
    lo, hi = imgs[("hamming", 0.05)], imgs[("hamming", 0.25)]
    step = estimate_dose(
        np.stack([lo, lo, lo, hi, hi, hi]), pixel_size_mm=px, kernel="hamming", smooth_slices=3
    )
    assert step.slice_doses.shape == (6,)
    assert step.slice_doses[4:].min() > 2.5 * step.slice_doses[:2].max()
    outlier = estimate_dose(np.stack([lo, lo, hi, lo, lo]), pixel_size_mm=px, kernel="hamming")
    assert outlier.slice_doses.max() < 0.05 * 1.3  # the running median removes the one high slice
    sparse = estimate_dose(
        np.stack([lo, lo, lo, hi, hi, hi]), pixel_size_mm=px, kernel="hamming", max_slices=3
    )
    assert sparse.slice_doses.shape == (6,) and np.isfinite(sparse.slice_doses).all()


def test_pixel_size_default_and_header_spacing_are_reported(head):
    imgs, px, _ = head
    img = imgs[("hamming", 0.25)]
    default = estimate_dose(img, kernel="hamming")
    assert default.pixel_size_mm == pytest.approx(360.0 / 192)
    assert any("pixel size not given" in n for n in default.notes)
    from_header = estimate_dose(img, kernel="hamming", header={"PixelSpacing": [px, px]})
    assert from_header.pixel_size_mm == pytest.approx(px)
    assert any("PixelSpacing" in n for n in from_header.notes)
    assert _ratio(from_header, 0.25) <= 1.3


def test_str_is_one_readable_line(head):
    imgs, px, _ = head
    est = estimate_dose(imgs[("hamming", 0.1)], pixel_size_mm=px, kernel="hamming")
    line = str(est)
    assert "\n" not in line and line.startswith("dose ") and "HU" in line and "D_w" in line


# -- the header -----------------------------------------------------------------------------------
def _dataset(**values) -> Dataset:
    ds = Dataset()
    for k, v in values.items():
        setattr(ds, k, v)
    return ds


def test_header_ctdivol_against_the_routine_reference(head):
    imgs, px, _ = head
    img = imgs[("hamming", 0.25)]
    ds = _dataset(
        CTDIvol=15.0, BodyPartExamined="HEAD", KVP=120, ConvolutionKernel="H30s", PixelSpacing=[px, px]
    )
    est = estimate_dose(img, header=ds, kernel="hamming")
    assert est.method == "image+header"
    assert est.header_dose == pytest.approx(15.0 / REFERENCE_CTDIVOL["head"])
    assert est.header_values["CTDIvol"] == 15.0 and est.header_values["BodyPartExamined"] == "HEAD"
    assert est.region == "head" and _ratio(est, 0.25) <= 1.3  # the image estimate is the dose
    assert not any("disagree" in n for n in est.notes)  # 0.25 against about 0.25
    far = estimate_dose(img, header=_dataset(CTDIvol=60.0, BodyPartExamined="BRAIN"), pixel_size_mm=px)
    assert any("disagree by" in n for n in far.notes)
    override = estimate_dose(img, header=ds, kernel="hamming", reference_ctdivol={"head": 30.0})
    assert override.header_dose == pytest.approx(0.5)


def test_header_mas_kvp_and_pitch_without_ctdivol():
    info = read_header({"Exposure": "200", "KVP": 100, "SpiralPitchFactor": 0.8, "BodyPartExamined": "CHEST"})
    from ctdn.dose.header import header_dose

    d, how = header_dose(info, "chest", REFERENCE_CTDIVOL, MGY_PER_MAS)
    expect = 200 / 0.8 * MGY_PER_MAS["chest"] * (100 / 120) ** 2.5 / REFERENCE_CTDIVOL["chest"]
    assert d == pytest.approx(expect) and "mAs" in how
    mismatch = read_header({"Exposure": 85, "XRayTubeCurrent": 170, "ExposureTime": 2000})
    assert mismatch.mas == 85 and any("340" in n for n in mismatch.notes)
    product = read_header({"XRayTubeCurrent": 100, "ExposureTime": 500})
    assert product.mas == pytest.approx(50.0) and product.mas_source == "XRayTubeCurrent*ExposureTime"


def test_header_enhanced_ct_sequence_and_bad_values():
    item = _dataset(CTDIvol=7.5)
    ds = _dataset(CTExposureSequence=pydicom.Sequence([item]))
    assert read_header(ds).ctdivol_mgy == 7.5
    bad = read_header({"CTDIvol": "n/a", "KVP": -120, "PixelSpacing": ["x", 1]})
    assert bad.ctdivol_mgy is None and bad.kvp is None and bad.pixel_size_mm is None


@pytest.mark.parametrize(
    "part, region",
    [
        ("HEAD", "head"),
        ("Brain", "head"),
        ("CHEST", "chest"),
        ("ABDOMEN", "abdomen"),
        ("PELVIS", "abdomen"),
        ("KNEE", None),
        (None, None),
    ],
)
def test_body_part_picks_the_region(part, region):
    assert region_from_body_part(part) == region


def _fat_only(seed=0, noise=15.0, n=160):
    """Air around a fat ellipse with a bone rim: in HU, but no soft tissue anywhere."""
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    img = np.full((n, n), -1000.0, np.float32)
    r = (xx / 60) ** 2 + (yy / 45) ** 2
    img[r < 1.0] = 1200.0
    img[r < 0.85] = -100.0
    img[np.abs(yy) < 3] = 40.0  # a thin soft-tissue band: too thin to be flat
    return img + np.random.default_rng(seed).normal(0, noise, img.shape).astype(np.float32)


def test_header_alone_when_the_image_has_no_soft_tissue():
    est = estimate_dose(_fat_only(), pixel_size_mm=1.0, header={"CTDIvol": 6.0, "BodyPartExamined": "CHEST"})
    assert est.method == "header" and est.dose == pytest.approx(0.5)
    assert est.image_dose is None and any("no flat soft tissue" in n for n in est.notes)


def test_header_list_must_match_the_slices(head):
    imgs, px, _ = head
    vol = np.stack([imgs[("hamming", 0.25)]] * 2)
    ok = estimate_dose(vol, pixel_size_mm=px, kernel="hamming", header=[{"CTDIvol": 10.0}, {"CTDIvol": 20.0}])
    assert ok.header_dose == pytest.approx(15.0 / REFERENCE_CTDIVOL[ok.region])
    with pytest.raises(InputError, match="one per slice"):
        estimate_dose(vol, pixel_size_mm=px, header=[{"CTDIvol": 1.0}] * 3)


# -- refusals -------------------------------------------------------------------------------------
def _refused(img, match, **kw):
    with pytest.raises(DoseEstimateError, match=match) as info:
        estimate_dose(img, **kw)
    msg = str(info.value)
    assert "\n" not in msg and "dose=" in msg
    assert isinstance(info.value, InputError)


def test_refuses_a_display_image():
    img = np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8)
    _refused(img, "0-255")
    _refused(img.astype(np.float32), "0-255")


@pytest.mark.parametrize("lo, hi", [(0.0, 1.0), (-1.0, 1.0)])
def test_refuses_a_normalised_image(lo, hi):
    img = np.random.default_rng(1).uniform(lo, hi, (64, 64))
    _refused(img, "normalised")


def test_refuses_stored_values_without_the_rescale():
    raw = phantoms.phantom("head", seed=3, size=96) + 1024.0
    _refused(raw, "no air")


def test_refuses_an_image_without_a_water_level():
    img = np.where(np.random.default_rng(2).random((64, 64)) < 0.5, -1000.0, 1500.0)
    _refused(img, "no water")


def test_refuses_without_flat_soft_tissue():
    _refused(_fat_only(), "no flat soft tissue", pixel_size_mm=1.0)


def test_refuses_an_image_without_noise():
    flat = phantoms.cylinder(size=128, diameter_mm=250.0).hu  # uniform 40 HU, no texture, no noise
    _refused(flat, "no measurable noise", pixel_size_mm=360.0 / 128)


def test_refuses_a_patient_cut_by_the_image_edge(head):
    imgs, px, _ = head
    crop = imgs[("hamming", 0.25)][96:, :]  # the lower half: the head meets the top edge
    crop = crop[:, 16:-16]
    _refused(crop, "cut by the image edge", pixel_size_mm=px, kernel="hamming")


def test_out_of_range_estimates_are_clipped(head):
    imgs, px, clean = head
    noisy = imgs[("hamming", 0.05)] + np.random.default_rng(4).normal(0, 120, clean.shape).astype(np.float32)
    low = estimate_dose(noisy, pixel_size_mm=px, kernel="hamming")
    assert low.dose == SUPPORTED_DOSE_RANGE[0] and any("clipped" in n for n in low.notes)
    disk = phantoms.cylinder(size=128, diameter_mm=250.0).hu  # no texture: only the added noise
    quiet = disk + np.random.default_rng(5).normal(0, 0.6, disk.shape).astype(np.float32)
    high = estimate_dose(quiet, pixel_size_mm=360.0 / 128, kernel="hann")
    assert high.dose == SUPPORTED_DOSE_RANGE[1] and any("clipped" in n for n in high.notes)
    assert high.interval[1] <= SUPPORTED_DOSE_RANGE[1]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"pixel_size_mm": -1.0}, "pixel_size_mm"),
        ({"pixel_size_mm": float("nan")}, "pixel_size_mm"),
        ({"region": "knee"}, "region"),
        ({"reference_ctdivol": {"head": 0}}, "reference_ctdivol"),
        ({"reference_ctdivol": {"knee": 5.0}}, "reference_ctdivol"),
        ({"smooth_slices": 0}, "smooth_slices"),
        ({"max_slices": 0}, "max_slices"),
    ],
)
def test_bad_arguments_are_input_errors(head, kw, match):
    imgs, px, _ = head
    kw.setdefault("pixel_size_mm", px)
    with pytest.raises(InputError, match=match):
        estimate_dose(imgs[("hamming", 0.25)], **kw)


def test_non_finite_and_wrong_shape_are_input_errors():
    img = np.zeros((32, 32), np.float32)
    img[3, 4] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        estimate_dose(img)
    with pytest.raises(InputError, match="2-D or 3-D"):
        estimate_dose(np.zeros((2, 2, 2, 2)))


def test_unknown_kernel_name_is_noted_not_trusted(head):
    imgs, px, _ = head
    est = estimate_dose(imgs[("hamming", 0.25)], pixel_size_mm=px, kernel="B30f")
    assert any("not a ctdn.sim filter" in n for n in est.notes) and "inferred" in est.kernel
    assert math.isfinite(est.kernel_gain)
