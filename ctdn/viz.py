"""PNG panels of CT slices (Pillow only; matplotlib is not needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ._atomic import atomic_path
from .hu import window as apply_window

__all__ = ["panel"]


def panel(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    path: str | os.PathLike,
    *,
    level: float = 40.0,
    width: float = 400.0,
    columns: int | None = None,
    tile: int = 256,
    windows: Sequence[tuple[float, float] | None] | None = None,
) -> Path:
    """Write HU slices side by side in one display window, each titled, as an 8-bit PNG.

    ``windows``: optionally one (level, width) per image (None: the panel's ``level``/``width``),
    e.g. a fixed scale for difference maps beside images in the soft-tissue window.
    """
    if len(images) != len(titles) or not images:
        raise ValueError("panel needs one title per image and at least one image")
    if windows is not None and len(windows) != len(images):
        raise ValueError("panel needs one window (or None) per image")
    cols = columns or len(images)
    rows = -(-len(images) // cols)
    bar = 18
    canvas = Image.new("L", (cols * tile, rows * (tile + bar)), color=0)
    draw = ImageDraw.Draw(canvas)
    for i, (img, title) in enumerate(zip(images, titles, strict=True)):
        lv, wd = (windows[i] if windows is not None else None) or (level, width)
        u8 = (apply_window(np.asarray(img, dtype=np.float32), lv, wd) * 255 + 0.5).astype(np.uint8)
        tile_img = Image.fromarray(u8).resize((tile, tile), Image.Resampling.BILINEAR)
        x, y = (i % cols) * tile, (i // cols) * (tile + bar)
        canvas.paste(tile_img, (x, y + bar))
        draw.text((x + 4, y + 3), title, fill=255)
    path = Path(path)
    with atomic_path(path) as tmp:  # a crash never leaves a half-written PNG behind
        canvas.save(tmp, format="PNG")
    return path
