"""Progress bars: the worst acceptable and best achievable performance, and the gap a model closes.

Cole et al. (2026; METHODS.md D) place every perturbation-effect predictor on a bar from
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

import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .data.canonical import CONTROL, DataError
from .progress import progress as progress_bar

#: Model names of the null methods and cheaters that are not embeddings.
TRAIN_MEAN = "mean"
NO_CHANGE = "no change"
EXPERIMENTAL_ERROR = "experimental error (cheater)"
TRUE_ERROR = "true effect (simulation)"


# ---------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------

def context_changes(adata, context_key: str = "context", batch_key: str | None = "batch", singles_only: bool = True) -> dict[str, pd.DataFrame]:
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
    from .data.pseudobulk import changes

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

def null_predictions(changes: pd.DataFrame, folds: Sequence) -> dict[str, pd.DataFrame]:
    """Out-of-fold predictions of the training mean (``mean``) and of ``no change``.

    ``mean``: ``Δ̂_p = (1/|T|) Σ_{q ∈ T} Δ_q`` over the fold's training perturbations ``T``
    (scikit-learn's ``DummyRegressor``); ``no change``: ``Δ̂_p = 0``.
    """
    mean_rows, zero_rows = [], []
    for split in folds:
        train = [p for p in split.train if p in changes.index]
        test = [p for p in split.test if p in changes.index]
        if not test:
            continue
        centre = changes.loc[train].to_numpy().mean(axis=0)
        mean_rows.append(pd.DataFrame(np.tile(centre, (len(test), 1)), index=test, columns=changes.columns))
        zero_rows.append(pd.DataFrame(0.0, index=test, columns=changes.columns))
    return {TRAIN_MEAN: pd.concat(mean_rows), NO_CHANGE: pd.concat(zero_rows)}


def fold_of(folds: Sequence) -> pd.Series:
    """Fold number of every test perturbation."""
    return pd.Series({p: k for k, split in enumerate(folds) for p in split.test}, name="fold")


# ---------------------------------------------------------------------------------------
# the two-stage bootstrap
# ---------------------------------------------------------------------------------------

def _progress(items, desc: str, show: bool):
    """``items`` with a progress bar when ``show``."""
    return progress_bar(items, desc=desc) if show else items


def _stream(seed: int, label: str) -> np.random.Generator:
    """A random stream per perturbation that depends only on the seed and its name."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(zlib.crc32(label.encode("utf-8")),)))


def _bootstrap_means(X, batch_codes: np.ndarray, rng: np.random.Generator, n_batch: int, n_cell: int) -> np.ndarray:
    """Two-stage bootstrap replicates of the batch-equal-weighted mean of the rows of ``X``.

    Outer: draw ``B`` batches with replacement from the ``B`` batches present. Inner (``n_cell``
    times per outer draw): in every drawn batch copy, draw its ``n_b`` cells with replacement.
    A replicate is ``(1/B) Σ_{drawn copies} mean(drawn cells)``, i.e. a weighted sum of the
    rows with weights ``(multiplicity of the cell) / (n_b · B)``. The weights of all replicates
    form a dense ``replicates x cells`` matrix that multiplies the (sparse) rows of this group
    only: the cell matrix is never densified.

    Returns
    -------
    ndarray
        ``(n_batch · n_cell) x genes`` replicate means.
    """
    batches = np.unique(batch_codes)
    members = [np.flatnonzero(batch_codes == b) for b in batches]
    sizes = np.array([m.size for m in members])
    B, n = batches.size, batch_codes.size
    W = np.zeros((n_batch * n_cell, n))
    flat = W.reshape(-1)
    for o in range(n_batch):
        drawn = rng.integers(0, B, size=B)
        lengths = sizes[drawn]
        cells = np.concatenate([members[d] for d in drawn])  # positions of the drawn copies' cells
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        span = np.repeat(lengths, lengths)
        weight = np.repeat(1.0 / (lengths * B), lengths)
        picks = starts + np.floor(rng.random((n_cell, cells.size)) * span).astype(np.int64)
        # flat index of (replicate, cell) in W; bincount adds up the cells drawn several times
        index = (np.arange(o * n_cell, (o + 1) * n_cell)[:, None] * n + cells[picks]).ravel()
        block = np.bincount(index - o * n_cell * n, weights=np.tile(weight, n_cell), minlength=n_cell * n)
        flat[o * n_cell * n : (o + 1) * n_cell * n] = block
    if sp.issparse(X):
        return np.asarray((X.T @ W.T).T)
    return W @ np.asarray(X, dtype=np.float64)


def bootstrap_error(
    cells,
    perturbations: Sequence[str] | None = None,
    batch_key: str | None = "batch",
    n_batch_resamples: int = 10,
    n_cell_resamples: int = 10,
    seed: int = 5050,
    progress: bool = False,
) -> pd.DataFrame:
    """Experimental error of every perturbation's change by a two-stage bootstrap (Cole et al.).

    For perturbation ``p`` and the control of the same context, independently:

    1. outer, ``n_batch_resamples`` times: resample the batches (gem groups) holding its cells
       with replacement;
    2. inner, ``n_cell_resamples`` times per outer draw: resample the cells within each drawn
       batch with replacement;
    3. average the drawn batches' means with equal weight.

    ``Δ_boot = x̄_p,boot − x̄_control,boot`` (control replicate ``r`` pairs with perturbation
    replicate ``r``; they are drawn independently) and the distance of replicate ``r`` is
    ``d_r = ||Δ_boot,r − Δ_point||₂`` over all genes, with ``Δ_point`` the batch-equal-weighted
    change (:func:`context_changes`). Cole et al. use ``10 x 10 = 100`` replicates, seed 5050,
    and the 0.9 quantile of ``d`` as the per-perturbation experimental error.

    Each perturbation has its own random stream (seeded by ``seed`` and its name), so its
    distances do not depend on which other perturbations are bootstrapped.

    Parameters
    ----------
    cells
        Canonical screen of **one** context (cells of the perturbations and the control).
    perturbations
        Perturbations to bootstrap (default: all non-control ones present).
    batch_key
        Batch column; without it (or if absent) all cells are one batch and only the
        inner stage remains.

    Returns
    -------
    pandas.DataFrame
        Perturbations x replicates distances ``d_r``; use ``.quantile(0.9, axis=1)``.
    """
    labels = cells.obs["perturbation"].astype(str).to_numpy()
    if batch_key and batch_key in cells.obs:
        batches = pd.Categorical(cells.obs[batch_key].astype(str)).codes.astype(np.int64)
    else:
        batches = np.zeros(labels.size, dtype=np.int64)
    if CONTROL not in set(labels):
        raise DataError("the bootstrap needs the control cells of the same context.")
    present = sorted(set(labels) - {CONTROL})
    if perturbations is None:
        perturbations = present
    unknown = sorted(set(perturbations) - set(present))
    if unknown:
        raise DataError(f"no cells for {len(unknown)} perturbations to bootstrap, e.g. {unknown[:5]}")
    X = cells.X
    if sp.issparse(X):
        X = sp.csr_matrix(X)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    bounds = {}
    uniq, first = np.unique(sorted_labels, return_index=True)
    last = np.append(first[1:], labels.size)
    for name, a, b in zip(uniq, first, last):
        bounds[name] = order[a:b]

    def point_and_boot(name: str):
        rows = np.sort(bounds[name])
        Xg = X[rows]
        codes = batches[rows]
        # point estimate: equal-weighted mean of the batch means
        uniq_b, inv = np.unique(codes, return_inverse=True)
        counts = np.bincount(inv)
        ind = sp.csr_matrix((1.0 / (counts[inv] * uniq_b.size), (np.zeros(rows.size, dtype=np.int64), np.arange(rows.size))), shape=(1, rows.size))
        point = np.asarray((ind @ Xg).todense() if sp.issparse(Xg) else ind @ Xg).ravel()
        boot = _bootstrap_means(Xg, codes, _stream(seed, name), n_batch_resamples, n_cell_resamples)
        return point, boot

    ctrl_point, ctrl_boot = point_and_boot(CONTROL)
    out = np.zeros((len(perturbations), n_batch_resamples * n_cell_resamples))
    for i, p in enumerate(_progress(perturbations, "bootstrap", progress)):
        point, boot = point_and_boot(p)
        diff = (boot - ctrl_boot) - (point - ctrl_point)
        out[i] = np.sqrt((diff**2).sum(axis=1))
    frame = pd.DataFrame(out, index=pd.Index(list(perturbations), name="perturbation"), columns=pd.RangeIndex(out.shape[1], name="replicate"))
    return frame


# ---------------------------------------------------------------------------------------
# per-fold errors, WAP, BAP and the fraction of the gap closed
# ---------------------------------------------------------------------------------------

def per_perturbation_l2(predictions: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    """``||Δ̂_p − Δ_p||₂`` over all genes (:func:`helpers.metrics.l2`; the control cancels)."""
    from .metrics import l2

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


def fraction_gap_closed(l2_model, l2_wap, l2_bap):
    """``(L2_WAP − L2_model) / (L2_WAP − L2_BAP)``: 0 at the WAP, 1 at the BAP.

    Negative for a model worse than the WAP; above 1 for a model better than the BAP (possible
    because the bounds are estimates). NaN when the gap is not positive (no room to measure).
    """
    l2_model, l2_wap, l2_bap = (np.asarray(v, dtype=np.float64) for v in (l2_model, l2_wap, l2_bap))
    gap = l2_wap - l2_bap
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(gap > 0, (l2_wap - l2_model) / np.where(gap > 0, gap, 1.0), np.nan)
    return out if out.ndim else float(out)


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

    Methods: the training mean and no change; every embedding source with every head
    (:func:`helpers.models.embedding_regressor.cross_validate`, which checks that no test
    perturbation reaches a fit); the experimental error (``bootstrap_q90``, the per-perturbation
    0.9 quantile of :func:`bootstrap_error`, which *is* its L2 value); and on simulations the
    true measurement error ``||Δ_p − Δ_p^true||₂`` (``truth``), a reference, not a bound.
    ``regressor_kwargs`` go to :class:`helpers.models.embedding_regressor.EmbeddingRegressor`
    (e.g. ``k_grid``).

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
    from .models.embedding_regressor import HEAD_LABELS, TooFewEmbeddedError, cross_validate, model_label

    folds_of = fold_of(folds)
    rows, logs, skipped = [], [], {}

    def add(model, kind, embedding, head, values: pd.Series):
        frame = pd.DataFrame({"perturbation": values.index.astype(str), "l2": values.to_numpy(dtype=np.float64)})
        frame.insert(0, "fold", folds_of.reindex(frame["perturbation"]).to_numpy())
        for key, value in reversed((("model", model), ("kind", kind), ("embedding", embedding), ("head", head))):
            frame.insert(0, key, value)
        rows.append(frame)

    for name, pred in null_predictions(changes, folds).items():
        add(name, "null method", "", "", per_perturbation_l2(pred, changes))
    jobs = [(source, head) for head in heads for source in sources]
    for source, head in _progress(jobs, "embeddings", progress):
        model = model_label(source.name, head)
        try:
            pred, log = cross_validate(changes, folds, source, head=head, seed=seed, **regressor_kwargs)
        except TooFewEmbeddedError as err:
            skipped[model] = str(err)
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
