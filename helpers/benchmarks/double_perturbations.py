"""The double-perturbation benchmark (Ahlmann-Eltze, Huber & Anders 2025), step by step.

The notebook ``double_perturbations`` calls these functions; they hold the work so that it
is tested here and the notebook stays a chapter:

* :data:`PARAMETERS` — the chapter's parameters, checked before any work;
* :func:`run_benchmark` — for every seed, the published split
  (:func:`helpers.data.double_perturbation_split`), the models of the registry fitted on its
  training part and asked for the evaluated doubles (test + val) by the evaluation engine
  (:func:`helpers.benchmarks.engine.run_models`), which records what each cannot predict and
  why and the doubles every model predicts (the *common set*);
* :func:`per_perturbation_metrics` — L2, PearsonΔ against control and against the
  perturbed mean (and, on simulated data, L2 against the true profile) per double;
* :func:`cumulative_error` — error as genes are added (Fig. 1B of the paper);
* :func:`detection_scores` — TPR-vs-FDP curves and AUPRC/AUROC of every model's
  interaction calls (:mod:`helpers.stats.interactions`);
* tables beside the published numbers and the sentences of the conclusion, computed from
  the run's numbers.

Gene set: every model is evaluated on the ``genes`` given (the top-``n`` genes by control
mean). Models are fitted on those genes only, except models tagged ``all_genes`` (the
linear model: its perturbation embedding of gene ``g`` is row ``g`` of a PCA over genes,
so a target outside the gene set would otherwise be unembeddable).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..console import progress_bar
from ..data.canonical import target_genes
from ..data.splits import Split, double_perturbation_split
from ..errors import DataError, ParameterError
from ..metrics import cumulative_l2, evaluate, genes_by_change, l2, perturbed_mean, published_rank_grid
from ..models.precomputed import provenance_table, with_gears
from ..models.registry import build_model, build_models, check_model_names, model_tags
from ..params import SEED_MAX, Param, Schema
from ..published.ahlmann_eltze_doubles import TABLES as PUBLISHED
from ..stats.interactions import FDP_GRID, InteractionNull, additive_expectation, auc_scores, detection_pairs, tpr_at_fdp, tpr_fdp_curve
from .engine import Evaluation, TrainingData, run_models

if TYPE_CHECKING:
    from anndata import AnnData

    from ..models.base import PerturbationModel

NAME = "double_perturbations"

#: Registry models the chapter can run, in display order.
MODELS = (
    "no change",
    "additive",
    "mean",
    "linear",
    "linear additive (torch)",
    "latent additive (torch)",
    "decoder only (torch)",
    "GEARS",
)

#: Per-double metrics written to the results table.
METRICS = ("l2", "pearson_delta_vs_control", "pearson_delta_vs_perturbed_mean")

#: Datasets on which the published numbers are the same data (or a version of it).
PUBLISHED_DATA = {"norman2019_scfoundation": "the same data", "norman2019": "the GEARS version of the same screen (5,045 genes)"}

#: How GEARS enters the chapter (parameter ``gears``).
GEARS_CHOICES = ("precomputed", "live", "off")
GEARS_MEANING = (
    'GEARS: "precomputed" (the shipped predictions of scripts/make_gears_predictions.py, used when they were made '
    'for this run\'s data, genes and split), "live" (trained in this run; needs its environment) or "off"'
)

PARAMETERS = Schema(
    (
        Param(
            "dataset",
            "str",
            "norman_like",
            "registry name (python -m helpers datasets) or path to an .h5ad screen with double perturbations",
        ),
        Param("seeds", "ints", [1, 2, 3, 4, 5], "seeds of the double-perturbation split (the paper: 1-5)", minimum=0, maximum=SEED_MAX),
        Param(
            "n_genes", "int", 1000, "evaluation genes: the n genes with the highest control mean (capped at the number of genes)", minimum=1
        ),
        Param("models", "strs", list(MODELS[:-1]), "models to run; remove a name to switch it off (GEARS: see gears)", choices=MODELS),
        Param("gears", "str", "precomputed", GEARS_MEANING, choices=GEARS_CHOICES),
        Param("run_slow_models", "bool", True, "run the torch models (and live GEARS) when listed (False skips them)"),
        Param("gears_epochs", "int", 2, "GEARS training epochs (shipped predictions: made with 2)", minimum=1),
        Param("max_seconds_per_fit", "float", 300, "time bound of each torch fit in seconds", minimum=1),
        Param(
            "torch_training",
            "str",
            "pseudobulk",
            'torch models: "pseudobulk" (fast) or "cells" (PerturBench\'s per-cell pairs, slow)',
            choices=("pseudobulk", "cells"),
        ),
        Param("predictions", "path", None, "bring your own: a file of predictions (perturbations x genes)", none=True),
        Param("predictions_name", "str", None, "model name of the predictions file (default: the file name without extension)", none=True),
        Param("predictions_values", "str", "expression", "what the predictions file holds", choices=("expression", "change")),
        Param("gi_fdr", "float", 0.05, "local false discovery rate at which the interaction thresholds are set", minimum=1e-6, maximum=0.5),
        Param("gi_null_doubles", "str", "all", "doubles the empirical null is fitted on", choices=("all", "first seed")),
    )
)


def dataset_label(dataset: str | Path) -> str:
    """The name a dataset gets in the tables: a registry name, or a file's stem."""
    return Path(str(dataset)).stem if str(dataset).endswith(".h5ad") else str(dataset)


def chosen_models(models: Sequence[str], run_slow_models: bool, gears: str | None = None) -> tuple[list[str], list[str]]:
    """The models to run (in display order) and those switched off by ``run_slow_models=False``.

    ``gears`` adds GEARS (:func:`helpers.models.precomputed.with_gears`): ``"precomputed"``
    (not slow: nothing is trained), ``"live"`` or ``"off"``; ``None`` takes ``models`` as
    given, where "GEARS" is the live model.
    """
    check_model_names(models, MODELS)
    wanted = with_gears(models, gears)
    fast = {"GEARS"} if gears == "precomputed" else set()
    run = [m for m in MODELS if m in wanted and (run_slow_models or m in fast or not model_tags(m).slow)]
    return run, [m for m in wanted if m not in run]


