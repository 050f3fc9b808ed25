"""Side-by-side statistics of real and simulated screens, and the realism checks of the presets.

Used by the book chapter "Simulated screens" (``notebooks/simulation.ipynb``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.canonical import CONTROL
from ..data.simulation.calibration import gene_statistics, recover_counts
from ..errors import DataError

if TYPE_CHECKING:
    from anndata import AnnData


def counts_of(adata: AnnData) -> sp.csr_matrix:
    """UMI counts of a screen: ``layers['counts']`` or, for log-normalised files, recovered from ``X``."""
    if "counts" in adata.layers:
        return sp.csr_matrix(adata.layers["counts"])
    return recover_counts(adata)


def count_statistics(adata: AnnData, perturbation: str = CONTROL) -> pd.DataFrame:
    """Per-gene UMI statistics of the cells of one perturbation (default: control).

    Columns ``mean``, ``variance``, ``fraction_zero`` and ``dispersion`` (method of moments with
    library-size offsets, see :func:`~.calibration.gene_statistics`), indexed by gene.
    """
    mask = adata.obs["perturbation"].astype(str).to_numpy() == perturbation
    if not mask.any():
        raise DataError(f"no cells of {perturbation!r}")
    counts = counts_of(adata)[np.flatnonzero(mask)]
    library = adata.obs["ncounts"].to_numpy()[mask] if "ncounts" in adata.obs else None
    stats = gene_statistics(counts, None, library)
    stats.index = adata.var_names.copy()
    return stats


def realism_summary(adata: AnnData, dataset: str, split_seed: int = 1, n_genes: int = 1000) -> pd.DataFrame:
    """Statistics that the published benchmarks report, computed on one screen.

    * ``systematic_variation``: Systema's score on all perturbations (estimated changes);
    * ``pearson_delta_vs_control`` of the mean baseline (average of the training profiles and
      the control, Ahlmann-Eltze et al.) on the test and validation singles of the GEARS
      simulation split (seed ``split_seed``), over the ``n_genes`` genes most expressed in control;
    * for screens with doubles, the same metric and ``l2`` of the additive baseline and of "no
      change" on the doubles of the double-perturbation split.

    Returns a tidy frame (``dataset, seed, model, perturbation, metric, value``) with one row per
    evaluated perturbation (``perturbation = "all"`` for the dataset-level score).
    """
    from ..data.genesets import top_expressed_genes
    from ..data.pseudobulk import changes, profiles
    from ..data.splits import double_perturbation_split, gears_simulation_split
    from ..metrics import l2, pearson_delta_vs_control, systematic_variation
    from ..models.baselines import Additive, MeanBaseline, NoChange
    from ..results import tidy

    rows = []
    score = systematic_variation(changes(adata)).score
    rows.append(
        pd.DataFrame(
            {
                "dataset": [dataset],
                "seed": [split_seed],
                "model": ["(data)"],
                "perturbation": ["all"],
                "metric": ["systematic_variation"],
                "value": [score],
            }
        )
    )
    genes = top_expressed_genes(adata, min(n_genes, adata.n_vars))
    prof = profiles(adata)
    control = prof.loc[CONTROL, genes]
    perts = adata.obs["perturbation"].astype(str)
    singles = sorted(p for p in perts.unique() if p != CONTROL and "+" not in p)
    split = gears_simulation_split(singles, seed=split_seed)
    train = adata[perts.isin(set(split.train) | {CONTROL}).to_numpy()]
    model = MeanBaseline(include_control=True).fit(train)
    evaluated = list(split.evaluated)
    pred = model.predict(evaluated)[genes]
    truth = prof.loc[evaluated, genes]
    rows.append(
        tidy(pearson_delta_vs_control(pred, truth, control), "pearson_delta_vs_control", dataset=dataset, seed=split_seed, model="mean")
    )
    doubles = sorted(p for p in perts.unique() if "+" in p)
    if len(doubles) >= 2:
        dsplit = double_perturbation_split(singles + doubles, seed=split_seed)
        dtrain = adata[perts.isin(set(dsplit.train) | {CONTROL}).to_numpy()]
        targets = list(dsplit.evaluated)
        dtruth = prof.loc[targets, genes]
        for name, m in (("additive", Additive()), ("no change", NoChange())):
            fitted = m.fit(dtrain)
            dpred = fitted.predict(targets)[genes]
            rows.append(tidy(l2(dpred, dtruth), "l2", dataset=dataset, seed=split_seed, model=name))
            if name != "no change":
                rows.append(
                    tidy(
                        pearson_delta_vs_control(dpred, dtruth, control),
                        "pearson_delta_vs_control",
                        dataset=dataset,
                        seed=split_seed,
                        model=name,
                    )
                )
    return pd.concat(rows, ignore_index=True)


#: Published values to compare with (Ahlmann-Eltze et al. 2025 and Systema): systematic variation (Systema) and
#: the mean baseline's PearsonΔ (Ahlmann-Eltze et al., test+val perturbations of two splits).
PUBLISHED = pd.DataFrame(
    [
        ("norman_like", "systematic_variation", 0.50, "Systema, Norman 2019"),
        ("adamson_like", "systematic_variation", 0.76, "Systema, Adamson 2016"),
        ("replogle_k562_like", "systematic_variation", 0.32, "Systema, Replogle K562"),
        ("replogle_rpe1_like", "systematic_variation", 0.56, "Systema, Replogle RPE1"),
        ("adamson_like", "pearson_delta_vs_control (mean)", 0.724, "Ahlmann-Eltze et al., Adamson"),
        ("replogle_k562_like", "pearson_delta_vs_control (mean)", 0.408, "Ahlmann-Eltze et al., K562"),
        ("replogle_rpe1_like", "pearson_delta_vs_control (mean)", 0.678, "Ahlmann-Eltze et al., RPE1"),
        ("norman_like", "pearson_delta_vs_control (additive, doubles)", 0.892, "Ahlmann-Eltze et al., Norman doubles"),
        ("norman_like", "l2 (additive, doubles)", 2.766, "Ahlmann-Eltze et al., Norman doubles"),
        ("norman_like", "l2 (no change, doubles)", 5.617, "Ahlmann-Eltze et al., Norman doubles"),
    ],
    columns=["dataset", "statistic", "published", "source"],
)


def summarise_realism(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean of :func:`realism_summary` rows per dataset and statistic, next to the published value."""
    frame = frame.copy()
    is_double = frame["perturbation"].str.contains(r"\+", regex=True)
    label = frame["metric"] + np.where(frame["model"] == "(data)", "", " (" + frame["model"] + np.where(is_double, ", doubles", "") + ")")
    frame["statistic"] = label
    out = frame.groupby(["dataset", "statistic"], sort=False)["value"].mean().rename("simulated").reset_index()
    return out.merge(PUBLISHED, on=["dataset", "statistic"], how="left")


