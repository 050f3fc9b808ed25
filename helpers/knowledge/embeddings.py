"""Gene embeddings for predicting a perturbation's effect from its target gene.

An *embedding* is a table of genes x dimensions (a pandas DataFrame indexed by gene
symbol). For a single-gene perturbation ``p`` the predictor of the progress-bar analysis
(Cole et al. 2026; :mod:`helpers.models.embedding_regressor`) sees only the row of the
targeted gene, ``e_p``, and learns ``Δ_p ≈ f(e_p)``.

This module provides

* :func:`read_embeddings` — "bring your own embeddings": a CSV/TSV, parquet or h5ad file of
  genes x dimensions, e.g. exported from a foundation model, checked and with clear errors;
* :func:`coverage` — which perturbed genes an embedding lacks (count and examples), so the
  notebook can say which perturbations fall back to the training mean;
* the embeddings the analysis builds itself: :func:`random_embedding` (null),
  :func:`label_pca_embedding` (PCA of the training labels, null),
  :func:`control_pca_embedding` (PCA of control cells, the "fair" PCA null),
  :func:`context_embedding` (the same perturbation's effects in the other cell lines) and
  :func:`idealized_embedding` (PCA of train *and test* labels, a cheater by design).

Every embedding built from labels records in ``frame.attrs["fitted_on"]`` the
perturbations whose labels it used, so the fold loop can check that no test perturbation
was among them (:func:`check_no_test_labels`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.canonical import CONTROL
from ..errors import DataError

if TYPE_CHECKING:
    from anndata import AnnData

#: File suffixes :func:`read_embeddings` understands.
SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet", ".h5ad": "h5ad"}
_GZ = {".gz", ".bz2", ".xz", ".zip"}
_SHOW = 5


def _examples(names: Iterable[object], k: int = _SHOW) -> str:
    names = [str(n) for n in names]
    shown = ", ".join(names[:k])
    return shown + (f", ... ({len(names)} in total)" if len(names) > k else "")


# ---------------------------------------------------------------------------------------
# bring your own embeddings
# ---------------------------------------------------------------------------------------


def _file_kind(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _GZ:
        suffixes = suffixes[:-1]
    kind = SUFFIXES.get(suffixes[-1] if suffixes else "")
    if kind is None:
        raise DataError(
            f"cannot read embeddings from {path.name!r}: unknown file type. Use a CSV (.csv), tab-separated "
            "(.tsv/.txt), parquet (.parquet) or AnnData (.h5ad) file of genes x dimensions."
        )
    return kind


def _pick_gene_column(frame: pd.DataFrame, gene_column: str | None, path: Path) -> pd.DataFrame:
    """Put the gene symbols in the index."""
    if gene_column is not None:
        if gene_column == frame.index.name:
            return frame
        if gene_column not in frame.columns:
            raise DataError(
                f"{path.name} has no column {gene_column!r} for the gene symbols; its columns are "
                f"{_examples(frame.columns)} (index: {frame.index.name!r})."
            )
        return frame.set_index(gene_column)
    index_is_labels = not isinstance(frame.index, pd.RangeIndex) and not pd.api.types.is_numeric_dtype(frame.index)
    if index_is_labels:
        return frame
    text_cols = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if not text_cols:
        raise DataError(
            f"{path.name} has no column of gene symbols: every column is numeric. Put the gene symbols in the "
            "first column (CSV/TSV), the index (parquet) or obs_names (h5ad), or pass gene_column=..."
        )
    return frame.set_index(text_cols[0])


def read_embeddings(path: str | Path, gene_column: str | None = None, name: str | None = None) -> pd.DataFrame:
    """Read a genes x dimensions embedding file and check it.

    Accepted files:

    * ``.csv`` / ``.tsv`` / ``.txt`` (optionally compressed): one row per gene, the gene
      symbols in the first column (or ``gene_column``), one numeric column per dimension;
    * ``.parquet``: the same, gene symbols in the index or in ``gene_column`` / the first
      text column;
    * ``.h5ad``: ``obs_names`` (or ``obs[gene_column]``) are the genes, ``X`` (dense or
      sparse) the dimensions.

    Text columns other than the gene column (e.g. an Ensembl ID next to the symbol) are
    dropped and listed in ``frame.attrs["dropped_columns"]``.

    Parameters
    ----------
    path
        The file.
    gene_column
        Column holding the gene symbols, if not the first text column / the index.
    name
        Name of the embedding in tables and plots; default: the file's stem.

    Returns
    -------
    pandas.DataFrame
        Genes (index, named ``gene``) x dimensions, float64, with ``attrs["name"]``,
        ``attrs["source"]`` and ``attrs["dropped_columns"]``.

    Raises
    ------
    helpers.errors.DataError
        If the file is missing or of an unknown type, has no gene column or no numeric
        column, holds duplicated gene symbols, or NaN/infinite values.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"embedding file {str(path)!r} does not exist; give the path of a genes x dimensions file.")
    kind = _file_kind(path)
    if kind in ("csv", "tsv"):
        frame = pd.read_csv(path, sep="," if kind == "csv" else "\t", index_col=None)
        if gene_column is None and frame.shape[1] > 0:
            gene_column = frame.columns[0]
        frame = _pick_gene_column(frame, gene_column, path)
    elif kind == "parquet":
        frame = _pick_gene_column(pd.read_parquet(path), gene_column, path)
    else:
        import anndata as ad

        adata = ad.read_h5ad(path)
        if gene_column and gene_column not in adata.obs:
            raise DataError(f"{path.name} has no obs column {gene_column!r}; obs columns: {list(adata.obs.columns)}")
        X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
        index = adata.obs[gene_column].astype(str).to_numpy() if gene_column else adata.obs_names.to_numpy()
        frame = pd.DataFrame(X, index=pd.Index(index), columns=[str(c) for c in adata.var_names])
    frame.index = frame.index.astype(str).str.strip()
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
    dropped = [str(c) for c in frame.columns if c not in numeric]
    if not numeric:
        raise DataError(
            f"{path.name} has no numeric columns: an embedding needs one numeric column per dimension "
            f"(found only {_examples(frame.columns) or 'no columns'})."
        )
    out = frame[numeric].astype(np.float64)
    out.columns = [str(c) for c in out.columns]
    out = validate_embedding(out, what=path.name)
    out.attrs.update({"name": name or path.name.split(".")[0], "source": str(path), "dropped_columns": dropped})
    return out


