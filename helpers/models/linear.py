"""The linear model of Ahlmann-Eltze, Huber & Anders (Nature Methods 2025), in Python.

The model writes the training changes as a bilinear function of a gene embedding ``G``
and a perturbation embedding ``P``,

.. math:: Y \\approx G W P + b 1^T,

and fits ``W`` in closed form by a ridge penalty on both sides (Ahlmann-Eltze et al. 2025,
``run_linear_pretrained_model.R``). The published code is R; users asked for a Python
version they can import on its own (const-ae/linear_perturbation_prediction-Paper #6):
:class:`LinearModel` is that version, with the same defaults (``K = 10``, ``λ = 0.1``).

:func:`condition_pca_embedding` builds the "P from another dataset" embedding of the
paper (``extract_pert_embedding_pca.R``): the principal-component scores of every
condition of a reference screen.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Self

import numpy as np
import pandas as pd
import scipy.linalg

from ..data.canonical import CONTROL, target_genes
from ..data.pseudobulk import pseudobulk
from ..errors import DataError
from .base import ModelTags, PerturbationModel

if TYPE_CHECKING:
    from anndata import AnnData

_EMBEDDING_CHOICES = ("training_pca", "random")


def _top_pcs(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and singular values of the first ``k`` principal components of the rows of ``X``.

    ``X`` (n x m) is centred column-wise (every column minus its mean over the rows), not
    scaled, as ``prcomp(center=TRUE, scale.=FALSE)``. The PCs come from an exact
    eigendecomposition of the smaller Gram matrix (``XᵀX`` or ``XXᵀ``), so they are
    deterministic and need no random seed. Each component's sign is fixed so that its
    score of largest magnitude is positive (nothing downstream depends on the signs).

    Returns
    -------
    scores : ndarray (n x k)
        ``U_k Σ_k``, the principal-component scores of the rows.
    sdev : ndarray (k,)
        The singular values ``Σ_k``.
    """
    Xc = X - X.mean(axis=0, keepdims=True)
    n, m = Xc.shape
    if m <= n:
        gram = Xc.T @ Xc
        values, vectors = scipy.linalg.eigh(gram, subset_by_index=[m - k, m - 1])
        values, vectors = values[::-1], vectors[:, ::-1]
        scores = Xc @ vectors
    else:
        gram = Xc @ Xc.T
        values, vectors = scipy.linalg.eigh(gram, subset_by_index=[n - k, n - 1])
        values, vectors = values[::-1], vectors[:, ::-1]
        scores = vectors * np.sqrt(np.clip(values, 0.0, None))
    idx = np.argmax(np.abs(scores), axis=0)
    signs = np.sign(scores[idx, np.arange(k)])
    scores = scores * np.where(signs == 0, 1.0, signs)
    return scores, np.sqrt(np.clip(values, 0.0, None))


def _max_components(n: int, m: int) -> int:
    """Largest number of PCs of a column-centred n x m matrix that can be non-degenerate."""
    return max(min(n - 1, m), 1)


def _gene_seeded_normal(gene: str, k: int, seed: int) -> np.ndarray:
    """A standard-normal vector that depends only on ``(seed, gene)``."""
    rng = np.random.default_rng([int(seed), zlib.crc32(gene.encode("utf-8"))])
    return rng.standard_normal(k)


def _ridge_inverse(A: np.ndarray, ridge: float) -> np.ndarray:
    """``(A + λI)⁻¹`` for a symmetric positive semi-definite ``A``."""
    return scipy.linalg.inv(A + ridge * np.eye(A.shape[0]))


