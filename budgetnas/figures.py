"""Small PNG figures: learning curves (matplotlib) and feature-map grids (torchvision's make_grid).

Why these libraries: matplotlib draws real axes, ticks, labels and legends and has the exact
perceptual colour maps (viridis for activations: ordered, readable in greyscale print), and
``torchvision.utils.make_grid`` lays out image grids; budgetnas only decides what to show.
The interactive versions of these figures live in the plotly HTML report. Figures are
returned as PIL images, so callers ``.save()`` them or embed :func:`png_bytes`.
"""

from __future__ import annotations

import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window (and no display needed on a server)

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

DPI = 100
COLORMAP = "viridis"


def colourise(values: np.ndarray) -> np.ndarray:
    """Map a 2-D array to viridis RGB (uint8), scaled to its own min..max (flat -> darkest)."""
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values, dtype=np.float64)
    rgb = matplotlib.colormaps[COLORMAP](scaled)[..., :3]
    return (rgb * 255).round().astype(np.uint8)


def tile(maps: np.ndarray, cell: int, columns: int, gap: int = 2) -> Image.Image:
    """Tile (N, H, W) maps into a grid of ``columns``, each coloured and scaled to ``cell`` pixels."""
    coloured = torch.stack([torch.from_numpy(colourise(m)).permute(2, 0, 1) for m in maps]).float() / 255
    cells = torch.nn.functional.interpolate(coloured, size=(cell, cell), mode="nearest")
    grid = make_grid(cells, nrow=max(1, min(columns, len(maps))), padding=gap, pad_value=1.0)
    return Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def stack_with_titles(parts: Sequence[tuple[str, Image.Image]], title_px: int = 22, margin: int = 10) -> Image.Image:
    """Stack images vertically, each under a one-line title, at their own pixel size."""
    # Wide enough for the longest title too (about 7 px per character at 10 pt).
    width = max(max(img.width for _, img in parts), max(7 * len(title) for title, _ in parts)) + 2 * margin
    height = sum(title_px + img.height + margin for _, img in parts) + margin
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
    y = height - margin
    for title, img in parts:
        fig.text(margin / width, (y - title_px / 2) / height, title, fontsize=10, va="center", ha="left")
        y -= title_px + img.height
        axes = fig.add_axes((margin / width, y / height, img.width / width, img.height / height))
        axes.imshow(np.asarray(img.convert("RGB")), interpolation="nearest", aspect="auto")
        axes.set_axis_off()
        y -= margin
    return _to_image(fig)


def line_panels(panels: Sequence[tuple[str, Sequence[tuple[str, Sequence[float]]]]], *,
                x_label: str = "epoch", size: tuple[int, int] = (420, 300)) -> Image.Image:
    """Side-by-side line charts. ``panels`` = [(title, [(series name, y values per epoch 1..n)])]."""
    fig, axes = plt.subplots(1, len(panels), figsize=(size[0] * len(panels) / DPI, size[1] / DPI), dpi=DPI,
                             squeeze=False)
    for ax, (title, series) in zip(axes[0], panels):
        ax.set_title(title, fontsize=11, loc="left")
        ax.set_xlabel(x_label)
        ax.grid(True, color="#e6e6e6")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
        drawn = False
        for name, ys in series:
            values = np.asarray(ys, dtype=float)
            if values.size and np.isfinite(values).any():
                ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=4, linewidth=2, label=name)
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "no data", color="grey", ha="center", va="center", transform=ax.transAxes)
        elif len(series) > 1:
            ax.legend(fontsize=9)
    fig.tight_layout()
    return _to_image(fig)


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _to_image(fig: plt.Figure) -> Image.Image:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    plt.close(fig)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")