def validate_embedding(embedding: pd.DataFrame, what: str = "the embedding") -> pd.DataFrame:
    """Check a genes x dimensions table: unique non-empty gene names, numbers only, no NaN.

    Returns the table as float64 with the index named ``gene`` (``attrs`` kept).
    """
    if not isinstance(embedding, pd.DataFrame):
        raise DataError(f"{what} must be a pandas DataFrame of genes x dimensions, not {type(embedding).__name__}.")
    if embedding.shape[0] == 0:
        raise DataError(f"{what} has no rows (genes).")
    if embedding.shape[1] == 0:
        raise DataError(f"{what} has no columns (dimensions).")
    index = embedding.index.astype(str)
    empty = (index == "") | (index.str.lower() == "nan")
    if empty.any():
        raise DataError(f"{what} has {int(empty.sum())} rows without a gene symbol; remove them or fill in the symbol.")
    if not index.is_unique:
        dup = index[index.duplicated()].unique()
        raise DataError(
            f"{what} lists {len(dup)} genes more than once ({_examples(dup)}); keep one row per gene "
            "(e.g. average the rows, or keep the canonical isoform)."
        )
    try:
        values = embedding.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{what} holds non-numeric values ({err}).") from None
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise DataError(
            f"{what} has NaN or infinite values for {int(bad.sum())} genes ({_examples(index[bad])}). Drop those rows: "
            "genes without an embedding are reported and predicted by the training mean."
        )
    out = pd.DataFrame(values, index=pd.Index(index, name="gene"), columns=embedding.columns.copy())
    out.attrs.update(embedding.attrs)
    return out


