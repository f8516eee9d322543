"""DICOM series that would read or write silently wrong: inconsistent rescales, one image twice,
unbounded headers, padding that is not kept, and a derived series that does not say it was made."""

from __future__ import annotations

import datetime
import re
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import add_private, make_ct_series, ring_mask

from ctdn._version import __version__
from ctdn.errors import DicomError, InputTypeError
from ctdn.io import read_dicom, write_dicom
from ctdn.io._dicom_headers import BULK_LIMIT, PRIVATE_BUDGET, dataset_size
from ctdn.io.stream import read_dicom_mapped

READERS = [read_dicom, read_dicom_mapped]
MIB = 1 << 20


def _message(info) -> str:
    """The error text with absolute paths blanked out (a tmp_path holds the test's name)."""
    return re.sub(r"(?<![\w.])/\S+", "<path>", str(info.value))


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def _edit(path: Path, edit) -> None:
    ds = pydicom.dcmread(path)
    edit(ds)
    ds.save_as(path, enforce_file_format=True)


# ---------------------------------------------------------------------------------------------
# Item 10: one rescale rule per series, each image once
def _lacking(keyword: str):
    def edit(ds):
        delattr(ds, keyword)

    return edit


def _empty(keyword: str):
    def edit(ds):
        ds[keyword].value = ""

    return edit


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(
    ("edit", "texts"),
    [
        (_lacking("RescaleIntercept"), ["RescaleIntercept is missing from 1 of 6", "RescaleIntercept 0"]),
        (_empty("RescaleIntercept"), ["RescaleIntercept is missing from 1 of 6"]),
        (_lacking("RescaleSlope"), ["RescaleSlope is missing from 1 of 6", "RescaleSlope 1"]),
    ],
)
def test_a_slice_lacking_what_its_neighbours_have_is_refused(tmp_path, reader, edit, texts):
    make_ct_series(tmp_path, n=6, shuffle=False)
    victim = _files(tmp_path)[3]
    _edit(victim, edit)
    with pytest.raises(DicomError) as info:
        reader(tmp_path)
    message = _message(info)
    assert victim.name in message, message
    for text in texts:
        assert text in message, message


@pytest.mark.parametrize("reader", READERS)
def test_mixed_rescale_type_is_refused(tmp_path, reader):
    make_ct_series(tmp_path, n=4, shuffle=False)
    victim = _files(tmp_path)[1]
    _edit(victim, lambda ds: setattr(ds, "RescaleType", "US"))
    with pytest.raises(DicomError) as info:
        reader(tmp_path)
    message = _message(info)
    assert "mixed RescaleType" in message and victim.name in message and "HU in 3 slice(s)" in message


def test_rescale_type_absent_on_some_ct_slices_means_hu(tmp_path):
    hu = make_ct_series(tmp_path, n=4, shuffle=False)
    _edit(_files(tmp_path)[2], _lacking("RescaleType"))  # CT: RescaleType is required only when not HU
    np.testing.assert_array_equal(read_dicom(tmp_path).hu, hu)


def _lut(ds, k):
    del ds.RescaleSlope, ds.RescaleIntercept
    item = pydicom.Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new(0x00283006, "US", list(range(4096)))
    item.ModalityLUTType = "HU"
    ds.ModalityLUTSequence = [item]


@pytest.mark.parametrize("reader", READERS)
def test_modality_lut_on_some_slices_and_rescale_on_others_is_refused(tmp_path, reader):
    make_ct_series(tmp_path, n=5, shuffle=False, tweak=lambda ds, k: _lut(ds, k) if k in (1, 3) else None)
    names = [p.name for p in _files(tmp_path)]
    with pytest.raises(DicomError) as info:
        reader(tmp_path)
    message = _message(info)
    assert "2 of 5 slice(s) map pixels to HU with a Modality LUT" in message, message
    assert names[1] in message and names[3] in message and names[0] in message


