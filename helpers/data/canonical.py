"""The one in-memory form every notebook and model works on.

A canonical screen is an :class:`anndata.AnnData` of cells with

* ``obs['perturbation']``: ``"control"``, a gene symbol (``"KLF1"``) or two symbols
  joined by ``+`` in sorted order (``"KLF1+MAP2K6"``);
* ``obs['n_targets']``: 0 for control, 1 for singles, 2 for doubles;
* optional ``obs['batch']`` (gem group) and ``obs['context']`` (cell line);
* ``X``: log1p of counts normalised to 10,000 per cell, float32, sparse CSR;
* ``layers['counts']``: raw counts where the source had them;
* unique gene symbols as ``var_names``.

The functions here turn the naming conventions of the published files into that
form and refuse data that would silently give wrong numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import DataError

if TYPE_CHECKING:
    from anndata import AnnData

CONTROL = "control"
TARGET_SUM = 1e4

#: Labels that mean "no gene targeted" in the published files (a reader's ``control_labels`` adds to them).
CONTROL_LABELS = frozenset({"control", "ctrl", "non-targeting", "non_targeting", "nontargeting"})

#: Label texts that mean "no label": refused (or, with ``unlabelled="drop"``, dropped), never read as a gene.
MISSING_LABELS = frozenset({"", "nan", "none", "null", "na", "<na>"})

#: How each published format writes its perturbation labels.
NAMING_STYLES = {
    "gears": "'ctrl', 'A+ctrl' or 'ctrl+A', 'A+B'",
    "scperturb": "'control', 'A', 'A_B'",
    "perturbench": "'control', 'A', 'A+B'",
    "replogle": "'non-targeting', 'A'",
    "canonical": "'control', 'A', 'A+B' (sorted)",
}

_SEPARATORS = {
    "gears": r"\+",
    "scperturb": r"[_+]",
    "perturbench": r"\+",
    "replogle": r"\+",
    "canonical": r"\+",
}

#: A gene symbol: letters, digits and ``.-:/``, optionally a numeric ``_N`` suffix (how Ensembl and 10x
#: references tell apart genes that share a symbol, e.g. ``GTF2H2C_2``). Any other ``_`` is refused, so
#: an scPerturb-style double ``A_B`` read with another naming style is an error, not one gene.
_GENE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-:/]*(_[0-9]+)?$")


def canonical_perturbation(label: str, style: str = "canonical", control_labels: Iterable[str] = CONTROL_LABELS) -> str:
    """Translate one perturbation label into the canonical name.

    Parameters
    ----------
    label
        The label as written in the source file, e.g. ``"ctrl+KLF1"`` (GEARS),
        ``"KLF1_MAP2K6"`` (scPerturb) or ``"non-targeting"`` (Replogle).
    style
        One of :data:`NAMING_STYLES`. Decides which characters separate two genes.
    control_labels
        Labels (case-insensitive) that mean "no gene targeted".

    Returns
    -------
    str
        ``"control"``, ``"A"`` or ``"A+B"`` with ``A < B``.

    Examples
    --------
    >>> canonical_perturbation("ctrl+KLF1", "gears")
    'KLF1'
    >>> canonical_perturbation("MAP2K6_KLF1", "scperturb")
    'KLF1+MAP2K6'
    """
    if style not in _SEPARATORS:
        raise DataError(f"unknown naming style {style!r}; use one of {sorted(NAMING_STYLES)}")
    controls = {c.lower() for c in control_labels}
    text = str(label).strip()
    if text.lower() in MISSING_LABELS:
        raise DataError(
            f"perturbation label {label!r} is empty or missing: a cell without a label is neither a control nor a "
            "perturbation. Label it, or drop such cells (the readers' option unlabelled='drop')."
        )
    if text.lower() in controls:
        return CONTROL
    genes = sorted(set(_written_genes(text, style, controls)))
    if not genes:
        return CONTROL
    bad = [g for g in genes if not _GENE_RE.match(g)]
    if bad:
        raise DataError(
            f"perturbation label {label!r} does not parse as {NAMING_STYLES[style]}: "
            f"{bad[0]!r} is not a gene symbol. Check the naming style passed to the reader."
        )
    return "+".join(genes)


def _written_genes(text: str, style: str, controls: set[str]) -> list[str]:
    """The genes of a label in the order the label writes them (control parts, lower-cased in ``controls``, dropped)."""
    return [p for p in (q.strip() for q in re.split(_SEPARATORS[style], text)) if p.lower() not in controls]


def _source_names(labels: np.ndarray, perturbations: np.ndarray, style: str, controls: Iterable[str]) -> dict[str, str]:
    """Doubles whose source label lists the genes in another order: canonical -> source genes joined by ``+``.

    The published splits sort the file's own names before drawing, so the split needs them
    (:func:`helpers.data.splits.double_perturbation_split`). A double written in both orders keeps
    the canonical one if present, else the first in sort order. Each distinct label is parsed once.
    """
    lowered = {c.lower() for c in controls}
    pairs = pd.DataFrame({"label": labels, "canonical": np.asarray(perturbations, dtype=object)}).drop_duplicates()
    written: dict[str, set[str]] = {}
    for label, canonical in pairs.itertuples(index=False):
        if "+" in canonical:
            written.setdefault(canonical, set()).add("+".join(_written_genes(str(label).strip(), style, lowered)))
    return {c: min(w) for c, w in sorted(written.items()) if c not in w}


def canonical_perturbations(
    labels: Iterable[str], style: str = "canonical", control_labels: Iterable[str] = CONTROL_LABELS
) -> pd.Categorical:
    """Vectorised :func:`canonical_perturbation` (each distinct label is parsed once)."""
    labels = pd.Series(labels, dtype="object").astype(str)
    uniques = labels.unique()
    mapping = {u: canonical_perturbation(u, style, control_labels) for u in uniques}
    return pd.Categorical(labels.map(mapping))


def target_genes(perturbation: str) -> tuple[str, ...]:
    """Genes targeted by a canonical perturbation name (empty for control).

    >>> target_genes("KLF1+MAP2K6")
    ('KLF1', 'MAP2K6')
    """
    if perturbation == CONTROL:
        return ()
    return tuple(perturbation.split("+"))


def n_targets(perturbations: Iterable[str]) -> np.ndarray:
    """Number of targeted genes of each canonical perturbation name."""
    return np.array([len(target_genes(p)) for p in perturbations], dtype=np.int64)


def looks_like_counts(X: np.ndarray | sp.spmatrix, n_check: int = 2000) -> bool:
    """Whether a matrix holds raw counts rather than log-normalised values.

    Counts are non-negative whole numbers, with at least one value of 2 or more in the
    cells checked. Log-normalised values are practically never all whole numbers; a
    matrix of only 0 and 1 is ambiguous and treated as not counts (pass ``counts="yes"``).
    """
    sample = X[: min(n_check, X.shape[0])]
    values = sample.data if sp.issparse(sample) else np.asarray(sample).ravel()
    if values.size == 0:
        return False
    values = np.asarray(values, dtype=np.float64)
    return bool(np.all(values >= 0) and np.all(np.mod(values, 1) == 0) and values.max() >= 2)


#: The largest value log1p of counts normalised to 10,000 per cell can take: log1p(1e4).
MAX_LOG_NORMALISED = float(np.log1p(TARGET_SUM))

#: What :func:`expression_scale` can find.
SCALES = ("log-normalised", "counts", "not log-transformed", "negative", "empty")


def expression_scale(X: np.ndarray | sp.spmatrix, n_check: int = 2000) -> str:
    """The unit a matrix of expression values is in, judged from its first ``n_check`` rows.

    * ``"negative"`` — some value is below 0: not expression (perhaps changes from control);
    * ``"counts"`` — non-negative whole numbers with a value of 2 or more (:func:`looks_like_counts`);
    * ``"not log-transformed"`` — a value above ``log1p(10,000)`` (:data:`MAX_LOG_NORMALISED`), which
      log1p of counts normalised to 10,000 per cell cannot exceed: normalised but not logged, or
      another scale;
    * ``"log-normalised"`` — the suite's unit, ``log1p(counts · 10,000 / total)``;
    * ``"empty"`` — no values to judge.
    """
    sample = X[: min(n_check, X.shape[0])]
    values = sample.data if sp.issparse(sample) else np.asarray(sample).ravel()
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return "empty"
    if np.nanmin(values) < 0:
        return "negative"
    if looks_like_counts(sample):
        return "counts"
    if np.nanmax(values) > MAX_LOG_NORMALISED + 1e-3:
        return "not log-transformed"
    return "log-normalised"


def _as_list(labels: Iterable[str] | str, what: str) -> list[str]:
    if isinstance(labels, str):
        labels = [labels]
    try:
        out = list(labels)
    except TypeError:
        raise DataError(f"{what} must be a list of labels, not {labels!r}") from None
    if not all(isinstance(x, str) and x.strip() for x in out):
        raise DataError(f"{what} must be a list of non-empty labels, not {labels!r}")
    return out


def to_log_normalised(X: sp.spmatrix, counts: str = "auto", what: str = "X") -> tuple[sp.csr_matrix, sp.csr_matrix | None, list[str]]:
    """Check the unit of an expression matrix and bring it to the suite's, saying what was done.

    The suite's unit is ``log1p(counts · 10,000 / total)`` (:data:`TARGET_SUM`), whose largest
    possible value is ``log1p(10,000)`` (:data:`MAX_LOG_NORMALISED`). The units are those of
    :func:`expression_scale`, with its thresholds, but the minimum and maximum are taken over every
    stored value (not only the first rows); whether the values are counts is judged on the first
    rows (:func:`looks_like_counts`).

    * negative values: refused (changes from control, scaled or corrected values, not expression);
    * only zeros: refused;
    * counts (``counts="auto"`` detects them, ``"yes"`` forces): normalised and log1p-transformed,
      with a note, the counts returned as the second value;
    * values above ``log1p(10,000)`` with ``counts="auto"``: refused (normalised but not logged,
      or another scale), naming ``counts="yes"`` for normalised values and ``counts="no"`` to keep them;
    * otherwise log-normalised, kept as they are.

    Returns
    -------
    X, counts, notes
        ``X`` as float32 CSR, the counts (or ``None``) and the sentences to show the user.
    """
    if isinstance(counts, bool):  # YAML reads an unquoted `counts: yes` as true
        counts = "yes" if counts else "no"
    if counts not in ("auto", "yes", "no"):
        raise DataError(f"counts={counts!r} is not an option: use 'auto' (detect raw counts), 'yes' (X holds counts) or 'no'.")
    X = sp.csr_matrix(X)
    values = X.data
    if values.size == 0 or not np.any(values):
        raise DataError(f"{what} holds only zeros ({X.shape[0]:,} cells x {X.shape[1]:,} genes): there is no expression to analyse.")
    low, high = float(values.min()), float(values.max())
    if low < 0:
        n_negative = int((values < 0).sum())
        raise DataError(
            f"{what} has {n_negative:,} negative values (minimum {low:.3g}): expression cannot be negative, so it holds "
            "something else, e.g. changes from control, scaled (z-scored) or batch-corrected values. The suite needs "
            "log1p of counts normalised to 10,000 per cell, or raw counts: give the raw counts (often in "
            "layers['counts'] or adata.raw) as X."
        )
    notes = []
    is_counts = {"auto": None, "yes": True, "no": False}[counts]
    if is_counts is None:
        is_counts = looks_like_counts(X)
        if is_counts:
            notes.append(
                f"{what} holds raw counts (whole numbers up to {high:g}): they were normalised to 10,000 per cell and "
                "log1p-transformed, the suite's unit; the counts are kept in layers['counts']."
            )
        elif high > MAX_LOG_NORMALISED + 1e-3:
            raise DataError(
                f"{what} has values up to {high:.4g}, above log1p(10,000) = {MAX_LOG_NORMALISED:.2f}, the largest value "
                "log1p of counts normalised to 10,000 per cell can take: it is normalised but not log-transformed, or on "
                "another scale. If X holds counts or normalised counts (any total per cell), pass the reader option "
                "counts='yes' to normalise them to 10,000 per cell and take log1p; to use the values as they are, "
                "pass counts='no'; or give the raw counts as X."
            )
    elif is_counts:
        notes.append(f"{what} was normalised to 10,000 per cell and log1p-transformed, as asked (counts='yes').")
    elif high > MAX_LOG_NORMALISED + 1e-3:
        notes.append(
            f"{what} has values up to {high:.4g}, above log1p(10,000) = {MAX_LOG_NORMALISED:.2f}; they are used as they "
            "are, as asked (counts='no'), but are not on the suite's scale."
        )
    if is_counts:
        return log_normalise(X), X.astype(np.float32), notes
    return X.astype(np.float32), None, notes


def announce(adata: AnnData, notes: Iterable[str]) -> None:
    """Keep the notes of a conversion in ``adata.uns['notes']`` and show them (a :class:`~helpers.errors.DataNote` warning)."""
    import warnings

    from ..errors import DataNote

    notes = list(notes)
    if not notes:
        return
    adata.uns["notes"] = [*list(adata.uns.get("notes", [])), *notes]
    for note in notes:
        warnings.warn(note, DataNote, stacklevel=_caller_level())


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside this package: a note points at the user's line (e.g. the notebook cell)."""
    import sys
    from pathlib import Path

    package = str(Path(__file__).resolve().parents[1])
    frame, level = sys._getframe(1), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def log_normalise(counts: np.ndarray | sp.spmatrix, target_sum: float = TARGET_SUM) -> sp.csr_matrix:
    """Normalise counts to ``target_sum`` per cell and take ``log1p``.

    ``X[c, g] = log(1 + counts[c, g] * target_sum / sum_g' counts[c, g'])``; cells with
    no counts stay at zero. Returns float32 CSR without densifying the input.
    """
    counts = sp.csr_matrix(counts, dtype=np.float64)
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    X = sp.diags(scale) @ counts
    X = sp.csr_matrix(X)
    X.data = np.log1p(X.data)
    return X.astype(np.float32)


