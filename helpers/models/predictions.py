"""Read a model's predictions in any of the layouts researchers write, and say which one was found.

Three layouts are recognised (:func:`read_predictions_file`):

* **pseudobulk table** — one row per perturbation, one column per gene: ``.csv``/``.tsv``/
  ``.parquet`` (first column = perturbation name, header = gene symbols) or an ``.h5ad`` whose
  rows are perturbations (``obs_names``, or a perturbation column in which every label occurs
  once);
* **cells, canonical layout** — an ``.h5ad`` of predicted cells in this suite's canonical form:
  ``obs['perturbation']`` with ``control``, ``A``, ``A+B``;
* **cells, cell-eval layout** — the layout of Arc Institute's cell-eval and the Virtual Cell
  Challenge: predicted cells with a perturbation column (``target_gene`` by default in cell-eval)
  and a control label (``non-targeting``). Both are parameters; the common names are detected
  (:data:`PERTURBATION_COLUMNS`, :data:`CONTROL_NAMES`).

Values are **expression** (log1p of counts per 10,000, the suite's unit), **raw counts** (cells
only; normalised to 10,000 per cell and log1p-transformed, the way the suite's readers normalise
a screen), or, for tables, explicit **changes** from control (``values="change"``). Whatever is
found is said in :attr:`Predictions.explanation`.

Nothing is dropped silently: duplicated genes (a CSV header is read as written, because
pandas renames a repeated column ``GENE`` to ``GENE.1``), duplicated perturbation rows, NaN,
negative "expression" (and predicted "expression" that is mostly negative, i.e. changes passed
as expression), and cells without a perturbation label are refused with a message that says
what to pass instead.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.canonical import (
    CONTROL,
    CONTROL_LABELS,
    MAX_LOG_NORMALISED,
    canonical_perturbation,
    log_normalise,
    looks_like_counts,
    n_targets,
)
from ..data.pseudobulk import profiles as pseudobulk_profiles
from ..errors import DataError

if TYPE_CHECKING:
    from anndata import AnnData

#: obs columns that hold the perturbation of each cell, in the order they are looked for.
PERTURBATION_COLUMNS = (
    "perturbation",
    "target_gene",
    "target",
    "gene",
    "condition",
    "perturbation_name",
    "guide_target",
    "target_genes",
    "pert",
)

#: Labels recognised as the control group when no ``control`` is given (case-insensitive).
CONTROL_NAMES = ("non-targeting", "control", "ctrl", "non_targeting", "nontargeting", "NT", "safe-targeting")

#: What ``values`` may be.
VALUES = ("auto", "expression", "counts", "change")

LAYOUT_TABLE = "pseudobulk table"
LAYOUT_CANONICAL = "cells, canonical layout"
LAYOUT_CELL_EVAL = "cells, cell-eval layout"

#: Above this fraction of negative entries, negative "expression" is taken to be changes from control.
MOSTLY_NEGATIVE = 0.2

_SHOW = 5


def _examples(names: Iterable[object], n: int = _SHOW) -> str:
    names = list(names)
    shown = ", ".join(repr(str(x)) for x in names[:n])
    return shown + (f", ... ({len(names)} in total)" if len(names) > n else "")


@dataclass
class Predictions:
    """What :func:`read_predictions_file` found.

    Attributes
    ----------
    source
        File name (or ``"in memory"``).
    layout
        :data:`LAYOUT_TABLE`, :data:`LAYOUT_CANONICAL` or :data:`LAYOUT_CELL_EVAL`.
    why
        Why this layout was recognised (for the report).
    values
        ``"expression"``, ``"counts"`` (normalised on reading) or ``"change"``.
    values_note
        How the values were read and turned into log-normalised expression.
    profiles
        Perturbations x genes: mean log-normalised expression of every predicted perturbation
        (canonical names, control row not included); for ``values="change"`` the changes.
    control
        The predicted control profile, if the predictions hold control (cells labelled control,
        or a control row of a table); None otherwise.
    cells
        Canonical AnnData of the predicted cells (control cells included), log-normalised, for
        cell-level layouts; None for tables.
    perturbation_column, control_label
        The obs column and the control label used (cell-level layouts).
    labels
        Canonical name -> the label as written in the file.
    notes
        Anything else the reader should know.
    """

    source: str
    layout: str
    why: str
    values: str
    values_note: str
    profiles: pd.DataFrame
    control: pd.Series | None = None
    cells: AnnData | None = None
    perturbation_column: str | None = None
    control_label: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def is_cells(self) -> bool:
        return self.cells is not None

    @property
    def n_cells(self) -> pd.Series | None:
        """Predicted cells per perturbation (control included), for cell-level layouts."""
        if self.cells is None:
            return None
        return self.cells.obs["perturbation"].astype(str).value_counts().rename("n_cells")

    def describe(self) -> dict[str, object]:
        """One row of the report's inputs table."""
        return {
            "source": self.source,
            "layout": self.layout,
            "why": self.why,
            "values": self.values_note,
            "perturbations": len(self.profiles),
            "genes": self.profiles.shape[1],
            "cells": "–" if self.cells is None else f"{self.cells.n_obs:,}",
            "control": "none" if self.control is None else (self.control_label or CONTROL),
        }


