"""The Systema analysis: systematic variation, and what it does to the metrics.

Viñas Torné et al. (Nature Biotechnology 2025, "Systema"; METHODS.md B) showed that many
perturbations of a screen move the cells in one shared direction (*systematic variation*),
that a baseline predicting the average perturbed profile then scores well on PearsonΔ
against control, and that taking changes against the mean of the perturbed profiles
removes that advantage. This module holds the analysis steps of the book chapter
``notebooks/systema.ipynb``; the metrics themselves are in :mod:`helpers.metrics` and the
calibration controls of Miller et al. in :mod:`helpers.models.controls`.

* :func:`training_references` — control mean, perturbed mean (perturbation- and
  cell-weighted) from the training split;
* :func:`dataset_scores` — Systema's systematic-variation score of several screens;
* :func:`evaluate_models` — fit models on the training split and evaluate them with every
  metric on a common set of held-out perturbations (exclusions reported);
* :func:`seen_genes` — for doubles, how many constituent genes were seen as training singles;
* :func:`sweep` / :func:`sweep_summary` / :func:`sweep_correlation` — screens simulated at
  increasing systematic strength: the score against the mean baseline's PearsonΔ;
* :func:`rmse_matched_duplicate` / :func:`mode_collapse_results` — an informative
  prediction whose RMSE is matched to a mode-collapsed one (the mode-collapse demonstration);
* :func:`calibration_results` / :func:`drf_table` — metrics of the calibration controls
  and their dynamic range fraction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import optimize, stats

from .data.canonical import CONTROL, DataError, target_genes
from .data.genesets import de_scores
from .data.pseudobulk import changes, profiles, pseudobulk
from .data.splits import Split, gears_simulation_split
from .metrics import METRICS, de_gene_sets, deg_weights, dynamic_range_fraction, evaluate, systematic_variation
from .models.baselines import MatchingMean, MeanBaseline, NoChange
from .models.controls import miller_t_scores
from .progress import progress as progress_bar
from .results import tidy

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# screens and models of the chapter
# ---------------------------------------------------------------------------------------

def is_simulated(name) -> bool:
    """Whether ``name`` is a simulated preset of :mod:`helpers.data.simulate`."""
    from .data.simulate import PRESETS

    return str(name) in PRESETS


def load_screen(name_or_path, simulation_seed: int = 0, **kwargs):
    """Load a screen: simulated presets are generated with ``simulation_seed``, others read as they are."""
    from .data.registry import load_dataset

    if is_simulated(name_or_path):
        return load_dataset(name_or_path, seed=int(simulation_seed), **kwargs)
    return load_dataset(name_or_path, **kwargs)


def prepare_screen(adata, n_genes: int | None = None, context: str | None = None) -> tuple[object, list[str]]:
    """One context and (optionally) the ``n_genes`` genes most expressed in control.

    Returns the screen and the notes to print (which context was kept, how many genes):
    a screen with several cell lines is analysed one cell line at a time, as Systema does.
    """
    from .data.genesets import top_expressed_genes

    notes = []
    if "context" in adata.obs and adata.obs["context"].nunique() > 1:
        contexts = sorted(adata.obs["context"].astype(str).unique())
        if context is None:
            context = contexts[0]
            notes.append(f"The screen has {len(contexts)} cell lines ({', '.join(contexts)}); analysing {context} "
                         "(set the `context` parameter to choose another).")
        elif context not in contexts:
            raise DataError(f"context {context!r} is not in the screen; it has {contexts}.")
        adata = adata[(adata.obs["context"].astype(str) == context).to_numpy()].copy()
    elif context is not None and "context" in adata.obs and context not in set(adata.obs["context"].astype(str)):
        raise DataError(f"context {context!r} is not in the screen; it has {sorted(adata.obs['context'].astype(str).unique())}.")
    if n_genes is not None:
        if n_genes >= adata.n_vars:
            notes.append(f"n_genes = {n_genes} is not below the {adata.n_vars} genes of the screen; all genes are used.")
        else:
            genes = top_expressed_genes(adata, int(n_genes))
            adata = adata[:, genes].copy()
            notes.append(f"Evaluating on the {n_genes} genes most expressed in control cells.")
    return adata, notes


#: Baselines the chapter can run, by result-table name.
BASELINES = {
    "mean (cells)": lambda: MeanBaseline("cell"),
    "mean": lambda: MeanBaseline("perturbation"),
    "matching mean": MatchingMean,
    "no change": NoChange,
}


def make_models(names: Sequence[str], predictions=None, predictions_name: str | None = None) -> dict[str, object]:
    """Fresh, unfitted models by name (:data:`BASELINES`), plus a bring-your-own predictions file.

    ``predictions`` is a path to a file read by :class:`helpers.models.external.PredictionsFile`;
    its model name is ``predictions_name`` or the file's stem.
    """
    from pathlib import Path

    from .models.external import PredictionsFile

    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise DataError(f"unknown models {unknown}; this chapter runs {list(BASELINES)} (and a predictions file).")
    out = {name: BASELINES[name]() for name in names}
    if predictions is not None:
        name = predictions_name or Path(predictions).stem
        if name in out:
            raise DataError(f"the predictions file's model name {name!r} clashes with a baseline; set predictions_name.")
        out[name] = PredictionsFile(predictions, name=name)
    return out


# ---------------------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------------------

@dataclass
class References:
    """Reference profiles computed on the training split (Systema computes them per seed).

    ``control``: mean of the control cells; ``perturbed_mean``: average of the training
    perturbations' centroids (Systema's ``pert_mean``, perturbation-weighted);
    ``cell_weighted_mean``: mean of all perturbed training cells (what Systema's
    non-control-mean baseline predicts); ``train_profiles`` and ``n_cells`` per training
    perturbation.
    """

    control: pd.Series
    perturbed_mean: pd.Series
    cell_weighted_mean: pd.Series
    train_profiles: pd.DataFrame
    n_cells: pd.Series


def training_references(adata, split: Split) -> References:
    """Control mean, perturbed mean and cell-weighted perturbed mean of the training split.

    .. math::

        \\bar x_{pert} = \\frac{1}{|T|}\\sum_{p \\in T} \\bar x_p, \\qquad
        \\bar x_{cells} = \\frac{\\sum_{p \\in T} n_p \\bar x_p}{\\sum_{p \\in T} n_p}
    """
    train = split.subset(adata, "train")
    pb = pseudobulk(train)
    table = pd.DataFrame(pb.X, index=pb.obs_names.copy(), columns=pb.var_names.copy())
    if CONTROL not in table.index:
        raise DataError("the training split has no control cells.")
    perts = table.drop(index=CONTROL)
    if perts.empty:
        raise DataError("the training split has no perturbations.")
    n = pb.obs["n_cells"].drop(index=CONTROL).astype(float)
    w = n.reindex(perts.index).to_numpy()
    return References(
        control=table.loc[CONTROL].rename("control"),
        perturbed_mean=pd.Series(perts.to_numpy().mean(axis=0), index=perts.columns.copy(), name="perturbed_mean"),
        cell_weighted_mean=pd.Series(w @ perts.to_numpy() / w.sum(), index=perts.columns.copy(), name="cell_weighted_mean"),
        train_profiles=perts,
        n_cells=n,
    )


# ---------------------------------------------------------------------------------------
# systematic variation of screens
# ---------------------------------------------------------------------------------------

def dataset_scores(datasets: Mapping[str, object], singles_only: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Systema's systematic-variation score of each screen (all perturbations, as Systema).

    Parameters
    ----------
    datasets
        Name -> canonical screen of cells.
    singles_only
        Score the single perturbations only (default: all perturbations, as Systema's
        ``compute_shift_similarities`` on the whole object).

    Returns
    -------
    (scores, cosines)
        ``scores``: one row per dataset with ``systematic_variation`` (mean cosine),
        ``median_cosine``, ``n_perturbations``, ``n_undefined`` (zero changes);
        ``cosines``: tidy ``dataset, perturbation, cosine`` per perturbation.
    """
    rows, long = [], []
    for name, adata in datasets.items():
        delta = changes(adata)
        if singles_only:
            delta = delta.loc[[p for p in delta.index if len(target_genes(p)) == 1]]
        result = systematic_variation(delta)
        cos = result.cosines
        rows.append(
            {"dataset": name, "systematic_variation": result.score, "median_cosine": float(cos.median()),
             "n_perturbations": int(cos.notna().sum()), "n_undefined": int(cos.isna().sum())}
        )
        long.append(pd.DataFrame({"dataset": name, "perturbation": cos.index.astype(str), "cosine": cos.to_numpy()}))
    return pd.DataFrame(rows), pd.concat(long, ignore_index=True)