def _check_finite(X: np.ndarray | sp.spmatrix, what: str) -> None:
    values = X.data if sp.issparse(X) else np.asarray(X)
    if not np.all(np.isfinite(values)):
        n_bad = int(np.sum(~np.isfinite(values)))
        raise DataError(
            f"{what} contains {n_bad} NaN or infinite values. Remove or impute them before "
            "loading (e.g. fill missing counts with 0); the suite does not drop them silently."
        )


def _label_counts(labels: Iterable[str], limit: int = 8) -> str:
    counts = pd.Series(list(labels), dtype="object").astype(str).value_counts()
    shown = ", ".join(f"{label!r} ({n:,})" for label, n in counts.head(limit).items())
    return shown + (f" and {len(counts) - limit:,} more" if len(counts) > limit else "")


def no_control_message(labels: Iterable[str], column: str, known: Iterable[str] = CONTROL_LABELS) -> str:
    """The error of a screen without control cells: the labels seen and the option that names the control label."""
    labels = list(labels)
    return (
        f"no control cells: none of the {len(set(map(str, labels))):,} labels of obs[{column!r}] is a control label (known: "
        f"{', '.join(sorted(known))}). Labels seen (cells): {_label_counts(labels)}. A screen needs control cells as the "
        "reference of every change; if the controls carry another label, name it with the reader option "
        "control_labels=['LABEL']."
    )


