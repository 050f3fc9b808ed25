"""Progress bars: the worst acceptable and best achievable performance, and the gap a model closes.

Cole et al. (2026) place every perturbation-effect predictor on a bar from
the **worst acceptable performance** (WAP, what a method without information reaches) to
the **best achievable performance** (BAP, what a method could reach if it knew the answer
up to measurement noise). For a model with error ``L2_model``,

.. math:: \\text{fraction of gap closed} = \\frac{L2_{WAP} - L2_{model}}{L2_{WAP} - L2_{BAP}},

0 at the WAP and 1 at the BAP. All errors are ``L2 = mean over a fold's test perturbations of
||Δ̂_p − Δ_p||₂`` (over all genes), summarised by the median over the folds.

Two definitions are computed, named clearly:

``fraction_gap_closed``
    this suite's (issue 7): WAP = the best (lowest median L2) of the null methods — training
    mean, no change, random embedding, PCA embeddings; BAP = the *tightest* of the cheater
    bounds — the larger median L2 of the idealized PCA of train+test labels and of the
    bootstrap experimental error. Larger is tighter because both claim "no honest model gets
    below this error": the idealized PCA sees the test labels, noise included, and can go
    below the noise floor; a bound that is lower than another is the looser one.
``fraction_gap_closed_published``
    the published figure's (``fig_1.ipynb``): WAP = training mean, BAP = experimental error.

The experimental error is a two-stage bootstrap (:func:`bootstrap_error`): resample batches,
then cells within batches, and take the 0.9 quantile of ``||Δ_boot − Δ_point||₂`` per
perturbation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..console import progress_bar
from ..data.canonical import CONTROL
from ..data.splits import Split, kfold_split
from ..errors import DataError
from ..metrics.calibration import fraction_gap_closed
from ..models.embedding_regressor import one_blas_thread
from ..params import SEED_MAX, Param, Schema
from ..published import cole2026
from ..results import tidy
from ..stats.bootstrap import bootstrap_error
from .engine import TrainingData, run_folds

if TYPE_CHECKING:
    from anndata import AnnData

    from ..models.base import PerturbationModel
    from ..models.embedding_regressor import EmbeddingSource

#: Model names of the null methods and cheaters that are not embeddings (the two nulls are registry models).
TRAIN_MEAN = "mean (perturbations)"
NO_CHANGE = "no change"
NULL_MODELS = (TRAIN_MEAN, NO_CHANGE)
EXPERIMENTAL_ERROR = "experimental error (cheater)"
TRUE_ERROR = "true effect (simulation)"


# ---------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------


def context_changes(
    adata: AnnData, context_key: str = "context", batch_key: str | None = "batch", singles_only: bool = True
) -> dict[str, pd.DataFrame]:
    """Change from control of every perturbation, separately per context (cell line).

    For cells: per context ``k``, ``Δ_p^k = x̄_p^k − x̄_control^k`` where each mean averages
    the batches with equal weight (Cole et al.: mean by gem group, then mean over gem groups)
    — :func:`helpers.data.changes` on the cells of that context. Each context uses its own
    control cells. Data without ``obs[context_key]`` are one context named ``"all"``;
    without ``obs[batch_key]`` the cells are pooled.

    For precomputed changes (``uns['kind'] == 'changes'``, e.g. ``essential_pseudobulk``):
    the rows of each context.

    Returns
    -------
    dict
        context -> perturbations x genes DataFrame (sorted perturbations; doubles dropped
        when ``singles_only``, listed in ``frame.attrs["dropped_doubles"]``).
    """
    from ..data.pseudobulk import changes

    if adata.uns.get("kind") == "changes":
        if context_key not in adata.obs:
            raise DataError(f"the changes table has no obs column {context_key!r}")
        out = {}
        X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
        for ctx in sorted(adata.obs[context_key].astype(str).unique()):
            mask = (adata.obs[context_key].astype(str) == ctx).to_numpy()
            frame = pd.DataFrame(X[mask], index=adata.obs["perturbation"].astype(str).to_numpy()[mask], columns=adata.var_names.astype(str))
            out[ctx] = _finish(frame.astype(np.float64), singles_only)
        return out
    contexts = adata.obs[context_key].astype(str) if context_key in adata.obs else pd.Series("all", index=adata.obs_names)
    use_batch = batch_key if (batch_key and batch_key in adata.obs) else None
    out = {}
    for ctx in sorted(contexts.unique()):
        cells = adata[(contexts == ctx).to_numpy()]
        if CONTROL not in set(cells.obs["perturbation"].astype(str)):
            raise DataError(f"context {ctx!r} has no control cells; each cell line needs its own controls.")
        out[ctx] = _finish(changes(cells, batch_key=use_batch), singles_only)
    return out


def _finish(frame: pd.DataFrame, singles_only: bool) -> pd.DataFrame:
    frame = frame.drop(index=CONTROL, errors="ignore")
    doubles = [p for p in frame.index if "+" in p]
    if singles_only:
        frame = frame.drop(index=doubles)
    frame = frame.sort_index()
    frame.index.name, frame.columns.name = "perturbation", "gene"
    frame.attrs["dropped_doubles"] = doubles if singles_only else []
    return frame


# ---------------------------------------------------------------------------------------
# the null methods that are not embeddings
# ---------------------------------------------------------------------------------------


def fold_of(folds: Sequence) -> pd.Series:
    """Fold number of every test perturbation."""
    return pd.Series({p: k for k, split in enumerate(folds) for p in split.test}, name="fold")


# ---------------------------------------------------------------------------------------
# per-fold errors, WAP, BAP and the fraction of the gap closed
# ---------------------------------------------------------------------------------------


def per_perturbation_l2(predictions: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    """``||Δ̂_p − Δ_p||₂`` over all genes (:func:`helpers.metrics.l2`; the control cancels)."""
    from ..metrics import l2

    return l2(predictions, truth.loc[predictions.index])


def fold_errors(per_perturbation: pd.DataFrame) -> pd.DataFrame:
    """Mean of the per-perturbation values per (context, model, fold) and median over folds.

    Parameters
    ----------
    per_perturbation
        Columns ``context, model, fold, perturbation, l2``.

    Returns
    -------
    DataFrame
        Columns ``context, model, fold_mean_l2`` (list of the fold means, in fold order) and
        ``l2`` (median over folds), one row per (context, model).
    """
    means = per_perturbation.groupby(["context", "model", "fold"], observed=True, sort=True)["l2"].mean().rename("fold_l2").reset_index()
    grouped = means.groupby(["context", "model"], observed=True, sort=True)["fold_l2"]
    return pd.DataFrame({"l2": grouped.median(), "fold_l2": grouped.apply(list)}).reset_index()


def progress_table(
    errors: pd.DataFrame,
    kinds: Mapping[str, str],
    published_wap: str = TRAIN_MEAN,
    published_bap: str = EXPERIMENTAL_ERROR,
    true_floor: str = TRUE_ERROR,
) -> pd.DataFrame:
    """WAP, BAP and the fraction of the gap closed, per context and model.

    Parameters
    ----------
    errors
        :func:`fold_errors` output (``context, model, l2`` = median over folds).
    kinds
        model -> ``"null method"``, ``"embedding"``, ``"cheater"`` or ``"reference"`` (e.g. the true
        noise floor of a simulation: shown, never used for a bound).
    published_wap, published_bap
        Models of the published definition (training mean, experimental error).

    true_floor
        Model holding the true measurement error of a simulation (kind ``"reference"``). When
        present, ``fraction_true_gap_closed = (L2_WAP − L2_model) / (L2_WAP − L2_true)`` is added:
        the fraction of the gap to what is really achievable, known only for simulated data.

    Returns
    -------
    DataFrame
        One row per (context, model): ``kind, l2, wap_model, wap_l2, bap_model, bap_l2,
        fraction_gap_closed, fraction_gap_closed_published`` (and ``fraction_true_gap_closed``).
    """
    unknown = sorted(set(errors["model"]) - set(kinds))
    if unknown:
        raise ValueError(f"no kind given for models {unknown}")
    rows = []
    for ctx, frame in errors.groupby("context", sort=True):
        l2 = frame.set_index("model")["l2"]
        nulls = l2[[m for m in l2.index if kinds[m] == "null method"]].dropna()
        cheaters = l2[[m for m in l2.index if kinds[m] == "cheater"]].dropna()
        if nulls.empty or cheaters.empty:
            raise DataError(f"context {ctx!r}: need at least one null method and one cheater to place the bars.")
        wap_model, bap_model = nulls.idxmin(), cheaters.idxmax()
        pub_wap = l2.get(published_wap, np.nan)
        pub_bap = l2.get(published_bap, np.nan)
        true_l2 = l2.get(true_floor, None)
        for model, value in l2.items():
            extra = {} if true_l2 is None else {"fraction_true_gap_closed": fraction_gap_closed(value, nulls[wap_model], true_l2)}
            rows.append(
                {
                    "context": ctx,
                    "model": model,
                    "kind": kinds[model],
                    "l2": value,
                    "wap_model": wap_model,
                    "wap_l2": nulls[wap_model],
                    "bap_model": bap_model,
                    "bap_l2": cheaters[bap_model],
                    "fraction_gap_closed": fraction_gap_closed(value, nulls[wap_model], cheaters[bap_model]),
                    "fraction_gap_closed_published": fraction_gap_closed(value, pub_wap, pub_bap),
                    **extra,
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------
# one context, every method
# ---------------------------------------------------------------------------------------


def _in(perturbations: Iterable[str], table: pd.DataFrame) -> list[str]:
    return [p for p in perturbations if p in table.index]


def cross_validate_source(
    changes: pd.DataFrame,
    folds: Sequence,
    source: EmbeddingSource,
    head: str = "knn",
    seed: int = 42,
    **regressor_kwargs,
) -> tuple[pd.DataFrame | None, pd.DataFrame, str]:
    """Out-of-fold predictions of one embedding source with one head, with leakage checks.

    The evaluation engine (:func:`helpers.benchmarks.engine.run_folds`) runs every fold: the
    embedding is built from the fold's training labels only (unless the source is a cheater),
    the registry's embedding regressor (:data:`helpers.models.registry.EMBEDDING_HEADS`) is
    fitted on the training perturbations and predicts the test perturbations. Then it is
    *checked*: the embedding's ``attrs["fitted_on"]`` (non-cheaters) and every fit in the
    regressor's ``fit_log_`` are disjoint from the fold's test set; an :class:`AssertionError`
    otherwise.

    Returns
    -------
    (predictions, log, failure)
        ``predictions``: test perturbations x genes (every perturbation once), or None when
        the model failed in a fold (``failure`` says why, e.g. too few training
        perturbations with an embedding); ``log``: one row per fold with the chosen
        hyperparameter, counts, the perturbations without embedding and ``fits_checked``.
    """
    from ..knowledge.embeddings import check_no_test_labels
    from ..models.embedding_regressor import model_label
    from ..models.registry import EMBEDDING_HEADS, build_model

    label = model_label(source.name, head)

    def models_for_fold(k: int, split: Split) -> dict[str, PerturbationModel]:
        train_changes = changes.loc[_in(split.train, changes)]
        emb = source.get(train_changes, changes)
        if source.kind != "cheater":
            check_no_test_labels(emb.attrs.get("fitted_on", ()), _in(split.test, changes), f"the {source.name} embedding (fold {k})")
        options = {k: v for k, v in regressor_kwargs.items() if k != "k_grid" or head == "knn"}  # k is the kNN head's alone
        return {label: build_model(EMBEDDING_HEADS[head], embedding=emb, seed=seed, preprocess=source.preprocess, **options)}

    result = run_folds(
        folds,
        models_for_fold,
        lambda k, split: TrainingData(changes=changes.loc[_in(split.train, changes)]),
        perturbations=list(changes.index),
    )
    if label in result.failures:
        return None, pd.DataFrame(), result.failures[label]
    rows = []
    for k, evaluation in enumerate(result.evaluations):
        model = evaluation.models[label]
        test = evaluation.perturbations
        for stage, names in model.fit_log_:
            check_no_test_labels(names, test, f"{label}, fold {k}, {stage}")
        missing = model.without_embedding(test)
        fold = int(result.fold_of[test[0]])
        rows.append(
            {
                "fold": fold,
                "n_train": len(_in(folds[fold].train, changes)),
                "n_train_with_embedding": len(model.fitted_perturbations_),
                "n_test": len(test),
                "n_test_without_embedding": len(missing),
                "test_without_embedding": ", ".join(missing),
                "best_param": model.best_param_,
                "fits_checked": len(model.fit_log_) + (source.kind != "cheater"),
            }
        )
    return result.predictions[label], pd.DataFrame(rows), ""


@one_blas_thread
def evaluate_context(
    changes: pd.DataFrame,
    folds: Sequence,
    sources: Sequence,
    heads: Sequence[str] = ("knn",),
    seed: int = 42,
    bootstrap_q90: pd.Series | None = None,
    truth: pd.DataFrame | None = None,
    progress: bool = False,
    **regressor_kwargs,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """Per-perturbation L2 of every method on one context, fold by fold.

    Methods: the registry's training mean (:data:`TRAIN_MEAN`) and no change, fitted on each
    fold's training changes by the evaluation engine; every embedding source with every head
    (:func:`cross_validate_source`, which checks that no test perturbation reaches a fit); the
    experimental error (``bootstrap_q90``, the per-perturbation 0.9 quantile of
    :func:`helpers.stats.bootstrap.bootstrap_error`, which *is* its L2 value); and on
    simulations the true measurement error ``||Δ_p − Δ_p^true||₂`` (``truth``), a reference,
    not a bound. ``regressor_kwargs`` go to the embedding regressor (e.g. ``n_components``,
    ``k_grid``).

    Returns
    -------
    (per_perturbation, log, skipped)
        ``per_perturbation``: columns ``model, kind, embedding, head, fold, perturbation, l2``;
        ``log``: one row per (model, fold) from the regressor (chosen hyperparameter, counts
        of perturbations without embedding); ``skipped``: model -> reason, for embeddings that
        cover too few training perturbations to be fitted at all (e.g. an expression-based
        embedding when most targets are not measured). Such a model is left out entirely, not
        replaced by the training mean.
    """
    from ..models.embedding_regressor import HEAD_LABELS, model_label
    from ..models.registry import build_models

    folds_of = fold_of(folds)
    rows, logs, skipped = [], [], {}

    def add(model: str, kind: str, embedding: str, head: str, values: pd.Series) -> None:
        frame = pd.DataFrame({"perturbation": values.index.astype(str), "l2": values.to_numpy(dtype=np.float64)})
        frame.insert(0, "fold", folds_of.reindex(frame["perturbation"]).to_numpy())
        for key, value in reversed((("model", model), ("kind", kind), ("embedding", embedding), ("head", head))):
            frame.insert(0, key, value)
        rows.append(frame)

    nulls = run_folds(
        folds,
        lambda k, split: build_models(NULL_MODELS),
        lambda k, split: TrainingData(changes=changes.loc[_in(split.train, changes)]),
        perturbations=list(changes.index),
    )
    for name in NULL_MODELS:
        if name in nulls.failures:
            raise DataError(f"the null method {name!r} failed: {nulls.failures[name]}")
        add(name, "null method", "", "", per_perturbation_l2(nulls.predictions[name], changes))
    jobs = [(source, head) for head in heads for source in sources]
    for source, head in progress_bar(jobs, desc="embeddings", disable=not progress):
        model = model_label(source.name, head)
        pred, log, failure = cross_validate_source(changes, folds, source, head=head, seed=seed, **regressor_kwargs)
        if pred is None:
            skipped[model] = failure
            continue
        add(model, source.kind, source.name, HEAD_LABELS[head], per_perturbation_l2(pred, changes))
        logs.append(log.assign(model=model, kind=source.kind))
    tested = folds_of.index.intersection(changes.index)
    if bootstrap_q90 is not None:
        missing = tested.difference(bootstrap_q90.dropna().index)
        if len(missing):
            raise DataError(f"no bootstrap error for {len(missing)} tested perturbations, e.g. {list(missing[:5])}")
        add(EXPERIMENTAL_ERROR, "cheater", "", "", bootstrap_q90.reindex(tested))
    if truth is not None:
        truth = truth.reindex(index=tested, columns=changes.columns)
        if truth.isna().any().any():
            raise DataError("the true changes do not cover every tested perturbation and gene.")
        add(TRUE_ERROR, "reference", "", "", per_perturbation_l2(truth, changes))
    out = pd.concat(rows, ignore_index=True)
    if out["fold"].isna().any():
        raise DataError("some evaluated perturbations belong to no fold.")
    out["fold"] = out["fold"].astype(int)
    log = pd.concat(logs, ignore_index=True) if logs else pd.DataFrame()
    return out, log, skipped


# ---------------------------------------------------------------------------------------
# the chapter's parameters and steps
# ---------------------------------------------------------------------------------------

NAME = "progress_bars"

#: The embeddings the chapter can run (your own file goes to ``embeddings_file``).
EMBEDDINGS = ("random", "PCA of training labels", "PCA of control cells", "other contexts", "GO")
IDEALIZED = "idealized PCA, cheater"

PARAMETERS = Schema(
    (
        Param(
            "dataset",
            "str",
            "essential_like",
            "registry name or .h5ad: cells with obs['context'] and obs['batch'], or the essential_pseudobulk changes",
        ),
        Param(
            "seeds",
            "ints",
            [42],
            "outer-fold seeds (Cole et al.: 42); the random embedding is drawn from the same seed",
            minimum=0,
            maximum=SEED_MAX,
        ),
        Param("contexts", "strs", None, 'cell lines to analyse, e.g. ["K562_like"]; None: all of them', none=True),
        Param(
            "n_genes", "int", None, "evaluate on the n genes most expressed in control; None: all genes, as published", minimum=2, none=True
        ),
        Param("models", "strs", list(EMBEDDINGS), "embeddings to run (drop any to skip it)", choices=EMBEDDINGS, nonempty=False),
        Param("heads", "strs", ["knn"], 'predictor heads: "knn" and/or "lasso" (Lasso doubles the run time)', choices=("knn", "lasso")),
        Param("embeddings_file", "path", None, "bring your own embeddings: genes x dimensions (.csv/.tsv/.parquet/.h5ad)", none=True),
        Param("embeddings_name", "str", None, "name of those embeddings in the tables (default: the file's stem)", none=True),
        Param("n_folds", "int", 5, "outer folds over perturbations", minimum=2),
        Param("inner_folds", "int", 5, "folds of the inner cross-validation that picks k or alpha (Cole et al.: 5)", minimum=2),
        Param("knn_k", "ints", [20, 40, 60, 80, 100], "k values the kNN head chooses from (Cole et al.: 20-100)", minimum=1, nonempty=True),
        Param("n_components", "int", 100, "common dimension of the PCA step", minimum=1),
        Param("go_dimensions", "int", 32, "dimension of the Gene Ontology embedding (before the PCA step)", minimum=1),
        Param("bootstrap", "bool", True, "the experimental-error bound (needs cells; off for precomputed changes)"),
        Param("n_batch_resamples", "int", 10, "outer bootstrap: batches resampled with replacement", minimum=1),
        Param("n_cell_resamples", "int", 10, "inner bootstrap: cells resampled within each drawn batch", minimum=1),
        Param("bootstrap_seed", "int", 5050, "seed of the bootstrap (Cole et al.: 5050)", minimum=0, maximum=SEED_MAX),
        Param("simulation_seed", "int", 0, "seed of a simulated screen's cells", minimum=0, maximum=SEED_MAX),
    )
)


def load_screen(dataset: str | Path, simulation_seed: int = 0) -> tuple[AnnData, str, bool]:
    """The screen (a simulated preset generated with ``simulation_seed``), its name, and whether it holds cells."""
    from ..data.registry import load_dataset
    from ..data.simulate import PRESETS

    name = Path(str(dataset)).stem if str(dataset).endswith(".h5ad") else str(dataset)
    adata = load_dataset(dataset, seed=simulation_seed) if str(dataset) in PRESETS else load_dataset(dataset)
    return adata, name, adata.uns.get("kind") != "changes"


def prepare_contexts(adata: AnnData, contexts: Sequence[str] | None, n_genes: int | None, has_cells: bool) -> tuple[dict, pd.DataFrame]:
    """The changes of every cell line to analyse (:func:`context_changes`), on the chosen genes, and an overview table."""
    from ..data.genesets import top_expressed_genes

    changes_by_context = context_changes(adata)
    if contexts is not None:
        missing = sorted(set(contexts) - set(changes_by_context))
        if missing:
            raise DataError(f"no cell line(s) {missing} in the screen; it has {sorted(changes_by_context)}")
        changes_by_context = {k: v for k, v in changes_by_context.items() if k in contexts}
    if n_genes is not None:
        if not has_cells:
            raise DataError("n_genes needs cells (the control expression); precomputed changes are evaluated on all genes.")
        genes = top_expressed_genes(adata, n_genes)
        changes_by_context = {k: v[genes] for k, v in changes_by_context.items()}
    rows = []
    for ctx, frame in changes_by_context.items():
        row = {
            "cell line": ctx,
            "single perturbations": frame.shape[0],
            "genes": frame.shape[1],
            "doubles left out": len(frame.attrs.get("dropped_doubles", [])),
        }
        if has_cells:
            obs = adata.obs[adata.obs["context"].astype(str) == ctx] if "context" in adata.obs else adata.obs
            per_pert = obs[obs["perturbation"] != CONTROL].groupby("perturbation", observed=True).size()
            row.update(
                {
                    "cells per perturbation (median)": int(per_pert.median()),
                    "control cells": int((obs["perturbation"] == CONTROL).sum()),
                    "batches": obs["batch"].nunique() if "batch" in obs else 1,
                }
            )
        rows.append(row)
    return changes_by_context, pd.DataFrame(rows).set_index("cell line")


def fixed_embeddings(
    models: Sequence[str],
    all_genes: Sequence[str],
    go_dimensions: int,
    embeddings_file: str | Path | None = None,
    embeddings_name: str | None = None,
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The embeddings that do not depend on the fold or the cell line (GO, your own file), and notes."""
    from ..knowledge.embeddings import read_embeddings

    fixed, notes = {}, []
    if "GO" in models:
        from threadpoolctl import threadpool_limits

        from ..knowledge import go_embedding

        with threadpool_limits(limits=1):  # small SVD: one BLAS thread avoids contention on a shared machine
            fixed["GO"] = go_embedding(list(all_genes), n_components=go_dimensions)
    if embeddings_file is not None:
        own = read_embeddings(embeddings_file, name=embeddings_name)
        own_name = own.attrs["name"]
        if own_name in (*EMBEDDINGS, IDEALIZED):
            raise DataError(f"embeddings_name {own_name!r} clashes with a built-in embedding; choose another name")
        fixed[own_name] = own
        if own.attrs["dropped_columns"]:
            notes.append(f"{own_name}: text columns ignored: {', '.join(own.attrs['dropped_columns'])}")
    return fixed, notes