@dataclass
class Coverage:
    """Which of the perturbed genes an embedding covers.

    ``missing`` lists the perturbed genes without an embedding row (or with a NaN row),
    in the order given; such perturbations are predicted by the training mean.
    """

    name: str
    n_perturbations: int
    missing: list[str] = field(default_factory=list)

    @property
    def n_missing(self) -> int:
        return len(self.missing)

    @property
    def n_covered(self) -> int:
        return self.n_perturbations - self.n_missing

    def as_row(self) -> dict:
        return {
            "embedding": self.name,
            "perturbed genes": self.n_perturbations,
            "with embedding": self.n_covered,
            "without": self.n_missing,
            "examples without": _examples(self.missing, 6) if self.missing else "",
        }

    def __str__(self) -> str:
        text = f"{self.name}: {self.n_covered:,} of {self.n_perturbations:,} perturbed genes have an embedding"
        if self.missing:
            text += f"; {self.n_missing:,} do not ({_examples(self.missing)}) and are predicted by the training mean"
        return text + "."


def coverage(embedding: pd.DataFrame, perturbed_genes: Sequence[str], name: str | None = None, require_overlap: bool = True) -> Coverage:
    """Report the perturbed genes an embedding lacks.

    Parameters
    ----------
    embedding
        Genes x dimensions; rows with NaN count as missing.
    perturbed_genes
        The single-gene perturbations of the screen.
    require_overlap
        Raise if the embedding covers none of them (the usual cause: Ensembl IDs instead of
        symbols, or another species' capitalisation).
    """
    name = name or embedding.attrs.get("name", "embedding")
    genes = [str(g) for g in perturbed_genes]
    rows = embedding.reindex(genes)
    missing = [g for g, ok in zip(genes, rows.notna().all(axis=1).to_numpy()) if not ok]
    cov = Coverage(name, len(genes), missing)
    if require_overlap and genes and cov.n_covered == 0:
        hint = ""
        index = embedding.index.astype(str)
        if index.str.match(r"^ENS[A-Z]*G\d+").mean() > 0.5:
            hint = " Its genes look like Ensembl IDs: map them to gene symbols first."
        elif len(set(index.str.upper()) & {g.upper() for g in genes}) > 0:
            hint = " The symbols match when upper-cased: fix the capitalisation (human symbols are upper case)."
        raise DataError(
            f"{name} has no row for any of the {len(genes):,} perturbed genes (e.g. {_examples(genes, 3)}; the file "
            f"has e.g. {_examples(index, 3)}).{hint}"
        )
    return cov


# ---------------------------------------------------------------------------------------
# embeddings built by the analysis
# ---------------------------------------------------------------------------------------


def _named(frame: pd.DataFrame, name: str, fitted_on: Iterable[str] = (), **attrs) -> pd.DataFrame:
    frame.index.name = "gene"
    frame.attrs.update({"name": name, "fitted_on": tuple(sorted(fitted_on)), **attrs})
    return frame


def random_embedding(genes: Iterable[str], n_dimensions: int = 100, seed: int = 0) -> pd.DataFrame:
    """Null embedding: ``e_g ~ U(0, 1)^d`` independently for every gene (Cole et al.'s "random").

    Drawn from ``numpy.random.default_rng(seed)`` in the order of the sorted gene symbols,
    so a gene's vector does not depend on the order in which genes are passed.
    """
    genes = sorted({str(g) for g in genes})
    values = np.random.default_rng(seed).random((len(genes), n_dimensions))
    return _named(pd.DataFrame(values, index=pd.Index(genes), columns=[f"R{i + 1}" for i in range(n_dimensions)]), "random")


