"""Figures describing a screen: cells per perturbation, library sizes, changes of doubles and singles."""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..data.canonical import target_genes
from .style import boxplot

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def cells_per_perturbation(adata: AnnData, ax: Axes | None = None) -> Axes:
    """Bar chart of the number of cells of each perturbation, coloured by single/double/control."""
    counts = adata.obs.groupby("perturbation", observed=True).size().sort_values(ascending=False)
    kind = pd.Series({p: {0: "control", 1: "single", 2: "double"}[len(target_genes(p))] for p in counts.index})
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.6))
    palette = {"control": "#4d4d4d", "single": "#1f77b4", "double": "#d62728"}
    ax.bar(range(len(counts)), counts.to_numpy(), color=[palette[kind[p]] for p in counts.index])
    ax.set_xticks(range(len(counts)), counts.index, rotation=90, fontsize=7)
    ax.set_ylabel("cells")
    from matplotlib.patches import Patch

    # one patch per kind present, in its own colour (empty bars would all take the default colour)
    handles = [Patch(color=colour, label=label) for label, colour in palette.items() if (kind == label).any()]
    # above the axes, to the right of the title (inside, it covered the bars)
    ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1, 1.0), ncols=len(handles), borderaxespad=0.2)
    ax.set_title("Cells per perturbation", loc="left")
    return ax


def per_cell_qc(adata: AnnData, column: str, ylabel: str, ax: Axes | None = None, log: bool = True, title: str | None = None) -> Axes:
    """Box plot of a per-cell quantity (e.g. library size) for control, singles and doubles.

    The title is ``title``, by default ``ylabel`` with its first letter in upper case (so that
    "UMI counts per cell" keeps its acronym, unlike ``str.capitalize``).
    """
    kinds = adata.obs["n_targets"].map({0: "control", 1: "single", 2: "double"})
    frame = pd.DataFrame({"kind": kinds.to_numpy(), column: adata.obs[column].to_numpy()})
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.6))
    boxplot(data=frame, x="kind", y=column, order=["control", "single", "double"], ax=ax, color="#9ecae1", fliersize=1.5)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("")
    ax.set_ylabel(ylabel)
    ax.set_title(title if title is not None else ylabel[:1].upper() + ylabel[1:])
    return ax


def doubles_next_to_singles(changes: pd.DataFrame, doubles: list[str], genes: list[str], vmax: float | None = None) -> Figure:
    """Heatmap of the change from control of each double next to its two singles and their sum.

    Columns come in groups of four per double ``A+B``: ``A``, ``B``, ``A + B (additive)``
    = Δ_A + Δ_B, and the observed ``A+B``. Rows are ``genes``.
    """
    columns, labels, blocks = [], [], []
    for d in doubles:
        a, b = target_genes(d)
        block = pd.DataFrame(
            {
                f"{a}": changes.loc[a, genes],
                f"{b}": changes.loc[b, genes],
                "Δ sum": changes.loc[a, genes] + changes.loc[b, genes],
                f"{d}": changes.loc[d, genes],
            }
        )
        blocks.append(block)
        columns.extend(block.columns)
        labels.append(d)
    data = pd.concat(blocks, axis=1)
    vmax = vmax or float(np.nanquantile(np.abs(data.to_numpy()), 0.98))
    # at most 10 inches wide (the book's column shows ~7 inches unscaled), 9-point labels
    fig, ax = plt.subplots(figsize=(min(2.6 + 0.3 * data.shape[1], 10), 0.22 * len(genes) + 2.2))
    sns.heatmap(
        data.to_numpy(),
        cmap="RdBu_r",
        center=0,
        vmin=-vmax,
        vmax=vmax,
        ax=ax,
        yticklabels=genes,
        xticklabels=columns,
        cbar_kws={"label": "change from control (log1p expression)", "shrink": 0.6},
    )
    for k in range(1, len(doubles)):
        ax.axvline(4 * k, color="black", lw=1.5)
    ax.tick_params(axis="x", labelrotation=90, labelsize=9)
    ax.tick_params(axis="y", labelsize=9)
    ax.set_title("Doubles next to their singles: observed vs. the additive expectation")
    fig.tight_layout()
    return fig
