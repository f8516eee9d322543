"""Phantom generation and DICOM read/write per 512x512 slice."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from ctdn import phantoms
from ctdn.io import read_dicom, write_dicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dicom_factory import make_ct_series  # noqa: E402


@pytest.mark.benchmark(group="phantom-512")
@pytest.mark.parametrize("kind", phantoms.KINDS)
def test_phantom(benchmark, kind):
    ph = benchmark(phantoms.generate, kind, seed=0, size=512)
    assert ph.hu.shape == (512, 512)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("series")
    make_ct_series(folder, n=16, rows=512, cols=512, spacing=1.0)
    return folder


@pytest.mark.benchmark(group="dicom")
def test_read_16_slices(benchmark, series):
    vol = benchmark(read_dicom, series)
    assert vol.hu.shape == (16, 512, 512)
    benchmark.extra_info["slices"] = 16


@pytest.mark.benchmark(group="dicom")
def test_write_16_slices(benchmark, series, tmp_path):
    vol = read_dicom(series)
    hu = vol.hu + np.float32(1.0)
    out = benchmark(write_dicom, hu, vol, tmp_path / "out", overwrite=True)
    assert len(list(Path(out).glob("*.dcm"))) == 16
    benchmark.extra_info["slices"] = 16