def predictions_model_name(predictions: str | Path, predictions_name: str | None) -> str:
    """The model name of a predictions file; refuses a name that clashes with a registry model."""
    name = predictions_name or Path(str(predictions)).stem
    if name in MODELS:
        raise ParameterError(f"predictions_name {name!r} clashes with a built-in model; choose another name.")
    return name


@dataclass
class SeedResult:
    """Everything one split produced.

    ``evaluation`` is the engine's :class:`helpers.benchmarks.engine.Evaluation` of the
    evaluated doubles (test + val); ``perturbed_mean`` the mean of the training
    perturbations' profiles on the gene set (the reference of PearsonΔ vs perturbed mean).
    """

    seed: int
    split: Split
    evaluated: list[str]
    evaluation: Evaluation
    perturbed_mean: pd.Series

    @property
    def predictions(self) -> dict[str, pd.DataFrame]:
        return self.evaluation.predictions

    @property
    def common(self) -> list[str]:
        return self.evaluation.common


def run_seed(
    adata: AnnData,
    genes: Sequence[str],
    seed: int,
    models: Mapping[str, PerturbationModel],
    on_model: Callable[[str], None] | None = None,
) -> SeedResult:
    """Fit every model on one split and predict the evaluated doubles.

    Parameters
    ----------
    adata
        Canonical screen (cells).
    genes
        The evaluated gene set.
    seed
        Split seed.
    models
        ``{name: unfitted model}`` (e.g. from :func:`models_for_seed`).
    on_model
        Optional callable ``on_model(name)`` called before each fit.
    """
    genes = list(genes)
    split = double_perturbation_split(adata, seed)
    split = Split(split.name, split.seed, *(tuple(str(p) for p in getattr(split, part)) for part in ("train", "val", "test")))
    evaluated = [p for p in split.evaluated if len(target_genes(p)) == 2]
    train = TrainingData(split.subset(adata, "train"), genes=genes)
    evaluation = run_models(models, train, evaluated, on_model=on_model)
    return SeedResult(seed, split, evaluated, evaluation, perturbed_mean(train.profiles()))


def models_for_seed(
    names: Sequence[str],
    seed: int,
    evaluated: Sequence[str],
    max_seconds: float = 300.0,
    torch_training: str = "pseudobulk",
    gears_epochs: int = 2,
    predictions: str | Path | None = None,
    predictions_name: str | None = None,
    predictions_values: str = "expression",
    gears: str | None = None,
    dataset: str = "",
) -> dict:
    """Fresh models of one seed from the registry (the seed also seeds the torch models), plus a predictions file.

    With ``gears="precomputed"``, "GEARS" in ``names`` is the shipped predictions of
    ``dataset`` and ``seed`` (:class:`helpers.models.precomputed.PrecomputedPredictions`),
    which refuse themselves at fit time if they were made for other data, genes or split.
    """
    live = [n for n in names if not (n == "GEARS" and gears == "precomputed")]
    built = build_models(
        live, seed=seed, max_seconds=max_seconds, torch_training=torch_training, gears_epochs=gears_epochs, perturbations=evaluated
    )
    models = {}
    for n in names:
        models[n] = (
            built[n]
            if n in built
            else build_model("GEARS (precomputed)", chapter=NAME, dataset=dataset, seed=seed, gears_epochs=gears_epochs)
        )
    if predictions is not None:
        name = predictions_model_name(predictions, predictions_name)
        models[name] = build_model("predictions file", path=predictions, name=name, values=predictions_values)
    return models


def run_benchmark(
    adata: AnnData,
    genes: Sequence[str],
    seeds: Sequence[int],
    names: Sequence[str],
    dataset: str = "",
    progress: bool = True,
    **model_options,
) -> list[SeedResult]:
    """:func:`run_seed` for every seed with fresh models (:func:`models_for_seed`).

    A predictions file that predicts none of a seed's evaluated doubles is refused with
    the reason (its names or genes do not match the screen).
    """
    results = []
    bar = progress_bar(list(seeds), desc="seeds", disable=not progress)
    for seed in bar:
        split = double_perturbation_split(adata, seed)
        evaluated = [str(p) for p in split.evaluated if len(target_genes(p)) == 2]
        models = models_for_seed(names, seed, evaluated, dataset=dataset, **model_options)
        result = run_seed(adata, genes, seed, models, on_model=lambda m, s=seed: bar.set_postfix_str(f"seed {s}: {m}"))
        if model_options.get("predictions") is not None:
            name = predictions_model_name(model_options["predictions"], model_options.get("predictions_name"))
            if name in result.evaluation.failures:
                raise DataError(
                    f"the predictions file {model_options['predictions']} predicts none of the {len(result.evaluated)} doubles "
                    f"evaluated in seed {seed} (e.g. {result.evaluated[:3]}); its perturbation names must be the doubles of "
                    f"{dataset or 'the screen'} (any of the conventions A+B, A_B, A+ctrl), and its genes must cover the gene set."
                )
        results.append(result)
    return results


# ---------------------------------------------------------------------------------------
# what the models did
# ---------------------------------------------------------------------------------------


def fit_table(results: Sequence[SeedResult]) -> pd.DataFrame:
    """The engine's fit log of every seed (``seed`` column first)."""
    return pd.concat([r.evaluation.fits.assign(seed=r.seed)[["seed", *r.evaluation.fits.columns]] for r in results], ignore_index=True)


def fit_summary(results: Sequence[SeedResult]) -> pd.DataFrame:
    """Per model: mean fit seconds, mean epochs and how the iterative fits stopped."""
    fits = fit_table(results)
    return fits.groupby("model", sort=False).agg(
        fit_seconds_mean=("fit_seconds", "mean"),
        epochs_mean=("epochs", "mean"),
        stopped=("stopped_because", lambda s: ", ".join(f"{k}: {v}" for k, v in s.value_counts().items() if k)),
    )


def gears_provenance(results: Sequence[SeedResult]) -> pd.DataFrame:
    """Per seed, where GEARS' predictions came from (precomputed, refused with the reason, trained live); empty without GEARS."""
    return provenance_table({r.seed: r.evaluation for r in results}).rename(columns={"run": "seed"})


