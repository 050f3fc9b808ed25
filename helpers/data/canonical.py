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

import numpy as np
import pandas as pd
import scipy.sparse as sp

CONTROL = "control"
TARGET_SUM = 1e4

#: Labels that mean "no gene targeted" in the published files.
CONTROL_LABELS = frozenset({"control", "ctrl", "non-targeting", "non_targeting", "nontargeting", ""})

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

_GENE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-:/]*$")


class DataError(ValueError):
    """Raised when input data cannot be used as it is; the message says what to do."""


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
    if text.lower() in controls:
        return CONTROL
    parts = [p.strip() for p in re.split(_SEPARATORS[style], text)]
    genes = sorted({p for p in parts if p.lower() not in controls})
    if not genes:
        return CONTROL
    bad = [g for g in genes if not _GENE_RE.match(g)]
    if bad:
        raise DataError(
            f"perturbation label {label!r} does not parse as {NAMING_STYLES[style]}: "
            f"{bad[0]!r} is not a gene symbol. Check the naming style passed to the reader."
        )
    return "+".join(genes)


def canonical_perturbations(labels: Iterable[str], style: str = "canonical", control_labels: Iterable[str] = CONTROL_LABELS) -> pd.Categorical:
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


def looks_like_counts(X, n_check: int = 2000) -> bool:
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


def log_normalise(counts, target_sum: float = TARGET_SUM) -> sp.csr_matrix:
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


def _check_finite(X, what: str) -> None:
    values = X.data if sp.issparse(X) else np.asarray(X)
    if not np.all(np.isfinite(values)):
        n_bad = int(np.sum(~np.isfinite(values)))
        raise DataError(
            f"{what} contains {n_bad} NaN or infinite values. Remove or impute them before "
            "loading (e.g. fill missing counts with 0); the suite does not drop them silently."
        )


def validate(adata, require_control: bool = True) -> None:
    """Check that ``adata`` is a canonical screen; raise :class:`DataError` otherwise.

    Checks: ``obs['perturbation']`` exists and holds canonical names, a control group
    exists (per context if ``obs['context']`` exists), ``n_targets`` matches the names,
    gene names are unique, ``X`` has no NaN or infinite values.
    """
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
        raise DataError(
            "no control cells: obs['perturbation'] has no 'control'. A screen needs control cells "
            "as the reference for every change; if your controls have another label, pass it as "
            "control_labels=... to the reader."
        )
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
    adata,
    perturbation_key: str,
    style: str,
    *,
    control_labels: Iterable[str] = CONTROL_LABELS,
    batch_key: str | None = None,
    context_key: str | None = None,
    gene_symbol_key: str | None = None,
    counts: str = "auto",
):
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
        Labels that mean control.
    batch_key, context_key
        ``obs`` columns to keep as ``batch`` (gem group) and ``context`` (cell line).
    gene_symbol_key
        ``var`` column holding gene symbols when ``var_names`` are not symbols.
    counts
        ``"auto"`` detects whether ``X`` holds counts (see :func:`looks_like_counts`);
        ``"yes"``/``"no"`` force the decision.

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
    X = adata.X
    if X is None:
        raise DataError("the file has no expression matrix X.")
    if not sp.issparse(X):
        X = sp.csr_matrix(np.asarray(X))
    else:
        X = sp.csr_matrix(X)
    _check_finite(X, "X")
    is_counts = {"auto": None, "yes": True, "no": False}[counts]
    if is_counts is None:
        is_counts = looks_like_counts(X)
    obs = pd.DataFrame(index=adata.obs_names.astype(str))
    obs["perturbation"] = canonical_perturbations(adata.obs[perturbation_key].to_numpy(), style, control_labels)
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
    layers = {}
    if is_counts:
        layers["counts"] = X.astype(np.float32)
        X = log_normalise(X)
    else:
        X = X.astype(np.float32)
    out = ad.AnnData(X=X, obs=obs, var=var, layers=layers)
    validate(out)
    return out
