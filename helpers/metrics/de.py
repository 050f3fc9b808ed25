"""Cell-level metrics: differential expression agreement (cell-eval) and distances between clouds of cells.

cell-eval (Arc Institute; the Virtual Cell Challenge) runs a DE test on the real cells and,
separately, on the predicted cells, and compares the two results per perturbation. Here the DE
test is the suite's vectorised Welch t-test of each perturbation's cells against control cells
(:func:`helpers.stats.de.welch_t_test`, Benjamini–Hochberg over the genes of each perturbation);
cell-eval uses a Mann–Whitney U test (``pdex``). The log2 fold change is pdex's default: the
ratio of the geometric means in count space,

.. math:: \\mathrm{LFC}_{pg} = \\log_2 \\frac{\\operatorname{expm1}(\\bar x_{pg}) + \\epsilon}
          {\\operatorname{expm1}(\\bar x_{cg}) + \\epsilon}

with :math:`\\bar x` the mean log-normalised expression, :math:`\\epsilon = 0` as in cell-eval
(a gene absent from both groups gets 0; absent from the reference only, :math:`\\pm\\infty`).

Metrics (per perturbation; "significant" = BH-adjusted p below ``fdr``, genes ranked by
:math:`|\\mathrm{LFC}|`, ties in gene order):

* :func:`de_overlap` — cell-eval ``overlap_at_N`` / ``overlap_at_k``:
  :math:`|\\mathrm{top}_k(\\mathrm{real}) \\cap \\mathrm{top}_k(\\mathrm{pred})| / k` with
  :math:`k = \\min(k, n^{sig}_{real})` (``k=None``: :math:`n^{sig}_{real}`);
* :func:`de_precision` — cell-eval ``precision_at_N``: the same with :math:`k` from the predicted side;
* :func:`de_direction_match` — the fraction of real significant genes whose predicted LFC has the same sign;
* :func:`de_spearman_lfc` — Spearman correlation of real and predicted LFC over the real significant genes;
* :func:`de_recall` — the fraction of real significant genes that are significant in the prediction.

cell-eval reports 0 where a value is undefined (no significant gene); here it is NaN and counted.

Distances between clouds: :func:`energy_distances` — the energy distance
(:func:`helpers.metrics.distribution.energy_distance`) of each perturbation's predicted and real
cells in the principal components of the real cells (:func:`fit_pca`; PerturBench).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.canonical import CONTROL
from ..errors import DataError
from ..stats.de import benjamini_hochberg, welch_t_test
from .distribution import PCASpace, energy_distance

if TYPE_CHECKING:
    from anndata import AnnData

#: Significance threshold of the DE metrics (cell-eval's default).
FDR = 0.05


@dataclass
class DEResult:
    """Per-perturbation DE of every gene against a reference group of control cells.

    ``lfc``, ``t``, ``p`` and ``padj`` are perturbations x genes; ``reference`` says which
    control cells were the reference (e.g. ``"control (real cells)"``); ``n_cells`` counts the
    cells of each perturbation.
    """

    lfc: pd.DataFrame
    t: pd.DataFrame
    p: pd.DataFrame
    padj: pd.DataFrame
    reference: str
    n_cells: pd.Series

    def significant(self, fdr: float = FDR) -> pd.Series:
        """Number of significant genes per perturbation."""
        return (self.padj < fdr).sum(axis=1).rename("n_significant")


def log2_fold_change(mean: np.ndarray, reference: np.ndarray, epsilon: float = 0.0) -> np.ndarray:
    """pdex's log2 fold change of geometric means: ``log2((expm1(m) + ε) / (expm1(m_ref) + ε))``; 0 where both are 0."""
    a = np.expm1(np.asarray(mean, dtype=np.float64)) + epsilon
    b = np.expm1(np.asarray(reference, dtype=np.float64)) + epsilon
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log2(a / b)
    out[(a == 0) & (b == 0)] = 0.0
    return out