# ----------------------------------------------------------------------------- tables


def header_genes(path: str | Path) -> list[str]:
    """The gene names of a CSV/TSV predictions table exactly as written in its header (first column left out).

    pandas' reader renames a repeated column ``GENE`` to ``GENE.1``, which hides duplicates;
    the header is read with :mod:`csv` instead.
    """
    path = Path(path)
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    with path.open(newline="") as handle:
        header = next(csv.reader(handle, delimiter=sep), [])
    return [h.strip() for h in header[1:]]


def _duplicates(names: Iterable[str]) -> list[str]:
    seen, dup = set(), []
    for n in names:
        if n in seen and n not in dup:
            dup.append(n)
        seen.add(n)
    return dup


def _refuse_duplicate_genes(genes: Iterable[str], source: str) -> None:
    dup = _duplicates(str(g) for g in genes)
    if dup:
        raise DataError(
            f"{source} has duplicated gene columns ({_examples(dup)}): each gene must appear once. Keep one column per gene "
            "(e.g. the first copy, or the mean of the copies) and say how you chose it."
        )


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a ``.csv``/``.tsv``/``.txt``/``.parquet`` table of perturbations x genes as written (names not translated).

    Refuses duplicated gene columns (read from the header itself), non-numeric columns and an empty table.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"predictions file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        _refuse_duplicate_genes(header_genes(path), path.name)
        frame = pd.read_csv(path, sep="," if suffix == ".csv" else "\t", index_col=0)
    elif suffix == ".parquet":
        frame = pd.read_parquet(path)
        if isinstance(frame.index, pd.RangeIndex):  # names stored as the first column
            frame = frame.set_index(frame.columns[0])
        _refuse_duplicate_genes(frame.columns, path.name)
    else:
        raise DataError(f"cannot read a table from {path.name}: use .csv, .tsv, .parquet or .h5ad (perturbations x genes).")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DataError(f"{path.name} holds no predictions (shape {frame.shape}); expected perturbations x genes.")
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise DataError(
            f"{path.name}: columns {non_numeric[:3]} are not numeric. The file must have the perturbation names in the "
            "first column and one numeric column per gene."
        )
    frame.columns = frame.columns.astype(str)
    frame.index = frame.index.astype(str)
    return frame.astype(np.float64)


def _check_finite_values(values: np.ndarray, source: str, rows: pd.Index | None = None) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        where = ""
        if rows is not None and values.ndim == 2:
            where = f" in {int(bad.any(axis=1).sum())} rows, e.g. {_examples(rows[bad.any(axis=1)])}"
        raise DataError(
            f"{source} has {int(bad.sum())} NaN or infinite values{where}. Predictions must be finite numbers for every gene: "
            "fix the model output (nothing is dropped or imputed here)."
        )


def _check_expression(values: np.ndarray, source: str, is_table: bool) -> None:
    """Refuse negative expression; mostly-negative expression is reported as changes passed as expression."""
    negative = values < 0
    if not negative.any():
        return
    nonzero = max(int((values != 0).sum()), 1)
    share = negative.sum() / nonzero
    if share > MOSTLY_NEGATIVE:
        fix = (
            "pass values='change' (--values change) so the truth's control profile is added back"
            if is_table
            else "predict cells in expression units (log-normalised or raw counts); a table of changes is read with values='change'"
        )
        raise DataError(
            f"{source}: {share:.0%} of the non-zero predicted values are negative (minimum {values.min():.3g}). Expression "
            f"cannot be negative: these look like changes from control given as expression. If they are changes, {fix}."
        )
    raise DataError(
        f"{source} has {int(negative.sum())} negative predicted values (minimum {values.min():.3g}); log-normalised expression "
        "cannot be negative. Clip the model's output at 0 (e.g. np.clip(pred, 0, None)) and say so, or, if the file holds "
        "changes from control, pass values='change'."
    )