def error_by_cells(
    adata: AnnData, cells: Iterable[int], control_ratio: float = 10.0, seed: int = 0, context: str | None = None
) -> pd.DataFrame:
    """RMS error of estimated changes against :func:`true_changes` when only ``n`` cells are used.

    For each ``n`` in ``cells``, ``n`` cells of every perturbation and ``control_ratio · n``
    control cells are drawn without replacement (seeded), and the RMS over perturbations and
    genes of ``Δ̂ − Δ`` is reported. Needs at least ``max(cells)`` cells per perturbation.
    """
    from ..data.pseudobulk import changes
    from ..data.simulate import true_changes

    truth = true_changes(adata, context)
    perts = adata.obs["perturbation"].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    order = {p: rng.permutation(np.flatnonzero(perts == p)) for p in [CONTROL, *truth.index]}
    rows = []
    for n in cells:
        n_ctrl = int(round(control_ratio * n))
        if len(order[CONTROL]) < n_ctrl or min(len(order[p]) for p in truth.index) < n:
            raise DataError(f"not enough cells for {n} per perturbation and {n_ctrl} controls")
        keep = np.concatenate([order[CONTROL][:n_ctrl]] + [order[p][:n] for p in truth.index])
        est = changes(adata[np.sort(keep)]).loc[truth.index, truth.columns]
        rows.append({"cells": n, "control_cells": n_ctrl, "rms_error": float(np.sqrt(((est - truth) ** 2).to_numpy().mean()))})
    return pd.DataFrame(rows)


