"""Percentile bootstrap over perturbations, vectorised.

Used for the Fig. 2c-style comparison of Ahlmann-Eltze et al. (2025): per perturbation the
ratio ``L2(model) / L2(mean)``, averaged over perturbations, with a 95 % percentile interval
from 10,000 resamples of the perturbations.

The resamples are an index matrix: resample ``b`` draws ``n`` perturbations with
replacement, ``idx[b] ~ Uniform{0..n−1}^n``, and its statistic is the mean of the values at
``idx[b]``. The indices depend only on ``seed`` and ``n``, so models compared on the same
perturbations are resampled identically (a paired bootstrap), and a rerun gives the same
interval.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..console import progress_bar
from ..data.canonical import CONTROL
from ..data.streaming import read_rows
from ..errors import DataError

if TYPE_CHECKING:
    from anndata import AnnData
    from numpy.typing import ArrayLike

#: Default number of bootstrap resamples (as in the paper).
N_RESAMPLES = 10_000

# Bound on the elements of one gathered block (resamples x perturbations x columns), ~32 MB.
_BLOCK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class BootstrapCI:
    """A mean with its percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    n: int
    n_resamples: int

    def __str__(self) -> str:
        pct = round(100 * self.confidence)
        return f"{self.estimate:.3f} [{pct} % CI {self.low:.3f}, {self.high:.3f}] (n = {self.n}, {self.n_resamples:,} resamples)"


def _as_matrix(values: ArrayLike) -> tuple[np.ndarray, bool]:
    arr = np.asarray(values, dtype=np.float64)
    one_d = arr.ndim == 1
    if one_d:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError("values must be a vector or a matrix (perturbations x columns)")
    if arr.shape[0] == 0:
        raise DataError("no values to bootstrap (empty set of perturbations)")
    if not np.isfinite(arr).all():
        raise DataError("values to bootstrap hold NaN or infinite entries; drop or explain them first")
    return arr, one_d


