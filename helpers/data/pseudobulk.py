"""Pseudobulk profiles: the mean expression of each perturbation, and its change from control.

Every benchmark in the book compares *pseudobulk* profiles, not single cells: for a
perturbation ``p`` with cells ``C_p`` the profile is ``x̄_p[g] = mean_{c in C_p} X[c, g]``
on the log-normalised scale, and the change (often called Δ or "delta") is
``x̄_p − x̄_control``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import DataError
from .canonical import CONTROL, n_targets

if TYPE_CHECKING:
    from anndata import AnnData


def _group_indicator(codes: np.ndarray, n_groups: int, weights: np.ndarray | None = None) -> sp.csr_matrix:
    """Sparse groups x items matrix with ``weights`` (default 1) at (code[i], i)."""
    n = codes.size
    data = np.ones(n) if weights is None else weights
    return sp.csr_matrix((data, (codes, np.arange(n))), shape=(n_groups, n))


def _group_sums(X: np.ndarray | sp.spmatrix, codes: np.ndarray, n_groups: int, chunk: int = 20_000) -> np.ndarray:
    """Dense groups x genes sums of the rows of ``X``, in float64, a block of rows at a time.

    Blocks bound the memory of the float64 copy that the sparse product makes of ``X``.
    """
    out = np.zeros((n_groups, X.shape[1]))
    for start in range(0, X.shape[0], chunk):
        stop = min(start + chunk, X.shape[0])
        ind = _group_indicator(codes[start:stop], n_groups)
        part = ind @ X[start:stop]
        out += part.toarray() if sp.issparse(part) else np.asarray(part)
    return out


def is_pseudobulk(adata: AnnData) -> bool:
    """Whether ``adata`` is already a pseudobulk object made by :func:`pseudobulk`."""
    return bool(adata.uns.get("pseudobulk", {}).get("is_pseudobulk", False))


def pseudobulk(adata: AnnData, batch_key: str | None = None, layer: str | None = None, groupby: str = "perturbation") -> AnnData:
    """Mean profile of every perturbation.

    Without ``batch_key``: ``x̄_p = (1/|C_p|) Σ_{c ∈ C_p} X[c]``.

    With ``batch_key`` (gem groups weighted equally, as in Cole et al. 2026):
    ``x̄_p = (1/|B_p|) Σ_{b ∈ B_p} (1/|C_pb|) Σ_{c ∈ C_pb} X[c]``, where ``B_p`` are the
    batches holding cells of ``p``.

    The cell matrix is never densified: the means are a sparse indicator matrix times
    the sparse cell matrix. A screen opened from disk (:func:`helpers.data.streaming.open_screen`)
    is streamed in blocks of cells (:func:`helpers.data.streaming.pseudobulk_streamed`).

    Parameters
    ----------
    adata
        Canonical screen (cells x genes). If it is already a pseudobulk, it is returned as is.
    batch_key
        ``obs`` column of batches to average with equal weight, e.g. ``"batch"``.
    layer
        Layer to average instead of ``X``.
    groupby
        ``obs`` column that defines the groups.

    Returns
    -------
    AnnData
        Perturbations x genes, dense float64 ``X``; ``obs`` has ``n_cells``,
        ``n_targets`` and (with batches) ``n_batches``; ``uns['pseudobulk']`` records how
        it was made.
    """
    import anndata as ad

    if is_pseudobulk(adata):
        return adata
    if getattr(adata, "isbacked", False):  # opened from disk: one streaming pass over blocks of cells
        from .streaming import pseudobulk_streamed

        return pseudobulk_streamed(adata, batch_key=batch_key, layer=layer, groupby=groupby)
    if groupby not in adata.obs:
        raise DataError(f"obs has no column {groupby!r}; load the screen with helpers.data.load_dataset first.")
    X = adata.X if layer is None else adata.layers[layer]
    groups = pd.Categorical(adata.obs[groupby].astype(str).to_numpy())
    labels = groups.categories
    codes = groups.codes.astype(np.int64)
    n_cells = np.bincount(codes, minlength=len(labels))

    if batch_key is None:
        means = _group_sums(X, codes, len(labels)) / n_cells[:, None]
        n_batches = None
    else:
        if batch_key not in adata.obs:
            raise DataError(f"obs has no batch column {batch_key!r}; pass batch_key=None to ignore batches.")
        batches = pd.Categorical(adata.obs[batch_key].astype(str).to_numpy()).codes
        means = np.zeros((len(labels), X.shape[1]))
        n_batches = np.zeros(len(labels), dtype=np.int64)
        # one batch at a time: memory stays at two perturbations x genes tables
        for b in np.unique(batches):
            rows = np.flatnonzero(batches == b)
            counts = np.bincount(codes[rows], minlength=len(labels))
            present = counts > 0
            sums = _group_sums(X[rows], codes[rows], len(labels))
            means[present] += sums[present] / counts[present, None]
            n_batches += present
        means /= n_batches[:, None]

    obs = pd.DataFrame(index=pd.Index(labels.astype(str), name=groupby))
    obs["n_cells"] = n_cells
    if groupby == "perturbation":
        obs["n_targets"] = n_targets(obs.index)
    if n_batches is not None:
        obs["n_batches"] = n_batches
    out = ad.AnnData(X=means.astype(np.float64), obs=obs, var=pd.DataFrame(index=adata.var_names.copy()))
    out.uns["pseudobulk"] = {"is_pseudobulk": True, "batch_key": batch_key or "", "layer": layer or "X", "groupby": groupby}
    return out


def as_pseudobulk(table: pd.DataFrame, n_cells: float | pd.Series | None = None) -> AnnData:
    """A pseudobulk AnnData from a perturbations x genes table of mean profiles.

    For profiles computed elsewhere (e.g. published pseudobulk files): every model of the
    suite accepts the result in ``fit`` like the output of :func:`pseudobulk`. Include a
    ``control`` row; ``n_cells`` (a number, or a Series indexed by perturbation) is only
    needed by cell-weighted baselines.
    """
    import anndata as ad

    obs = pd.DataFrame(index=pd.Index(table.index.astype(str), name="perturbation"))
    obs["n_cells"] = n_cells.reindex(obs.index).to_numpy() if isinstance(n_cells, pd.Series) else (np.nan if n_cells is None else n_cells)
    obs["n_targets"] = n_targets(obs.index)
    out = ad.AnnData(X=table.to_numpy(dtype=np.float64), obs=obs, var=pd.DataFrame(index=table.columns.astype(str)))
    out.uns["pseudobulk"] = {"is_pseudobulk": True, "batch_key": "", "layer": "X", "groupby": "perturbation"}
    return out


def control_profile(adata: AnnData, batch_key: str | None = None) -> pd.Series:
    """Mean profile of the control cells (``x̄_control``), indexed by gene."""
    pb = pseudobulk(adata, batch_key=batch_key)
    if CONTROL not in pb.obs_names:
        raise DataError("no 'control' group: a control profile needs control cells.")
    return pd.Series(pb[CONTROL].X.ravel(), index=pb.var_names, name=CONTROL)


def profiles(adata: AnnData, batch_key: str | None = None, include_control: bool = True) -> pd.DataFrame:
    """Pseudobulk profiles as a perturbations x genes DataFrame."""
    pb = pseudobulk(adata, batch_key=batch_key)
    frame = pd.DataFrame(pb.X, index=pb.obs_names.copy(), columns=pb.var_names.copy())
    if not include_control:
        frame = frame.drop(index=CONTROL, errors="ignore")
    return frame


def changes(adata: AnnData, batch_key: str | None = None) -> pd.DataFrame:
    """Change from control of every perturbation: ``Δ_p = x̄_p − x̄_control`` (control row dropped)."""
    frame = profiles(adata, batch_key=batch_key)
    if CONTROL not in frame.index:
        raise DataError("no 'control' group: changes are defined relative to control cells.")
    return frame.drop(index=CONTROL) - frame.loc[CONTROL]
