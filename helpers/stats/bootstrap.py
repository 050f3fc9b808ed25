"""Percentile bootstrap over perturbations, vectorised.

Used for the Fig. 2c-style comparison of Ahlmann-Eltze et al. (2025): per perturbation the
ratio ``L2(model) / L2(mean)``, averaged over perturbations, with a 95 % percentile interval
from 10,000 resamples of the perturbations (METHODS.md A.4).

The resamples are an index matrix: resample ``b`` draws ``n`` perturbations with
replacement, ``idx[b] ~ Uniform{0..n−1}^n``, and its statistic is the mean of the values at
``idx[b]``. The indices depend only on ``seed`` and ``n``, so models compared on the same
perturbations are resampled identically (a paired bootstrap), and a rerun gives the same
interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data.canonical import DataError

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


def _as_matrix(values) -> tuple[np.ndarray, bool]:
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


def bootstrap_means(values, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
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


def bootstrap_mean_ci(values, n_resamples: int = N_RESAMPLES, confidence: float = 0.95, seed: int = 0) -> BootstrapCI:
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
            rows.append({**dict(zip(by, key)), "model": model, "n": ci.n, "mean_ratio": ci.estimate,
                         "low": ci.low, "high": ci.high, "log2_mean_ratio": float(np.log2(ci.estimate))})
    return pd.DataFrame(rows, columns=by + ["model", "n", "mean_ratio", "low", "high", "log2_mean_ratio"])
