"""Predict a perturbation's effect from an embedding of its target gene (Cole et al. 2026).

The progress-bar benchmark asks how well ``Δ_p = f(e_p)`` can be learned when ``e_p`` is
an embedding of the perturbed gene (random vectors, Gene Ontology, a foundation model, the
same perturbation in other cell lines, ...). The predictor of the paper
(``bench_essential_lfc.py``) is

``StandardScaler → PCA(min(100, n_features, n_train)) → head``

with the head a k-nearest-neighbour regressor (k ∈ {20, 40, 60, 80, 100}) or a Lasso
(α ∈ {1e-3, 1e-2, 1e-1, 1}); the hyperparameter is chosen by an inner 5-fold
cross-validation (``KFold(5, shuffle=True, random_state=42)``) with the score
``−mean_p ||Δ̂_p − Δ_p||₂``. Perturbations whose gene has no embedding are predicted by
the training mean.

Implementation notes (why not one ``GridSearchCV``):

* The PCA is exact (:class:`ExactPCA`, an eigendecomposition of the smaller Gram matrix)
  rather than scikit-learn's randomised solver, which ``PCA(100)`` picks for wide inputs: the
  same up to the components' signs, faster here, and independent of a random state.
* The inner cross-validation is written out (same splits, same score, same tie rule as
  ``GridSearchCV``: the first grid value with the best mean score wins), so that every fit
  records the perturbations it saw in :attr:`EmbeddingRegressor.fit_log_` and the fold loop
  can *check* that no test perturbation reached any fit — the scaler, the PCA, the inner
  folds or the final model.
* kNN: the neighbours are searched once up to the largest ``k`` and the prediction for each
  ``k`` is the mean of the first ``k`` (identical to ``KNeighborsRegressor`` up to ties in
  distance).
* Lasso: the PCA scores are uncorrelated on the rows the PCA was fitted on, so the Lasso
  objective ``(1/2n)||y − Zw − b||² + α||w||₁`` separates by coordinate and its solution is
  exact soft-thresholding, ``w_j = S(z_jᵀy/n, α) / (z_jᵀz_j/n)``, for all genes at once.
  When the design is not orthogonal (the idealized cheater, whose PCA was fitted on other
  rows) the same objective is solved by coordinate descent on the Gram matrix, all genes in
  one vector operation (:func:`lasso_gram`; scikit-learn's ``Lasso`` loops over the genes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ParamSpec, Self, TypeVar

import numpy as np
import pandas as pd

from ..data.canonical import CONTROL, target_genes
from ..errors import DataError
from ..knowledge.embeddings import ExactPCA, validate_embedding
from .base import ModelTags, PerturbationModel

if TYPE_CHECKING:
    from anndata import AnnData

KNN_GRID = (20, 40, 60, 80, 100)
LASSO_GRID = (1e-3, 1e-2, 1e-1, 1.0)
HEADS = ("knn", "lasso")
HEAD_LABELS = {"knn": "kNN", "lasso": "Lasso"}


class TooFewEmbeddedError(DataError):
    """Too few training perturbations have an embedding to fit the regressor at all."""


_P = ParamSpec("_P")
_R = TypeVar("_R")


def one_blas_thread(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``func`` with one BLAS and one OpenMP thread.

    The matrices here are small (hundreds to a few thousand rows): one thread is as fast, and
    multi-threaded LAPACK calls (the randomised PCA's QR) slow down by orders of magnitude when
    other processes share the cores.
    """
    import functools

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            return func(*args, **kwargs)

    return wrapper


def _mean_l2(pred: np.ndarray, truth: np.ndarray) -> float:
    """Inner-CV score: mean over perturbations of the Euclidean error (internal; reported metrics use helpers.metrics)."""
    return float(np.sqrt(((pred - truth) ** 2).sum(axis=1)).mean())


class _Preprocess:
    """StandardScaler → PCA(k), or nothing (``enabled=False``)."""

    def __init__(self, enabled: bool, n_components: int, seed: int):
        self.enabled, self.n_components, self.seed = enabled, n_components, seed

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        if not self.enabled:
            return X
        from sklearn.preprocessing import StandardScaler

        self.scaler = StandardScaler().fit(X)
        Xs = self.scaler.transform(X)
        self.pca = ExactPCA(self.n_components).fit(Xs)
        return self.pca.transform(Xs)

    def transform(self, X: np.ndarray) -> np.ndarray:
        if not self.enabled:
            return X
        return self.pca.transform(self.scaler.transform(X))


