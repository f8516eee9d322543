"""Read a CT series from DICOM into HU, and write a derived (e.g. denoised) series back.

Reading (:func:`read_dicom`)
    * ``path`` is a folder (its files, not sub-folders unless ``recursive=True``), one file, or a
      list of files. In a folder, files that are not DICOM (README, notes, hidden files), DICOMDIR
      indexes and DICOM objects without an image (structured reports, presentation states) are
      skipped. A file that *is* DICOM but is corrupt or truncated is always an error, never
      silently skipped. Headers are read first without pixel data to group files by
      SeriesInstanceUID; several image series need ``series_uid=`` (:func:`list_series` lists them).
    * Slices are sorted by their position along the slice normal: the normal is the cross product
      of the row and column direction cosines of ImageOrientationPatient, the position is its dot
      product with ImagePositionPatient, ascending (feet to head for axial images). When any slice
      lacks those two attributes the slices are sorted by InstanceNumber with a warning, and the
      slice spacing comes from SpacingBetweenSlices, else SliceThickness, else 1.0 (warning).
    * The slice spacing is the median step between sorted positions. Refused: the same position
      twice, and a step more than 1.5x the median (missing slices; the message names the
      positions either side of each gap). Steps that vary by more than 5 % warn. Also refused:
      one SOPInstanceUID in two files of the series.
    * Pixel values become HU with each slice's own RescaleSlope/RescaleIntercept (defaults 1 and 0
      when absent) or, when present, its Modality LUT (applied by pydicom's ``apply_modality_lut``).
      The slices of a series must agree on how: refused are a RescaleIntercept or RescaleSlope
      that some slices have and others lack (the default would shift those slices), different
      RescaleType (or ModalityLUTType) values, and a Modality LUT on some slices with a rescale on
      others. Present values that differ between slices are each slice's own, and are used.
      The result is float32 and must be finite. Refused before decoding: a zero or non-finite
      RescaleSlope, a non-finite RescaleIntercept, a Modality LUT whose LUTData does not hold the
      entries its LUTDescriptor gives, a PhotometricInterpretation other than MONOCHROME1/2 (colour
      or palette indices are not HU), and uncompressed pixel data longer or shorter than
      Rows x Columns x BitsAllocated says (pydicom would crop the excess with only a warning).
      Unused high bits (BitsStored < BitsAllocated) are masked, signed values sign-extended from
      bit BitsStored - 1, as the standard says.
    * Compressed transfer syntaxes are decoded by pydicom's pixel-data plugins. When no installed
      plugin can decode one, :class:`~ctdn.errors.MissingDependencyError` tells you to
      ``pip install "ctdn[dicom]"``.
    * **Multi-frame images are refused** (``NumberOfFrames > 1``, and Enhanced CT objects, whose
      geometry and rescale live in per-frame functional groups that this reader does not
      interpret). Export such data as classic single-frame CT slices first.
    * The headers kept in :attr:`Volume.headers` hold no bulk data: values over 64 KiB are skipped
      when the file is read and dropped, as are icon images, bulk overlays and private data over
      256 KiB per slice (the Modality LUT is kept); see :mod:`ctdn.io._dicom_headers`.

Writing (:func:`write_dicom`)
    One file per slice, ``IM00000.dcm``, ``IM00001.dcm``, ... in the order of ``like``, each header
    a deep copy of the matching source header with new series/instance UIDs, ``DERIVED\\SECONDARY``
    image type, a new description and series number. Pixels are stored as 16-bit integers with
    the source slice's own rescale, ``round((hu - intercept) / slope)``, **clipped** to what
    BitsStored and PixelRepresentation can hold (a warning says how many values were clipped):
    e.g. 12-bit unsigned with intercept -1024 holds -1024..3071 HU. Padding pixels (by
    PixelPaddingValue and PixelPaddingRangeLimit) keep their exact source stored values. The
    processing is recorded in DerivationCodeSequence and ContributingEquipmentSequence. Files
    are always written uncompressed in Explicit VR Little Endian. The folder appears atomically:
    it is built in a hidden temporary folder beside ``out_dir`` and renamed into place.

Every refusal is a :class:`~ctdn.errors.DicomError` (an ``OSError``) whose message names the file
and the problem; array problems in :func:`write_dicom` are :class:`~ctdn.errors.InputError`.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import os
import struct
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from .._hints import option
from .._version import __version__
from ..errors import CTDNError, DicomError, InputError, InputTypeError, MissingDependencyError
from ..hu import check_hu_lazy
from . import _dicom_headers as _headers
from ._dicom_derived import SMOOTHING, keep_padding, mark_processed, padding_range
from .output import check_output, series_output

try:  # pydicom >= 3
    from pydicom.pixels import apply_modality_lut
    from pydicom.pixels import get_decoder as _get_decoder
except ImportError:  # pragma: no cover - pydicom 2.x
    from pydicom.pixel_data_handlers.util import apply_modality_lut

    _get_decoder = None

__all__ = ["Volume", "read_dicom", "write_dicom", "list_series"]

PathLike = str | os.PathLike

INSTALL_HINT = 'pip install "ctdn[dicom]"'
_DECODER_PACKAGES = "pylibjpeg, pylibjpeg-openjpeg, pylibjpeg-libjpeg"
_PYDICOM_MAJOR = int(pydicom.__version__.split(".")[0])

_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, FloatPixelData, DoubleFloatPixelData
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_ENHANCED_CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2.1"
_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_DEFLATED = "1.2.840.10008.1.2.1.99"
_JPEG_LS = ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")
_UNDEFINED_LENGTH = 0xFFFFFFFF

# Tolerances for geometry checks (direction cosines are unitless; positions are in mm).
_ORIENTATION_TOL = 1e-3
_DUPLICATE_TOL_MM = 1e-3
_GAP_FACTOR = 1.5
_IRREGULAR_FRACTION = 0.05

# Attributes dropped from a derived slice: they describe the source pixel data or its encoding.
_DROP_ON_WRITE = (
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "PixelDataProviderURL",
    "NumberOfFrames",
    "FrameIncrementPointer",
    "PlanarConfiguration",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "IconImageSequence",
    "DataSetTrailingPadding",
)
_BYTE_ORDER_VRS = {"OW", "OF", "OD", "OL", "OV", "UN"}


# ---------------------------------------------------------------------------------------------
@dataclass(eq=False)
class Volume:
    """A CT series in HU with the headers needed to write a derived series.

    ``hu`` is float32 ``(N, H, W)`` in ascending position along the slice normal. ``spacing`` is
    ``(slice spacing along the normal, row spacing, column spacing)`` in mm. ``origin`` is the
    ImagePositionPatient of the first slice and ``orientation`` the six ImageOrientationPatient
    direction cosines (``None`` when the files have none). ``headers`` holds one pydicom data set
    per slice, in the same order, read without pixel data and without bulk elements (larger than
    64 KiB, icon images, bulk overlays, private data over 256 KiB; see
    :mod:`ctdn.io._dicom_headers`); ``files`` the source paths.
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] | None = None
    orientation: tuple[float, ...] | None = None
    series_uid: str = ""
    headers: list[Dataset] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.hu.shape)

    def __len__(self) -> int:
        return int(self.hu.shape[0])

    def __repr__(self) -> str:
        return (
            f"Volume(shape={self.shape}, spacing={self.spacing}, origin={self.origin}, "
            f"series_uid={self.series_uid!r}, files={len(self.files)})"
        )


