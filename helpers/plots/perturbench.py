"""Figures of the PerturBench chapter: error vs rank (mode collapse), cells in PC space, per-line results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..metrics.distribution import PCASpace

#: Colour of each model family.
FAMILY_COLOURS = {"baseline": "#ff7f0e", "simple": "#1f77b4", "mode collapse": "#d62728", "complex": "#2ca02c", "other": "#9467bd"}


def _colour(model: str, families: Mapping[str, str] | None) -> str:
    return FAMILY_COLOURS.get((families or {}).get(model, "other"), FAMILY_COLOURS["other"])


def error_vs_rank(
    summary: pd.DataFrame,
    error: str = "rmse",
    rank: str = "rank_rmse",
    families: Mapping[str, str] | None = None,
    near_chance: float = 0.1,
    title: str | None = None,
) -> Figure:
    """Mean error (x) against mean rank (y) per model, ± SD over seeds; the band around 0.5 marks mode collapse.

    ``summary``: :func:`helpers.benchmarks.perturbench.summary_table`; ``families``: model ->
    ``baseline``/``simple``/``mode collapse``/``complex`` (colours; others are ``other``).
    """
    fig, ax = plt.subplots(figsize=(9.0, 5.0))
    ax.axhspan(0.5 - near_chance, 0.5 + near_chance, color="#fde0dd", zorder=0, label=f"rank 0.5 ± {near_chance}: no better than chance")
    ax.axhline(0.5, color="#d62728", lw=0.8, ls="--", zorder=1)
    for number, model in enumerate(summary.index, start=1):
        x, xs = summary.loc[model, (error, "mean")], summary.loc[model, (error, "sd")]
        y, ys = summary.loc[model, (rank, "mean")], summary.loc[model, (rank, "sd")]
        fam = (families or {}).get(model, "other")
        ax.errorbar(
            x,
            y,
            xerr=0 if not np.isfinite(xs) else xs,
            yerr=0 if not np.isfinite(ys) else ys,
            fmt="o",
            color=FAMILY_COLOURS[fam],
            ms=7,
            capsize=2,
            label=f"{number}. {model} ({fam})",
            zorder=3,
        )
        # numbers alternate above and below the point so that neighbours stay readable
        ax.annotate(str(number), (x, y), xytext=(4, 6 if number % 2 else -12), textcoords="offset points", fontsize=9, weight="bold")
    ax.set_xlabel(f"{error} on the average (log-normalised expression; lower is better)")
    ax.set_ylabel(f"{rank} (0 = perfect, 0.5 = chance)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title or f"Error vs rank: {error} against {rank} (mean ± SD over seeds)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def cells_in_pc_space(
    space: PCASpace,
    observed: np.ndarray,
    control: np.ndarray,
    predicted: Mapping[str, np.ndarray],
    condition: str,
    models: Sequence[str] | None = None,
    families: Mapping[str, str] | None = None,
    ncols: int = 3,
) -> Figure:
    """Observed and predicted cells of one held-out condition on the first two PCs of the observed cells.

    One panel per model: the line's control cells (grey), the observed cells of the condition
    (black) and the model's predicted cells (colour); identical predicted cells (a decoder's
    single profile) are drawn as one large marker.
    """
    names = list(models) if models is not None else list(predicted)
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.2 * nrows), sharex=True, sharey=True, squeeze=False)
    obs, ctrl = space.transform(observed)[:, :2], space.transform(control)[:, :2]
    for ax, name in zip(axes.ravel(), names):
        pred = space.transform(predicted[name])[:, :2]
        ax.scatter(ctrl[:, 0], ctrl[:, 1], s=6, color="#c7c7c7", label="control cells of the line")
        ax.scatter(obs[:, 0], obs[:, 1], s=6, color="black", label="observed cells")
        unique = np.unique(np.round(pred, 10), axis=0)
        ax.scatter(
            pred[:, 0], pred[:, 1], s=60 if len(unique) == 1 else 8, color=_colour(name, families), alpha=0.8, label="predicted cells"
        )
        ax.set_title(name, fontsize=9)
    for ax in axes.ravel()[len(names) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("PC 1 of the observed cells")
    for ax in axes[:, 0]:
        ax.set_ylabel("PC 2")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, -0.01))
    fig.suptitle(f"Held-out {condition}: observed vs predicted cells (PCA of the observed cells)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def per_line(results: pd.DataFrame, metric: str = "rmse", models: Sequence[str] | None = None) -> Figure:
    """Mean ``metric`` per model and cell line (mean over seeds of the per-seed means), one group of bars per model."""
    per_seed = results[results["metric"] == metric].groupby(["seed", "model", "context"], sort=True)["value"].mean().reset_index()
    table = per_seed.groupby(["model", "context"], sort=True)["value"].agg(["mean", "std"]).reset_index()
    order = list(models) if models is not None else list(dict.fromkeys(table["model"]))
    lines = sorted(table["context"].unique())
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(order) + 2), 4.2))
    width = 0.8 / len(lines)
    colours = plt.get_cmap("Set2")
    for j, line in enumerate(lines):
        part = table[table["context"] == line].set_index("model").reindex(order)
        x = np.arange(len(order)) + (j - (len(lines) - 1) / 2) * width
        ax.bar(x, part["mean"], width=width, yerr=part["std"].fillna(0), color=colours(j), label=line, capsize=2)
    ax.set_xticks(np.arange(len(order)))
    ax.set_xticklabels(order, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(f"{metric} (mean over held-out pairs, ± SD over seeds)")
    ax.set_title(f"{metric} per cell line")
    ax.legend(title="cell line", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


__all__ = ["FAMILY_COLOURS", "cells_in_pc_space", "error_vs_rank", "per_line"]
