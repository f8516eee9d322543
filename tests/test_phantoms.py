"""Anatomical phantoms: shapes, HU ranges, lesions, uniform regions, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest

from ctdn import phantoms
from ctdn.errors import InputError
from ctdn.phantoms import AIR, BONE, FAT, LUNG, SOFT


@pytest.fixture(scope="module", params=[(k, s) for k in phantoms.KINDS for s in (0, 1, 2)], ids=str)
def ph(request):
    kind, seed = request.param
    return phantoms.generate(kind, seed=seed)


def test_shape_dtype_and_pixel_size(ph):
    assert ph.hu.shape == (512, 512) and ph.hu.dtype == np.float32
    assert ph.labels.shape == (512, 512) and ph.labels.dtype == np.uint8
    assert ph.pixel_size_mm == pytest.approx(phantoms.FOV_MM[ph.kind] / 512)
    assert set(np.unique(ph.labels)) <= set(phantoms.TISSUES)
    assert np.isfinite(ph.hu).all()


def test_tissue_values(ph):
    hu, lab = ph.hu, ph.labels
    interior = lab == AIR
    assert np.all(hu[:3, :] == -1000.0) and np.all(hu[:, :3] == -1000.0)  # air at the border
    bone = hu[lab == BONE]
    assert bone.size and 800 <= bone.max() <= 1850
    soft = hu[lab == SOFT]
    assert -20 < np.median(soft) < 80
    if ph.kind == "thorax":
        lung = hu[ndi_core(lab == LUNG)]
        assert -900 < lung.mean() < -800
    if ph.kind != "head":
        fat = hu[ndi_core(lab == FAT)]
        assert -130 < fat.mean() < -70
    assert interior.any()


def ndi_core(mask, iterations=2):
    from scipy import ndimage

    return ndimage.binary_erosion(mask, iterations=iterations)


def test_uniform_region(ph):
    u = ph.uniform
    diameter_px = 2 * np.sqrt(u.sum() / np.pi)
    assert diameter_px * ph.pixel_size_mm >= 15.0
    assert (ph.labels[u] == SOFT).all()
    assert 0.3 < float(ph.hu[u].std()) < 5.0  # textured, but homogeneous
    for i in range(len(ph.lesions)):
        assert not (ph.lesion_mask(i) & u).any()


def test_lesions_have_their_stated_contrast(ph):
    assert ph.lesions, "every phantom has lesions (nodules in the thorax)"
    for i, les in enumerate(ph.lesions):
        if ph.kind != "thorax":
            assert 5.0 <= abs(les.contrast_hu) <= 20.0
        rr, cc = np.indices(ph.hu.shape)
        disk = np.hypot(rr - les.center[0], cc - les.center[1]) < les.radius_px - 1.5  # no edge pixels
        ring = ph.lesion_mask(i, ring=True)
        assert disk.sum() > 3 and ring.sum() > 10
        measured = float(ph.hu[disk].mean() - ph.hu[ring].mean())
        # The 2 HU texture (1.5 mm correlation) shifts a small lesion's mean: worst seen 4.6 HU
        # over 259 lesions of 80 phantoms, hence 5 HU. Evaluations measure the true contrast on
        # the phantom itself, not from contrast_hu.
        tol = 5.0 if ph.kind != "thorax" else 0.05 * abs(les.contrast_hu)
        assert abs(measured - les.contrast_hu) < tol, (i, measured, les.contrast_hu)


def test_deterministic_and_seed_dependent():
    a = phantoms.generate("abdomen", seed=5, size=128)
    b = phantoms.generate("abdomen", seed=5, size=128)
    c = phantoms.generate("abdomen", seed=6, size=128)
    np.testing.assert_array_equal(a.hu, b.hu)
    assert np.abs(a.hu - c.hu).mean() > 5.0
    np.testing.assert_array_equal(phantoms.phantom("abdomen", seed=5, size=128), a.hu)


@pytest.mark.parametrize("kind", phantoms.KINDS)
def test_smaller_size_is_the_same_anatomy(kind):
    """size=128 is close to a 4x4 block average of size=512 (same anatomy, coarser pixels)."""
    big = phantoms.generate(kind, seed=3, size=512).hu
    small = phantoms.generate(kind, seed=3, size=128).hu
    pooled = big.reshape(128, 4, 128, 4).mean(axis=(1, 3))
    # Residual differences are the texture realisation and edge sampling: well under the image's
    # own variation (measured ~3-8 % of its std).
    assert np.sqrt(((pooled - small) ** 2).mean()) < 0.15 * big.std()


def test_odd_sizes():
    ph = phantoms.generate("head", seed=0, size=97)
    assert ph.hu.shape == (97, 97) and ph.uniform.any()


def test_cylinder():
    c = phantoms.cylinder(size=128, diameter_mm=300, hu=40, fov_mm=360)
    assert c.hu[64, 64] == 40.0 and c.hu[0, 0] == -1000.0
    assert (c.hu[c.uniform] == 40.0).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="pelvis"), "unknown phantom kind"),
        (dict(kind="head", size=32), "size"),
        (dict(kind="head", size=512.0), "size"),
        (dict(kind="head", size=True), "size"),
        (dict(kind="head", seed=-1), "seed"),
        (dict(kind="head", seed=1.5), "seed"),
        (dict(kind="head", seed=False), "seed"),
    ],
)
def test_errors(kwargs, match):
    kind = kwargs.pop("kind")
    with pytest.raises(InputError, match=match):
        phantoms.generate(kind, **kwargs)