def validate(adata: AnnData, require_control: bool = True) -> None:
    """Check that ``adata`` is a canonical screen; raise :class:`DataError` otherwise.

    Checks: ``obs['perturbation']`` exists and holds canonical names, a control group
    exists (per context if ``obs['context']`` exists), ``n_targets`` matches the names,
    gene names are unique, ``X`` has no NaN or infinite values.
    """
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise DataError(
            f"the screen holds {adata.n_obs:,} cells x {adata.n_vars:,} genes: there is nothing to analyse. Check that the "
            "file was written completely and that no filter removed every cell."
        )
    if "perturbation" not in adata.obs:
        raise DataError(
            "obs['perturbation'] is missing. Load the file with helpers.data.read_h5ad(path, "
            "perturbation_key=..., style=...) so the labels are translated to canonical names."
        )
    names = pd.Series(adata.obs["perturbation"].astype(str).to_numpy())
    uniques = names.unique()
    bad = [u for u in uniques if canonical_perturbation(u) != u]
    if bad:
        raise DataError(
            f"{len(bad)} perturbation names are not canonical, e.g. {bad[:3]}. Expected 'control', "
            "'A' or 'A+B' with A < B; read the file with the matching naming style."
        )
    if require_control and CONTROL not in set(uniques):
        raise DataError(no_control_message(names, "perturbation"))
    if require_control and "context" in adata.obs:
        ctx = adata.obs["context"].astype(str).to_numpy()
        has_ctrl = set(ctx[names.to_numpy() == CONTROL])
        missing = sorted(set(ctx) - has_ctrl)
        if missing:
            raise DataError(f"contexts {missing} have no control cells; each cell line needs its own controls.")
    if "n_targets" in adata.obs:
        expected = n_targets(names)
        if not np.array_equal(expected, adata.obs["n_targets"].to_numpy()):
            raise DataError("obs['n_targets'] does not match the perturbation names; drop the column and reload.")
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()].unique()[:5].tolist()
        raise DataError(
            f"gene names are not unique (e.g. {dup}). Make them unique first, e.g. by keeping the "
            "most expressed copy or with adata.var_names_make_unique()."
        )
    _check_finite(adata.X, "X")
    if "counts" in adata.layers:
        _check_finite(adata.layers["counts"], "layers['counts']")


