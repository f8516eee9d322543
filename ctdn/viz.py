"""PNG panels of CT slices and line charts (Pillow only; matplotlib is not needed).

- :func:`panel`: slices side by side, resized to one tile size, in one display window.
- :func:`lesion_panel`: full-resolution tiles (:class:`Tile`) with titles, lesions circled and
  labelled grey scales (e.g. for difference images).
- :func:`charts`: line charts (:class:`Chart` of :class:`Series`) in a grid with one legend.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ._atomic import atomic_path
from .hu import window as apply_window

__all__ = [
    "panel",
    "lesion_panel",
    "lesion_box",
    "box_marks",
    "Tile",
    "charts",
    "Chart",
    "Series",
    "nice_ticks",
]


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


# -- line charts (Pillow only) ---------------------------------------------------------------------
COLOURS = (
    (0, 0, 0),
    (127, 127, 127),
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
)


@dataclass
class Series:
    """One line of a :class:`Chart`: ``y`` against ``x`` (NaN values leave a gap)."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    dashed: bool = False
    markers: bool = False


@dataclass
class Chart:
    """One plot of :func:`charts`: its series, axis labels and scales."""

    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    ylog: bool = False
    ylim: tuple[float, float] | None = None
    xlim: tuple[float, float] | None = None
    hline: float | None = None  # a dotted reference line (e.g. 1 for "fully kept")
    empty: str = "nothing measurable"  # written across a chart without series


def _font(size: int = 14):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """Round tick values covering [lo, hi], about ``n`` of them."""
    span = max(hi - lo, 1e-12)
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _limits(values: list[float], log: bool, given) -> tuple[float, float]:
    if given is not None:
        return float(given[0]), float(given[1])
    v = [x for x in values if math.isfinite(x) and (x > 0 or not log)]
    if not v:
        return (0.1, 1.0) if log else (0.0, 1.0)
    lo, hi = min(v), max(v)
    if log:
        lo, hi = math.log10(lo), math.log10(hi)
        pad = max((hi - lo) * 0.05, 0.05)
        return 10 ** (lo - pad), 10 ** (hi + pad)
    pad = max((hi - lo) * 0.06, 1e-3 * max(abs(hi), 1e-9))
    return lo - pad, hi + pad


def _dashed(draw, pts, fill, width: int, on: float = 7.0, off: float = 5.0) -> None:
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        length = math.hypot(x1 - x0, y1 - y0)
        t = 0.0
        while t < length:
            t1 = min(t + on, length)
            a, b = t / length, t1 / length
            draw.line(
                [x0 + a * (x1 - x0), y0 + a * (y1 - y0), x0 + b * (x1 - x0), y0 + b * (y1 - y0)], fill, width
            )
            t = t1 + off


def _draw_chart(draw, chart: Chart, box, colour_of, font, small) -> None:
    x0, y0, w, h = box
    left, right, top, bottom = 62, 12, 42, 44
    pw, ph = w - left - right, h - top - bottom
    xs = [float(v) for s in chart.series for v in s.x]
    ys = [float(v) for s in chart.series for v in s.y]
    xlo, xhi = _limits(xs, False, chart.xlim)
    ylo, yhi = _limits(ys + ([chart.hline] if chart.hline is not None else []), chart.ylog, chart.ylim)

    def fy(v: float) -> float:
        if chart.ylog:
            v, lo, hi = math.log10(max(v, 1e-300)), math.log10(ylo), math.log10(yhi)
        else:
            lo, hi = ylo, yhi
        return y0 + top + (hi - v) / (hi - lo) * ph

    def fx(v: float) -> float:
        return x0 + left + (v - xlo) / (xhi - xlo) * pw

    draw.text((x0 + left + pw / 2, y0 + 4), chart.title, fill="black", font=font, anchor="mt")
    draw.rectangle([x0 + left, y0 + top, x0 + left + pw, y0 + top + ph], outline="black")
    if chart.ylog:
        yticks = [10.0**k for k in range(math.floor(math.log10(ylo)), math.ceil(math.log10(yhi)) + 1)]
        yticks = [t for t in yticks if ylo <= t <= yhi]
    else:
        yticks = nice_ticks(ylo, yhi, 5)
    for t in yticks:
        y = fy(t)
        draw.line([x0 + left, y, x0 + left + pw, y], fill=(228, 228, 228))
        draw.text((x0 + left - 5, y), f"{t:g}", fill="black", font=small, anchor="rm")
    for t in nice_ticks(xlo, xhi, 6):
        x = fx(t)
        draw.line([x, y0 + top + ph, x, y0 + top + ph + 4], fill="black")
        draw.text((x, y0 + top + ph + 6), f"{t:g}", fill="black", font=small, anchor="mt")
    draw.text((x0 + left + pw / 2, y0 + h - 12), chart.xlabel, fill="black", font=small, anchor="mm")
    draw.text((x0 + 6, y0 + top - 16), chart.ylabel, fill=(60, 60, 60), font=small)
    if chart.hline is not None and ylo <= chart.hline <= yhi:
        _dashed(
            draw, [(x0 + left, fy(chart.hline)), (x0 + left + pw, fy(chart.hline))], (90, 90, 90), 1, 2, 3
        )
    if not chart.series:
        draw.text(
            (x0 + left + pw / 2, y0 + top + ph / 2), chart.empty, fill=(90, 90, 90), font=font, anchor="mm"
        )
    for s in chart.series:
        c = colour_of[s.label]
        runs: list[list[tuple[float, float]]] = [[]]
        for a, b in zip(s.x, s.y, strict=True):
            a, b = float(a), float(b)
            if math.isfinite(b) and (b > 0 or not chart.ylog):
                runs[-1].append((fx(a), fy(min(max(b, ylo), yhi))))
            elif runs[-1]:
                runs.append([])
        for run in runs:
            if len(run) > 1:
                if s.dashed:
                    _dashed(draw, run, c, 2)
                else:
                    draw.line(run, fill=c, width=2)
            if s.markers or len(run) == 1:
                for x, y in run:
                    draw.ellipse([x - 3.5, y - 3.5, x + 3.5, y + 3.5], fill=c)


