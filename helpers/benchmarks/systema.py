"""The Systema analysis: systematic variation, and what it does to the metrics.

Viñas Torné et al. (Nature Biotechnology 2025, "Systema") showed that many
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
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from ..console import progress_bar
from ..data.canonical import CONTROL, target_genes
from ..data.pseudobulk import changes, profiles
from ..data.splits import Split, gears_simulation_split
from ..errors import DataError
from ..metrics import METRICS, References, de_gene_sets, deg_weights, evaluate, systematic_variation, training_references
from ..metrics.calibration import (
    POORLY_CALIBRATED,
    WELL_CALIBRATED,
    RMSEMatched,
    calibration_results,
    drf_table,
    rmse_matched_duplicate,
)
from ..metrics.genes import DEG_WEIGHTS, deg_t_scores
from ..models.controls import MEAN
from ..models.registry import build_model, build_models, check_model_names
from ..params import SEED_MAX, Param, Schema
from ..published import systema as published_systema
from ..results import summarise, tidy
from .engine import Evaluation, TrainingData, run_models

if TYPE_CHECKING:
    from anndata import AnnData

    from ..models.base import PerturbationModel
    from ..models.controls import CalibrationControls

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# screens and models of the chapter
# ---------------------------------------------------------------------------------------


def is_simulated(name: str | Path) -> bool:
    """Whether ``name`` is a simulated preset of :mod:`helpers.data.simulate`."""
    from ..data.simulate import PRESETS

    return str(name) in PRESETS


def load_screen(name_or_path: str | Path, simulation_seed: int = 0, **kwargs) -> AnnData:
    """Load a screen: simulated presets are generated with ``simulation_seed``, others read as they are."""
    from ..data.registry import load_dataset

    if is_simulated(name_or_path):
        return load_dataset(name_or_path, seed=int(simulation_seed), **kwargs)
    return load_dataset(name_or_path, **kwargs)


def prepare_screen(adata: AnnData, n_genes: int | None = None, context: str | None = None) -> tuple[AnnData, list[str]]:
    """One context and (optionally) the ``n_genes`` genes most expressed in control.

    Returns the screen and the notes to print (which context was kept, how many genes):
    a screen with several cell lines is analysed one cell line at a time, as Systema does.
    """
    from ..data.genesets import top_expressed_genes

    notes = []
    if "context" in adata.obs and adata.obs["context"].nunique() > 1:
        contexts = sorted(adata.obs["context"].astype(str).unique())
        if context is None:
            context = contexts[0]
            notes.append(
                f"The screen has {len(contexts)} cell lines ({', '.join(contexts)}); analysing {context} "
                "(set the `context` parameter to choose another)."
            )
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


#: Registry models the chapter can run.
MODELS = ("mean (cells)", "mean (perturbations)", "mean", "matching mean", "no change")


def make_models(
    names: Sequence[str], predictions: str | Path | None = None, predictions_name: str | None = None
) -> dict[str, PerturbationModel]:
    """Fresh, unfitted models from the registry (:data:`MODELS`), plus a bring-your-own predictions file.

    ``predictions`` is a path to a file read by :class:`helpers.models.external.PredictionsFile`;
    its model name is ``predictions_name`` or the file's stem.
    """
    out = build_models(check_model_names(names, MODELS))
    if predictions is not None:
        name = predictions_name or Path(str(predictions)).stem
        if name in out:
            raise DataError(f"the predictions file's model name {name!r} clashes with a baseline; set predictions_name.")
        out[name] = build_model("predictions file", path=predictions, name=name)
    return out


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
            {
                "dataset": name,
                "systematic_variation": result.score,
                "median_cosine": float(cos.median()),
                "n_perturbations": int(cos.notna().sum()),
                "n_undefined": int(cos.isna().sum()),
            }
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


@dataclass
class SplitEvaluation:
    """Result of :func:`evaluate_models`.

    ``per_perturbation``: model name -> :func:`helpers.metrics.evaluate` table on the common
    perturbations; ``engine``: the engine's :class:`helpers.benchmarks.engine.Evaluation`
    (exclusions with reasons, failures, fit log); ``common``: the perturbations every model
    was evaluated on; ``references``; ``predictions`` (with ``keep_predictions``).
    """

    per_perturbation: dict[str, pd.DataFrame]
    engine: Evaluation
    references: References
    predictions: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def common(self) -> list[str]:
        return self.engine.common

    def tidy(self, **labels) -> pd.DataFrame:
        """All models' values as tidy rows (``model`` column added, plus ``labels``)."""
        frames = [tidy(table, **labels, model=name) for name, table in self.per_perturbation.items()]
        return pd.concat(frames, ignore_index=True)

    def exclusion_report(self, width: int = 100) -> str:
        """Which perturbations were left out, by which model and why, and which models failed (wrapped text)."""
        return self.engine.report(width=width)