class _KNNHead:
    """Mean of the training targets of the ``k`` nearest rows (Euclidean), for several ``k`` at once."""

    def fit(self, Z: np.ndarray, Y: np.ndarray):
        from sklearn.neighbors import NearestNeighbors

        self.Z, self.Y = Z, Y
        self.nn = NearestNeighbors(algorithm="brute", metric="euclidean").fit(Z)
        return self

    def predict(self, Z: np.ndarray, grid: Sequence[int]) -> list[np.ndarray]:
        import scipy.sparse as sp

        _, idx = self.nn.kneighbors(Z, n_neighbors=max(grid))
        n_rows, n_train = idx.shape[0], self.Y.shape[0]
        running = np.zeros((n_rows, self.Y.shape[1]))
        out, done = [], 0
        for k in sorted(grid):
            # add the neighbours done..k-1 of every row: a sparse indicator times the targets
            cols = idx[:, done:k].ravel()
            rows = np.repeat(np.arange(n_rows), k - done)
            running += sp.csr_matrix((np.ones(cols.size), (rows, cols)), shape=(n_rows, n_train)) @ self.Y
            done = k
            out.append(running / k)
        order = {k: i for i, k in enumerate(sorted(grid))}
        return [out[order[k]] for k in grid]


def lasso_gram(
    G: np.ndarray, C: np.ndarray, yy: np.ndarray, alpha: float, W0: np.ndarray | None = None, tol: float = 1e-4, max_sweeps: int = 5000
) -> np.ndarray:
    """Multi-output Lasso by coordinate descent on the Gram matrix, all outputs at once.

    Minimises ``(1/2n)||y_t − Z_c w_t||² + α|w_t|₁`` for every output ``t`` (centred ``Z_c``,
    ``y_t``) given ``G = Z_cᵀZ_c/n`` (features x features), ``C = Z_cᵀY_c/n`` (features x
    outputs) and ``yy_t = ||y_t||²/n``: cycle over features ``j``,
    ``w_j ← S(C_j − Σ_{k≠j} G_jk w_k, α) / G_jj`` (soft-thresholding ``S``), every output
    updated in one vector operation. Stops, like scikit-learn's ``Lasso``, when every output's
    duality gap is below ``tol · yy_t``.
    """
    W = np.zeros_like(C) if W0 is None else W0.copy()
    diag = np.diag(G)
    active = np.flatnonzero(diag > 0)
    todo = np.arange(C.shape[1])  # outputs not converged yet: only they are updated
    from scipy.linalg.blas import dger

    G = np.asarray(G, dtype=np.float64)
    Wt, Ct, yyt = W.copy(), C, yy
    # C_j − Σ_k G_jk w_k for every j (the residual's correlation with feature j), Fortran order so
    # that the rank-one updates below run in place in BLAS
    Rt = np.asfortranarray(C - G @ W)
    columns = [np.ascontiguousarray(G[:, j]) for j in range(G.shape[0])]
    for sweep in range(max_sweeps):
        for j in active:
            rho = Rt[j] + diag[j] * Wt[j]
            new = np.sign(rho) * np.maximum(np.abs(rho) - alpha, 0.0) / diag[j]
            d = new - Wt[j]
            if np.any(d):
                Rt = dger(-1.0, columns[j], d, a=Rt, overwrite_a=True)
                Wt[j] = new
        if sweep % 5 == 4 or sweep == max_sweeps - 1:
            # duality gap per output (scikit-learn's enet_coordinate_descent_gram, divided by n)
            wc = (Wt * Ct).sum(axis=0)
            r2 = yyt - 2 * wc + (Wt * (G @ Wt)).sum(axis=0)  # ||y − Zw||² / n
            dual = np.abs(Rt).max(axis=0)
            const = np.where(dual > alpha, alpha / np.where(dual > 0, dual, 1.0), 1.0)
            gap = 0.5 * r2 * (1 + const**2) + alpha * np.abs(Wt).sum(axis=0) - const * (yyt - wc)
            done = gap <= tol * yyt
            W[:, todo] = Wt
            if done.all():
                break
            if done.any():
                keep = ~done
                todo, Wt, Ct, yyt = todo[keep], Wt[:, keep], Ct[:, keep], yyt[keep]
                Rt = np.asfortranarray(Rt[:, keep])
    return W