def charts(
    items: Sequence[Chart],
    path: str | os.PathLike,
    *,
    columns: int = 2,
    size: tuple[int, int] = (460, 320),
    title: str | None = None,
    note: str | None = None,
) -> Path:
    """Line charts in a grid with one legend (a colour per series label, the same in every chart), as
    an RGB PNG. Dashed series are drawn dashed; NaN values leave gaps."""
    if not items:
        raise ValueError("charts needs at least one chart")
    labels: list[str] = []
    dashed: dict[str, bool] = {}
    for ch in items:
        for s in ch.series:
            if s.label not in labels:
                labels.append(s.label)
                dashed[s.label] = s.dashed
    colour_of = {lab: COLOURS[i % len(COLOURS)] for i, lab in enumerate(labels)}
    font, small = _font(14), _font(12)
    cols = min(columns, len(items))
    rows = -(-len(items) // cols)
    head = 30 if title else 6
    legend_w = 20 + max((int(small.getlength(lab)) for lab in labels), default=0) + 40
    foot = 22 if note else 0
    W, H = cols * size[0] + legend_w, head + rows * size[1] + foot
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((10, 8), title, fill="black", font=font)
    for i, ch in enumerate(items):
        box = ((i % cols) * size[0], head + (i // cols) * size[1], size[0], size[1])
        _draw_chart(draw, ch, box, colour_of, font, small)
    lx = cols * size[0] + 10
    for i, lab in enumerate(labels):
        y = head + 34 + i * 20
        if dashed[lab]:
            _dashed(draw, [(lx, y), (lx + 28, y)], colour_of[lab], 3, 6, 4)
        else:
            draw.line([lx, y, lx + 28, y], fill=colour_of[lab], width=3)
        draw.text((lx + 34, y), lab, fill="black", font=small, anchor="lm")
    if note:
        draw.text((10, H - 16), note, fill=(60, 60, 60), font=small)
    path = Path(path)
    with atomic_path(path) as tmp:  # a few dozen colours: a palette image is a fraction of the size
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=96).save(tmp, format="PNG")
    return path


# -- image panels with marked lesions and a labelled difference scale ----------------------------
@dataclass
class Tile:
    """One full-resolution tile of :func:`lesion_panel`: an HU image, its title and display window.

    ``signed=True`` draws ``image`` (a difference, HU) on [-width / 2, +width / 2] around ``level``.
    ``marks``: circles (row, col, radius) in the tile's pixels, drawn as outlines.
    """

    image: np.ndarray
    title: str
    level: float = 40.0
    width: float = 400.0
    marks: Sequence[tuple[float, float, float]] = ()
    signed: bool = False


def _scale_bar(draw, x: int, y: int, w: int, lo: float, hi: float, label: str, font) -> None:
    ramp = np.linspace(0, 255, w).astype(np.uint8)
    for i, v in enumerate(ramp):
        draw.line([x + i, y, x + i, y + 10], fill=(int(v),) * 3)
    draw.rectangle([x, y, x + w - 1, y + 10], outline=(0, 0, 0))
    for t in nice_ticks(lo, hi, 4):
        tx = x + (t - lo) / (hi - lo) * (w - 1)
        draw.line([tx, y + 10, tx, y + 14], fill=(0, 0, 0))
        draw.text(
            (tx, y + 15), f"{t:+g}" if lo == -hi and t else f"{t:g}", fill=(0, 0, 0), font=font, anchor="mt"
        )
    draw.text((x + w + 8, y + 5), label, fill=(0, 0, 0), font=font, anchor="lm")


def lesion_panel(
    rows: Sequence[Sequence[Tile]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    mark_colour: tuple[int, int, int] = (255, 210, 0),
    scales: Sequence[tuple[float, float, str]] = (),
) -> Path:
    """Rows of tiles at full resolution (one image pixel = one PNG pixel; nothing resampled), each
    titled, with lesions circled, and labelled grey scales below (``scales``: (lo, hi, label) in HU,
    e.g. the difference rows' scale), as an RGB PNG."""
    if not rows or not all(rows):
        raise ValueError("lesion_panel needs at least one row of tiles")
    font = _font(13)
    bar, gap = 20, 4
    col_w = [
        max(max(t.image.shape[1], int(font.getlength(t.title)) + 6) for t in col if t is not None)
        for col in _columns(rows)
    ]
    row_h = [max(t.image.shape[0] for t in row) for row in rows]
    head = 24 if title else 0
    foot = 12 + 38 * len(scales)
    W = max(sum(col_w) + gap * (len(col_w) + 1), 480 if scales else 0)
    H = head + sum(h + bar + gap for h in row_h) + foot
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((gap, 5), title, fill="black", font=font)
    y = head
    for r, row in enumerate(rows):
        x = gap
        for c, t in enumerate(row):
            arr = np.asarray(t.image, dtype=np.float32)
            u8 = (apply_window(arr, t.level, t.width) * 255 + 0.5).astype(np.uint8)
            img.paste(Image.fromarray(u8).convert("RGB"), (x, y + bar))
            draw.text((x + 2, y + 3), t.title, fill="black", font=font)
            for mr, mc, rad in t.marks:
                draw.ellipse(
                    [x + mc - rad, y + bar + mr - rad, x + mc + rad, y + bar + mr + rad], outline=mark_colour
                )
            x += col_w[c] + gap
        y += row_h[r] + bar + gap
    for lo, hi, label in scales:
        _scale_bar(draw, gap + 10, y + 8, 256, lo, hi, label, font)
        y += 38
    path = Path(path)
    with atomic_path(path) as tmp:  # grey tiles, one mark colour and text: a 256-colour palette holds them
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(tmp, format="PNG")
    return path


def lesion_box(lesions, shape, *, pad: float = 8.0, most: int = 200) -> tuple[slice, slice]:
    """A crop (row slice, col slice) of an image of ``shape`` around ``lesions`` (objects with
    ``center`` and ``radius_px``), ``pad`` pixels beyond their edges, at most ``most`` a side. When
    they do not all fit, the crop that holds the most of them whole."""
    if not lesions:
        return slice(0, shape[0]), slice(0, shape[1])

    def box(rows, cols, rad):
        out = []
        for lo, hi, n in ((min(rows), max(rows), shape[0]), (min(cols), max(cols), shape[1])):
            size = int(min(hi - lo + 2 * (rad + pad), most, n))
            start = int(np.clip(round((lo + hi) / 2 - size / 2), 0, n - size))
            out.append(slice(start, start + size))
        return out[0], out[1]

    def held(b) -> int:
        return sum(
            b[0].start <= les.center[0] - les.radius_px - 1
            and les.center[0] + les.radius_px + 1 < b[0].stop
            and b[1].start <= les.center[1] - les.radius_px - 1
            and les.center[1] + les.radius_px + 1 < b[1].stop
            for les in lesions
        )

    rad = max(les.radius_px for les in lesions)
    candidates = [box([les.center[0] for les in lesions], [les.center[1] for les in lesions], rad)]
    candidates += [box([les.center[0]], [les.center[1]], most / 2 - pad) for les in lesions]
    return max(candidates, key=held)  # the first of the best: all of them whenever they fit


def box_marks(lesions, box, scale: float = 1.6, extra: float = 2.0) -> list[tuple[float, float, float]]:
    """Circles (row, col, radius) around the ``lesions`` that lie in ``box``, in the crop's pixels:
    ``scale`` x the radius + ``extra`` px, so the outline does not cover the lesion's edge."""
    rs, cs = box
    return [
        (les.center[0] - rs.start, les.center[1] - cs.start, scale * les.radius_px + extra)
        for les in lesions
        if rs.start <= les.center[0] < rs.stop and cs.start <= les.center[1] < cs.stop
    ]


def _columns(rows):
    n = max(len(r) for r in rows)
    return [[r[c] if c < len(r) else None for r in rows] for c in range(n)]
