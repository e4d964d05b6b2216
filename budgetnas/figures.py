"""Small PNG figures drawn with Pillow: learning curves and image grids.

Why not matplotlib: Pillow already comes with torchvision, the figures budgetnas writes
beside a replay are simple (a few lines, a grid of maps), and the interactive versions
live in the plotly HTML report. Keeping the dependency list short matters more here.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# A few anchor colours of matplotlib's "viridis", interpolated linearly: perceptually
# ordered, readable in greyscale print, and the usual colour map for activations.
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)
_LINE_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14))


def font(size: int = 14) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def colourise(values: np.ndarray) -> np.ndarray:
    """Map a 2-D array to viridis RGB (uint8), scaled to its own min..max (flat -> darkest)."""
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values, dtype=np.float64)
    position = scaled * (len(_VIRIDIS) - 1)
    index = np.clip(np.floor(position).astype(int), 0, len(_VIRIDIS) - 2)
    frac = (position - index)[..., None]
    rgb = _VIRIDIS[index] * (1 - frac) + _VIRIDIS[index + 1] * frac
    return rgb.round().astype(np.uint8)


def tile(maps: np.ndarray, cell: int, columns: int, gap: int = 2) -> Image.Image:
    """Tile (N, H, W) maps into a grid of ``columns``, each scaled to ``cell`` pixels and coloured."""
    n = len(maps)
    rows = max(1, math.ceil(n / columns))
    columns = min(columns, n) or 1
    grid = Image.new("RGB", (columns * (cell + gap) - gap, rows * (cell + gap) - gap), "white")
    for i, fmap in enumerate(maps):
        img = Image.fromarray(colourise(fmap)).resize((cell, cell), Image.NEAREST)
        grid.paste(img, ((i % columns) * (cell + gap), (i // columns) * (cell + gap)))
    return grid


def stack_with_titles(parts: Sequence[tuple[str, Image.Image]], margin: int = 10) -> Image.Image:
    """Stack images vertically, each under a one-line title."""
    text = font(14)
    title_h = 22
    width = max(img.width for _, img in parts) + 2 * margin
    height = sum(title_h + img.height + margin for _, img in parts) + margin
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    y = margin
    for title, img in parts:
        draw.text((margin, y), title, fill="black", font=text)
        y += title_h
        canvas.paste(img, (margin, y))
        y += img.height + margin
    return canvas


def line_panels(panels: Sequence[tuple[str, Sequence[tuple[str, Sequence[float]]]]], *,
                x_label: str = "epoch", size: tuple[int, int] = (420, 300)) -> Image.Image:
    """Side-by-side line charts. ``panels`` = [(title, [(series name, y values per epoch 1..n)])]."""
    images = [_line_chart(title, series, x_label, size) for title, series in panels]
    canvas = Image.new("RGB", (sum(i.width for i in images), size[1]), "white")
    x = 0
    for img in images:
        canvas.paste(img, (x, 0))
        x += img.width
    return canvas


def _line_chart(title: str, series: Sequence[tuple[str, Sequence[float]]], x_label: str,
                size: tuple[int, int]) -> Image.Image:
    width, height = size
    left, right, top, bottom = 62, 14, 30, 42
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    small, big = font(11), font(14)
    draw.text((left, 8), title, fill="black", font=big)
    values = [v for _, ys in series for v in ys if math.isfinite(v)]
    n = max((len(ys) for _, ys in series), default=0)
    if not values or n == 0:
        draw.text((left, height // 2), "no data", fill="grey", font=big)
        return img
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or max(abs(high) * 0.05, 1e-3)
    low, high = low - pad, high + pad
    x0, x1, y0, y1 = left, width - right, height - bottom, top

    def px(epoch: float) -> float:
        return x0 + (x1 - x0) * ((epoch - 1) / (n - 1) if n > 1 else 0.5)

    def py(value: float) -> float:
        return y0 + (y1 - y0) * (value - low) / (high - low)

    draw.rectangle((x0, y1, x1, y0), outline=(120, 120, 120))
    for k in range(5):  # y grid and labels
        value = low + (high - low) * k / 4
        y = py(value)
        draw.line((x0, y, x1, y), fill=(230, 230, 230))
        draw.text((x0 - 6, y), f"{value:.3g}", fill="black", font=small, anchor="rm")
    step = max(1, math.ceil(n / 10))
    for epoch in range(1, n + 1, step):  # x ticks at whole epochs
        draw.line((px(epoch), y0, px(epoch), y0 + 4), fill="black")
        draw.text((px(epoch), y0 + 6), str(epoch), fill="black", font=small, anchor="mt")
    draw.text(((x0 + x1) / 2, height - 14), x_label, fill="black", font=small, anchor="mm")
    for i, (name, ys) in enumerate(series):
        colour = _LINE_COLOURS[i % len(_LINE_COLOURS)]
        points = [(px(e + 1), py(v)) for e, v in enumerate(ys) if math.isfinite(v)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse((x - 2.5, y - 2.5, x + 2.5, y + 2.5), fill=colour)
        if len(series) > 1:
            draw.text((x1 - 4, y1 + 4 + 14 * i), name, fill=colour, font=small, anchor="ra")
    return img


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