def condition_pca_embedding(reference: AnnData, n_components: int = 10, include_control: bool = True) -> pd.DataFrame:
    """PCA scores of every condition of a reference screen, as a perturbation embedding.

    This is the "P from another dataset" of Ahlmann-Eltze et al.
    (``extract_pert_embedding_pca.R``): ``prcomp_irlba(t(X), n = 10)`` where ``X`` is the
    genes x conditions pseudobulk of **all** conditions of the reference screen (train
    and test, and control). Conditions are the observations and genes the variables;
    genes are centred, not scaled. Row ``p`` of the result is the embedding of
    perturbation ``p``; for a single perturbation that is its target gene's symbol, so
    the frame can be passed as ``perturbation_embedding`` of :class:`LinearModel`.

    The embedding lives in the reference's condition space, so the two screens need not
    measure the same genes: a perturbation of the target screen has an embedding exactly
    when the reference perturbed the same gene.

    Parameters
    ----------
    reference
        Canonical screen (cells) or its pseudobulk.
    n_components
        Number of PCs ``K'`` (capped at what the reference supports).
    include_control
        Keep the control condition in the PCA and in the result (published: yes).

    Returns
    -------
    pandas.DataFrame
        Conditions x ``PC1..PCK'``. Signs are fixed (largest-magnitude score positive).
    """
    pb = pseudobulk(reference)
    table = pd.DataFrame(pb.X, index=pb.obs_names.copy(), columns=pb.var_names.copy())
    if not include_control:
        table = table.drop(index=CONTROL, errors="ignore")
    if table.shape[0] < 2:
        raise DataError("the reference screen needs at least two conditions for a PCA embedding.")
    k = min(int(n_components), _max_components(*table.shape))
    scores, _ = _top_pcs(table.to_numpy(dtype=np.float64), k)
    out = pd.DataFrame(scores, index=table.index.copy(), columns=[f"PC{i + 1}" for i in range(k)])
    out.index.name = "perturbation"
    return out