class _LassoHead:
    """Multi-output Lasso ``(1/2n)||Y − ZW − 1b||² + α||W||₁`` for several ``α`` at once."""

    def __init__(self, tol: float = 1e-4):
        self.tol = tol  # duality-gap tolerance of the coordinate descent (scikit-learn's default)

    def fit(self, Z: np.ndarray, Y: np.ndarray):
        n = Z.shape[0]
        self.z_mean, self.y_mean = Z.mean(axis=0), Y.mean(axis=0)
        Zc = Z - self.z_mean
        self.G = Zc.T @ Zc / n
        Yc = Y - self.y_mean
        self.C = Zc.T @ Yc / n  # features x outputs
        self.yy = (Yc**2).sum(axis=0) / n
        diag = np.diag(self.G).copy()
        off = self.G - np.diag(diag)
        scale = max(float(diag.max(initial=0.0)), 1e-300)
        self.orthogonal = bool(np.all(diag > 1e-12 * scale) and np.abs(off).max(initial=0.0) <= 1e-8 * scale)
        self._warm: dict[float, np.ndarray] = {}
        return self

    def coefficients(self, alpha: float) -> np.ndarray:
        if self.orthogonal:
            return np.sign(self.C) * np.maximum(np.abs(self.C) - alpha, 0.0) / np.diag(self.G)[:, None]
        if alpha not in self._warm:
            # warm start from the solution of the nearest larger alpha already computed
            larger = [a for a in self._warm if a > alpha]
            start = self._warm[min(larger)] if larger else None
            self._warm[alpha] = lasso_gram(self.G, self.C, self.yy, alpha, start, tol=self.tol)
        return self._warm[alpha]

    def predict(self, Z: np.ndarray, grid: Sequence[float]) -> list[np.ndarray]:
        out = {}
        for alpha in sorted(grid, reverse=True):  # large alpha first: sparse, quick, a good warm start
            out[alpha] = self.y_mean + (Z - self.z_mean) @ self.coefficients(alpha)
        return [out[a] for a in grid]


