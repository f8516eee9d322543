"""DICOM in and out: sorting, HU, compressed data, derived series, atomic writes, refusals."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import PATIENT, make_ct_series, one_file, stored_range
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

import ctdn.io.dicom as dicom_mod
from ctdn.errors import CTDNError, DicomError, InputError, InputTypeError, MissingDependencyError
from ctdn.io import Volume, list_series, read_dicom, write_dicom
from ctdn.io.output import MANIFEST

# pydicom-data installs its files as the package "data_store"
HAVE_PYDICOM_DATA = importlib.util.find_spec("data_store") is not None
needs_pydicom_data = pytest.mark.skipif(
    not HAVE_PYDICOM_DATA,
    reason="pydicom-data is not installed (pip install pydicom-data): 693_UNCI.dcm is not available",
)
INSTALL = 'pip install "ctdn[dicom]"'


@contextlib.contextmanager
def refused(cls, *texts):
    """``pytest.raises(cls)``, then each text must be in the message with absolute paths blanked
    out, so that a test name inside ``tmp_path`` (e.g. ``test_truncated_...``) cannot match."""
    with pytest.raises(cls) as info:
        yield info
    message = re.sub(r"(?<![\w.])/\S+", "<path>", str(info.value))
    for text in texts:
        assert text in message, f"{text!r} not in {message!r}"


def folder_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def hidden_entries(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture
def series(tmp_path):
    folder = tmp_path / "in"
    slopes = [1.0, 0.5, 2.0, 1.0, 1.0, 0.25]
    hu = make_ct_series(folder, n=6, slope=slopes, intercept=[-1024, -1000, -1024, 0, -1024, -512])
    return folder, hu


# ---------------------------------------------------------------------------------------------
# Reading
def test_read_sorts_shuffled_files_and_instance_numbers(series):
    folder, hu = series
    # The factory really does shuffle: neither names nor InstanceNumbers follow the positions.
    raw = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    z_by_name = [float(ds.ImagePositionPatient[2]) for ds in raw]
    z_by_instance = [float(ds.ImagePositionPatient[2]) for ds in sorted(raw, key=lambda d: d.InstanceNumber)]
    assert z_by_name != sorted(z_by_name) and z_by_instance != sorted(z_by_instance)

    vol = read_dicom(folder)
    assert isinstance(vol, Volume)
    assert vol.hu.dtype == np.float32 and vol.shape == (6, 32, 32) and len(vol) == 6
    np.testing.assert_array_equal(vol.hu, hu)  # exact, per-slice slopes and intercepts included
    assert vol.spacing == pytest.approx((2.5, 0.75, 0.8))
    assert vol.origin == pytest.approx((-12.0, -14.5, -40.0))
    assert vol.orientation == pytest.approx((1, 0, 0, 0, 1, 0))
    assert vol.series_uid == raw[0].SeriesInstanceUID
    z = [float(h.ImagePositionPatient[2]) for h in vol.headers]
    assert z == sorted(z) and len(vol.headers) == len(vol.files) == 6
    for header, path in zip(vol.headers, vol.files, strict=True):
        assert path.is_absolute() and pydicom.dcmread(path).SOPInstanceUID == header.SOPInstanceUID
        assert "PixelData" not in header
    assert "Volume(shape=(6, 32, 32)" in repr(vol)


def test_sort_uses_the_slice_normal_not_z(tmp_path):
    # Sagittal slices: z is the same for all, the normal is -x. A z-sort would keep file order.
    hu = make_ct_series(tmp_path, n=5, orientation=(0, 1, 0, 0, 0, -1), spacing=1.25, seed=3)
    vol = read_dicom(tmp_path)
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.spacing[0] == pytest.approx(1.25)
    x = [float(h.ImagePositionPatient[0]) for h in vol.headers]
    assert x == sorted(x, reverse=True)


def test_oblique_spacing_is_measured_along_the_normal(tmp_path):
    hu = make_ct_series(tmp_path, n=4, orientation=(1, 0, 0, 0, 0.8, -0.6), spacing=3.0, seed=4)
    vol = read_dicom(tmp_path)
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.spacing[0] == pytest.approx(3.0, abs=1e-5)


@pytest.mark.parametrize("ts", [ImplicitVRLittleEndian, ExplicitVRBigEndian], ids=["implicit", "big-endian"])
def test_read_other_uncompressed_transfer_syntaxes(tmp_path, ts):
    hu = make_ct_series(tmp_path, n=3, signed=True, bits_stored=16, intercept=0.0, transfer_syntax=ts)
    np.testing.assert_array_equal(read_dicom(tmp_path).hu, hu)


def test_signed_12_bit_values_are_sign_extended(tmp_path):
    lo, hi = stored_range(12, True)
    stored = np.full((2, 8, 8), lo)
    stored[:, :4] = hi
    stored[1, 0, 0] = -1
    hu = make_ct_series(tmp_path, n=2, rows=8, cols=8, signed=True, intercept=0.0, stored=stored)
    vol = read_dicom(tmp_path)
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.hu.min() == lo and vol.hu.max() == hi and vol.hu[1, 0, 0] == -1


def test_single_file_list_and_recursive(tmp_path):
    folder = tmp_path / "a" / "b"
    hu = make_ct_series(folder, n=4)
    files = sorted(folder.iterdir())
    np.testing.assert_array_equal(read_dicom(files).hu, hu)
    np.testing.assert_array_equal(read_dicom([str(f) for f in files[::-1]]).hu, hu)
    one = read_dicom(files[0])
    assert one.shape == (1, 32, 32)
    assert one.spacing[0] == pytest.approx(2.5)  # from SliceThickness
    with refused(DicomError, "no DICOM"):
        read_dicom(tmp_path / "a")  # not recursive: a/ holds only a folder
    np.testing.assert_array_equal(read_dicom(tmp_path, recursive=True).hu, hu)


def _write_dicomdir(path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.FileSetID = "CTDN"
    ds.DirectoryRecordSequence = []
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def _write_sr(path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.67"  # X-Ray Radiation Dose SR
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def test_folder_ignores_non_dicom_files_dicomdir_and_reports(tmp_path):
    hu = make_ct_series(tmp_path, n=3)
    (tmp_path / "README").write_text("a CT series\n")
    (tmp_path / "notes.txt").write_bytes(b"\x08\x00 not dicom at all")
    (tmp_path / ".DS_Store").write_bytes(b"\0" * 300)
    (tmp_path / "sub").mkdir()
    _write_dicomdir(tmp_path / "DICOMDIR")
    _write_sr(tmp_path / "dose_report.dcm")
    np.testing.assert_array_equal(read_dicom(tmp_path).hu, hu)
    assert [s["n_files"] for s in list_series(tmp_path)] == [3]


def test_raw_data_set_without_preamble_is_read(tmp_path):
    # Old exports: no 128-byte preamble, no 'DICM', no file meta; implicit VR little endian.
    hu = make_ct_series(tmp_path / "src", n=3, shuffle=False, transfer_syntax=ImplicitVRLittleEndian)
    raw = tmp_path / "raw"
    raw.mkdir()
    for p in sorted((tmp_path / "src").iterdir()):
        ds = pydicom.dcmread(p)
        ds.preamble = None
        ds.file_meta = FileMetaDataset()
        pydicom.dcmwrite(raw / p.stem, ds, implicit_vr=True, little_endian=True)
    assert (raw / "CT000").read_bytes()[:2] == b"\x08\x00"
    np.testing.assert_array_equal(read_dicom(raw).hu, hu)


def test_missing_positions_fall_back_to_instance_number(tmp_path):
    def strip(ds, k):
        del ds.ImagePositionPatient
        ds.InstanceNumber = 10 + k
        ds.SpacingBetweenSlices = 3.0  # preferred over SliceThickness (2.5)

    hu = make_ct_series(tmp_path, n=4, with_positions=True, tweak=strip)
    with pytest.warns(UserWarning, match="InstanceNumber") as record:
        vol = read_dicom(tmp_path)
    assert record[0].filename == __file__  # attributed to the caller, not to ctdn internals
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.spacing[0] == 3.0 and vol.origin is None


def test_missing_positions_and_thickness_warn_and_use_one_mm(tmp_path):
    def strip(ds, k):
        ds.InstanceNumber = k + 1
        del ds.SliceThickness

    hu = make_ct_series(tmp_path, n=3, with_positions=False, tweak=strip)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        vol = read_dicom(tmp_path)
    messages = " | ".join(str(w.message) for w in record)
    assert "sorting by InstanceNumber" in messages and "slice spacing of 1.0 mm" in messages
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.spacing[0] == 1.0


def test_modality_lut_is_applied(tmp_path):
    def lut(ds, k):
        del ds.RescaleSlope, ds.RescaleIntercept
        item = pydicom.Dataset()
        item.LUTDescriptor = [4096, 0, 16]
        item.add_new(0x00283006, "US", list(range(0, 8192, 2)))  # LUTData: HU = 2 * stored
        item.ModalityLUTType = "HU"
        ds.ModalityLUTSequence = [item]

    make_ct_series(tmp_path, n=2, rows=8, cols=8, tweak=lut, seed=5)
    stored = np.stack([pydicom.dcmread(p).pixel_array for p in sorted(tmp_path.iterdir())])
    vol = read_dicom(tmp_path)
    assert sorted(vol.hu.ravel().tolist()) == sorted((2.0 * stored).ravel().tolist())


def test_bundled_ct_small_is_plausible():
    vol = read_dicom(get_testdata_file("CT_small.dcm"))
    assert vol.shape == (1, 128, 128) and vol.hu.dtype == np.float32
    assert vol.spacing == pytest.approx((5.0, 0.661468, 0.661468))
    h = vol.hu
    assert np.mean(h < -700) > 0.15  # air/lung: stored 128..2191 with intercept -1024
    assert np.mean((h > -100) & (h < 150)) > 0.2  # soft tissue
    assert -1100 < h.min() < -800 and 800 < h.max() < 3000
    assert -200 < np.median(h) < 150


def test_bundled_jpeg2000_decodes():
    vol = read_dicom(get_testdata_file("693_J2KI.dcm"))
    assert vol.shape == (1, 512, 512) and np.isfinite(vol.hu).all()
    assert np.mean(vol.hu < -900) > 0.2 and np.mean((vol.hu > -100) & (vol.hu < 200)) > 0.1


@needs_pydicom_data
def test_jpeg2000_matches_uncompressed():
    j2k = read_dicom(get_testdata_file("693_J2KI.dcm"))
    raw = read_dicom(get_testdata_file("693_UNCI.dcm"))
    assert j2k.shape == raw.shape == (1, 512, 512)
    assert np.mean(np.abs(j2k.hu - raw.hu)) < 2.0
    np.testing.assert_allclose(j2k.hu, raw.hu, atol=50.0)
    assert j2k.spacing == raw.spacing


def _jpeg2000_decoder():
    pixels = pytest.importorskip("pydicom.pixels")
    dec = pixels.get_decoder(pydicom.uid.JPEG2000)
    if not hasattr(dec, "_available") or not hasattr(dec, "_unavailable"):
        pytest.skip("this pydicom keeps its decoder plugins elsewhere")
    return dec


def test_missing_decoder_names_the_extra(monkeypatch):
    dec = _jpeg2000_decoder()
    monkeypatch.setattr(dec, "_available", {})
    monkeypatch.setattr(dec, "_unavailable", {"pylibjpeg": ("pylibjpeg", "pylibjpeg-openjpeg")})
    with pytest.raises(MissingDependencyError) as info:
        read_dicom(get_testdata_file("693_J2KI.dcm"))
    msg = str(info.value)
    assert INSTALL in msg and "JPEG 2000" in msg and "693_J2KI.dcm" in msg and "pylibjpeg-openjpeg" in msg
    assert isinstance(info.value, ImportError) and isinstance(info.value, CTDNError)


def test_decoder_failing_for_missing_plugins_is_a_missing_dependency(monkeypatch):
    # The availability check passes but decoding then finds no plugin: pydicom's RuntimeError.
    dec = _jpeg2000_decoder()
    monkeypatch.setattr(dec, "_available", {})
    monkeypatch.setattr(dec, "_unavailable", {"pylibjpeg": ("pylibjpeg",)})
    monkeypatch.setattr(type(dec), "is_available", property(lambda self: True))
    with refused(MissingDependencyError, INSTALL):
        read_dicom(get_testdata_file("693_J2KI.dcm"))


def test_corrupt_compressed_data_is_a_dicom_error(tmp_path):
    src = Path(get_testdata_file("693_J2KI.dcm"))
    ds = pydicom.dcmread(src)
    item = ds.get_item(0x7FE00010)
    data = bytearray(src.read_bytes())
    start = item.value_tell + 40  # inside the first fragment, past the item headers
    data[start : start + 300] = b"\x00" * 300
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(bytes(data))
    with refused(DicomError, "cannot decode the pixel data", "JPEG 2000") as info:
        read_dicom(bad)
    assert "bad.dcm" in str(info.value) and not isinstance(info.value, MissingDependencyError)


# ---------------------------------------------------------------------------------------------
# Refusals when reading
def test_empty_folder(tmp_path):
    with refused(DicomError, "empty"):
        read_dicom(tmp_path)


def test_folder_without_dicom(tmp_path):
    (tmp_path / "README").write_text("nothing here")
    with refused(DicomError, "no DICOM image files") as info:
        read_dicom(tmp_path)
    assert "README" in str(info.value)


def test_missing_path(tmp_path):
    with refused(DicomError, "no such file"):
        read_dicom(tmp_path / "nope")
    with refused(DicomError, "no such file"):
        read_dicom([tmp_path / "nope.dcm"])
    with refused(DicomError, "empty"):
        read_dicom([])


def test_random_bytes_file(tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with refused(DicomError, "not a DICOM file") as info:
        read_dicom(junk)
    assert "junk.dcm" in str(info.value)


def _pixel_offset(path: Path) -> int:
    return pydicom.dcmread(path).get_item(0x7FE00010).value_tell


CUTS = {
    "preamble": (lambda size, px: 60, "not a DICOM file"),
    "after-DICM": (lambda size, px: 132, "truncated"),
    "file-meta": (lambda size, px: 200, "truncated"),
    "header": (lambda size, px: px // 2 + 3, "truncated"),
    "pixel-tag": (lambda size, px: px - 6, "truncated"),
    "pixel-start": (lambda size, px: px + 1, "truncated"),
    "pixel-middle": (lambda size, px: (px + size) // 2, "truncated"),
    "last-byte": (lambda size, px: size - 1, "truncated"),
}


@pytest.mark.parametrize("where", list(CUTS))
def test_truncated_file(tmp_path, where):
    path = one_file(tmp_path / "src")
    data = path.read_bytes()
    cut, expected = CUTS[where]
    n = cut(len(data), _pixel_offset(path))
    bad = tmp_path / "cut.dcm"
    bad.write_bytes(data[:n])
    with refused(DicomError, expected) as info:
        read_dicom(bad)
    assert "cut.dcm" in str(info.value)


@pytest.mark.parametrize("where", ["header", "pixel-middle", "last-byte", "preamble"])
def test_truncated_file_in_a_folder_is_not_skipped(tmp_path, where):
    make_ct_series(tmp_path, n=5, shuffle=False)
    victim = sorted(tmp_path.iterdir())[2]  # the middle slice
    data = victim.read_bytes()
    cut, expected = CUTS[where]
    victim.write_bytes(data[: cut(len(data), _pixel_offset(victim))])
    # cut inside the preamble, the file is no longer DICOM: it is skipped and leaves a gap
    with refused(DicomError, "missing slice" if where == "preamble" else expected):
        read_dicom(tmp_path)


def test_corrupted_bytes_raise_only_ctdn_errors(tmp_path):
    path = one_file(tmp_path / "src")
    data = path.read_bytes()
    px = _pixel_offset(path)
    rng = np.random.default_rng(7)
    bad = tmp_path / "bad.dcm"
    outcomes = set()
    for _ in range(60):
        mutated = bytearray(data)
        for pos in rng.integers(128, px, size=3):
            mutated[pos] = int(rng.integers(0, 256))
        bad.write_bytes(bytes(mutated))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                read_dicom(bad)
                outcomes.add("ok")
            except CTDNError:
                outcomes.add("refused")
    assert "refused" in outcomes


def test_mr_is_refused_unless_allowed(tmp_path):
    hu = make_ct_series(tmp_path, n=2, modality="MR")
    with refused(DicomError, "'MR'") as info:
        read_dicom(tmp_path)
    assert "allow_non_ct=True" in str(info.value)
    np.testing.assert_array_equal(read_dicom(tmp_path, allow_non_ct=True).hu, hu)


def test_no_pixel_data(tmp_path):
    make_ct_series(tmp_path, n=2, pixel_data=False)
    with refused(DicomError, "no pixel data"):
        read_dicom(tmp_path)


def test_mixed_sizes(tmp_path):
    uid = pydicom.uid.generate_uid()
    make_ct_series(tmp_path, n=3, series_uid=uid, prefix="A")
    make_ct_series(tmp_path, n=2, rows=16, cols=16, series_uid=uid, prefix="B", positions=[10.0, 12.5])
    with refused(DicomError, "mixed image sizes") as info:
        read_dicom(tmp_path)
    assert "32x32 (3 file(s)" in str(info.value) and "16x16 (2 file(s)" in str(info.value)


def test_mixed_orientation(tmp_path):
    def tilt(ds, k):
        if k == 2:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0.8, -0.6]

    make_ct_series(tmp_path, n=4, tweak=tilt)
    with refused(DicomError, "mixed orientation"):
        read_dicom(tmp_path)


def test_duplicate_positions(tmp_path):
    make_ct_series(tmp_path, positions=[0.0, 2.5, 5.0, 5.0, 7.5])
    with refused(DicomError, "duplicate slice position") as info:
        read_dicom(tmp_path)
    assert "-35.000" in str(info.value)  # origin z -40 + 5


def test_same_file_twice(tmp_path):
    make_ct_series(tmp_path, n=3, shuffle=False)
    first = sorted(tmp_path.iterdir())[0]
    shutil.copy(first, tmp_path / "copy.dcm")
    with refused(DicomError, "same SOPInstanceUID"):
        read_dicom(tmp_path)


def test_gap_names_the_positions(tmp_path):
    make_ct_series(tmp_path, positions=[0.0, 2.5, 5.0, 10.0, 12.5])
    with refused(DicomError, "missing slice") as info:
        read_dicom(tmp_path)
    msg = str(info.value)
    assert "-35.000" in msg and "-30.000" in msg and "median spacing is 2.5" in msg


def test_irregular_spacing_warns(tmp_path):
    hu = make_ct_series(tmp_path, positions=[0.0, 2.5, 5.0, 8.0, 10.5])
    with pytest.warns(UserWarning, match="irregular slice spacing"):
        vol = read_dicom(tmp_path)
    np.testing.assert_array_equal(vol.hu, hu)


def test_multiple_series(tmp_path):
    a, b = "1.2.826.0.1.3680043.8.498.111", "1.2.826.0.1.3680043.8.498.222"
    hu_a = make_ct_series(tmp_path, n=3, series_uid=a, description="soft kernel", prefix="A")
    hu_b = make_ct_series(tmp_path, n=2, series_uid=b, description="bone kernel", prefix="B", seed=9)
    with refused(DicomError, "series_uid=") as info:
        read_dicom(tmp_path)
    msg = str(info.value)
    for text in (a, b, "soft kernel", "bone kernel", "3 file(s)", "2 file(s)"):
        assert text in msg
    np.testing.assert_array_equal(read_dicom(tmp_path, series_uid=a).hu, hu_a)
    np.testing.assert_array_equal(read_dicom(tmp_path, series_uid=b).hu, hu_b)
    with refused(DicomError, "'1.2.3' is not in"):
        read_dicom(tmp_path, series_uid="1.2.3")
    assert list_series(tmp_path) == [
        {"uid": a, "description": "soft kernel", "n_files": 3, "modality": "CT"},
        {"uid": b, "description": "bone kernel", "n_files": 2, "modality": "CT"},
    ]


def test_multi_frame_is_refused(tmp_path):
    make_ct_series(tmp_path, n=1, number_of_frames=3)
    with refused(DicomError, "multi-frame"):
        read_dicom(tmp_path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_pixels(tmp_path, bad):
    values = np.zeros((3, 8, 8), dtype=np.float32)
    values[1, 2, 5] = bad
    make_ct_series(tmp_path, n=3, rows=8, cols=8, float_values=values, shuffle=False)
    with refused(DicomError, "non-finite") as info:
        read_dicom(tmp_path)
    assert "CT001.dcm" in str(info.value) and "(2, 5)" in str(info.value)


def test_float_pixels_read(tmp_path):
    values = np.random.default_rng(2).normal(0, 300, (3, 8, 8)).astype(np.float32)
    hu = make_ct_series(tmp_path, n=3, rows=8, cols=8, float_values=values)
    np.testing.assert_array_equal(read_dicom(tmp_path).hu, hu)


def test_overflowing_rescale_is_non_finite(tmp_path):
    make_ct_series(tmp_path, n=2, slope=1e308, stored=np.full((2, 4, 4), 4000), rows=4, cols=4)
    with refused(DicomError, "non-finite"):
        read_dicom(tmp_path)


# ---------------------------------------------------------------------------------------------
# Writing
def test_write_round_trip(series, tmp_path):
    folder, hu = series
    before = folder_hashes(folder)
    vol = read_dicom(folder)
    headers_before = copy.deepcopy(vol.headers)
    hu_before = vol.hu.copy()
    rng = np.random.default_rng(0)
    slopes = np.array([float(h.RescaleSlope) for h in vol.headers])
    intercepts = np.array([float(h.RescaleIntercept) for h in vol.headers])[:, None, None]
    new = (vol.hu + rng.normal(0, 20, vol.hu.shape)).astype(np.float32)
    # keep inside every slice's 12-bit unsigned stored range, so nothing is clipped
    new = np.clip(new, intercepts + 1, intercepts + 4094 * slopes[:, None, None]).astype(np.float32)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = write_dicom(new, vol, tmp_path / "out")
    assert out == (tmp_path / "out").absolute()
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST] + [f"IM{i:05d}.dcm" for i in range(6)]
    assert hidden_entries(tmp_path) == []

    back = read_dicom(out)
    err = np.abs(back.hu - new).max(axis=(1, 2))
    assert np.all(err <= slopes / 2 + 1e-3), err
    assert back.spacing == pytest.approx(vol.spacing) and back.origin == pytest.approx(vol.origin)

    src_sops = {h.SOPInstanceUID for h in vol.headers}
    sops = [h.SOPInstanceUID for h in back.headers]
    assert back.series_uid != vol.series_uid and len(set(sops)) == 6 and not src_sops & set(sops)
    for i, (h, old) in enumerate(zip(back.headers, vol.headers, strict=True)):
        assert h.SeriesInstanceUID == back.series_uid
        assert h.file_meta.MediaStorageSOPInstanceUID == h.SOPInstanceUID
        assert h.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert list(h.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert h.SeriesDescription == "factory series ctdn denoised"
        assert h.DerivationDescription == "Denoised by ctdn"
        assert h.SeriesNumber == 1007 and h.InstanceNumber == i + 1
        assert h.SourceImageSequence[0].ReferencedSOPInstanceUID == old.SOPInstanceUID
        for kw in [*PATIENT, "StudyInstanceUID", "StudyDate", "AccessionNumber", "FrameOfReferenceUID"]:
            assert h.get(kw) == old.get(kw), kw
        assert (h.RescaleSlope, h.RescaleIntercept) == (old.RescaleSlope, old.RescaleIntercept)
        assert (h.BitsAllocated, h.BitsStored, h.PixelRepresentation) == (16, 12, 0)

    assert vol.headers == headers_before and np.array_equal(vol.hu, hu_before)  # like untouched
    assert folder_hashes(folder) == before  # inputs byte-identical


def test_write_options_and_2d_input(tmp_path):
    folder = tmp_path / "in"
    make_ct_series(folder, n=1, description="x" * 60)
    vol = read_dicom(folder)
    out = write_dicom(
        vol.hu[0], vol, tmp_path / "out", description="low dose", derivation="sim", series_number=42
    )
    (h,) = read_dicom(out).headers
    assert h.SeriesDescription == ("x" * 60 + " low dose")[:64] and len(h.SeriesDescription) == 64
    assert h.SeriesNumber == 42 and h.DerivationDescription == "sim"


def test_write_clips_to_the_stored_range(series, tmp_path):
    folder, _ = series
    vol = read_dicom(folder)
    new = vol.hu.copy()
    new[0, 0, 0], new[0, 0, 1] = 10_000.0, -5_000.0  # slice 0: 12-bit unsigned, slope 1, intercept -1024
    with pytest.warns(UserWarning, match="clipped"):
        out = write_dicom(new, vol, tmp_path / "out")
    back = read_dicom(out).hu
    assert back[0, 0, 0] == 3071.0 and back[0, 0, 1] == -1024.0
    np.testing.assert_array_equal(back[1:], vol.hu[1:])  # unchanged values round-trip exactly


def test_write_from_compressed_source(tmp_path):
    vol = read_dicom(get_testdata_file("693_J2KI.dcm"))
    out = write_dicom(vol.hu, vol, tmp_path / "out")
    (path,) = out.glob("*.dcm")
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and ds.BitsAllocated == 16
    assert "LossyImageCompression" in ds  # history of lossy compression is kept
    np.testing.assert_array_equal(read_dicom(out).hu, vol.hu)


@pytest.mark.parametrize("ts", [ImplicitVRLittleEndian, ExplicitVRBigEndian], ids=["implicit", "big-endian"])
def test_write_from_other_transfer_syntaxes(tmp_path, ts):
    hu = make_ct_series(
        tmp_path / "in", n=3, signed=True, bits_stored=16, intercept=-1024.0, transfer_syntax=ts
    )
    vol = read_dicom(tmp_path / "in")
    back = read_dicom(write_dicom(vol.hu, vol, tmp_path / "out"))
    np.testing.assert_array_equal(back.hu, hu)
    assert back.headers[0].PatientName == PATIENT["PatientName"]


def test_write_failure_is_atomic(series, tmp_path, monkeypatch):
    folder, _ = series
    vol = read_dicom(folder)
    real = dicom_mod._write_file
    calls = []

    def flaky(ds, path):
        if len(calls) == 2:
            raise OSError("disk full")
        calls.append(path)
        real(ds, path)

    monkeypatch.setattr(dicom_mod, "_write_file", flaky)
    with refused(DicomError, "disk full"):
        write_dicom(vol.hu, vol, tmp_path / "out")
    assert len(calls) == 2 and all(not p.exists() for p in calls)
    assert not (tmp_path / "out").exists() and hidden_entries(tmp_path) == []

    # the same failure while overwriting leaves ctdn's previous series as it was
    monkeypatch.setattr(dicom_mod, "_write_file", real)
    old = write_dicom(vol.hu, vol, tmp_path / "old")
    previous = folder_hashes(old)
    monkeypatch.setattr(dicom_mod, "_write_file", flaky)
    calls.clear()
    with refused(DicomError, "disk full"):
        write_dicom(vol.hu, vol, old, overwrite=True)
    assert folder_hashes(old) == previous and hidden_entries(tmp_path) == []


def test_failed_swap_restores_the_old_folder(series, tmp_path, monkeypatch):
    folder, _ = series
    vol = read_dicom(folder)
    out = write_dicom(vol.hu, vol, tmp_path / "out")
    previous = folder_hashes(out)
    real_rename = dicom_mod.os.rename
    calls = []

    def rename(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the new folder into place, after the old one was moved aside
            raise OSError("rename refused")
        real_rename(src, dst)

    monkeypatch.setattr(dicom_mod.os, "rename", rename)
    with refused(DicomError, "rename refused"):
        write_dicom(vol.hu, vol, out, overwrite=True)
    assert len(calls) == 3 and calls[0][0] == "out" and calls[2][1] == "out"
    assert folder_hashes(out) == previous and hidden_entries(tmp_path) == []


def test_write_creates_missing_parents(series, tmp_path):
    folder, hu = series
    vol = read_dicom(folder)
    out = write_dicom(vol.hu, vol, tmp_path / "deep" / "er" / "out")
    np.testing.assert_array_equal(read_dicom(out).hu, hu)


def test_overwrite_rules(series, tmp_path):
    folder, _ = series
    vol = read_dicom(folder)
    out = tmp_path / "out"
    out.mkdir()
    write_dicom(vol.hu, vol, out)  # an existing empty folder is fine
    with refused(DicomError, "overwrite=True"):
        write_dicom(vol.hu, vol, out)
    first_uid = read_dicom(out).series_uid
    write_dicom(vol.hu, vol, out, overwrite=True)  # ctdn's own series: replaced
    assert len(list(out.iterdir())) == 7 and read_dicom(out).series_uid != first_uid
    assert hidden_entries(tmp_path) == []
    (out / "stray.txt").write_text("x")  # anything else in it: never replaced
    before = folder_hashes(out)
    with refused(DicomError, "stray.txt", "other entry"):
        write_dicom(vol.hu, vol, out, overwrite=True)
    assert folder_hashes(out) == before and hidden_entries(tmp_path) == []
    (tmp_path / "file").write_text("x")
    with refused(DicomError, "not a folder"):
        write_dicom(vol.hu, vol, tmp_path / "file", overwrite=True)


def test_refuses_to_write_into_or_around_the_input(series, tmp_path):
    folder, _ = series
    before = folder_hashes(folder)
    vol = read_dicom(folder)
    for target in (folder, folder / "denoised", tmp_path, folder / ".." / "in"):
        with refused(DicomError, "input"):
            write_dicom(vol.hu, vol, target, overwrite=True)
    assert folder_hashes(folder) == before and not (folder / "denoised").exists()


def test_write_rejects_bad_arrays(series, tmp_path):
    folder, _ = series
    vol = read_dicom(folder)
    with refused(InputError, "(6, 32, 16)", "(6, 32, 32)"):
        write_dicom(vol.hu[:, :, :16], vol, tmp_path / "out")
    bad = vol.hu.copy()
    bad[2, 3, 4] = np.nan
    with refused(InputError, "non-finite"):
        write_dicom(bad, vol, tmp_path / "out")
    with pytest.raises(InputTypeError):
        write_dicom(vol.hu, "not a volume", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    slope=st.sampled_from([0.25, 0.5, 1.0, 2.0, 2.5]),
    intercept=st.sampled_from([-1024.0, -1000.0, 0.0, -8192.0]),
    bits=st.integers(8, 16),
    signed=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_write_quantises_within_half_a_step(tmp_path_factory, slope, intercept, bits, signed, seed):
    base = tmp_path_factory.mktemp("q")
    make_ct_series(
        base / "in",
        n=1,
        rows=4,
        cols=6,
        slope=slope,
        intercept=intercept,
        bits_stored=bits,
        signed=signed,
        seed=seed,
    )
    vol = read_dicom(base / "in")
    rng = np.random.default_rng(seed)
    lo, hi = stored_range(bits, signed)
    span = (hi - lo) * slope
    new = (lo * slope + intercept + rng.uniform(-0.2, 1.2, vol.shape) * span).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = read_dicom(write_dicom(new, vol, base / "out")).hu
    expected = np.clip(new.astype(np.float64), lo * slope + intercept, hi * slope + intercept)
    assert np.all(np.abs(back - expected) <= slope / 2 + 1e-3 * max(1.0, abs(intercept)))
    assert np.all((back - intercept) / slope == np.round((back - intercept) / slope))