def _table_values(frame: pd.DataFrame, values: str, source: str) -> tuple[str, str]:
    """Check a table's values; return (values, note)."""
    X = frame.to_numpy(dtype=np.float64)
    _check_finite_values(X, source, frame.index)
    if values == "change":
        return "change", "changes from control (values='change'); the truth's control profile is added back"
    _check_expression(X, source, is_table=True)
    if values == "counts":
        raise DataError(f"{source}: values='counts' is for predicted cells (.h5ad); a table holds mean log-normalised expression.")
    if X.max() > MAX_LOG_NORMALISED + 1e-3:
        raise DataError(
            f"{source} has values up to {X.max():.3g}, above log1p(10,000) = {MAX_LOG_NORMALISED:.2f}, the largest "
            "log-normalised value: the table is not log1p of counts per 10,000 (mean raw counts, or normalised counts "
            "without log1p?). Give mean log-normalised expression per perturbation, or the predicted cells as an .h5ad "
            "(raw counts are normalised then)."
        )
    return "expression", "mean log-normalised expression (log1p of counts per 10,000)"


def _translate(labels: Iterable[str], style: str, controls: Iterable[str], source: str) -> list[str]:
    try:
        return [canonical_perturbation(p, style, controls) for p in labels]
    except DataError as err:
        raise DataError(f"{source}: {err}") from err


def predictions_from_table(
    frame: pd.DataFrame, source: str = "in memory", values: str = "auto", style: str = "gears", why: str | None = None
) -> Predictions:
    """A :class:`Predictions` from a perturbations x genes table (labels as written in ``frame.index``)."""
    if values not in VALUES:
        raise DataError(f"values must be one of {VALUES}, not {values!r}.")
    _refuse_duplicate_genes(frame.columns, source)
    raw = [str(x) for x in frame.index]
    names = _translate(raw, style, CONTROL_LABELS, source)
    if len(set(names)) != len(names):
        dup = pd.Index(names)[pd.Index(names).duplicated()].unique()
        raise DataError(
            f"{source} has several rows for {_examples(dup)} (after translating the names to canonical ones): one row per "
            "perturbation is expected in a table. Predicted cells belong in an .h5ad with a perturbation column."
        )
    frame = frame.copy()
    frame.index = pd.Index(names, name="perturbation")
    frame.columns = frame.columns.astype(str)
    kind, note = _table_values(frame, values, source)
    control = frame.loc[CONTROL].rename(CONTROL) if CONTROL in frame.index else None
    table = frame.drop(index=CONTROL, errors="ignore")
    if table.empty:
        raise DataError(f"{source} holds only a control row; predict at least one perturbation.")
    return Predictions(
        source=source,
        layout=LAYOUT_TABLE,
        why=why or "one row per perturbation (a table of perturbations x genes)",
        values=kind,
        values_note=note,
        profiles=table,
        control=control,
        labels=dict(zip(names, raw)),
    )


# ----------------------------------------------------------------------------- cells


def _find_column(obs: pd.DataFrame, perturbation_column: str | None, source: str) -> str | None:
    if perturbation_column is not None:
        if perturbation_column not in obs:
            raise DataError(
                f"{source}: obs has no column {perturbation_column!r} (columns: {list(obs.columns)[:15]}). Pass "
                "--perturbation-column naming the column that holds each cell's perturbation."
            )
        return perturbation_column
    return next((c for c in PERTURBATION_COLUMNS if c in obs), None)


def _missing_labels(raw: pd.Series) -> np.ndarray:
    text = raw.astype("object")
    return (text.isna() | text.astype(str).str.strip().isin(["", "nan", "None", "NaN"])).to_numpy()


def _control_label(labels: pd.Series, control: str | None, source: str, column: str) -> str | None:
    uniques = pd.unique(labels.astype(str))
    if control is not None:
        if control not in set(uniques):
            common = labels.astype(str).value_counts().index[:8].tolist()
            raise DataError(
                f"{source}: no cell has the control label {control!r} in obs[{column!r}] (most common labels: {common}). "
                "Pass --control with the label of the control cells as written in the file."
            )
        return control
    found = [u for u in uniques if u.lower() in {c.lower() for c in CONTROL_NAMES}]
    if len(found) > 1:
        raise DataError(
            f"{source}: several labels look like controls ({found}) in obs[{column!r}]; the control definition must be one "
            "group. Pass --control naming the one that is the control, and relabel or remove the other."
        )
    return found[0] if found else None