def exclusion_table(results: Sequence[SeedResult]) -> pd.DataFrame:
    """Per seed and model: evaluated doubles, how many the model predicts and excludes, common-set membership."""
    rows = []
    for r in results:
        counts = r.evaluation.exclusion_counts()
        counts.insert(0, "seed", r.seed)
        rows.append(counts.rename(columns={"asked": "evaluated"}))
    return pd.concat(rows, ignore_index=True)


def exclusion_reasons(results: Sequence[SeedResult]) -> pd.DataFrame:
    """Every excluded (model, double) with its reason and the seeds in which it was evaluated and excluded.

    Columns ``model, reason, perturbation, seeds`` (e.g. ``"1, 3"``), sorted by model and
    reason. A model that failed is listed with its failure as the reason of every double.
    """
    seen: dict[tuple[str, str, str], list[int]] = {}
    for r in results:
        for row in r.evaluation.exclusions.itertuples():
            seen.setdefault((row.model, row.reason, row.perturbation), []).append(r.seed)
        for model, why in r.evaluation.failures.items():
            if not r.evaluation.excluded(model):
                for p in r.evaluated:
                    seen.setdefault((model, why, p), []).append(r.seed)
    rows = [{"model": m, "reason": why, "perturbation": p, "seeds": ", ".join(map(str, s))} for (m, why, p), s in seen.items()]
    frame = pd.DataFrame(rows, columns=["model", "reason", "perturbation", "seeds"])
    return frame.sort_values(["model", "reason", "perturbation"], kind="stable").reset_index(drop=True)


def common_set_lines(results: Sequence[SeedResult]) -> list[str]:
    """One line per seed: evaluated doubles, the common set and the models left out of it."""
    lines = []
    for r in results:
        dropped = r.evaluation.failures
        extra = f"; left out of the common set: {', '.join(f'{m} ({why})' for m, why in dropped.items())}" if dropped else ""
        lines.append(f"seed {r.seed}: {len(r.evaluated)} evaluated doubles, common set {len(r.common)}{extra}")
    return lines


# ---------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------


def per_perturbation_metrics(
    results: Sequence[SeedResult],
    observed: pd.DataFrame,
    control: pd.Series,
    dataset: str,
    true_profiles: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Tidy per-double metrics of every model and seed, on every double the model predicts.

    Columns ``dataset, seed, model, perturbation, split, common_set, metric, value``;
    ``common_set`` marks the doubles every model of that seed predicts (compare models on
    those). Metrics: :data:`METRICS`, plus ``l2_vs_true_profile`` (distance to the noise-free
    profile) when ``true_profiles`` is given (simulated data).
    """
    frames = []
    for r in results:
        part = {p: "test" for p in r.split.test} | {p: "val" for p in r.split.val}
        for model, pred in r.predictions.items():
            truth = observed.loc[pred.index, pred.columns]
            table = evaluate(
                pred, truth, control.reindex(pred.columns), perturbed_mean=r.perturbed_mean.reindex(pred.columns), metrics=list(METRICS)
            )
            if true_profiles is not None:
                table["l2_vs_true_profile"] = l2(pred, true_profiles.loc[pred.index, pred.columns])
            long = table.rename_axis("perturbation").reset_index().melt(id_vars="perturbation", var_name="metric", value_name="value")
            long.insert(0, "model", model)
            long.insert(0, "seed", r.seed)
            long.insert(0, "dataset", dataset)
            long.insert(4, "split", long["perturbation"].map(part))
            long.insert(5, "common_set", long["perturbation"].isin(set(r.common)))
            frames.append(long)
    return pd.concat(frames, ignore_index=True)


def summary_table(compare: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Mean and median L2, mean PearsonΔ against both references and counts, one row per model."""
    summary = compare.groupby(["model", "metric"], sort=False)["value"].agg(["mean", "median", "count"]).unstack("metric")
    summary = summary.reindex([m for m in order if m in summary.index])
    return pd.DataFrame(
        {
            "mean L2": summary[("mean", "l2")],
            "median L2": summary[("median", "l2")],
            "mean PearsonΔ vs control": summary[("mean", "pearson_delta_vs_control")],
            "mean PearsonΔ vs perturbed mean": summary[("mean", "pearson_delta_vs_perturbed_mean")],
            "doubles x seeds": summary[("count", "l2")].astype(int),
        }
    )


def per_seed_l2(compare: pd.DataFrame, order: Sequence[str] | pd.Index) -> pd.DataFrame:
    """Mean L2 per model (rows, in ``order``) and seed (columns)."""
    return compare[compare["metric"] == "l2"].pivot_table(index="model", columns="seed", values="value", aggfunc="mean").reindex(order)


def published_summary() -> pd.DataFrame:
    """The paper's mean and median L2 and mean PearsonΔ per model (real Norman data)."""
    pub = PUBLISHED["double_l2_pearson"]
    table = pub.pivot_table(index="model", columns=["metric", "statistic"], values="value", sort=False)
    return pd.DataFrame(
        {
            "mean L2": table[("l2", "mean")],
            "median L2": table[("l2", "median")],
            "mean PearsonΔ vs control": table[("pearson_delta_vs_control", "mean")],
        }
    ).reindex(pub["model"].unique())


def published_means(metric: str) -> pd.DataFrame:
    """The paper's mean of ``metric`` per model (``model, value``), for the figures."""
    pub = PUBLISHED["double_l2_pearson"]
    return pub[(pub["metric"] == metric) & (pub["statistic"] == "mean")][["model", "value"]]


def beside_published(main: pd.DataFrame) -> pd.DataFrame:
    """This run's summary and the published one side by side (rows: this run's models, then the paper's others)."""
    pub_table = published_summary()
    side = main[["mean L2", "median L2", "mean PearsonΔ vs control"]].join(
        pub_table, how="outer", lsuffix=" (this run)", rsuffix=" (published)"
    )
    return side.reindex(list(main.index) + [m for m in pub_table.index if m not in main.index])


def published_per_seed() -> pd.DataFrame:
    """The paper's mean L2 per model and seed."""
    return PUBLISHED["double_l2_per_seed"].pivot_table(index="model", columns="seed", values="value")


def noise_floor(results: Sequence[SeedResult], observed: pd.DataFrame, true_profiles: pd.DataFrame, genes: Sequence[str]) -> float:
    """Mean L2 between the observed and the true profiles of the common doubles (simulated data)."""
    noise = [
        float(np.sqrt(((observed.loc[r.common, genes] - true_profiles.loc[r.common, genes]) ** 2).sum(axis=1)).mean())
        for r in results
        if r.common
    ]
    return float(np.mean(noise)) if noise else np.nan


def cumulative_error(results: Sequence[SeedResult], observed: pd.DataFrame, control: pd.Series, common_only: bool = True) -> pd.DataFrame:
    """Mean cumulative L2 over doubles as genes are added, both orderings (Fig. 1B).

    Genes in the order of the gene set (by control expression, highest first) and, per
    double, by the observed :math:`|x - c|` (:func:`helpers.metrics.genes_by_change`),
    reported at :func:`helpers.metrics.published_rank_grid`. Long table:
    ``seed, model, ordering, n_genes, cumulative_l2``.
    """
    frames = []
    for r in results:
        for model, pred in r.predictions.items():
            perts = [p for p in pred.index if p in set(r.common)] if common_only else list(pred.index)
            if not perts:
                continue
            pred = pred.loc[perts]
            genes = list(pred.columns)
            truth = observed.loc[perts, genes]
            ranks = published_rank_grid(len(genes))
            for ordering, order in (
                ("by control expression", genes),
                ("by observed change", genes_by_change(truth, control.reindex(genes))),
            ):
                curve = cumulative_l2(pred, truth, order, ranks).mean(axis=0)
                frames.append(
                    pd.DataFrame(
                        {"seed": r.seed, "model": model, "ordering": ordering, "n_genes": curve.index, "cumulative_l2": curve.to_numpy()}
                    )
                )
    return (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["seed", "model", "ordering", "n_genes", "cumulative_l2"])
    )