def embedding_sources(
    models: Sequence[str],
    ctx: str,
    seed: int,
    adata: AnnData,
    changes_by_context: Mapping[str, pd.DataFrame],
    fixed: Mapping[str, pd.DataFrame],
    has_cells: bool,
    n_components: int,
) -> list:
    """The embedding sources of one cell line; the label-based ones only ever see the fold's training changes."""
    from ..knowledge.embeddings import context_embedding, control_pca_embedding, idealized_embedding, label_pca_embedding, random_embedding
    from ..models.embedding_regressor import EmbeddingSource, fixed_source

    all_genes = sorted(set().union(*(set(f.index) | set(f.columns) for f in changes_by_context.values())))
    out = []
    if "random" in models:
        out.append(fixed_source("random", random_embedding(all_genes, 100, seed=seed), kind="null method"))
    if "PCA of training labels" in models:
        out.append(
            EmbeddingSource(
                "PCA of training labels", "null method", lambda train, _: label_pca_embedding(train, n_components), per_fold=True
            )
        )
    if "PCA of control cells" in models and has_cells:
        mask = (adata.obs["perturbation"].astype(str) == CONTROL).to_numpy()
        if "context" in adata.obs:
            mask &= (adata.obs["context"].astype(str) == ctx).to_numpy()
        controls = adata[mask][:, changes_by_context[ctx].columns]
        out.append(fixed_source("PCA of control cells", control_pca_embedding(controls, n_components, seed=seed), kind="null method"))
    if "other contexts" in models and len(changes_by_context) > 1:
        out.append(fixed_source("other contexts", context_embedding(changes_by_context, ctx)))
    for emb_name, emb in fixed.items():
        out.append(fixed_source(emb_name, emb))
    out.append(
        EmbeddingSource(
            IDEALIZED, "cheater", lambda _, everything: idealized_embedding(everything, n_components), preprocess=False, per_fold=True
        )
    )
    return out


