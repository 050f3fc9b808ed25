"""Figures of the double-perturbation chapter: errors per model, cumulative error, the
empirical null of genetic interactions, class counts, TPR-vs-FDP curves and AUCs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..stats.interactions import CLASSES, InteractionNull
from .style import boxplot

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: Model colours, shared by every figure of the chapter (published-only models are grey).
PALETTE = {
    "no change": "#7f7f7f",
    "additive": "#2ca02c",
    "mean": "#8c564b",
    "linear": "#1f77b4",
    "linear additive (torch)": "#9467bd",
    "latent additive (torch)": "#e377c2",
    "decoder only (torch)": "#ff7f0e",
}
_EXTRA = ["#17becf", "#bcbd22", "#d62728", "#393b79"]

METRIC_LABELS = {
    "l2": "L2 error (top genes, log-expression)",
    "pearson_delta_vs_control": "PearsonΔ vs control",
    "pearson_delta_vs_perturbed_mean": "PearsonΔ vs perturbed mean",
    "l2_vs_true_profile": "L2 to the true profile",
}


def colours(models: Sequence[str]) -> dict[str, str]:
    """A colour for every model: the fixed palette, then extra colours (e.g. a predictions file)."""
    out, extra = {}, iter(_EXTRA * 3)
    for m in models:
        out[m] = PALETTE.get(m) or next(extra)
    return out


def metric_by_model(
    values: pd.DataFrame,
    metric: str,
    order: Sequence[str],
    published: pd.DataFrame | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Box and strip plot of one metric per model (one point per double and seed).

    ``values``: tidy rows with ``model, metric, value``. ``published``: rows with ``model``
    and ``value`` (published means), drawn as diamonds to the right of this run's models,
    under the label "published".
    """
    data = values[values["metric"] == metric].dropna(subset=["value"])
    order = [m for m in order if m in set(data["model"])]
    if ax is None:
        _, ax = plt.subplots(figsize=(8.5, 4.2))
    pal = colours(order)
    boxplot(
        data=data,
        x="model",
        y="value",
        order=order,
        hue="model",
        palette=pal,
        legend=False,
        ax=ax,
        fliersize=0,
        width=0.6,
        boxprops={"alpha": 0.45},
    )
    sns.stripplot(
        data=data, x="model", y="value", order=order, hue="model", palette=pal, legend=False, ax=ax, size=2.2, alpha=0.55, jitter=0.25
    )
    labels = list(order)
    if published is not None and not published.empty:
        pub = published.reset_index(drop=True)
        start = len(order) + 0.6
        xs = start + np.arange(len(pub))
        ax.scatter(xs, pub["value"], marker="D", s=30, color="#444444", zorder=5, label="published mean (Norman 2019)")
        ax.axvline(len(order) - 0.2, color="#bbbbbb", lw=0.8)
        ax.set_xticks(list(range(len(order))) + list(xs))
        labels += [f"{m} (pub.)" for m in pub["model"]]
        ax.legend(loc="best", fontsize=8)
        ax.set_xlim(-0.6, xs[-1] + 0.6)
    ax.set_xticks(ax.get_xticks(), labels, rotation=35, ha="right", fontsize=8)
    ax.set_xlabel("")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_title(title or f"{METRIC_LABELS.get(metric, metric)} per double (all seeds)")
    return ax


def cumulative_error(curves: pd.DataFrame, order: Sequence[str], axes: Axes | Sequence[Axes] | np.ndarray | None = None) -> np.ndarray:
    """Mean cumulative L2 against the number of genes, one panel per gene ordering (log x)."""
    orderings = list(dict.fromkeys(curves["ordering"]))
    if axes is None:
        _, axes = plt.subplots(1, len(orderings), figsize=(10, 3.9), sharey=True)
    axes = np.atleast_1d(axes)
    mean = curves.groupby(["ordering", "model", "n_genes"], sort=False)["cumulative_l2"].mean().reset_index()
    pal = colours(order)
    for ax, ordering in zip(axes, orderings):
        part = mean[mean["ordering"] == ordering]
        for m in order:
            sub = part[part["model"] == m]
            if not sub.empty:
                ax.plot(sub["n_genes"], sub["cumulative_l2"], color=pal[m], lw=1.6, label=m)
        ax.set_xscale("log")
        ax.set_xlabel(f"number of genes (sorted {ordering})")
        ax.set_title(f"Cumulative error, genes {ordering}")
    axes[0].set_ylabel("cumulative L2, mean over doubles and seeds")
    axes[-1].legend(fontsize=7.5, loc="upper left")
    return axes


