"""Plots of the chapter "Simulated screens": real and simulated cells side by side, truth vs estimate."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from numpy.typing import ArrayLike

REAL_COLOUR, SIM_COLOUR = "#4c72b0", "#dd8452"


def count_model(
    real: pd.DataFrame,
    simulated: pd.DataFrame,
    real_library: ArrayLike,
    simulated_library: ArrayLike,
    dispersion: float,
    library_log_sd: float,
    labels: Sequence[str] = ("real", "simulated"),
) -> Figure:
    """Library sizes, mean–variance relation and zeros per gene of control cells, real next to simulated.

    ``real`` and ``simulated`` are :func:`helpers.benchmarks.simulation.count_statistics`
    tables; the curves are the negative-binomial model with dispersion ``dispersion``
    (``Var = μ + φμ²``) and log-normal library sizes.
    """
    from ..data.simulation.truth import expected_zero_fraction

    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.8))
    ax = axes[0]
    lo = min(np.min(real_library), np.min(simulated_library))
    hi = max(np.max(real_library), np.max(simulated_library))
    bins = np.logspace(np.log10(lo), np.log10(hi), 40)
    ax.hist(real_library, bins=bins, density=True, alpha=0.6, color=REAL_COLOUR, label=labels[0])
    ax.hist(simulated_library, bins=bins, density=True, alpha=0.6, color=SIM_COLOUR, label=labels[1])
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set(title="Library size per cell", xlabel="UMIs per cell (whole transcriptome)", ylabel="density")
    ax.legend()

    grid = np.logspace(-3, 3, 200)
    ax = axes[1]
    for frame, colour, label in ((simulated, SIM_COLOUR, labels[1]), (real, REAL_COLOUR, labels[0])):
        keep = (frame["mean"] > 0) & (frame["variance"] > 0)
        ax.scatter(frame.loc[keep, "mean"], frame.loc[keep, "variance"], s=6, alpha=0.5, color=colour, label=label)
    ax.plot(grid, grid, "k:", lw=1, label="Poisson (Var = μ)")
    ax.plot(grid, grid + dispersion * grid**2, "k-", lw=1, label=f"NB, φ = {dispersion:.2f}")
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(1e-3, 1e3),
        ylim=(1e-3, 1e5),
        title="Mean–variance relation (control cells)",
        xlabel="mean UMIs per cell",
        ylabel="variance of UMIs",
    )
    ax.legend(fontsize=8)

    ax = axes[2]
    for frame, colour, label in ((simulated, SIM_COLOUR, labels[1]), (real, REAL_COLOUR, labels[0])):
        keep = frame["mean"] > 0
        ax.scatter(frame.loc[keep, "mean"], frame.loc[keep, "fraction_zero"], s=6, alpha=0.5, color=colour, label=label)
    ax.plot(grid, np.exp(-grid), "k:", lw=1, label="Poisson")
    ax.plot(grid, expected_zero_fraction(grid, dispersion, library_log_sd), "k-", lw=1, label="NB with library variation")
    ax.set(
        xscale="log",
        xlim=(1e-3, 1e3),
        ylim=(-0.02, 1.02),
        title="Zeros per gene (control cells)",
        xlabel="mean UMIs per cell",
        ylabel="fraction of cells with 0 UMIs",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def changes_heatmaps(
    real: pd.DataFrame,
    simulated: pd.DataFrame,
    n_perturbations: int = 25,
    n_genes: int = 40,
    titles: Sequence[str] = ("real", "simulated"),
    vmax: float = 1.0,
) -> Figure:
    """Heatmaps of pseudobulk changes (perturbations x genes with the largest changes), side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 5.2))
    for ax, frame, title in zip(axes, (real, simulated), titles):
        strength = frame.abs().mean(axis=1).sort_values(ascending=False)
        rows = strength.index[:n_perturbations]
        cols = frame.loc[rows].abs().mean(axis=0).sort_values(ascending=False).index[:n_genes]
        block = frame.loc[rows, cols]
        im = ax.imshow(block.to_numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7.5)
        ax.set_title(title)
        ax.set_xlabel(f"{len(cols)} genes with the largest changes")
        ax.set_ylabel(f"{len(rows)} perturbations with the largest changes")
    fig.colorbar(im, ax=axes, shrink=0.7, label="Δ log-normalised expression")
    return fig