def _cell_values(X: sp.csr_matrix, values: str, source: str) -> tuple[sp.csr_matrix, str, str]:
    data = X.data
    _check_finite_values(data, source)
    if values == "change":
        raise DataError(
            f"{source}: values='change' is for tables of changes from control; predicted cells hold expression. Pass "
            "values='auto' (or 'expression' / 'counts')."
        )
    _check_expression(data, source, is_table=False)
    counts = looks_like_counts(X)
    if values == "auto":
        values = "counts" if counts else "expression"
    if values == "expression" and counts:
        raise DataError(
            f"{source}: the predicted cells hold whole numbers only (maximum {data.max():.0f}), i.e. raw counts, not "
            "log-normalised expression. Pass values='counts' (or 'auto') to normalise them like the truth."
        )
    if values == "counts":
        return (
            log_normalise(X),
            "counts",
            "raw counts, normalised like the truth: counts per 10,000 per cell, then log1p",
        )
    if data.size and data.max() > MAX_LOG_NORMALISED + 1e-3:
        raise DataError(
            f"{source}: predicted values reach {data.max():.3g}, above log1p(10,000) = {MAX_LOG_NORMALISED:.2f}: not "
            "log-normalised expression (normalised but not log1p-transformed?). Give log1p of counts per 10,000, or raw "
            "counts with values='counts'."
        )
    return X.astype(np.float32, copy=False), "expression", "log-normalised expression (log1p of counts per 10,000)"


def cells_from_anndata(
    adata: AnnData,
    source: str = "in memory",
    perturbation_column: str | None = None,
    control: str | None = None,
    values: str = "auto",
    style: str = "gears",
    require_control: bool = False,
) -> Predictions:
    """Read an AnnData of predicted (or observed) cells, or of pseudobulk rows, into :class:`Predictions`.

    Layout detection: the perturbation column is ``perturbation_column`` or the first of
    :data:`PERTURBATION_COLUMNS` in ``obs``; without one, the rows are perturbations named by
    ``obs_names`` (a pseudobulk table). With a column in which every label occurs once, the rows
    are perturbations too; otherwise they are cells. Cells are in the canonical layout when the
    column is ``perturbation`` with canonical names and the control label ``control``; in the
    cell-eval layout otherwise.
    """
    import anndata as ad

    if values not in VALUES:
        raise DataError(f"values must be one of {VALUES}, not {values!r}.")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise DataError(f"{source} is empty ({adata.n_obs} rows x {adata.n_vars} genes).")
    genes = adata.var_names.astype(str)
    _refuse_duplicate_genes(genes, source)
    column = _find_column(adata.obs, perturbation_column, source)
    X = adata.X
    if X is None:
        raise DataError(f"{source} has no expression matrix X.")
    if column is None or not adata.obs[column].astype(str).duplicated().any():
        labels = adata.obs_names.to_series() if column is None else adata.obs[column]
        if _missing_labels(labels).any():
            raise DataError(f"{source}: {int(_missing_labels(labels).sum())} rows have no perturbation name; name every row.")
        dense = X.toarray() if sp.issparse(X) else np.asarray(X)
        frame = pd.DataFrame(np.asarray(dense, dtype=np.float64), index=labels.astype(str).to_numpy(), columns=genes)
        why = (
            "an .h5ad whose rows are perturbations (obs_names), no per-cell perturbation column"
            if column is None
            else f"an .h5ad with one row per label of obs[{column!r}], i.e. one row per perturbation"
        )
        return predictions_from_table(frame, source, values, style, why)
    raw = adata.obs[column]
    missing = _missing_labels(raw)
    if missing.any():
        raise DataError(
            f"{source}: {int(missing.sum())} of {adata.n_obs:,} cells have no perturbation label (NaN or empty) in "
            f"obs[{column!r}]. Every cell needs its perturbation (or the control label); label these cells or remove them "
            "and say so."
        )
    raw = raw.astype(str)
    label = _control_label(raw, control, source, column)
    if label is None and require_control:
        common = raw.value_counts().index[:8].tolist()
        raise DataError(
            f"{source}: no control cells found in obs[{column!r}] (none of the labels is one of {list(CONTROL_NAMES)}; most "
            f"common: {common}). Pass --control with the label of the control cells."
        )
    controls = {label} if label is not None else set()
    uniques = pd.unique(raw)
    try:
        mapping = {u: (CONTROL if u in controls else canonical_perturbation(u, style, set(CONTROL_LABELS) | controls)) for u in uniques}
    except DataError as err:
        raise DataError(f"{source}: {err}") from err
    clash = pd.Series(list(mapping.keys()), index=list(mapping.values()))
    clash = clash[clash.index.duplicated(keep=False)]
    if len(clash):
        first = clash.index[0]
        raise DataError(
            f"{source}: the labels {sorted(clash[clash.index == first].tolist())} of obs[{column!r}] all mean {first!r}. One "
            "label per perturbation (and one control label) is expected; relabel them."
        )
    Xc = sp.csr_matrix(X) if not sp.issparse(X) else sp.csr_matrix(X)
    Xc, kind, note = _cell_values(Xc, values, source)
    canonical = pd.Categorical(raw.map(mapping).to_numpy())
    obs = pd.DataFrame({"perturbation": canonical}, index=adata.obs_names.astype(str))
    obs["n_targets"] = n_targets(obs["perturbation"].astype(str))
    cells = ad.AnnData(X=Xc, obs=obs, var=pd.DataFrame(index=pd.Index(genes)))
    canonical_layout = column == "perturbation" and label == CONTROL and all(mapping[u] == u for u in uniques)
    n_groups = len(uniques)
    if canonical_layout:
        layout = LAYOUT_CANONICAL
        why = f"cells ({adata.n_obs:,} rows for {n_groups} labels) with canonical names in obs['perturbation'] and control label 'control'"
    else:
        layout = LAYOUT_CELL_EVAL
        found = "given" if perturbation_column else "detected"
        ctrl = "no control cells" if label is None else f"control label {label!r} ({'given' if control else 'detected'})"
        why = f"cells ({adata.n_obs:,} rows for {n_groups} labels) with perturbation column {column!r} ({found}) and {ctrl}"
    table = pseudobulk_profiles(cells)
    profile_control = table.loc[CONTROL].rename(CONTROL) if CONTROL in table.index else None
    table = table.drop(index=CONTROL, errors="ignore")
    table.index.name = "perturbation"
    if table.empty:
        raise DataError(f"{source} holds control cells only; predict at least one perturbation.")
    return Predictions(
        source=source,
        layout=layout,
        why=why,
        values=kind,
        values_note=note,
        profiles=table,
        control=profile_control,
        cells=cells,
        perturbation_column=column,
        control_label=label,
        labels={v: k for k, v in mapping.items()},
    )


