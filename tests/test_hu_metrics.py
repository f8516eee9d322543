"""HU conventions and metrics against independent references (scikit-image)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ctdn import hu, metrics
from ctdn.errors import InputError, InputTypeError


def test_window_mapping_round_trip_and_clipping():
    x = np.array([-3024.0, -1000.0, -500.0, 0.0, 40.0, 1000.0, 3000.0], dtype=np.float32)
    u = hu.hu_to_unit(x)
    np.testing.assert_allclose(u, [-1, -1, -0.5, 0, 0.04, 1, 1], atol=1e-6)
    inside = (x >= -1000) & (x <= 1000)
    np.testing.assert_allclose(hu.unit_to_hu(u)[inside], x[inside], atol=1e-3)
    np.testing.assert_allclose(hu.hu_to_01(x), (u + 1) / 2, atol=1e-6)
    np.testing.assert_allclose(hu.window(np.array([-160.0, 40.0, 240.0]), 40, 400), [0, 0.5, 1])


def test_attenuation_conversion():
    assert hu.hu_to_mu(np.array([0.0]))[0] == pytest.approx(hu.MU_WATER)
    assert hu.hu_to_mu(np.array([-1000.0, -3024.0])).tolist() == [0.0, 0.0]  # clipped at 0
    np.testing.assert_allclose(hu.mu_to_hu(hu.hu_to_mu(np.array([-500.0, 1500.0]))), [-500, 1500])


def test_check_hu_copies_and_validates():
    x = np.arange(12, dtype=np.int16).reshape(3, 4)
    y = hu.check_hu(x)
    assert y.dtype == np.float32 and not np.shares_memory(x, y)
    with pytest.raises(InputError, match="non-finite.*index \\(1, 2\\)"):
        bad = np.zeros((3, 4))
        bad[1, 2] = np.nan
        hu.check_hu(bad)
    with pytest.raises(InputTypeError):
        hu.check_hu(np.array([["a"]]))


@pytest.mark.parametrize("shape", [(64, 80), (11, 11), (3, 40, 33)])
def test_metrics_match_scikit_image(shape):
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 400, shape).astype(np.float32)
    img = ref + rng.normal(0, 60, shape).astype(np.float32)
    a, b = hu.hu_to_01(img), hu.hu_to_01(ref)
    if len(shape) == 2:
        want = structural_similarity(
            a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
        )
    else:
        want = np.mean(
            [
                structural_similarity(
                    a[i], b[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
                )
                for i in range(shape[0])
            ]
        )
    assert metrics.ssim(img, ref) == pytest.approx(want, abs=1e-6)
    assert metrics.psnr(img, ref) == pytest.approx(peak_signal_noise_ratio(b, a, data_range=1.0), abs=1e-6)
    assert metrics.rmse_hu(img, ref) == pytest.approx(2000 * math.sqrt(np.mean((a - b) ** 2)), rel=1e-5)


def test_metrics_edge_cases():
    x = np.zeros((16, 16), np.float32)
    assert metrics.psnr(x, x) == math.inf
    assert metrics.ssim(x, x) == pytest.approx(1.0)
    with pytest.raises(InputError, match="differs"):
        metrics.psnr(x, np.zeros((16, 15)))
    with pytest.raises(InputError, match="at least 11x11"):
        metrics.ssim(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(InputError, match="empty"):
        metrics.noise_std(x, x, np.zeros((16, 16), bool))


def test_atomic_path_leaves_old_content_on_failure(tmp_path):
    from ctdn._atomic import atomic_path

    target = tmp_path / "out.npy"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy"]
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1


def test_tissue_classes_thresholds_numpy_and_torch_agree():
    import torch

    from ctdn.hu import TISSUE_EDGES, TISSUES, tissue_classes

    hu = np.array([-1000, -950.5, -950, -401, -400, -31, -30, 0, 299.9, 300, 3000], dtype=np.float32)
    want = [0, 0, 1, 1, 2, 2, 3, 3, 3, 4, 4]
    assert tissue_classes(hu).tolist() == want
    got = tissue_classes(torch.from_numpy(hu))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int64 and got.tolist() == want
    assert len(TISSUE_EDGES) == len(TISSUES) - 1


def test_tissue_classes_match_phantom_labels_in_the_interior():
    from scipy import ndimage

    from ctdn import phantoms
    from ctdn.hu import tissue_classes

    ph = phantoms.generate("abdomen", size=256, seed=3)
    cls = tissue_classes(ph.hu)
    # Away from partial-volume edges and lesions, the HU classes are the phantom's own labels.
    inner = np.zeros_like(cls, dtype=bool)
    for t in range(5):
        inner |= ndimage.binary_erosion(ph.labels == t, np.ones((5, 5), bool))
    agree = (cls == ph.labels)[inner].mean()
    assert agree > 0.99, agree
