"""FROC curves of several models on one axis, as a PNG: each curve with its pointwise bootstrap
band and FAUC-x (with CI) in the legend, the FAUC cut-off marked. Draws on an Agg canvas
directly, so importing it never changes matplotlib's global backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from metrics.froc import (
    FrocCurve,
    MatchedDetections,
    bootstrap_fauc,
    fauc_from_curve,
    froc_band,
    froc_curve,
    require_false_positives,
)


def plot_froc(
    curves: Mapping[str, MatchedDetections | FrocCurve],
    path: str | Path,
    max_fp: float = 1.0,
    x_max: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    title: str | None = None,
    intervals: Mapping[str, tuple[float, float]] | None = None,
) -> Path:
    """Write the FROC curves of ``curves`` (name -> matched records, or a bare curve) to the PNG
    ``path`` and return it. Matched records get a ``level`` bootstrap band (``n_boot``
    resamples; 0: none) and a CI on FAUC-``max_fp`` in the legend; curves are drawn to
    ``x_max`` false positives per image (default ``2 * max_fp``), held flat after their last
    point, with the FAUC cut-off at ``max_fp`` marked. ``intervals`` gives the legend's CIs
    (name -> (low, high)), e.g. a report's own, so figure and table agree to the digit."""
    if not curves:
        raise ValueError("plot_froc needs at least one curve")
    x_max = 2 * max_fp if x_max is None else float(x_max)
    grid = np.linspace(0, x_max, 401)
    figure = Figure(figsize=(6.4, 4.8), dpi=150)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colours = [f"C{index}" for index in range(10)]
    for index, (name, records) in enumerate(curves.items()):
        colour = colours[index % len(colours)]
        if isinstance(records, MatchedDetections):
            require_false_positives(records, x_max)  # pruned records must reach the axis' end
        curve = froc_curve(records) if isinstance(records, MatchedDetections) else records
        x, y = _drawn_curve(curve, x_max)
        score = float(fauc_from_curve(curve.fp_rate, curve.sensitivity, max_fp))
        label = f"{name}: FAUC-{max_fp:g} {score:.3f}"
        if isinstance(records, MatchedDetections) and n_boot > 0:
            low, high = froc_band(records, grid, n_boot=n_boot, seed=seed, level=level)
            axes.fill_between(grid, low, high, color=colour, alpha=0.18, linewidth=0)
        if intervals is not None and name in intervals:
            label += f" ({intervals[name][0]:.3f}-{intervals[name][1]:.3f})"
        elif isinstance(records, MatchedDetections) and n_boot > 0:
            interval = bootstrap_fauc(records, max_fp, n_boot=n_boot, seed=seed, level=level)
            label += f" ({interval.low:.3f}-{interval.high:.3f})"
        axes.plot(x, y, color=colour, linewidth=1.8, label=label)
    axes.axvline(max_fp, color="0.35", linestyle="--", linewidth=1)
    axes.annotate(
        f"FAUC-{max_fp:g} cut-off",
        xy=(max_fp, 0.98),
        xytext=(-3, 0),
        textcoords="offset points",
        rotation=90,
        ha="right",
        va="top",
        fontsize=8,
        color="0.35",
    )
    axes.set_xlim(0, x_max)
    axes.set_ylim(0, 1.0)
    axes.set_xlabel("False positives per image")
    axes.set_ylabel("Sensitivity (lesions found)")
    band = f", {level:.0%} bootstrap band" if n_boot > 0 else ""
    axes.set_title(title or f"FROC{band}", fontsize=10)
    axes.grid(True, color="0.9", linewidth=0.6)
    axes.legend(loc="lower right", fontsize=8, frameon=False)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def _drawn_curve(curve: FrocCurve, x_max: float) -> tuple[np.ndarray, np.ndarray]:
    """The curve's points up to ``x_max``, cut there by interpolation or held flat to it."""
    x, y = np.asarray(curve.fp_rate, float), np.asarray(curve.sensitivity, float)
    inside = x <= x_max
    x_drawn, y_drawn = list(x[inside]), list(y[inside])
    if not inside.all():
        following = int(np.argmin(inside))
        x0, x1, y0, y1 = x[following - 1], x[following], y[following - 1], y[following]
        y_drawn.append(y0 + (y1 - y0) * (x_max - x0) / (x1 - x0))
    else:
        y_drawn.append(y_drawn[-1])
    x_drawn.append(x_max)
    return np.array(x_drawn), np.array(y_drawn)
