"""The lesion masks, lesion table and organ map of fidelity slices: cached arrays and item fields."""

from __future__ import annotations

import numpy as np

from ..augment import LESION_FIELDS

# Rows of an item's lesion table (zero rows after the last lesion), so that items collate; the
# fidelity slices draw at most 14 lesions.
MAX_LESIONS = 32


def cache_arrays(ph) -> dict[str, np.ndarray]:
    """What a cache file stores of a fidelity phantom besides the images."""
    return {
        "lesion_ids": ph.lesion_ids.astype(np.uint8, copy=False),
        "lesion_table": ph.lesion_table(),
        "organs": ph.organs.astype(np.uint8, copy=False),
        "pixel_size_mm": np.asarray(ph.pixel_size_mm, dtype=np.float64),
    }


def check_cached(data: dict, size: int) -> None:
    """Raise ValueError if the stored fidelity arrays in ``data`` are not what :func:`cache_arrays` writes."""
    for key in ("lesion_ids", "organs"):
        if key in data and (data[key].shape != (size, size) or data[key].dtype != np.uint8):
            raise ValueError(f"{key} is {data[key].dtype} {data[key].shape}, expected uint8 {(size, size)}")
    table = data.get("lesion_table")
    if table is not None:
        if table.ndim != 2 or table.shape[1] != len(LESION_FIELDS) or table.dtype != np.float64:
            raise ValueError(
                f"lesion_table is {table.dtype} {table.shape}, expected float64 (n, {len(LESION_FIELDS)})"
            )
        if len(table) > MAX_LESIONS or "lesion_ids" in data and int(data["lesion_ids"].max()) != len(table):
            raise ValueError("lesion_table does not match lesion_ids")
    px = data.get("pixel_size_mm")
    if px is not None and (px.shape != () or not np.isfinite(px) or px <= 0):
        raise ValueError(f"pixel_size_mm is {px!r}, expected one positive number")


def item_extras(data: dict) -> dict:
    """The item fields of a fidelity slice (table padded to MAX_LESIONS rows)."""
    table = np.zeros((MAX_LESIONS, len(LESION_FIELDS)), dtype=np.float64)
    n = len(data["lesion_table"])
    table[:n] = data["lesion_table"]
    return {
        "lesion_ids": np.array(data["lesion_ids"], dtype=np.uint8),
        "lesion_table": table,
        "organs": np.array(data["organs"], dtype=np.uint8),
        "pixel_size_mm": float(data["pixel_size_mm"]),
    }