def evaluate_models(
    adata: AnnData,
    split: Split,
    models: Mapping[str, object],
    perturbations: Sequence[str],
    de_source: str = "all",
    metrics: Sequence[str] | None = None,
    keep_predictions: bool = False,
    weights: str = "miller",
) -> SplitEvaluation:
    """Fit each model on the training split and evaluate it on held-out perturbations.

    The evaluation engine (:func:`helpers.benchmarks.engine.run_models`) fits every model
    on the training cells (with control) of ``split``, asks which of ``perturbations`` it
    cannot predict, and the metrics (:func:`helpers.metrics.evaluate`) are computed on the
    perturbations that **every** model predicts (ranking metrics such as centroid accuracy
    depend on the set, so models are compared on one set). Ground truth: the profiles of all
    cells of each evaluated perturbation. References:
    :func:`helpers.metrics.training_references`. DEG weights of the weighted metrics:
    :func:`helpers.metrics.deg_weights` of the t statistics named by ``weights`` (see
    :func:`helpers.metrics.genes.deg_t_scores`). Top-20 DE genes:
    :func:`helpers.metrics.de_gene_sets` with ``de_source``.

    Parameters
    ----------
    models
        Model name -> unfitted model (e.g. :func:`make_models`).
    perturbations
        Held-out perturbations to evaluate (e.g. the 1-gene test perturbations).
    de_source
        ``"all"`` (GEARS/Systema: each perturbation's own top-20 DE genes, chosen on its
        observed cells) or ``"train"`` (one set from the training perturbations).
    weights
        ``"miller"`` or ``"control"``, see :data:`helpers.metrics.genes.DEG_WEIGHTS`.
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
    train = TrainingData(split.subset(adata, "train"))
    refs = training_references(train.pseudobulk)
    result = run_models(models, train, perturbations)
    common = result.common
    if len(common) < 2:
        raise DataError(
            f"only {len(common)} of the {len(perturbations)} perturbations are predicted by every model, too few to compare. "
            f"{result.report()} Leave out the model that cannot predict them (the `models` parameter), or supply predictions for "
            "these perturbations."
        )
    cells = adata[adata.obs["perturbation"].astype(str).isin(set(common) | {CONTROL}).to_numpy()]
    truth = profiles(cells, include_control=False).loc[common]
    # side inputs only when a requested metric needs them (all of them by default)
    needed = {k for m in (metrics or METRICS) if m in METRICS for k in METRICS[m].needs}
    weight_table = deg_weights(deg_t_scores(adata, common, weights)) if "deg_weights" in needed else None
    de_genes = de_gene_sets(adata, common, source=de_source, train_perturbations=split.train) if "de_genes" in needed else None
    per_pert, predictions = {}, {}
    for name, pred in result.predictions.items():
        pred = pred.loc[common]
        per_pert[name] = evaluate(
            pred, truth, refs.control, refs.perturbed_mean, de_genes=de_genes, deg_weights=weight_table, metrics=metrics
        )
        if keep_predictions:
            predictions[name] = pred
    if keep_predictions:
        predictions["truth"] = truth
    return SplitEvaluation(per_pert, result, refs, predictions)


def seen_genes(perturbations: Iterable[str], train: Iterable[str]) -> pd.Series:
    """Number of each perturbation's target genes that were seen as a training single.

    Systema's ``n_train`` for the Norman doubles (0, 1 or 2).
    """
    seen = {p for p in train if len(target_genes(p)) == 1}
    perts = list(perturbations)
    return pd.Series(
        [sum(g in seen for g in target_genes(p)) for p in perts], index=pd.Index(perts, name="perturbation"), name="seen_genes"
    )


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
        screens.append(
            {
                "systematic_strength": float(s),
                "systematic_variation": float(scores["systematic_variation"].iloc[0]),
                "n_perturbations": int(scores["n_perturbations"].iloc[0]),
            }
        )
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
    out = (
        per_seed.groupby(["systematic_strength", "model", "metric"], sort=True)
        .agg(value=("value", "mean"), n_undefined=("n_undefined", "sum"), n=("n", "sum"))
        .reset_index()
    )
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


def mode_collapse_results(
    controls: CalibrationControls, seed: int, collapsed: str = MEAN, metrics: Sequence[str] = MODE_COLLAPSE_METRICS
) -> tuple[pd.DataFrame, RMSEMatched]:
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


# ---------------------------------------------------------------------------------------
# the chapter's parameters and steps
# ---------------------------------------------------------------------------------------

NAME = "systema"

PARAMETERS = Schema(
    (
        Param("dataset", "str", "norman_like", "main screen: registry name (python -m helpers datasets) or .h5ad path"),
        Param(
            "score_datasets",
            "strs",
            ["adamson_like", "norman_like", "replogle_k562_like", "replogle_rpe1_like"],
            "scored in section 1",
            nonempty=False,
        ),
        Param("seeds", "ints", [1, 2], "GEARS simulation-split seeds (Systema used 1, 2 and 3)", minimum=0, maximum=SEED_MAX),
        Param("n_genes", "int", None, "evaluate on the n genes most expressed in control (None: all genes)", minimum=2, none=True),
        Param(
            "models",
            "strs",
            ["mean (cells)", "mean (perturbations)", "matching mean", "no change"],
            "baselines to run; drop any to skip it",
            choices=MODELS,
        ),
        Param("predictions", "path", None, "bring your own: predicted mean log-expression, perturbations x genes", none=True),
        Param("predictions_name", "str", None, "model name of the predictions file (default: the file's stem)", none=True),
        Param(
            "de_source", "str", "all", 'top-20 DE genes: "all" (GEARS/Systema, chosen on test cells) or "train"', choices=("all", "train")
        ),
        Param(
            "deg_weights_source",
            "str",
            "miller",
            'DEG weights: "miller" (t-test_overestim_var vs rest) or "control" (Welch)',
            choices=("miller", "control"),
        ),
        Param("context", "str", None, "cell line to analyse in a multi-cell-line screen (None: the first)", none=True),
        Param("simulation_seed", "int", 0, "seed of every simulated screen (cells and batches)", minimum=0, maximum=SEED_MAX),
        Param("run_sweep", "bool", True, "section 3, the systematic-strength sweep (needs the simulator)"),
        Param("sweep_preset", "str", "replogle_k562_like", "simulated preset whose systematic_strength is swept"),
        Param(
            "sweep_strengths", "floats", [0.0, 0.1, 0.2, 0.3, 0.5], "values of the simulator's systematic_strength", minimum=0, maximum=5
        ),
        Param("sweep_scale", "float", 0.4, "size of the sweep screens relative to the preset", minimum=0.01, maximum=10),
        Param("run_calibration", "bool", True, "sections 4 and 5 (technical duplicates, mode collapse, calibration)"),
    )
)


class Results:
    """The tidy frames of every analysis of the chapter, labelled, gathered for ``systema.results.csv``."""

    def __init__(self):
        self.frames: list[pd.DataFrame] = []

    def add(self, frame: pd.DataFrame, analysis: str, dataset: str | None, subset: str, systematic_strength: float = np.nan) -> None:
        """Label ``frame`` with the analysis, the dataset (None: the frame names its own), the subset and the strength."""
        frame = frame.copy()
        if dataset is not None:
            frame["dataset"] = dataset
        frame["analysis"] = analysis
        frame["subset"] = subset
        frame["systematic_strength"] = systematic_strength
        if "seed" not in frame:
            frame["seed"] = np.nan
        self.frames.append(frame)

    def table(self) -> pd.DataFrame:
        table = pd.concat(self.frames, ignore_index=True)
        table["seed"] = table["seed"].astype("Int64")
        return table


def mean_table(frame: pd.DataFrame, metrics: Sequence[str], by: Sequence[str] = ("model", "metric")) -> pd.DataFrame:
    """Mean, s.e. and undefined count over perturbations and seeds, per model and metric (metrics in the order given)."""
    table = summarise(frame, by=list(by))
    table = table[table["metric"].isin(metrics)]
    table["metric"] = pd.Categorical(table["metric"], categories=list(metrics), ordered=True)
    return table.sort_values([*by[:-1], "metric"])


def screen_line(adata: AnnData, dataset: str) -> str:
    """Cells, genes and the kinds of perturbations of the main screen, and whether it is simulated."""
    kinds = adata.obs.groupby("n_targets", observed=True)["perturbation"].nunique().rename({0: "control", 1: "singles", 2: "doubles"})
    return (
        f"{dataset}: {adata.n_obs:,} cells x {adata.n_vars:,} genes; "
        + ", ".join(f"{n} {k}" for k, n in kinds.items() if k != "control")
        + "\n"
        + ("simulated screen (known ground truth)" if is_simulated(dataset) else "real or user-supplied screen")
    )


def score_table(screens: Mapping[str, object]) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Systema's score of each screen beside the published score of the real dataset a simulated one mimics.

    Returns ``(scores, cosines, mimics)``; ``mimics`` maps a simulated preset to the real dataset it imitates.
    """
    scores, cosines = dataset_scores(screens)
    reference = published_systema.systematic_variation_reference()
    counterpart = reference.set_index("simulated_counterpart")["published"].drop("", errors="ignore")
    mimics = reference.set_index("simulated_counterpart")["dataset"].drop("", errors="ignore")
    scores["mimics (real dataset)"] = scores["dataset"].map(mimics).fillna("")
    scores["published score of the real dataset"] = scores["dataset"].map(counterpart)
    return scores, cosines, mimics


