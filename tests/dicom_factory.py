"""Writes tiny, valid CT series with pydicom from a known HU volume, for the DICOM tests.

Every file is a proper DICOM Part 10 file (128-byte preamble, ``DICM``, File Meta Information)
in Explicit VR Little Endian unless another transfer syntax is asked for. The HU volume that a
correct reader must return is given back, in ascending order of position along the slice normal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    generate_uid,
)

__all__ = [
    "add_private",
    "disc_volume",
    "make_ct_series",
    "one_file",
    "ring_mask",
    "stored_range",
    "PATIENT",
    "CT_IMAGE_STORAGE",
    "MR_IMAGE_STORAGE",
]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

PATIENT = {
    "PatientName": "Factory^Phantom",
    "PatientID": "CTDN-0001",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
}


def stored_range(bits_stored: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest stored value for BitsStored / PixelRepresentation."""
    if signed:
        return -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
    return 0, (1 << bits_stored) - 1


def _per_slice(value, n: int, name: str) -> list[float]:
    if np.ndim(value) == 0:
        return [float(value)] * n
    out = [float(v) for v in value]
    if len(out) != n:
        raise ValueError(f"{name}: expected {n} values, got {len(out)}")
    return out


def make_ct_series(
    folder,
    n: int = 5,
    rows: int = 32,
    cols: int = 32,
    *,
    slope: float | Sequence[float] = 1.0,
    intercept: float | Sequence[float] = -1024.0,
    spacing: float = 2.5,
    shuffle: bool = True,
    modality: str = "CT",
    series_uid: str | None = None,
    signed: bool = False,
    bits_stored: int = 12,
    seed: int = 0,
    positions: Sequence[float] | None = None,
    orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    origin: Sequence[float] = (-12.0, -14.5, -40.0),
    pixel_spacing: tuple[float, float] = (0.75, 0.8),
    description: str | None = "factory series",
    series_number: int | None = 7,
    study_uid: str | None = None,
    frame_uid: str | None = None,
    prefix: str = "CT",
    transfer_syntax: str = ExplicitVRLittleEndian,
    with_positions: bool = True,
    pixel_data: bool = True,
    stored: np.ndarray | None = None,
    float_values: np.ndarray | None = None,
    number_of_frames: int | None = None,
    slice_thickness: float | None = None,
    tweak: Callable[[Dataset, int], None] | None = None,
) -> np.ndarray:
    """Write a CT series into ``folder`` and return its HU volume (N, rows, cols), float32.

    Slice ``k`` lies at ``origin + positions[k] * normal`` (``positions`` defaults to
    ``k * spacing``), with ``normal`` the cross product of the row and column direction cosines.
    The returned volume is in ascending order of position along the normal, whatever order the
    files are written in. With ``shuffle`` the file names and the InstanceNumbers are a random
    permutation that does not follow the positions.

    Stored values are random over the whole range that ``bits_stored`` and ``signed`` allow
    (``stored`` overrides them); HU = stored * slope + intercept, computed in float64 like pydicom.
    ``slope`` and ``intercept`` may be one value per slice. ``float_values`` writes the HU as
    32-bit Float Pixel Data (slope 1, intercept 0) instead, NaN and inf included.
    ``tweak(ds, k)`` edits each slice's data set just before it is saved.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pos = [float(p) for p in positions] if positions is not None else [k * spacing for k in range(n)]
    n = len(pos)
    slopes = _per_slice(slope, n, "slope")
    intercepts = _per_slice(intercept, n, "intercept")
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or "1.2.826.0.1.3680043.8.498.1000001"
    frame_uid = frame_uid or "1.2.826.0.1.3680043.8.498.1000002"

    iop = np.asarray(orientation, dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:])
    normal /= np.linalg.norm(normal)
    org = np.asarray(origin, dtype=np.float64)

    lo, hi = stored_range(bits_stored, signed)
    if float_values is not None:
        values = np.asarray(float_values, dtype=np.float32)
        if values.shape != (n, rows, cols):
            raise ValueError(f"float_values must have shape {(n, rows, cols)}, got {values.shape}")
    elif stored is not None:
        values = np.asarray(stored, dtype=np.int64)
        if values.shape != (n, rows, cols):
            raise ValueError(f"stored must have shape {(n, rows, cols)}, got {values.shape}")
    else:
        values = rng.integers(lo, hi, size=(n, rows, cols), endpoint=True, dtype=np.int64)

    if shuffle:
        perm = rng.permutation(n)
        if n > 1 and np.array_equal(perm, np.arange(n)):
            perm = np.roll(perm, 1)
        instance = [int(perm[k]) + 1 for k in range(n)]
        write_order = list(rng.permutation(n))
    else:
        instance = [k + 1 for k in range(n)]
        write_order = list(range(n))

    little = transfer_syntax != ExplicitVRBigEndian
    expected = np.empty((n, rows, cols), dtype=np.float32)
    for order_index, k in enumerate(write_order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = transfer_syntax
        if shuffle:
            name = f"{prefix}_{order_index:03d}_{rng.integers(1 << 30):08x}.dcm"
        else:
            name = f"{prefix}{k:03d}.dcm"
        path = folder / name
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyDate = "20240102"
        ds.SeriesDate = "20240102"
        ds.StudyTime = "101500"
        ds.AccessionNumber = "ACC42"
        ds.Modality = modality
        ds.Manufacturer = "ctdn test factory"
        ds.ReferringPhysicianName = ""
        if description is not None:
            ds.SeriesDescription = description
        for key, value in PATIENT.items():
            setattr(ds, key, value)
        ds.SliceThickness = spacing if slice_thickness is None else slice_thickness
        ds.KVP = 120
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "S1"
        if series_number is not None:
            ds.SeriesNumber = series_number
        ds.InstanceNumber = instance[k]
        if with_positions:
            ds.ImagePositionPatient = [round(float(v), 6) for v in org + pos[k] * normal]
            ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.FrameOfReferenceUID = frame_uid
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        if number_of_frames is not None:
            ds.NumberOfFrames = number_of_frames
        ds.Rows = rows
        ds.Columns = cols
        ds.PixelSpacing = list(pixel_spacing)
        if float_values is not None:
            ds.BitsAllocated = 32
            ds.RescaleIntercept = 0
            ds.RescaleSlope = 1
            if pixel_data:
                ds.FloatPixelData = values[k].astype("<f4" if little else ">f4").tobytes()
            expected[k] = values[k]
        else:
            ds.BitsAllocated = 16
            ds.BitsStored = bits_stored
            ds.HighBit = bits_stored - 1
            ds.PixelRepresentation = 1 if signed else 0
            ds.WindowCenter = 40
            ds.WindowWidth = 400
            ds.RescaleIntercept = intercepts[k]
            ds.RescaleSlope = slopes[k]
            ds.RescaleType = "HU"
            if pixel_data:
                dtype = ("<" if little else ">") + ("i2" if signed else "u2")
                ds.add_new(0x7FE00010, "OW", values[k].astype(dtype).tobytes())
            with np.errstate(over="ignore"):
                hu = values[k].astype(np.float64) * slopes[k] + intercepts[k]
            expected[k] = hu.astype(np.float32)
        if tweak is not None:
            tweak(ds, k)
        pydicom.dcmwrite(path, ds, enforce_file_format=True)

    order = np.argsort(pos, kind="stable")
    return expected[order]


def one_file(folder, **kwargs) -> Path:
    """Write a single-slice series and return its path."""
    kwargs.setdefault("shuffle", False)
    make_ct_series(folder, n=1, **kwargs)
    (path,) = sorted(Path(folder).glob("*.dcm"))
    return path


def disc_volume(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size) float32 HU: a noisy soft-tissue disc (40 HU) in noisy air, noise std 30 HU."""
    c = np.arange(size) - (size - 1) / 2
    r = np.hypot(*np.meshgrid(c, c))
    base = np.where(r < 0.4 * size, 40.0, -1000.0)
    noise = np.random.default_rng(seed).normal(0, 30.0, size=(n, size, size))
    return (base + noise).astype(np.float32)


def add_private(ds: Dataset, size: int, *, group: int = 0x0029, element: int = 0x10, vr: str = "OB") -> None:
    """Add a private element of ``size`` bytes (with its Private Creator) to ``ds``."""
    ds.add_new((group << 16) | 0x0010, "LO", "CTDN FACTORY")
    ds.add_new((group << 16) | 0x1000 | element, vr, bytes(range(256)) * (size // 256) + b"\0" * (size % 256))


def ring_mask(rows: int, cols: int, radius: float = 0.45) -> np.ndarray:
    """(rows, cols) bool: True outside a centred disc of ``radius`` times the smaller side, the
    ring of padding that scanners put around the circular field of view."""
    y, x = np.mgrid[:rows, :cols]
    r = np.hypot(y - (rows - 1) / 2, x - (cols - 1) / 2)
    return r > radius * min(rows, cols)