def changes_pca(
    real: pd.DataFrame,
    simulated: pd.DataFrame,
    real_groups: pd.Series,
    simulated_groups: pd.Series,
    titles: Sequence[str] = ("real", "simulated"),
) -> Figure:
    """First two principal components of the perturbations' changes, coloured by group (the 8 largest; others grey)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, frame, groups, title in zip(axes, (real, simulated), (real_groups, simulated_groups), titles):
        values = frame.to_numpy() - frame.to_numpy().mean(axis=0)
        u, s, _ = np.linalg.svd(values, full_matrices=False)
        pcs = u[:, :2] * s[:2]
        explained = s**2 / np.sum(s**2)
        g = groups.reindex(frame.index).fillna("").astype(str).to_numpy()
        names, counts = np.unique(g, return_counts=True)
        shown = [n for n in names[np.argsort(-counts, kind="stable")] if n][:8]
        other = ~np.isin(g, shown)
        if other.any():
            ax.scatter(pcs[other, 0], pcs[other, 1], s=10, alpha=0.5, color="#bbbbbb", label="other" if len(shown) < len(names) else "none")
        for name in shown:
            sel = g == name
            ax.scatter(pcs[sel, 0], pcs[sel, 1], s=18, alpha=0.9, label=name)
        ax.legend(fontsize=7, markerscale=1.2)
        ax.set(title=title, xlabel=f"PC1 ({explained[0]:.0%} of variance)", ylabel=f"PC2 ({explained[1]:.0%} of variance)")
    fig.tight_layout()
    return fig


def estimate_vs_truth(estimate: pd.DataFrame, truth: pd.DataFrame, perturbations: Iterable[str], ncols: int = 3) -> Figure:
    """Estimated change (pseudobulk) against the true change, one panel per perturbation."""
    perturbations = list(perturbations)
    nrows = int(np.ceil(len(perturbations) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.2 * nrows), squeeze=False)
    for ax, p in zip(axes.ravel(), perturbations):
        x, y = truth.loc[p].to_numpy(), estimate.loc[p, truth.columns].to_numpy()
        lim = max(np.abs(x).max(), np.abs(y).max()) * 1.05 + 1e-3
        ax.scatter(x, y, s=5, alpha=0.5, color=SIM_COLOUR)
        ax.plot([-lim, lim], [-lim, lim], "k:", lw=1)
        r = np.corrcoef(x, y)[0, 1] if np.std(x) > 0 and np.std(y) > 0 else np.nan
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), title=f"{p} (r = {r:.2f})", xlabel="true change", ylabel="estimated change")
    for ax in axes.ravel()[len(perturbations) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def error_by_cells(frame: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """RMS error of estimated changes against the truth as cells per perturbation grow.

    ``frame`` has columns ``cells`` and ``rms_error``; the dotted line is ``∝ 1/√cells``.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(frame["cells"], frame["rms_error"], "o-", color=SIM_COLOUR, label="estimate vs truth")
    ref = frame["rms_error"].iloc[0] * np.sqrt(frame["cells"].iloc[0] / frame["cells"])
    ax.plot(frame["cells"], ref, "k:", label="∝ 1/√cells")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="cells per perturbation",
        ylabel="RMS error of the change (log-normalised units)",
        title="Estimated changes converge to the truth",
    )
    ax.legend()
    return ax