def null_fit(null: InteractionNull, ax: Axes | None = None, unit: str = "log-expression") -> Axes:
    """Histogram of the deviations from additivity with the fitted mixture and null, and the thresholds."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.8))
    if null.fit is None:
        ax.text(0.5, 0.5, null.message, ha="center", va="center", wrap=True, transform=ax.transAxes)
        ax.set_axis_off()
        return ax
    bins = null.fit.bins
    width = float(np.diff(bins["x"]).mean())
    ax.bar(bins["x"], bins["count"], width=width, color="#c6dbef", edgecolor="#9ecae1", lw=0.3, label="observed")
    ax.plot(bins["x"], bins["f"], color="#08519c", lw=1.4, label="mixture fit f")
    ax.plot(bins["x"], bins["p0f0"], color="#d62728", lw=1.4, ls="--", label="null p0·f0")
    for thr, name in ((null.lower, "lower"), (null.upper, "upper")):
        if np.isfinite(thr):
            ax.axvline(thr, color="#333333", lw=1, ls=":")
            ax.text(thr, ax.get_ylim()[1] * 0.9, f" {name} {thr:+.3f}", fontsize=8, ha="left" if name == "upper" else "right")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_xlabel(f"deviation from additivity, AB − (A + B − ctrl) ({unit})")
    ax.set_ylabel("(double, gene) pairs per bin")
    f = null.fit
    ax.set_title(f"Empirical null (ML): δ = {f.delta:.4f}, σ = {f.sigma:.4f}, p0 = {f.p0:.3f}; local fdr {null.target_fdr} thresholds")
    ax.legend(fontsize=8, loc="upper left")
    return ax


def class_counts(counts: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Grouped bars of the non-additive classes (rows: classes; columns: e.g. rules), counts on top."""
    classes = [c for c in CLASSES if c != "additive" and c in counts.index]
    data = counts.loc[classes]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.6))
    data.plot.bar(ax=ax, rot=0, color=["#3182bd", "#fd8d3c", "#74c476"][: data.shape[1]], width=0.75)
    for container in ax.containers:
        ax.bar_label(container, fontsize=7.5, padding=1)
    ax.set_title("Non-additive (double, gene) pairs by class (additive pairs not shown)")
    ax.set_xlabel("")
    ax.set_ylabel("pairs")
    ax.set_ylim(0, float(np.nanmax(data.to_numpy(dtype=float))) * 1.15 + 1)
    ax.legend(fontsize=8, loc="upper left")
    return ax


