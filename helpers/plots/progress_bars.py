"""Figures of the progress-bar chapter (Cole et al. 2026): bars between WAP and BAP, L2 per method, bootstrap vs truth."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Colours by kind of method.
KIND_COLOURS = {"embedding": "#3b75af", "null method": "#9a9a9a", "cheater": "#e08a2c", "reference": "#4a9a5b"}
KIND_LABELS = {
    "embedding": "embedding",
    "null method": "null method (sets the WAP)",
    "cheater": "cheater bound (sets the BAP)",
    "reference": "true effect (simulation only)",
}
_KIND_ORDER = {"cheater": 0, "reference": 1, "embedding": 2, "null method": 3}


def _ordered(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    frame = frame.assign(_k=frame["kind"].map(_KIND_ORDER), _v=-frame[value].fillna(-np.inf))
    return frame.sort_values(["_k", "_v", "model"]).drop(columns=["_k", "_v"])


def _short(model: str) -> str:
    return model.replace(" (cheater)", "").replace(", cheater", "")


def progress_bars(
    table: pd.DataFrame,
    fraction: str = "fraction_gap_closed",
    contexts: Sequence[str] | None = None,
    title: str | None = None,
    xlim: tuple[float, float] = (-1.0, 1.75),
) -> Figure:
    """One panel per context: a horizontal bar per method from the WAP (0) to its fraction of the gap.

    Parameters
    ----------
    table
        :func:`helpers.benchmarks.progress_bars.progress_table` output (``context, model, kind, l2, wap_model,
        wap_l2, bap_model, bap_l2`` and the ``fraction`` column).
    fraction
        ``"fraction_gap_closed"`` (best null → tighter cheater), ``"fraction_gap_closed_published"``
        (training mean → experimental error) or ``"fraction_true_gap_closed"`` (simulations).
    xlim
        x range; bars beyond it are cut at the edge and their value is printed.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    contexts = list(contexts) if contexts is not None else sorted(table["context"].unique())
    # one model order for every panel: kind, then the mean fraction over contexts
    order = _ordered(table.groupby("model", as_index=False).agg(kind=("kind", "first"), v=(fraction, "mean")), "v")["model"].tolist()
    ncols = 2 if len(contexts) > 1 else 1
    nrows = int(np.ceil(len(contexts) / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(7.8 if ncols == 2 else 6.0, nrows * (0.27 * len(order) + 1.1) + 0.9), sharey=True, squeeze=False
    )
    lo, hi = xlim
    span = hi - lo
    for ax, ctx in zip(axes.ravel(), contexts):
        frame = table[table["context"] == ctx].set_index("model").reindex(order)
        y = np.arange(len(order))
        values = frame[fraction].to_numpy(dtype=float)
        colours = [KIND_COLOURS.get(k, "#333333") for k in frame["kind"].fillna("")]
        shown = np.clip(np.nan_to_num(values, nan=0.0), lo, hi)
        ax.barh(y, shown, color=colours, height=0.7)
        for yi, v, s in zip(y, values, shown):
            if np.all(np.isnan(values)):
                break  # the panel says why
            if np.isnan(v):
                text, x, ha = "n/a", 0.02 * span, "left"
            else:
                text = f"{v:.2f}" + ("" if v == s else " ›" if v > s else " ‹")
                x, ha = (s + 0.02 * span, "left") if s >= 0 else (0.02 * span, "left")
                if s > hi - 0.25 * span:
                    x, ha = s - 0.02 * span, "right"
            ax.text(x, yi, text, va="center", ha=ha, fontsize=7.5, color="white" if ha == "right" else "black")
        ax.set_yticks(y, order, fontsize=8)
        ax.axvline(0, color="black", lw=1)
        ax.axvline(1, color="black", lw=1, ls="--")
        ax.set_xlim(lo, hi)
        first = frame.dropna(subset=["wap_model"]).iloc[0]
        if fraction == "fraction_gap_closed":
            sub = f"WAP: {_short(first['wap_model'])} ({first['wap_l2']:.2f})\nBAP: {_short(first['bap_model'])} ({first['bap_l2']:.2f})"
        elif fraction == "fraction_gap_closed_published":
            sub = "WAP: training mean\nBAP: experimental error"
        else:
            sub = f"WAP: {_short(first['wap_model'])} ({first['wap_l2']:.2f})\nBAP: true noise floor"
        ax.set_title(f"{ctx}\n{sub}", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        if np.all(np.isnan(values)):
            ax.text(
                0.5,
                0.5,
                "no gap: the BAP is not\nbelow the WAP",
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=8.5,
                color="#aa0000",
                bbox={"facecolor": "white", "edgecolor": "#aa0000"},
            )
    for ax in axes.ravel()[len(contexts) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("fraction of gap closed (0 = WAP, 1 = BAP)", fontsize=8.5)
    kinds = [k for k in KIND_COLOURS if k in set(table["kind"])]
    fig.legend(
        handles=[Patch(color=KIND_COLOURS[k], label=KIND_LABELS[k]) for k in kinds],
        loc="lower center",
        ncol=2,
        fontsize=8,
        bbox_to_anchor=(0.5, 0.0),
    )
    fig.suptitle(title or "Progress bars: the fraction of the gap between WAP and BAP each method closes", fontsize=10.5, fontweight="bold")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def l2_by_method(errors: pd.DataFrame, kinds: dict, contexts: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Median over folds of the mean L2 per method (dot) and the range over folds (line), one panel per context.

    Parameters
    ----------
    errors
        :func:`helpers.benchmarks.progress_bars.fold_errors` output (``context, model, l2, fold_l2``).
    kinds
        model -> kind (colours).
    """
    import matplotlib.pyplot as plt

    contexts = list(contexts) if contexts is not None else sorted(errors["context"].unique())
    n = len(contexts)
    ncols = 2 if n > 1 else 1
    nrows = int(np.ceil(n / ncols))
    n_models = errors.groupby("context")["model"].nunique().max()
    fig, axes = plt.subplots(nrows, ncols, figsize=(7.5 if ncols == 2 else 6, nrows * (0.3 * n_models + 1.2)), squeeze=False)
    for ax, ctx in zip(axes.ravel(), contexts):
        frame = errors[errors["context"] == ctx].assign(kind=lambda f: f["model"].map(kinds))
        frame = frame.sort_values("l2", ascending=True)
        y = np.arange(len(frame))
        for yi, (_, row) in zip(y, frame.iterrows()):
            folds = np.asarray(row["fold_l2"], dtype=float)
            colour = KIND_COLOURS.get(row["kind"], "#333333")
            ax.plot([folds.min(), folds.max()], [yi, yi], color=colour, lw=2, alpha=0.5)
            ax.plot(row["l2"], yi, "o", color=colour, ms=5)
        ax.set_yticks(y, frame["model"], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(ctx, fontsize=10)
        ax.set_xlabel("L2 error (log-normalised expression units)")
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    fig.suptitle(
        title or "Error per method: median over folds (dot) and range over folds (line); lower is better", fontsize=11, fontweight="bold"
    )
    fig.tight_layout()
    return fig


def bootstrap_vs_true(per_perturbation: pd.DataFrame, ax: Axes | None = None, title: str | None = None) -> Axes:
    """Per perturbation: bootstrap experimental error (q0.9) against the true measurement error.

    Parameters
    ----------
    per_perturbation
        Columns ``context, perturbation, bootstrap_q90, true_error`` — the true error is
        ``||Δ_observed − Δ_true||₂``, known in a simulation only.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.8, 5.2))
    palette = plt.get_cmap("tab10")
    for i, (ctx, frame) in enumerate(per_perturbation.groupby("context", sort=True)):
        ratio = np.median(frame["bootstrap_q90"] / frame["true_error"])
        ax.scatter(frame["true_error"], frame["bootstrap_q90"], s=8, alpha=0.5, color=palette(i), label=f"{ctx} (median ratio {ratio:.2f})")
    lim = [0, float(np.nanmax(per_perturbation[["true_error", "bootstrap_q90"]].to_numpy())) * 1.05]
    ax.plot(lim, lim, color="black", lw=1, ls="--", label="bootstrap = truth")
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_xlabel("true measurement error ||Δ_observed − Δ_true||₂ (L2, log-normalised units)")
    ax.set_ylabel("bootstrap experimental error, 0.9 quantile (L2)")
    ax.set_title(title or "How tight is the bootstrap bound? (simulation: truth known)")
    ax.legend(fontsize=8, loc="upper left")
    return ax