def differential_expression(
    cells: AnnData,
    perturbations: Sequence[str] | None = None,
    reference: str = "control (real cells)",
    epsilon: float = 0.0,
    chunk: int = 8,
) -> DEResult:
    """Welch t-test + BH of each perturbation's cells against the control cells of ``cells``.

    ``cells`` is a canonical AnnData with control cells (label ``control``). The test runs on
    ``chunk`` perturbations at a time (each with all control cells), so the float64 moments of a
    large sparse matrix are never held at once; the result does not depend on ``chunk``.
    """
    labels = cells.obs["perturbation"].astype(str).to_numpy()
    if CONTROL not in set(labels):
        raise DataError(f"the DE test against {reference} needs control cells, and there are none.")
    present = pd.unique(labels)
    perts = [p for p in present if p != CONTROL] if perturbations is None else [str(p) for p in perturbations]
    missing = sorted(set(perts) - set(present))
    if missing:
        raise DataError(f"no cells for {len(missing)} perturbations in the DE test (e.g. {missing[:5]}).")
    control_rows = np.flatnonzero(labels == CONTROL)
    parts = []
    for start in range(0, len(perts), chunk):
        block = perts[start : start + chunk]
        rows = np.concatenate([control_rows, np.flatnonzero(np.isin(labels, block))])
        test = welch_t_test(cells[np.sort(rows)])
        lfc = log2_fold_change(test.means.loc[block].to_numpy(), test.means.loc[CONTROL].to_numpy()[None, :], epsilon)
        parts.append((test.t.loc[block], test.p.loc[block], pd.DataFrame(lfc, index=pd.Index(block), columns=test.t.columns)))
    t = pd.concat([x[0] for x in parts])
    p = pd.concat([x[1] for x in parts])
    lfc = pd.concat([x[2] for x in parts])
    for frame in (t, p, lfc):
        frame.index.name = "perturbation"
    n = pd.Series(labels).value_counts().reindex(perts).rename("n_cells")
    return DEResult(lfc=lfc, t=t, p=p, padj=benjamini_hochberg(p), reference=reference, n_cells=n)


def _aligned(real: DEResult, pred: DEResult) -> tuple[pd.Index, pd.Index]:
    perts = real.lfc.index
    if set(perts) != set(pred.lfc.index):
        only_real = perts.difference(pred.lfc.index)
        only_pred = pred.lfc.index.difference(perts)
        raise DataError(
            f"the real and predicted DE cover different perturbations ({len(only_real)} only real, e.g. "
            f"{only_real[:3].tolist()}; {len(only_pred)} only predicted, e.g. {only_pred[:3].tolist()})."
        )
    if set(real.lfc.columns) != set(pred.lfc.columns):
        raise DataError("the real and predicted DE cover different genes; test both on the same genes.")
    return perts, real.lfc.columns


def _ranked_significant(lfc: np.ndarray, padj: np.ndarray, fdr: float) -> np.ndarray:
    """Indices of the significant genes, by |LFC| descending (ties in gene order)."""
    sig = np.flatnonzero(padj < fdr)
    order = np.argsort(-np.abs(lfc[sig]), kind="stable")
    return sig[order]


def _per_perturbation(real: DEResult, pred: DEResult, fdr: float, fn: Callable[..., float], name: str) -> pd.Series:
    perts, genes = _aligned(real, pred)
    RL = real.lfc.to_numpy(dtype=np.float64)
    RP = real.padj.to_numpy(dtype=np.float64)
    PL = pred.lfc.reindex(index=perts, columns=genes).to_numpy(dtype=np.float64)
    PP = pred.padj.reindex(index=perts, columns=genes).to_numpy(dtype=np.float64)
    values = [fn(RL[i], RP[i], PL[i], PP[i], fdr) for i in range(len(perts))]
    return pd.Series(values, index=perts.copy(), name=name, dtype=np.float64)