class TargetGeneEmbedding:
    """Look-up of perturbation embeddings by target gene (shared by the embedding models).

    ``kind`` is ``"table"`` (rows of ``table``, e.g. a GO embedding or another screen's
    PCA), ``"training_pca"`` (rows of the training PCA scores; the reasons then say "not
    measured") or ``"random"`` (a standard-normal vector per gene from ``(seed, gene)``).
    Perturbation ``p`` gets the row named ``p`` if there is one, otherwise — for a double —
    the sum of its genes' rows; ``control`` gets zeros unless the table has a ``control``
    row.
    """

    def __init__(self, kind: str, table: pd.DataFrame | None = None, dim: int | None = None, seed: int = 0):
        if kind not in ("table", "training_pca", "random"):
            raise ValueError(f"unknown embedding kind {kind!r}")
        self.kind = kind
        self.table = table if table is not None else pd.DataFrame()
        self.dim = int(dim) if dim is not None else self.table.shape[1]
        self.seed = seed
        self.columns = list(self.table.columns) if kind != "random" else [f"R{i + 1}" for i in range(self.dim)]
        self._values = self.table.to_numpy(dtype=np.float64)

    def vectors(self, perturbations: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """``dim x n`` embedding of ``perturbations`` (NaN columns for those without one) and the list of those."""
        perts = list(perturbations)
        out = np.full((self.dim, len(perts)), np.nan)
        missing = []
        if self.kind == "random":
            for j, p in enumerate(perts):
                vecs = [_gene_seeded_normal(g, self.dim, self.seed) for g in target_genes(p)]
                out[:, j] = np.sum(vecs, axis=0) if vecs else 0.0
            return out, missing
        index = self.table.index
        pos = index.get_indexer(perts)
        for j, p in enumerate(perts):
            if pos[j] >= 0:
                out[:, j] = self._values[pos[j]]
            elif p == CONTROL:
                out[:, j] = 0.0
            else:
                genes = target_genes(p)
                gpos = index.get_indexer(list(genes))
                if len(genes) > 1 and (gpos >= 0).all():
                    out[:, j] = self._values[gpos].sum(axis=0)
                else:
                    missing.append(p)
        return out, missing

    def reason(self, perturbation: str) -> str:
        """Why ``perturbation`` has no embedding."""
        genes = [g for g in target_genes(perturbation) if g not in self.table.index]
        names = ", ".join(genes) if genes else perturbation
        if self.kind == "training_pca":
            return f"target gene {names} not measured (no row in the training PCA)"
        return f"target gene {names} not in the perturbation embedding"

    def unpredictable(self, perturbations: Sequence[str]) -> dict[str, str]:
        _, missing = self.vectors(perturbations)
        return {p: self.reason(p) for p in missing}


def clean_embedding_table(table: pd.DataFrame, what: str) -> pd.DataFrame:
    """Numeric copy of an embedding table without incomplete rows; refuses duplicates and infinities."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"the {what} must be a pandas DataFrame with one row per gene")
    if not table.index.is_unique:
        raise DataError(f"the {what} table has duplicate row names; make them unique.")
    values = table.apply(pd.to_numeric, errors="coerce").astype(float)
    if np.isinf(values.to_numpy()).any():
        raise DataError(f"the {what} table holds infinite values.")
    values.index = values.index.astype(str)
    return values.dropna(how="any")


class LinearModel(PerturbationModel):
    """Linear model ``Y ≈ G W P + b`` with a closed-form double ridge (Ahlmann-Eltze et al. 2025).

    Notation: ``Y`` is the genes x conditions matrix of training changes
    ``x̄_p − x̄_c`` (pseudobulk minus control); ``G`` (genes x K) embeds genes; ``P``
    (K' x conditions) embeds perturbations. Fit:

    * ``b = rowMeans(Y)``, the mean training change (with ``include_control`` the control
      column, whose change is 0, is one of the columns, as in the published code);
    * ``W = (GᵀG + λI)⁻¹ Gᵀ (Y − b1ᵀ) Pᵀ (PPᵀ + λI)⁻¹`` with ``λ = ridge`` on both sides.
      This is the minimiser of ``‖Y − b1ᵀ − G W P‖²_F + λ‖G W‖²_F + λ‖W P‖²_F + λ²‖W‖²_F``
      ``= ‖(Pᵀ ⊗ G) vec W − vec(Y − b1ᵀ)‖² + vec(W)ᵀ (PPᵀ ⊗ λI + λI ⊗ GᵀG + λ² I) vec W``,
      i.e. ridge regression of ``vec(Y − b1ᵀ)`` on the Kronecker design ``Pᵀ ⊗ G``
      whose normal equations factorise as ``(PPᵀ + λI) ⊗ (GᵀG + λI)``.

    Predict: ``ŷ_p = G W P_p + b + x̄_c`` (mean log-normalised expression).

    Embeddings:

    * ``"training_pca"`` (published default for both): a PCA of the training pseudobulk
      with **genes as rows** (observations) and training conditions as columns, columns
      centred not scaled (``irlba::prcomp_irlba(X_train, n = K)``); ``G`` = the PC scores
      of the genes. The perturbation embedding of "perturb gene g" is **row g of the same
      PC scores**, so a perturbation whose target gene is not measured cannot be
      embedded. Computed exactly (eigendecomposition of the Gram matrix), deterministic;
      the signs of the PCs are fixed but do not matter: the prediction ``G W P`` is
      unchanged when any column of ``G`` or row of ``P`` flips sign (or under any
      orthogonal rotation of either embedding), because ``W`` absorbs it.
    * ``"random"``: standard-normal entries. ``G`` is drawn from ``seed``; the
      perturbation embedding of gene ``g`` is drawn from ``(seed, g)``, so every gene,
      measured or not, has one and it does not depend on the other genes.
    * a DataFrame: for ``gene_embedding``, genes x K (e.g. a foundation model's gene
      tokens); genes of the screen without a row (or with NaNs) get a zero row, i.e. their
      prediction is the mean training change ``b`` (listed in ``genes_not_embedded_``).
      For ``perturbation_embedding``, genes (or perturbation names) x K' — e.g. the PCA
      of another screen (:func:`condition_pca_embedding`) or a GO embedding
      (:func:`helpers.knowledge.go_embedding`); rows with NaNs count as missing. A row
      named ``"control"`` is used for the control column, otherwise it gets zeros.

    Double perturbations (an extension; the published model is for singles): if ``"A+B"``
    has no row of its own in a perturbation embedding table, ``P_{A+B} = P_A + P_B``.
    Training conditions without an embedding are left out of the fit (``excluded_``);
    :meth:`unpredictable` lists requested ones with the reason.

    Parameters
    ----------
    n_components
        ``K``, the dimension of the PCA / random embeddings (published ``pca_dim = 10``).
        Capped at what the training data support (``n_components_``).
    ridge
        ``λ``, the ridge penalty on both sides (published ``ridge_penalty = 0.1``).
    gene_embedding
        ``"training_pca"``, ``"random"`` or a genes x K DataFrame.
    perturbation_embedding
        ``"training_pca"``, ``"random"`` or a genes x K' DataFrame.
    include_control
        Treat the control as one more training condition (change 0, embedding 0) in the
        PCA, in ``b`` and in the fit, as the published code does.
    seed
        Seed of the random embeddings (the PCA needs none).

    Attributes
    ----------
    genes_ : pandas.Index
        Genes of the screen, the columns of the predictions.
    control_ : pandas.Series
        Control profile ``x̄_c``.
    G_ : pandas.DataFrame
        Genes x K gene embedding used in the fit.
    P_ : pandas.DataFrame
        K' x training conditions perturbation embedding used in the fit.
    W_ : pandas.DataFrame
        K x K' fitted coefficients.
    b_ : pandas.Series
        Mean training change per gene.
    training_conditions_ : pandas.Index
        Conditions (columns of ``Y``) the fit used.
    excluded_ : dict
        Training perturbations left out of the fit, with the reason.
    pca_scores_ : pandas.DataFrame or None
        Genes x K PC scores of the training pseudobulk (when any embedding is
        ``"training_pca"``).
    embedding_ : TargetGeneEmbedding
        The perturbation-embedding look-up (``embedding_.vectors(perts)``).

    Examples
    --------
    >>> from helpers.data import load_dataset, gears_simulation_split
    >>> from helpers.models.linear import LinearModel
    >>> screen = load_dataset("replogle_k562_like")                     # doctest: +SKIP
    >>> split = gears_simulation_split(screen, seed=1)                  # doctest: +SKIP
    >>> model = LinearModel(n_components=10, ridge=0.1).fit(split.subset(screen, "train"))  # doctest: +SKIP
    >>> test = [p for p in split.test if p not in model.unpredictable(split.test)]  # doctest: +SKIP
    >>> prediction = model.predict(test)          # perturbations x genes   # doctest: +SKIP
    >>> model.G_.shape, model.W_.shape            # ((n_genes, 10), (10, 10))  # doctest: +SKIP
    """

    name = "linear"

    def __init__(
        self,
        n_components: int = 10,
        ridge: float = 0.1,
        gene_embedding: str | pd.DataFrame = "training_pca",
        perturbation_embedding: str | pd.DataFrame = "training_pca",
        include_control: bool = True,
        seed: int = 0,
    ):
        self.n_components = n_components
        self.ridge = ridge
        self.gene_embedding = gene_embedding
        self.perturbation_embedding = perturbation_embedding
        self.include_control = include_control
        self.seed = seed

    # -- checks -----------------------------------------------------------------------
    def _check_params(self) -> None:
        if int(self.n_components) < 1:
            raise ValueError("n_components must be at least 1")
        if not self.ridge >= 0:
            raise ValueError("ridge must be a non-negative number")
        for what in ("gene_embedding", "perturbation_embedding"):
            value = getattr(self, what)
            if isinstance(value, str):
                if value not in _EMBEDDING_CHOICES:
                    raise ValueError(f"{what} must be one of {_EMBEDDING_CHOICES} or a DataFrame, not {value!r}")
            elif not isinstance(value, pd.DataFrame):
                raise TypeError(f"{what} must be one of {_EMBEDDING_CHOICES} or a pandas DataFrame (rows = genes)")
            elif value.shape[1] < 1:
                raise ValueError(f"{what} has no columns")

    # -- fit / predict ----------------------------------------------------------------
    def tags(self) -> ModelTags:
        # the published P is the target gene's row of a PCA over genes: fit on every measured gene
        own_pca = isinstance(self.perturbation_embedding, str) and self.perturbation_embedding == "training_pca"
        return replace(super().tags(), all_genes=own_pca, embeds_targets=True)

    def fit(self, train: AnnData) -> Self:
        self._check_params()
        pb = pseudobulk(train)
        table = pd.DataFrame(pb.X, index=pb.obs_names.copy(), columns=pb.var_names.copy())
        if CONTROL not in table.index:
            raise DataError("the training data have no control cells; the linear model needs them as reference.")
        if not np.isfinite(table.to_numpy()).all():
            raise DataError("the training pseudobulk holds NaN or infinite values; clean the expression matrix first.")
        genes = table.columns
        control = table.loc[CONTROL]
        perts = [p for p in table.index if p != CONTROL]
        if not perts:
            raise DataError("the training data hold no perturbed cells; the linear model needs some.")
        conditions = perts + ([CONTROL] if self.include_control else [])
        X = table.loc[conditions].to_numpy(dtype=np.float64).T  # genes x conditions

        needs_pca = "training_pca" in (
            self.gene_embedding if isinstance(self.gene_embedding, str) else "",
            self.perturbation_embedding if isinstance(self.perturbation_embedding, str) else "",
        )
        k = min(int(self.n_components), _max_components(*X.shape))
        pca_scores = None
        if needs_pca:
            scores, _ = _top_pcs(X, k)
            pca_scores = pd.DataFrame(scores, index=genes.copy(), columns=[f"PC{i + 1}" for i in range(k)])

        # gene embedding G (genes x K)
        genes_not_embedded: list[str] = []
        if isinstance(self.gene_embedding, pd.DataFrame):
            gtab = clean_embedding_table(self.gene_embedding, "gene embedding")
            G = gtab.reindex(genes)
            genes_not_embedded = list(G.index[G.isna().any(axis=1)])
            if len(genes_not_embedded) == len(genes):
                raise DataError("none of the screen's genes has a row in the gene embedding; check the gene symbols.")
            G = G.fillna(0.0)
        elif self.gene_embedding == "random":
            rng = np.random.default_rng(int(self.seed))
            G = pd.DataFrame(rng.standard_normal((len(genes), k)), index=genes.copy(), columns=[f"R{i + 1}" for i in range(k)])
        else:
            G = pca_scores

        # perturbation embedding (a table of genes/perturbations x K', or random per gene)
        if isinstance(self.perturbation_embedding, pd.DataFrame):
            ptab = clean_embedding_table(self.perturbation_embedding, "perturbation embedding")
            if ptab.empty:
                raise DataError("the perturbation embedding has no complete row.")
            embedding = TargetGeneEmbedding("table", ptab)
        elif self.perturbation_embedding == "random":
            embedding = TargetGeneEmbedding("random", dim=k, seed=int(self.seed))
        else:
            embedding = TargetGeneEmbedding("training_pca", pca_scores)

        P_all, missing = embedding.vectors(conditions)
        excluded = {p: embedding.reason(p) for p in missing}
        keep = [j for j, p in enumerate(conditions) if p not in excluded]
        used = [conditions[j] for j in keep]
        P = P_all[:, keep]  # K' x conditions
        if not any(p != CONTROL for p in used):
            raise DataError(
                "no training perturbation has a perturbation embedding "
                f"(e.g. {dict(list(excluded.items())[:3])}); check that the embedding is indexed by gene symbols."
            )
        pcols = embedding.columns

        Y = (table.loc[used] - control).to_numpy(dtype=np.float64).T  # genes x conditions
        b = Y.mean(axis=1)
        Gm = G.to_numpy(dtype=np.float64)
        lam = float(self.ridge)
        left = _ridge_inverse(Gm.T @ Gm, lam) @ Gm.T  # K x genes
        right = P.T @ _ridge_inverse(P @ P.T, lam)  # conditions x K'
        W = (left @ (Y - b[:, None])) @ right
        W[~np.isfinite(W)] = 0.0  # as the published code (NA -> 0)

        self.genes_ = genes.copy()
        self.control_ = control.copy()
        self.n_components_ = k
        self.pca_scores_ = pca_scores
        self.G_ = G
        self.P_ = pd.DataFrame(P, index=pcols, columns=pd.Index(used, name="perturbation"))
        self.W_ = pd.DataFrame(W, index=G.columns.copy(), columns=pcols)
        self.b_ = pd.Series(b, index=genes.copy(), name="b")
        self.training_conditions_ = pd.Index(used)
        self.excluded_ = excluded
        self.genes_not_embedded_ = genes_not_embedded
        self.embedding_ = embedding
        self._GW = Gm @ W  # genes x K', reused by every prediction
        return self

    def perturbation_embedding_of(self, perturbations: Sequence[str]) -> pd.DataFrame:
        """The K' x perturbations embedding ``P`` the fitted model uses for ``perturbations``."""
        self._check_fitted()
        bad = self.unpredictable(perturbations)
        if bad:
            raise DataError(f"no embedding for {len(bad)} perturbations, e.g. {dict(list(bad.items())[:3])}")
        cols, _ = self.embedding_.vectors(perturbations)
        return pd.DataFrame(cols, index=self.P_.index.copy(), columns=pd.Index(list(perturbations)))

    def unpredictable(self, perturbations: Sequence[str]) -> dict[str, str]:
        """Perturbations whose target gene has no perturbation embedding, with the reason."""
        self._check_fitted()
        return self.embedding_.unpredictable(list(perturbations))

    def _predict(self, perturbations: list[str]) -> pd.DataFrame:
        P, _ = self.embedding_.vectors(perturbations)  # K' x n
        values = (self._GW @ P).T + (self.b_.to_numpy() + self.control_.to_numpy())[None, :]
        return pd.DataFrame(values, index=pd.Index(perturbations), columns=self.genes_)
