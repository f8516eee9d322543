"""DICOM CT series in and out: :func:`read_dicom` -> :class:`Volume` (HU) -> :func:`write_dicom`.

See :mod:`ctdn.io.dicom` for the rules (sorting, spacing, rescale, refusals, clipping on write).
"""

from __future__ import annotations

from .dicom import Volume, list_series, read_dicom, write_dicom

__all__ = ["Volume", "read_dicom", "write_dicom", "list_series"]