class ExactPCA:
    """PCA by an eigendecomposition of the smaller of ``XᵀX`` and ``XXᵀ`` (centred ``X``).

    Exact (no randomised solver, so the result does not depend on a random state or on how
    well a power iteration converged in a flat, noisy spectrum) and fast when one side of
    ``X`` is small, which is always the case here (hundreds to a few thousand perturbations,
    or at most a few hundred embedding dimensions). Components' signs are fixed (largest
    absolute loading positive); components with zero variance (``k`` above the rank) score 0.
    The scores equal scikit-learn's ``PCA(k, svd_solver="full")`` up to those signs.
    """

    def __init__(self, n_components: int):
        self.n_components = n_components

    def fit(self, X: np.ndarray) -> Self:
        X = np.asarray(X, dtype=np.float64)
        n, p = X.shape
        k = int(min(self.n_components, n, p))
        self.mean_ = X.mean(axis=0)
        Xc = X - self.mean_
        if p <= n:
            values, vectors = np.linalg.eigh(Xc.T @ Xc)
            order = np.argsort(values)[::-1][:k]
            values, components = values[order], vectors[:, order].T
        else:
            values, vectors = np.linalg.eigh(Xc @ Xc.T)
            order = np.argsort(values)[::-1][:k]
            values, U = values[order], vectors[:, order]
            sing = np.sqrt(np.clip(values, 0.0, None))
            keep = sing > 1e-10 * max(float(sing.max(initial=0.0)), 1e-300)
            components = np.zeros((k, p))
            components[keep] = (U[:, keep].T @ Xc) / sing[keep, None]
        tiny = values <= 1e-12 * max(float(values.max(initial=0.0)), 1e-300)
        components[tiny] = 0.0
        signs = np.sign(components[np.arange(k), np.argmax(np.abs(components), axis=1)])
        self.components_ = components * np.where(signs == 0, 1.0, signs)[:, None]
        self.explained_variance_ = np.clip(values, 0.0, None) / max(n - 1, 1)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64) - self.mean_) @ self.components_.T

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).transform(X)


def _pca_rows(matrix: np.ndarray, n_components: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row coordinates ``U_k Σ_k`` of the column-centred ``matrix`` (:class:`ExactPCA`) and the explained variances.

    ``seed`` is unused (the PCA is exact); it is kept so that callers can pass one.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # see helpers.models.embedding_regressor.one_blas_thread
        pca = ExactPCA(n_components).fit(matrix)
        return pca.transform(matrix), pca.explained_variance_


def label_pca_embedding(train_changes: pd.DataFrame, n_components: int = 100, seed: int = 0) -> pd.DataFrame:
    """Gene embedding from the training labels (a null method of the progress bars).

    With ``Y`` the training changes (training perturbations x genes), each *gene* is
    described by how it responds across the training perturbations: the rows of ``Yᵀ``
    (genes x training perturbations) are reduced by PCA to ``n_components`` coordinates.
    A perturbation is then embedded by the row of its target gene. Only the training
    perturbations' labels are used; they are listed in ``attrs["fitted_on"]``.
    """
    Y = train_changes.to_numpy(dtype=np.float64).T
    coords, _ = _pca_rows(Y, n_components, seed)
    frame = pd.DataFrame(coords, index=pd.Index(train_changes.columns.astype(str)), columns=[f"PC{i + 1}" for i in range(coords.shape[1])])
    return _named(frame, "PCA of training labels", fitted_on=train_changes.index)


def control_pca_embedding(control_cells: AnnData, n_components: int = 100, seed: int = 0, max_cells: int = 2000) -> pd.DataFrame:
    """The "fair" PCA gene embedding of Cole et al.: genes described by control cells only.

    Each gene's expression across control cells is standardised (mean 0, variance 1 over
    cells; genes without variance get zeros) and the genes x cells matrix is reduced by PCA
    to ``n_components`` coordinates: genes that co-vary in unperturbed cells get nearby
    coordinates. No perturbation label is used. At most ``max_cells`` control cells are
    used (a seeded subsample) to bound the memory of the dense genes x cells block.

    Parameters
    ----------
    control_cells
        AnnData of control cells (log-normalised ``X``, sparse or dense).
    """
    X = control_cells.X
    n = X.shape[0]
    if n < 2:
        raise DataError("the control-cell PCA needs at least two control cells.")
    if n > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_cells, replace=False))
        X = X[rows]
    dense = X.toarray() if sp.issparse(X) else np.asarray(X)
    dense = dense.astype(np.float64)
    dense -= dense.mean(axis=0)
    sd = dense.std(axis=0)
    dense /= np.where(sd > 0, sd, 1.0)
    coords, _ = _pca_rows(dense.T, n_components, seed)
    frame = pd.DataFrame(
        coords, index=pd.Index(control_cells.var_names.astype(str)), columns=[f"PC{i + 1}" for i in range(coords.shape[1])]
    )
    return _named(frame, "PCA of control cells")