def score_agreement_line(scores: pd.DataFrame, mimics: pd.Series) -> str:
    """How well this run's scores rank like the published scores of the datasets they mimic ("" with fewer than 3)."""
    both = scores.dropna(subset=["published score of the real dataset"])
    if len(both) < 3:
        return ""
    rho = both["systematic_variation"].rank().corr(both["published score of the real dataset"].rank())
    top_run = both.loc[both["systematic_variation"].idxmax(), "dataset"]
    top_pub = both.loc[both["published score of the real dataset"].idxmax(), "dataset"]
    return (
        f"Rank correlation between this run's scores and the published scores of the datasets they mimic: {rho:.2f} "
        f"({len(both)} screens). Highest here: `{top_run}`; highest published: {mimics[top_pub]} (mimicked by `{top_pub}`)."
    )


def make_splits(adata: AnnData, seeds: Sequence[int]) -> dict[int, Split]:
    """The GEARS simulation split of every perturbation of the screen, per seed."""
    perturbations = sorted(p for p in adata.obs["perturbation"].astype(str).unique() if p != CONTROL)
    return {seed: gears_simulation_split(perturbations, seed=seed) for seed in seeds}


def test_perturbations(split: Split, n_targets: int) -> list[str]:
    """The split's test perturbations with ``n_targets`` target genes."""
    return [p for p in split.test if len(target_genes(p)) == n_targets]


def run_baselines(
    adata: AnnData,
    splits: Mapping[int, Split],
    names: Sequence[str],
    predictions: str | Path | None = None,
    predictions_name: str | None = None,
    de_source: str = "all",
    weights: str = "miller",
) -> tuple[dict[int, SplitEvaluation], list[str]]:
    """The models on the 1-gene test perturbations of every seed, and a report line per seed."""
    runs, lines = {}, []
    for seed, split in splits.items():
        counts = split.counts()
        lines.append(
            f"seed {seed}: train {counts.loc['train', 'total']} perturbations ({counts.loc['train', 'doubles']} doubles), "
            f"val {counts.loc['val', 'total']}, test {len(test_perturbations(split, 1))} singles + "
            f"{len(test_perturbations(split, 2))} doubles"
        )
        run = evaluate_models(
            adata,
            split,
            make_models(names, predictions, predictions_name),
            test_perturbations(split, 1),
            de_source=de_source,
            weights=weights,
        )
        lines.append("  1-gene test: " + run.exclusion_report().replace("\n", "\n  "))
        runs[seed] = run
    return runs, lines