@dataclass
class _Entry:
    path: Path
    ds: Dataset  # header only (no pixel data)


# ---------------------------------------------------------------------------------------------
# Public API
def read_dicom(
    path: PathLike | Sequence[PathLike],
    *,
    series_uid: str | None = None,
    recursive: bool = False,
    allow_non_ct: bool = False,
) -> Volume:
    """Read one CT series into a :class:`Volume` in HU.

    ``path`` is a folder, a single file or a list of files. With several image series among them,
    pass ``series_uid=`` (the error lists them; so does :func:`list_series`). ``recursive=True``
    also reads the sub-folders of a folder. ``allow_non_ct=True`` reads other modalities (their
    rescaled values are then not HU). Multi-frame files are refused (see the module docstring).
    """
    with _about(_describe(path)):
        return _read_dicom(path, series_uid, recursive, allow_non_ct)


def _read_dicom(path, series_uid, recursive: bool, allow_non_ct: bool, allocate=None) -> Volume:
    """read_dicom's body; ``allocate(shape)``: where the HU volume goes (``ctdn.io.stream``)."""
    source, entries = _scan(path, recursive)
    groups = _group(entries)
    if series_uid is None:
        if len(groups) > 1:
            raise DicomError(
                f"{source} holds {len(groups)} image series; choose one with "
                f"{option('series_uid', None, placeholder='UID')}:\n{_format_series(_summaries(groups))}"
            )
        (chosen,) = groups.values()
    else:
        key = str(series_uid).strip()
        if key not in groups:
            raise DicomError(
                f"series {key!r} is not in {source}; it holds:\n{_format_series(_summaries(groups))}"
            )
        chosen = groups[key]
    return _load_series(chosen, allow_non_ct=allow_non_ct, allocate=allocate)


def list_series(path: PathLike | Sequence[PathLike], *, recursive: bool = False) -> list[dict[str, Any]]:
    """The image series in ``path``: one dict per series with ``uid``, ``description``,
    ``n_files`` and ``modality`` (several modalities are joined with ``/``), sorted by UID."""
    with _about(_describe(path)):
        _, entries = _scan(path, recursive)
        return _summaries(_group(entries))


