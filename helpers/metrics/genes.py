"""Which genes the top-20 DE metrics look at, and where that choice comes from."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..data.canonical import CONTROL
from ..errors import DataError
from ..stats.de import de_scores, miller_t_scores, top_de_genes
from ._inputs import _examples

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

#: What each ``source`` of :func:`de_gene_sets` uses, for notebooks to print.
DE_SOURCES = {
    "train": "one shared set: the k genes with the largest mean |t| (vs control) over the training perturbations; uses no held-out data",
    "all": "GEARS' top_non_dropout_de_20: each evaluated perturbation's own top-k |t| genes vs control, dropouts "
    "removed; the gene choice uses the held-out perturbations' observed cells (test data)",
}


def _cells_of(adata: AnnData, perturbations: Iterable[str]) -> AnnData:
    keep = adata.obs["perturbation"].astype(str).isin(set(perturbations) | {CONTROL}).to_numpy()
    return adata[keep]


def de_gene_sets(
    adata: AnnData,
    perturbations: Sequence[str],
    k: int = 20,
    source: str = "train",
    train_perturbations: Sequence[str] | None = None,
) -> dict[str, list[str]]:
    """Top-k DE gene sets for the evaluated perturbations (input of the ``..._de20_...`` metrics).

    ``source="train"`` (default, no test data used): with Welch t statistics of every
    training perturbation against control (:func:`helpers.stats.de.de_scores` on the
    training and control cells), genes are ranked by :math:`\\frac{1}{|T|}\\sum_{p \\in T} |t_{pg}|`
    and the top ``k`` form one set shared by every evaluated perturbation.

    ``source="all"`` reproduces GEARS (and so Systema's ``corr_20de``): each evaluated
    perturbation gets its own top ``k`` genes by :math:`|t|` against control with "dropout"
    genes removed (:func:`helpers.stats.de.top_de_genes`, ``top_non_dropout_de_20``).
    GEARS computes this on all cells of the dataset, so **the evaluation genes of a held-out
    perturbation are chosen from its own observed test cells**. The
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
        logger.info("de_gene_sets(source='all'): GEARS-style DE genes are chosen from the held-out perturbations' own cells (test data).")
        sets = top_de_genes(_cells_of(adata, perturbations), k=k)
        return {p: list(sets[p]) for p in perturbations}
    raise ValueError(f"source must be one of {sorted(DE_SOURCES)}, not {source!r}")


#: Where the t statistics behind the DEG weights of the weighted metrics come from.
DEG_WEIGHTS = {
    "miller": "Miller et al.: scanpy's t-test_overestim_var of each perturbation's ground-truth cells against all "
    "other cells of the screen (helpers.stats.de.miller_t_scores)",
    "control": "Welch t of each perturbation's ground-truth cells against the control cells (helpers.stats.de.de_scores)",
}


def deg_t_scores(adata: AnnData, perturbations: Sequence[str], source: str = "miller") -> pd.DataFrame:
    """t statistics for :func:`helpers.metrics.deg_weights`, from ``source`` (:data:`DEG_WEIGHTS`).

    ``adata`` holds the ground-truth cells of ``perturbations`` and the rest of the screen.
    Against control, the shift every perturbation shares counts as differential expression,
    so under strong systematic variation the weights concentrate on the shared genes,
    where the mean baseline is already right; against the rest it cancels.
    """
    perturbations = list(perturbations)
    if source == "miller":
        return miller_t_scores(adata, perturbations)
    if source == "control":
        return de_scores(adata).loc[perturbations]
    raise ValueError(f"DEG weight source must be one of {sorted(DEG_WEIGHTS)}, not {source!r}")
