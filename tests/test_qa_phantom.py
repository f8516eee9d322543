"""The TG-233-style QA phantom (ctdn.qa_phantom): layout, values, masks, simulation, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ctdn import iq
from ctdn.errors import DoseError, InputError, InputTypeError
from ctdn.qa_phantom import (
    LESION_HU,
    LESION_MM,
    TTF_HU,
    QAPhantom,
    qa_phantom,
    simulate_qa,
    simulate_qa_doses,
)
from ctdn.sim import Geometry, Simulator

# A reduced scanner for fast tests: the 500 mm field of view with half the channels, a sixth of the views.
SMALL = dict(views=192, detectors=368, det_spacing_mm=2 * 1.2858)


@pytest.fixture(scope="module")
def small():
    return qa_phantom(200.0, size=128, fov_mm=220.0)


@pytest.fixture(scope="module")
def scans(small):
    return simulate_qa_doses(small, [0.25, 1.0], seed=3, geometry=SMALL, sigma_e=0.0, device="cpu")


def _centre_distance_mm(ph, ins):
    c = (ph.hu.shape[0] - 1) / 2
    return math.hypot(ins.center[0] - c, ins.center[1] - c) * ph.pixel_size_mm


@pytest.mark.parametrize("diameter, size", [(200.0, 128), (300.0, 256), (400.0, 256)])
def test_layout_values_and_regions(diameter, size):
    ph = qa_phantom(diameter, size=size)
    fov = max(360.0, 1.1 * diameter)
    assert ph.hu.shape == (size, size) and ph.hu.dtype == np.float32
    assert ph.pixel_size_mm == pytest.approx(fov / size) and ph.fov_mm == pytest.approx(fov)
    assert sorted(s.hu for s in ph.ttf_inserts) == sorted(TTF_HU)
    assert sorted((s.diameter_mm, s.hu) for s in ph.lesions) == sorted(
        (d, c) for c in LESION_HU for d in LESION_MM
    )
    assert len(ph.tasks()) == len(ph.lesions) and {t.contrast_hu for t in ph.tasks()} == set(LESION_HU)
    # Water at 0 HU inside, air outside, the uniform centre untouched by any insert.
    r_uniform = 0.4 * diameter / 2 / ph.pixel_size_mm
    assert (ph.hu[ph.uniform] == 0).all() and ph.uniform.sum() > math.pi * (r_uniform - 1) ** 2
    assert ph.hu[0, 0] == -1000.0 and ph.body[size // 2, size // 2] and not ph.body[0, 0]
    for i, ins in enumerate(ph.inserts):
        inside = ph.insert_mask(i)
        assert ins.contrast_hu == ins.hu and ins.radius_px == pytest.approx(
            ins.diameter_mm / 2 / ph.pixel_size_mm
        )
        assert not (inside & ph.uniform).any() and ph.body[inside].all()
        if ins.radius_px >= 2:  # interior pixels lie wholly inside the insert
            assert ph.hu[inside] == pytest.approx(ins.hu, abs=1e-3)
            ring = ph.insert_mask(i, ring=True)
            assert ring.any() and (ph.hu[ring] == 0).all()
    rings = {round(_centre_distance_mm(ph, s) / (diameter / 2), 3) for s in ph.inserts}
    assert rings == {0.55, 0.78}
    for a in ph.inserts:  # inserts never overlap one another's analysis region
        for b in ph.inserts:
            if a is not b:
                gap = math.hypot(a.center[0] - b.center[0], a.center[1] - b.center[1]) * ph.pixel_size_mm
                assert gap >= (2.0 if a.kind == "ttf" else 2.5) * a.diameter_mm / 2 + b.diameter_mm / 2


def test_edges_carry_partial_volume():
    ph = qa_phantom(300.0, size=512)
    air = next(s for s in ph.ttf_inserts if s.hu == -1000)
    rows, cols = np.indices(ph.hu.shape)
    r = np.hypot(rows - air.center[0], cols - air.center[1])
    edge = np.abs(r - air.radius_px) < 0.5
    assert ((ph.hu[edge] > -990) & (ph.hu[edge] < -10)).mean() > 0.5
    assert ph.hu[r < air.radius_px - 1].max() == -1000.0


def test_nps_rois_fit_the_uniform_region():
    ph = qa_phantom(300.0, size=512)
    centers = ph.nps_centers(64)
    assert len(centers) >= 4
    for rc, cc in centers:
        r0, c0 = int(round(rc - 31.5)), int(round(cc - 31.5))
        assert ph.uniform[r0 : r0 + 64, c0 : c0 + 64].all()
    with pytest.raises(InputError, match="no 256x256 px ROI fits"):
        ph.nps_centers(256)


def test_simulated_scans(small, scans):
    low, full = scans[0.25], scans[1.0]
    for s in (low, full):
        assert s.realisations.shape == (2, 128, 128) and s.realisations.dtype == np.float32
        assert s.noiseless.shape == (128, 128) and s.noiseless.dtype == np.float32
        assert s.pixel_size_mm == small.pixel_size_mm and s.seed == 3
    # The noise-free reconstruction is the simulator's, shared by every dose.
    ref = Simulator(
        Geometry(**SMALL), pixel_size_mm=small.pixel_size_mm, sigma_e=0.0, device="cpu"
    ).noiseless(small.hu)
    np.testing.assert_allclose(low.noiseless, ref, atol=1e-3)
    assert np.array_equal(low.noiseless, full.noiseless)
    assert abs(float(low.noiseless[small.uniform].mean())) < 5.0
    # Two realisations: independent noise of the same magnitude, which noise_from_pair recovers.
    n0, n1 = (r - low.noiseless for r in low.realisations)
    u = small.uniform
    assert abs(np.corrcoef(n0[u], n1[u])[0, 1]) < 0.15
    assert n0[u].std() == pytest.approx(n1[u].std(), rel=0.2)
    pair = iq.noise_from_pair(*low.realisations)
    assert pair[u].std() == pytest.approx(0.5 * (n0[u].std() + n1[u].std()), rel=0.15)
    # Quantum noise goes as 1 / sqrt(dose): 4x the dose, half the noise.
    full_noise = iq.noise_from_pair(*full.realisations)[u].std()
    assert pair[u].std() / full_noise == pytest.approx(2.0, rel=0.2)


def test_simulation_is_seeded(small, scans):
    again = simulate_qa(small, 0.25, seed=3, geometry=SMALL, sigma_e=0.0, device="cpu", realisations=1)
    assert np.array_equal(again.realisations[0], scans[0.25].realisations[0])
    other = simulate_qa(small, 0.25, seed=4, geometry=SMALL, sigma_e=0.0, device="cpu", realisations=1)
    assert other.realisations.shape == (1, 128, 128)
    assert not np.array_equal(other.realisations[0], scans[0.25].realisations[0])


def test_the_phantom_measures_what_the_system_does(small):
    # A sharper reconstruction filter has the higher TTF; in a noise-free scan the 10 mm lesions keep
    # most of their contrast and smaller ones less (the high-contrast ones: the +-10 HU lesions sit
    # among the coarse test scanner's few-HU view-aliasing streaks).
    ins = next(s for s in small.ttf_inserts if s.hu == -1000)
    clean, f50 = {}, {}
    for filt in ("hann", "ramp"):
        geometry = Geometry(**SMALL, filter=filt)
        clean[filt] = simulate_qa(
            small, 1.0, seed=0, geometry=geometry, device="cpu", realisations=1
        ).noiseless
        f50[filt] = iq.ttf(clean[filt], ins.center, ins.diameter_mm / 2, small.pixel_size_mm).f50
    assert f50["ramp"] > 1.1 * f50["hann"]
    stats = iq.lesion_stats(clean["hann"], small.lesions, pixel_size_mm=small.pixel_size_mm)
    for contrast in (120.0, -100.0):  # blur and partial volume take more from smaller lesions
        kept = [s.kept for s in sorted(stats, key=lambda s: s.diameter_mm) if s.true_contrast_hu == contrast]
        assert len(kept) == 4 and all(a < b for a, b in zip(kept, kept[1:], strict=False))
        assert 0.85 < kept[-1] < 1.05 and kept[0] < 0.6


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(diameter_mm=150.0), "diameter_mm must be in"),
        (dict(diameter_mm=float("nan")), "finite"),
        (dict(diameter_mm="300"), "real number"),
        (dict(size=32), "size"),
        (dict(size=128.0), "size"),
        (dict(fov_mm=300.0), "fov_mm"),
        (dict(ttf_hu=()), "non-empty"),
        (dict(lesion_hu=(10.0, 5000.0)), "lesion_hu values"),
        (dict(lesion_mm=(25.0,)), "does not fit|too close"),
        (dict(lesion_mm=tuple(range(3, 15))), "too close"),
        (dict(ttf_diameter_mm=40.0), "does not fit|too close"),
    ],
)
def test_qa_phantom_refuses_bad_settings(kwargs, match):
    with pytest.raises(InputError, match=match):
        qa_phantom(**kwargs)


def test_simulate_qa_refuses_bad_arguments(small):
    with pytest.raises(InputTypeError, match="QAPhantom"):
        simulate_qa(np.zeros((64, 64)), 0.25)
    with pytest.raises(DoseError, match="dose"):
        simulate_qa(small, 0.0)
    with pytest.raises(DoseError, match="dose"):
        simulate_qa(small, 1.5)
    with pytest.raises(InputError, match="one number"):
        simulate_qa(small, [0.25, 0.5])
    with pytest.raises(InputError, match="realisations"):
        simulate_qa(small, 0.25, realisations=0)
    with pytest.raises(InputError, match="seed"):
        simulate_qa(small, 0.25, seed=-1)
    with pytest.raises(InputTypeError, match="geometry"):
        simulate_qa(small, 0.25, geometry="fan")
    with pytest.raises(InputError, match="unknown geometry keyword"):
        simulate_qa(small, 0.25, geometry=dict(fliter="ramp"))
    with pytest.raises(InputError, match="insert index"):
        small.insert_mask(len(small.inserts))
    assert isinstance(small, QAPhantom)