def deviation_vs_truth(estimated: pd.Series, true: pd.Series, labels: pd.Series, ax: Axes | None = None) -> Axes:
    """Estimated deviation from additivity of double perturbations against the true one, by label."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5))
    colours = {"additive": "#bbbbbb", "synergy": "#c44e52", "buffering": "#4c72b0", "opposite": "#55a868"}
    for name in ("additive", "buffering", "synergy", "opposite"):
        sel = labels == name
        if sel.any():
            ax.scatter(
                true[sel],
                estimated[sel],
                s=6 if name == "additive" else 12,
                alpha=0.5,
                color=colours[name],
                label=f"{name} ({sel.sum():,})",
            )
    lim = float(np.nanmax(np.abs(np.concatenate([estimated.to_numpy(), true.to_numpy()])))) * 1.05
    ax.plot([-lim, lim], [-lim, lim], "k:", lw=1)
    ax.set(
        xlim=(-lim, lim),
        ylim=(-lim, lim),
        xlabel="true deviation from additivity",
        ylabel="estimated deviation from additivity",
        title="Double perturbations: AB − (A + B − control)",
    )
    ax.legend(fontsize=8, loc="upper left")  # "best" searches 200,000 points and warns
    return ax


def realism(summary: pd.DataFrame) -> Figure:
    """Simulated statistics next to the published ones (rows of :func:`summarise_realism` with a published value).

    Errors (L2, left) and scores in [0, 1] (right) get separate panels because their scales differ.
    """
    table = summary.dropna(subset=["published"]).reset_index(drop=True)
    is_error = table["statistic"].str.startswith("l2")
    parts = [("prediction error L2 (lower is better)", table[is_error]), ("scores", table[~is_error])]
    heights = [max(len(t), 1) for _, t in parts]
    fig, axes = plt.subplots(2, 1, figsize=(9, 0.45 * sum(heights) + 2.5), gridspec_kw={"height_ratios": heights})
    for k, (ax, (title, t)) in enumerate(zip(axes, parts)):
        y = np.arange(len(t))
        ax.barh(y - 0.2, t["published"], height=0.4, color=REAL_COLOUR, label="published (real data)")
        ax.barh(y + 0.2, t["simulated"], height=0.4, color=SIM_COLOUR, label="this simulation")
        ax.set_yticks(y, t["dataset"] + ": " + t["statistic"], fontsize=8)
        ax.invert_yaxis()
        ax.set(xlabel="value", title=title)
        if k == 0:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.suptitle("Simulated presets against the numbers published for the real screens")
    fig.tight_layout()
    return fig


#: x-axis label and scale of each statistic of :data:`helpers.benchmarks.simulation.STATISTICS`.
_STAT_AXES = {
    "control mean": ("mean UMIs per control cell (+0.001)", "log"),
    "zero fraction": ("share of control cells with no UMI", "linear"),
    "dispersion": ("NB dispersion (genes ≥ 0.05 UMIs)", "log"),
    "effect size": ("L2 norm of the change (log-normalised units)", "linear"),
    "DE genes": ("DE genes (BH q < 0.05)", "symlog"),
    "double deviation": ("observed − additive change (log-normalised units)", "linear"),
}
LEGACY_COLOUR = "#999999"


def statistic_ecdfs(
    real: dict, simulated: dict, legacy: dict | None = None, distances: pd.DataFrame | None = None, title: str = ""
) -> Figure:
    """Empirical CDFs of every statistic: the real cells, the simulated twin, and optionally the first simulator's twin.

    ``real``, ``simulated`` and ``legacy`` map statistic names to values
    (:func:`helpers.benchmarks.simulation.screen_statistics`); ``distances`` (columns
    ``statistic, version, ks_distance``) labels each panel with the Kolmogorov–Smirnov distances.
    """
    names = [n for n in _STAT_AXES if len(real.get(n, [])) and len(simulated.get(n, []))]
    ncols = 3
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(10.5, 3.0 * nrows), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        label, scale = _STAT_AXES[name]
        series = [("real", real[name], REAL_COLOUR, "-"), ("simulated (now)", simulated[name], SIM_COLOUR, "-")]
        if legacy is not None and len(legacy.get(name, [])):
            series.append(("simulated (first simulator)", legacy[name], LEGACY_COLOUR, "--"))
        for lab, values, colour, style in series:
            x = np.sort(np.asarray(values, dtype=float))
            if name == "control mean":
                x = x + 1e-3
            ax.step(x, np.arange(1, x.size + 1) / x.size, where="post", color=colour, ls=style, lw=1.6, label=lab)
        if scale == "log":
            ax.set_xscale("log")
        elif scale == "symlog":
            ax.set_xscale("symlog", linthresh=1)
        if name == "double deviation":
            lim = np.quantile(np.abs(np.concatenate([np.asarray(s[1], float) for s in series])), 0.995)
            ax.set_xlim(-lim, lim)
        ks = ""
        if distances is not None:
            d = distances[distances["statistic"] == name].set_index("version")["ks_distance"]
            ks = "\nKS " + ", ".join(f"{v}: {x:.2f}" for v, x in d.items())  # own line: fits the panel's width
        ax.set(xlabel=label, ylabel="cumulative share", title=f"{name}{ks}")
        ax.title.set_fontsize(9)
    for ax in axes.ravel()[len(names) :]:
        ax.set_visible(False)
    axes.ravel()[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def ablation_heatmap(frame: pd.DataFrame, findings: Sequence[str], configurations: Sequence[str]) -> Figure:
    """Finding x configuration: green where the finding holds, red where it fails, grey where not applicable; effect sizes written in."""
    from matplotlib.colors import ListedColormap

    status = np.full((len(findings), len(configurations)), np.nan)
    text = np.full(status.shape, "", dtype=object)
    for i, f in enumerate(findings):
        for j, c in enumerate(configurations):
            row = frame[(frame["finding"] == f) & (frame["mechanism"] == c)]
            if row.empty or row["holds"].isna().iloc[0]:
                text[i, j] = "n/a"
                continue
            status[i, j] = float(bool(row["holds"].iloc[0]))
            text[i, j] = f"{row['effect'].iloc[0]:+.2f}" + ("=" if row["same_screens"].iloc[0] else "")
    fig, ax = plt.subplots(figsize=(1.25 * len(configurations) + 4, 0.7 * len(findings) + 2.2))
    cmap = ListedColormap(["#e8a3a3", "#a3d9a5"])
    ax.imshow(np.ma.masked_invalid(status), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for i in range(len(findings)):
        for j in range(len(configurations)):
            ax.text(j, i, text[i, j], ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(configurations)), [c if j == 0 else f"− {c}" for j, c in enumerate(configurations)], rotation=35, ha="right")
    ax.set_yticks(range(len(findings)), findings)
    ax.set_facecolor("#eeeeee")
    ax.set_title("Does the finding hold? green = holds, red = fails, grey = n/a (numbers: effect size; '=' same screens as the defaults)")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    return fig
