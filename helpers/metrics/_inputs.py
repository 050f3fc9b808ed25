"""The one input checker every metric runs before computing anything.

Metrics compare a table of predicted profiles with a table of observed profiles
(perturbations x genes, mean log-normalised expression). Before any number is
computed, :func:`align` checks that both tables describe the same perturbations and the
same genes, puts them in the same order (the order of ``truth``), refuses NaN or infinite
values, and checks that every reference profile covers the genes. All metric functions
then work on plain float64 numpy arrays.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..data.canonical import CONTROL
from ..errors import DataError

_SHOW = 5  # how many example names an error message lists


def _examples(names: Iterable[object]) -> str:
    names = list(names)
    shown = ", ".join(repr(str(n)) for n in names[:_SHOW])
    return shown + (f", ... ({len(names)} in total)" if len(names) > _SHOW else "")


@dataclass
class Aligned:
    """Predicted and observed profiles as aligned float64 arrays.

    ``P`` and ``T`` are perturbations x genes (rows in ``perturbations`` order, columns in
    ``genes`` order); ``refs`` maps a reference name (``"control"``, ``"perturbed_mean"``)
    to a gene vector in the same gene order.
    """

    perturbations: pd.Index
    genes: pd.Index
    P: np.ndarray
    T: np.ndarray
    refs: dict[str, np.ndarray] = field(default_factory=dict)

    def series(self, values: np.ndarray, name: str) -> pd.Series:
        """Per-perturbation values as a Series named after the metric."""
        return pd.Series(np.asarray(values, dtype=np.float64), index=self.perturbations.copy(), name=name)


def _as_frame(x: object, what: str) -> pd.DataFrame:
    if not isinstance(x, pd.DataFrame):
        raise DataError(
            f"{what} must be a pandas DataFrame of perturbations x genes (index = perturbation names, "
            f"columns = gene names), not {type(x).__name__}. Wrap an array with "
            "pd.DataFrame(values, index=perturbations, columns=genes)."
        )
    for axis, labels in (("perturbation", x.index), ("gene", x.columns)):
        if not labels.is_unique:
            dup = labels[labels.duplicated()].unique()
            raise DataError(f"{what} has duplicated {axis} names ({_examples(dup)}); make them unique first.")
    return x


def _check_numeric(frame: pd.DataFrame, what: str) -> np.ndarray:
    try:
        values = frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{what} holds non-numeric values ({err}); it must be numbers only.") from None
    bad_rows = ~np.isfinite(values).all(axis=1)
    if bad_rows.any():
        names = frame.index[bad_rows]
        raise DataError(
            f"{what} has NaN or infinite values for {bad_rows.sum()} perturbations: {_examples(names)}. "
            "Metrics never drop values silently: fix the model output for these perturbations, or leave "
            "them out of both tables and say so where you report the results."
        )
    return values


def _set_difference_message(kind: str, pred_labels: pd.Index, truth_labels: pd.Index) -> str | None:
    missing_in_pred = truth_labels.difference(pred_labels, sort=False)
    missing_in_truth = pred_labels.difference(truth_labels, sort=False)
    if len(missing_in_pred) == 0 and len(missing_in_truth) == 0:
        return None
    parts = []
    if len(missing_in_pred):
        parts.append(f"{len(missing_in_pred)} {kind}s of truth are missing from pred ({_examples(missing_in_pred)})")
    if len(missing_in_truth):
        parts.append(f"{len(missing_in_truth)} {kind}s of pred are missing from truth ({_examples(missing_in_truth)})")
    if kind == "perturbation":
        advice = (
            "Predict every evaluated perturbation, or restrict both tables to the same perturbations "
            "(e.g. truth.loc[pred.index]) and report which ones were left out and why."
        )
    else:
        advice = (
            "Evaluate on one gene set: restrict both tables to the shared genes "
            "(e.g. genes = pred.columns.intersection(truth.columns)) and say so, or fix the model's gene list."
        )
    return "pred and truth do not describe the same " + kind + "s: " + "; ".join(parts) + ". " + advice


def align(
    pred: pd.DataFrame,
    truth: pd.DataFrame,
    references: Mapping[str, pd.Series | None] | None = None,
) -> Aligned:
    """Check ``pred`` and ``truth`` and return them (and references) as aligned arrays.

    Parameters
    ----------
    pred, truth
        Perturbations x genes DataFrames of mean log-normalised expression. The order of
        rows and columns may differ; the sets must be equal. ``truth`` decides the order.
    references
        Reference profiles by name, e.g. ``{"control": control}``; each a Series indexed by
        gene that must cover every gene of ``truth`` (extra genes are ignored).

    Raises
    ------
    DataError
        When the perturbation or gene sets differ (saying which are missing on which
        side), when either table has NaN/inf values (naming the perturbations), when a
        ``"control"`` row is present, or when a reference lacks genes or has NaN values.
    """
    pred = _as_frame(pred, "pred")
    truth = _as_frame(truth, "truth")
    for what, frame in (("pred", pred), ("truth", truth)):
        if CONTROL in frame.index:
            raise DataError(
                f"{what} has a {CONTROL!r} row. Metrics evaluate perturbations against the control profile, "
                "which is passed separately; drop the row (e.g. profiles(adata, include_control=False))."
            )
    if truth.shape[0] == 0 or truth.shape[1] == 0:
        raise DataError(f"truth is empty ({truth.shape[0]} perturbations x {truth.shape[1]} genes): nothing to evaluate.")
    for kind, p_labels, t_labels in (("perturbation", pred.index, truth.index), ("gene", pred.columns, truth.columns)):
        message = _set_difference_message(kind, p_labels, t_labels)
        if message:
            raise DataError(message)
    if not (pred.index.equals(truth.index) and pred.columns.equals(truth.columns)):
        pred = pred.reindex(index=truth.index, columns=truth.columns)
    P = _check_numeric(pred, "pred")
    T = _check_numeric(truth, "truth")
    refs = {}
    for name, ref in (references or {}).items():
        if ref is None:
            continue
        refs[name] = reference_vector(ref, truth.columns, name)
    return Aligned(perturbations=truth.index, genes=truth.columns, P=P, T=T, refs=refs)


def reference_vector(ref: pd.Series, genes: pd.Index, name: str) -> np.ndarray:
    """A reference profile as a float64 vector in ``genes`` order (checked)."""
    if isinstance(ref, pd.DataFrame) and ref.shape[0] == 1:
        ref = ref.iloc[0]
    if not isinstance(ref, pd.Series):
        raise DataError(
            f"the {name} reference must be a pandas Series indexed by gene (e.g. control_profile(adata) or "
            f"perturbed_mean(train_profiles)), not {type(ref).__name__}."
        )
    if not ref.index.is_unique:
        raise DataError(f"the {name} reference has duplicated gene names ({_examples(ref.index[ref.index.duplicated()])}).")
    missing = genes.difference(ref.index, sort=False)
    if len(missing):
        raise DataError(
            f"the {name} reference lacks {len(missing)} of the {len(genes)} evaluated genes ({_examples(missing)}). "
            "Compute it on the same gene set as the profiles."
        )
    values = ref.reindex(genes).to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        bad = genes[~np.isfinite(values)]
        raise DataError(f"the {name} reference has NaN or infinite values for genes {_examples(bad)}.")
    return values


def gene_table(table: pd.DataFrame, aligned: Aligned, what: str) -> np.ndarray:
    """A perturbations x genes side table (e.g. DEG weights) aligned to ``aligned`` (checked)."""
    table = _as_frame(table, what)
    missing_p = aligned.perturbations.difference(table.index, sort=False)
    missing_g = aligned.genes.difference(table.columns, sort=False)
    if len(missing_p) or len(missing_g):
        parts = []
        if len(missing_p):
            parts.append(f"{len(missing_p)} evaluated perturbations ({_examples(missing_p)})")
        if len(missing_g):
            parts.append(f"{len(missing_g)} evaluated genes ({_examples(missing_g)})")
        raise DataError(f"{what} lacks " + " and ".join(parts) + f"; compute {what} for every evaluated perturbation and gene.")
    sub = table.reindex(index=aligned.perturbations, columns=aligned.genes)
    return _check_numeric(sub, what)


def gene_set_mask(
    gene_sets: Mapping[str, Sequence[str]] | Sequence[str] | pd.Index | np.ndarray, aligned: Aligned, what: str = "de_genes"
) -> np.ndarray:
    """Boolean perturbations x genes mask from per-perturbation gene lists (or one shared list).

    ``gene_sets`` is either a mapping perturbation -> list of genes (e.g. the output of
    :func:`helpers.stats.de.top_de_genes`) or one list of genes used for every
    perturbation. Every evaluated perturbation needs an entry and every gene must be
    among the evaluated genes.
    """
    col = pd.Series(np.arange(len(aligned.genes)), index=aligned.genes)
    mask = np.zeros(aligned.T.shape, dtype=bool)
    if isinstance(gene_sets, Mapping):
        missing = [p for p in aligned.perturbations if p not in gene_sets]
        if missing:
            raise DataError(
                f"{what} has no gene list for {len(missing)} evaluated perturbations ({_examples(missing)}); "
                "compute the gene sets for every evaluated perturbation."
            )
        lists = [list(gene_sets[p]) for p in aligned.perturbations]
    elif isinstance(gene_sets, Sequence | pd.Index | np.ndarray) and not isinstance(gene_sets, str):
        lists = [list(gene_sets)] * len(aligned.perturbations)
    else:
        raise DataError(f"{what} must be a dict perturbation -> list of genes, or one list of genes; got {type(gene_sets).__name__}.")
    unknown = sorted({g for genes in lists for g in genes if g not in col.index})
    if unknown:
        raise DataError(
            f"{what} names {len(unknown)} genes that are not among the evaluated genes ({_examples(unknown)}). "
            "Choose the gene sets among the evaluated genes (e.g. compute DE on the same gene subset)."
        )
    rows = np.repeat(np.arange(len(lists)), [len(g) for g in lists])
    cols = col.reindex([g for genes in lists for g in genes]).to_numpy(dtype=np.int64)
    mask[rows, cols] = True
    return mask
