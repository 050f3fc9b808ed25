"""Features of genes derived from their Gene Ontology annotations.

Three views of the shipped gene -> GO-term annotations (:func:`helpers.knowledge.load_gene_go`):

* :func:`go_membership` — the sparse genes x terms 0/1 matrix ``M[g, t] = 1`` if gene ``g``
  is annotated with term ``t``;
* :func:`go_similarity` — the gene-gene Jaccard similarity of GO term sets, the similarity
  GEARS uses for its perturbation graph;
* :func:`go_embedding` — a low-dimensional, deterministic embedding of genes (rows of a
  truncated SVD of the TF-IDF weighted membership matrix, or a spectral embedding of the
  similarity graph as in the "GO graph" variant of the linear model of Ahlmann-Eltze et al.).

Genes without any GO term have no features. They are never silently given zeros: the
similarity rows of such genes are empty, the embedding rows are ``NaN``, and
:func:`genes_without_go` lists them so that a model can report them as unpredictable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.annotations import GENE_GO_PATH, load_gene_go

GeneGO = Mapping[str, Iterable[str]]


def _annotations(gene_go: GeneGO | None) -> GeneGO:
    return load_gene_go() if gene_go is None else gene_go


def _gene_list(genes: Iterable[str]) -> list[str]:
    if isinstance(genes, str):
        raise TypeError("pass a list of gene symbols, not a single string")
    genes = [str(g) for g in genes]
    if len(set(genes)) != len(genes):
        dup = pd.Index(genes)[pd.Index(genes).duplicated()].unique()[:5].tolist()
        raise ValueError(f"the gene list has duplicates (e.g. {dup}); pass unique gene symbols")
    return genes


def genes_without_go(genes: Iterable[str], gene_go: GeneGO | None = None) -> list[str]:
    """Genes of ``genes`` (in their order) that have no GO term in the annotations.

    Parameters
    ----------
    genes
        Gene symbols.
    gene_go
        Gene symbol -> GO terms; default: the shipped annotations (:func:`load_gene_go`).
    """
    annotations = _annotations(gene_go)
    return [g for g in _gene_list(genes) if not annotations.get(g)]


def go_membership(genes: Iterable[str], gene_go: GeneGO | None = None, min_genes_per_term: int = 1) -> tuple[sp.csr_matrix, pd.Index]:
    """Sparse genes x GO-terms membership matrix.

    ``M[i, t] = 1`` if gene ``genes[i]`` is annotated with term ``t``, else 0. Terms are
    sorted by ID; only terms annotating at least ``min_genes_per_term`` of ``genes`` are
    kept. Genes without GO terms get an all-zero row (see :func:`genes_without_go`).

    Returns
    -------
    (csr_matrix, pandas.Index)
        The float64 matrix (rows follow ``genes``) and the term IDs of its columns.
    """
    genes = _gene_list(genes)
    annotations = _annotations(gene_go)
    rows, terms = [], []
    for i, g in enumerate(genes):
        for t in annotations.get(g, ()):
            rows.append(i)
            terms.append(t)
    codes, term_index = pd.factorize(pd.Series(terms, dtype="object"), sort=True)
    M = sp.csr_matrix(
        (np.ones(len(rows)), (np.asarray(rows, dtype=np.int64), codes.astype(np.int64))),
        shape=(len(genes), len(term_index)),
    )
    M.data[:] = 1.0  # a term listed twice for one gene still counts once
    if min_genes_per_term > 1:
        keep = np.flatnonzero(np.asarray((M > 0).sum(axis=0)).ravel() >= min_genes_per_term)
        M, term_index = M[:, keep], term_index[keep]
    return sp.csr_matrix(M), pd.Index(term_index, name="GO term")


def go_similarity(
    genes: Iterable[str],
    min_similarity: float = 0.0,
    gene_go: GeneGO | None = None,
    block_size: int = 2048,
) -> sp.csr_matrix:
    """Gene-gene Jaccard similarity of GO term sets, as a sparse matrix.

    ``S[i, j] = |T_i ∩ T_j| / |T_i ∪ T_j|`` where ``T_i`` is the set of GO terms of
    ``genes[i]``; ``S[i, i] = 1`` for every annotated gene. This is the similarity GEARS
    puts on the edges of its perturbation graph (``gears.utils.get_GO_edge_list``, which
    keeps ``S > 0.1``).

    Parameters
    ----------
    genes
        Gene symbols; rows and columns of the result follow this order.
    min_similarity
        Keep only entries with ``S[i, j] > min_similarity`` (strictly greater, as GEARS).
        The default 0 keeps every pair that shares at least one term.
    gene_go
        Gene symbol -> GO terms; default: the shipped annotations.
    block_size
        Rows computed at a time; bounds the memory of the intermediate intersection counts.

    Returns
    -------
    scipy.sparse.csr_matrix
        Symmetric, float64, ``len(genes) x len(genes)``. Genes without GO terms
        (:func:`genes_without_go`) have empty rows and columns, including the diagonal:
        their similarity is undefined, not zero.
    """
    genes = _gene_list(genes)
    M, _ = go_membership(genes, gene_go)
    M = sp.csr_matrix(M)
    sizes = np.asarray(M.sum(axis=1)).ravel()
    MT = sp.csc_matrix(M.T)
    blocks = []
    for start in range(0, len(genes), block_size):
        stop = min(start + block_size, len(genes))
        inter = sp.coo_matrix(M[start:stop] @ MT)  # shared-term counts, only where > 0
        i, j, shared = inter.row, inter.col, inter.data
        jaccard = shared / (sizes[i + start] + sizes[j] - shared)
        keep = jaccard > min_similarity
        blocks.append(sp.csr_matrix((jaccard[keep], (i[keep], j[keep])), shape=(stop - start, len(genes))))
    S = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, 0))
    S.sort_indices()
    return S


# -- embeddings -----------------------------------------------------------------------


def _tfidf(M: sp.csr_matrix) -> sp.csr_matrix:
    """TF-IDF weighting of a 0/1 membership matrix, rows scaled to unit length.

    ``w[g, t] = idf_t / ||idf_{T_g}||`` with ``idf_t = ln((1 + n) / (1 + n_t)) + 1``
    (``n`` genes, ``n_t`` of them annotated with ``t``): rare, specific terms weigh more
    than broad ones such as "protein binding".
    """
    n = M.shape[0]
    n_t = np.asarray((M > 0).sum(axis=0)).ravel()
    idf = np.log((1.0 + n) / (1.0 + n_t)) + 1.0
    W = sp.csr_matrix(M @ sp.diags(idf))
    norms = np.sqrt(np.asarray(W.multiply(W).sum(axis=1)).ravel())
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(scale) @ W)


def _lsa(universe: list[str], gene_go: GeneGO, n_components: int, seed: int) -> pd.DataFrame:
    from sklearn.decomposition import TruncatedSVD

    M, terms = go_membership(universe, gene_go, min_genes_per_term=2)
    if n_components >= min(M.shape):
        raise ValueError(f"n_components={n_components} must be below {min(M.shape)} (genes, shared GO terms)")
    W = _tfidf(M)
    svd = TruncatedSVD(n_components=n_components, algorithm="randomized", n_iter=10, random_state=seed)
    coords = svd.fit_transform(W)
    # A gene whose terms are all unique to it has an empty row: it shares nothing to embed.
    coords[np.asarray(M.sum(axis=1)).ravel() == 0] = np.nan
    return pd.DataFrame(coords, index=pd.Index(universe), columns=_component_names(n_components))


@lru_cache(maxsize=8)
def _lsa_shipped(path: str, n_components: int, seed: int) -> pd.DataFrame:
    gene_go = load_gene_go(path)
    universe = sorted(g for g, t in gene_go.items() if t)
    return _lsa(universe, gene_go, n_components, seed)


def _component_names(k: int) -> list[str]:
    return [f"GO{i + 1}" for i in range(k)]


def _adjacency_spectral(genes: list[str], gene_go: GeneGO, n_components: int, min_similarity: float) -> pd.DataFrame:
    S = go_similarity(genes, min_similarity=min_similarity, gene_go=gene_go).toarray()
    np.fill_diagonal(S, 0.0)
    n = len(genes)
    if n_components > n:
        raise ValueError(f"n_components={n_components} exceeds the number of annotated genes ({n})")
    # igraph's embed_adjacency_matrix default: the diagonal holds strength / (n - 1).
    S[np.diag_indices(n)] = S.sum(axis=1) / max(n - 1, 1)
    values, vectors = np.linalg.eigh(S)
    order = np.argsort(-np.abs(values), kind="stable")[:n_components]
    values, vectors = values[order], vectors[:, order]
    # Fix each eigenvector's sign so the result does not depend on the LAPACK build.
    flip = np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(n_components)])
    vectors = vectors * np.where(flip == 0, 1.0, flip)
    coords = vectors * np.sqrt(np.abs(values))
    return pd.DataFrame(coords, index=pd.Index(genes), columns=_component_names(n_components))


def go_embedding(
    genes: Sequence[str],
    n_components: int = 32,
    method: str = "lsa",
    seed: int = 0,
    gene_go: GeneGO | None = None,
    min_similarity: float = 0.1,
) -> pd.DataFrame:
    """Low-dimensional embedding of genes from their GO annotations.

    ``method="lsa"`` (default; latent semantic analysis of GO annotations): build the
    membership matrix of **all** annotated genes of the annotation file against the GO
    terms shared by at least two of them, weight it by TF-IDF (:func:`_tfidf`: rows
    ``w_g = idf ⊙ m_g / ||idf ⊙ m_g||``, ``idf_t = ln((1+n)/(1+n_t)) + 1``), and keep the
    first ``n_components`` coordinates of its truncated SVD, ``W ≈ U Σ Vᵀ`` -> gene ``g`` is
    ``(U Σ)[g]``. Because the SVD is fitted on every annotated gene, a gene's coordinates
    do not depend on which other genes a dataset measures. Genes with similar,
    specific annotations get nearby coordinates (their dot product approximates the
    cosine similarity of their TF-IDF term vectors).

    ``method="adjacency"``: adjacency spectral embedding of the GO similarity graph of the
    requested genes, like ``igraph::embed_adjacency_matrix`` used for the "GO graph"
    perturbation embedding of Ahlmann-Eltze et al.: ``A`` = Jaccard similarities above
    ``min_similarity`` (GEARS' threshold 0.1), diagonal = strength / (n − 1) (igraph's
    default), and gene ``g`` is ``(U_k |Λ_k|^{1/2})[g]`` for the ``k`` eigenpairs of largest
    magnitude. Here the coordinates depend on the gene set passed.

    Both are deterministic: the SVD uses ``seed`` in its randomised solver, and the
    eigenvectors' signs are fixed.

    Parameters
    ----------
    genes
        Gene symbols to embed (rows of the result, in this order).
    n_components
        Embedding dimension ``k``.
    method
        ``"lsa"`` or ``"adjacency"``.
    seed
        Seed of the randomised SVD (``"lsa"`` only).
    gene_go
        Gene symbol -> GO terms; default: the shipped annotations (then the ``"lsa"``
        fit is cached per ``n_components`` and ``seed``).
    min_similarity
        Edge threshold of the similarity graph (``"adjacency"`` only).

    Returns
    -------
    pandas.DataFrame
        Genes x ``GO1..GOk``. Genes that cannot be embedded have ``NaN`` rows and are listed
        with the reason in the dict ``frame.attrs["not_embedded"]``: genes without GO terms,
        and (``"lsa"``) genes none of whose terms annotates another gene. Drop or report them.
    """
    genes = _gene_list(genes)
    if n_components < 1:
        raise ValueError("n_components must be at least 1")
    missing = genes_without_go(genes, gene_go)
    annotated = [g for g in genes if g not in set(missing)]
    if method == "lsa":
        if gene_go is None:
            table = _lsa_shipped(str(GENE_GO_PATH), n_components, seed)
        else:
            table = _lsa(sorted(g for g, t in gene_go.items() if t), gene_go, n_components, seed)
    elif method == "adjacency":
        if not annotated:
            raise ValueError("none of the genes has GO terms; nothing to embed")
        table = _adjacency_spectral(annotated, _annotations(gene_go), n_components, min_similarity)
    else:
        raise ValueError(f"method must be 'lsa' or 'adjacency', not {method!r}")
    out = table.reindex(genes).copy()
    out.index.name = "gene"
    not_embedded = {g: "no GO terms" for g in missing}
    for g in out.index[out.isna().any(axis=1)]:
        not_embedded.setdefault(g, "none of its GO terms annotates another gene")
    out.attrs["not_embedded"] = {g: not_embedded[g] for g in genes if g in not_embedded}
    out.attrs["method"] = method
    return out