def context_embedding(changes_by_context: Mapping[str, pd.DataFrame], context: str) -> pd.DataFrame:
    """Embed a perturbation by its measured effects in the *other* contexts (cell lines).

    ``e_p = [Δ_p^{k_1}, Δ_p^{k_2}, ...]`` for the contexts ``k_i ≠ context`` (columns named
    ``context:gene``). This is a legitimate, informative embedding: it uses labels of other
    cell lines only, never of the context being predicted. Perturbations missing from any
    other context get no row (they are reported and fall back to the training mean).
    """
    others = [k for k in sorted(changes_by_context) if k != context]
    if not others:
        raise DataError(f"the other-contexts embedding needs at least two contexts; the data have only {context!r}.")
    parts = []
    for k in others:
        frame = changes_by_context[k]
        parts.append(frame.set_axis([f"{k}:{g}" for g in frame.columns], axis=1))
    table = pd.concat(parts, axis=1, join="inner")
    return _named(table.astype(np.float64), "other contexts", contexts=tuple(others))


def idealized_embedding(all_changes: pd.DataFrame, n_components: int = 100, seed: int = 0) -> pd.DataFrame:
    """Cole et al.'s "idealized baseline", a **cheater**: PCA of the labels of train *and* test.

    ``E = PCA_k([Y_train; Y_test])``: each perturbation is embedded by the principal
    components of its own observed change. The predictor then works on ``E`` directly
    (no scaler or second PCA). It sees the test labels by design, so it bounds what a
    perfect embedding could reach; ``attrs["fitted_on"]`` lists every perturbation and
    ``attrs["uses_test_labels"]`` is True.
    """
    coords, _ = _pca_rows(all_changes.to_numpy(dtype=np.float64), n_components, seed)
    frame = pd.DataFrame(coords, index=pd.Index(all_changes.index.astype(str)), columns=[f"PC{i + 1}" for i in range(coords.shape[1])])
    return _named(frame, "idealized PCA (cheater)", fitted_on=all_changes.index, uses_test_labels=True)


def check_no_test_labels(fitted_on: Iterable[str], test: Iterable[str], what: str) -> None:
    """Raise if any test perturbation is among the perturbations a fit used.

    Used by the fold loop on every embedding built from labels and on every fit the
    regressor records (scaler, PCA, inner cross-validation, final fit).
    """
    leaked = sorted(set(map(str, fitted_on)) & set(map(str, test)))
    if leaked:
        raise AssertionError(f"{what} was fitted on {len(leaked)} test perturbation(s): {_examples(leaked)}")


def single_gene_perturbations(perturbations: Iterable[str]) -> list[str]:
    """The single-gene perturbations among ``perturbations`` (control and doubles left out)."""
    return [p for p in map(str, perturbations) if p != CONTROL and "+" not in p]
