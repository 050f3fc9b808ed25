"""Figures describing a screen: cells per perturbation, library sizes, changes of doubles and singles."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..data.canonical import target_genes
from .style import boxplot


def cells_per_perturbation(adata, ax=None):
    """Bar chart of the number of cells of each perturbation, coloured by single/double/control."""
    counts = adata.obs.groupby("perturbation", observed=True).size().sort_values(ascending=False)
    kind = pd.Series({p: {0: "control", 1: "single", 2: "double"}[len(target_genes(p))] for p in counts.index})
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.6))
    palette = {"control": "#4d4d4d", "single": "#1f77b4", "double": "#d62728"}
    ax.bar(range(len(counts)), counts.to_numpy(), color=[palette[kind[p]] for p in counts.index])
    ax.set_xticks(range(len(counts)), counts.index, rotation=90, fontsize=7)
    ax.set_ylabel("cells")
    ax.set_title("Cells per perturbation")
    for label, colour in palette.items():
        ax.bar([], [], color=colour, label=label)
    ax.legend(loc="upper right", ncols=3)
    return ax


def per_cell_qc(adata, column: str, ylabel: str, ax=None, log: bool = True):
    """Box plot of a per-cell quantity (e.g. library size) for control, singles and doubles."""
    kinds = adata.obs["n_targets"].map({0: "control", 1: "single", 2: "double"})
    frame = pd.DataFrame({"kind": kinds.to_numpy(), column: adata.obs[column].to_numpy()})
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.6))
    boxplot(data=frame, x="kind", y=column, order=["control", "single", "double"], ax=ax, color="#9ecae1", fliersize=1.5)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("")
    ax.set_ylabel(ylabel)
    return ax


def doubles_next_to_singles(changes: pd.DataFrame, doubles: list[str], genes: list[str], vmax: float | None = None):
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
    fig, ax = plt.subplots(figsize=(min(2.2 + 0.42 * data.shape[1], 13), 0.2 * len(genes) + 1.8))
    sns.heatmap(data.to_numpy(), cmap="RdBu_r", center=0, vmin=-vmax, vmax=vmax, ax=ax, yticklabels=genes, xticklabels=columns,
                cbar_kws={"label": "change from control (log1p expression)", "shrink": 0.6})
    for k in range(1, len(doubles)):
        ax.axvline(4 * k, color="black", lw=1.5)
    ax.tick_params(axis="x", labelrotation=90, labelsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("Doubles next to their singles: observed vs. the additive expectation")
    fig.tight_layout()
    return fig
