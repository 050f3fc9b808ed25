"""Figures of the Systema chapter: systematic variation, the perturbed reference, mode collapse, calibration."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .style import boxplot

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Colours of the two references a change can be taken against.
REFERENCE_COLOURS = {"control": "#d62728", "perturbed_mean": "#1f77b4"}
REFERENCE_LABELS = {"control": "against control (PearsonΔ)", "perturbed_mean": "against the perturbed mean"}


def cosine_distributions(cosines: pd.DataFrame, scores: pd.DataFrame, published: pd.Series | None = None, ax: Axes | None = None) -> Axes:
    """Per-perturbation cosine to the average shift, one box per dataset (Systema's figure).

    Parameters
    ----------
    cosines
        Tidy ``dataset, perturbation, cosine`` (:func:`helpers.benchmarks.systema.dataset_scores`).
    scores
        ``dataset, systematic_variation`` (the mean cosine, drawn as a diamond).
    published
        Optional published score of the real dataset each one mimics, indexed by dataset
        (drawn as a red cross, labelled "published (real data)").
    """
    order = scores.sort_values("systematic_variation")["dataset"].tolist()
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5.0, 1.5 * len(order) + 2), 4.0))
    boxplot(data=cosines, x="dataset", y="cosine", order=order, ax=ax, color="#c6dbef", fliersize=0, width=0.55)
    sns.stripplot(data=cosines, x="dataset", y="cosine", order=order, ax=ax, color="#08519c", size=2.2, alpha=0.45, jitter=0.22)
    means = scores.set_index("dataset").loc[order, "systematic_variation"].to_numpy()
    ax.scatter(range(len(order)), means, marker="D", s=55, color="black", zorder=5, label="score (mean cosine), this run")
    if published is not None:
        values = [published.get(d, np.nan) for d in order]
        if np.isfinite(values).any():
            ax.scatter(
                range(len(order)),
                values,
                marker="X",
                s=80,
                color="#d62728",
                zorder=6,
                label="published score of the real dataset it mimics",
            )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("")
    ax.set_ylabel("cosine(change, average change)")
    ax.set_ylim(min(-0.25, float(cosines["cosine"].min()) - 0.05), 1.0)
    ax.set_title("Systematic variation: how much each perturbation moves along the average shift")
    ax.legend(loc="lower right", fontsize=8)
    ax.tick_params(axis="x", labelrotation=15)
    return ax


def shift_decomposition(decomposition: pd.DataFrame, title: str, ax: Axes | None = None) -> Axes:
    """Scatter of each change's length along the average shift against its length orthogonal to it."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.4, 4.2))
    points = ax.scatter(
        decomposition["along"],
        decomposition["orthogonal"],
        c=decomposition["cosine"],
        cmap="coolwarm",
        vmin=-1,
        vmax=1,
        s=14,
        edgecolor="none",
    )
    x_lo = min(0.0, float(decomposition["along"].min())) * 1.05
    x_hi = float(decomposition["along"].max()) * 1.08
    y_hi = float(decomposition["orthogonal"].max()) * 1.05
    diagonal = min(x_hi, y_hi)
    ax.plot([0, diagonal], [0, diagonal], color="grey", lw=0.8, ls="--", label="equal lengths (cosine 0.71)")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(0, y_hi)
    ax.set_xlabel("length along the average shift (log-expression units)")
    ax.set_ylabel("length orthogonal to it (log-expression units)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    plt.colorbar(points, ax=ax, label="cosine to the average shift")
    return ax


def reference_comparison(
    summary: pd.DataFrame,
    metrics: Sequence[str] = ("pearson_delta_vs_control", "pearson_delta_vs_perturbed_mean"),
    models: Iterable[str] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Mean ± standard error of PearsonΔ against each reference, one group of bars per model.

    ``summary`` has columns ``model, metric, mean, se``; undefined values (NaN everywhere)
    are written on the plot instead of a bar. ``models`` gives the order (default: as found).
    """
    models = list(models) if models is not None else list(dict.fromkeys(summary["model"]))
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5.5, 1.3 * len(models) + 2.5), 3.8))
    width = 0.8 / len(metrics)
    for k, metric in enumerate(metrics):
        ref = "perturbed_mean" if metric.endswith("perturbed_mean") else "control"
        sub = summary[summary["metric"] == metric].set_index("model").reindex(models)
        x = np.arange(len(models)) + (k - (len(metrics) - 1) / 2) * width
        y = sub["mean"].to_numpy(dtype=float)
        err = sub["se"].to_numpy(dtype=float)
        colour = REFERENCE_COLOURS[ref]
        label = REFERENCE_LABELS[ref] + (" (top-20 DE genes)" if "de20" in metric else "")
        ax.bar(
            x,
            np.nan_to_num(y),
            width * 0.92,
            yerr=np.where(np.isfinite(err), err, 0),
            color=colour,
            alpha=0.55 if "de20" in metric else 0.9,
            label=label,
            capsize=2,
        )
        for xi, yi in zip(x, y):
            if not np.isfinite(yi):
                ax.text(xi, 0.02, "undefined\n(zero change)", ha="center", va="bottom", fontsize=7, rotation=90, color=colour)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(models)), models)
    ax.set_ylabel("PearsonΔ (mean ± s.e.)")
    ax.set_title("The same predictions, judged against two references")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2)
    return ax


def sweep(summary: pd.DataFrame, model: str, correlation: dict | None = None, ax: Axes | None = None) -> Axes:
    """Systema's central figure on simulated screens: PearsonΔ of the mean baseline vs systematic variation.

    ``summary`` from :func:`helpers.benchmarks.systema.sweep_summary`; one line per reference.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.2))
    for metric, ref in (("pearson_delta_vs_control", "control"), ("pearson_delta_vs_perturbed_mean", "perturbed_mean")):
        sub = summary[(summary["model"] == model) & (summary["metric"] == metric)].sort_values("systematic_variation")
        if sub.empty:
            continue
        ax.plot(
            sub["systematic_variation"],
            sub["value"],
            marker="o",
            color=REFERENCE_COLOURS[ref],
            label=f"{model}: PearsonΔ {REFERENCE_LABELS[ref].replace(' (PearsonΔ)', '')}",
        )
        if ref == "control":
            for _, row in sub.iterrows():
                ax.annotate(
                    f"s={row['systematic_strength']:g}",
                    (row["systematic_variation"], row["value"]),
                    textcoords="offset points",
                    xytext=(4, -11),
                    fontsize=7,
                    color="grey",
                )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("systematic variation of the screen (mean cosine to the average shift)")
    ax.set_ylabel("PearsonΔ, mean over test perturbations")
    title = "More systematic variation flatters the mean baseline against control only"
    if correlation is not None and np.isfinite(correlation.get("r", np.nan)):
        title += (
            f"\n(r = {correlation['r']:.2f} across {correlation['n_screens']} simulated screens; Systema: r = 0.97 across 10 real datasets)"
        )
    ax.set_title(title, fontsize=10)
    # below the axes: inside, it covered the lines of the weaker screens
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2)
    return ax


