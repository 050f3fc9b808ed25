"""Figures of the unseen-single-perturbation chapter (Ahlmann-Eltze et al. 2025, Fig. 2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .style import boxplot

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRIC_LABELS = {
    "l2": "L2 distance to the observed profile\n(log-normalised expression, lower is better)",
    "pearson_delta_vs_control": "PearsonΔ vs control\n(higher is better)",
}
METRIC_TITLES = {"l2": "prediction error (L2)", "pearson_delta_vs_control": "correlation of changes from control (PearsonΔ)"}


def metric_by_model(
    results: pd.DataFrame,
    metrics: Sequence[str] = ("l2", "pearson_delta_vs_control"),
    order: Sequence[str] = (),
    datasets: Sequence[str] | None = None,
) -> Figure:
    """Per-perturbation metric values per model (box) with the mean (diamond), one panel per dataset and metric.

    ``results`` are tidy rows (``dataset, model, metric, value``), usually the common
    set of perturbations. Returns the figure.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    datasets = list(datasets) if datasets is not None else sorted(results["dataset"].unique())
    order = list(order)
    n_rows, n_cols = len(metrics), len(datasets)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(3.6 * n_cols + 1.2, 0.32 * len(order) * n_rows + 1.4 * n_rows), squeeze=False, sharey=True
    )
    palette = dict(zip(order, sns.color_palette("tab20", len(order))))
    for i, metric in enumerate(metrics):
        for j, dataset in enumerate(datasets):
            ax = axes[i, j]
            sub = results[(results["metric"] == metric) & (results["dataset"] == dataset)].dropna(subset=["value"])
            sub = sub[sub["model"].isin(order)]
            if sub.empty:
                ax.set_visible(False)
                continue
            boxplot(
                data=sub,
                y="model",
                x="value",
                hue="model",
                order=order,
                hue_order=order,
                palette=palette,
                ax=ax,
                fliersize=1.5,
                linewidth=0.8,
                legend=False,
            )
            means = sub.groupby("model", observed=True)["value"].mean().reindex(order)
            for k, model in enumerate(order):
                if np.isnan(means.iloc[k]) and model in set(results["model"]):
                    ax.text(0.02, k, "undefined", transform=ax.get_yaxis_transform(), va="center", fontsize=8, color="0.4")
            ax.scatter(
                means.to_numpy(),
                np.arange(len(order)),
                marker="D",
                s=18,
                color="black",
                zorder=5,
                label="mean" if (i, j) == (0, 0) else None,
            )
            ax.set_title(f"{dataset}" if i == 0 else "", fontsize=10)
            ax.set_xlabel(METRIC_LABELS.get(metric, metric), fontsize=9)
            ax.set_ylabel("")
    fig.suptitle(
        "Unseen perturbations, per perturbation: " + "; ".join(METRIC_TITLES.get(m, m) for m in metrics), fontsize=11, fontweight="bold"
    )
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def ratio_plot(
    ratios: pd.DataFrame,
    published: pd.DataFrame | None = None,
    order: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    published_label: str = "published ratio (real screen)",
) -> Figure:
    """Fig. 2c-style plot: mean of L2(model)/L2(mean) with its 95 % bootstrap interval, log2 axis.

    Parameters
    ----------
    ratios
        Output of :func:`helpers.stats.bootstrap.ratio_to_reference` (``dataset, model, n,
        mean_ratio, low, high``).
    published
        Optional published ratios to overlay as open circles: columns ``dataset`` (the
        run's dataset name), ``model``, ``value``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    datasets = list(datasets) if datasets is not None else sorted(ratios["dataset"].unique())
    if order is None:
        order = list(ratios.groupby("model")["mean_ratio"].mean().sort_values().index)
    order = list(order)
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.3 * len(datasets) + 1.6, 0.34 * len(order) + 1.6), squeeze=False, sharey=True)
    values = [ratios["low"].min(), ratios["high"].max()]
    if published is not None and len(published):
        values += [published["value"].min(), published["value"].max()]
    lo = min(0.8, np.nanmin(values) / 1.05)
    hi = max(1.25, np.nanmax(values) * 1.05)
    ticks = [t for t in (0.25, 0.5, 0.71, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2, 3, 4, 6, 8) if lo <= t <= hi]
    y = {m: i for i, m in enumerate(order)}
    for ax, dataset in zip(axes[0], datasets):
        sub = ratios[ratios["dataset"] == dataset].set_index("model")
        for model in order:
            if model not in sub.index:
                continue
            row = sub.loc[model]
            better = row["high"] < 1
            worse = row["low"] > 1
            color = "#1b7837" if better else "#b2182b" if worse else "#4d4d4d"
            ax.errorbar(
                row["mean_ratio"],
                y[model],
                xerr=[[row["mean_ratio"] - row["low"]], [row["high"] - row["mean_ratio"]]],
                fmt="o",
                color=color,
                ms=5,
                capsize=2.5,
                lw=1.2,
            )
        if published is not None:
            pub = published[published["dataset"] == dataset]
            pub = pub[pub["model"].isin(order)]
            ax.scatter(
                pub["value"],
                [y[m] for m in pub["model"]],
                facecolors="none",
                edgecolors="#2166ac",
                s=46,
                lw=1.2,
                zorder=4,
                label=published_label,
            )
        ax.axvline(1.0, color="black", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_xlim(lo, hi)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        n = sub["n"].max() if len(sub) else 0
        ax.set_title(f"{dataset}\n(n = {n} perturbation-seed pairs)", fontsize=10)
        ax.set_xlabel("mean L2(model) / L2(mean)\n(log2 axis; < 1 beats the mean)", fontsize=9)
    axes[0, 0].set_yticks(range(len(order)))
    axes[0, 0].set_yticklabels(order)
    axes[0, 0].set_ylim(len(order) - 0.5, -0.5)
    fig.suptitle("Error relative to the mean baseline, with 95 % bootstrap intervals", fontsize=11, fontweight="bold")
    handles = [
        Line2D([], [], marker="o", ls="", color="#1b7837", label="interval below 1 (beats the mean)"),
        Line2D([], [], marker="o", ls="", color="#4d4d4d", label="interval contains 1"),
        Line2D([], [], marker="o", ls="", color="#b2182b", label="interval above 1 (worse than the mean)"),
    ]
    if published is not None and len(published):
        handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="none", markeredgecolor="#2166ac", label=published_label))
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.11, 1, 1))
    return fig