def tpr_fdp(
    curves: pd.DataFrame,
    order: Sequence[str],
    published: pd.DataFrame | None = None,
    ax: Axes | None = None,
    positive_share: float | None = None,
) -> Axes:
    """TPR against FDP, mean over seeds per model; published points (``model, fdp, value``) as diamonds.

    ``positive_share``: the share of true pairs; a random ranking then has FDP ≈ 1 − share at
    every TPR, drawn as a dashed vertical line.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5.6, 4.4))
    mean = curves.groupby(["model", "fdp"], sort=False)["tpr"].mean().reset_index()
    pal = colours(order)
    for m in order:
        sub = mean[mean["model"] == m]
        if not sub.empty:
            ax.plot(sub["fdp"], sub["tpr"], color=pal[m], lw=1.6, label=m)
    if published is not None and not published.empty:
        for m, sub in published.groupby("model", sort=False):
            ax.scatter(
                sub["fdp"],
                sub["value"],
                marker="D",
                s=22,
                color=pal.get(m, "#444444"),
                edgecolor="black",
                lw=0.5,
                zorder=5,
                label=f"{m}, published (Norman 2019)",
            )
    if positive_share is not None and np.isfinite(positive_share):
        ax.axvline(1 - positive_share, color="#d62728", lw=0.9, ls="--", label="random ranking")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false discovery proportion")
    ax.set_ylabel("true positive rate (non-additive pairs)")
    ax.set_title("Finding the non-additive pairs by |prediction − additive|")
    ax.legend(fontsize=7, loc="upper left")
    return ax


def auc_bars(
    summary: pd.DataFrame,
    published: pd.DataFrame | None = None,
    chance: dict | None = None,
    axes: Sequence[Axes] | np.ndarray | None = None,
) -> Sequence[Axes] | np.ndarray:
    """AUPRC and AUROC per model, mean ± SE over seeds (``summary`` from :func:`helpers.benchmarks.double_perturbations.mean_se`).

    ``published``: rows ``model, metric (gi_auprc/gi_auroc), value`` drawn as diamonds next
    to matching models and listed by name for the others. ``chance``: expected value of a
    random ranking per metric (AUPRC = share of non-additive pairs, AUROC = 0.5).
    """
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    models = list(summary.index)
    pal = colours(models)
    for ax, metric, label in zip(axes, ("auprc", "auroc"), ("AUPRC", "AUROC")):
        mean = summary[(metric, "mean")]
        se = summary[(metric, "se")].fillna(0)
        ax.bar(range(len(models)), mean, yerr=se, color=[pal[m] for m in models], alpha=0.8, capsize=3)
        labels = list(models)
        if published is not None and not published.empty:
            pub = published[published["metric"] == f"gi_{metric}"].reset_index(drop=True)
            xs = len(models) + 0.6 + np.arange(len(pub))
            ax.scatter(xs, pub["value"], marker="D", s=26, color="#444444", zorder=5)
            if "se" in pub:
                ax.errorbar(xs, pub["value"], yerr=pub["se"], fmt="none", color="#444444", capsize=2)
            ax.axvline(len(models) - 0.2, color="#bbbbbb", lw=0.8)
            labels += [f"{m} (pub.)" for m in pub["model"]]
            ax.set_xticks(list(range(len(models))) + list(xs))
        else:
            ax.set_xticks(range(len(models)))
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
        if chance and metric in chance and np.isfinite(chance[metric]):
            ax.axhline(chance[metric], color="#d62728", lw=0.9, ls="--", label="random ranking")
            ax.legend(fontsize=7.5, loc="upper right")
        ax.set_ylabel(f"{label} (mean ± SE over seeds)")
        ax.set_title(f"Interaction detection: {label}")
    return axes


def deviation_vs_noise(calls: pd.DataFrame, fdr: float, ax: Axes | None = None) -> Axes:
    """Each (double, gene) pair's |deviation from additivity| against its standard error from the cells.

    Pairs called by the single empirical null are marked, pairs called by the per-gene noise model
    circled; the dashed line is :math:`|d| = 2\\,\\mathrm{se}` (|z| = 2) for orientation.
    """
    ax = ax or plt.subplots(figsize=(6.4, 4.6))[1]
    ok = calls[np.isfinite(calls["z"])]
    old = ok["called_single_null"].astype(bool) if "called_single_null" in ok else pd.Series(False, index=ok.index)
    ax.scatter(ok.loc[~old, "se"], ok.loc[~old, "deviation"].abs(), s=8, color="#bbbbbb", label="not called by the single null")
    ax.scatter(ok.loc[old, "se"], ok.loc[old, "deviation"].abs(), s=12, color="#d62728", label="called by the single null")
    new = ok["called"].astype(bool)
    if new.any():
        ax.scatter(
            ok.loc[new, "se"],
            ok.loc[new, "deviation"].abs(),
            s=40,
            facecolors="none",
            edgecolors="black",
            label=f"called by the per-gene noise model (q ≤ {fdr})",
        )
    top = float(max(ok["se"].max(), 1e-3)) if len(ok) else 1.0
    ax.plot([0, top], [0, 2 * top], ls="--", color="black", lw=1, label="|z| = 2")
    ax.set_xlabel("standard error of the deviation (log-expression)")
    ax.set_ylabel("|deviation from additivity| (log-expression)")
    ax.set_title("Deviation from additivity against its sampling noise")
    ax.legend(loc="upper left", fontsize=8, frameon=True)
    return ax


def fits_beside_published(table: pd.DataFrame, axes: Sequence[Axes] | np.ndarray | None = None) -> np.ndarray:
    """This run's Norman-model estimates (y) against Norman et al.'s published values (x), one panel per quantity.

    Panels: the two Theil–Sen coefficients c1 and c2, the magnitude and the fit quality
    (distance correlation); the dashed line is equality; each point is one double.
    """
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    axes = np.ravel(axes)
    panels = [
        (["ts_coef_first", "ts_coef_second"], "coefficients c1, c2 (Theil–Sen)"),
        (["ts_norm"], "magnitude (|c1| + |c2|) / 2"),
        (["ts_linear_dcor"], "fit quality (distance correlation)"),
    ]
    colors = {"ts_coef_first": "#1f77b4", "ts_coef_second": "#ff7f0e", "ts_norm": "#2ca02c", "ts_linear_dcor": "#9467bd"}
    labels = {"ts_coef_first": "c1 (first gene)", "ts_coef_second": "c2 (second gene)", "ts_norm": "magnitude", "ts_linear_dcor": "dCor"}
    for ax, (quantities, title) in zip(axes, panels):
        values = []
        for q in quantities:
            x, y = table[(q, "Norman et al.")].astype(float), table[(q, "this run")].astype(float)
            ax.scatter(x, y, color=colors[q], label=labels[q], s=30)
            values += [*x, *y]
        lo, hi = np.nanmin(values), np.nanmax(values)
        pad = 0.05 * (hi - lo or 1)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ls="--", color="grey", lw=1, label="equal")
        ax.set_xlabel("Norman et al. 2019 (published)")
        ax.set_ylabel("this run")
        ax.set_title(title)
        ax.legend(loc="upper left", fontsize=8)
    return axes