def not_run(models: Sequence[str], has_cells: bool, n_contexts: int) -> list[str]:
    """Embeddings the reader asked for that these data cannot give, with the reason."""
    out = []
    if "PCA of control cells" in models and not has_cells:
        out.append("PCA of control cells (no control cells in precomputed changes)")
    if "other contexts" in models and n_contexts < 2:
        out.append("other contexts (only one cell line)")
    return out


def coverage_table(sources: Mapping, changes_by_context: Mapping[str, pd.DataFrame], seed: int) -> pd.DataFrame:
    """Per cell line and fixed embedding: perturbed genes with and without an embedding."""
    from ..knowledge.embeddings import coverage

    rows = []
    for ctx, frame in changes_by_context.items():
        for source in sources[(ctx, seed)]:
            if source.per_fold:
                continue  # built from the fold's own genes: covers the measured targets
            # a built-in embedding may cover none of the targets (e.g. the control-cell PCA when no target is in the
            # gene panel): the table says so; only a user's own file is refused (its genes are probably misnamed)
            cov = coverage(source.get(frame, frame), list(frame.index), name=source.name, require_overlap=source.name not in EMBEDDINGS)
            rows.append({"cell line": ctx, **cov.as_row()})
    return pd.DataFrame(rows).set_index(["cell line", "embedding"])