def write_dicom(
    hu,
    like: Volume,
    out_dir: PathLike,
    *,
    description: str = "ctdn denoised",
    derivation: str = "Denoised by ctdn",
    overwrite: bool = False,
    series_number: int | None = None,
    model: str | None = None,
    derivation_code: tuple[str, str, str] | None = SMOOTHING,
) -> Path:
    """Write ``hu`` (N, H, W), shaped like ``like.hu``, as a new derived series in ``out_dir``.

    Each slice ``i`` takes a deep copy of ``like.headers[i]`` (``like`` is not modified) with:
    a new SeriesInstanceUID shared by the series, a new SOPInstanceUID (and
    MediaStorageSOPInstanceUID) per file, ImageType ``DERIVED\\SECONDARY`` followed by the
    source's further values, SeriesDescription ``"<source description> <description>"`` cut to 64
    characters, DerivationDescription ``derivation``, SeriesNumber ``series_number`` or the
    source's plus 1000, InstanceNumber ``i + 1``, and a SourceImageSequence naming the source
    instance. The processing is recorded: a DerivationCodeSequence item ``derivation_code``
    (value, scheme, meaning; default DCM 113087 "Smoothing", PS3.16 CID 7203's code for noise
    reduction; ``None`` adds none) after the source's own items, and a
    ContributingEquipmentSequence item (purpose DCM 109103 "Modifying Equipment") with
    Manufacturer ``ctdn``, ManufacturerModelName ``model`` (when given), SoftwareVersions (ctdn's
    version), ContributionDateTime and ContributionDescription ``derivation``. Patient, study and
    frame-of-reference attributes are kept; bulk elements that ``read_dicom`` did not keep in
    ``like.headers`` (e.g. large private data) are not written.

    Pixels are stored as ``round((hu - intercept) / slope)`` with the source slice's
    RescaleSlope/RescaleIntercept (defaults 1 and 0), clipped to the range that its BitsStored and
    PixelRepresentation can represent (16-bit container; a ``UserWarning`` reports clipping), and
    written uncompressed as Explicit VR Little Endian. A source with a Modality LUT instead of a
    rescale gets slope 1, intercept 0, signed 16-bit.

    Padding is kept: a pixel whose source stored value (from ``like.hu``) is PixelPaddingValue, or
    within PixelPaddingValue..PixelPaddingRangeLimit, is written with that exact stored value,
    whatever ``hu`` holds there; an image pixel that would land in the padding range is moved to
    the nearest stored value outside it (counted with the clipped values). A source with a
    Modality LUT or float pixels loses its padding attributes (its stored values change).

    ``out_dir`` is resolved once (links, ``..``) and must not be, or be inside, a folder of the
    source files, nor contain one. An existing non-empty ``out_dir`` is refused unless
    ``overwrite=True``, which replaces only a series that ctdn wrote (its ``.ctdn-series.json``
    manifest lists every file in the folder); :func:`check_dicom_output` makes the same checks up
    front. Writing is atomic: files go to a hidden temporary folder next to ``out_dir`` that is
    then renamed into place, create-or-fail (:mod:`ctdn.io.output`); on any error the temporary
    folder is removed and ``out_dir`` is left as it was. Returns the resolved ``out_dir``.
    """
    if not isinstance(like, Volume):
        raise InputTypeError(f"like: expected a ctdn.io.Volume (from read_dicom), got {type(like).__name__}")
    if not isinstance(description, str) or not isinstance(derivation, str):
        raise InputTypeError("description and derivation must be strings")
    if model is not None and not isinstance(model, str):
        raise InputTypeError(f"model must be a string (the model's name) or None, got {type(model).__name__}")
    if derivation_code is not None and (
        not isinstance(derivation_code, tuple)
        or len(derivation_code) != 3
        or not all(isinstance(v, str) and v.strip() for v in derivation_code)
    ):
        raise InputTypeError(
            f"derivation_code must be (code value, coding scheme, code meaning), three non-empty strings, "
            f"or None; got {derivation_code!r}"
        )
    if series_number is not None and (
        isinstance(series_number, bool) or not isinstance(series_number, (int, np.integer))
    ):
        raise InputTypeError(f"series_number must be an int or None, got {type(series_number).__name__}")
    given_shape = tuple(np.shape(hu)) if hasattr(hu, "shape") else None
    # Checked without a whole-volume float32 copy (a memory-mapped 1000-slice volume stays on disk);
    # each slice is converted when it is written.
    arr = check_hu_lazy(hu, name="hu", ndim=(2, 3))
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape != tuple(like.hu.shape):
        raise InputError(
            f"hu has shape {given_shape or tuple(arr.shape)} but like.hu has shape {tuple(like.hu.shape)}; "
            "write_dicom writes one slice per source header, so the shapes must match"
        )
    if len(like.headers) != arr.shape[0]:
        raise InputError(
            f"like has {len(like.headers)} header(s) for {arr.shape[0]} slice(s); "
            "pass the Volume returned by read_dicom"
        )

    out = check_dicom_output(out_dir, like, overwrite=overwrite)
    new_series = generate_uid()
    now = datetime.datetime.now()
    clipped = 0
    ranges: set[str] = set()
    with series_output(out, overwrite=overwrite, error=DicomError) as tmp:
        for i in range(arr.shape[0]):
            name = f"IM{i:05d}.dcm"
            try:
                ds, stored, n_clip, what = _derived_slice(
                    np.asarray(arr[i], dtype=np.float32),
                    like.headers[i],
                    index=i,
                    series_uid=new_series,
                    description=description,
                    derivation=derivation,
                    series_number=series_number,
                    now=now,
                    source=like.hu[i],
                    model=model,
                    code=derivation_code,
                )
            except DicomError:
                raise
            except Exception as exc:
                raise DicomError(f"cannot build {name} from header {i} of like: {exc}") from exc
            clipped += n_clip
            if n_clip:
                ranges.add(what)
            ds.add_new(0x7FE00010, "OW", stored.tobytes())
            try:
                _write_file(ds, tmp / name)
            except Exception as exc:
                raise DicomError(f"cannot write {out / name}: {exc}") from exc
    if clipped:
        _warn(
            f"write_dicom: {clipped} value(s) of {arr.size} fell outside the stored range "
            f"({'; '.join(sorted(ranges))}) and were clipped",
        )
    return out