def de_overlap(real: DEResult, pred: DEResult, k: int | None = None, fdr: float = FDR) -> pd.Series:
    """cell-eval ``overlap_at_N`` (``k=None``) or ``overlap_at_k``.

    :math:`|\\mathrm{top}_{k'}(\\mathrm{real}) \\cap \\mathrm{top}_{k'}(\\mathrm{pred})| / k'`,
    :math:`k' = \\min(k, n^{sig}_{real})` (``k=None``: :math:`k' = n^{sig}_{real}`), each side's
    significant genes ranked by :math:`|\\mathrm{LFC}|`. NaN without real significant genes.
    """

    def one(rl: np.ndarray, rp: np.ndarray, pl: np.ndarray, pp: np.ndarray, fdr: float) -> float:
        r, q = _ranked_significant(rl, rp, fdr), _ranked_significant(pl, pp, fdr)
        kk = r.size if not k else min(k, r.size)
        if kk == 0:
            return np.nan
        return np.intersect1d(r[:kk], q[:kk]).size / kk

    return _per_perturbation(real, pred, fdr, one, "de_overlap_at_n" if k is None else f"de_overlap_at_{k}")


def de_precision(real: DEResult, pred: DEResult, k: int | None = None, fdr: float = FDR) -> pd.Series:
    """cell-eval ``precision_at_N``: as :func:`de_overlap` with :math:`k' = \\min(k, n^{sig}_{pred})`; NaN without predicted significant genes."""

    def one(rl: np.ndarray, rp: np.ndarray, pl: np.ndarray, pp: np.ndarray, fdr: float) -> float:
        r, q = _ranked_significant(rl, rp, fdr), _ranked_significant(pl, pp, fdr)
        kk = q.size if not k else min(k, q.size)
        if kk == 0:
            return np.nan
        return np.intersect1d(r[:kk], q[:kk]).size / kk

    return _per_perturbation(real, pred, fdr, one, "de_precision_at_n" if k is None else f"de_precision_at_{k}")


def de_direction_match(real: DEResult, pred: DEResult, fdr: float = FDR) -> pd.Series:
    """Fraction of the real significant genes whose predicted LFC has the same sign (cell-eval ``de_direction_match``)."""

    def one(rl: np.ndarray, rp: np.ndarray, pl: np.ndarray, pp: np.ndarray, fdr: float) -> float:
        sig = rp < fdr
        if not sig.any():
            return np.nan
        return float(np.mean(np.sign(rl[sig]) == np.sign(pl[sig])))

    return _per_perturbation(real, pred, fdr, one, "de_direction_match")


def de_spearman_lfc(real: DEResult, pred: DEResult, fdr: float = FDR) -> pd.Series:
    """Spearman correlation of real and predicted LFC over the real significant genes (cell-eval ``de_spearman_lfc_sig``).

    NaN with fewer than 2 real significant genes or a constant side.
    """
    from scipy.stats import spearmanr

    def one(rl: np.ndarray, rp: np.ndarray, pl: np.ndarray, pp: np.ndarray, fdr: float) -> float:
        sig = rp < fdr
        if sig.sum() < 2:
            return np.nan
        a, b = rl[sig], pl[sig]
        if np.unique(a).size < 2 or np.unique(b).size < 2:
            return np.nan
        return float(spearmanr(a, b).statistic)

    return _per_perturbation(real, pred, fdr, one, "de_spearman_lfc")


def de_recall(real: DEResult, pred: DEResult, fdr: float = FDR) -> pd.Series:
    """Fraction of the real significant genes that are significant in the prediction (cell-eval ``de_sig_genes_recall``)."""

    def one(rl: np.ndarray, rp: np.ndarray, pl: np.ndarray, pp: np.ndarray, fdr: float) -> float:
        sig = rp < fdr
        if not sig.any():
            return np.nan
        return float(np.mean(pp[sig] < fdr))

    return _per_perturbation(real, pred, fdr, one, "de_recall")


# ----------------------------------------------------------------------------- clouds of cells