class EmbeddingRegressor(PerturbationModel):
    """``Δ_p = f(e_p)``: the embedding predictor of the progress-bar benchmark.

    Parameters
    ----------
    embedding
        Genes x dimensions DataFrame (index = gene symbols). A single perturbation ``p`` is
        embedded by the row of its target gene; rows with NaN count as missing.
    head
        ``"knn"`` (k-nearest neighbours, grid ``k_grid``) or ``"lasso"`` (grid ``alpha_grid``).
    n_components
        PCA dimension: ``min(n_components, n_features, n_train)`` (Cole et al.: 100).
    k_grid, alpha_grid
        Hyperparameter grids; ``k`` values are capped at the smallest inner training size.
    inner_folds
        Folds of the inner cross-validation (``KFold(inner_folds, shuffle=True, random_state=seed)``).
    seed
        Seed of the inner split (the PCA is exact and needs none).
    preprocess
        Apply StandardScaler → PCA before the head (False for the idealized cheater, whose
        embedding already is a PCA of the labels).
    batch_key
        Batch column used when ``fit`` receives cells (gem groups weighted equally).

    Attributes (after ``fit``)
    ----------
    genes_, train_mean_
        Genes of the targets and the mean training target (the fallback prediction).
    fitted_perturbations_
        Training perturbations that had an embedding and were used by the regression.
    train_without_embedding_
        Training perturbations without an embedding (used only for the training mean).
    best_param_, cv_results_
        Chosen hyperparameter and the inner-CV table (grid value x inner fold, mean L2).
    fit_log_
        List of ``(stage, perturbations)`` for every fit made: each inner fold's
        preprocessing + head, and the final fit. The fold loop checks each against the test set.
    """

    name = "embedding regressor"
    _tags = ModelTags(training_data="changes", embeds_targets=True, predicts_doubles=False)

    def __init__(
        self,
        embedding: pd.DataFrame,
        head: str = "knn",
        n_components: int = 100,
        k_grid: Sequence[int] = KNN_GRID,
        alpha_grid: Sequence[float] = LASSO_GRID,
        inner_folds: int = 5,
        seed: int = 42,
        preprocess: bool = True,
        batch_key: str | None = None,
    ):
        self.embedding = embedding
        self.head = head
        self.n_components = n_components
        self.k_grid = k_grid
        self.alpha_grid = alpha_grid
        self.inner_folds = inner_folds
        self.seed = seed
        self.preprocess = preprocess
        self.batch_key = batch_key

    # -- inputs ----------------------------------------------------------------------------
    def _targets(self, train: AnnData | pd.DataFrame) -> pd.DataFrame:
        """Training targets, perturbations x genes: a DataFrame as given, or pseudobulk profiles of cells."""
        if isinstance(train, pd.DataFrame):
            table = train.astype(np.float64)
        else:
            from ..data.pseudobulk import pseudobulk

            pb = pseudobulk(train, batch_key=self.batch_key)
            table = pd.DataFrame(pb.X, index=pb.obs_names.astype(str), columns=pb.var_names.astype(str))
            if CONTROL in table.index:
                self.control_ = table.loc[CONTROL].copy()
        table = table.drop(index=CONTROL, errors="ignore")
        doubles = [p for p in table.index if len(target_genes(p)) != 1]
        self.train_doubles_ = doubles
        table = table.drop(index=doubles)
        if table.empty:
            raise DataError("the training data hold no single-gene perturbations; the embedding regressor needs some.")
        if not np.isfinite(table.to_numpy()).all():
            raise DataError("the training targets contain NaN or infinite values.")
        return table

    def _embedded(self, perturbations: Sequence[str]) -> tuple[list[str], np.ndarray]:
        rows = self._embedding.reindex(list(perturbations))
        ok = rows.notna().all(axis=1).to_numpy()
        names = [p for p, good in zip(perturbations, ok) if good]
        return names, rows.to_numpy()[ok]

    def without_embedding(self, perturbations: Sequence[str]) -> list[str]:
        """Perturbations (of ``perturbations``) whose gene has no embedding: predicted by the training mean."""
        rows = self._embedding.reindex([str(p) for p in perturbations])
        return [p for p, ok in zip(perturbations, rows.notna().all(axis=1).to_numpy()) if not ok]

    # -- fit ---------------------------------------------------------------------------------
    @one_blas_thread
    def fit(self, train: AnnData | pd.DataFrame) -> Self:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, not {self.head!r}")
        emb = self.embedding
        self._embedding = emb if emb.attrs.get("validated") else validate_embedding(emb.dropna(how="any"), "the embedding")
        table = self._targets(train)
        self.genes_ = table.columns.copy()
        self.train_mean_ = pd.Series(table.to_numpy().mean(axis=0), index=self.genes_)
        perts = sorted(table.index)
        names, X = self._embedded(perts)
        self.train_without_embedding_ = sorted(set(perts) - set(names))
        self.fitted_perturbations_ = tuple(names)
        self.fit_log_ = []
        n = len(names)
        if n < 2 * self.inner_folds:
            raise TooFewEmbeddedError(
                f"only {n} training perturbations have an embedding; the inner {self.inner_folds}-fold "
                f"cross-validation needs at least {2 * self.inner_folds}."
            )
        Y = table.loc[names].to_numpy()
        names_arr = np.array(names)

        from sklearn.model_selection import KFold

        splits = list(KFold(self.inner_folds, shuffle=True, random_state=self.seed).split(X))
        grid = self._grid(min(len(tr) for tr, _ in splits))
        scores = np.zeros((len(grid), len(splits)))
        for f, (tr, va) in enumerate(splits):
            prep, head = self._fit_once(X[tr], Y[tr], names_arr[tr], f"inner fold {f}")
            preds = head.predict(prep.transform(X[va]), grid)
            scores[:, f] = [_mean_l2(p, Y[va]) for p in preds]
        mean = scores.mean(axis=1)
        best = int(np.argmin(mean))  # first of ties, as GridSearchCV's rank
        self.grid_ = list(grid)
        self.best_param_ = grid[best]
        param = "k" if self.head == "knn" else "alpha"
        self.cv_results_ = pd.DataFrame(scores, index=pd.Index(grid, name=param), columns=[f"inner fold {f}" for f in range(len(splits))])
        self.cv_results_["mean L2"] = mean
        self._prep, self._head = self._fit_once(X, Y, names_arr, "final fit")
        return self

    def _grid(self, n_fit: int) -> list:
        if self.head == "knn":
            grid = sorted({int(min(k, n_fit)) for k in self.k_grid})
            if not grid or grid[0] < 1:
                raise ValueError("k_grid must hold positive integers")
            return grid
        return [float(a) for a in self.alpha_grid]

    def _fit_once(self, X: np.ndarray, Y: np.ndarray, names: Iterable[object], stage: str) -> tuple[_Preprocess, _KNNHead | _LassoHead]:
        self.fit_log_.append((stage, tuple(str(n) for n in names)))
        prep = _Preprocess(self.preprocess, self.n_components, self.seed)
        Z = prep.fit_transform(X)
        head = (_KNNHead() if self.head == "knn" else _LassoHead()).fit(Z, Y)
        return prep, head

    # -- predict -----------------------------------------------------------------------------
    def unpredictable(self, perturbations: Sequence[str]) -> dict[str, str]:
        self._check_fitted()
        return {p: "a double perturbation has no single target-gene embedding" for p in perturbations if len(target_genes(p)) != 1}

    @one_blas_thread
    def _predict(self, perturbations: list[str]) -> pd.DataFrame:
        out = np.tile(self.train_mean_.to_numpy(), (len(perturbations), 1))
        names, X = self._embedded(perturbations)
        if names:
            pred = self._head.predict(self._prep.transform(X), [self.best_param_])[0]
            pos = {p: i for i, p in enumerate(perturbations)}
            out[[pos[p] for p in names]] = pred
        return pd.DataFrame(out, index=pd.Index(perturbations), columns=self.genes_)