def coverage_notes(coverage: pd.DataFrame, changes_by_context: Mapping[str, pd.DataFrame]) -> tuple[list[str], str]:
    """Lines for embeddings that miss perturbed genes, and a note on perturbed genes outside the gene panel."""
    lines = []
    for (ctx, emb_name), row in coverage.iterrows():
        if row["without"] and emb_name not in ("PCA of control cells",):
            lines.append(
                f"{ctx}, {emb_name}: {row['without']} of {row['perturbed genes']} perturbed genes lack an embedding "
                f"(e.g. {row['examples without']}); they are predicted by the training mean."
            )
    unmeasured = {ctx: sorted(set(f.index) - set(f.columns)) for ctx, f in changes_by_context.items()}
    n_unmeasured = max(len(v) for v in unmeasured.values())
    note = ""
    if n_unmeasured:
        ctx0 = next(iter(unmeasured))
        note = (
            f"**Note.** {n_unmeasured} perturbed genes are not measured in the gene panel (e.g. {', '.join(unmeasured[ctx0][:4])}); "
            "the embeddings built from expression (PCA of training labels or of control cells) describe measured genes only, "
            "so these perturbations fall back to the training mean there — the same fallback Cole et al. use."
        )
    return lines, note


def bootstrap_bounds(
    adata: AnnData, changes_by_context: Mapping[str, pd.DataFrame], n_batch_resamples: int, n_cell_resamples: int, seed: int
) -> dict[str, pd.Series]:
    """The 0.9 quantile of the two-stage bootstrap distance (:func:`helpers.stats.bootstrap.bootstrap_error`) per cell line."""
    q90 = {}
    for ctx, frame in changes_by_context.items():
        cells = adata[(adata.obs["context"].astype(str) == ctx).to_numpy()] if "context" in adata.obs else adata
        cells = cells[:, frame.columns]
        distances = bootstrap_error(
            cells, list(frame.index), n_batch_resamples=n_batch_resamples, n_cell_resamples=n_cell_resamples, seed=seed
        )
        q90[ctx] = distances.quantile(0.9, axis=1)
    return q90