def additivity_table(adata: AnnData, genes: Iterable[str] | None = None) -> pd.DataFrame:
    """Estimated and true deviation from additivity of every double, per gene.

    ``estimated = Δ̂_AB − Δ̂_A − Δ̂_B`` from the cells (pseudobulk changes), ``true`` the same
    from :func:`true_changes`; ``label`` from :func:`interaction_labels` (``"additive"`` for
    genes not listed). Doubles whose singles are not both in the screen are left out.
    """
    from ..data.pseudobulk import changes
    from ..data.simulate import interaction_labels, true_changes

    truth = true_changes(adata)
    est = changes(adata)
    genes = list(truth.columns) if genes is None else list(genes)
    doubles = [p for p in truth.index if "+" in p and all(g in est.index for g in p.split("+")) and p in est.index]
    frames = []
    for d in doubles:
        a, b = d.split("+")
        frames.append(
            pd.DataFrame(
                {
                    "perturbation": d,
                    "gene": genes,
                    "estimated": (est.loc[d, genes] - est.loc[a, genes] - est.loc[b, genes]).to_numpy(),
                    "true": (truth.loc[d, genes] - truth.loc[a, genes] - truth.loc[b, genes]).to_numpy(),
                }
            )
        )
    table = pd.concat(frames, ignore_index=True)
    labels = interaction_labels(adata)[["perturbation", "gene", "label", "source"]]
    table = table.merge(labels, on=["perturbation", "gene"], how="left")
    table["label"] = table["label"].fillna("additive")
    table["source"] = table["source"].fillna("")
    return table


# ---------------------------------------------------------------------------------------
# real against simulated: twins of the real subsets and the statistics they are compared on
# ---------------------------------------------------------------------------------------

#: The statistics of :func:`screen_statistics`, with what each distribution is made of.
STATISTICS = {
    "control mean": "per gene: mean UMIs per control cell",
    "zero fraction": "per gene: share of control cells without a UMI",
    "dispersion": "per gene with ≥ 0.05 UMIs per control cell: NB moment dispersion in control cells",
    "effect size": "per single perturbation: L2 norm over genes of its pseudobulk change from control",
    "DE genes": "per single perturbation: genes with Benjamini–Hochberg q < 0.05 (Welch t-test against control)",
    "double deviation": "per (double with both singles, gene with ≥ 0.05 UMIs per control cell): observed change minus the sum of the singles' changes",
}


def contexts_of(adata: AnnData) -> dict[str, AnnData]:
    """The cells of every context (``obs['context']``), or ``{"all": adata}`` for a one-context screen."""
    if "context" not in adata.obs or adata.obs["context"].nunique() <= 1:
        return {"all": adata}
    ctx = adata.obs["context"].astype(str)
    return {c: adata[(ctx == c).to_numpy()].copy() for c in sorted(ctx.unique())}