# ---------------------------------------------------------------------------------------
# the outer fold loop
# ---------------------------------------------------------------------------------------

#: Kinds of embedding sources: nulls set the worst acceptable performance, cheaters the best
#: achievable one; "embedding" is everything to be placed between them.
KINDS = ("null method", "embedding", "cheater")


@dataclass
class EmbeddingSource:
    """How to get an embedding for one fold.

    ``build(train_changes, all_changes)`` returns a genes x dimensions DataFrame. It receives
    only the training perturbations' changes; ``all_changes`` (train and test) is passed to
    sources of kind ``"cheater"`` alone and is ``None`` otherwise. A fixed embedding
    (GO, a file, ...) ignores both.
    """

    name: str
    kind: str
    build: Callable[[pd.DataFrame, pd.DataFrame | None], pd.DataFrame]
    preprocess: bool = True
    per_fold: bool = False
    description: str = ""
    _cache: pd.DataFrame | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")

    def get(self, train_changes: pd.DataFrame, all_changes: pd.DataFrame) -> pd.DataFrame:
        if not self.per_fold and self._cache is not None:
            return self._cache
        emb = self.build(train_changes, all_changes if self.kind == "cheater" else None)
        emb = validate_embedding(emb.dropna(how="any"), f"the {self.name} embedding")
        emb.attrs["validated"] = True
        if not self.per_fold:
            self._cache = emb
        return emb


def fixed_source(name: str, embedding: pd.DataFrame, kind: str = "embedding", description: str = "") -> EmbeddingSource:
    """An embedding that does not depend on the fold (GO, a file, random vectors, control-cell PCA)."""
    return EmbeddingSource(name, kind, lambda train, everything: embedding, description=description)


def model_label(embedding: str, head: str) -> str:
    """Model name in result tables, e.g. ``"GO (kNN)"``."""
    return f"{embedding} ({HEAD_LABELS.get(head, head)})"