def bootstrap_means(values: ArrayLike, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Bootstrap distribution of the mean over perturbations.

    ``m_b = (1/n) Σ_i v[idx[b, i]]`` with ``idx[b, i]`` drawn uniformly from ``0..n−1``
    (``numpy.random.default_rng(seed)``), for ``b = 1..n_resamples``.

    Parameters
    ----------
    values
        Vector of ``n`` per-perturbation values, or an ``n x m`` matrix (each column is
        resampled with the same indices: a paired bootstrap of ``m`` statistics).
    n_resamples
        Number of resamples ``B``.
    seed
        Seed of the index draws.

    Returns
    -------
    ndarray
        ``(B,)`` for a vector, ``(B, m)`` for a matrix.
    """
    arr, one_d = _as_matrix(values)
    n, m = arr.shape
    if int(n_resamples) < 1:
        raise ValueError("n_resamples must be at least 1")
    rng = np.random.default_rng(seed)
    out = np.empty((int(n_resamples), m))
    block = max(1, _BLOCK_ELEMENTS // (n * m))
    for start in range(0, int(n_resamples), block):
        stop = min(start + block, int(n_resamples))
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = arr[idx].mean(axis=1)
    return out[:, 0] if one_d else out


def bootstrap_mean_ci(values: ArrayLike, n_resamples: int = N_RESAMPLES, confidence: float = 0.95, seed: int = 0) -> BootstrapCI:
    """Mean over perturbations with a percentile bootstrap interval.

    The interval is the ``(1 − c)/2`` and ``(1 + c)/2`` quantiles (linear interpolation,
    R's default ``type = 7``) of :func:`bootstrap_means`.
    """
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    arr, _ = _as_matrix(values)
    if arr.shape[1] != 1:
        raise ValueError("bootstrap_mean_ci takes one vector; use bootstrap_means for several columns")
    boot = bootstrap_means(arr[:, 0], n_resamples, seed)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return BootstrapCI(float(arr.mean()), float(low), float(high), confidence, arr.shape[0], int(n_resamples))


def ratio_to_reference(
    results: pd.DataFrame,
    reference_model: str = "mean",
    metric: str = "l2",
    by: Sequence[str] = ("dataset",),
    unit: Sequence[str] = ("seed", "perturbation"),
    n_resamples: int = N_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Per-perturbation ratio ``metric(model) / metric(reference)``, averaged, with bootstrap CI.

    For every group of ``by`` (e.g. dataset) and every model, the units (rows identified by
    ``unit``, e.g. a perturbation in one split seed) that both the model and the reference
    evaluated are paired; ``r_u = value(model, u) / value(reference, u)``; the estimate is
    the mean of ``r_u`` and the interval the percentile bootstrap over units
    (:func:`bootstrap_means`; all models of a group share the resampling indices when they
    share the units).

    Parameters
    ----------
    results
        Tidy results (``helpers.results`` columns: ``model``, ``metric``, ``value`` plus
        ``by`` and ``unit`` columns).
    reference_model
        The denominator model (the paper: the mean of the training perturbations).

    Returns
    -------
    DataFrame
        Columns ``by..., model, n, mean_ratio, low, high, log2_mean_ratio``; the reference
        model itself (ratio 1) is left out. Units with a zero reference value raise.
    """
    by, unit = list(by), list(unit)
    frame = results[results["metric"] == metric]
    if frame.empty:
        raise DataError(f"no rows with metric {metric!r} in the results")
    if reference_model not in set(frame["model"]):
        raise DataError(f"the reference model {reference_model!r} is not in the results; models: {sorted(set(frame['model']))}")
    rows = []
    for key, group in frame.groupby(by, sort=True, observed=True):
        key = key if isinstance(key, tuple) else (key,)
        wide = group.pivot_table(index=unit, columns="model", values="value", aggfunc="first", observed=True)
        for model in sorted(c for c in wide.columns if c != reference_model):
            pair = wide[[model, reference_model]].dropna()
            if pair.empty:
                continue
            if (pair[reference_model] == 0).any():
                raise DataError(f"{reference_model} has {metric} = 0 for some units; the ratio is undefined there")
            ratio = (pair[model] / pair[reference_model]).to_numpy()
            ci = bootstrap_mean_ci(ratio, n_resamples, confidence, seed)
            rows.append(
                {
                    **dict(zip(by, key)),
                    "model": model,
                    "n": ci.n,
                    "mean_ratio": ci.estimate,
                    "low": ci.low,
                    "high": ci.high,
                    "log2_mean_ratio": float(np.log2(ci.estimate)),
                }
            )
    return pd.DataFrame(rows, columns=by + ["model", "n", "mean_ratio", "low", "high", "log2_mean_ratio"])


def _stream(seed: int, label: str) -> np.random.Generator:
    """A random stream per perturbation that depends only on the seed and its name."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(zlib.crc32(label.encode("utf-8")),)))


def _bootstrap_means(
    X: np.ndarray | sp.spmatrix, batch_codes: np.ndarray, rng: np.random.Generator, n_batch: int, n_cell: int
) -> np.ndarray:
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
    cells: AnnData,
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
    # a screen opened from disk is read one group of cells at a time (only the rows bootstrapped)
    backed = bool(getattr(cells, "isbacked", False))
    X = None if backed else cells.X
    if sp.issparse(X):
        X = sp.csr_matrix(X)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    bounds = {}
    uniq, first = np.unique(sorted_labels, return_index=True)
    last = np.append(first[1:], labels.size)
    for name, a, b in zip(uniq, first, last):
        bounds[name] = order[a:b]

    def point_and_boot(name: str) -> tuple[np.ndarray, np.ndarray]:
        rows = np.sort(bounds[name])
        Xg = read_rows(cells, rows) if backed else X[rows]
        codes = batches[rows]
        # point estimate: equal-weighted mean of the batch means
        uniq_b, inv = np.unique(codes, return_inverse=True)
        counts = np.bincount(inv)
        ind = sp.csr_matrix(
            (1.0 / (counts[inv] * uniq_b.size), (np.zeros(rows.size, dtype=np.int64), np.arange(rows.size))), shape=(1, rows.size)
        )
        point = np.asarray((ind @ Xg).todense() if sp.issparse(Xg) else ind @ Xg).ravel()
        boot = _bootstrap_means(Xg, codes, _stream(seed, name), n_batch_resamples, n_cell_resamples)
        return point, boot

    ctrl_point, ctrl_boot = point_and_boot(CONTROL)
    out = np.zeros((len(perturbations), n_batch_resamples * n_cell_resamples))
    for i, p in enumerate(progress_bar(perturbations, desc="bootstrap", disable=not progress)):
        point, boot = point_and_boot(p)
        diff = (boot - ctrl_boot) - (point - ctrl_point)
        out[i] = np.sqrt((diff**2).sum(axis=1))
    frame = pd.DataFrame(
        out, index=pd.Index(list(perturbations), name="perturbation"), columns=pd.RangeIndex(out.shape[1], name="replicate")
    )
    return frame