def twin_params(real: AnnData, base: object, calibration: object | None = None, biology_seed: int = 0, **overrides) -> object:
    """Parameters of a simulated screen shaped like the real one-context screen ``real``.

    The twin has ``real``'s numbers of genes, single and double perturbations, control cells and
    (median) cells per perturbation, and a count model fitted on ``real``'s cells
    (:func:`~helpers.data.simulation.calibration.calibrate`, unless ``calibration`` is given); the
    mechanisms (effects, programs, doubles) come from ``base`` (a :class:`SimulationParams`, e.g.
    a preset's), with ``overrides`` on top. Programs are scaled to the panel: ``n_genes // 50``
    programs of 20 genes (40 % of the panel, as in the presets). Doubles are pairs of the singles.
    The share of targets that are not in the panel is ``real``'s (most of the Norman subset's
    targets are not among its 500 genes).
    """
    from dataclasses import replace

    from ..data.simulation.calibration import calibrate
    from ..data.simulation.params import ContextParams

    perts = real.obs["perturbation"].astype(str)
    counts = perts.value_counts()
    names = [p for p in counts.index if p != CONTROL]
    n_doubles = sum("+" in p for p in names)
    n_singles = max(len(names) - n_doubles, 2 if n_doubles else 1)
    cal = calibrate(real) if calibration is None else calibration
    # as many targets outside the panel as in the real screen (the Norman subset measures few of its targets)
    targets = sorted({g for p in names for g in p.split("+")})
    unmeasured = float(np.mean([g not in set(real.var_names) for g in targets])) if targets else 0.0
    ctx = ContextParams(
        "twin",
        effect_scale=base.contexts[0].effect_scale,
        similarity=1.0,
        systematic_strength=base.contexts[0].systematic_strength,
        cells_per_perturbation=int(counts[names].median()),
        n_control_cells=int(counts.get(CONTROL, 0)),
    )
    params = replace(
        base,
        name=f"twin of {real.uns.get('name', 'a real screen')}",
        n_genes=int(real.n_vars),
        n_programs=max(2, int(real.n_vars) // 50),
        program_size=20,
        n_singles=n_singles,
        n_doubles=min(n_doubles, n_singles * (n_singles - 1) // 2),
        contexts=(ctx,),
        cells_cv=0.1,
        calibration=cal,
        biology_seed=int(biology_seed),
        focus_programs=None,
        target_unmeasured_share=unmeasured,
        target_program_share=min(base.target_program_share, 1.0 - unmeasured),
        unmeasured_member_share=max(base.unmeasured_member_share, 0.25 if unmeasured > 0.1 else 0.0),
    )
    return params.with_overrides(**overrides) if overrides else params


def screen_statistics(adata: AnnData) -> dict[str, np.ndarray]:
    """The distributions of :data:`STATISTICS` for one context of a screen (real or simulated).

    Every statistic is computed the same way from the cells, whatever their origin: counts
    from ``layers['counts']`` or recovered from ``X`` (:func:`counts_of`), changes from the
    log-normalised ``X`` (:func:`helpers.data.changes`).
    """
    from ..data.pseudobulk import changes
    from ..stats.de import benjamini_hochberg, welch_t_test

    stats = count_statistics(adata)
    expressed = stats["mean"] >= 0.05
    delta = changes(adata)
    singles = [p for p in delta.index if "+" not in p]
    doubles = [p for p in delta.index if "+" in p and all(s in delta.index for s in p.split("+"))]
    q = benjamini_hochberg(welch_t_test(adata).p.fillna(1.0))
    out = {
        "control mean": stats["mean"].to_numpy(),
        "zero fraction": stats["fraction_zero"].to_numpy(),
        "dispersion": stats.loc[expressed & (stats["dispersion"] > 0), "dispersion"].to_numpy(),
        "effect size": np.sqrt((delta.loc[singles] ** 2).sum(axis=1)).to_numpy(),
        "DE genes": (q.loc[singles] < 0.05).sum(axis=1).to_numpy().astype(float),
    }
    genes = delta.columns[expressed.to_numpy()]
    dev = [(delta.loc[d, genes] - delta.loc[d.split("+")[0], genes] - delta.loc[d.split("+")[1], genes]).to_numpy() for d in doubles]
    out["double deviation"] = np.concatenate(dev) if dev else np.array([])
    return out


def statistic_distances(real: dict[str, np.ndarray], simulated: dict[str, np.ndarray]) -> pd.DataFrame:
    """Kolmogorov–Smirnov distance ``sup_x |F_real(x) − F_sim(x)|`` of every statistic, with both medians.

    0 = the same distribution, 1 = disjoint. Statistics missing on either side (e.g. doubles of
    a screen without doubles) get NaN.
    """
    from scipy.stats import ks_2samp

    rows = []
    for name in STATISTICS:
        a, b = np.asarray(real.get(name, [])), np.asarray(simulated.get(name, []))
        ok = a.size > 0 and b.size > 0
        rows.append(
            {
                "statistic": name,
                "ks_distance": float(ks_2samp(a, b).statistic) if ok else np.nan,
                "real_median": float(np.median(a)) if a.size else np.nan,
                "simulated_median": float(np.median(b)) if b.size else np.nan,
                "n_real": int(a.size),
                "n_simulated": int(b.size),
            }
        )
    return pd.DataFrame(rows)


def compare_with_twins(
    real: AnnData, base: object, seeds: Iterable[int] = (0,), calibrations: dict | None = None, **overrides
) -> tuple[pd.DataFrame, dict, dict]:
    """Real-vs-simulated distances for every context of ``real``, a twin per context and seed.

    Returns ``(distances, real_stats, simulated_stats)``: tidy distances (``context, seed,
    statistic, ks_distance, real_median, simulated_median, n_real, n_simulated``) and the
    distributions (``{context: statistics}``; the simulated ones of the first seed) for plots.
    ``calibrations`` maps a context to its count-model fit (computed when missing).
    """
    from ..data.simulation.calibration import calibrate
    from ..data.simulation.generate import simulate_screen

    calibrations = dict(calibrations or {})
    rows, real_stats, sim_stats = [], {}, {}
    for ctx, cells in contexts_of(real).items():
        real_stats[ctx] = screen_statistics(cells)
        cal = calibrations.get(ctx) or calibrate(cells)
        calibrations[ctx] = cal
        for i, seed in enumerate(seeds):
            twin = simulate_screen(twin_params(cells, base, calibration=cal, biology_seed=int(seed), **overrides), seed=int(seed))
            stats = screen_statistics(twin)
            if i == 0:
                sim_stats[ctx] = stats
            rows.append(statistic_distances(real_stats[ctx], stats).assign(context=ctx, seed=int(seed)))
    frame = pd.concat(rows, ignore_index=True)
    return frame[["context", "seed"] + [c for c in frame.columns if c not in ("context", "seed")]], real_stats, sim_stats


#: Values tried for each mechanism parameter by :func:`fit_mechanisms` (``effect_scale`` is a nuisance:
#: fitted so that the shapes are compared at the right signal size, not carried over to the presets).
FIT_GRID = {
    "low_expression_share": (0.0, 0.2, 0.4, 0.6, 0.8, 0.85, 0.88, 0.91),
    "low_expression_floor": (1e-6, 1e-5, 1e-4, 1e-3),
    "response_log_sd": (0.5, 1.0, 1.5, 2.0),
    "dispersion_heterogeneity": (0.5, 0.75, 1.0, 1.25),
    "saturation_strength": (0.0, 0.5, 1.0),
    "gene_capacity": (0.25, 0.5, 1.0, 2.0),
    "effect_scale": (0.5, 0.75, 1.0, 1.5),
}


def fit_mechanisms(
    real: AnnData,
    base: object,
    grid: dict | None = None,
    seeds: Iterable[int] = (0, 1),
    rounds: int = 2,
    start: dict | None = None,
    progress: bool = True,
) -> tuple[dict, pd.DataFrame]:
    """Coordinate search for the mechanism values whose twins come closest to ``real``.

    The objective is the mean over statistics (and contexts and seeds) of the Kolmogorov–Smirnov
    distances of :func:`compare_with_twins`. Starting from ``start`` (default: ``base``'s values),
    each round tries every value of every parameter of ``grid`` (default :data:`FIT_GRID`; a
    parameter without doubles to inform it is skipped) with the others fixed and keeps the best.
    Returns ``(best, log)``: the chosen values and every evaluation (``round, parameter, value,
    objective``). Deterministic: the twins are seeded.
    """
    from ..console import progress_bar
    from ..data.simulation.calibration import calibrate

    grid = dict(FIT_GRID if grid is None else grid)
    has_doubles = any("+" in p for p in real.obs["perturbation"].astype(str).unique())
    if not has_doubles:
        grid = {k: v for k, v in grid.items() if k not in ("saturation_strength", "gene_capacity")}
    calibrations = {c: calibrate(cells) for c, cells in contexts_of(real).items()}

    def value_of(key: str) -> object:
        return getattr(base.contexts[0], key) if key == "effect_scale" else getattr(base, key)

    best = {k: (start or {}).get(k, value_of(k)) for k in grid}
    cache: dict = {}

    def objective(values: dict) -> float:
        key = tuple(sorted(values.items()))
        if key not in cache:
            d, _, _ = compare_with_twins(real, base, seeds=seeds, calibrations=calibrations, **values)
            cache[key] = float(d.groupby("statistic")["ks_distance"].mean().mean())
        return cache[key]

    log = []
    steps = [(r, k) for r in range(rounds) for k in grid]
    for r, k in progress_bar(steps, desc="fitting mechanisms", disable=not progress):
        scores = {}
        for v in grid[k]:
            trial = {**best, k: v}
            scores[v] = objective(trial)
            log.append({"round": r + 1, "parameter": k, "value": v, "objective": scores[v]})
        best[k] = min(scores, key=lambda v: (scores[v], grid[k].index(v)))
    return best, pd.DataFrame(log)


def twin_comparison(real_name: str, seeds: Iterable[int] = (0,)) -> tuple[pd.DataFrame, dict, dict, dict]:
    """Real subset ``real_name`` against its twins with the current mechanisms and with the first simulator's.

    The twins take the mechanisms of the preset :data:`~helpers.data.simulate.TWIN_PRESETS` names,
    with the subset's own panel (``low_expression_*`` of :data:`~helpers.data.simulate.TWIN_FITS`:
    how many of the panel's genes are barely expressed is a property of how the panel was chosen)
    and the fitted signal size (``effect_scale``, a nuisance). The "first simulator" twin has
    :data:`~helpers.data.simulate.LEGACY_MECHANISMS` and the same signal size.

    Returns ``(distances, real_stats, now_stats, legacy_stats)``: tidy distances with a ``version``
    column (``now`` / ``first simulator``) and the distributions of the first context.
    """
    from ..data.registry import load_dataset
    from ..data.simulate import LEGACY_MECHANISMS, PRESETS, TWIN_FITS, TWIN_PRESETS
    from ..data.simulation.calibration import calibrate

    real = load_dataset(real_name)
    base = PRESETS[TWIN_PRESETS[real_name]].params
    fit = TWIN_FITS[real_name]
    panel = {k: fit[k] for k in ("low_expression_share", "low_expression_floor", "effect_scale") if k in fit}
    calibrations = {c: calibrate(cells) for c, cells in contexts_of(real).items()}
    now, real_stats, now_stats = compare_with_twins(real, base, seeds=seeds, calibrations=calibrations, **panel)
    legacy_overrides = {**LEGACY_MECHANISMS, "effect_scale": panel.get("effect_scale", 1.0)}
    legacy, _, legacy_stats = compare_with_twins(real, base, seeds=seeds, calibrations=calibrations, **legacy_overrides)
    frame = pd.concat([now.assign(version="now"), legacy.assign(version="first simulator")], ignore_index=True)
    frame.insert(0, "dataset", real_name)
    first = next(iter(real_stats))
    return frame, real_stats[first], now_stats[first], legacy_stats[first]


def distance_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean Kolmogorov–Smirnov distance per statistic (over contexts and seeds), real subset x simulator version, with the mean row."""
    table = frame.groupby(["statistic", "dataset", "version"], sort=False)["ks_distance"].mean().unstack(["dataset", "version"])
    table = table.reindex([s for s in STATISTICS if s in table.index])
    table.loc["mean over statistics"] = table.mean()
    return table