def fit_pca(cells: AnnData | sp.spmatrix | np.ndarray, n_components: int = 30, max_cells: int = 10_000, seed: int = 0) -> PCASpace:
    """Principal components of (at most ``max_cells``, seeded) reference cells, without densifying them.

    Randomised SVD (Halko et al. 2011) of the implicitly centred matrix :math:`X - \\mathbf 1 \\mu^\\top`
    with 15 extra dimensions and 5 power iterations (a close approximation of the leading
    components, not the exact SVD when the spectrum has no gap); signs fixed as in :class:`PCASpace` (largest
    loading positive). With at most ``n_components + 15`` cells or genes it is the exact SVD.
    """
    X = cells.X if hasattr(cells, "obs") else cells
    rng = np.random.default_rng(seed)
    if X.shape[0] > max_cells:
        X = X[np.sort(rng.choice(X.shape[0], max_cells, replace=False))]
    X = sp.csr_matrix(X, dtype=np.float64) if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    n, g = X.shape
    k = int(min(n_components, n - 1, g))
    if k < 1:
        raise DataError("the PCA space needs at least two reference cells.")
    mean = np.asarray(X.mean(axis=0)).ravel()
    if min(n, g) <= k + 15:
        dense = X.toarray() if sp.issparse(X) else X
        return PCASpace.fit(dense, n_components=k)

    def right(M: np.ndarray) -> np.ndarray:  # (X - 1 mu^T) @ M
        return X @ M - np.outer(np.ones(n), mean @ M)

    def left(M: np.ndarray) -> np.ndarray:  # (X - 1 mu^T)^T @ M
        return X.T @ M - np.outer(mean, M.sum(axis=0))

    ell = k + 15
    Q = right(rng.standard_normal((g, ell)))
    Q, _ = np.linalg.qr(Q)
    for _ in range(5):
        Z, _ = np.linalg.qr(left(Q))
        Q, _ = np.linalg.qr(right(Z))
    B = left(Q).T  # ell x genes
    _, _, vt = np.linalg.svd(B, full_matrices=False)
    vt = vt[:k]
    signs = np.sign(vt[np.arange(k), np.abs(vt).argmax(axis=1)])
    return PCASpace(mean, vt * signs[:, None])


def project(space: PCASpace, X: sp.spmatrix | np.ndarray) -> np.ndarray:
    """Cells in the PC space: :math:`(X - \\mu) V^\\top`, computed as :math:`X V^\\top - \\mu V^\\top` for sparse ``X``."""
    if sp.issparse(X):
        return np.asarray(X @ space.components.T) - space.mean @ space.components.T
    return space.transform(np.asarray(X, dtype=np.float64))


def energy_distances(
    pred: AnnData, truth: AnnData, space: PCASpace, perturbations: Sequence[str], max_cells: int | None = None, seed: int = 0
) -> pd.Series:
    """Energy distance of each perturbation's predicted and real cells in the PC space ``space``.

    :math:`E(P_p, T_p) = 2\\overline{\\lVert x - y\\rVert} - \\overline{\\lVert x - x'\\rVert} -
    \\overline{\\lVert y - y'\\rVert}` (:func:`helpers.metrics.distribution.energy_distance`, all pairs).
    With ``max_cells``, each side is subsampled (seeded) to at most that many cells. 0 is perfect.
    """
    rng = np.random.default_rng(seed)
    p_labels = pred.obs["perturbation"].astype(str).to_numpy()
    t_labels = truth.obs["perturbation"].astype(str).to_numpy()
    # X once per side: the X of an AnnData view is a fresh copy at every access
    p_X, t_X = pred.X, truth.X
    out = {}
    for p in perturbations:
        sides = []
        for X, labels, what in ((p_X, p_labels, "predicted"), (t_X, t_labels, "real")):
            rows = np.flatnonzero(labels == p)
            if rows.size == 0:
                raise DataError(f"no {what} cells for {p!r}; the energy distance needs cells on both sides.")
            if max_cells is not None and rows.size > max_cells:
                rows = np.sort(rng.choice(rows, max_cells, replace=False))
            sides.append(project(space, X[rows]))
        out[p] = energy_distance(sides[0], sides[1])
    return pd.Series(out, name="energy_distance_pca", dtype=np.float64).rename_axis("perturbation")


__all__ = [
    "DEResult",
    "FDR",
    "de_direction_match",
    "de_overlap",
    "de_precision",
    "de_recall",
    "de_spearman_lfc",
    "differential_expression",
    "energy_distances",
    "fit_pca",
    "log2_fold_change",
    "project",
]
