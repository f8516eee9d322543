"""Write the malformed-DICOM regression corpus: ``python tests/corpus/make_corpus.py``.

Every case is a small (16 x 16) file or series folder under ``tests/corpus/dicom/<case>/`` with
an entry in ``tests/corpus/manifest.json`` saying what is wrong with it and what
:func:`ctdn.io.read_dicom` must do with it:

* ``{"error": "DicomError", "match": "..."}``: raise that :class:`ctdn.errors.CTDNError`
  subclass, whose message contains ``match`` (case-insensitive) when given;
* ``{"ok": "<key>"}``: return exactly the HU volume stored under ``<key>`` in
  ``tests/corpus/expected.npz``. Those volumes are computed here from the values written and
  the DICOM rules (masking to BitsStored, sign extension, slope/intercept), never by the reader;
* ``{"error_or_ok": "DicomError", "shape": [...]}`` (random corruption of header bytes): either
  that error or a finite float32 volume of that shape (equal to the volume under ``hu`` in
  ``expected.npz`` when that is given); anything else is a bug.

``path`` is relative to ``tests/corpus``; ``files`` (a list) replaces it where the case is a
list of files; ``kwargs`` are passed on to ``read_dicom``.

The output is deterministic: UIDs come from a counter, random bytes from fixed seeds. The old
``dicom/`` folder is deleted first.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import dicom_factory  # noqa: E402
from dicom_factory import make_ct_series  # noqa: E402

SIZE = 16
ROOT = HERE / "dicom"
_UID_COUNT = [0]


def _uid(prefix: str = "1.2.826.0.1.3680043.8.498.", **_) -> str:
    _UID_COUNT[0] += 1
    return f"{prefix}77{_UID_COUNT[0]:06d}"


dicom_factory.generate_uid = _uid  # deterministic SOP/series UIDs

CASES: list[dict] = []
EXPECTED: dict[str, np.ndarray] = {}


def _add(name: str, category: str, what: str, expect: dict, *, path=None, files=None, kwargs=None):
    assert not any(c["case"] == name for c in CASES), name
    entry = {"case": name, "category": category, "what": what, "expect": expect}
    if files is not None:
        entry["files"] = [str(Path(f).relative_to(HERE)) for f in files]
    else:
        entry["path"] = str(Path(path).relative_to(HERE))
    if kwargs:
        entry["kwargs"] = kwargs
    CASES.append(entry)


def err(match: str | None = None, kind: str = "DicomError") -> dict:
    return {"error": kind, **({"match": match} if match else {})}


def ok(name: str, hu: np.ndarray) -> dict:
    EXPECTED[name] = np.asarray(hu, dtype=np.float32)
    return {"ok": name}


def _stored(seed: int, n: int = 1, bits: int = 12, signed: bool = False) -> np.ndarray:
    lo, hi = dicom_factory.stored_range(bits, signed)
    rng = np.random.default_rng(1000 + seed)
    return rng.integers(lo, hi, size=(n, SIZE, SIZE), endpoint=True, dtype=np.int64)


def series(name: str, n: int = 1, **kw) -> tuple[Path, np.ndarray]:
    """A folder with a (by default) single-file 16x16 CT series; (folder, expected HU)."""
    folder = ROOT / name
    if kw.get("positions") is not None:
        n = len(kw["positions"])
    kw.setdefault("shuffle", False)
    kw.setdefault("stored", _stored(len(CASES), n, kw.get("bits_stored", 12), kw.get("signed", False)))
    hu = make_ct_series(folder, n=n, rows=kw.pop("rows", SIZE), cols=kw.pop("cols", SIZE), **kw)
    return folder, hu


def one(name: str, **kw) -> tuple[Path, np.ndarray]:
    folder, hu = series(name, 1, **kw)
    (path,) = sorted(folder.glob("*.dcm"))
    return path, hu


def _single_path(folder: Path) -> Path:
    (path,) = sorted(folder.glob("*.dcm"))
    return path


def patch(path: Path, old: bytes, new: bytes) -> None:
    """Replace the one occurrence of ``old`` in the file by ``new`` (same length)."""
    data = path.read_bytes()
    assert data.count(old) == 1, (path, old, data.count(old))
    assert len(old) == len(new), (old, new)
    path.write_bytes(data.replace(old, new))


def pixel_offset(data: bytes, little: bool = True) -> int:
    """Offset of the first byte of the PixelData value (explicit VR, 32-bit length)."""
    tag = b"\xe0\x7f\x10\x00" if little else b"\x7f\xe0\x00\x10"
    i = data.rfind(tag)
    assert i > 0
    return i + 12


def delete(*keywords):
    def tweak(ds, k):
        for kw in keywords:
            if kw in ds:
                delattr(ds, kw)

    return tweak


def setting(**values):
    def tweak(ds, k):
        for kw, v in values.items():
            setattr(ds, kw, v)

    return tweak


def hu_of(stored, slope=1.0, intercept=-1024.0) -> np.ndarray:
    return (np.asarray(stored, dtype=np.float64) * slope + intercept).astype(np.float32)


# ---------------------------------------------------------------------------------------------
def truncated() -> None:
    cat = "truncated"
    src, _ = one("_base_truncated")
    data = src.read_bytes()
    shutil.rmtree(src.parent)
    px = pixel_offset(data)
    offsets = sorted(
        {0, 1, 2, 64, 127, 128, 129, 131, 132, 133, 136, 140, 150, 160, 180, 200}
        | {int(v) for v in np.linspace(220, px - 13, 14)}
        | {px - 12, px - 8, px - 4, px - 1, px, px + 1, px + 2, px + 100, len(data) - 2, len(data) - 1}
    )
    for off in offsets:
        name = f"trunc_le_{off:04d}"
        path = ROOT / name / "CT000.dcm"
        path.parent.mkdir(parents=True)
        path.write_bytes(data[:off])
        _add(
            name,
            cat,
            f"explicit VR little endian file cut to its first {off} of {len(data)} bytes",
            err(),
            path=path,
        )
    for ts, tag in ((ExplicitVRBigEndian, "be"), (ImplicitVRLittleEndian, "implicit")):
        src, _ = one(f"_base_trunc_{tag}", transfer_syntax=ts)
        data = src.read_bytes()
        shutil.rmtree(src.parent)
        for off in (200, len(data) // 2, len(data) - 300, len(data) - 1):
            name = f"trunc_{tag}_{off:04d}"
            path = ROOT / name / "CT000.dcm"
            path.parent.mkdir(parents=True)
            path.write_bytes(data[:off])
            _add(name, cat, f"{tag} file cut to {off} of {len(data)} bytes", err(), path=path)
    for frac in (0.1, 0.5, 0.9, 0.999):
        name = f"trunc_in_series_{int(frac * 1000):03d}"
        folder, _ = series(name, 3, shuffle=True, seed=3)
        victim = sorted(folder.glob("*.dcm"))[1]
        data = victim.read_bytes()
        victim.write_bytes(data[: int(len(data) * frac)])
        _add(
            name,
            cat,
            f"3-slice folder with one file cut to {frac:.1%} of its bytes (never silently skipped)",
            err(),
            path=folder,
        )


def corrupted() -> None:
    cat = "corrupted"
    src, hu = one("_base_corrupt", stored=_stored(7))
    data = src.read_bytes()
    shutil.rmtree(src.parent)
    px = pixel_offset(data)
    EXPECTED["corrupt_base"] = hu
    # random bytes over the header (file meta and data set, before the pixel values)
    for seed in range(40):
        rng = np.random.default_rng(seed)
        buf = bytearray(data)
        k = int(rng.integers(1, 9))
        for off in rng.integers(132, px, size=k):
            buf[int(off)] = int(rng.integers(0, 256))
        name = f"corrupt_header_{seed:02d}"
        path = ROOT / name / "CT000.dcm"
        path.parent.mkdir(parents=True)
        path.write_bytes(bytes(buf))
        _add(
            name,
            cat,
            f"{k} random byte(s) overwritten in the header (seed {seed}); if it reads, the same image",
            {"error_or_ok": "DicomError", "shape": [1, SIZE, SIZE], "hu": "corrupt_base"},
            path=path,
        )
    # random bytes over the pixel values: the image changes, and must be read as the bytes say
    stored = _stored(7)[0].astype("<u2")
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        buf = bytearray(data)
        k = int(rng.integers(1, 40))
        for off in rng.integers(px, px + 2 * SIZE * SIZE, size=k):
            buf[int(off)] = int(rng.integers(0, 256))
        values = np.frombuffer(bytes(buf[px : px + 2 * SIZE * SIZE]), "<u2").reshape(1, SIZE, SIZE) & 0x0FFF
        name = f"corrupt_pixels_{seed:02d}"
        path = ROOT / name / "CT000.dcm"
        path.parent.mkdir(parents=True)
        path.write_bytes(bytes(buf))
        _add(
            name,
            cat,
            f"{k} random byte(s) overwritten in the pixel values (seed {seed}); 12 bits stored",
            ok(name, hu_of(values)),
            path=path,
        )
    assert stored is not None

    def raw(name, what, buf, expect):
        path = ROOT / name / "CT000.dcm"
        path.parent.mkdir(parents=True)
        path.write_bytes(bytes(buf))
        _add(name, cat, what, expect, path=path)

    buf = bytearray(data)
    buf[:128] = bytes(np.random.default_rng(5).integers(0, 256, 128, dtype=np.uint8))
    raw(
        "corrupt_preamble",
        "random bytes in the 128-byte preamble (it is free-form)",
        buf,
        ok("corrupt_preamble", hu),
    )
    for i, marker in enumerate((b"DICN", b"dicm", b"\0\0\0\0")):
        buf = bytearray(data)
        buf[128:132] = marker
        raw(f"corrupt_marker_{i}", f"'DICM' marker replaced by {marker!r}", buf, err("not a DICOM file"))
    # length fields of data elements set to absurd values
    for name, length in (("huge", 0xFFFFFFF0), ("odd", 0x00000801), ("undefined", 0xFFFFFFFF)):
        buf = bytearray(data)
        buf[px - 4 : px] = struct.pack("<I", length)
        raw(f"corrupt_pixel_length_{name}", f"PixelData length field set to {length:#x}", buf, err())
    i = data.find(b"\x28\x00\x10\x00US")  # Rows
    for v in (0, 1, 0xFFFF):
        buf = bytearray(data)
        buf[i + 8 : i + 10] = struct.pack("<H", v)
        raw(f"corrupt_rows_{v}", f"Rows value bytes set to {v} (pixel data holds 16x16)", buf, err())
    buf = bytearray(data)
    buf[i + 4 : i + 6] = b"XX"
    raw("corrupt_vr_rows", "VR of Rows replaced by the unknown 'XX'", buf, err())
    buf = bytearray(data)
    buf[i + 6 : i + 8] = struct.pack("<H", 0xFFF0)
    raw("corrupt_len_rows", "length of Rows set to 65520 (runs over the rest of the file)", buf, err())
    j = data.find(b"\x02\x00\x10\x00UI")  # TransferSyntaxUID
    buf = bytearray(data)
    buf[j + 8 : j + 12] = b"9.9."
    raw(
        "corrupt_ts_uid",
        "TransferSyntaxUID bytes overwritten (an unknown UID)",
        buf,
        err("TransferSyntaxUID"),
    )
    buf = bytearray(data)
    buf[132:140] = b"\xff" * 8
    raw("corrupt_meta_start", "the first file-meta element header overwritten with 0xFF", buf, err())
    buf = bytearray(data) + bytes(np.random.default_rng(9).integers(0, 256, 333, dtype=np.uint8))
    raw("corrupt_trailing_garbage", "333 random bytes appended after the pixel data", buf, err())
    buf = bytearray(data)
    buf[132:px] = bytes(np.random.default_rng(11).integers(0, 256, px - 132, dtype=np.uint8))
    raw("corrupt_whole_header", "every header byte after the marker random", buf, err())
    raw(
        "corrupt_all_random",
        "1000 random bytes after a valid preamble and marker",
        data[:132] + bytes(np.random.default_rng(12).integers(0, 256, 1000, dtype=np.uint8)),
        err(),
    )
    raw(
        "corrupt_all_zero", "a valid preamble and marker then 800 zero bytes", data[:132] + b"\0" * 800, err()
    )
    raw(
        "not_dicom_text",
        "a text file named .dcm",
        b"hello, this is not DICOM\n" * 20,
        err("not a DICOM file"),
    )
    raw(
        "not_dicom_png",
        "a PNG signature named .dcm",
        b"\x89PNG\r\n\x1a\n" + b"\0" * 200,
        err("not a DICOM file"),
    )
    raw("empty_file", "an empty .dcm file", b"", err("not a DICOM file"))


def missing_tags() -> None:
    cat = "missing tag"
    st = _stored(21)
    for kw, slope, intercept in (
        ("RescaleSlope", 1.0, -1024.0),
        ("RescaleIntercept", 2.0, 0.0),
    ):
        name = f"missing_{kw}"
        folder, _ = series(name, stored=st, slope=2.0 if kw == "RescaleIntercept" else 1.0, tweak=delete(kw))
        _add(
            name,
            cat,
            f"no {kw}: the default ({'1' if kw == 'RescaleSlope' else '0'}) applies",
            ok(name, hu_of(st, slope, intercept)),
            path=_single_path(folder),
        )
    name = "missing_rescale_both"
    folder, _ = series(name, stored=st, tweak=delete("RescaleSlope", "RescaleIntercept", "RescaleType"))
    _add(
        name,
        cat,
        "no RescaleSlope/RescaleIntercept: stored values as they are",
        ok(name, hu_of(st, 1.0, 0.0)),
        path=_single_path(folder),
    )
    for kw in ("Rows", "Columns"):
        name = f"missing_{kw}"
        folder, _ = series(name, tweak=delete(kw))
        _add(name, cat, f"CT image without {kw}", err("Rows/Columns"), path=_single_path(folder))
    for kw in (
        "BitsAllocated",
        "BitsStored",
        "PixelRepresentation",
        "PhotometricInterpretation",
        "SamplesPerPixel",
    ):
        name = f"missing_{kw}"
        folder, _ = series(name, tweak=delete(kw))
        _add(name, cat, f"no {kw} (required to decode the pixels)", err(kw), path=_single_path(folder))
    name = "missing_PixelData"
    folder, _ = series(name, pixel_data=False)
    _add(name, cat, "no PixelData element", err("no pixel data"), path=_single_path(folder))
    for kw in ("Modality",):
        name = f"missing_{kw}"
        folder, _ = series(name, tweak=delete(kw))
        _add(name, cat, "no Modality: not known to be CT", err("no Modality"), path=_single_path(folder))
    for kw, warn in (
        ("SOPClassUID", False),
        ("SeriesInstanceUID", False),
        ("HighBit", False),
        ("ImagePositionPatient", False),
        ("ImageOrientationPatient", False),
        ("PixelSpacing", True),
        ("SliceThickness", True),
        ("InstanceNumber", False),
        ("WindowCenter", False),
    ):
        name = f"missing_{kw}"
        folder, hu = series(name, stored=st, tweak=delete(kw))
        _add(
            name,
            cat,
            f"single slice without {kw} (not needed for one slice{'; warns' if warn else ''})",
            ok(name, hu),
            path=_single_path(folder),
        )
    name = "missing_TransferSyntaxUID"

    def no_ts(ds, k):
        del ds.file_meta.TransferSyntaxUID

    folder, hu = series(name, stored=st, tweak=no_ts)
    _add(
        name,
        cat,
        "file meta without TransferSyntaxUID (pydicom deduces explicit VR little endian)",
        ok(name, hu),
        path=_single_path(folder),
    )
    name = "missing_positions_in_series"
    folder, hu = series(name, 3, stored=_stored(22, 3), with_positions=False)
    # without positions the slices are ordered by InstanceNumber; the factory numbers them by position
    _add(
        name,
        cat,
        "3 slices without ImagePositionPatient/ImageOrientationPatient: InstanceNumber order",
        ok(name, hu),
        path=folder,
    )
    name = "missing_positions_and_instance"
    folder, _ = series(name, 3, with_positions=False, tweak=delete("InstanceNumber"))
    _add(name, cat, "3 slices with neither positions nor InstanceNumber", err("cannot order"), path=folder)
    name = "missing_one_orientation"
    folder, hu = series(
        name,
        3,
        stored=_stored(23, 3),
        tweak=lambda ds, k: delete("ImageOrientationPatient")(ds, k) if k == 1 else None,
    )
    _add(
        name,
        cat,
        "one slice of 3 without ImageOrientationPatient: falls back to InstanceNumber order",
        ok(name, hu),
        path=folder,
    )


def odd_values() -> None:
    cat = "odd value"
    st = _stored(31)

    def one_case(name, what, expect, **kw):
        folder, hu = series(name, **kw)
        _add(name, cat, what, expect(name, hu) if callable(expect) else expect, path=_single_path(folder))

    same = ok  # expect(name, hu) -> the factory's HU
    one_case(
        "slope_zero", "RescaleSlope 0: every pixel would be the intercept", err("RescaleSlope"), slope=0.0
    )
    for v in ("nan", "inf", "-inf"):
        one_case(
            f"slope_{v.strip('-')}{'_neg' if v.startswith('-') else ''}",
            f"RescaleSlope {v}",
            err("RescaleSlope"),
            tweak=setting(RescaleSlope=v),
        )
    for v in ("nan", "inf"):
        one_case(
            f"intercept_{v}",
            f"RescaleIntercept {v}",
            err("RescaleIntercept"),
            tweak=setting(RescaleIntercept=v),
        )
    one_case(
        "slope_multi", "RescaleSlope with two values", err("RescaleSlope"), tweak=setting(RescaleSlope=[1, 2])
    )
    one_case(
        "slope_negative",
        "RescaleSlope -1 (unusual but well defined)",
        lambda n, hu: ok(n, hu_of(st, -1.0, 1000.0)),
        stored=st,
        slope=-1.0,
        intercept=1000.0,
    )
    one_case(
        "slope_tiny",
        "RescaleSlope 1e-6",
        lambda n, hu: ok(n, hu_of(st, 1e-6, -1024.0)),
        stored=st,
        slope=1e-6,
    )
    one_case("slope_overflow", "RescaleSlope 1e36: HU overflow float32", err("non-finite"), slope=1e36)
    one_case("intercept_overflow", "RescaleIntercept 1e39: beyond float32", err("non-finite"), intercept=1e39)
    one_case(
        "slope_fractional",
        "RescaleSlope 0.5, intercept -1000.5",
        lambda n, hu: ok(n, hu_of(st, 0.5, -1000.5)),
        stored=st,
        slope=0.5,
        intercept=-1000.5,
    )
    for name, v in (("slope_text", b"abc "), ("slope_empty", b"    ")):
        folder, _ = series(name, slope=7.25)
        path = _single_path(folder)
        patch(path, b"DS\x04\x007.25", b"DS\x04\x00" + v)
        expect = err("RescaleSlope") if name == "slope_text" else ok(name, hu_of(_stored_from(path), 1.0))
        _add(name, cat, f"RescaleSlope bytes {v!r}", expect, path=path)
    # image size against the pixel data
    for name, kw, v in (
        ("rows_zero", "Rows", 0),
        ("columns_zero", "Columns", 0),
        ("rows_one_less", "Rows", SIZE - 1),
        ("rows_half", "Rows", SIZE // 2),
        ("rows_one_more", "Rows", SIZE + 1),
        ("rows_double", "Rows", 2 * SIZE),
        ("columns_one_less", "Columns", SIZE - 1),
        ("columns_double", "Columns", 2 * SIZE),
        ("rows_max", "Rows", 0xFFFF),
    ):
        one_case(name, f"{kw} {v} but the pixel data holds {SIZE}x{SIZE}", err(), tweak=setting(**{kw: v}))
    name = "rows_columns_max_series"
    folder, _ = series(name, 3, tweak=setting(Rows=0xFFFF, Columns=0xFFFF))
    _add(
        name,
        cat,
        "3 slices claiming 65535 x 65535 with 16 x 16 pixel data (no 48 GiB allocation)",
        err("does not match"),
        path=folder,
    )
    for name, data_len in (
        ("pixels_empty", 0),
        ("pixels_short", 2 * SIZE * SIZE - 64),
        ("pixels_long", 2 * SIZE * SIZE + 64),
        ("pixels_one_row_short", 2 * SIZE * (SIZE - 1)),
    ):

        def cut(ds, k, n=data_len):
            raw = ds.PixelData
            ds.PixelData = (raw + b"\0" * max(0, n - len(raw)))[:n]

        one_case(
            name,
            f"PixelData of {data_len} bytes for {SIZE}x{SIZE}x16 bits ({2 * SIZE * SIZE})",
            err(),
            tweak=cut,
        )
    name = "pixels_odd_padded"
    st_odd = st.copy()

    def odd(ds, k):
        ds.PixelData = ds.PixelData[:-1]  # pydicom pads it back to even with a zero byte

    folder, _ = series(name, stored=st_odd, tweak=odd)
    st_odd[0, -1, -1] &= 0x00FF
    _add(
        name,
        cat,
        "PixelData one byte short before the writer's even-length padding (last byte 0)",
        ok(name, hu_of(st_odd)),
        path=_single_path(folder),
    )
    for v in (0, 8, 12, 24, 32, 64):
        one_case(
            f"bits_allocated_{v}",
            f"BitsAllocated {v} for 16-bit pixel data",
            err(),
            tweak=setting(BitsAllocated=v),
        )
    for v in (0, 17, 32):
        one_case(
            f"bits_stored_{v}",
            f"BitsStored {v} with BitsAllocated 16",
            err("Bits Stored"),
            tweak=setting(BitsStored=v),
        )
    one_case(
        "high_bit_15",
        "HighBit 15 with BitsStored 12 (HighBit is not used to decode)",
        same,
        stored=st,
        tweak=setting(HighBit=15),
    )
    one_case(
        "pixel_representation_2",
        "PixelRepresentation 2",
        err("Pixel Representation"),
        tweak=setting(PixelRepresentation=2),
    )
    for v in ("RGB", "PALETTE COLOR", "YBR_FULL", "ARGB", "BOGUS"):
        one_case(
            f"photometric_{v.replace(' ', '_').lower()}",
            f"PhotometricInterpretation {v} on a CT slice",
            err("PhotometricInterpretation"),
            tweak=setting(PhotometricInterpretation=v),
        )
    one_case(
        "photometric_monochrome1",
        "MONOCHROME1 (display inversion only; HU unchanged)",
        same,
        stored=st,
        tweak=setting(PhotometricInterpretation="MONOCHROME1"),
    )
    for v in (0, 3):
        one_case(
            f"samples_per_pixel_{v}",
            f"SamplesPerPixel {v}",
            err("samples per pixel"),
            tweak=setting(SamplesPerPixel=v),
        )
    for name, v, expect in (
        ("pixel_spacing_zero", [0.0, 0.8], err("PixelSpacing")),
        ("pixel_spacing_negative", [-0.75, 0.8], err("PixelSpacing")),
        ("pixel_spacing_one_value", [0.75], err("PixelSpacing")),
        ("pixel_spacing_nan", ["nan", 0.8], err("PixelSpacing")),
        ("pixel_spacing_three", [0.75, 0.8, 1.0], err("PixelSpacing")),
    ):
        one_case(name, f"PixelSpacing {v}", expect, tweak=setting(PixelSpacing=v))
    one_case(
        "slice_thickness_negative",
        "SliceThickness -2.5 on a single slice (warns, assumes 1 mm)",
        same,
        stored=st,
        slice_thickness=-2.5,
    )
    for name, v in (("instance_number_text", b"x "), ("window_center_text", b"ab")):
        folder, hu = series(
            name,
            stored=st,
            tweak=setting(**{"InstanceNumber" if name.startswith("instance") else "WindowCenter": "98"}),
        )
        path = _single_path(folder)
        vr = b"IS" if name.startswith("instance") else b"DS"
        patch(path, vr + b"\x02\x0098", vr + b"\x02\x00" + v)
        _add(
            name,
            cat,
            f"{name.split('_text')[0]} holds {v!r} (not needed for one slice)",
            ok(name, hu),
            path=path,
        )
    name = "series_uid_text_bad"
    folder, _ = series(name, series_uid="1.2.3.444444")
    path = _single_path(folder)
    patch(path, b"1.2.3.444444", b"1.2.3.44\xff\xfe44")
    _add(
        name,
        cat,
        "SeriesInstanceUID with non-ASCII bytes",
        {"error_or_ok": "DicomError", "shape": [1, SIZE, SIZE]},
        path=path,
    )


def _stored_from(path: Path) -> np.ndarray:
    data = path.read_bytes()
    px = pixel_offset(data)
    return np.frombuffer(data[px : px + 2 * SIZE * SIZE], "<u2").reshape(1, SIZE, SIZE).astype(np.int64)


def bits_stored() -> None:
    cat = "BitsStored < BitsAllocated"
    for bits in (8, 10, 12, 15):
        st = _stored(40 + bits, bits=bits)
        name = f"bits{bits}_unsigned_clean"
        folder, hu = series(name, stored=st, bits_stored=bits)
        _add(
            name,
            cat,
            f"unsigned {bits} of 16 bits, unused high bits zero",
            ok(name, hu),
            path=_single_path(folder),
        )
        garbage = np.random.default_rng(bits).integers(1, 1 << (16 - bits), size=st.shape) << bits
        name = f"bits{bits}_unsigned_high_bits_set"
        folder, _ = series(name, stored=st | garbage, bits_stored=bits)
        _add(
            name,
            cat,
            f"unsigned {bits} of 16 bits with garbage in the unused high bits (must be masked)",
            ok(name, hu_of(st)),
            path=_single_path(folder),
        )
        sst = _stored(50 + bits, bits=bits, signed=True)
        name = f"bits{bits}_signed_extended"
        folder, hu = series(name, stored=sst, bits_stored=bits, signed=True, intercept=0.0)
        _add(
            name,
            cat,
            f"signed {bits} of 16 bits, properly sign-extended",
            ok(name, hu),
            path=_single_path(folder),
        )
        raw = (sst & ((1 << bits) - 1)) | (garbage & 0x7FFF & ~((1 << bits) - 1))
        name = f"bits{bits}_signed_high_bits_garbage"
        folder, _ = series(
            name, stored=raw.astype(np.int16).astype(np.int64), bits_stored=bits, signed=True, intercept=0.0
        )
        _add(
            name,
            cat,
            f"signed {bits} of 16 bits, high bits garbage (sign comes from bit {bits - 1})",
            ok(name, hu_of(sst, 1.0, 0.0)),
            path=_single_path(folder),
        )


def pixel_representation() -> None:
    cat = "PixelRepresentation mismatch"
    sst = _stored(60, bits=16, signed=True)
    name = "pr_signed_data_labelled_unsigned"
    folder, _ = series(
        name,
        stored=sst.astype(np.int16).astype(np.uint16).astype(np.int64),
        bits_stored=16,
        signed=False,
        intercept=0.0,
    )
    _add(
        name,
        cat,
        "two's-complement data labelled PixelRepresentation 0: read as unsigned, as the header says",
        ok(name, hu_of(sst.astype(np.int16).astype(np.uint16), 1.0, 0.0)),
        path=_single_path(folder),
    )
    ust = _stored(61, bits=16)
    name = "pr_unsigned_data_labelled_signed"
    folder, _ = series(
        name,
        stored=ust.astype(np.uint16).astype(np.int16).astype(np.int64),
        bits_stored=16,
        signed=True,
        intercept=0.0,
    )
    _add(
        name,
        cat,
        "unsigned data labelled PixelRepresentation 1: read as signed, as the header says",
        ok(name, hu_of(ust.astype(np.uint16).astype(np.int16), 1.0, 0.0)),
        path=_single_path(folder),
    )
    name = "pr_differs_between_slices"
    st3 = _stored(62, 3)
    folder, hu = series(
        name,
        3,
        stored=st3,
        shuffle=True,
        seed=6,
        tweak=lambda ds, k: setattr(ds, "PixelRepresentation", k % 2),
    )
    _add(
        name,
        cat,
        "3 slices, PixelRepresentation 0/1/0 with 12-bit values below 2048 in the signed one",
        ok(name, _pr_mixed(st3, hu)),
        path=folder,
    )
    name = "pr_signed_12bit_negative_unsigned_label"
    sst = _stored(63, bits=12, signed=True)
    folder, _ = series(name, stored=sst & 0x0FFF, bits_stored=12, signed=False, intercept=0.0)
    _add(
        name,
        cat,
        "signed 12-bit values labelled unsigned: 0..4095 (the header wins)",
        ok(name, hu_of(sst & 0x0FFF, 1.0, 0.0)),
        path=_single_path(folder),
    )
    name = "pr_smallest_pixel_value_mismatch"
    folder, hu = series(
        name, stored=_stored(64), tweak=setting(SmallestImagePixelValue=5, LargestImagePixelValue=7)
    )
    _add(
        name,
        cat,
        "Smallest/LargestImagePixelValue that disagree with the pixels (ignored)",
        ok(name, hu),
        path=_single_path(folder),
    )


def _pr_mixed(st3: np.ndarray, hu: np.ndarray) -> np.ndarray:
    # slice k (in position order) is labelled PixelRepresentation k % 2; signed 12-bit sign-extends bit 11
    out = []
    for k in range(3):
        v = st3[k].copy()
        if k % 2:
            v = np.where(v >= 2048, v - 4096, v)
        out.append(hu_of(v)[None][0])
    return np.stack(out)


def big_endian() -> None:
    cat = "big endian"
    for signed in (False, True):
        name = f"be_{'signed' if signed else 'unsigned'}"
        folder, hu = series(
            name,
            stored=_stored(70 + signed, signed=signed),
            signed=signed,
            transfer_syntax=ExplicitVRBigEndian,
        )
        _add(
            name,
            cat,
            f"explicit VR big endian, {'signed' if signed else 'unsigned'} 12-bit",
            ok(name, hu),
            path=_single_path(folder),
        )
    st = _stored(72)
    name = "be_high_bits_set"
    folder, _ = series(name, stored=st | 0xA000, transfer_syntax=ExplicitVRBigEndian)
    _add(
        name,
        cat,
        "big endian, 12 of 16 bits with garbage high bits",
        ok(name, hu_of(st)),
        path=_single_path(folder),
    )
    name = "be_series"
    folder, hu = series(
        name, 3, stored=_stored(73, 3), shuffle=True, seed=7, transfer_syntax=ExplicitVRBigEndian
    )
    _add(name, cat, "3-slice big endian series", ok(name, hu), path=folder)
    name = "be_float_pixels"
    vals = np.random.default_rng(74).normal(0, 300, (1, SIZE, SIZE)).astype(np.float32)
    folder, hu = series(name, float_values=vals, stored=None, transfer_syntax=ExplicitVRBigEndian)
    _add(name, cat, "big endian FloatPixelData", ok(name, hu), path=_single_path(folder))
    name = "implicit_vr"
    folder, hu = series(name, stored=_stored(75), transfer_syntax=ImplicitVRLittleEndian)
    _add(name, cat, "implicit VR little endian", ok(name, hu), path=_single_path(folder))
    # a transfer syntax that does not match the encoding of the data set
    name = "be_label_le_data"
    folder, _ = series(name)
    path = _single_path(folder)
    patch(path, b"1.2.840.10008.1.2.1\0", b"1.2.840.10008.1.2.2\0")
    _add(name, cat, "little endian data set labelled Explicit VR Big Endian", err(), path=path)
    name = "le_label_be_data"
    folder, _ = series(name, transfer_syntax=ExplicitVRBigEndian)
    path = _single_path(folder)
    patch(path, b"1.2.840.10008.1.2.2\0", b"1.2.840.10008.1.2.1\0")
    _add(name, cat, "big endian data set labelled Explicit VR Little Endian", err(), path=path)
    name = "implicit_label_explicit_data"
    folder, _ = series(name)
    path = _single_path(folder)
    patch(path, b"1.2.840.10008.1.2.1\0", b"1.2.840.10008.1.2\0\0\0")
    _add(
        name,
        cat,
        "explicit VR data set labelled Implicit VR Little Endian",
        {"error_or_ok": "DicomError", "shape": [1, SIZE, SIZE]},
        path=path,
    )


def multi_frame() -> None:
    cat = "multi-frame"
    st2 = _stored(80, 2)

    def two_frames(ds, k):
        ds.PixelData = st2.astype("<u2").tobytes()

    name = "frames_2_with_2"
    folder, _ = series(name, number_of_frames=2, tweak=two_frames)
    _add(
        name,
        cat,
        "NumberOfFrames 2 with two frames of pixel data",
        err("multi-frame"),
        path=_single_path(folder),
    )
    for v in (2, 3, 100):
        name = f"frames_{v}_with_1"
        folder, _ = series(name, number_of_frames=v)
        _add(
            name,
            cat,
            f"NumberOfFrames {v} but one frame of pixel data",
            err("multi-frame"),
            path=_single_path(folder),
        )
    name = "frames_1"
    folder, hu = series(name, stored=_stored(81), number_of_frames=1)
    _add(name, cat, "NumberOfFrames 1", ok(name, hu), path=_single_path(folder))
    name = "frames_0"
    folder, hu = series(name, stored=_stored(82), number_of_frames=0)
    _add(
        name,
        cat,
        "NumberOfFrames 0 (invalid; read as the one frame of data, as pydicom does, with a warning)",
        ok(name, hu),
        path=_single_path(folder),
    )
    for name, v in (("frames_text", b"ab"), ("frames_negative", b"-1")):
        folder, _ = series(name, number_of_frames=97)
        path = _single_path(folder)
        patch(path, b"IS\x02\x0097", b"IS\x02\x00" + v)
        _add(name, cat, f"NumberOfFrames {v!r}", err("NumberOfFrames"), path=path)
    name = "enhanced_ct_sop"

    def enhanced(ds, k):
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID

    folder, _ = series(name, tweak=enhanced)
    _add(name, cat, "Enhanced CT Image Storage SOP class", err("Enhanced"), path=_single_path(folder))
    name = "per_frame_groups"

    def groups(ds, k):
        from pydicom.dataset import Dataset

        ds.PerFrameFunctionalGroupsSequence = [Dataset()]

    folder, _ = series(name, tweak=groups)
    _add(
        name,
        cat,
        "a PerFrameFunctionalGroupsSequence in a classic CT header",
        err("Enhanced"),
        path=_single_path(folder),
    )


def non_ct() -> None:
    cat = "non-CT modality"
    for modality in ("MR", "PT", "CR", "OT", "US", "NM", "SC", "ct", "RTDOSE"):
        name = f"modality_{modality.lower()}" + ("_lower" if modality == "ct" else "")
        folder, _ = series(name, modality=modality)
        _add(name, cat, f"Modality {modality!r}", err("not CT"), path=_single_path(folder))
    name = "modality_mr_allowed"
    folder, hu = series(name, stored=_stored(90), modality="MR")
    _add(
        name,
        cat,
        "an MR slice with allow_non_ct=True (rescaled values, not HU)",
        ok(name, hu),
        path=_single_path(folder),
        kwargs={"allow_non_ct": True},
    )
    name = "modality_empty"
    folder, _ = series(name, tweak=setting(Modality=""))
    _add(name, cat, "empty Modality", err("no Modality"), path=_single_path(folder))
    name = "modality_mixed_series"
    folder, _ = series(name, 3, tweak=lambda ds, k: setattr(ds, "Modality", "MR") if k == 2 else None)
    _add(name, cat, "3 slices of one series, one of them Modality MR", err("not CT"), path=folder)
    name = "sop_mr_modality_ct"
    folder, hu = series(name, stored=_stored(91), tweak=setting(SOPClassUID=dicom_factory.MR_IMAGE_STORAGE))
    _add(
        name,
        cat,
        "MR Image Storage SOP class but Modality CT (Modality governs)",
        ok(name, hu),
        path=_single_path(folder),
    )
    name = "rtstruct_like"
    folder, _ = series(
        name,
        modality="RTSTRUCT",
        pixel_data=False,
        tweak=delete(
            "Rows",
            "Columns",
            "BitsAllocated",
            "BitsStored",
            "HighBit",
            "PixelRepresentation",
            "SamplesPerPixel",
            "PhotometricInterpretation",
            "PixelSpacing",
        ),
    )
    _add(
        name,
        cat,
        "a non-image object (no Rows/Columns) given as the one file",
        err("not an image"),
        path=_single_path(folder),
    )


def orientation() -> None:
    cat = "orientation"

    def rotated(iop, which=1):
        return lambda ds, k: setattr(ds, "ImageOrientationPatient", list(iop)) if k == which else None

    for name, iop, what in (
        ("orient_one_rotated", (0, 1, 0, -1, 0, 0), "one slice of 3 rotated 90 degrees in plane"),
        ("orient_one_sagittal", (0, 1, 0, 0, 0, -1), "one slice of 3 sagittal, the others axial"),
        ("orient_one_tilted", (1, 0, 0, 0, 0.99, 0.14106736), "one slice of 3 tilted by 8 degrees"),
        ("orient_one_flipped", (-1, 0, 0, 0, 1, 0), "one slice of 3 flipped left-right"),
    ):
        folder, _ = series(name, 3, tweak=rotated(iop))
        _add(name, cat, what, err("mixed orientation"), path=folder)
    name = "orient_within_tolerance"
    folder, hu = series(name, 3, stored=_stored(100, 3), tweak=rotated((1, 0.0002, 0, 0, 1, 0)))
    _add(name, cat, "one slice's orientation off by 2e-4 (within tolerance)", ok(name, hu), path=folder)
    for name, iop, what in (
        ("orient_not_unit", (2, 0, 0, 0, 1, 0), "row direction of length 2"),
        ("orient_zero", (0, 0, 0, 0, 0, 0), "all-zero direction cosines"),
        ("orient_parallel", (1, 0, 0, 1, 0, 0), "row and column directions parallel"),
        ("orient_not_orthogonal", (1, 0, 0, 0.6, 0.8, 0), "row and column 53 degrees apart"),
    ):
        folder, _ = series(name, 3, tweak=setting(ImageOrientationPatient=list(iop)))
        _add(name, cat, what, err("ImageOrientationPatient"), path=folder)
    for name, iop in (
        ("orient_five_values", [1, 0, 0, 0, 1]),
        ("orient_seven_values", [1, 0, 0, 0, 1, 0, 0]),
        ("orient_nan", [1, 0, 0, "nan", 1, 0]),
        ("orient_inf", [1, 0, 0, 0, "inf", 0]),
    ):
        folder, _ = series(name, 3, tweak=setting(ImageOrientationPatient=iop))
        _add(name, cat, f"ImageOrientationPatient {iop}", err("ImageOrientationPatient"), path=folder)
    name = "orient_text"
    folder, _ = series(name, tweak=setting(ImageOrientationPatient=[1, 0, 0, 0, 1, 0]))
    path = _single_path(folder)
    patch(path, b"1.0\\0.0\\0.0\\", b"1.0\\0.0\\x.0\\")
    _add(
        name,
        cat,
        "ImageOrientationPatient with a non-numeric value",
        err("ImageOrientationPatient"),
        path=path,
    )
    name = "orient_oblique_reversed_normal"
    folder, hu = series(name, 4, stored=_stored(101, 4), shuffle=True, seed=8, orientation=(0, 1, 0, 1, 0, 0))
    _add(
        name,
        cat,
        "valid oblique-free series whose normal points to the feet (sorted along the normal)",
        ok(name, hu),
        path=folder,
    )


def positions() -> None:
    cat = "positions"
    for name, pos, what in (
        ("dup_two", (0, 2.5, 2.5, 5), "two slices at the same position"),
        ("dup_all", (1, 1, 1), "three slices at one position"),
        ("dup_within_tolerance", (0, 2.5, 2.5005, 5), "two positions 0.5 micrometres apart"),
        ("gap", (0, 2.5, 5, 12.5), "a gap of 3 slices"),
        ("gap_first", (0, 10, 12.5, 15), "the first step 4x the others"),
    ):
        folder, _ = series(name, positions=pos, shuffle=True, seed=9)
        _add(name, cat, what, err("duplicate" if name.startswith("dup") else "missing slice"), path=folder)
    folder, _ = series("dup_same_file_listed")
    path = _single_path(folder)
    _add(
        "dup_same_file_listed",
        cat,
        "the same file given twice in a list",
        err("duplicate"),
        files=[path, path],
    )
    for name, ipp in (("ipp_two_values", [1, 2]), ("ipp_nan", [0, "nan", 0]), ("ipp_inf", ["inf", 0, 0])):
        folder, _ = series(name, 3, tweak=setting(ImagePositionPatient=ipp))
        _add(name, cat, f"ImagePositionPatient {ipp}", err("ImagePositionPatient"), path=folder)
    name = "no_positions_duplicate_instance"
    folder, _ = series(name, 3, with_positions=False, shuffle=False, tweak=setting(InstanceNumber=4))
    _add(name, cat, "no positions and the same InstanceNumber twice", err("InstanceNumber"), path=folder)
    name = "irregular_spacing"
    folder, hu = series(name, positions=(0, 2.5, 5.3, 7.5), stored=_stored(110, 4), shuffle=True, seed=10)
    _add(name, cat, "steps 2.5/2.8/2.2 mm: warns, reads in position order", ok(name, hu), path=folder)
    name = "positions_descending_instance_ascending"
    folder, hu = series(name, positions=(10, 7.5, 5, 2.5), stored=_stored(111, 4), shuffle=False)
    _add(
        name,
        cat,
        "InstanceNumber ascending while positions descend: sorted by position",
        ok(name, hu),
        path=folder,
    )


def mixed() -> None:
    cat = "folder"
    name = "mixed_sizes"
    folder = ROOT / name
    make_ct_series(folder, n=2, rows=SIZE, cols=SIZE, series_uid="1.2.3.7.1", shuffle=False, prefix="A")
    make_ct_series(
        folder,
        n=1,
        rows=SIZE // 2,
        cols=SIZE,
        series_uid="1.2.3.7.1",
        shuffle=False,
        prefix="B",
        positions=[5.0],
    )
    _add(name, cat, "one series with 16x16 and 8x16 slices", err("mixed image sizes"), path=folder)
    name = "mixed_pixel_spacing"
    folder, _ = series(
        name, 3, tweak=lambda ds, k: setattr(ds, "PixelSpacing", [0.5, 0.5]) if k == 0 else None
    )
    _add(name, cat, "one series with two PixelSpacings", err("mixed PixelSpacing"), path=folder)
    name = "two_series"
    folder = ROOT / name
    a = make_ct_series(
        folder,
        n=2,
        rows=SIZE,
        cols=SIZE,
        series_uid="1.2.3.8.1",
        prefix="A",
        shuffle=False,
        stored=_stored(120, 2),
    )
    make_ct_series(folder, n=2, rows=SIZE, cols=SIZE, series_uid="1.2.3.8.2", prefix="B", shuffle=False)
    _add(name, cat, "two series in one folder, none chosen", err("2 image series"), path=folder)
    _add(
        "two_series_chosen",
        cat,
        "two series in one folder, series_uid given",
        ok("two_series_chosen", a),
        path=folder,
        kwargs={"series_uid": "1.2.3.8.1"},
    )
    _add(
        "two_series_wrong_uid",
        cat,
        "two series in one folder, a series_uid that is not there",
        err("is not in"),
        path=folder,
        kwargs={"series_uid": "1.2.3.8.3"},
    )
    name = "junk_beside_series"
    folder, hu = series(name, 2, stored=_stored(121, 2))
    (folder / "README.txt").write_text("notes\n")
    (folder / "thumbs.db").write_bytes(b"\0" * 300)
    _add(
        name,
        cat,
        "a series with a text file and a binary file beside it (skipped)",
        ok(name, hu),
        path=folder,
    )
    name = "only_junk"
    folder = ROOT / name
    folder.mkdir(parents=True)
    (folder / "README.txt").write_text("no images here\n")
    _add(name, cat, "a folder with no DICOM file", err("no DICOM image files"), path=folder)


def float_pixels() -> None:
    cat = "float pixel data"
    base = np.random.default_rng(130).normal(0, 200, (1, SIZE, SIZE)).astype(np.float32)
    for v in ("nan", "inf", "-inf"):
        vals = base.copy()
        vals[0, 3, 5] = float(v)
        name = f"float_{v.strip('-')}{'_neg' if v.startswith('-') else ''}"
        folder, _ = series(name, float_values=vals, stored=None)
        _add(name, cat, f"FloatPixelData with a {v}", err("non-finite"), path=_single_path(folder))
    name = "float_ok"
    folder, hu = series(name, float_values=base, stored=None)
    _add(name, cat, "finite FloatPixelData", ok(name, hu), path=_single_path(folder))
    name = "float_max"
    vals = base.copy()
    vals[0, 0, 0] = np.finfo(np.float32).max
    folder, hu = series(name, float_values=vals, stored=None)
    _add(name, cat, "FloatPixelData holding float32 max (finite)", ok(name, hu), path=_single_path(folder))


def extreme_hu() -> None:
    cat = "extreme HU"
    st = _stored(140)
    st[0, :4] = 0
    name = "hu_minus_3024"
    folder, hu = series(name, stored=st, intercept=-3024.0)
    _add(name, cat, "intercept -3024: padding at -3024 HU", ok(name, hu), path=_single_path(folder))
    sst = _stored(141, bits=16, signed=True)
    sst[0, 0, :3] = (30000, -32768, 32767)
    name = "hu_30000"
    folder, hu = series(name, stored=sst, bits_stored=16, signed=True, intercept=0.0)
    _add(
        name,
        cat,
        "signed 16-bit, intercept 0: values up to 32767 HU (30000 included)",
        ok(name, hu),
        path=_single_path(folder),
    )
    ust = _stored(142, bits=16)
    ust[0, 0, :2] = (0, 65535)
    name = "hu_uint16_full"
    folder, hu = series(name, stored=ust, bits_stored=16, intercept=-1024.0)
    _add(
        name,
        cat,
        "unsigned 16-bit with intercept -1024: -1024..64511 HU",
        ok(name, hu),
        path=_single_path(folder),
    )
    name = "hu_metal_slope"
    folder, hu = series(name, stored=st, slope=10.0, intercept=-1024.0)
    _add(
        name, cat, "slope 10: up to 39926 HU (metal artefact range)", ok(name, hu), path=_single_path(folder)
    )


def modality_lut() -> None:
    cat = "modality LUT"
    import pydicom

    def lut(descriptor, data, items=1):
        def tweak(ds, k):
            del ds.RescaleSlope, ds.RescaleIntercept
            seq = []
            for _ in range(items):
                item = pydicom.Dataset()
                if descriptor is not None:
                    item.LUTDescriptor = descriptor
                if data is not None:
                    item.add_new(0x00283006, "US", data)
                item.ModalityLUTType = "HU"
                seq.append(item)
            ds.ModalityLUTSequence = seq

        return tweak

    st = _stored(150)
    table = list(range(0, 8192, 2))  # HU = 2 * stored
    name = "lut_ok"
    folder, _ = series(name, stored=st, tweak=lut([4096, 0, 16], table))
    _add(
        name,
        cat,
        "a valid 4096-entry Modality LUT (HU = 2 x stored)",
        ok(name, 2.0 * st),
        path=_single_path(folder),
    )
    name = "lut_first_mapped_2000"
    folder, _ = series(name, stored=st, tweak=lut([4096, 2000, 16], table))
    clamped = np.take(np.asarray(table, np.float64), np.clip(st - 2000, 0, 4095))
    _add(
        name,
        cat,
        "LUT whose first mapped value is 2000: lower values clamp to the first entry",
        ok(name, clamped),
        path=_single_path(folder),
    )
    for name, descriptor, data, match in (
        ("lut_data_short", [4096, 0, 16], table[:100], "LUTData holds"),
        ("lut_descriptor_short", [100, 0, 16], table, "LUTData holds"),
        ("lut_descriptor_zero", [0, 0, 16], table, "LUTData holds"),
        ("lut_no_descriptor", None, table, "no LUTDescriptor"),
        ("lut_no_data", [4096, 0, 16], None, "no LUTData"),
        ("lut_descriptor_two_values", [4096, 0], table, "LUTDescriptor"),
        ("lut_8_bits_for_16_bit_values", [4096, 0, 8], table, "Modality LUT"),
    ):
        folder, _ = series(name, stored=st, tweak=lut(descriptor, data))
        _add(
            name,
            cat,
            f"Modality LUT with LUTDescriptor {descriptor} and {len(data) if data else 0} entries",
            err(match),
            path=_single_path(folder),
        )
    name = "lut_two_items"
    folder, _ = series(name, stored=st, tweak=lut([4096, 0, 16], table, items=2))
    _add(name, cat, "ModalityLUTSequence with two items", err("exactly one"), path=_single_path(folder))


def transfer_syntax() -> None:
    cat = "transfer syntax"
    for name, uid, expect in (
        ("ts_unknown", b"1.2.3.4.5.6.7.8.9.1", err("TransferSyntaxUID")),
        ("ts_jpeg_baseline", b"1.2.840.10008.1.2.4.50", err()),
        ("ts_rle", b"1.2.840.10008.1.2.5\0", err()),
        ("ts_deflate", b"1.2.840.10008.1.2.1.99", err()),
        ("ts_jpeg2000", b"1.2.840.10008.1.2.4.90", err()),
    ):
        folder, _ = series(name, tweak=lambda ds, k: setattr(ds, "SeriesDescription", "x" * 40))
        path = _single_path(folder)
        data = path.read_bytes()
        old = b"\x02\x00\x10\x00UI\x14\x001.2.840.10008.1.2.1\0"
        assert data.count(old) == 1
        new = (
            b"\x02\x00\x10\x00UI"
            + struct.pack("<H", len(uid) + (len(uid) % 2))
            + uid
            + b"\0" * (len(uid) % 2)
        )
        # keep the file meta group length right: shift by the length difference
        data = data.replace(old, new)
        gl = data.find(b"\x02\x00\x00\x00UL\x04\x00")
        (length,) = struct.unpack("<I", data[gl + 8 : gl + 12])
        data = data[: gl + 8] + struct.pack("<I", length + len(new) - len(old)) + data[gl + 12 :]
        path.write_bytes(data)
        label = uid.rstrip(b"\0").decode()
        _add(name, cat, f"uncompressed pixel data labelled with TransferSyntaxUID {label}", expect, path=path)


def file_meta() -> None:
    cat = "transfer syntax"
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    name = "deflated_series"
    folder, hu = series(name, 2, stored=_stored(160, 2), transfer_syntax=DeflatedExplicitVRLittleEndian)
    _add(name, cat, "a valid Deflated Explicit VR Little Endian series", ok(name, hu), path=folder)
    for name, keep_preamble, ts in (
        ("no_file_meta", True, ExplicitVRLittleEndian),
        ("no_file_meta_implicit", True, ImplicitVRLittleEndian),
        ("no_preamble_no_meta", False, ExplicitVRLittleEndian),
        ("no_preamble_no_meta_implicit", False, ImplicitVRLittleEndian),
    ):
        folder, hu = series(name, stored=_stored(161), transfer_syntax=ts)
        path = _single_path(folder)
        data = path.read_bytes()
        (group_length,) = struct.unpack("<I", data[140:144])
        body = data[144 + group_length :]
        path.write_bytes((data[:132] if keep_preamble else b"") + body)
        what = "'DICM' marker then the data set, no file meta" if keep_preamble else "a bare data set"
        _add(name, cat, f"{what} ({ts.name}): the encoding is read from the data", ok(name, hu), path=path)


def series_consistency() -> None:
    """Slices that disagree on how their pixels become HU, copies of one instance, bulk headers."""
    cat = "series consistency"
    for kw in ("RescaleIntercept", "RescaleSlope"):
        name = f"one_slice_without_{kw}"
        folder, _ = series(name, 3, tweak=lambda ds, k, kw=kw: delattr(ds, kw) if k == 1 else None)
        _add(name, cat, f"slice 2 of 3 lacks {kw} (would be read with the default)", err(kw), path=folder)
    name = "mixed_rescale_type"
    folder, _ = series(name, 2, tweak=lambda ds, k: setattr(ds, "RescaleType", "HU" if k == 0 else "US"))
    _add(name, cat, "RescaleType HU on one slice and US on the other", err("mixed RescaleType"), path=folder)
    name = "duplicate_sop_instance_uid"

    def same_uid(ds, k):
        ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.7799"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    folder, _ = series(name, 2, tweak=same_uid)
    _add(name, cat, "two slices carry one SOPInstanceUID", err("same SOPInstanceUID"), path=folder)
    name = "bulk_private_element"
    folder, hu = series(name, 2, tweak=lambda ds, k: dicom_factory.add_private(ds, 70_000))
    _add(name, cat, "each slice carries a 70 kB private element (read, not kept)", ok(name, hu), path=folder)
    name = "present_but_different_intercepts"
    folder, hu = series(name, 2, intercept=[-1024.0, -1000.0])
    _add(name, cat, "each slice's own intercept, present on both (used as given)", ok(name, hu), path=folder)


def main() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    for make in (
        truncated,
        corrupted,
        missing_tags,
        odd_values,
        bits_stored,
        pixel_representation,
        big_endian,
        multi_frame,
        non_ct,
        orientation,
        positions,
        mixed,
        float_pixels,
        extreme_hu,
        transfer_syntax,
        modality_lut,
        file_meta,
        series_consistency,
    ):
        make()
    for d in ROOT.iterdir():
        if d.name.startswith("_"):
            shutil.rmtree(d)
    for c in CASES:
        for p in c.get("files") or [c["path"]]:
            assert (HERE / p).exists(), p
    np.savez_compressed(HERE / "expected.npz", **EXPECTED)
    counts: dict[str, int] = {}
    for c in CASES:
        counts[c["category"]] = counts.get(c["category"], 0) + 1
    manifest = {
        "generator": "tests/corpus/make_corpus.py",
        "n_cases": len(CASES),
        "by_category": counts,
        "cases": CASES,
    }
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    size = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for p in sorted(ROOT.rglob("*")):
        if p.is_file():
            digest.update(str(p.relative_to(ROOT)).encode() + p.read_bytes())
    print(f"{len(CASES)} cases, {size / 1024:.0f} KiB, sha256 {digest.hexdigest()[:16]}")
    for k, v in counts.items():
        print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