def cumulative_table(curves: pd.DataFrame, order: Sequence[str], n_genes: int) -> pd.DataFrame:
    """Mean cumulative L2 at 10, 100 and all genes, per model and ordering."""
    mean_curves = curves.groupby(["ordering", "model", "n_genes"], sort=False)["cumulative_l2"].mean()
    points = [k for k in (10, 100, n_genes) if k <= n_genes]
    table = mean_curves.unstack("n_genes")[points].unstack("ordering").swaplevel(axis=1).sort_index(axis=1, level=0)
    return table.reindex([m for m in order if m in table.index])


# ---------------------------------------------------------------------------------------
# genetic interactions
# ---------------------------------------------------------------------------------------


def detection_scores(
    results: Sequence[SeedResult],
    observed_profiles: pd.DataFrame,
    control: pd.Series,
    null: InteractionNull,
    exclude: Sequence[str] = ("additive",),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Interaction detection of every model (Ahlmann-Eltze et al., Fig. 1C) on each seed's common doubles.

    For each seed and model (the additive model excluded: its prediction is the reference),
    the (double, gene) pairs of the common set are ranked by :math:`|\\hat{x} - a|` and compared
    with the observed non-additive pairs (``null``'s thresholds). Returns the TPR-vs-FDP
    curves (long: ``seed, model, fdp, tpr``) and one row per seed and model with
    ``auprc, auroc, tpr_at_fdp_0.5, tpr_at_fdp_0.8, positives, negatives``.
    """
    curves, scores = [], []
    for r in results:
        doubles = list(r.common)
        if not doubles:
            continue
        some = next(iter(r.predictions.values()))
        genes = list(some.columns)
        additive = additive_expectation(observed_profiles.loc[:, genes], doubles, control.reindex(genes))
        observed = observed_profiles.loc[doubles, genes]
        for model, pred in r.predictions.items():
            if model in exclude:
                continue
            pairs = detection_pairs(pred.loc[doubles, genes], additive, observed, null)
            curve = tpr_fdp_curve(pairs["score"], pairs["nonadditive"])
            auc = auc_scores(pairs["score"], pairs["nonadditive"])
            curves.append(pd.DataFrame({"seed": r.seed, "model": model, "fdp": curve.index, "tpr": curve.to_numpy()}))
            scores.append(
                {
                    "seed": r.seed,
                    "model": model,
                    "auprc": auc["auprc"],
                    "auroc": auc["auroc"],
                    "tpr_at_fdp_0.5": tpr_at_fdp(curve, 0.5),
                    "tpr_at_fdp_0.8": tpr_at_fdp(curve, 0.8),
                    "positives": int(auc["positives"]),
                    "negatives": int(auc["negatives"]),
                    "doubles": len(doubles),
                }
            )
    curve_cols = ["seed", "model", "fdp", "tpr"]
    return (pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=curve_cols), pd.DataFrame(scores))


def mean_se(frame: pd.DataFrame, value_columns: Sequence[str], by: str = "model") -> pd.DataFrame:
    """Mean and standard error (SD / sqrt(n), ddof = 1) over seeds of each value column."""
    grouped = frame.groupby(by, sort=False)[list(value_columns)]
    mean = grouped.mean()
    se = grouped.std(ddof=1) / np.sqrt(grouped.count())
    out = pd.concat({"mean": mean, "se": se}, axis=1).swaplevel(axis=1)
    return out[[(c, s) for c in value_columns for s in ("mean", "se")]]


def published_detection() -> pd.DataFrame:
    """The paper's AUPRC, AUROC (mean, se over 5 seeds) and TPR at FDP 0.5 and 0.8 per model."""
    pub_gi = PUBLISHED["gi_detection"].pivot_table(index="model", columns=["metric", "statistic"], values="value", sort=False)
    pub_tpr = PUBLISHED["gi_tpr_at_fdp"].pivot_table(index="model", columns="fdp", values="value", sort=False)
    return pd.DataFrame(
        {
            "AUPRC": pub_gi[("gi_auprc", "mean over 5 seeds")],
            "AUPRC se": pub_gi[("gi_auprc", "se over 5 seeds")],
            "AUROC": pub_gi[("gi_auroc", "mean over 5 seeds")],
            "AUROC se": pub_gi[("gi_auroc", "se over 5 seeds")],
            "TPR at FDP 0.5": pub_tpr[0.5],
            "TPR at FDP 0.8": pub_tpr[0.8],
        }
    ).reindex(PUBLISHED["gi_detection"]["model"].unique())


def published_detection_bars() -> pd.DataFrame:
    """The paper's AUPRC and AUROC in the long layout of :func:`helpers.plots.double_perturbations.auc_bars`."""
    return (
        PUBLISHED["gi_detection"]
        .pivot_table(index=["model", "metric"], columns="statistic", values="value", sort=False)
        .rename(columns={"mean over 5 seeds": "value", "se over 5 seeds": "se"})
        .reset_index()
    )


def published_class_counts(classes: Iterable[str]) -> pd.Series:
    """The paper's counts of the interaction classes in ``classes`` (real data, published rule)."""
    gi_pub = PUBLISHED["gi_classes"]
    return gi_pub[gi_pub["class"].isin(classes)].set_index("class")["value"]


# ---------------------------------------------------------------------------------------
# the results table and the conclusions
# ---------------------------------------------------------------------------------------

GI_METRICS = {"auprc": "gi_auprc", "auroc": "gi_auroc", "tpr_at_fdp_0.5": "gi_tpr_at_fdp_0.5", "tpr_at_fdp_0.8": "gi_tpr_at_fdp_0.8"}


def results_table(metrics: pd.DataFrame, det_scores: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The chapter's tidy results: per-double metrics plus, per seed and model, the detection scores.

    Detection rows have ``perturbation = "all common doubles"``, ``split = "test+val"``.
    """
    rows = [metrics]
    if not det_scores.empty:
        gi = det_scores.rename(columns=GI_METRICS)
        gi = gi.melt(id_vars=["seed", "model"], value_vars=list(GI_METRICS.values()), var_name="metric", value_name="value")
        gi.insert(0, "dataset", dataset)
        gi["perturbation"] = "all common doubles"
        gi["split"] = "test+val"
        gi["common_set"] = True
        rows.append(gi)
    return pd.concat(rows, ignore_index=True)


# ---------------------------------------------------------------------------------------
# the screen
# ---------------------------------------------------------------------------------------


@dataclass
class Screen:
    """What the chapter needs to know about a screen before any model runs.

    ``profiles`` (control included) and ``control``; ``singles``, ``doubles``; ``gi_doubles``
    the doubles with both singles measured (the only ones with an additive expectation) and
    ``no_singles`` the others with the reason; ``genes`` the evaluated gene set and
    ``notes`` what the reader should be told about it.
    """

    profiles: pd.DataFrame
    control: pd.Series
    singles: list[str]
    doubles: list[str]
    gi_doubles: list[str]
    no_singles: dict[str, str]
    genes: list[str]
    counts: pd.DataFrame
    notes: list[str]


def describe_screen(adata: AnnData, n_genes: int, dataset: str = "") -> Screen:
    """Profiles, the kinds of perturbations, the doubles with an additive expectation and the gene set.

    Raises :class:`helpers.errors.DataError` if the screen has no double perturbations.
    """
    from ..data.genesets import top_expressed_genes
    from ..data.pseudobulk import profiles as screen_profiles
    from ..stats.interactions import doubles_with_singles

    obs = screen_profiles(adata)
    control = obs.loc["control"]
    perturbations = [p for p in obs.index if p != "control"]
    singles = [p for p in perturbations if len(target_genes(p)) == 1]
    doubles = [p for p in perturbations if len(target_genes(p)) == 2]
    if not doubles:
        raise DataError(
            f"{dataset or 'the screen'} has no double perturbations; this chapter needs a screen with doubles "
            "(e.g. norman_like or norman2019_subset)."
        )
    gi_doubles, no_singles = doubles_with_singles(doubles, singles)
    cells = adata.obs["perturbation"].astype(str).value_counts()
    counts = pd.DataFrame(
        {
            "perturbations": [len(singles), len(doubles), len(gi_doubles)],
            "median cells": [
                int(cells[singles].median()) if singles else 0,
                int(cells[doubles].median()) if doubles else 0,
                int(cells[gi_doubles].median()) if gi_doubles else 0,
            ],
        },
        index=["singles", "doubles", "doubles with both singles measured"],
    )
    notes = [f"control cells: {int(cells.get('control', 0)):,}"]
    n_used = min(int(n_genes), adata.n_vars)
    if n_used < n_genes:
        notes.append(f"The screen has only {adata.n_vars} genes: evaluating on all of them instead of the top {n_genes}.")
    genes = top_expressed_genes(adata, n_used)
    notes.append(f"Gene set: the {n_used:,} genes with the highest control mean (from {genes[0]} to {genes[-1]}).")
    return Screen(obs, control, singles, doubles, list(gi_doubles), dict(no_singles), genes, counts, notes)


def real_data_notes(adata: AnnData, screen: Screen, seeds: Sequence[int]) -> list[str]:
    """What a real screen can and cannot show in this chapter, computed from it (empty for a simulated screen).

    Counts the genes that carry signal (non-zero control mean; non-zero in any cell), the
    doubles with both singles (the only ones with an additive expectation and an interaction
    analysis), the evaluated doubles of each seed that have both singles, and the targeted
    genes that are measured (the linear model embeds a target by its row of a PCA over genes).
    """
    if "simulation" in adata.uns:
        return []
    from ..data.canonical import target_genes as targets

    genes = list(screen.genes)
    control = screen.control.reindex(genes)
    expressed = int((control > 0).sum())
    X = adata[:, genes].X
    nonzero_any = int((np.asarray((X != 0).sum(axis=0)).ravel() > 0).sum())
    per_seed = []
    for seed in seeds:
        split = double_perturbation_split(adata, seed)
        evaluated = [str(p) for p in split.evaluated if len(target_genes(p)) == 2]
        per_seed.append(sum(p in set(screen.gi_doubles) for p in evaluated))
    target_set = sorted({g for p in screen.singles + screen.doubles for g in targets(p)})
    measured = [g for g in target_set if g in set(adata.var_names)]
    lines = [
        f"* **Genes**: {expressed} of the {len(genes)} evaluated genes have a non-zero mean in control cells and "
        f"{nonzero_any} are non-zero in at least one cell; the other {len(genes) - nonzero_any} are zero everywhere and "
        "add nothing but zeros to every error and every correlation.",
        f"* **Doubles**: {len(screen.gi_doubles)} of the {len(screen.doubles)} doubles have both singles measured "
        f"({', '.join(screen.gi_doubles) or 'none'}); only these have an additive expectation, so the additive model, "
        "the common set and the interaction analysis rest on them alone.",
        "* **Per seed**: of the evaluated (test + validation) doubles, "
        + ", ".join(f"seed {s}: {n}" for s, n in zip(seeds, per_seed))
        + " have both singles; the seeds share most of them, so the five seeds are far from five independent samples.",
        f"* **Targets**: {len(measured)} of the {len(target_set)} targeted genes {'is' if len(measured) == 1 else 'are'} in the gene panel"
        + (f" ({', '.join(measured)})" if measured else "")
        + "; a model that embeds a target by its expression (the linear model) cannot place the others.",
        "* **What can be compared with the paper**: only the qualitative pattern (does a model beat the additive one; "
        "does any model rank the non-additive pairs better than no change); the numbers are on 500 genes and a handful of "
        "doubles, not on the published 19,264 genes and 124 doubles.",
    ]
    return lines


def split_counts(adata: AnnData, seeds: Sequence[int]) -> pd.DataFrame:
    """Train / val / test counts of singles and doubles per seed (rows: seeds)."""
    table = pd.concat({s: double_perturbation_split(adata, s).counts() for s in seeds}, names=["seed", "part"])
    return table.unstack("part").swaplevel(axis=1).sort_index(axis=1, level=0)


# ---------------------------------------------------------------------------------------
# the empirical null of the deviations from additivity
# ---------------------------------------------------------------------------------------


def null_doubles(screen: Screen, results: Sequence[SeedResult], which: str) -> list[str]:
    """The doubles the null is fitted on: every double with both singles (``"all"``) or the first seed's evaluated ones."""
    if which == "all":
        return list(screen.gi_doubles)
    return [p for p in results[0].evaluated if p in set(screen.gi_doubles)]


def fit_null(screen: Screen, doubles: Sequence[str], gi_fdr: float) -> tuple[InteractionNull, list[str]]:
    """The empirical null of the deviations of ``doubles`` on the gene set, and the notes to print.

    When the spline of the local-fdr fit misses the histogram's sharp centre (misfit above
    1.5), a finer fit (999 bins, df 15) is run as a sensitivity check and its thresholds are
    reported beside the published defaults' (which are used).
    """
    from ..stats.interactions import deviation_from_additive, fit_interaction_null, undetected_pairs

    genes, obs, control = screen.genes, screen.profiles, screen.control
    doubles = list(doubles)
    deviation = deviation_from_additive(obs[genes], doubles, control[genes]) if doubles else pd.DataFrame()
    silent = undetected_pairs(obs[genes], doubles, control[genes]) if doubles else None
    null = fit_interaction_null(deviation, target_fdr=gi_fdr, exclude=silent)
    notes = [f"Deviations of {len(doubles)} doubles x {len(genes)} genes; {null.n_values:,} (double, gene) pairs in the fit."]
    if null.message:
        notes.append(null.message)
    notes += [f"Note: {n}" for n in null.notes]
    if null.fit is not None and null.fit.misfit > 1.5:
        finer = fit_interaction_null(deviation, target_fdr=gi_fdr, exclude=silent, bre=1000, df=15)
        notes.append(
            f"A few large deviations stretch the histogram's range, so the default spline (119 bins, df 7) fits its sharp "
            f"centre poorly. Sensitivity check with 999 bins and df 15: thresholds {finer.lower:+.3f} / {finer.upper:+.3f} "
            f"(misfit {finer.fit.misfit:.1f}) against {null.lower:+.3f} / {null.upper:+.3f} with the published defaults, "
            "which are used below."
        )
    return null, notes


def published_null_line() -> str:
    """The published null fit (v1, five seeds pooled, real data), as one sentence."""
    v1 = PUBLISHED["gi_null_v1"].set_index("metric")["value"]
    return (
        f"Published reference (v1, 5-seed pool, real data): delta {v1['gi_null_delta']}, sigma {v1['gi_null_sigma']}, "
        f"p0 {v1['gi_null_p0']}, thresholds {v1['gi_lower_threshold']} / +{v1['gi_upper_threshold']}."
    )


def class_table(screen: Screen, doubles: Sequence[str], null: InteractionNull) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Interaction classes of every (double, gene) pair under both rules, and their counts beside the published ones."""
    from ..stats.interactions import RULES, class_counts, interaction_classes

    genes = screen.genes
    classes = {
        rule: interaction_classes(screen.profiles[genes], list(doubles), null.lower, null.upper, screen.control[genes], rule=rule)
        for rule in RULES
    }
    counts = pd.DataFrame({f"{rule} rule": class_counts(classes[rule])["pairs"] for rule in RULES})
    counts["published (real data, published rule)"] = published_class_counts(counts.index).reindex(counts.index)
    return classes, counts


def noise_model_calls(
    adata: AnnData, screen: Screen, doubles: Sequence[str], null: InteractionNull, gi_fdr: float
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The per-gene noise model's calls (:func:`helpers.stats.interactions.standardised_calls`) beside the single null's.

    Returns ``(calls, comparison, sentence)``: the long table of every (double, gene) pair, the
    counts of :func:`~helpers.stats.interactions.call_comparison`, and one sentence computed from them.
    """
    from ..stats.interactions import call_comparison, deviation_from_additive, deviation_noise, standardised_calls

    noise = deviation_noise(adata, list(doubles), screen.genes)
    calls = standardised_calls(noise, gi_fdr)
    # the single null's call of the chapter's own deviations (from the pseudobulk profiles, as in the class table)
    profile_dev = deviation_from_additive(screen.profiles[screen.genes], list(doubles), screen.control[screen.genes])
    calls["called_single_null"] = null.is_nonadditive(profile_dev.loc[list(doubles), list(screen.genes)].to_numpy().ravel())
    comparison = call_comparison(calls, gi_fdr)
    old = calls[calls["called_single_null"]]
    n_new, n_both = int(calls["called"].sum()), int((calls["called"] & calls["called_single_null"]).sum())
    sentence = (
        f"The single empirical null calls {len(old):,} pairs non-additive; judged by each pair's own sampling noise, "
        f"{n_both:,} of them reach a Benjamini–Hochberg q ≤ {gi_fdr}"
        + (f" (their median |z| is {old['z'].abs().median():.2f})" if len(old) else "")
        + f", and the per-gene noise model calls {n_new:,} pairs in all."
    )
    if len(old) and n_both < 0.5 * len(old):
        sentence += (
            " Most of the single null's calls are therefore indistinguishable from the sampling noise of the four means "
            "(double, both singles, control)"
        )
        defined = calls[np.isfinite(calls["z"])]
        if null.fit is not None and len(defined):
            wider = float((defined["se"] > null.fit.sigma).mean())
            sentence += (
                f": the single null's width (σ = {null.fit.sigma:.3f}) is smaller than the standard error of {wider:.0%} of the "
                "pairs: one width for all genes, set by the many that barely vary, is too narrow for the others"
            )
        sentence += "."
    return calls, comparison, sentence


def noise_model_recovery(adata: AnnData, calls: pd.DataFrame, doubles: Sequence[str], genes: Sequence[str]) -> pd.DataFrame:
    """On a simulated screen: precision and recall of the single-null and of the per-gene calls against the true interactions.

    A pair truly interacts when the simulator's label says so
    (:func:`helpers.data.simulate.interaction_labels`); one row per noise model with
    ``calls, true_interactions, called_and_true, precision, recall``.
    """
    from ..data.simulate import interaction_labels

    truth = interaction_labels(adata)
    truth = truth[truth["perturbation"].isin(list(doubles)) & truth["gene"].isin(list(genes))]
    true = set(zip(truth["perturbation"].astype(str), truth["gene"].astype(str)))
    keys = list(zip(calls["perturbation"].astype(str), calls["gene"].astype(str)))
    is_true = np.array([k in true for k in keys])
    rows = {}
    for label, column in (("single empirical null", "called_single_null"), ("per-gene noise model", "called")):
        called = calls[column].to_numpy(dtype=bool)
        hit = int((called & is_true).sum())
        rows[label] = {
            "calls": int(called.sum()),
            "true_interactions": int(is_true.sum()),
            "called_and_true": hit,
            "precision": hit / called.sum() if called.any() else np.nan,
            "recall": hit / is_true.sum() if is_true.any() else np.nan,
        }
    return pd.DataFrame(rows).T.rename_axis("noise model")


def norman_fit_comparison(adata: AnnData, screen: Screen, simulated: bool) -> tuple[pd.DataFrame | None, pd.DataFrame | None, list[str]]:
    """Norman et al.'s interaction fits beside this run's estimates of the same quantities, for the doubles the screen holds.

    The doubles with both singles measured that Norman et al.'s file lists (all 125 on the
    downloaded Norman data) are fitted with :func:`helpers.stats.interactions.interaction_fits` in
    the published orientation, on every gene expressed in control that is not a target.
    Returns ``(table, agreement, notes)``; ``table`` and ``agreement`` are None (and ``notes``
    says why) on a simulated screen or when no double is in the file.
    """
    from ..data.gi_fits import read_norman_gi_fits
    from ..stats.interactions import compare_fits, interaction_fits

    if simulated:
        return None, None, ["A simulated screen: Norman et al.'s fits are of the real cells, so there is nothing to compare."]
    published = read_norman_gi_fits()
    doubles = [d for d in screen.gi_doubles if d in published.index]
    if not doubles:
        return None, None, [f"None of the {len(screen.gi_doubles)} doubles with both singles is among Norman et al.'s 125 fits."]
    pairs = [(published.loc[d, "first"], published.loc[d, "second"]) for d in doubles]
    ours = interaction_fits(adata, pairs)
    table, agreement = compare_fits(ours, published)
    n_genes = int(ours["n_genes"].iloc[0])
    notes = [
        f"{len(doubles)} of Norman et al.'s 125 doubles are in this screen with both singles; each is fitted over the "
        f"{n_genes} genes that are expressed in control cells and not targeted (Norman et al.: the genes above 0.5 UMI "
        "per cell of the whole transcriptome, so the two fits see different genes)."
    ]
    if len(doubles) < 10:
        notes.append(
            f"With {len(doubles)} doubles a correlation over doubles is a rough indication at best (one double can flip its sign)."
        )
    return table, agreement, notes


def norman_fit_line(agreement: pd.DataFrame) -> str:
    """One sentence on how well this run's fits agree with the published ones (from the agreement table)."""
    a = agreement.dropna(subset=["pearson"])
    if a.empty:
        return "Too few doubles for a correlation."
    parts = [f"{q} r = {row['pearson']:.2f}" for q, row in a.iterrows()]
    return (
        f"Pearson correlation over {int(a['doubles'].max())} doubles between this run's and Norman et al.'s values: "
        + "; ".join(parts)
        + "."
    )


def truth_recovery(
    adata: AnnData, classes: pd.DataFrame, doubles: Sequence[str], genes: Sequence[str]
) -> tuple[pd.Series, pd.DataFrame, pd.DataFrame, str]:
    """On a simulated screen: calls against the true interactions.

    Returns ``(stats, confusion, by_size, opposite_note)``: precision and recall of the calls
    (any class but additive), the confusion of true label and called class, recall by the
    size of the true deviation, and a sentence about 'opposite' calls on truly additive
    pairs (empty if none).
    """
    from ..data.simulate import interaction_labels
    from ..stats.interactions import compare_with_truth

    truth = interaction_labels(adata)
    truth = truth[truth["perturbation"].isin(list(doubles)) & truth["gene"].isin(list(genes))]
    stats, confusion = compare_with_truth(classes, truth)
    note = ""
    if "opposite" in confusion.columns and "none" in confusion.index and confusion["opposite"].sum():
        n_opp, n_none = int(confusion["opposite"].sum()), int(confusion.loc["none", "opposite"])
        note = (
            f"{n_none} of the {n_opp} pairs called 'opposite' are truly additive: when the singles' changes are small, "
            "noise alone can carry the double across control (the published rule calls these 'other')."
        )
    called = classes.merge(
        truth[["perturbation", "gene", "deviation"]].rename(columns={"deviation": "true_deviation"}),
        on=["perturbation", "gene"],
        how="inner",
    )
    called["true |deviation|"] = pd.cut(called["true_deviation"].abs(), [0.05, 0.1, 0.2, 0.5, np.inf])
    by_size = called.groupby("true |deviation|", observed=False).agg(
        true_pairs=("class", "size"), recalled=("class", lambda c: float((c.astype(str) != "additive").mean()) if len(c) else np.nan)
    )
    return stats, confusion, by_size, note


def detection_summary(det_scores: pd.DataFrame, order: Sequence[str]) -> tuple[pd.DataFrame, float]:
    """Mean ± s.e. over seeds of AUPRC, AUROC and TPR at FDP 0.5 / 0.8, and the share of non-additive pairs (random AUPRC)."""
    det_order = [m for m in order if m in set(det_scores["model"])]
    summary = mean_se(det_scores.set_index("model").loc[det_order].reset_index(), ["auprc", "auroc", "tpr_at_fdp_0.5", "tpr_at_fdp_0.8"])
    positives = det_scores.groupby("seed")[["positives", "negatives"]].first()
    share = float((positives["positives"] / (positives["positives"] + positives["negatives"])).mean())
    return summary, share


def conclusions(
    main: pd.DataFrame,
    compare: pd.DataFrame,
    simulated: bool,
    floor: float,
    null: InteractionNull,
    classes: dict | None,
    gi_fdr: float,
    recovery: pd.Series | None,
    det_summary: pd.DataFrame,
    share: float,
) -> list[str]:
    """The sentences of "What this run shows", each computed from this run's numbers."""
    from ..stats.interactions import class_counts

    lines = []
    if len(main) and main["mean L2"].notna().any():
        l2_mean = main["mean L2"].dropna().sort_values()
        best = l2_mean.index[0]
        lines.append(
            f"* Lowest mean L2 on the {int(main['doubles x seeds'].max())} common double x seed pairs: **{best}** "
            f"({l2_mean.iloc[0]:.3f}); order: " + ", ".join(f"{m} {v:.2f}" for m, v in l2_mean.items()) + "."
        )
        if {"additive", "no change"} <= set(l2_mean.index):
            ratio = l2_mean["additive"] / l2_mean["no change"]
            lines.append(
                f"* The additive model's error is {ratio:.2f} times that of predicting no change "
                f"(published on the real data: {2.766 / 5.617:.2f})."
            )
        if "additive" in l2_mean.index:
            better = [m for m in l2_mean.index if l2_mean[m] < l2_mean["additive"]]
            lines.append(
                "* Models with a lower mean L2 than the additive model: "
                + (", ".join(better) if better else "none")
                + " (published: none of GEARS, scGPT, scFoundation, UCE, scBERT, Geneformer, CPA)."
            )
        if simulated:
            truth_l2 = compare[compare["metric"] == "l2_vs_true_profile"].groupby("model")["value"].mean().sort_values()
            lines.append(
                f"* Against the true (noise-free) profiles the best model is **{truth_l2.index[0]}** ({truth_l2.iloc[0]:.3f}); "
                f"the observed doubles themselves lie {floor:.2f} from the truth, so part of every error above is measurement "
                "noise (the additive model adds the noise of two singles)."
            )
    if null.ok and classes is not None:
        c = class_counts(classes["suite"])
        nonadd = int(c.loc[[k for k in c.index if k != "additive"], "pairs"].sum())
        lines.append(
            f"* Thresholds {null.lower:+.3f} / {null.upper:+.3f} (local fdr {gi_fdr}) call {nonadd:,} of "
            f"{int(c['pairs'].sum()):,} pairs non-additive ({nonadd / c['pairs'].sum():.1%}; published: 4.06 %); "
            + ", ".join(f"{k} {int(v):,}" for k, v in c["pairs"].items() if k != "additive")
            + "."
        )
        if simulated and recovery is not None:
            lines.append(
                f"* Of the truly interacting pairs, the analysis recovers {recovery['recall']:.1%}, and "
                f"{recovery['precision']:.1%} of its calls are true interactions."
            )
    if not det_summary.empty:
        auprc = det_summary[("auprc", "mean")].sort_values(ascending=False)
        lines.append(
            f"* Best at ranking the non-additive pairs (AUPRC): **{auprc.index[0]}** ({auprc.iloc[0]:.3f}; random {share:.3f})"
            + (f"; no change reaches {auprc['no change']:.3f}" if "no change" in auprc.index and auprc.index[0] != "no change" else "")
            + " (published: no change 0.33 beat every deep-learning model)."
        )
    return lines


__all__ = [
    "FDP_GRID",
    "Screen",
    "class_table",
    "common_set_lines",
    "conclusions",
    "describe_screen",
    "detection_summary",
    "fit_null",
    "noise_floor",
    "noise_model_calls",
    "noise_model_recovery",
    "norman_fit_comparison",
    "norman_fit_line",
    "null_doubles",
    "published_class_counts",
    "published_detection",
    "published_detection_bars",
    "published_means",
    "published_null_line",
    "published_per_seed",
    "published_summary",
    "real_data_notes",
    "split_counts",
    "truth_recovery",
    "METRICS",
    "MODELS",
    "NAME",
    "PARAMETERS",
    "SeedResult",
    "beside_published",
    "chosen_models",
    "cumulative_error",
    "cumulative_table",
    "detection_scores",
    "exclusion_reasons",
    "exclusion_table",
    "fit_summary",
    "fit_table",
    "gears_provenance",
    "mean_se",
    "models_for_seed",
    "per_perturbation_metrics",
    "per_seed_l2",
    "results_table",
    "run_benchmark",
    "run_seed",
    "summary_table",
]
