"""Figures of the evaluate report: the model between floor and ceiling, per-perturbation values, the two control references."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import boxplot

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Colours of the model and the calibration controls.
COLOURS = {
    "model": "#d62728",
    "technical duplicate": "#2ca02c",
    "interpolated duplicate": "#98df8a",
    "mean (perturbations)": "#1f77b4",
    "no change": "#7f7f7f",
}


def floor_ceiling_plot(table: pd.DataFrame, model: str) -> Figure:
    """Every metric on one scale: 0 = the better negative control (floor), 1 = the technical duplicate (ceiling).

    ``table`` is :func:`helpers.benchmarks.evaluate.floor_and_ceiling`. Each row is a metric (and
    the reference of the predicted change); the model and each control are placed at
    ``(value − floor) / (ceiling − floor)`` of their mean over perturbations.
    """
    rows = table[table["position"].notna()]
    labels = [f"{m}" if ref in ("none",) else f"{m}  [{ref}]" for m, ref in rows.index]
    fig, ax = plt.subplots(figsize=(7.5, 0.3 * len(rows) + 2.4))
    y = np.arange(len(rows))[::-1]
    span = (rows["technical duplicate"] - rows["floor"]).to_numpy()
    for name, colour in COLOURS.items():
        column = "model" if name == "model" else name
        if column not in rows:
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            pos = (rows[column].to_numpy() - rows["floor"].to_numpy()) / span
        shown = np.clip(pos, -0.5, 1.5)
        marker = "o" if name == "model" else "|"
        size = 55 if name == "model" else 120
        ax.scatter(
            shown, y, color=colour, marker=marker, s=size, zorder=3 if name == "model" else 2, label=model if name == "model" else name
        )
    ax.axvline(0, color="0.4", lw=1, ls="--")
    ax.axvline(1, color="#2ca02c", lw=1, ls="--")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(-0.55, 1.55)
    ax.set_xlabel("position between floor (0: better of mean / no change)\nand ceiling (1: technical duplicate); clipped to [−0.5, 1.5]")
    ax.set_title("Each metric between an uninformative prediction\nand a technical duplicate")
    # below the axes (to the right it made the figure ~15 inches wide, shrunk to half on the page)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.55 / (0.3 * len(rows) + 2.4) * 4), ncols=3, fontsize=8)
    fig.tight_layout()
    return fig


def per_perturbation_plot(results: pd.DataFrame, model: str, metrics: Sequence[str], ground_truth: str) -> Figure:
    """Per-perturbation values of a few metrics: the model beside the calibration controls (boxes, one point per perturbation)."""
    rows = results[(results["ground_truth"] == ground_truth) & results["metric"].isin(metrics)]
    rows = rows[rows["reference_of_prediction"] != "control (predicted cells)"]
    metrics = [m for m in metrics if m in set(rows["metric"])]
    # at most three panels a row, so that the figure is not shrunk to half on the book's page
    ncols = min(3, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, 3.8 * nrows), squeeze=False)
    for ax in grid.ravel()[len(metrics) :]:
        ax.set_visible(False)
    axes = grid.ravel()[None, :]
    order = [m for m in [model, *[c for c in COLOURS if c != "model"]] if m in set(rows["model"])]
    palette = {m: COLOURS.get(m, COLOURS["model"]) for m in order}
    for ax, metric in zip(axes[0], metrics):
        sub = rows[rows["metric"] == metric].dropna(subset=["value"])
        present = [m for m in order if m in set(sub["model"])]
        boxplot(data=sub, x="model", y="value", order=present, ax=ax, hue="model", palette=palette, fliersize=0, width=0.6, legend=False)
        ax.scatter([present.index(m) for m in sub["model"]], sub["value"], s=6, color="0.2", alpha=0.5, zorder=3, label="one perturbation")
        ax.set_title(metric.replace("_vs_", "\nvs "), fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("value per perturbation")
        ax.tick_params(axis="x", rotation=60, labelsize=7)
    axes[0][0].legend(loc="best", fontsize=7)
    fig.suptitle(f"Per perturbation, against the {ground_truth}", y=1.0)
    fig.tight_layout()
    return fig


def reference_plot(comparison: pd.DataFrame) -> Figure:
    """The model's mean of each control-referenced metric, predicted changes against the real and the predicted control."""
    fig, ax = plt.subplots(figsize=(7.0, 0.3 * len(comparison) + 1.5))
    y = np.arange(len(comparison))[::-1]
    real, pred = comparison.columns[0], comparison.columns[1]
    ax.hlines(y, comparison[real], comparison[pred], color="0.7", lw=2)
    ax.scatter(comparison[real], y, color="#1f77b4", s=35, label=f"predicted change vs {real}", zorder=3)
    ax.scatter(comparison[pred], y, color="#ff7f0e", s=35, label=f"predicted change vs {pred}", zorder=3)
    ax.set_yticks(y, comparison.index, fontsize=8)
    ax.set_xlabel("mean over perturbations (metric units)")
    ax.set_title("Which control the predicted change is taken against")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["COLOURS", "floor_ceiling_plot", "per_perturbation_plot", "reference_plot"]
