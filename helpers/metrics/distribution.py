"""Distances between clouds of cells: how far predicted cells lie from observed ones.

Profile metrics compare means; a model that predicts the right mean with the wrong spread
(or every cell at the mean) is only caught by comparing the cells themselves. PerturBench
(Wu et al. 2024) compares predicted and observed cells of each perturbation in the space of
the first 30 principal components of the observed cells, with the energy distance.

* :func:`energy_distance` — :math:`E(X, Y) = 2\\,\\overline{\\lVert x - y\\rVert} -
  \\overline{\\lVert x - x'\\rVert} - \\overline{\\lVert y - y'\\rVert}` over all pairs (the
  V-statistic: every pair, a point with itself included). It is 0 for identical clouds and
  positive otherwise. PerturBench's ``mmd`` is computed with ``geomloss.SamplesLoss("energy")``,
  which returns half of it (:func:`perturbench_mmd`); cell-eval's energy distance is ``E``.
* :class:`PCASpace` — the principal components of the observed cells, into which both clouds are
  projected before the distance is taken.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import DataError

#: Cells x dimensions: a dense array, a sparse matrix, or anything ``np.asarray`` reads.
ArrayLike = np.ndarray | sp.spmatrix | sp.sparray


def _points(x: ArrayLike, what: str) -> np.ndarray:
    x = x.toarray() if sp.issparse(x) else np.asarray(x, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise DataError(f"{what} must be a non-empty cells x dimensions array, got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise DataError(f"{what} holds NaN or infinite values.")
    return x


def _mean_pairwise(a: np.ndarray, b: np.ndarray, block: int = 2048) -> float:
    """Mean Euclidean distance over all pairs (a_i, b_j), in blocks of rows to bound memory.

    ``scipy.spatial.distance.cdist`` takes each difference directly (the Gram-matrix shortcut
    ``|a|² + |b|² − 2ab`` loses about eight digits for nearby points).
    """
    from scipy.spatial.distance import cdist

    total = 0.0
    for start in range(0, a.shape[0], block):
        total += float(cdist(a[start : start + block], b).sum())
    return total / (a.shape[0] * b.shape[0])


def energy_distance(x: ArrayLike, y: ArrayLike) -> float:
    """Energy distance between two clouds of points (cells x dimensions).

    .. math:: E(X, Y) = \\frac{2}{nm}\\sum_{i,j} \\lVert x_i - y_j\\rVert
              - \\frac{1}{n^2}\\sum_{i,i'} \\lVert x_i - x_{i'}\\rVert
              - \\frac{1}{m^2}\\sum_{j,j'} \\lVert y_j - y_{j'}\\rVert

    with Euclidean distances. 0 for identical clouds; for one-dimensional data the square root
    of ``E`` is :func:`scipy.stats.energy_distance`. Symmetric, non-negative.
    """
    a, b = _points(x, "the first cloud"), _points(y, "the second cloud")
    if a.shape[1] != b.shape[1]:
        raise DataError(f"the two clouds have different dimensions ({a.shape[1]} and {b.shape[1]}).")
    value = 2.0 * _mean_pairwise(a, b) - _mean_pairwise(a, a) - _mean_pairwise(b, b)
    return max(value, 0.0)  # rounding can make an exact 0 slightly negative


def perturbench_mmd(x: ArrayLike, y: ArrayLike) -> float:
    """PerturBench's ``mmd``: ``geomloss.SamplesLoss(loss="energy")`` of the two clouds, i.e. ``E(X, Y) / 2``."""
    return 0.5 * energy_distance(x, y)


@dataclass
class PCASpace:
    """The principal components of reference (observed) cells; :meth:`transform` projects any cells into them.

    Components from the centred reference cells (exact SVD); ``n_components`` is capped at
    ``min(cells, genes) - 1``. Signs are fixed (largest loading positive) so the space is deterministic.
    """

    mean: np.ndarray
    components: np.ndarray  # n_components x genes

    @classmethod
    def fit(cls, cells: ArrayLike, n_components: int = 30) -> PCASpace:
        X = _points(cells, "the reference cells")
        k = int(min(n_components, X.shape[0] - 1, X.shape[1]))
        if k < 1:
            raise DataError("the PCA space needs at least two reference cells.")
        mean = X.mean(axis=0)
        _, _, vt = np.linalg.svd(X - mean, full_matrices=False)
        vt = vt[:k]
        signs = np.sign(vt[np.arange(k), np.abs(vt).argmax(axis=1)])
        return cls(mean, vt * signs[:, None])

    def transform(self, cells: ArrayLike) -> np.ndarray:
        X = _points(cells, "the cells to project")
        if X.shape[1] != self.mean.size:
            raise DataError(f"the cells have {X.shape[1]} genes, the PCA space {self.mean.size}.")
        return (X - self.mean) @ self.components.T


__all__ = ["PCASpace", "energy_distance", "perturbench_mmd"]