def cell_lines(adata: AnnData) -> list[str]:
    """The cell lines of a screen (``obs['context']``), sorted; empty for a screen of one line."""
    if "context" not in adata.obs or adata.obs["context"].nunique() < 2:
        return []
    return sorted(adata.obs["context"].astype(str).unique())


def cell_line_table(
    raw: AnnData,
    seeds: Sequence[int],
    n_genes: int | None = None,
    de_source: str = "all",
    weights: str = "miller",
    model: str = "mean (cells)",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Systematic variation and the mean baseline of every cell line of a multi-line screen, one line at a time.

    For each line: Systema's score of its perturbations (:func:`helpers.metrics.systematic_variation`
    of the changes from that line's own control), and ``model`` on the 1-gene test perturbations
    of the GEARS simulation split of each seed, scored with PearsonΔ against control and against
    the perturbed mean (both references from that line's training split).

    Returns
    -------
    (table, tidy)
        ``table``: one row per cell line (perturbations, test perturbations per seed, the score,
        the two mean PearsonΔ values); ``tidy``: the per-perturbation values with a ``context`` column.
    """
    rows, frames = [], []
    for ctx in cell_lines(raw):
        screen = prepare_screen(raw, n_genes=n_genes, context=ctx)[0]
        score = systematic_variation(changes(screen)).score
        splits = make_splits(screen, seeds)
        runs, _ = run_baselines(screen, splits, [model], de_source=de_source, weights=weights)
        tidy_rows = pd.concat([run.tidy(seed=seed) for seed, run in runs.items()], ignore_index=True).assign(context=ctx)
        frames.append(tidy_rows)
        mine = tidy_rows[tidy_rows["model"] == model].groupby("metric")["value"].mean()
        rows.append(
            {
                "cell line": ctx,
                "perturbations": int(screen.obs.loc[screen.obs["perturbation"] != CONTROL, "perturbation"].nunique()),
                "test perturbations per seed": ", ".join(str(len(test_perturbations(sp, 1))) for sp in splits.values()),
                "systematic_variation": score,
                f"{model}: PearsonΔ vs control": mine.get("pearson_delta_vs_control", np.nan),
                f"{model}: PearsonΔ vs perturbed mean": mine.get("pearson_delta_vs_perturbed_mean", np.nan),
            }
        )
    return pd.DataFrame(rows).set_index("cell line"), pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def real_screen_notes(raw: AnnData, adata: AnnData, dataset: str, seeds: Sequence[int]) -> list[str]:
    """What a real (not simulated) screen can and cannot show in this chapter, computed from it; empty for a preset."""
    if is_simulated(dataset):
        return []
    perts = sorted(p for p in adata.obs["perturbation"].astype(str).unique() if p != CONTROL)
    cells = adata.obs["perturbation"].astype(str).value_counts()
    splits = make_splits(adata, seeds)
    n_test = [len(test_perturbations(sp, 1)) for sp in splits.values()]
    control = profiles(adata).loc[CONTROL]
    lines = [
        f"* **Perturbations**: {len(perts)} in the analysed screen ({cells[perts].min()}–{cells[perts].max()} cells each); "
        f"the GEARS split tests {', '.join(map(str, n_test))} of them in seeds {', '.join(map(str, seeds))}, so each mean "
        "below averages a handful of perturbations and the seeds overlap.",
        f"* **Genes**: {int((control > 0).sum())} of {adata.n_vars} genes have a non-zero control mean.",
    ]
    lines_ = cell_lines(raw)
    if lines_:
        lines.append(
            f"* **Cell lines**: {len(lines_)} ({', '.join(lines_)}); sections 2, 4 and 5 analyse one of them, the table of "
            "section 1 scores every one and runs the mean baseline in each."
        )
    doubles = [p for p in perts if len(target_genes(p)) == 2]
    if not doubles:
        lines.append("* **No doubles**: the matching-mean comparison of double perturbations does not apply.")
    lines.append(
        "* **No sweep**: the systematic-strength sweep needs the simulator; it is on the chapter's simulated page. "
        "Mode collapse and calibration run, but on so few test perturbations the rank metrics take only a few values."
    )
    return lines


def cell_line_line(table: pd.DataFrame, model: str = "mean (cells)") -> str:
    """Does the mean baseline's control-referenced PearsonΔ follow the cell lines' systematic variation? (from the table)"""
    if len(table) < 2:
        return ""
    by_score = table.sort_values("systematic_variation").index.tolist()
    by_pearson = table.sort_values(f"{model}: PearsonΔ vs control").index.tolist()
    rho = table["systematic_variation"].rank().corr(table[f"{model}: PearsonΔ vs control"].rank())
    pert = table[f"{model}: PearsonΔ vs perturbed mean"]
    return (
        f"Across the {len(table)} cell lines, systematic variation orders them {' < '.join(by_score)} and the `{model}` "
        f"baseline's PearsonΔ against control orders them {' < '.join(by_pearson)} (rank correlation {rho:.2f}, from "
        f"{len(table)} points: an illustration, not a test); against the perturbed mean it lies between {pert.min():.2f} "
        f"and {pert.max():.2f}. Each line has only {int(table['perturbations'].min())} perturbations, of which the split "
        f"tests {table['test perturbations per seed'].iloc[0]} per seed, so every number here has a wide uncertainty."
    )


#: The metrics of the chapter's summary of the baselines.
KEY_METRICS = [
    "pearson_delta_vs_control",
    "pearson_delta_vs_perturbed_mean",
    "pearson_delta_de20_vs_control",
    "pearson_delta_de20_vs_perturbed_mean",
    "rmse",
    "weighted_r2_delta_vs_perturbed_mean",
    "centroid_accuracy",
]


def reference_lines(runs: Mapping[int, SplitEvaluation], wide: pd.DataFrame, undefined: pd.DataFrame, baselines: pd.DataFrame) -> list[str]:
    """Why the weighting of the mean decides whether PearsonΔ against the perturbed mean is defined, from this run."""
    lines = []
    for seed, run in runs.items():
        refs = run.references
        gap = float((refs.cell_weighted_mean - refs.perturbed_mean).abs().max())
        lines.append(
            f"- Seed {seed}: training perturbations have {int(refs.n_cells.min())}–{int(refs.n_cells.max())} cells each; "
            f"the cell-weighted and perturbation-weighted means differ by at most {gap:.2g} log-expression units per gene."
        )
    if MEAN in wide.index:
        n_mean = int(undefined.loc[MEAN, "pearson_delta_vs_perturbed_mean"])
        n_all = int(((baselines["model"] == MEAN) & (baselines["metric"] == "pearson_delta_vs_perturbed_mean")).sum())
        lines.append(
            f"- `{MEAN}` (perturbation-weighted): PearsonΔ against the perturbed mean is undefined for {n_mean} of "
            f"{n_all} perturbation-seed pairs (its predicted change is exactly zero)."
        )
    if "mean (cells)" in wide.index:
        lines.append(
            f"- `mean (cells)`: PearsonΔ {wide.loc['mean (cells)', 'pearson_delta_vs_control']:.2f} against control, "
            f"{wide.loc['mean (cells)', 'pearson_delta_vs_perturbed_mean']:.2f} against the perturbed mean."
        )
    return lines


def published_reference(dataset: str, mimics: pd.Series) -> tuple[pd.DataFrame, str, str]:
    """Systema's tables for the real dataset ``dataset`` stands for (Norman 2019 if there is none), and a note."""
    real = mimics.get(dataset, dataset)
    tables = published_systema.TABLES
    pub = pd.concat([tables["pearson_delta_vs_control"], tables["pearson_delta_vs_perturbed_mean"], tables["rmse"]])
    pub_here = pub[pub["dataset"] == real]
    note = ""
    if pub_here.empty:
        real = "norman2019"
        pub_here = pub[pub["dataset"] == real]
        note = f"No published Systema numbers for `{dataset}`; showing Norman 2019 as the reference."
    wide = pub_here.pivot(index="model", columns="metric", values="value")[
        [
            "pearson_delta_vs_control",
            "pearson_delta_vs_perturbed_mean",
            "pearson_delta_de20_vs_control",
            "pearson_delta_de20_vs_perturbed_mean",
            "rmse",
        ]
    ]
    return wide, real, note


def published_lines(dataset: str, real: str, pub_wide: pd.DataFrame, wide: pd.DataFrame) -> list[str]:
    """The published pattern (the non-control mean best against control, every method low against the perturbed mean) and this run's."""
    tables = published_systema.TABLES
    pc = (
        tables["pearson_delta_vs_control"]
        .query("metric == 'pearson_delta_vs_control'")
        .pivot(index="dataset", columns="model", values="value")
    )
    best = (pc["mean (cells)"] >= pc.drop(columns="mean (cells)").max(axis=1)).sum()
    pp = tables["pearson_delta_vs_perturbed_mean"].query("metric == 'pearson_delta_vs_perturbed_mean'")
    lines = [
        f"- Published: the non-control mean has the highest PearsonΔ against control on {best} of {len(pc)} datasets; "
        f"against the perturbed mean (all genes), no method exceeds {pp['value'].max():.2f} on any dataset."
    ]
    if "mean (cells)" in wide.index:
        here = wide.loc["mean (cells)"]
        lines.append(
            f"- This run (`{dataset}`): `mean (cells)` PearsonΔ {here['pearson_delta_vs_control']:.2f} against control "
            f"(published on {real}: {pub_wide.loc['mean (cells)', 'pearson_delta_vs_control']:.2f}), "
            f"{here['pearson_delta_vs_perturbed_mean']:.2f} against the perturbed mean "
            f"(published: {pub_wide.loc['mean (cells)', 'pearson_delta_vs_perturbed_mean']:.2f})."
        )
    return lines


#: The models of the doubles comparison, when the chapter runs them.
DOUBLES_MODELS = ("matching mean", "mean (cells)", MEAN)


def run_doubles(
    adata: AnnData, splits: Mapping[int, Split], names: Sequence[str], de_source: str = "all", weights: str = "miller"
) -> tuple[pd.DataFrame | None, list[str]]:
    """The matching mean and the means on each seed's 2-gene test perturbations, by number of seen genes.

    Returns the tidy rows (with ``seen_genes``; None when no seed has two test doubles) and
    one report line per seed.
    """
    models = [m for m in DOUBLES_MODELS if m in names]
    frames, lines = [], []
    for seed, split in splits.items():
        doubles = test_perturbations(split, 2)
        if len(doubles) < 2 or not models:
            continue
        run = evaluate_models(adata, split, make_models(models), doubles, de_source=de_source, weights=weights)
        lines.append(f"seed {seed}, 2-gene test: " + run.exclusion_report())
        frame = run.tidy(seed=seed)
        frame["seen_genes"] = frame["perturbation"].map(seen_genes(run.common, split.train))
        frames.append(frame)
    return (pd.concat(frames, ignore_index=True) if frames else None), lines


def doubles_medians(doubles: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Median PearsonΔ against both references by metric, number of seen genes and model; perturbations per group."""
    medians = (
        doubles[doubles["metric"].isin(["pearson_delta_vs_control", "pearson_delta_vs_perturbed_mean"])]
        .groupby(["metric", "seen_genes", "model"])["value"]
        .median()
        .unstack("model")
    )
    counts = doubles.query("metric == 'rmse'").groupby("seen_genes")["perturbation"].nunique()
    return medians, counts


def doubles_gain_line(medians: pd.DataFrame) -> str:
    """The matching mean's median gain over the non-control mean by number of seen genes ("" if either is missing)."""
    med = medians.loc["pearson_delta_vs_perturbed_mean"]
    ctl = medians.loc["pearson_delta_vs_control"]
    if "matching mean" not in med or "mean (cells)" not in med:
        return ""
    gain_pert = (med["matching mean"] - med["mean (cells)"]).round(2).to_dict()
    gain_ctrl = (ctl["matching mean"] - ctl["mean (cells)"]).round(2).to_dict()
    return (
        "Median gain of the matching mean over the non-control mean, by number of seen genes: "
        + ", ".join(f"{k} seen: {gain_ctrl[k]:+.2f} against control, {gain_pert[k]:+.2f} against the perturbed mean" for k in med.index)
        + ". With 0 seen genes the two predictions are identical (the matching mean falls back to the non-control mean)."
    )


def sweep_models(names: Sequence[str]) -> list[str]:
    """The mean baselines of the sweep (those the reader kept; the cell-weighted mean if none)."""
    return [m for m in ("mean (cells)", MEAN) if m in names] or ["mean (cells)"]


def sweep_line(table: pd.DataFrame, model: str, correlation: dict) -> str:
    """The sweep in one paragraph: the score's range, the baseline's PearsonΔ against both references, the correlation."""
    ctrl = table.query("model == @model and metric == 'pearson_delta_vs_control'").sort_values("systematic_strength")
    pert = table.query("model == @model and metric == 'pearson_delta_vs_perturbed_mean'")
    return (
        f"Across the {correlation['n_screens']} simulated screens, the systematic-variation score ranges from "
        f"{ctrl['systematic_variation'].min():.2f} to {ctrl['systematic_variation'].max():.2f}; the `{model}` "
        f"baseline's PearsonΔ against control goes from {ctrl['value'].iloc[0]:.2f} to {ctrl['value'].iloc[-1]:.2f} "
        f"(Pearson r with the score = {correlation['r']:.2f}, p = {correlation['p_value']:.1g}; Systema: r = 0.97 across "
        f"ten real datasets), while against the perturbed mean it stays {_between(pert['value'].min(), pert['value'].max())}."
    )


def _between(lo: float, hi: float) -> str:
    """``"between 0.41 and 0.52"``, or ``"at 0.98"`` when both print the same (no "between 0.98 and 0.98")."""
    a, b = f"{lo:.2f}", f"{hi:.2f}"
    return f"at {a}" if a == b else f"between {a} and {b}"


def run_mode_collapse(adata: AnnData, splits: Mapping[int, Split]) -> tuple[dict, pd.DataFrame, list[str]]:
    """Calibration controls of every seed's 1-gene test perturbations and the mode-collapse comparison on them.

    Returns ``(controls_by_seed, tidy rows with seed, notes)``.
    """
    from ..models.controls import calibration_controls

    controls_by_seed, frames, notes = {}, [], []
    for seed, split in splits.items():
        controls = calibration_controls(adata, test_perturbations(split, 1), split.train, seed=seed)
        if controls.excluded:
            notes.append(f"Seed {seed}: left out of the calibration (cannot be halved): {controls.excluded}")
        controls_by_seed[seed] = controls
        frame, matched = mode_collapse_results(controls, seed=seed)
        notes.append(f"Seed {seed}: {len(controls.truth)} test perturbations; `{MATCHED_DUPLICATE}` = {matched.describe()}.")
        frame["seed"] = seed
        frames.append(frame)
    return controls_by_seed, pd.concat(frames, ignore_index=True), notes


def pds_chance(controls_by_seed: Mapping, n_permutations: int = 20) -> pd.DataFrame:
    """Chance level of the discrimination score (PDS) on each seed's ground truth, by permutation.

    :func:`helpers.metrics.ranking.discrimination_chance` on the first-half profiles and the control
    (seeded with the split seed), for two uninformative predictions: another perturbation's observed
    profile (the first halves with their labels deranged) and the collapsed mean baseline
    (:data:`MEAN`, where it is among the controls' predictions). With the target genes measured, each
    perturbation's own target column is left out, which lifts both above 0.5. Returns one row per seed:
    ``seed, n_perturbations, targets_measured, chance_other_profile, chance_collapsed, permutations``.
    """
    from ..data.canonical import target_genes
    from ..metrics.ranking import discrimination_chance

    rows = []
    for seed, controls in controls_by_seed.items():
        truth = controls.truth
        measured = sum(any(g in truth.columns for g in target_genes(str(p))) for p in truth.index)
        other, _ = discrimination_chance(truth, controls.control, n_permutations=n_permutations, seed=int(seed))
        collapsed = np.nan
        if MEAN in getattr(controls, "predictions", {}):
            collapsed, _ = discrimination_chance(truth, controls.control, controls.predictions[MEAN], n_permutations=1, seed=int(seed))
        rows.append({"seed": seed, "n_perturbations": len(truth), "targets_measured": measured, "chance_other_profile": other,
                     "chance_collapsed": collapsed, "permutations": n_permutations})  # fmt: skip
    return pd.DataFrame(rows)


def pds_chance_line(chance: pd.DataFrame) -> str:
    """The PDS chance level of this run as a sentence (from :func:`pds_chance`), compared with the random-rank level."""
    if chance.empty:
        return ""
    n = float(chance["n_perturbations"].mean())
    ranks = 0.5 + 1 / (2 * n)
    other, collapsed = float(chance["chance_other_profile"].mean()), float(chance["chance_collapsed"].mean())

    def versus(value: float) -> str:
        return "above" if value > ranks + 0.01 else ("about equal to" if value >= ranks - 0.01 else "below")

    text = (
        f"**Chance level of the discrimination score** (`discrimination_score_l1_vs_control`), computed on these data by "
        f"permutation ({int(chance['permutations'].iloc[0])} seeded label derangements per seed, {len(chance)} seed(s); "
        f"{int(chance['targets_measured'].sum())} of {int(chance['n_perturbations'].sum())} test perturbations have their target gene "
        f"measured, and each perturbation's own target column is left out): another perturbation's observed profile scores "
        f"{other:.3f}, {versus(other)} the {ranks:.3f} (= 0.5 + 1/(2N)) of random ranks"
    )
    if np.isfinite(collapsed):
        text += f"; the collapsed `{MEAN}` scores {collapsed:.3f}, {versus(collapsed)} it"
    return text + ". Read the PDS of a model against these levels, not against 0.5."


#: The predictors of the mode-collapse figure, in order.
COLLAPSE_MODELS = [MEAN, "technical duplicate", MATCHED_DUPLICATE]


def mode_collapse_line(m: pd.DataFrame) -> str:
    """Same RMSE, different ranks: the collapsed mean against the RMSE-matched duplicate, from this run's table."""
    noisy = MATCHED_DUPLICATE
    return (
        f"Same RMSE ({m.loc[MEAN, 'rmse']:.4f} for the collapsed `{MEAN}`, {m.loc[noisy, 'rmse']:.4f} for the RMSE-matched "
        f"duplicate, by construction), but rank {m.loc[MEAN, 'rank_rmse']:.2f} vs {m.loc[noisy, 'rank_rmse']:.2f} and "
        f"centroid accuracy {m.loc[MEAN, 'centroid_accuracy']:.2f} vs {m.loc[noisy, 'centroid_accuracy']:.2f}. The collapsed "
        "prediction sits exactly at chance on the ranking metrics: with one profile for all, every perturbation ties with "
        f"every other. The plain technical duplicate has an RMSE of {m.loc['technical duplicate', 'rmse']:.4f}"
        + (
            ", *worse* than the collapsed mean: on these data RMSE prefers an uninformative prediction to a replicate "
            "experiment (section 5 returns to this)."
            if m.loc["technical duplicate", "rmse"] > m.loc[MEAN, "rmse"]
            else "."
        )
    )


def published_centroid_line() -> str:
    """Systema's published centroid accuracy on the real Replogle K562 genome-wide screen, as one sentence."""
    ca = published_systema.TABLES["centroid_accuracy"]
    return (
        "**Published centroid accuracy (Systema, real Replogle K562 genome-wide screen, 1,043 test perturbations, "
        "mean ± s.e.)**: "
        + ", ".join(f"{r.model} {r.value:.3f}" + (f" ± {r.se:.3f}" if np.isfinite(r.se) else " (≈)") for r in ca.itertuples())
        + ". Only the fine-tuned scGPT is clearly above the chance level of 0.5 that the non-control mean sits at."
    )


def run_calibration(
    adata: AnnData, controls_by_seed: Mapping, splits: Mapping[int, Split], de_source: str = "all", weights: str = "miller"
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every metric of the calibration controls, their DRF table, and the weighted metrics' DRF under each DEG-weight source.

    Returns ``(tidy rows with seed, drf table, weights table)``.
    """
    weighted_metrics = [m for m, info in METRICS.items() if "deg_weights" in info.needs]
    frames, other = [], []
    for seed, controls in controls_by_seed.items():
        genes = (
            None
            if de_source == "all"
            else de_gene_sets(adata, list(controls.truth.index), source="train", train_perturbations=splits[seed].train)
        )
        frame = calibration_results(controls, de_genes=genes, weights=weights)
        frame["seed"] = seed
        frames.append(frame)
        for source in DEG_WEIGHTS:
            if source != weights:
                alt = calibration_results(controls, weights=source, metrics=weighted_metrics)
                alt["seed"], alt["weights"] = seed, source
                other.append(alt)
    calibration = pd.concat(frames, ignore_index=True)
    drf = drf_table(calibration)
    by_source = {weights: drf.loc[weighted_metrics, "drf_technical duplicate"]}
    for source, frame in pd.concat(other).groupby("weights"):
        by_source[source] = drf_table(frame.drop(columns="weights"))["drf_technical duplicate"]
    table = pd.DataFrame(by_source)
    table.columns = [f"DEG weights: {c}" for c in table.columns]
    return calibration, drf, table


def weights_line(weights_table: pd.DataFrame) -> str:
    """The sources of DEG weights and how far their choice moves the median DRF of ``weighted_mse``."""
    spread = weights_table.loc["weighted_mse"]
    return "\n".join(f"- `{k}`: {v}" for k, v in DEG_WEIGHTS.items()) + (
        f"\n\nOn this screen the source of the weights does not move the median DRF of `weighted_mse`: it is {spread.min():.2f} "
        "with every source."
        if f"{spread.min():.2f}" == f"{spread.max():.2f}"
        else f"\n\nOn this screen the source of the weights moves the median DRF of `weighted_mse` {_between(spread.min(), spread.max())} "
        f"({spread.idxmax().removeprefix('DEG weights: ')} weights highest)."
    )


def calibration_line(drf: pd.DataFrame, dataset: str) -> str:
    """Miller et al.'s headline beside this run's calibration verdicts."""

    def verdicts(names: Iterable[str]) -> str:
        return ", ".join(
            f"`{m}` {drf.loc[m, 'drf_technical duplicate']:.2f} ({drf.loc[m, 'calibration']})" for m in names if m in drf.index
        )

    well = drf.index[drf["calibration"] == "well"].tolist()
    poorly = drf.index[drf["calibration"] == "poorly"].tolist()
    return (
        "**Miller et al.'s headline** (14 real datasets): MSE and control-referenced PearsonΔ are often poorly calibrated; "
        "weighted and rank-based metrics are consistently well calibrated.\n\n"
        f"**This run** ({dataset}, median DRF with the technical duplicate): {verdicts(['mse', 'pearson_delta_vs_control'])}; "
        f"{verdicts(['weighted_mse', 'weighted_r2_delta_vs_perturbed_mean', 'rank_rmse', 'centroid_accuracy'])}.\n\n"
        f"Well calibrated here: {', '.join(f'`{m}`' for m in well) or 'none'}. "
        f"Poorly calibrated here: {', '.join(f'`{m}`' for m in poorly) or 'none'}."
    )


def conclusions(
    scores: pd.DataFrame,
    wide: pd.DataFrame,
    dataset: str,
    sweep_table: pd.DataFrame | None,
    model: str,
    correlation: dict | None,
    collapse: pd.DataFrame | None,
    drf: pd.DataFrame | None,
) -> list[str]:
    """The lines of "What this run shows", each computed from this run's numbers."""
    lines = []
    s = scores.set_index("dataset")["systematic_variation"]
    lines.append(
        "- **Systematic variation** of the screens: "
        + ", ".join(f"{d} {v:.2f}" for d, v in s.items())
        + " (Systema, real data: Adamson ≈0.76, RPE1 ≈0.56, Norman ≈0.50, K562 ≈0.32)."
    )
    if "mean (cells)" in wide.index:
        w = wide.loc["mean (cells)"]
        lines.append(
            f"- **Two references**: the cell-weighted mean baseline scores PearsonΔ {w['pearson_delta_vs_control']:.2f} "
            f"against control but {w['pearson_delta_vs_perturbed_mean']:.2f} against the perturbed mean on {dataset}"
            + (
                "; the perturbation-weighted mean is undefined (NaN) against the perturbed mean, because its predicted "
                "change from it is exactly zero."
                if MEAN in wide.index
                else "."
            )
        )
    if sweep_table is not None:
        ctrl = sweep_table.query("model == @model and metric == 'pearson_delta_vs_control'").sort_values("systematic_strength")
        pert = sweep_table.query("model == @model and metric == 'pearson_delta_vs_perturbed_mean'")
        lines.append(
            f"- **Sweep**: raising the simulator's systematic strength raised the mean baseline's control-referenced "
            f"PearsonΔ from {ctrl['value'].iloc[0]:.2f} to {ctrl['value'].iloc[-1]:.2f} (r = {correlation['r']:.2f} with "
            f"the score; Systema r = 0.97), while the perturbed-reference score stayed within "
            f"[{pert['value'].min():.2f}, {pert['value'].max():.2f}]."
        )
    if collapse is not None:
        m, noisy = collapse, MATCHED_DUPLICATE
        lines.append(
            f"- **Mode collapse**: the collapsed mean and the RMSE-matched duplicate share an RMSE of "
            f"{m.loc[MEAN, 'rmse']:.4f}, but rank {m.loc[MEAN, 'rank_rmse']:.2f} vs {m.loc[noisy, 'rank_rmse']:.2f}."
        )
    if drf is not None:
        well = drf.index[drf["calibration"] == "well"].tolist()
        poorly = drf.index[drf["calibration"] == "poorly"].tolist()
        lines.append(
            f"- **Calibration**: {len(well)} of {len(drf)} metrics are well calibrated (median DRF ≥ {WELL_CALIBRATED}) "
            f"and {len(poorly)} poorly (< {POORLY_CALIBRATED}); MSE: {drf.loc['mse', 'drf_technical duplicate']:.2f}, "
            f"PearsonΔ vs control: {drf.loc['pearson_delta_vs_control', 'drf_technical duplicate']:.2f}, weighted R² vs "
            f"perturbed mean: {drf.loc['weighted_r2_delta_vs_perturbed_mean', 'drf_technical duplicate']:.2f}."
        )
    return lines