def shift_decomposition(delta: pd.DataFrame) -> pd.DataFrame:
    """Split each change into its part along the average shift and the rest.

    With :math:`u = \\bar\\Delta / \\lVert\\bar\\Delta\\rVert` (the unit average shift):
    ``along`` = :math:`\\Delta_p \\cdot u`, ``orthogonal`` = :math:`\\lVert \\Delta_p - (\\Delta_p \\cdot u) u \\rVert`,
    ``cosine`` = :math:`\\cos(\\Delta_p, \\bar\\Delta)`. A screen with strong systematic
    variation has most points far along and close to the axis.
    """
    D = delta.to_numpy(dtype=np.float64)
    mean = D.mean(axis=0)
    norm = np.linalg.norm(mean)
    if norm == 0:
        raise DataError("the average change is zero; there is no shared direction to decompose along.")
    u = mean / norm
    along = D @ u
    orth = np.linalg.norm(D - np.outer(along, u), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = along / np.linalg.norm(D, axis=1)
    return pd.DataFrame({"along": along, "orthogonal": orth, "cosine": cos}, index=delta.index.copy())


# ---------------------------------------------------------------------------------------
# evaluation of models on a split
# ---------------------------------------------------------------------------------------

#: Where the t statistics behind the DEG weights of the weighted metrics come from.
DEG_WEIGHTS = {
    "miller": "Miller et al.: scanpy's t-test_overestim_var of each perturbation's ground-truth cells against all "
    "other cells of the screen (helpers.models.controls.miller_t_scores)",
    "control": "Welch t of each perturbation's ground-truth cells against the control cells (helpers.data.de_scores)",
}


def deg_t_scores(adata, perturbations: Sequence[str], source: str = "miller") -> pd.DataFrame:
    """t statistics for :func:`helpers.metrics.deg_weights`, from ``source`` (:data:`DEG_WEIGHTS`).

    ``adata`` holds the ground-truth cells of ``perturbations`` and the rest of the screen.
    Against control, the shift every perturbation shares counts as differential expression,
    so under strong systematic variation the weights concentrate on the shared genes,
    where the mean baseline is already right; against the rest it cancels.
    """
    perturbations = list(perturbations)
    if source == "miller":
        return miller_t_scores(adata, perturbations)
    if source == "control":
        return de_scores(adata).loc[perturbations]
    raise ValueError(f"DEG weight source must be one of {sorted(DEG_WEIGHTS)}, not {source!r}")


@dataclass
class Evaluation:
    """Result of :func:`evaluate_models`.

    ``per_perturbation``: model name -> :func:`helpers.metrics.evaluate` table on the common
    perturbations; ``excluded``: model name -> {perturbation: reason} of what it could not
    predict; ``common``: the perturbations every model was evaluated on; ``references``.
    """

    per_perturbation: dict[str, pd.DataFrame]
    excluded: dict[str, dict[str, str]]
    common: list[str]
    references: References
    predictions: dict[str, pd.DataFrame] = field(default_factory=dict)

    def tidy(self, **labels) -> pd.DataFrame:
        """All models' values as tidy rows (``model`` column added, plus ``labels``)."""
        frames = [tidy(table, **labels, model=name) for name, table in self.per_perturbation.items()]
        return pd.concat(frames, ignore_index=True)

    def exclusion_report(self, width: int = 100) -> str:
        """Which perturbations were left out, by which model and why (one line if none; wrapped at ``width``)."""
        import textwrap

        lines = []
        for name, bad in self.excluded.items():
            if bad:
                shown = "; ".join(f"{p} ({why})" for p, why in list(bad.items())[:5])
                text = f"{name} cannot predict {len(bad)}: {shown}{' ...' if len(bad) > 5 else ''}"
                lines.append(textwrap.fill(text, width=width, subsequent_indent="    "))
        head = f"Evaluated on {len(self.common)} perturbations that every model predicts."
        return head if not lines else head + "\n" + "\n".join(lines)


def evaluate_models(
    adata,
    split: Split,
    models: Mapping[str, object],
    perturbations: Sequence[str],
    de_source: str = "all",
    metrics: Sequence[str] | None = None,
    keep_predictions: bool = False,
    weights: str = "miller",
) -> Evaluation:
    """Fit each model on the training split and evaluate it on held-out perturbations.

    Every model is fitted on the training cells (with control) of ``split``, asked which of
    ``perturbations`` it cannot predict (:meth:`unpredictable`), and evaluated with
    :func:`helpers.metrics.evaluate` on the perturbations that **every** model predicts
    (ranking metrics such as centroid accuracy depend on the set, so models are compared
    on one set). Ground truth: the profiles of all cells of each evaluated perturbation.
    References: :func:`training_references`. DEG weights of the weighted metrics:
    :func:`helpers.metrics.deg_weights` of the t statistics named by ``weights`` (see
    :func:`deg_t_scores`). Top-20 DE genes: :func:`helpers.metrics.de_gene_sets` with
    ``de_source``.

    Parameters
    ----------
    models
        Model name -> unfitted model with ``fit(train)``, ``predict(perts)`` and
        ``unpredictable(perts)``.
    perturbations
        Held-out perturbations to evaluate (e.g. the 1-gene test perturbations).
    de_source
        ``"all"`` (GEARS/Systema: each perturbation's own top-20 DE genes, chosen on its
        observed cells) or ``"train"`` (one set from the training perturbations).
    weights
        ``"miller"`` or ``"control"``, see :data:`DEG_WEIGHTS`.
    """
    perturbations = [str(p) for p in perturbations]
    if not perturbations:
        raise DataError("no perturbations to evaluate.")
    if not models:
        raise DataError("no models to evaluate: name at least one baseline (the `models` parameter) or give a predictions file.")
    held_out = set(split.val) | set(split.test)
    leaked = [p for p in perturbations if p not in held_out]
    if leaked:
        raise DataError(f"{len(leaked)} evaluated perturbations are not held out by the split (e.g. {leaked[:5]}).")
    refs = training_references(adata, split)
    train = split.subset(adata, "train")
    fitted, excluded = {}, {}
    for name, model in models.items():
        fitted[name] = model.fit(train)
        excluded[name] = dict(fitted[name].unpredictable(perturbations))
    common = [p for p in perturbations if not any(p in bad for bad in excluded.values())]
    if len(common) < 2:
        report = Evaluation({}, excluded, common, None).exclusion_report()
        raise DataError(
            f"only {len(common)} of the {len(perturbations)} perturbations are predicted by every model, too few to compare. "
            f"{report} Leave out the model that cannot predict them (the `models` parameter), or supply predictions for "
            "these perturbations."
        )
    cells = adata[adata.obs["perturbation"].astype(str).isin(set(common) | {CONTROL}).to_numpy()]
    truth = profiles(cells, include_control=False).loc[common]
    # side inputs only when a requested metric needs them (all of them by default)
    needed = {k for m in (metrics or METRICS) if m in METRICS for k in METRICS[m].needs}
    weight_table = deg_weights(deg_t_scores(adata, common, weights)) if "deg_weights" in needed else None
    de_genes = de_gene_sets(adata, common, source=de_source, train_perturbations=split.train) if "de_genes" in needed else None
    per_pert, predictions = {}, {}
    for name, model in fitted.items():
        pred = model.predict(common)
        per_pert[name] = evaluate(pred, truth, refs.control, refs.perturbed_mean, de_genes=de_genes, deg_weights=weight_table,
                                  metrics=metrics)
        if keep_predictions:
            predictions[name] = pred
    if keep_predictions:
        predictions["truth"] = truth
    return Evaluation(per_pert, excluded, common, refs, predictions)


def seen_genes(perturbations: Iterable[str], train: Iterable[str]) -> pd.Series:
    """Number of each perturbation's target genes that were seen as a training single.

    Systema's ``n_train`` for the Norman doubles (0, 1 or 2).
    """
    seen = {p for p in train if len(target_genes(p)) == 1}
    perts = list(perturbations)
    return pd.Series([sum(g in seen for g in target_genes(p)) for p in perts], index=pd.Index(perts, name="perturbation"), name="seen_genes")


# ---------------------------------------------------------------------------------------
# the systematic-strength sweep
# ---------------------------------------------------------------------------------------

#: Metrics of the sweep.
SWEEP_METRICS = ("pearson_delta_vs_control", "pearson_delta_vs_perturbed_mean", "rmse")


def sweep(
    strengths: Sequence[float],
    simulate: Callable[[float], object],
    seeds: Sequence[int],
    models: Callable[[], Mapping[str, object]],
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate one screen per systematic strength and evaluate the mean baselines on it.

    For every strength ``s``: ``adata = simulate(s)``; its systematic-variation score
    (all perturbations); then for every split seed the GEARS simulation split, and the
    models evaluated on the 1-gene test perturbations with :data:`SWEEP_METRICS`.

    Parameters
    ----------
    strengths
        Values of the simulator's systematic-strength knob.
    simulate
        ``strength -> canonical screen`` (seeded inside; same strength, same screen).
    seeds
        Split seeds.
    models
        Factory returning fresh ``name -> model`` (e.g. the two mean baselines).

    Returns
    -------
    (screens, per_perturbation)
        ``screens``: one row per strength (``systematic_strength``, ``systematic_variation``,
        ``n_perturbations``); ``per_perturbation``: tidy rows with ``systematic_strength``,
        ``seed``, ``model``, ``perturbation``, ``metric``, ``value``.
    """
    screens, frames = [], []
    for s in progress_bar(list(strengths), desc="systematic strengths", disable=not progress):
        adata = simulate(float(s))
        scores, _ = dataset_scores({"screen": adata})
        screens.append({"systematic_strength": float(s), "systematic_variation": float(scores["systematic_variation"].iloc[0]),
                        "n_perturbations": int(scores["n_perturbations"].iloc[0])})
        singles = [p for p in adata.obs["perturbation"].astype(str).unique() if len(target_genes(p)) == 1]
        for seed in seeds:
            split = gears_simulation_split(singles, seed=int(seed))
            result = evaluate_models(adata, split, models(), list(split.test), metrics=SWEEP_METRICS)
            frame = result.tidy(seed=int(seed))
            frame.insert(0, "systematic_strength", float(s))
            frames.append(frame)
    return pd.DataFrame(screens), pd.concat(frames, ignore_index=True)


def sweep_summary(screens: pd.DataFrame, per_perturbation: pd.DataFrame) -> pd.DataFrame:
    """Mean over perturbations, then over seeds, per strength, model and metric, beside the score."""
    per_seed = (
        per_perturbation.groupby(["systematic_strength", "model", "metric", "seed"], sort=True)["value"]
        .agg(value="mean", n_undefined=lambda v: int(v.isna().sum()), n="size")
        .reset_index()
    )
    out = per_seed.groupby(["systematic_strength", "model", "metric"], sort=True).agg(
        value=("value", "mean"), n_undefined=("n_undefined", "sum"), n=("n", "sum")
    ).reset_index()
    return out.merge(screens, on="systematic_strength", how="left")


def sweep_correlation(summary: pd.DataFrame, model: str, metric: str = "pearson_delta_vs_control") -> dict:
    """Pearson correlation across screens of the systematic-variation score and a model's mean metric.

    The counterpart of Systema's r = 0.97 (across 10 real datasets, method-averaged PearsonΔ).
    Returns ``{"r", "p_value", "n_screens"}``; r is NaN with fewer than 3 screens.
    """
    rows = summary[(summary["model"] == model) & (summary["metric"] == metric)].dropna(subset=["value"])
    if rows.empty:
        raise DataError(f"no sweep values for model {model!r} and metric {metric!r}.")
    x, y = rows["systematic_variation"].to_numpy(), rows["value"].to_numpy()
    if len(rows) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"r": float("nan"), "p_value": float("nan"), "n_screens": len(rows)}
    r, p = stats.pearsonr(x, y)
    return {"r": float(r), "p_value": float(p), "n_screens": len(rows)}


# ---------------------------------------------------------------------------------------
# mode collapse
# ---------------------------------------------------------------------------------------

def noisy_duplicate(duplicate: pd.DataFrame, truth: pd.DataFrame, target_rmse: float, seed: int) -> tuple[pd.DataFrame, float]:
    """A good prediction made worse with noise until its mean RMSE equals ``target_rmse``.

    ``duplicate + σ Z`` with :math:`Z_{pg} \\sim N(0, 1)` (seeded) and :math:`\\sigma \\ge 0`
    solved so that :math:`\\frac1N\\sum_p \\mathrm{RMSE}_p = ` ``target_rmse``. The noise is
    independent of the perturbation, so the prediction still points at the right
    perturbation: RMSE cannot tell it from a mode-collapsed prediction with the same RMSE,
    ranking metrics can. If the duplicate's RMSE already exceeds the target, σ = 0.

    Returns
    -------
    (prediction, sigma)
    """
    P = duplicate.reindex(index=truth.index, columns=truth.columns).to_numpy(dtype=np.float64)
    T = truth.to_numpy(dtype=np.float64)
    if not np.isfinite(P).all():
        raise DataError("duplicate does not cover the perturbations and genes of truth.")
    Z = np.random.default_rng(int(seed)).standard_normal(T.shape)
    E = P - T

    def mean_rmse(sigma: float) -> float:
        return float(np.sqrt(((E + sigma * Z) ** 2).mean(axis=1)).mean())

    if mean_rmse(0.0) >= target_rmse:
        sigma = 0.0
    else:
        hi = max(target_rmse, 1e-12)
        while mean_rmse(hi) < target_rmse:
            hi *= 2.0
        sigma = float(optimize.brentq(lambda s: mean_rmse(s) - target_rmse, 0.0, hi, xtol=1e-12, rtol=1e-12))
    return pd.DataFrame(P + sigma * Z, index=truth.index.copy(), columns=truth.columns.copy()), sigma


class RMSEMatched(NamedTuple):
    """Result of :func:`rmse_matched_duplicate`."""

    prediction: pd.DataFrame
    method: str  # "noise", "shrinkage" or "none"
    parameter: float  # σ of the noise, or the shrinkage factor λ
    target: float  # mean RMSE of the collapsed prediction

    def describe(self) -> str:
        if self.method == "noise":
            return f"the technical duplicate plus Gaussian noise of SD {self.parameter:.3g}"
        if self.method == "shrinkage":
            return (f"the collapsed prediction plus {self.parameter:.2f} x (technical duplicate − collapsed prediction): "
                    "the duplicate is noisier than the collapsed prediction here, so it is shrunk towards it")
        return "the technical duplicate unchanged (its RMSE could not be matched)"


def _shrink_to_rmse(duplicate: np.ndarray, collapsed: np.ndarray, truth: np.ndarray, target: float) -> float | None:
    """Largest λ in (0, 1] with mean RMSE of ``collapsed + λ (duplicate − collapsed)`` equal to ``target``."""
    D = duplicate - collapsed
    E = collapsed - truth

    def excess(lam: float) -> float:
        return float(np.sqrt(((E + lam * D) ** 2).mean(axis=1)).mean()) - target

    best = optimize.minimize_scalar(excess, bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-10})
    if excess(best.x) >= -1e-12 * max(target, 1e-300) or excess(1.0) < 0:
        return None
    return float(optimize.brentq(excess, best.x, 1.0, xtol=1e-12, rtol=1e-12))


def rmse_matched_duplicate(duplicate: pd.DataFrame, collapsed: pd.DataFrame, truth: pd.DataFrame, seed: int) -> RMSEMatched:
    """An informative prediction with the same mean RMSE as a collapsed one.

    Target: :math:`\\frac1N\\sum_p \\mathrm{RMSE}_p` of ``collapsed``. If the technical
    duplicate is closer than that, it is made worse with noise (:func:`noisy_duplicate`).
    If it is farther (few cells per half: its sampling noise exceeds the collapsed
    prediction's error), it is shrunk towards the collapsed prediction,
    :math:`\\hat x = c + \\lambda (d - c)` with the largest :math:`\\lambda \\in (0, 1]` that
    matches the target (RMSE is convex in :math:`\\lambda` and equals the target at 0). Either
    way the result keeps the duplicate's perturbation-specific information.
    """
    from .metrics import rmse

    target = float(rmse(collapsed, truth).mean())
    if float(rmse(duplicate, truth).mean()) < target:
        pred, sigma = noisy_duplicate(duplicate, truth, target, seed)
        return RMSEMatched(pred, "noise", sigma, target)
    cols, rows = truth.columns, truth.index
    lam = _shrink_to_rmse(
        duplicate.reindex(index=rows, columns=cols).to_numpy(dtype=np.float64),
        collapsed.reindex(index=rows, columns=cols).to_numpy(dtype=np.float64),
        truth.to_numpy(dtype=np.float64),
        target,
    )
    if lam is None:
        logger.warning("rmse_matched_duplicate: the duplicate cannot be brought to the collapsed prediction's RMSE.")
        return RMSEMatched(duplicate.reindex(index=rows, columns=cols).copy(), "none", float("nan"), target)
    c = collapsed.reindex(index=rows, columns=cols)
    pred = c + lam * (duplicate.reindex(index=rows, columns=cols) - c)
    return RMSEMatched(pred, "shrinkage", lam, target)


#: Metrics of the mode-collapse demonstration.
MODE_COLLAPSE_METRICS = (
    "rmse",
    "rank_rmse",
    "centroid_accuracy",
    "rank_cosine_delta_vs_control",
    "discrimination_score_l1_vs_control",
    "pearson_delta_vs_control",
    "pearson_delta_vs_perturbed_mean",
)
MATCHED_DUPLICATE = "duplicate (RMSE-matched)"


def mode_collapse_results(controls, seed: int, collapsed: str = "mean", metrics: Sequence[str] = MODE_COLLAPSE_METRICS) -> tuple[pd.DataFrame, RMSEMatched]:
    """A mode-collapsed prediction against two informative ones, on the calibration ground truth.

    Predictors: ``collapsed`` (default the mean baseline: one profile for every perturbation),
    the technical duplicate, and :func:`rmse_matched_duplicate` (named
    :data:`MATCHED_DUPLICATE`; noise seeded with ``seed``). Ground truth: the first halves of
    ``controls`` (:func:`helpers.models.controls.calibration_controls`).

    Returns
    -------
    (tidy rows ``model, perturbation, metric, value``, the :class:`RMSEMatched` used)
    """
    truth = controls.truth
    flat = controls.predictions[collapsed]
    duplicate = controls.predictions["technical duplicate"]
    matched = rmse_matched_duplicate(duplicate, flat, truth, seed)
    frames = []
    for name, pred in ((collapsed, flat), ("technical duplicate", duplicate), (MATCHED_DUPLICATE, matched.prediction)):
        table = evaluate(pred, truth, controls.control, controls.perturbed_mean, metrics=list(metrics))
        frames.append(tidy(table, model=name))
    return pd.concat(frames, ignore_index=True), matched


# ---------------------------------------------------------------------------------------
# calibration (Miller et al.)
# ---------------------------------------------------------------------------------------

def negative_control_of(metric: str) -> str:
    """Negative control of a metric's dynamic range fraction (Miller et al.).

    The mean baseline, except for PearsonΔ against the perturbed mean, where the mean
    baseline's predicted change is exactly zero (Pearson undefined): there the control
    ("no change") baseline is the negative control.
    """
    if metric.startswith("pearson_delta") and metric.endswith("_vs_perturbed_mean"):
        return "no change"
    return "mean"


def calibration_results(
    controls,
    de_genes: Mapping[str, Sequence[str]] | None = None,
    weights: str = "miller",
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Every metric of the four calibration controls, tidy (``model, perturbation, metric, value``).

    ``controls`` is a :class:`helpers.models.controls.CalibrationControls`. The ground truth
    is the first halves. DEG weights: ``weights="miller"`` uses ``controls.miller_t_scores``
    (Miller et al.'s test against the rest), ``"control"`` the Welch t against control
    (``controls.t_scores``). The top-20 DE genes are ``de_genes`` or, by default, each
    perturbation's own top 20 on its first-half cells (GEARS style,
    ``de_gene_sets(..., source="all")``); for the training-only choice pass
    ``de_gene_sets(adata, perts, source="train", train_perturbations=split.train)``.
    """
    perts = list(controls.truth.index)
    if weights not in DEG_WEIGHTS:
        raise ValueError(f"weights must be one of {sorted(DEG_WEIGHTS)}, not {weights!r}")
    needed = {k for m in (metrics or METRICS) if m in METRICS for k in METRICS[m].needs}
    if de_genes is None and "de_genes" in needed:
        de_genes = de_gene_sets(controls.halves.first, perts, source="all")
    t = controls.miller_t_scores if weights == "miller" else controls.t_scores.where(np.isfinite(controls.t_scores), 0.0)
    weight_table = deg_weights(t.loc[perts])
    frames = []
    for name, pred in controls.predictions.items():
        table = evaluate(pred, controls.truth, controls.control, controls.perturbed_mean, de_genes=de_genes,
                         deg_weights=weight_table, metrics=metrics)
        frames.append(tidy(table, model=name))
    return pd.concat(frames, ignore_index=True)


#: DRF cut-offs of this suite's calibration verdicts (Miller et al. show DRF distributions
#: without a fixed cut-off): at least 0.5 = well calibrated, below 0.2 = poorly calibrated.
WELL_CALIBRATED = 0.5
POORLY_CALIBRATED = 0.2


def verdict(drf: float) -> str:
    """``well``, ``partly`` or ``poorly`` calibrated for a median DRF (NaN -> ``undefined``)."""
    if not np.isfinite(drf):
        return "undefined"
    if drf >= WELL_CALIBRATED:
        return "well"
    if drf < POORLY_CALIBRATED:
        return "poorly"
    return "partly"


def drf_table(results: pd.DataFrame, positives: Sequence[str] = ("technical duplicate", "interpolated duplicate")) -> pd.DataFrame:
    """Median dynamic range fraction of every metric, for each positive control.

    ``results`` are tidy rows ``model, perturbation, metric, value`` (optionally with
    ``seed``; DRF is computed per perturbation and seed and the median taken over all),
    holding the positive controls and the negative controls ``mean`` and ``no change``.
    The negative control of each metric is :func:`negative_control_of`; direction and
    perfect value come from :data:`helpers.metrics.METRICS`.

    Returns
    -------
    DataFrame
        Index ``metric``; columns ``reference``, ``higher_is_better``, ``negative_control``,
        ``drf_<positive>`` (median), ``n_<positive>`` (defined values), and ``calibration``
        (:func:`verdict` of the technical duplicate's DRF).
    """
    keys = [c for c in ("seed", "perturbation") if c in results.columns]
    rows = []
    for metric in [m for m in METRICS if m in set(results["metric"])]:
        info = METRICS[metric]
        neg_name = negative_control_of(metric)
        sub = results[results["metric"] == metric]
        wide = sub.pivot_table(index=keys, columns="model", values="value", aggfunc="first", dropna=False)
        row = {"metric": metric, "reference": info.reference or "none", "higher_is_better": info.higher_is_better,
               "negative_control": neg_name}
        for pos in positives:
            if pos not in wide or neg_name not in wide:
                raise DataError(f"drf_table needs rows of {pos!r} and {neg_name!r} for {metric}.")
            idx = pd.Index(["|".join(map(str, k)) if isinstance(k, tuple) else str(k) for k in wide.index])
            drf = dynamic_range_fraction(
                pd.Series(wide[pos].to_numpy(), index=idx), pd.Series(wide[neg_name].to_numpy(), index=idx), metric
            )
            row[f"drf_{pos}"] = drf.median
            row[f"n_{pos}"] = int(drf.values.notna().sum())
        row["calibration"] = verdict(row[f"drf_{positives[0]}"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("metric")
