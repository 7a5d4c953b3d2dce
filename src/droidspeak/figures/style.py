"""Shared figure plumbing: Okabe-Ito colours, the rc style, panel grids, PNG + PDF saving without CreationDate."""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Okabe & Ito (2008): distinguishable under every common colour-vision deficiency.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
}
CYCLE = [OKABE_ITO[c] for c in ("blue", "orange", "green", "vermillion", "purple", "sky", "yellow", "black")]

STYLE = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "axes.prop_cycle": matplotlib.cycler(color=CYCLE),
    "pdf.fonttype": 42,  # embed TrueType: editable text in the PDF, accepted by publishers
    "ps.fonttype": 42,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
}


def bundled_fonts_only() -> None:
    """Draw with matplotlib's own fonts, never the system's: a system DejaVu Sans of another version gives the PDF
    another font subset, so the same rows would give other bytes on another machine (the pages are checked byte for
    byte)."""
    bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    manager = font_manager.fontManager
    manager.ttflist = []  # the font cache may list a system copy in place of the bundled one
    for path in sorted(bundled.glob("*.ttf")):
        manager.addfont(path)
    font_manager._get_font.cache_clear()


bundled_fonts_only()


class FigureDataError(ValueError):
    """The rows or profiles given to a figure function lack what that figure plots."""


def new_figure(n_panels: int, *, panel_size=(3.4, 2.6), max_cols: int = 3):
    cols = max(1, min(n_panels, max_cols))
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(panel_size[0] * cols, panel_size[1] * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def save_figure(fig: Figure, out_dir: str | os.PathLike, stem: str) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png, pdf = out / f"{stem}.png", out / f"{stem}.pdf"
    fig.savefig(png)
    fig.savefig(pdf, metadata={"CreationDate": None})  # no timestamp: the same figure gives the same bytes
    return [png, pdf]


def pretty_metric(metric: str) -> str:
    return {"f1": "F1", "exact_match": "Exact match", "acc": "Accuracy", "rouge_l": "Rouge-L",
            "edit_sim": "Edit similarity", "em": "Exact match"}.get(metric, metric)


def unique_legend(fig: Figure, axes, **kwargs) -> None:
    handles: dict[str, object] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center", frameon=False, **kwargs)