def test_mixed_modality_lut_type_is_refused(tmp_path):
    def tweak(ds, k):
        _lut(ds, k)
        if k == 2:
            ds.ModalityLUTSequence[0].ModalityLUTType = "OD"

    make_ct_series(tmp_path, n=3, shuffle=False, tweak=tweak)
    with pytest.raises(DicomError, match="mixed ModalityLUTType"):
        read_dicom(tmp_path)


def test_present_but_different_rescales_are_each_slices_own(tmp_path):
    hu = make_ct_series(tmp_path, n=4, slope=[1, 0.5, 1, 2], intercept=[-1024, -1000, 0, -1024])
    np.testing.assert_array_equal(read_dicom(tmp_path).hu, hu)


def test_a_series_without_any_rescale_is_read_with_the_defaults(tmp_path):
    def tweak(ds, k):
        del ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType

    hu = make_ct_series(tmp_path, n=3, intercept=0.0, tweak=tweak)
    np.testing.assert_array_equal(read_dicom(tmp_path).hu, hu)


@pytest.mark.parametrize("reader", READERS)
def test_duplicated_sop_instance_uid_is_refused(tmp_path, reader):
    make_ct_series(tmp_path, n=4, shuffle=False)
    first, _, third, _ = _files(tmp_path)
    uid = pydicom.dcmread(first).SOPInstanceUID
    _edit(third, lambda ds: setattr(ds, "SOPInstanceUID", uid))  # another position, the same UID
    with pytest.raises(DicomError) as info:
        reader(tmp_path)
    message = _message(info)
    assert f"the same SOPInstanceUID {uid} is in {first.name} and {third.name}" in message, message
    assert "1 duplicate(s) in all" in message


def test_the_same_file_given_twice_is_named_so(tmp_path):
    make_ct_series(tmp_path, n=2, shuffle=False)
    a, b = _files(tmp_path)
    with pytest.raises(DicomError, match="the same file given twice"):
        read_dicom([a, b, a])


def test_the_same_sop_instance_uid_in_another_series_is_not_a_duplicate(tmp_path):
    make_ct_series(tmp_path / "a", n=2, shuffle=False, prefix="A")
    make_ct_series(tmp_path / "b", n=2, shuffle=False, prefix="B")
    uid = pydicom.dcmread(_files(tmp_path / "a")[0]).SOPInstanceUID
    _edit(_files(tmp_path / "b")[0], lambda ds: setattr(ds, "SOPInstanceUID", uid))
    assert len(read_dicom(tmp_path / "b")) == 2


# ---------------------------------------------------------------------------------------------
# Item 13: headers kept in memory are small
def test_bulk_private_elements_are_not_kept_in_memory(tmp_path):
    n, bulk = 20, 10 * MIB
    make_ct_series(tmp_path / "in", n=n, rows=16, cols=16, tweak=lambda ds, k: add_private(ds, bulk))
    tracemalloc.start()
    try:
        vol = read_dicom_mapped(tmp_path / "in", scratch_dir=tmp_path)
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept < n * 256 * 1024, f"{kept / MIB:.1f} MiB kept for {n} headers"
    assert peak < 3 * bulk, f"peak {peak / MIB:.1f} MiB"  # one file's bulk at a time, at most
    for h in vol.headers:
        assert 0x00291000 | 0x10 not in h and h[0x00290010].value == "CTDN FACTORY"
        assert dataset_size(h) < BULK_LIMIT
    # the derived series is still valid; the dropped private element is not written
    out = write_dicom(vol.hu, vol, tmp_path / "out")
    for p in _files(out):
        ds = pydicom.dcmread(p)
        assert 0x00291010 not in ds and ds.Modality == "CT"
        assert p.stat().st_size < 64 * 1024
    assert np.array_equal(read_dicom(out).hu, vol.hu)


def test_small_private_elements_are_kept_and_written(tmp_path):
    make_ct_series(tmp_path / "in", n=2, tweak=lambda ds, k: add_private(ds, 1000))
    vol = read_dicom(tmp_path / "in")
    assert len(vol.headers[0][0x00291010].value) == 1000
    out = write_dicom(vol.hu, vol, tmp_path / "out")
    assert len(pydicom.dcmread(_files(out)[0])[0x00291010].value) == 1000