def mode_collapse(
    table: pd.DataFrame,
    metrics: Sequence[str] = ("rmse", "rank_rmse", "centroid_accuracy"),
    chance: dict | None = None,
    models: Iterable[str] | None = None,
) -> Figure:
    """One panel per metric: mean value of each predictor, with the chance level dashed.

    ``table`` has columns ``model, metric, mean``; ``models`` gives the order.
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.6))
    axes = np.atleast_1d(axes)
    models = list(models) if models is not None else list(dict.fromkeys(table["model"]))
    palette = dict(zip(models, sns.color_palette("Set2", len(models))))
    for ax, metric in zip(axes, metrics):
        sub = table[table["metric"] == metric].set_index("model").reindex(models)
        ax.bar(range(len(models)), sub["mean"].to_numpy(dtype=float), color=[palette[m] for m in models])
        if chance and metric in chance and chance[metric] is not None:
            ax.axhline(chance[metric], color="black", ls="--", lw=1, label="chance (mode collapse)")
            ax.legend(fontsize=7.5, loc="lower right", framealpha=0.9, frameon=True)
        ax.set_xticks(range(len(models)), [m.replace(" ", "\n", 1) if len(m) > 8 else m for m in models], fontsize=8)
        ax.set_title(metric)
        ax.set_ylabel("mean over perturbations")
    fig.suptitle("Mode collapse: same RMSE, opposite ranks", fontweight="bold")
    fig.tight_layout()
    return fig


def calibration(
    drf: pd.DataFrame,
    positives: Sequence[str] = ("technical duplicate", "interpolated duplicate"),
    well: float = 0.5,
    poorly: float = 0.2,
    ax: Axes | None = None,
) -> Axes:
    """Median dynamic range fraction of every metric, one marker per positive control.

    ``drf`` from :func:`helpers.metrics.calibration.drf_table` (index = metric).
    """
    order = drf.sort_values(f"drf_{positives[0]}").index.tolist()
    if ax is None:
        _, ax = plt.subplots(figsize=(7.2, 0.32 * len(order) + 1.6))
    y = np.arange(len(order))
    ax.axvspan(-1, poorly, color="#fcbba1", alpha=0.45, lw=0, label=f"poorly calibrated (< {poorly:g})")
    ax.axvspan(well, 1.0, color="#c7e9c0", alpha=0.55, lw=0, label=f"well calibrated (≥ {well:g})")
    markers = ["o", "s", "^"]
    colours = ["#08519c", "#ff7f0e", "#2ca02c"]
    for k, pos in enumerate(positives):
        ax.scatter(drf.loc[order, f"drf_{pos}"], y, marker=markers[k], color=colours[k], s=40, zorder=4, label=f"positive control: {pos}")
    ax.set_yticks(y, order, fontsize=8)
    ax.set_xlim(-1.02, 1.02)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("dynamic range fraction (median over perturbations)")
    ax.set_title("Which metrics separate a near-perfect prediction from an uninformative one")
    # below the x label: inside, it covered the markers of the best-calibrated metrics
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.6 / (0.32 * len(order) + 1.6)), ncols=2)
    return ax


def doubles_by_seen(frame: pd.DataFrame, metric: str, ax: Axes | None = None, legend: bool = True) -> Axes:
    """Box plot of a metric over 2-gene test perturbations, by number of genes seen as training singles.

    ``frame`` has columns ``seen_genes, model, metric, value``.
    """
    sub = frame[frame["metric"] == metric].copy()
    sub["seen"] = sub["seen_genes"].map(lambda k: f"{k} of 2 seen")
    order = [f"{k} of 2 seen" for k in (0, 1, 2) if (sub["seen_genes"] == k).any()]
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.8))
    boxplot(data=sub, x="seen", y="value", hue="model", order=order, ax=ax, fliersize=2, palette="Set2")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("genes of the double seen as single perturbations in training")
    ax.set_ylabel(metric)
    ax.set_title("Double perturbations by how much of them was seen")
    if legend:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=3)
    elif ax.get_legend() is not None:
        ax.get_legend().remove()
    return ax


def doubles_figure(frame: pd.DataFrame) -> Figure:
    """Two stacked panels of :func:`doubles_by_seen`: PearsonΔ against control and against the perturbed mean."""
    fig, axes = plt.subplots(2, 1, figsize=(7.5, 8.0), sharex=True)
    doubles_by_seen(frame, "pearson_delta_vs_control", ax=axes[0], legend=False)
    doubles_by_seen(frame, "pearson_delta_vs_perturbed_mean", ax=axes[1], legend=False)
    axes[0].set_title("PearsonΔ against control")
    axes[1].set_title("PearsonΔ against the perturbed mean (`mean`: undefined)")
    for ax in axes:
        ax.set_ylabel("PearsonΔ")
    axes[0].set_xlabel("")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=len(labels), fontsize=9)
    fig.suptitle("2-gene test perturbations, by their genes seen as training singles", fontweight="bold")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig
