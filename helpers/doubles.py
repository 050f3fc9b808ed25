"""The double-perturbation benchmark (Ahlmann-Eltze, Huber & Anders 2025): models, seeds, evaluation.

The notebook ``double_perturbations`` calls these functions; they hold the loop so that it
is tested here and the notebook stays a chapter:

* :func:`make_model` — every model of the benchmark by its result-table name;
* :func:`run_seed` — one split (:func:`helpers.data.double_perturbation_split`): fit every
  model on the training part, predict the evaluated doubles (test + val) it can, record
  which it cannot and why, and the doubles every model predicts (the *common set*);
* :func:`per_perturbation_metrics` — L2, PearsonΔ against control and against the
  perturbed mean (and, on simulated data, L2 against the true profile) per double;
* :func:`cumulative_error` — error as genes are added (Fig. 1B of the paper);
* :func:`detection_scores` — TPR-vs-FDP curves and AUPRC/AUROC of every model's
  interaction calls (:mod:`helpers.interactions`).

Gene set: every model is evaluated on the ``genes`` given (the top-``n`` genes by control
mean). The baselines and the torch models are fitted on those genes only; the linear
model is fitted on all genes, because its perturbation embedding of gene ``g`` is row ``g``
of a PCA over genes (a target outside the gene set would otherwise be unembeddable).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .data.canonical import DataError, target_genes
from .data.pseudobulk import profiles as _profiles
from .data.pseudobulk import pseudobulk
from .data.splits import Split, double_perturbation_split
from .interactions import FDP_GRID, InteractionNull, additive_expectation, auc_scores, detection_pairs, tpr_at_fdp, tpr_fdp_curve
from .models.external import PredictionsFile
from .metrics import cumulative_l2, evaluate, genes_by_change, l2, perturbed_mean, published_rank_grid

#: Models of the benchmark, in display order (result-table names).
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
TORCH_MODELS = ("linear additive (torch)", "latent additive (torch)", "decoder only (torch)")
#: Models that train for a while (switched off together by the notebook's ``run_slow_models``).
SLOW_MODELS = TORCH_MODELS + ("GEARS",)

#: Per-double metrics written to the results table.
METRICS = ("l2", "pearson_delta_vs_control", "pearson_delta_vs_perturbed_mean")


def make_model(name: str, seed: int = 0, torch_max_seconds: float = 60.0, torch_training: str = "pseudobulk", gears_epochs: int = 2):
    """A fresh model by its result-table name.

    ``mean`` is the perturbation-weighted mean of the training profiles with the control
    profile counted as one more training condition (the published R code of the paper);
    ``linear`` is :class:`helpers.models.linear.LinearModel` with the published K = 10,
    λ = 0.1, a double embedded as the sum of its two genes' embeddings. The torch models get
    ``seed``, a time bound of ``torch_max_seconds`` per fit and ``torch_training``
    (``"pseudobulk"`` or ``"cells"``). ``GEARS`` is :class:`helpers.models.gears.GEARSModel`
    trained for ``gears_epochs`` epochs in its own environment (built on first use).
    """
    from .models.baselines import Additive, MeanBaseline, NoChange

    if name == "no change":
        return NoChange()
    if name == "additive":
        return Additive()
    if name == "mean":
        return MeanBaseline(weighting="perturbation", include_control=True)
    if name == "linear":
        from .models.linear import LinearModel

        return LinearModel(n_components=10, ridge=0.1, seed=seed)
    if name in TORCH_MODELS:
        from .models.perturbench import MODELS as TORCH

        return TORCH[name](seed=seed, max_seconds=torch_max_seconds, training=torch_training)
    if name == "GEARS":
        from .models.gears import GEARSModel

        return GEARSModel(epochs=gears_epochs, seed=seed, n_threads=1)
    raise DataError(f"unknown model {name!r}; choose from {list(MODELS)} (or give a predictions file).")


@dataclass
class SeedResult:
    """Everything one split produced.

    ``predictions[model]`` holds the evaluated doubles that model predicts (rows) on the
    gene set (columns); ``excluded[model]`` the evaluated doubles it cannot predict, with the
    reason; ``dropped`` the models that predict none of them (left out of the common set);
    ``common`` the doubles every other model predicts; ``fits`` one row per model (fit
    seconds, epochs and stopping reason of the torch models).
    """

    seed: int
    split: Split
    evaluated: list[str]
    predictions: dict[str, pd.DataFrame]
    excluded: dict[str, dict[str, str]]
    dropped: dict[str, str]
    common: list[str]
    fits: pd.DataFrame
    perturbed_mean: pd.Series
    notes: list[str] = field(default_factory=list)


def run_seed(
    adata,
    genes: Sequence[str],
    seed: int,
    models: Mapping[str, object] | Sequence[str],
    torch_max_seconds: float = 60.0,
    torch_training: str = "pseudobulk",
    progress=None,
) -> SeedResult:
    """Fit every model on one split and predict the evaluated doubles.

    Parameters
    ----------
    adata
        Canonical screen (cells).
    genes
        The evaluated gene set.
    seed
        Split seed (also the torch models' seed).
    models
        Model names (see :data:`MODELS`), or a dict name -> unfitted model (e.g. a
        :class:`helpers.models.external.PredictionsFile`).
    progress
        Optional callable ``progress(model_name)`` called before each fit (e.g. a tqdm
        bar's ``set_postfix_str``).
    """
    genes = list(genes)
    split = double_perturbation_split(adata, seed)
    split = Split(split.name, split.seed, *(tuple(str(p) for p in getattr(split, part)) for part in ("train", "val", "test")))
    evaluated = [p for p in split.evaluated if len(target_genes(p)) == 2]
    train_cells = split.subset(adata, "train")
    train_all = pseudobulk(train_cells)
    train_genes = train_all[:, genes].copy() if torch_training == "pseudobulk" else train_cells[:, genes].copy()
    train_gene_pb = pseudobulk(train_genes)
    if not isinstance(models, Mapping):
        models = {name: make_model(name, seed, torch_max_seconds, torch_training) for name in models}
    predictions, excluded, dropped, rows = {}, {}, {}, []
    for name, model in models.items():
        if progress is not None:
            progress(name)
        start = time.perf_counter()
        try:
            if name == "linear":
                model.fit(train_all)
            elif type(model).__name__ == "GEARSModel":
                # GEARS fixes its graph of perturbable genes before training: give it the targets to predict
                if model.perturbable_genes is None:
                    model.perturbable_genes = sorted({g for p in evaluated for g in target_genes(p)})
                model.fit(train_cells[:, genes].copy())
            elif name in TORCH_MODELS:
                model.fit(train_genes)
            else:
                model.fit(train_gene_pb)
        except DataError as err:
            if isinstance(model, PredictionsFile):
                raise  # a user's file that does not fit the data is an error, not an exclusion
            seconds = time.perf_counter() - start
            excluded[name] = {p: "model could not be fitted" for p in evaluated}
            dropped[name] = f"could not be fitted on this split: {err}"
            rows.append({"seed": seed, "model": name, "fit_seconds": seconds, "epochs": np.nan, "stopped_because": "",
                         "predicted": 0, "excluded": len(evaluated)})
            continue
        seconds = time.perf_counter() - start
        bad = model.unpredictable(evaluated)
        ok = [p for p in evaluated if p not in bad]
        excluded[name] = dict(bad)
        if ok:
            predictions[name] = model.predict(ok).loc[:, genes]
        else:
            dropped[name] = f"cannot predict any of the {len(evaluated)} evaluated doubles (e.g. {next(iter(bad.values()), '')})"
        rows.append(
            {
                "seed": seed,
                "model": name,
                "fit_seconds": seconds,
                "epochs": getattr(model, "n_epochs_", np.nan),
                "stopped_because": getattr(model, "stopped_because_", ""),
                "predicted": len(ok),
                "excluded": len(bad),
            }
        )
    common = [p for p in evaluated if all(p in pred.index for pred in predictions.values())]
    train_profiles = _profiles(train_genes, include_control=False)
    return SeedResult(
        seed=seed,
        split=split,
        evaluated=evaluated,
        predictions=predictions,
        excluded=excluded,
        dropped=dropped,
        common=common,
        fits=pd.DataFrame(rows),
        perturbed_mean=perturbed_mean(train_profiles),
    )


def exclusion_table(results: Sequence[SeedResult]) -> pd.DataFrame:
    """Per seed and model: evaluated doubles, how many the model predicts and excludes, common-set membership."""
    rows = []
    for r in results:
        for model, bad in r.excluded.items():
            rows.append({"seed": r.seed, "model": model, "evaluated": len(r.evaluated), "predicted": len(r.evaluated) - len(bad),
                         "excluded": len(bad), "in common set": model not in r.dropped})
    return pd.DataFrame(rows)


def exclusion_reasons(results: Sequence[SeedResult]) -> pd.DataFrame:
    """Every excluded (model, double) with its reason and the seeds in which it was evaluated and excluded.

    Columns ``model, reason, perturbation, seeds`` (e.g. ``"1, 3"``), sorted by model and reason.
    """
    seen: dict[tuple[str, str, str], list[int]] = {}
    for r in results:
        for model, bad in r.excluded.items():
            for p, why in bad.items():
                seen.setdefault((model, why, p), []).append(r.seed)
    rows = [{"model": m, "reason": why, "perturbation": p, "seeds": ", ".join(map(str, s))} for (m, why, p), s in seen.items()]
    frame = pd.DataFrame(rows, columns=["model", "reason", "perturbation", "seeds"])
    return frame.sort_values(["model", "reason", "perturbation"], kind="stable").reset_index(drop=True)


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
            table = evaluate(pred, truth, control.reindex(pred.columns), perturbed_mean=r.perturbed_mean.reindex(pred.columns),
                             metrics=list(METRICS))
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


def cumulative_error(
    results: Sequence[SeedResult], observed: pd.DataFrame, control: pd.Series, common_only: bool = True
) -> pd.DataFrame:
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
            for ordering, order in (("by control expression", genes), ("by observed change", genes_by_change(truth, control.reindex(genes)))):
                curve = cumulative_l2(pred, truth, order, ranks).mean(axis=0)
                frames.append(pd.DataFrame({"seed": r.seed, "model": model, "ordering": ordering, "n_genes": curve.index,
                                            "cumulative_l2": curve.to_numpy()}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["seed", "model", "ordering", "n_genes", "cumulative_l2"])


def detection_scores(
    results: Sequence[SeedResult], observed_profiles: pd.DataFrame, control: pd.Series, null: InteractionNull,
    exclude: Sequence[str] = ("additive",),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Interaction detection of every model (METHODS.md A.5.5–6) on each seed's common doubles.

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
            scores.append({"seed": r.seed, "model": model, "auprc": auc["auprc"], "auroc": auc["auroc"],
                           "tpr_at_fdp_0.5": tpr_at_fdp(curve, 0.5), "tpr_at_fdp_0.8": tpr_at_fdp(curve, 0.8),
                           "positives": int(auc["positives"]), "negatives": int(auc["negatives"]), "doubles": len(doubles)})
    curve_cols = ["seed", "model", "fdp", "tpr"]
    return (pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=curve_cols),
            pd.DataFrame(scores))


def mean_se(frame: pd.DataFrame, value_columns: Sequence[str], by: str = "model") -> pd.DataFrame:
    """Mean and standard error (SD / sqrt(n), ddof = 1) over seeds of each value column."""
    grouped = frame.groupby(by, sort=False)[list(value_columns)]
    mean = grouped.mean()
    se = grouped.std(ddof=1) / np.sqrt(grouped.count())
    out = pd.concat({"mean": mean, "se": se}, axis=1).swaplevel(axis=1)
    return out[[(c, s) for c in value_columns for s in ("mean", "se")]]


__all__ = [
    "FDP_GRID",
    "METRICS",
    "MODELS",
    "SLOW_MODELS",
    "TORCH_MODELS",
    "SeedResult",
    "cumulative_error",
    "detection_scores",
    "exclusion_reasons",
    "exclusion_table",
    "make_model",
    "mean_se",
    "per_perturbation_metrics",
    "run_seed",
]