def test_many_private_elements_are_trimmed_to_the_budget(tmp_path):
    def tweak(ds, k):
        for e in range(12):
            add_private(ds, 40 * 1024, element=e)

    make_ct_series(tmp_path, n=2, tweak=tweak)
    for h in read_dicom(tmp_path).headers:
        private = [h[t] for t in h.keys() if t.is_private and not t.is_private_creator]
        assert 0 < sum(len(e.value) for e in private) <= PRIVATE_BUDGET
        assert len(private) == PRIVATE_BUDGET // (40 * 1024)


@pytest.mark.parametrize("vr", ["UN", "UT"])
def test_bulk_elements_of_any_vr_are_dropped(tmp_path, vr):
    make_ct_series(tmp_path, n=2, tweak=lambda ds, k: add_private(ds, 2 * BULK_LIMIT, vr=vr))
    assert all(0x00291010 not in h for h in read_dicom(tmp_path).headers)


def test_bulk_overlays_and_icon_images_are_dropped_whole(tmp_path):
    def tweak(ds, k):
        for group, side in ((0x6000, 1024), (0x6002, 64)):  # 128 KiB and 512 bytes of overlay bits
            ds.add_new((group << 16) | 0x0010, "US", side)
            ds.add_new((group << 16) | 0x0011, "US", side)
            ds.add_new((group << 16) | 0x0040, "CS", "G")
            ds.add_new((group << 16) | 0x0050, "SS", [1, 1])
            ds.add_new((group << 16) | 0x0100, "US", 1)
            ds.add_new((group << 16) | 0x0102, "US", 0)
            ds.add_new((group << 16) | 0x3000, "OW", b"\x55" * (side * side // 8))
        icon = pydicom.Dataset()
        icon.Rows = icon.Columns = 8
        ds.IconImageSequence = [icon]

    make_ct_series(tmp_path / "in", n=2, tweak=tweak)
    vol = read_dicom(tmp_path / "in")
    for h in vol.headers:
        assert not [t for t in h.keys() if t.group == 0x6000]  # the whole overlay module goes
        assert len(h[0x60023000].value) == 512 and h[0x60020010].value == 64  # a small one stays
        assert "IconImageSequence" not in h
    out = write_dicom(vol.hu, vol, tmp_path / "out")
    ds = pydicom.dcmread(_files(out)[0])
    assert 0x60000010 not in ds and ds.overlay_array(0x6002).shape == (64, 64)


def test_a_full_size_modality_lut_is_kept_and_applied(tmp_path):
    def tweak(ds, k):
        del ds.RescaleSlope, ds.RescaleIntercept
        item = pydicom.Dataset()
        item.LUTDescriptor = [0, 0, 16]  # 0: 65536 entries, 128 KiB of LUTData
        item.add_new(0x00283006, "OW", (np.arange(65536, dtype="<u2") // 2).tobytes())
        item.ModalityLUTType = "HU"
        ds.ModalityLUTSequence = [item]

    make_ct_series(tmp_path, n=2, rows=8, cols=8, bits_stored=16, tweak=tweak, seed=3)
    stored = {p.name: pydicom.dcmread(p).pixel_array for p in _files(tmp_path)}
    vol = read_dicom(tmp_path)
    assert len(vol.headers[0].ModalityLUTSequence[0].LUTData) in (65536, 131072)
    assert sorted(vol.hu.ravel().tolist()) == sorted(
        (np.concatenate([v.ravel() for v in stored.values()]) // 2).astype(float).tolist()
    )


def test_truncated_inside_a_skipped_bulk_element_is_an_error(tmp_path):
    make_ct_series(tmp_path, n=2, shuffle=False, tweak=lambda ds, k: add_private(ds, 4 * BULK_LIMIT))
    victim = _files(tmp_path)[1]
    data = victim.read_bytes()
    start = data.index(b"CTDN FACTORY")
    victim.write_bytes(data[: start + 2 * BULK_LIMIT])  # cut inside the private element
    with pytest.raises(DicomError, match="truncated"):
        read_dicom(tmp_path)


def test_deflated_files_with_bulk_elements_are_read(tmp_path):
    pytest.importorskip("zlib")
    hu = make_ct_series(
        tmp_path,
        n=2,
        transfer_syntax=pydicom.uid.DeflatedExplicitVRLittleEndian,
        tweak=lambda ds, k: add_private(ds, 2 * BULK_LIMIT),
    )
    vol = read_dicom(tmp_path)
    np.testing.assert_array_equal(vol.hu, hu)
    assert all(0x00291010 not in h for h in vol.headers)


# ---------------------------------------------------------------------------------------------
# Item 16: a derived series says it was processed, and by what
def _lossy(ds, k):
    item = pydicom.Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "113040", "DCM", "Lossy Compression"
    ds.DerivationCodeSequence = [item]
    scanner = pydicom.Dataset()
    scanner.Manufacturer = "Scanner Inc"
    ds.ContributingEquipmentSequence = [scanner]


def test_derived_series_records_the_processing(tmp_path):
    make_ct_series(tmp_path / "in", n=3, tweak=_lossy)
    vol = read_dicom(tmp_path / "in")
    before = datetime.datetime.now().replace(microsecond=0)
    out = write_dicom(vol.hu, vol, tmp_path / "out", derivation="Denoised by ctdn, dose 0.25", model="edge")
    after = datetime.datetime.now()
    for p in _files(out):
        ds = pydicom.dcmread(p)
        codes = [(c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning) for c in ds.DerivationCodeSequence]
        assert codes == [("113040", "DCM", "Lossy Compression"), ("113087", "DCM", "Smoothing")]
        scanner, ctdn = ds.ContributingEquipmentSequence
        assert scanner.Manufacturer == "Scanner Inc"
        assert ctdn.Manufacturer == "ctdn" and ctdn.ManufacturerModelName == "edge"
        assert ctdn.SoftwareVersions == __version__
        assert ctdn.ContributionDescription == "Denoised by ctdn, dose 0.25"
        (purpose,) = ctdn.PurposeOfReferenceCodeSequence
        assert (purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning) == (
            "109103",
            "DCM",
            "Modifying Equipment",
        )
        when = datetime.datetime.strptime(ctdn.ContributionDateTime, "%Y%m%d%H%M%S")
        assert before <= when <= after
        assert ctdn["ContributionDateTime"].VR == "DT" and ctdn["SoftwareVersions"].VR == "LO"


def test_processing_again_adds_equipment_not_a_second_code(tmp_path):
    make_ct_series(tmp_path / "in", n=2)
    vol = read_dicom(tmp_path / "in")
    once = read_dicom(write_dicom(vol.hu, vol, tmp_path / "once"))
    twice = write_dicom(once.hu, once, tmp_path / "twice", model="other")
    ds = pydicom.dcmread(_files(twice)[0])
    assert [c.CodeValue for c in ds.DerivationCodeSequence] == ["113087"]
    first, second = ds.ContributingEquipmentSequence
    assert "ManufacturerModelName" not in first and second.ManufacturerModelName == "other"


def test_derivation_code_can_be_another_or_none(tmp_path):
    make_ct_series(tmp_path / "in", n=1, tweak=_lossy)
    vol = read_dicom(tmp_path / "in")
    none = pydicom.dcmread(_files(write_dicom(vol.hu, vol, tmp_path / "a", derivation_code=None))[0])
    assert [c.CodeValue for c in none.DerivationCodeSequence] == ["113040"]  # only the source's
    assert none.ContributingEquipmentSequence[-1].Manufacturer == "ctdn"
    code = ("113085", "DCM", "Spatial resampling")
    other = pydicom.dcmread(_files(write_dicom(vol.hu, vol, tmp_path / "b", derivation_code=code))[0])
    assert [c.CodeMeaning for c in other.DerivationCodeSequence] == [
        "Lossy Compression",
        "Spatial resampling",
    ]
    for bad in [("113087", "DCM"), ("113087", "", "Smoothing"), ["113087", "DCM", "Smoothing"]]:
        with pytest.raises(InputTypeError, match="derivation_code"):
            write_dicom(vol.hu, vol, tmp_path / "c", derivation_code=bad)
    assert not (tmp_path / "c").exists()


def test_model_names_are_checked_and_made_valid(tmp_path):
    make_ct_series(tmp_path / "in", n=1)
    vol = read_dicom(tmp_path / "in")
    with pytest.raises(InputTypeError, match="model must be a string"):
        write_dicom(vol.hu, vol, tmp_path / "bad", model=Path("edge.safetensors"))
    out = write_dicom(vol.hu, vol, tmp_path / "out", model="a\\b\n" + "x" * 100)
    name = pydicom.dcmread(_files(out)[0]).ContributingEquipmentSequence[-1].ManufacturerModelName
    assert name == "a b " + "x" * 60 and len(name) == 64


# ---------------------------------------------------------------------------------------------
# Item 6: padding pixels come out exactly as they went in
ROWS = COLS = 24


def _padded_series(folder, *, pad, limit=None, signed=True, bits=16, intercept=-1024.0, seed=0, vr=None):
    """A series whose ring (``ring_mask``) holds padding: ``pad`` (or random values in
    ``pad..limit``); the disc inside holds soft tissue, stored well away from the padding."""
    rng = np.random.default_rng(seed)
    ring = ring_mask(ROWS, COLS)
    stored = rng.integers(1000, 1100, size=(3, ROWS, COLS))  # about 0..76 HU
    lo, hi = sorted((pad, pad if limit is None else limit))
    stored[:, ring] = rng.integers(lo, hi, size=(3, int(ring.sum())), endpoint=True)

    def tweak(ds, k):
        ds.add_new(0x00280120, vr or ("SS" if signed else "US"), pad)
        if limit is not None:
            ds.add_new(0x00280121, vr or ("SS" if signed else "US"), limit)

    make_ct_series(
        folder,
        n=3,
        rows=ROWS,
        cols=COLS,
        stored=stored,
        signed=signed,
        bits_stored=bits,
        intercept=intercept,
        tweak=tweak,
    )
    return ring


def _stored(folder: Path) -> dict[int, np.ndarray]:
    """Stored values of a written series by InstanceNumber (write_dicom keeps like's order)."""
    return {int(ds.InstanceNumber): ds.pixel_array for ds in map(pydicom.dcmread, _files(folder))}


def _check_padding_kept(src: Path, out: Path, ring: np.ndarray, header: dict[str, int]) -> None:
    """Each written slice's ring holds exactly its source slice's stored values, and its header
    still names the padding."""
    source = {str(ds.SOPInstanceUID): ds.pixel_array for ds in map(pydicom.dcmread, _files(src))}
    assert len(_files(out)) == len(source)
    for p in _files(out):
        ds = pydicom.dcmread(p)
        old = source[ds.SourceImageSequence[0].ReferencedSOPInstanceUID]
        np.testing.assert_array_equal(ds.pixel_array[ring], old[ring])
        for keyword, value in header.items():
            assert ds[keyword].value == value, keyword


@pytest.mark.parametrize("reader", READERS)
def test_padding_value_is_written_back_exactly(tmp_path, reader):
    ring = _padded_series(tmp_path / "in", pad=-2000)  # -3024 HU
    vol = (
        reader(tmp_path / "in", scratch_dir=tmp_path)
        if reader is read_dicom_mapped
        else reader(tmp_path / "in")
    )
    assert np.all(vol.hu[:, ring] == -3024)
    new = np.asarray(vol.hu).copy()
    new[:, ring] = -1000.0  # what a denoiser might make of the padding
    new[:, ~ring] += 7.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = write_dicom(new, vol, tmp_path / "out")
    _check_padding_kept(tmp_path / "in", out, ring, {"PixelPaddingValue": -2000})
    back = read_dicom(out)
    np.testing.assert_array_equal(back.hu[:, ~ring], new[:, ~ring])
    assert np.all(back.hu[:, ring] == -3024)


@pytest.mark.parametrize(("pad", "limit", "signed"), [(-2000, -1030, True), (0, 10, False), (10, 0, False)])
def test_padding_range_keeps_each_pixels_own_value(tmp_path, pad, limit, signed):
    ring = _padded_series(tmp_path / "in", pad=pad, limit=limit, signed=signed)
    vol = read_dicom(tmp_path / "in")
    new = vol.hu.copy()
    new[:, ring] = np.random.default_rng(1).uniform(-1000, 1000, size=new[:, ring].shape)
    out = write_dicom(new, vol, tmp_path / "out")
    _check_padding_kept(
        tmp_path / "in", out, ring, {"PixelPaddingValue": pad, "PixelPaddingRangeLimit": limit}
    )


def test_padding_value_written_with_the_other_vr_is_understood(tmp_path):
    ring = _padded_series(tmp_path / "in", pad=65536 - 2000, vr="US")  # -2000 as unsigned 16 bits
    vol = read_dicom(tmp_path / "in")
    new = vol.hu.copy()
    new[:, ring] = -1000.0
    out = write_dicom(new, vol, tmp_path / "out")
    for stored in _stored(out).values():
        assert np.all(stored[ring] == -2000)


def test_image_pixels_are_moved_out_of_the_padding_range(tmp_path):
    ring = _padded_series(tmp_path / "in", pad=0, limit=10, signed=False)  # -1024..-1014 HU
    vol = read_dicom(tmp_path / "in")
    new = vol.hu.copy()
    new[:, ~ring] = -1020.0  # stored 4: inside the padding range
    new[0, 12, 12] = -1014.0  # stored 10, the range's top
    with pytest.warns(UserWarning, match=r"less the padding values 0\.\.10") as caught:
        out = write_dicom(new, vol, tmp_path / "out")
    assert f"{3 * int((~ring).sum())} value(s)" in str(caught[0].message)
    for stored in _stored(out).values():
        assert np.all(stored[~ring] == 11)  # 11 is the nearest stored value that is not padding


def test_signed_image_pixel_on_the_padding_value_moves_to_a_neighbour(tmp_path):
    ring = _padded_series(tmp_path / "in", pad=-2000, bits=12)
    vol = read_dicom(tmp_path / "in")
    new = vol.hu.copy()
    new[:, 12, 12] = -3024.0  # stored -2000 on an image pixel
    new[:, 12, 13] = -3025.0  # stored -2001: not padding, kept
    with pytest.warns(UserWarning, match="clipped"):
        out = write_dicom(new, vol, tmp_path / "out")
    for stored in _stored(out).values():
        assert abs(int(stored[12, 12]) + 2000) == 1 and stored[12, 13] == -2001
        assert np.all(stored[ring] == -2000)


def test_modality_lut_source_drops_its_padding_attributes(tmp_path):
    def tweak(ds, k):
        _lut(ds, k)
        ds.add_new(0x00280120, "US", 0)

    make_ct_series(tmp_path / "in", n=2, tweak=tweak)
    vol = read_dicom(tmp_path / "in")
    out = write_dicom(vol.hu, vol, tmp_path / "out")
    ds = pydicom.dcmread(_files(out)[0])
    assert "PixelPaddingValue" not in ds and "ModalityLUTSequence" not in ds


def test_cli_keeps_the_padding_ring(tmp_path, capsys):
    from ctdn.cli import main
    from ctdn.models import build, save_model

    model = save_model(build("tiny"), tmp_path / "tiny.safetensors", {"name": "tiny"})
    ring = _padded_series(tmp_path / "in", pad=0, signed=False)  # -1024 HU: inside the model's window
    out = tmp_path / "out"
    code = main(
        ["denoise", str(tmp_path / "in"), str(out), "--dose", "0.25", "--model", str(model), "--quiet"]
    )
    assert code == 0, capsys.readouterr().err
    _check_padding_kept(tmp_path / "in", out, ring, {"PixelPaddingValue": 0})