def make_canonical(
    adata: AnnData,
    perturbation_key: str,
    style: str,
    *,
    control_labels: Iterable[str] = CONTROL_LABELS,
    batch_key: str | None = None,
    context_key: str | None = None,
    gene_symbol_key: str | None = None,
    counts: str = "auto",
    unlabelled: str = "error",
    announce_counts: bool = True,
) -> AnnData:
    """Return a canonical copy of a screen read from any supported format.

    Parameters
    ----------
    adata
        Cells x genes, as read from the file.
    perturbation_key
        ``obs`` column with the perturbation labels.
    style
        Naming style of those labels, see :data:`NAMING_STYLES`.
    control_labels
        Labels that mean control, in addition to :data:`CONTROL_LABELS` (case-insensitive).
    batch_key, context_key
        ``obs`` columns to keep as ``batch`` (gem group) and ``context`` (cell line).
    gene_symbol_key
        ``var`` column holding gene symbols when ``var_names`` are not symbols.
    counts
        ``"auto"`` detects whether ``X`` holds counts (see :func:`looks_like_counts`);
        ``"yes"``/``"no"`` force the decision. The unit of ``X`` is checked
        (:func:`to_log_normalised`): negative values and values too large for log-normalised
        expression are refused with the reason.
    unlabelled
        Cells whose label is empty or missing (:data:`MISSING_LABELS`): ``"error"`` (default)
        refuses the screen naming how many there are; ``"drop"`` drops them with a note.
    announce_counts
        Show the note when counts are normalised (``False`` when the reader took ``X`` from a
        layer named ``counts``, so the conversion is the documented one).

    Returns
    -------
    AnnData
        Canonical screen; counts (if any) in ``layers['counts']`` and ``X`` log-normalised.
        Other ``obs`` columns of the source (e.g. library sizes) are kept unchanged.
    """
    import anndata as ad

    if perturbation_key not in adata.obs:
        raise DataError(
            f"obs has no column {perturbation_key!r} (columns: {list(adata.obs.columns)}). "
            "Pass perturbation_key= naming the column with the perturbation labels."
        )
    if unlabelled not in ("error", "drop"):
        raise DataError(f"unlabelled={unlabelled!r} is not an option: use 'error' (refuse cells without a label) or 'drop'.")
    controls = set(CONTROL_LABELS) | set(_as_list(control_labels, "control_labels"))
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise DataError(
            f"the file holds {adata.n_obs:,} cells x {adata.n_vars:,} genes: there is nothing to analyse. Check that it "
            "was written completely and that no filter removed every cell."
        )
    notes = []
    raw_labels = adata.obs[perturbation_key]
    missing = (raw_labels.isna() | raw_labels.astype(str).str.strip().str.lower().isin(MISSING_LABELS)).to_numpy()
    if missing.any():
        n_missing = int(missing.sum())
        if unlabelled == "error" or n_missing == adata.n_obs:
            raise DataError(
                f"{n_missing:,} of {adata.n_obs:,} cells have an empty or missing label in obs[{perturbation_key!r}]: a cell "
                "without a label is neither a control nor a perturbation, so it is not guessed. Label those cells (controls "
                "as 'control'), or drop them with the reader option unlabelled='drop'."
            )
        notes.append(
            f"{n_missing:,} of {adata.n_obs:,} cells had an empty or missing perturbation label and were dropped (unlabelled='drop')."
        )
        adata = adata[~missing]
    X = adata.X
    if X is None:
        raise DataError("the file has no expression matrix X.")
    if not sp.issparse(X):
        X = sp.csr_matrix(np.asarray(X))
    else:
        X = sp.csr_matrix(X)
    _check_finite(X, "X")
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    perturbations = canonical_perturbations(labels, style, controls)
    if CONTROL not in set(perturbations):
        raise DataError(no_control_message(labels, perturbation_key, controls))
    X, count_matrix, unit_notes = to_log_normalised(X, counts)
    obs = pd.DataFrame(index=adata.obs_names.astype(str))
    obs["perturbation"] = perturbations
    obs["n_targets"] = n_targets(obs["perturbation"].astype(str))
    if batch_key is not None:
        if batch_key not in adata.obs:
            raise DataError(f"obs has no batch column {batch_key!r}; columns: {list(adata.obs.columns)}")
        obs["batch"] = pd.Categorical(adata.obs[batch_key].astype(str).to_numpy())
    if context_key is not None:
        if context_key not in adata.obs:
            raise DataError(f"obs has no context column {context_key!r}; columns: {list(adata.obs.columns)}")
        obs["context"] = pd.Categorical(adata.obs[context_key].astype(str).to_numpy())
    reserved = {"perturbation", "n_targets", "batch", "context", perturbation_key, batch_key, context_key}
    for col in adata.obs.columns:
        if col not in reserved:
            obs[col] = adata.obs[col].to_numpy()
    if gene_symbol_key is not None:
        if gene_symbol_key not in adata.var:
            raise DataError(f"var has no gene-symbol column {gene_symbol_key!r}; columns: {list(adata.var.columns)}")
        genes = adata.var[gene_symbol_key].astype(str).to_numpy()
    else:
        genes = adata.var_names.astype(str).to_numpy()
    var = pd.DataFrame(index=pd.Index(genes, name=None))
    layers = {} if count_matrix is None else {"counts": count_matrix}
    out = ad.AnnData(X=X, obs=obs, var=var, layers=layers)
    renamed = _source_names(labels, perturbations, style, controls)
    if renamed:
        out.uns["source_names"] = renamed
    validate(out)
    if not announce_counts and count_matrix is not None:
        out.uns["notes"] = unit_notes
        unit_notes = []
    announce(out, notes + unit_notes)
    return out
