"""Reading a DICOM series without holding its pixels in memory.

:func:`read_dicom_mapped` is :func:`ctdn.io.read_dicom` with one difference: the HU volume is
decoded slice by slice into a memory-mapped scratch file on disk instead of an in-memory array,
so reading a 1000-slice 512x512 series needs one slice of memory, not 1 GB. The headers (one
pydicom data set per slice, without pixel data) are still held in memory, as ``read_dicom``
holds them; they are small whatever the files hold, since bulk elements (over 64 KiB, private
data over 256 KiB a slice, icon images, bulk overlays) are not kept
(``ctdn.io._dicom_headers``). The series-level refusals (an inconsistent rescale, one
SOPInstanceUID twice) are ``read_dicom``'s too.

It uses the same checks, sorting and decoding as ``read_dicom``: ``ctdn.io.dicom._load_series``
with its ``allocate`` hook (called only after the first slice has been read and checked, so a
damaged header cannot ask for a huge scratch file); ``tests/test_memory.py`` checks that both
return the same volume. The scratch file is an unnamed temporary file (deleted by the operating system when
the mapping is released), placed in ``scratch_dir`` -- give a folder on a disk, not a RAM-backed
``/tmp``, or the "disk" pages are memory again.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from . import dicom as _dicom
from .dicom import Volume

__all__ = ["read_dicom_mapped", "scratch_array"]

PathLike = str | os.PathLike


def scratch_array(shape: tuple[int, ...], dtype, scratch_dir: PathLike | None = None) -> np.memmap:
    """A zero-filled writable ``np.memmap`` backed by an unnamed temporary file in ``scratch_dir``
    (default: the system's temporary folder); the file disappears when the array is released."""
    where = scratch_dir or tempfile.gettempdir()
    try:
        with tempfile.TemporaryFile(dir=None if scratch_dir is None else os.fspath(scratch_dir)) as f:
            return np.memmap(f, dtype=dtype, mode="w+", shape=tuple(shape))  # it keeps its own handle
    except (OSError, ValueError, OverflowError) as exc:
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        raise InputError(f"cannot create a {size / 2**30:.1f} GiB scratch file in {where}: {exc}") from exc


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

    def allocate(shape):
        return scratch_array(shape, np.float32, scratch_dir)

    with _dicom._about(_dicom._describe(path)):
        return _dicom._read_dicom(path, series_uid, recursive, allow_non_ct, allocate=allocate)