def true_effects(adata: AnnData, changes_by_context: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The simulated screen's true changes per cell line, aligned with the measured ones."""
    from ..data.simulate import true_changes

    return {
        ctx: true_changes(adata, context=ctx if "context" in adata.obs else None).reindex(index=f.index, columns=f.columns)
        for ctx, f in changes_by_context.items()
    }


def folds_for(adata: AnnData, ctx: str, frame: pd.DataFrame, n_folds: int, seed: int, has_cells: bool) -> list[Split]:
    """The outer folds: the published fold assignment of a downloaded changes file, or :func:`helpers.data.kfold_split`."""
    if "fold" in adata.obs and not has_cells:
        obs = adata.obs[adata.obs["context"].astype(str) == ctx]
        fold_ids = dict(zip(obs["perturbation"].astype(str), obs["fold"].astype(int)))
        return [
            Split(
                f"fold {k}",
                seed,
                tuple(sorted(p for p in frame.index if fold_ids[p] != k)),
                (),
                tuple(sorted(p for p in frame.index if fold_ids[p] == k)),
            )
            for k in sorted(set(fold_ids.values()))
        ]
    return kfold_split(list(frame.index), n_folds=n_folds, seed=seed)


def run_contexts(
    adata: AnnData,
    changes_by_context: Mapping[str, pd.DataFrame],
    sources: Mapping,
    seeds: Sequence[int],
    heads: Sequence[str],
    n_folds: int,
    n_components: int,
    has_cells: bool,
    q90: Mapping | None = None,
    truth: Mapping | None = None,
    inner_folds: int = 5,
    k_grid: Sequence[int] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """:func:`evaluate_context` for every seed and cell line: per-perturbation L2, the fit log, and the models left out.

    ``inner_folds`` and ``k_grid`` (None: :data:`helpers.models.embedding_regressor.KNN_GRID`) go to every
    embedding regressor.
    """
    grid = {} if k_grid is None else {"k_grid": tuple(int(k) for k in k_grid)}
    per_perturbation, logs, skipped = [], [], []
    for seed in seeds:
        for ctx, frame in changes_by_context.items():
            folds = folds_for(adata, ctx, frame, n_folds, seed, has_cells)
            per, log, skipped_here = evaluate_context(
                frame,
                folds,
                sources[(ctx, seed)],
                heads=heads,
                seed=42,
                bootstrap_q90=(q90 or {}).get(ctx),
                truth=(truth or {}).get(ctx),
                n_components=n_components,
                inner_folds=inner_folds,
                **grid,
            )
            skipped += [f"{m} on {ctx} (seed {seed}): {why}" for m, why in skipped_here.items()]
            per_perturbation.append(per.assign(context=ctx, seed=seed))
            logs.append(log.assign(context=ctx, seed=seed))
    log = pd.concat(logs, ignore_index=True)
    if "model" not in log:  # not one embedding model could be fitted on any cell line
        fewest = min(len(frame) for frame in changes_by_context.values())
        example = skipped[0].rstrip(".") if skipped else "no embedding model was chosen"
        raise DataError(
            f"no embedding model could be fitted with n_folds={n_folds} ({len(skipped)} left out, e.g. {example}). A training "
            f"fold holds {n_folds - 1}/{n_folds} of a cell line's perturbations (here {fewest} at the fewest) and the inner "
            f"{inner_folds}-fold cross-validation needs at least {2 * inner_folds}: use more folds (outer, up to {fewest}: "
            "leave-one-out), fewer inner folds (inner_folds), or a screen with more perturbations."
        )
    return pd.concat(per_perturbation, ignore_index=True), log, skipped


def choice_table(logs: pd.DataFrame) -> pd.DataFrame:
    """Chosen hyperparameters (k or alpha) and the perturbations without embedding, per model (summed over folds, lines, seeds)."""
    return logs.groupby("model").agg(
        chosen=("best_param", lambda v: ", ".join(f"{x:g}" for x in sorted(set(v)))),
        test_predictions=("n_test", "sum"),
        by_training_mean=("n_test_without_embedding", "sum"),
    )


def real_screen_notes(
    name: str, simulated: bool, changes_by_context: Mapping[str, pd.DataFrame], n_folds: int, inner_folds: int, knn_k: Sequence[int]
) -> list[str]:
    """What a real screen can and cannot show in this chapter, computed from it (empty for a simulation)."""
    if simulated:
        return []
    sizes = {ctx: len(f) for ctx, f in changes_by_context.items()}
    fewest = min(sizes.values())
    n_train = fewest - int(np.ceil(fewest / n_folds))
    inner_train = n_train - int(np.ceil(n_train / inner_folds))
    measured = {ctx: sorted(set(f.index) & set(f.columns)) for ctx, f in changes_by_context.items()}
    n_measured = max(len(v) for v in measured.values())
    lines = [
        f"* **Perturbations**: {', '.join(f'{ctx} {n}' for ctx, n in sizes.items())} single perturbations per cell line "
        f"(Cole et al.: about 2,000). With {n_folds} outer folds a fold trains on {n_train} at the fewest, and the inner "
        f"{inner_folds}-fold cross-validation on {inner_train}; Cole et al.'s k of 20-100 would average every training "
        f"perturbation, so the kNN head chooses k from {list(knn_k)} here (capped at the inner training size).",
        f"* **Targets in the gene panel**: {n_measured} of the perturbed genes are measured, so the embeddings built from "
        "expression (PCA of training labels, PCA of control cells) describe no target and are left out.",
        "* **What can be compared with the paper**: the size of the gap between the bounds in each line, and whether an "
        "embedding closes any of it; with so few perturbations per line, one perturbation moves a fold's mean a lot.",
    ]
    return lines


def bars_table(progress: pd.DataFrame, with_bootstrap: bool, simulated: bool) -> pd.DataFrame:
    """Per cell line: the WAP and BAP (model and L2), the gap, the published gap and the true gap where known."""
    bars = progress.groupby("context").first()[["wap_model", "wap_l2", "bap_model", "bap_l2"]]
    bars["gap"] = bars["wap_l2"] - bars["bap_l2"]
    l2_by_model = progress.pivot(index="context", columns="model", values="l2")
    if with_bootstrap:
        bars["published gap (train mean − experimental error)"] = l2_by_model[TRAIN_MEAN] - l2_by_model[EXPERIMENTAL_ERROR]
    if simulated:
        bars["true gap (WAP − true noise floor)"] = bars["wap_l2"] - l2_by_model[TRUE_ERROR]
    return bars


def gap_line(bars: pd.DataFrame, simulated: bool) -> str:
    """Whether every cell line has a positive gap between WAP and BAP, and what it means where not."""
    positive = bars["gap"] > 0
    if positive.all():
        return "In every cell line the tighter cheater bound lies below the WAP, so the bars below are defined."
    bad = ", ".join(bars.index[~positive])
    return (
        f"**The BAP is not below the WAP in {bad}:** there the tighter cheater bound (the {bars.loc[~positive, 'bap_model'].iloc[0]}) "
        "has a larger error than the best null method, so the data leave no measurable gap between knowing nothing and the "
        "noise floor as this bound estimates it, and the fraction is undefined (n/a). "
        + ("In this simulation the true noise floor is known, and the last figure of this section uses it instead." if simulated else "")
    )


def bootstrap_vs_truth(per_perturbation: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.Series, str]:
    """The bootstrap's 0.9 quantile beside the true measurement error per perturbation, their ratio per line, a sentence."""
    true_err = per_perturbation[(per_perturbation["model"] == TRUE_ERROR) & (per_perturbation["seed"] == seed)]
    boot_err = per_perturbation[(per_perturbation["model"] == EXPERIMENTAL_ERROR) & (per_perturbation["seed"] == seed)]
    both = true_err.merge(boot_err, on=["context", "perturbation"], suffixes=("_true", "_boot"))
    both = both.rename(columns={"l2_true": "true_error", "l2_boot": "bootstrap_q90"})
    ratio = (both["bootstrap_q90"] / both["true_error"]).groupby(both["context"]).median()
    covered = (both["bootstrap_q90"] >= both["true_error"]).groupby(both["context"]).mean()
    text = (
        "The bootstrap's 0.9 quantile is "
        + ", ".join(f"{r:.2f}x the true error in {c} (above it for {100 * covered[c]:.0f} % of perturbations)" for c, r in ratio.items())
        + ". Part of the excess is the quantile (a 0.9 quantile lies above a typical value by design). Part is the two stages: "
        "resampling batches already carries the cell-to-cell noise of each batch mean, resampling cells within them adds it "
        "a second time, and differences between batches, which are part of the measured effect, count as noise."
    )
    return both[["context", "perturbation", "bootstrap_q90", "true_error"]], ratio, text


def published_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cole et al.'s median L2 (kNN) per model and cell line, and the two fractions of the gap closed from them."""
    pub = cole2026.TABLES["essential_l2"]
    pub_wide = pub[pub["head"] != "Lasso"].pivot(index="model", columns="context", values="value")[list(cole2026.CONTEXTS)]
    pub_wide = pub_wide.loc[pub_wide.mean(axis=1).sort_values().index]
    frac_pub = cole2026.TABLES["essential_fraction_published"].pivot(index="model", columns="context", values="value")[
        list(cole2026.CONTEXTS)
    ]
    frac_suite = cole2026.TABLES["essential_fraction_suite_definition"].pivot(index="model", columns="context", values="value")[
        list(cole2026.CONTEXTS)
    ]
    fractions = pd.concat(
        {"published fraction (train mean → exp. error)": frac_pub, "suite definition, from the published L2": frac_suite}, axis=1
    )
    return pub_wide, fractions


def published_caption(name: str, simulated: bool) -> str:
    """How to read the published numbers beside a run on ``name``."""
    if name == cole2026.DATASET:
        return "**Same data as the paper:** this run's medians and the published ones side by side."
    if simulated:
        return (
            f"**Published, on the real essential-gene screens; this run is on `{name}`, a simulated screen.** The numbers are a "
            "reference for the pattern, not a target: the simulated cell lines were built to differ in signal and noise like the "
            "real ones, not to reproduce their values."
        )
    return (
        f"**Published, on the real essential-gene screens; this run is on `{name}`, other data.** Compare the pattern "
        "(which methods beat which, how large the gap is), not the values."
    )


def _beats(l2_table: pd.DataFrame, a: str, b: str, ctx: str):
    try:
        return bool(l2_table.loc[a, ctx] < l2_table.loc[b, ctx])
    except KeyError:
        return None


def pattern_lines(progress: pd.DataFrame, pub_wide: pd.DataFrame, head: str) -> list[str]:
    """The qualitative comparison with the paper: who beats whom, published and here."""
    from ..models.embedding_regressor import model_label

    mine = progress.pivot(index="model", columns="context", values="l2")
    rand = model_label("random", head)
    lines = []
    pub_random = all(_beats(pub_wide, TRAIN_MEAN, "random (kNN)", c) for c in cole2026.CONTEXTS)
    here_random = [c for c in mine.columns if _beats(mine, TRAIN_MEAN, rand, c)]
    lines.append(
        f"* Random embeddings are worse than the training mean in {'all' if pub_random else 'not all'} published cell lines; "
        f"here in {len(here_random)} of {mine.shape[1]}."
    )
    pub_nochange = all(_beats(pub_wide, TRAIN_MEAN, NO_CHANGE, c) for c in cole2026.CONTEXTS)
    here_nochange = [c for c in mine.columns if _beats(mine, TRAIN_MEAN, NO_CHANGE, c)]
    lines.append(
        f"* `no change` is worse than the training mean in {'all' if pub_nochange else 'not all'} published cell lines; here in "
        f"{len(here_nochange)} of {mine.shape[1]}."
    )
    pub_ideal = all(_beats(pub_wide, "idealized PCA, cheater (kNN)", EXPERIMENTAL_ERROR, c) for c in cole2026.CONTEXTS)
    if EXPERIMENTAL_ERROR in mine.index:
        ideal = model_label(IDEALIZED, head)
        here_ideal = [c for c in mine.columns if _beats(mine, ideal, EXPERIMENTAL_ERROR, c)]
        lines.append(
            f"* The idealized PCA has a lower error than the experimental error in {'all' if pub_ideal else 'not all'} published cell "
            f"lines (so the experimental error is the tighter BAP there); here in {len(here_ideal)} of {mine.shape[1]}."
        )
    pub_gap = cole2026.published_gap()
    lines.append(
        "* Published gaps (train mean − experimental error): "
        + ", ".join(f"{c} {g:.2f}" for c, g in pub_gap["gap"].items())
        + f" — largest in {pub_gap['gap'].idxmax()}, smallest in {pub_gap['gap'].idxmin()}."
    )
    return lines


def results_table(per_perturbation: pd.DataFrame, kinds: Mapping[str, str], fractions: Sequence[str], name: str) -> pd.DataFrame:
    """The chapter's tidy results: per-perturbation L2, the fold means and, per line and model, the summaries and fractions."""
    frames = []
    for seed, per in per_perturbation.groupby("seed"):
        for (ctx, model), part in per.groupby(["context", "model"]):
            frames.append(
                tidy(part.set_index("perturbation")[["l2"]], dataset=name, seed=seed, model=model).assign(
                    context=ctx, kind=part["kind"].iloc[0], fold=part["fold"].astype(str).to_numpy()
                )
            )
        errs = fold_errors(per)
        prog = progress_table(errs, kinds)
        for _, row in errs.iterrows():
            for k, v in enumerate(row["fold_l2"]):
                frames.append(
                    pd.DataFrame(
                        [
                            {
                                "dataset": name,
                                "seed": seed,
                                "model": row["model"],
                                "perturbation": "all",
                                "context": row["context"],
                                "kind": kinds[row["model"]],
                                "fold": str(k),
                                "metric": "l2_fold_mean",
                                "value": v,
                            }
                        ]
                    )
                )
        summary = prog.melt(id_vars=["context", "model", "kind"], value_vars=["l2", *fractions], var_name="metric", value_name="value")
        summary["metric"] = summary["metric"].replace({"l2": "l2_median_over_folds"})
        frames.append(summary.assign(dataset=name, seed=seed, perturbation="all", fold="all"))
    return pd.concat(frames, ignore_index=True)[["dataset", "seed", "model", "perturbation", "context", "kind", "fold", "metric", "value"]]


def conclusions(progress: pd.DataFrame, bars: pd.DataFrame, simulated: bool, ratio: pd.Series | None) -> list[str]:
    """The lines of "What this run shows": per cell line the bounds and the best embedding, then a summary."""
    lines = []
    emb = progress[progress["kind"] == "embedding"]
    for ctx, part in progress.groupby("context"):
        gap = bars.loc[ctx, "gap"]
        best = part[part["kind"] == "embedding"].sort_values("l2").iloc[0] if (part["kind"] == "embedding").any() else None
        text = (
            f"* **{ctx}**: WAP = {bars.loc[ctx, 'wap_model']} (L2 {bars.loc[ctx, 'wap_l2']:.3f}), "
            f"BAP = {bars.loc[ctx, 'bap_model']} (L2 {bars.loc[ctx, 'bap_l2']:.3f})"
        )
        if gap > 0 and best is not None and best["fraction_gap_closed"] > 0:
            text += f"; the best embedding, {best['model']}, closes {best['fraction_gap_closed']:.2f} of the gap"
        elif gap > 0 and best is not None:
            text += f"; no embedding beats the WAP (the best, {best['model']}, has fraction {best['fraction_gap_closed']:.2f})"
        elif best is not None:
            text += f"; no positive gap, so no fraction; the best embedding is {best['model']} (L2 {best['l2']:.3f})"
        if simulated and best is not None and "fraction_true_gap_closed" in part:
            text += f", and {best['fraction_true_gap_closed']:.2f} of the gap to the true noise floor"
        lines.append(text + ".")
    n_better = int((emb["l2"] < emb["wap_l2"]).sum())
    summary = f"{n_better} of {len(emb)} (embedding, cell line) pairs beat the best null method. "
    if simulated and ratio is not None:
        summary += (
            f"The bootstrap experimental error is {float(np.median(ratio)):.2f}x the true measurement error (median over cell "
            "lines), so on these data it overstates the noise floor: the gap looks smaller than it is, and a model's fraction "
            "of it larger."
        )
    return lines + ["", summary]