def read_predictions_file(
    source: str | Path | AnnData | pd.DataFrame,
    perturbation_column: str | None = None,
    control: str | None = None,
    values: str = "auto",
    style: str = "gears",
    require_control: bool = False,
) -> Predictions:
    """Read predictions (or observed cells) in any supported layout; see the module docstring.

    Parameters
    ----------
    source
        A path (``.csv``, ``.tsv``, ``.txt``, ``.parquet``, ``.h5ad``), an AnnData or a
        perturbations x genes DataFrame.
    perturbation_column
        obs column of each cell's perturbation (default: detected, :data:`PERTURBATION_COLUMNS`).
    control
        Label of the control cells as written (default: detected, :data:`CONTROL_NAMES`).
    values
        ``"auto"`` (log-normalised expression or raw counts, detected), ``"expression"``,
        ``"counts"`` (cells only) or ``"change"`` (tables only).
    style
        Naming convention of the perturbation labels (:data:`helpers.data.canonical.NAMING_STYLES`);
        the default ``"gears"`` also reads canonical names, ``A+ctrl`` and plain gene symbols.
    require_control
        Refuse cells without a control group (for the truth).
    """
    if isinstance(source, pd.DataFrame):
        return predictions_from_table(source.astype(np.float64), "in memory", values, style)
    if not isinstance(source, str | Path):
        return cells_from_anndata(source, "in memory", perturbation_column, control, values, style, require_control)
    path = Path(source)
    if not path.exists():
        raise DataError(f"predictions file {path} does not exist.")
    if path.suffix.lower() == ".h5ad":
        import anndata as ad

        try:
            adata = ad.read_h5ad(path)
        except Exception as err:  # h5py raises several types for non-HDF5 files
            raise DataError(f"{path.name} could not be read as an .h5ad file ({type(err).__name__}: {err}).") from err
        return cells_from_anndata(adata, path.name, perturbation_column, control, values, style, require_control)
    return predictions_from_table(read_table(path), path.name, values, style)


__all__ = [
    "CONTROL_NAMES",
    "LAYOUT_CANONICAL",
    "LAYOUT_CELL_EVAL",
    "LAYOUT_TABLE",
    "PERTURBATION_COLUMNS",
    "Predictions",
    "VALUES",
    "cells_from_anndata",
    "header_genes",
    "predictions_from_table",
    "read_predictions_file",
    "read_table",
]