# ---------------------------------------------------------------------------------------------
# Reading: finding files and headers
def _collect_files(path, recursive: bool) -> tuple[str, list[Path], bool]:
    """(description of the source, candidate files, whether the user named the files)."""
    if isinstance(path, (list, tuple)):
        if not path:
            raise DicomError("read_dicom: the list of files is empty")
        files = []
        for p in path:
            f = _as_path(p, f"read_dicom: not a path: {p!r}")
            if not f.exists():
                raise DicomError(f"{f}: no such file")
            if not f.is_file():
                raise DicomError(f"{f}: not a file (give folders on their own, not in a list)")
            files.append(f)
        return f"the {len(files)} given file(s)", files, True
    p = _as_path(path, f"read_dicom: expected a folder, a file or a list of files, got {type(path).__name__}")
    if not p.exists():
        raise DicomError(f"{p}: no such file or folder")
    if p.is_file():
        return str(p), [p], True
    if not p.is_dir():
        raise DicomError(f"{p}: neither a regular file nor a folder")
    try:
        if recursive:
            found = [
                f
                for f in p.rglob("*")
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
            ]
        else:
            found = [f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")]
    except OSError as exc:
        raise DicomError(f"{p}: cannot list the folder: {exc}") from exc
    if not found:
        raise DicomError(f"{p}: the folder is empty: no DICOM files to read")
    return str(p), sorted(found), False


def _as_path(p, type_message: str) -> Path:
    """A user's path argument as a Path; an empty string is refused (``Path("")`` is the current folder)."""
    if isinstance(p, str) and p == "":
        raise DicomError("read_dicom: the path is an empty string")
    try:
        return Path(p).expanduser()
    except TypeError as exc:
        raise InputTypeError(type_message) from exc
    except RuntimeError as exc:  # "~user" that does not exist
        raise DicomError(f"{p}: cannot expand '~' in the path: {exc}") from exc


def _scan(path, recursive: bool) -> tuple[str, list[_Entry]]:
    source, files, explicit = _collect_files(path, recursive)
    entries: list[_Entry] = []
    ignored: list[str] = []
    for f in files:
        with _about(f):
            ds = _read_file(f, header_only=True, explicit=explicit)
            if ds is None:
                ignored.append(f.name)
                continue
            reason = _not_an_image(ds)
            if reason:
                if explicit or ("Rows" not in ds and _is_image_sop_class(ds)):
                    # an image SOP class without Rows is a damaged image, not another kind of object
                    extra = " (the file may be truncated)" if _is_image_sop_class(ds) else ""
                    raise DicomError(f"{f}: {reason}{extra}")
                ignored.append(f.name)
                continue
            _headers.slim_header(ds)  # headers are kept for the whole read: no bulk data in them
            _text(f, ds, "SeriesInstanceUID")  # convert now, so that a bad value names this file
            entries.append(_Entry(f, ds))
    if not entries:
        shown = ", ".join(ignored[:5]) + (", ..." if len(ignored) > 5 else "")
        raise DicomError(f"{source}: no DICOM image files found ({len(ignored)} file(s) ignored: {shown})")
    return source, entries


def _describe(path) -> str:
    if isinstance(path, (list, tuple)):
        return f"{len(path)} given file(s)" + (f" ({path[0]}, ...)" if path else "")
    return str(path)


def _warn(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn, attributed to the first caller outside this module (the user's line)."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


@contextlib.contextmanager
def _about(where):
    """Turn any non-ctdn exception inside the block into a DicomError that names ``where``.

    pydicom converts values lazily and can fail deep inside on damaged files; the user gets the
    file name and the original error instead of a traceback through pydicom.
    """
    try:
        yield
    except (CTDNError, MemoryError):
        raise
    except Exception as exc:
        raise DicomError(f"{where}: damaged or unsupported DICOM data ({type(exc).__name__}: {exc})") from exc


def _read_file(path: Path, *, header_only: bool, explicit: bool) -> Dataset | None:
    """Read one file; ``None`` when it is not DICOM and ``explicit`` is False.

    Any failure of a file that looks like DICOM becomes a :class:`DicomError` naming the file.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise DicomError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    has_prefix = len(head) == 132 and head[128:132] == b"DICM"
    raw = not has_prefix and _looks_like_raw_dataset(head)
    if not has_prefix and not raw:
        if explicit:
            raise DicomError(f"{path}: not a DICOM file (no 'DICM' marker at byte 128; {size} bytes)")
        return None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = _dcmread(path, header_only=header_only, force=raw)
    except Exception as exc:
        if raw and not explicit:
            return None
        raise DicomError(
            f"{path}: cannot parse as DICOM; the file is corrupt or truncated ({type(exc).__name__}: {exc})"
        ) from exc
    if raw and "SOPClassUID" not in ds:
        # forced parsing of a file without the 'DICM' marker found no DICOM object in it
        if explicit:
            raise DicomError(f"{path}: not a DICOM file (no 'DICM' marker and no SOP Class UID)")
        return None
    try:
        for w in caught:
            text = str(w.message)
            if "end of file" in text.lower():
                raise DicomError(f"{path}: the file is truncated ({text})")
        _check_complete(ds, path, size)
    except DicomError:
        if raw and not explicit:
            return None  # without the marker we cannot tell a damaged file from a foreign one
        raise
    for w in caught:
        _warn(f"{path.name}: {w.message}", w.category)
    _set_transfer_syntax(ds)  # no preamble, or a file meta without it: the encoding pydicom read
    return ds


def _dcmread(path: Path, *, header_only: bool, force: bool) -> Dataset:
    """``pydicom.dcmread``; a header's bulk values are skipped, not read (``slim_header`` drops
    them), except in a deflated file, where pydicom cannot go back for a skipped value."""
    defer = _headers.BULK_LIMIT if header_only and _PYDICOM_MAJOR >= 3 else None
    ds = pydicom.dcmread(str(path), stop_before_pixels=header_only, force=force, defer_size=defer)
    meta = getattr(ds, "file_meta", None)
    if defer is not None and meta is not None and str(meta.get("TransferSyntaxUID", "")) == _DEFLATED:
        ds = pydicom.dcmread(str(path), stop_before_pixels=header_only, force=force)
    return ds


def _looks_like_raw_dataset(head: bytes) -> bool:
    """A data set without preamble usually starts with a (0008,xxxx) or (0002,xxxx) tag."""
    if len(head) < 8:
        return False
    group, elem = struct.unpack("<HH", head[:4])
    return group in (0x0002, 0x0008) and elem < 0x0100


def _set_transfer_syntax(ds: Dataset) -> None:
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit:
        meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian


def _check_complete(ds: Dataset, path: Path, size: int) -> None:
    """pydicom reads truncated files without complaint; find values cut short by the end of file."""
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    for dset in (meta, ds):
        if dset is None:
            continue
        for tag in list(dset.keys()):
            elem = _headers.raw_item(dset, tag)
            value = getattr(elem, "value", None)
            length = getattr(elem, "length", None)
            tell = getattr(elem, "value_tell", None)
            if isinstance(elem, RawDataElement) and value is None and length != _UNDEFINED_LENGTH:
                if tell is not None and tell + length > size:  # a deferred value: not read, only skipped
                    raise DicomError(
                        f"{path}: the file is truncated: {_tag_name(tag)} should hold {length} bytes, "
                        f"only {max(size - tell, 0)} are present"
                    )
                continue
            if not isinstance(elem, RawDataElement) or not isinstance(value, bytes):
                continue
            if length == _UNDEFINED_LENGTH:
                # encapsulated pixel data: the value is followed by an 8-byte sequence delimiter
                if tell is not None and ts != _DEFLATED and tell + len(value) + 8 > size:
                    raise DicomError(f"{path}: the file is truncated inside {_tag_name(tag)}")
            elif len(value) < length:
                raise DicomError(
                    f"{path}: the file is truncated: {_tag_name(tag)} should hold {length} bytes, "
                    f"only {len(value)} are present"
                )
    if len(ds) == 0:
        raise DicomError(f"{path}: no data elements after the file meta information (empty or truncated)")


def _tag_name(tag) -> str:
    tag = pydicom.tag.Tag(tag)
    keyword = pydicom.datadict.keyword_for_tag(tag)
    return f"{keyword} {tag}" if keyword else str(tag)


def _not_an_image(ds: Dataset) -> str:
    """Why a DICOM object is not an image slice to read ('' when it is one)."""
    meta = getattr(ds, "file_meta", None)
    sop = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
    if sop == _DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        return "a DICOMDIR (an index of a DICOM medium), not an image; read the folder of images instead"
    if "Rows" not in ds or "Columns" not in ds:
        return f"not an image (no Rows/Columns; SOP class {_sop_name(sop)})"
    return ""


def _sop_name(sop: str) -> str:
    name = UID(sop).name if sop else ""
    return f"{name} {sop}" if name and name != sop else (sop or "unknown")


def _is_image_sop_class(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    sop = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
    return bool(sop) and "Image Storage" in UID(sop).name


def _get(entry_path: Path, ds: Dataset, keyword: str, default=None):
    """``ds.<keyword>`` with conversion errors reported against the file."""
    try:
        value = ds.get(keyword, default)
    except Exception as exc:
        raise DicomError(f"{entry_path}: unreadable {keyword}: {exc}") from exc
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    return value


def _text(path: Path, ds: Dataset, keyword: str) -> str:
    value = _get(path, ds, keyword, "")
    return str(value).strip()


def _number(path: Path, ds: Dataset, keyword: str, default: float | None) -> float | None:
    value = _get(path, ds, keyword, None)
    if value is None:
        return default
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise DicomError(f"{path}: {keyword} is not a number: {value!r}") from exc
    return out


def _floats(path: Path, ds: Dataset, keyword: str, n: int) -> tuple[float, ...] | None:
    value = _get(path, ds, keyword, None)
    if value is None:
        return None
    try:
        values = tuple(float(v) for v in (value if isinstance(value, Iterable) else [value]))
    except (TypeError, ValueError) as exc:
        raise DicomError(f"{path}: {keyword} is not {n} numbers: {value!r}") from exc
    if len(values) != n or not all(np.isfinite(values)):
        raise DicomError(f"{path}: {keyword} must be {n} finite numbers, got {value!r}")
    return values


def _group(entries: list[_Entry]) -> dict[str, list[_Entry]]:
    groups: dict[str, list[_Entry]] = {}
    for e in entries:
        groups.setdefault(_text(e.path, e.ds, "SeriesInstanceUID"), []).append(e)
    return dict(sorted(groups.items()))


def _summaries(groups: dict[str, list[_Entry]]) -> list[dict[str, Any]]:
    out = []
    for uid, members in groups.items():
        descriptions = [_text(e.path, e.ds, "SeriesDescription") for e in members]
        modalities = sorted({_text(e.path, e.ds, "Modality") or "?" for e in members})
        out.append(
            {
                "uid": uid,
                "description": next((d for d in descriptions if d), ""),
                "n_files": len(members),
                "modality": "/".join(modalities),
            }
        )
    return out


def _format_series(summaries: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"  series_uid={s['uid'] or '(none)'!s}  description={s['description']!r}  "
        f"modality={s['modality']}  {s['n_files']} file(s)"
        for s in summaries
    )


# ---------------------------------------------------------------------------------------------
# Reading: one series
def _load_series(entries: list[_Entry], *, allow_non_ct: bool, allocate=None) -> Volume:
    """Check, sort and read one series. ``allocate(shape)`` gives the float32 array the slices are
    read into (default ``np.empty``; e.g. a scratch memmap); it is called only after the first slice
    has been read and its pixel data checked against its header."""
    for e in entries:
        with _about(e.path):
            _check_slice_header(e, allow_non_ct)
    try:
        _headers.check_series(entries)  # one rescale rule, each image once
        _check_same_size(entries)
        row_col = _pixel_spacing(entries)
        order, slice_spacing, origin, orientation = _sort_slices(entries)
    except DicomError as exc:  # these name files by their names alone: say where they are
        where = _series_folder(entries)
        if where in str(exc):
            raise
        raise DicomError(f"{where}: {exc}") from exc
    entries = [entries[i] for i in order]

    rows, cols = int(entries[0].ds.Rows), int(entries[0].ds.Columns)
    # the first slice is read (and its pixel data checked against Rows x Columns) before the volume
    # is allocated: a damaged header must not ask for gigabytes
    with _about(entries[0].path):
        first = _read_slice(entries[0].path, rows, cols)
    shape = (len(entries), rows, cols)
    try:
        hu = np.empty(shape, dtype=np.float32) if allocate is None else allocate(shape)
    except MemoryError as exc:
        raise DicomError(
            f"{_series_folder(entries)}: not enough memory for {len(entries)} slice(s) of {rows} x {cols} "
            f"({len(entries) * rows * cols * 4 / 2**30:.1f} GiB as float32)"
        ) from exc
    hu[0] = first
    for k, e in enumerate(entries[1:], start=1):
        with _about(e.path):
            hu[k] = _read_slice(e.path, rows, cols)
    return Volume(
        hu=hu,
        spacing=(float(slice_spacing), float(row_col[0]), float(row_col[1])),
        origin=origin,
        orientation=orientation,
        series_uid=_text(entries[0].path, entries[0].ds, "SeriesInstanceUID"),
        headers=[e.ds for e in entries],
        files=[Path(os.path.abspath(e.path)) for e in entries],
    )


def _series_folder(entries: list[_Entry]) -> str:
    parents = sorted({str(e.path.parent) for e in entries})
    return parents[0] if len(parents) == 1 else f"{parents[0]} (and {len(parents) - 1} other folder(s))"


def _check_slice_header(e: _Entry, allow_non_ct: bool) -> None:
    path, ds = e.path, e.ds
    modality = _text(path, ds, "Modality")
    if modality != "CT" and not allow_non_ct:
        what = f"Modality is {modality!r}" if modality else "it has no Modality"
        raise DicomError(
            f"{path}: {what}, not CT; ctdn reads CT in Hounsfield units "
            f"(pass {option('allow_non_ct')} to read it anyway)"
        )
    frames = _number(path, ds, "NumberOfFrames", 1.0)
    if frames is not None and (frames < 0 or frames != int(frames)):
        raise DicomError(f"{path}: NumberOfFrames is {frames:g}; it must be a positive whole number")
    if frames is not None and frames > 1:
        raise DicomError(
            f"{path}: multi-frame image ({int(frames)} frames in one file) is not supported; "
            "export the series as one single-frame file per slice"
        )
    sop = _text(path, ds, "SOPClassUID")
    if sop == _ENHANCED_CT_SOP_CLASS or "PerFrameFunctionalGroupsSequence" in ds:
        raise DicomError(
            f"{path}: Enhanced (multi-frame) CT is not supported; "
            "export the series as classic single-frame CT slices"
        )
    samples = _number(path, ds, "SamplesPerPixel", 1.0)
    if samples != 1:
        raise DicomError(f"{path}: {int(samples)} samples per pixel (colour image); CT must be grayscale")
    photometric = _text(path, ds, "PhotometricInterpretation")
    if photometric and photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomError(
            f"{path}: PhotometricInterpretation is {photometric!r}, not MONOCHROME1/MONOCHROME2; "
            "the pixel values are not grayscale intensities that rescale to HU"
        )
    if "ModalityLUTSequence" in ds and len(ds.ModalityLUTSequence):
        _check_modality_lut(path, ds)
    else:
        _rescale_params(path, ds)


def _check_modality_lut(path: Path, ds: Dataset) -> None:
    """One LUT item whose LUTData holds the number of entries its LUTDescriptor gives (pydicom reads a
    longer LUT with only its first entries and fails deep inside on a shorter one)."""
    seq = ds.ModalityLUTSequence
    if len(seq) != 1:
        raise DicomError(f"{path}: ModalityLUTSequence has {len(seq)} items; it must have exactly one")
    item = seq[0]
    for keyword in ("LUTDescriptor", "LUTData"):
        value = item.get(keyword, None)
        if value is None or (hasattr(value, "__len__") and len(value) == 0):
            raise DicomError(f"{path}: the Modality LUT has no {keyword}")
    descriptor = item.LUTDescriptor
    if isinstance(descriptor, (bytes, str)) or not hasattr(descriptor, "__len__") or len(descriptor) != 3:
        raise DicomError(f"{path}: LUTDescriptor must be 3 numbers, got {descriptor!r}")
    entries = int(descriptor[0]) or 65536  # 0 means 2**16
    bits = int(descriptor[2])
    data = item.LUTData
    if isinstance(data, bytes):
        sizes = {entries * 2, entries * 2 + 1} | ({entries, entries + 1} if bits <= 8 else set())
        ok = len(data) in sizes
        held = f"{len(data)} bytes"
    else:
        n = len(data) if hasattr(data, "__len__") else 1
        ok = n == entries
        held = f"{n} entries"
    if not ok:
        raise DicomError(
            f"{path}: the Modality LUT's LUTData holds {held} but its LUTDescriptor gives {entries} "
            f"entries of {bits} bits"
        )


def _check_same_size(entries: list[_Entry]) -> None:
    sizes: dict[tuple[int, int], list[Path]] = {}
    for e in entries:
        rows, cols = _number(e.path, e.ds, "Rows", 0), _number(e.path, e.ds, "Columns", 0)
        if not rows or not cols:
            raise DicomError(f"{e.path}: empty image size Rows={rows} Columns={cols}")
        sizes.setdefault((int(rows), int(cols)), []).append(e.path)
    if len(sizes) > 1:
        parts = [f"{r}x{c} ({len(ps)} file(s), e.g. {ps[0].name})" for (r, c), ps in sizes.items()]
        raise DicomError(
            f"mixed image sizes (Rows x Columns) in one series: {', '.join(parts)}; "
            f"the slices are in {entries[0].path.parent}"
        )


def _pixel_spacing(entries: list[_Entry]) -> tuple[float, float]:
    first = _floats(entries[0].path, entries[0].ds, "PixelSpacing", 2)
    for e in entries[1:]:
        other = _floats(e.path, e.ds, "PixelSpacing", 2)
        if (first is None) != (other is None) or (
            first is not None and max(abs(a - b) for a, b in zip(first, other, strict=True)) > 1e-4
        ):
            raise DicomError(
                f"mixed PixelSpacing in one series: {entries[0].path.name} has {first}, "
                f"{e.path.name} has {other}"
            )
    if first is None:
        _warn(f"{entries[0].path.parent}: no PixelSpacing; assuming 1.0 mm pixels")
        return 1.0, 1.0
    if min(first) <= 0:
        raise DicomError(f"{entries[0].path}: PixelSpacing must be positive, got {first}")
    return first


def _nominal_spacing(e: _Entry, *, why: str) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _number(e.path, e.ds, keyword, None)
        if value is not None and np.isfinite(value) and value > 0:
            return float(value)
    _warn(
        f"{e.path}: {why} and neither SpacingBetweenSlices nor SliceThickness is set; "
        "assuming a slice spacing of 1.0 mm",
    )
    return 1.0


def _sort_slices(entries: list[_Entry]):
    """(order, slice spacing, origin, orientation) of the slices."""
    n = len(entries)
    iops = [_floats(e.path, e.ds, "ImageOrientationPatient", 6) for e in entries]
    ipps = [_floats(e.path, e.ds, "ImagePositionPatient", 3) for e in entries]
    missing = [e.path.name for e, a, b in zip(entries, iops, ipps, strict=True) if a is None or b is None]

    if missing:
        orientation = iops[0] if all(a is not None and a == iops[0] for a in iops) else None
        if n == 1:
            return [0], _nominal_spacing(entries[0], why="one slice"), ipps[0], orientation
        _warn(
            f"{len(missing)} of {n} slice(s) lack ImagePositionPatient/ImageOrientationPatient "
            f"(e.g. {missing[0]}); sorting by InstanceNumber",
        )
        numbers = [_number(e.path, e.ds, "InstanceNumber", None) for e in entries]
        lacking = [e.path.name for e, v in zip(entries, numbers, strict=True) if v is None]
        if lacking:
            raise DicomError(
                f"cannot order the slices: {lacking[0]} has neither ImagePositionPatient nor InstanceNumber"
            )
        seen: dict[float, Path] = {}
        for e, v in zip(entries, numbers, strict=True):
            if v in seen:
                raise DicomError(
                    f"cannot order the slices: InstanceNumber {v:g} appears in {seen[v].name} and "
                    f"{e.path.name}, and there are no slice positions"
                )
            seen[v] = e.path
        order = list(np.argsort(np.asarray(numbers), kind="stable"))
        spacing = _nominal_spacing(entries[order[0]], why="the slices have no positions")
        return order, spacing, None, orientation

    ref = np.asarray(iops[0])
    row, col = ref[:3], ref[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2 or abs(row @ col) > 1e-2:
        raise DicomError(
            f"{entries[0].path}: ImageOrientationPatient {iops[0]} is not two orthogonal unit vectors"
        )
    for e, iop in zip(entries, iops, strict=True):
        if np.max(np.abs(np.asarray(iop) - ref)) > _ORIENTATION_TOL:
            raise DicomError(
                f"mixed orientation in one series: {entries[0].path.name} has ImageOrientationPatient "
                f"{iops[0]} but {e.path.name} has {iop}"
            )
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    pos = np.array([float(normal @ np.asarray(p)) for p in ipps])
    order = list(np.argsort(pos, kind="stable"))
    if n == 1:
        return order, _nominal_spacing(entries[0], why="one slice"), ipps[0], iops[0]

    sorted_pos = pos[order]
    steps = np.diff(sorted_pos)
    names = [entries[i].path.name for i in order]
    dups = np.flatnonzero(steps < _DUPLICATE_TOL_MM)
    if dups.size:
        k = int(dups[0])
        a, b = entries[order[k]], entries[order[k + 1]]
        raise DicomError(  # the same image twice (one SOPInstanceUID) is refused before, by check_series
            f"duplicate slice position {sorted_pos[k]:.3f} mm along the slice normal: {a.path.name} and "
            f"{b.path.name}; {dups.size} duplicate(s) in all"
        )
    median = float(np.median(steps))
    gaps = np.flatnonzero(steps > _GAP_FACTOR * median)
    if gaps.size:
        where = "; ".join(
            f"between {sorted_pos[k]:.3f} and {sorted_pos[k + 1]:.3f} mm ({names[k]}, {names[k + 1]}, "
            f"step {steps[k]:.3g} mm)"
            for k in gaps[:5]
        )
        raise DicomError(
            f"missing slice(s): {gaps.size} gap(s) in the slice positions along the normal, {where}"
            f"{' ...' if gaps.size > 5 else ''}; the median spacing is {median:.3g} mm"
        )
    if np.max(np.abs(steps - median)) > _IRREGULAR_FRACTION * median:
        _warn(
            f"irregular slice spacing in {entries[0].path.parent}: steps from {steps.min():.3g} to "
            f"{steps.max():.3g} mm; using the median {median:.3g} mm",
        )
    return order, median, ipps[order[0]], iops[0]


def _read_slice(path: Path, rows: int, cols: int) -> np.ndarray:
    ds = _read_file(path, header_only=False, explicit=True)
    if not any(tag in ds for tag in _PIXEL_TAGS):
        raise DicomError(f"{path}: no pixel data (no PixelData element; the file may be truncated)")
    _check_pixel_length(ds, path, rows, cols)
    arr = _decode(ds, path)
    if arr.shape != (rows, cols):
        raise DicomError(f"{path}: decoded pixel array has shape {arr.shape}, expected ({rows}, {cols})")
    hu = _rescale(arr, ds, path)
    bad = ~np.isfinite(hu)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DicomError(
            f"{path}: {int(bad.sum())} non-finite value(s) (NaN or inf) after rescale, first at "
            f"(row, column) {first}"
        )
    return hu


_NEEDED_TO_DECODE = {
    0x7FE00010: (
        "BitsAllocated",
        "BitsStored",
        "PixelRepresentation",
        "PhotometricInterpretation",
        "SamplesPerPixel",
    ),
    0x7FE00008: ("PhotometricInterpretation", "SamplesPerPixel"),
    0x7FE00009: ("PhotometricInterpretation", "SamplesPerPixel"),
}


def _check_pixel_length(ds: Dataset, path: Path, rows: int, cols: int) -> None:
    """The header must describe the native pixel data exactly: no missing attribute, no byte too few
    or too many (pydicom crops excess data with only a warning, which would give a wrong image)."""
    tag = next(t for t in _PIXEL_TAGS if t in ds)
    keyword = pydicom.datadict.keyword_for_tag(tag)
    for needed in _NEEDED_TO_DECODE[tag]:
        if needed not in ds:
            raise DicomError(f"{path}: no {needed} in the header; it is needed to decode the {keyword}")
    value = ds[tag].value
    if value is None or len(value) == 0:
        raise DicomError(f"{path}: {keyword} is empty")
    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)))
    if ds[tag].is_undefined_length or (ts.is_transfer_syntax and ts.is_compressed):
        return  # encapsulated: the decoder checks the frames
    bits = {0x7FE00008: 32, 0x7FE00009: 64}.get(tag) or int(_number(path, ds, "BitsAllocated", 0) or 0)
    frames = max(int(_number(path, ds, "NumberOfFrames", 1.0) or 1), 1)
    samples = int(_number(path, ds, "SamplesPerPixel", 1.0) or 1)
    if bits <= 0 or bits % 8:
        return  # pydicom names the bad BitsAllocated
    needed = rows * cols * frames * samples * bits // 8
    if len(value) not in (needed, needed + needed % 2):  # an odd length is padded to even
        raise DicomError(
            f"{path}: {keyword} holds {len(value)} bytes but Rows x Columns = {rows} x {cols} at "
            f"{bits} bits allocated needs {needed}; the header does not match the pixel data"
        )


def _missing_decoder(path: Path, ts: UID, detail: str) -> MissingDependencyError:
    extra = ""
    if str(ts) in _JPEG_LS:
        extra = " JPEG-LS also needs pyjpegls (pip install pyjpegls)."
    return MissingDependencyError(
        f"{path}: the pixel data is compressed ({ts.name}) and no installed decoder can read it. "
        f"Install the DICOM decoders with: {INSTALL_HINT} ({_DECODER_PACKAGES}).{extra}"
        + (f" pydicom says: {detail}" if detail else "")
    )


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)))
    if not ts.is_transfer_syntax:
        raise DicomError(
            f"{path}: unknown or private TransferSyntaxUID {str(ts)!r}; cannot decode the pixels"
        )
    if ts.is_compressed and _get_decoder is not None:
        try:
            decoder = _get_decoder(ts)
        except NotImplementedError as exc:
            raise DicomError(f"{path}: pydicom cannot decode pixel data in {ts.name} ({ts})") from exc
        if not decoder.is_available:
            detail = "; ".join(decoder.missing_dependencies)
            raise _missing_decoder(path, ts, detail)
    try:
        arr = ds.pixel_array
    except ImportError as exc:
        raise _missing_decoder(path, ts, str(exc)) from exc
    except Exception as exc:
        text = str(exc)
        if "missing" in text.lower() and "dependenc" in text.lower():
            raise _missing_decoder(path, ts, text) from exc
        raise DicomError(f"{path}: cannot decode the pixel data ({ts.name}): {text}") from exc
    return np.asarray(arr)


def _rescale_params(path: Path, ds: Dataset) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept), defaults 1 and 0; refused when not finite or a zero slope."""
    slope = _number(path, ds, "RescaleSlope", 1.0)
    intercept = _number(path, ds, "RescaleIntercept", 0.0)
    if not np.isfinite(slope):
        raise DicomError(f"{path}: RescaleSlope is {slope}; it must be a finite number")
    if slope == 0:
        raise DicomError(
            f"{path}: RescaleSlope is 0, which maps every pixel to the intercept; the header is damaged"
        )
    if not np.isfinite(intercept):
        raise DicomError(f"{path}: RescaleIntercept is {intercept}; it must be a finite number")
    return slope, intercept


def _rescale(arr: np.ndarray, ds: Dataset, path: Path) -> np.ndarray:
    if "ModalityLUTSequence" in ds and len(ds.ModalityLUTSequence):
        try:
            out = apply_modality_lut(arr, ds)
        except Exception as exc:
            raise DicomError(f"{path}: cannot apply the Modality LUT: {exc}") from exc
        return np.asarray(out, dtype=np.float32)
    slope, intercept = _rescale_params(path, ds)
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(np.float64) * slope + intercept
        return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Writing
def check_dicom_output(out_dir, like: Volume, *, overwrite: bool) -> Path:
    """The resolved folder ``write_dicom(..., out_dir, overwrite=overwrite)`` would write, or the
    :class:`~ctdn.errors.DicomError` it would raise for it: call it before the work that makes the
    pixels. The rules are :mod:`ctdn.io.output`'s, with the folders of ``like``'s files as inputs."""
    folders = sorted({os.path.dirname(os.path.abspath(f)) for f in like.files})
    return check_output(out_dir, "dicom", overwrite=overwrite, inputs=folders, error=DicomError)


def _stored_params(src: Dataset) -> tuple[float, float, int, bool, bool]:
    """(slope, intercept, bits stored, signed, replace the Modality LUT) for a derived slice."""
    if "ModalityLUTSequence" in src:
        return 1.0, 0.0, 16, True, True
    slope = _header_number(src, "RescaleSlope", 1.0)
    intercept = _header_number(src, "RescaleIntercept", 0.0)
    if not np.isfinite(slope) or slope == 0 or not np.isfinite(intercept):
        raise DicomError(f"source header has an unusable rescale: slope {slope}, intercept {intercept}")
    allocated = int(_header_number(src, "BitsAllocated", 16.0))
    if "PixelRepresentation" not in src and allocated in (32, 64):  # float pixel data
        return slope, intercept, 16, True, False
    bits = min(max(int(_header_number(src, "BitsStored", 16.0)), 1), 16)
    signed = int(_header_number(src, "PixelRepresentation", 0.0)) == 1
    return slope, intercept, bits, signed, False


def _header_number(ds: Dataset, keyword: str, default: float) -> float:
    value = ds.get(keyword, None)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise DicomError(f"source header: {keyword} is not a number: {value!r}") from exc


def _derived_slice(
    hu: np.ndarray,
    src: Dataset,
    *,
    index: int,
    series_uid: str,
    description: str,
    derivation: str,
    series_number: int | None,
    now: datetime.datetime,
    source: np.ndarray | None = None,
    model: str | None = None,
    code: tuple[str, str, str] | None = SMOOTHING,
) -> tuple[Dataset, np.ndarray, int, str]:
    """One derived slice: (data set, stored values, how many were clipped, the stored range).

    ``source`` is the source slice in HU (``like.hu[index]``): its padding pixels keep their exact
    stored values (:func:`~ctdn.io._dicom_derived.keep_padding`)."""
    slope, intercept, bits, signed, replace_lut = _stored_params(src)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    values = np.rint((hu.astype(np.float64) - intercept) / slope)
    pad = None if replace_lut or source is None else padding_range(src, signed=signed)
    moved = 0
    if pad is not None:
        moved = keep_padding(values, source, slope=slope, intercept=intercept, pad=pad, lo=lo, hi=hi)
    n_clip = int(np.count_nonzero((values < lo) | (values > hi))) + moved
    stored = np.clip(values, lo, hi).astype("<i2" if signed else "<u2")
    what = (
        f"{bits}-bit {'signed' if signed else 'unsigned'} {lo}..{hi}, i.e. "
        f"{lo * slope + intercept:g}..{hi * slope + intercept:g} HU"
    )
    if pad is not None:
        what += f", less the padding values {pad[0]}..{pad[1]} (kept for the padding pixels only)"

    ds = copy.deepcopy(src)
    original = getattr(src, "original_encoding", (None, True))
    if original and original[1] is False:  # big endian source: raw binary values would be misread
        for tag in [t for t in ds.keys() if (ds.get_item(t).VR or "") in _BYTE_ORDER_VRS]:
            del ds[tag]
    for keyword in _DROP_ON_WRITE:
        if keyword in ds:
            delattr(ds, keyword)
    if replace_lut:
        del ds.ModalityLUTSequence
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, 0, "HU"
    if pad is None:  # padding values of a source encoding that the new pixels do not keep
        for keyword in ("PixelPaddingValue", "PixelPaddingRangeLimit"):
            if keyword in ds:
                delattr(ds, keyword)

    sop_class = str(src.get("SOPClassUID", "") or _CT_IMAGE_STORAGE)
    sop_instance = generate_uid()
    old_instance = str(src.get("SOPInstanceUID", "") or "")
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.SeriesInstanceUID = series_uid

    old_type = src.get("ImageType", None)
    if old_type is None:
        old_values: list[str] = []
    elif isinstance(old_type, str):
        old_values = [old_type]
    else:
        old_values = [str(v) for v in old_type]
    ds.ImageType = ["DERIVED", "SECONDARY"] + [v.strip() for v in old_values[2:]]

    old_description = str(src.get("SeriesDescription", "") or "").strip()
    ds.SeriesDescription = (f"{old_description} {description}" if old_description else description)[:64]
    ds.DerivationDescription = derivation[:1024]
    mark_processed(ds, derivation=derivation, model=model, code=code, now=now)
    if series_number is not None:
        ds.SeriesNumber = int(series_number)
    elif str(src.get("SeriesNumber", "") or "").strip():
        ds.SeriesNumber = int(src.SeriesNumber) + 1000
    ds.InstanceNumber = index + 1
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    if old_instance:
        ref = Dataset()
        ref.ReferencedSOPClassUID = sop_class
        ref.ReferencedSOPInstanceUID = old_instance
        ds.SourceImageSequence = [ref]

    ds.Rows, ds.Columns = int(hu.shape[0]), int(hu.shape[1])
    ds.SamplesPerPixel = 1
    if str(src.get("PhotometricInterpretation", "")).strip() not in ("MONOCHROME1", "MONOCHROME2"):
        ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"CTDN_{__version__}"[:16]
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    return ds, stored, n_clip, what


def _write_file(ds: Dataset, path: Path) -> None:
    """Encode one slice as a DICOM file (Explicit VR Little Endian, from ``ds.file_meta``)."""
    if _PYDICOM_MAJOR >= 3:
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    else:  # pragma: no cover - pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        pydicom.dcmwrite(path, ds, write_like_original=False)
