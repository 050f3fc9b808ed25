"""Which genes the top-20 DE metrics look at, and where that choice comes from."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..data.canonical import CONTROL, DataError
from ._inputs import _examples

logger = logging.getLogger(__name__)

#: What each ``source`` of :func:`de_gene_sets` uses, for notebooks to print.
DE_SOURCES = {
    "train": "one shared set: the k genes with the largest mean |t| (vs control) over the training perturbations; "
    "uses no held-out data",
    "all": "GEARS' top_non_dropout_de_20: each evaluated perturbation's own top-k |t| genes vs control, dropouts "
    "removed; the gene choice uses the held-out perturbations' observed cells (test data)",
}


def _cells_of(adata, perturbations) -> "object":
    keep = adata.obs["perturbation"].astype(str).isin(set(perturbations) | {CONTROL}).to_numpy()
    return adata[keep]


def de_gene_sets(
    adata,
    perturbations: Sequence[str],
    k: int = 20,
    source: str = "train",
    train_perturbations: Sequence[str] | None = None,
) -> dict[str, list[str]]:
    """Top-k DE gene sets for the evaluated perturbations (input of the ``..._de20_...`` metrics).

    ``source="train"`` (default, no test data used): with Welch t statistics of every
    training perturbation against control (:func:`helpers.data.genesets.de_scores` on the
    training and control cells), genes are ranked by :math:`\\frac{1}{|T|}\\sum_{p \\in T} |t_{pg}|`
    and the top ``k`` form one set shared by every evaluated perturbation.

    ``source="all"`` reproduces GEARS (and so Systema's ``corr_20de``): each evaluated
    perturbation gets its own top ``k`` genes by :math:`|t|` against control with "dropout"
    genes removed (:func:`helpers.data.genesets.top_de_genes`, ``top_non_dropout_de_20``).
    GEARS computes this on all cells of the dataset, so **the evaluation genes of a held-out
    perturbation are chosen from its own observed test cells** (METHODS.md B.6). The
    function logs this, and notebooks using it should say so.

    Parameters
    ----------
    adata
        Canonical screen of cells with control cells; for ``"train"`` it must contain the
        training perturbations, for ``"all"`` the evaluated ones.
    perturbations
        The evaluated perturbations (keys of the result).
    k
        Set size (20 for the published metrics).
    source
        ``"train"`` or ``"all"``, see :data:`DE_SOURCES`.
    train_perturbations
        Training perturbation names (e.g. ``split.train``), required for ``"train"``.

    Returns
    -------
    dict
        perturbation -> list of ``k`` gene names.
    """
    from ..data.genesets import de_scores, top_de_genes

    perturbations = [str(p) for p in perturbations]
    present = set(adata.obs["perturbation"].astype(str).unique())
    if source == "train":
        if train_perturbations is None:
            raise DataError("source='train' needs train_perturbations= (e.g. split.train).")
        train = [p for p in train_perturbations if p != CONTROL]
        missing = [p for p in train if p not in present]
        if missing:
            raise DataError(f"{len(missing)} training perturbations have no cells in adata ({_examples(missing)}).")
        if not train:
            raise DataError("train_perturbations is empty; DE genes from training data need training perturbations.")
        scores = de_scores(_cells_of(adata, train))
        mean_abs = np.abs(scores.loc[train].to_numpy()).mean(axis=0)
        order = np.argsort(-mean_abs, kind="stable")[:k]
        shared = scores.columns[order].tolist()
        return {p: list(shared) for p in perturbations}
    if source == "all":
        missing = [p for p in perturbations if p not in present]
        if missing:
            raise DataError(f"{len(missing)} evaluated perturbations have no cells in adata ({_examples(missing)}).")
        logger.info(
            "de_gene_sets(source='all'): GEARS-style DE genes are chosen from the held-out perturbations' "
            "own cells (test data)."
        )
        sets = top_de_genes(_cells_of(adata, perturbations), k=k)
        return {p: list(sets[p]) for p in perturbations}
    raise ValueError(f"source must be one of {sorted(DE_SOURCES)}, not {source!r}")
