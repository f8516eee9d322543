"""Reading a DICOM series without holding its pixels in memory.

:func:`read_dicom_mapped` is :func:`ctdn.io.read_dicom` with one difference: the HU volume is
decoded slice by slice into a memory-mapped scratch file on disk instead of an in-memory array,
so reading a 1000-slice 512x512 series needs one slice of memory, not 1 GB. The headers (one
pydicom data set per slice, without pixel data) are still held in memory, as ``read_dicom``
holds them; they are small.

It uses the same checks, sorting and decoding as ``read_dicom`` (the helpers of
:mod:`ctdn.io.dicom`, imported, not copied); ``tests/test_memory.py`` checks that both return the
same volume. The scratch file is an unnamed temporary file (deleted by the operating system when
the mapping is released), placed in ``scratch_dir`` -- give a folder on a disk, not a RAM-backed
``/tmp``, or the "disk" pages are memory again.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DicomError, InputError
from . import dicom as _dicom
from .dicom import Volume

__all__ = ["read_dicom_mapped", "scratch_array"]

PathLike = str | os.PathLike


def scratch_array(shape: tuple[int, ...], dtype, scratch_dir: PathLike | None = None) -> np.memmap:
    """A zero-filled writable ``np.memmap`` backed by an unnamed temporary file in ``scratch_dir``
    (default: the system's temporary folder); the file disappears when the array is released."""
    try:
        f = tempfile.TemporaryFile(dir=None if scratch_dir is None else os.fspath(scratch_dir))
    except OSError as exc:
        where = scratch_dir or tempfile.gettempdir()
        raise InputError(f"cannot create a scratch file in {where}: {exc}") from exc
    with f:  # the mapping keeps its own reference to the file
        return np.memmap(f, dtype=dtype, mode="w+", shape=tuple(shape))


def read_dicom_mapped(
    path: PathLike | Sequence[PathLike],
    *,
    series_uid: str | None = None,
    recursive: bool = False,
    allow_non_ct: bool = False,
    scratch_dir: PathLike | None = None,
) -> Volume:
    """:func:`ctdn.io.read_dicom`, with ``Volume.hu`` a float32 ``np.memmap`` on a scratch file.

    The arguments and errors are ``read_dicom``'s; ``scratch_dir`` is the folder of the scratch
    file (it needs 4 bytes per voxel of free space).
    """
    with _dicom._about(_dicom._describe(path)):
        source, entries = _dicom._scan(path, recursive)
        groups = _dicom._group(entries)
        if series_uid is None:
            if len(groups) > 1:
                raise DicomError(
                    f"{source} holds {len(groups)} image series; choose one with "
                    f"read_dicom(..., series_uid=...):\n{_dicom._format_series(_dicom._summaries(groups))}"
                )
            (chosen,) = groups.values()
        else:
            key = str(series_uid).strip()
            if key not in groups:
                raise DicomError(
                    f"series {key!r} is not in {source}; it holds:\n"
                    f"{_dicom._format_series(_dicom._summaries(groups))}"
                )
            chosen = groups[key]
        return _load_series_mapped(chosen, allow_non_ct=allow_non_ct, scratch_dir=scratch_dir)


def _load_series_mapped(entries, *, allow_non_ct: bool, scratch_dir) -> Volume:
    for e in entries:
        with _dicom._about(e.path):
            _dicom._check_slice_header(e, allow_non_ct)
    _dicom._check_same_size(entries)
    row_col = _dicom._pixel_spacing(entries)
    order, slice_spacing, origin, orientation = _dicom._sort_slices(entries)
    entries = [entries[i] for i in order]

    rows, cols = int(entries[0].ds.Rows), int(entries[0].ds.Columns)
    hu = scratch_array((len(entries), rows, cols), np.float32, scratch_dir)
    for k, e in enumerate(entries):
        with _dicom._about(e.path):
            hu[k] = _dicom._read_slice(e.path, rows, cols)
    return Volume(
        hu=hu,
        spacing=(float(slice_spacing), float(row_col[0]), float(row_col[1])),
        origin=origin,
        orientation=orientation,
        series_uid=_dicom._text(entries[0].path, entries[0].ds, "SeriesInstanceUID"),
        headers=[e.ds for e in entries],
        files=[Path(os.path.abspath(e.path)) for e in entries],
    )
