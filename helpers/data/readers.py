"""Readers for the published file formats, each returning the canonical screen.

| format | perturbation labels | expression | reader |
|---|---|---|---|
| GEARS (``perturb_processed.h5ad``) | ``obs['condition']``: ``ctrl``, ``A+ctrl``/``ctrl+A``, ``A+B`` | log-normalised X, symbols in ``var['gene_name']`` | :func:`read_gears` |
| scPerturb (Zenodo 7041849) | ``obs['perturbation']``: ``control``, ``A``, ``A_B`` | raw counts in X | :func:`read_scperturb` |
| PerturBench | ``obs['condition']``: ``control``, ``A``, ``A+B`` | log-normalised X (counts in ``layers['counts']`` if present) | :func:`read_perturbench` |
| Replogle 2022 single-cell | ``obs['gene']``: ``non-targeting``, ``A``; ``obs['gem_group']`` | raw UMI counts | :func:`read_replogle` |
| this suite (canonical) | ``obs['perturbation']`` canonical | log-normalised X, counts layer | :func:`read_canonical` |

:func:`read_h5ad` detects the format from the ``obs`` columns and their values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .canonical import CONTROL, DataError, _check_finite, canonical_perturbation, make_canonical, validate


def _read(path, backed: str | None = None) -> "anndata.AnnData":  # noqa: F821
    import anndata as ad

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist. Give the path of an .h5ad file or a dataset name from `python -m helpers datasets`.")
    try:
        return ad.read_h5ad(path, backed=backed)
    except Exception as err:  # h5py raises several types for non-HDF5 files
        raise DataError(
            f"{path} could not be read as an AnnData .h5ad file ({type(err).__name__}: {err}). "
            "Check that it is an h5ad file (not a CSV, loom or a partial download)."
        ) from err


def _symbol_column(adata) -> str | None:
    for key in ("gene_name", "gene_symbols", "gene_symbol", "symbol"):
        if key in adata.var:
            return key
    return None


def _dedupe_genes(adata, duplicate_genes: str, key: str | None):
    """Resolve duplicate gene symbols: ``error`` (default) or keep the ``first`` copy."""
    names = adata.var[key].astype(str) if key else adata.var_names.to_series().astype(str)
    dup = names.duplicated(keep="first").to_numpy()
    if not dup.any():
        return adata
    if duplicate_genes == "first":
        return adata[:, ~dup].copy()
    raise DataError(
        f"{int(dup.sum())} gene symbols occur more than once (e.g. {names[dup].unique()[:3].tolist()}). "
        "Pass duplicate_genes='first' to keep the first copy of each, or make the names unique yourself."
    )


def read_gears(path, duplicate_genes: str = "error", **kwargs):
    """Read a GEARS ``perturb_processed.h5ad`` (Norman, Adamson, Replogle essential).

    ``obs['condition']`` ``A+ctrl``/``ctrl+A`` become ``A``; ``ctrl`` becomes ``control``;
    doubles are sorted. Gene symbols come from ``var['gene_name']``. GEARS' published
    top-20 DE genes (``uns['top_non_dropout_de_20']``, keyed by ``condition_name`` and
    computed on all cells, test included) are kept as ``uns['gears_top_de_20']`` keyed by
    canonical perturbation, with gene symbols.
    """
    raw = _read(path)
    key = _symbol_column(raw)
    raw = _dedupe_genes(raw, duplicate_genes, key)
    out = make_canonical(raw, "condition", "gears", gene_symbol_key=key, **kwargs)
    de = raw.uns.get("top_non_dropout_de_20")
    if de is not None and "condition_name" in raw.obs:
        to_pert = dict(zip(raw.obs["condition_name"].astype(str), out.obs["perturbation"].astype(str)))
        symbols = dict(zip(raw.var_names.astype(str), out.var_names.astype(str)))
        out.uns["gears_top_de_20"] = {
            to_pert[k]: [symbols.get(str(g), str(g)) for g in np.asarray(v).ravel()]
            for k, v in de.items()
            if k in to_pert and to_pert[k] != CONTROL
        }
    return out


def read_scperturb(path, batch_key: str | None = None, duplicate_genes: str = "error", **kwargs):
    """Read a scPerturb h5ad (raw counts in X; ``obs['perturbation']`` = ``control``, ``A``, ``A_B``)."""
    raw = _read(path)
    raw = _dedupe_genes(raw, duplicate_genes, None)
    return make_canonical(raw, "perturbation", "scperturb", batch_key=batch_key, **kwargs)


def read_perturbench(path, context_key: str | None = None, duplicate_genes: str = "error", **kwargs):
    """Read a PerturBench h5ad (``obs['condition']`` = ``control``, ``A``, ``A+B``).

    Raw counts are taken from ``layers['counts']`` when present, otherwise ``X`` is used
    (counts or log-normalised values are detected).
    """
    raw = _read(path)
    raw = _dedupe_genes(raw, duplicate_genes, None)
    if "counts" in raw.layers:
        raw.X = raw.layers["counts"]
    return make_canonical(raw, "condition", "perturbench", context_key=context_key, **kwargs)


def read_replogle(path, duplicate_genes: str = "error", **kwargs):
    """Read a Replogle 2022 single-cell file (``obs['gene']``, ``non-targeting`` controls, ``obs['gem_group']``)."""
    raw = _read(path)
    key = _symbol_column(raw)
    raw = _dedupe_genes(raw, duplicate_genes, key)
    batch = "gem_group" if "gem_group" in raw.obs else None
    return make_canonical(raw, "gene", "replogle", batch_key=batch, gene_symbol_key=key, **kwargs)


def read_canonical(path):
    """Read a screen written by this suite (e.g. a saved simulation) and validate it."""
    adata = _read(path)
    validate(adata)
    return adata


def read_essential_deltas(path, perturbation_key: str | None = None, context_key: str | None = None, fold_key: str = "test_split"):
    """Read the precomputed essential-screen pseudobulk changes of Cole et al. (2026).

    The Hugging Face file ``essential_pseudobulk_deltas_all_perts.h5ad`` holds one row per
    (cell line, perturbation): the difference of log1p pseudobulk means from control, and
    the 5-fold assignment in ``obs['test_split']``. Returns an AnnData of changes (not
    cells) with ``obs['perturbation']``, ``obs['context']`` and ``obs['fold']``, and
    ``uns['kind'] = 'changes'``.
    """
    adata = _read(path)

    def pick(given, candidates, what):
        if given is not None:
            if given not in adata.obs:
                raise DataError(f"obs has no column {given!r} for the {what}; columns: {list(adata.obs.columns)}")
            return given
        for c in candidates:
            if c in adata.obs:
                return c
        raise DataError(f"cannot find the {what} column among {list(adata.obs.columns)}; pass it explicitly.")

    pkey = pick(perturbation_key, ("gene", "perturbation", "target_gene", "gene_symbol", "pert"), "perturbation")
    ckey = pick(context_key, ("cell_line", "context", "cell_type"), "cell line")
    if fold_key not in adata.obs:
        raise DataError(f"obs has no fold column {fold_key!r}; columns: {list(adata.obs.columns)}")
    out = adata.copy()
    out.obs = pd.DataFrame(
        {
            "perturbation": [canonical_perturbation(p, "replogle") for p in adata.obs[pkey].astype(str)],
            "context": adata.obs[ckey].astype(str).to_numpy(),
            "fold": adata.obs[fold_key].astype(int).to_numpy(),
        },
        index=adata.obs_names,
    )
    key = _symbol_column(adata)
    if key:
        out.var_names = adata.var[key].astype(str).to_numpy()
    if not out.var_names.is_unique:
        raise DataError("gene names in the essential file are not unique; make them unique before use.")
    _check_finite(out.X, "the essential changes file")
    out.uns["kind"] = "changes"
    return out


FORMATS = {
    "gears": read_gears,
    "scperturb": read_scperturb,
    "perturbench": read_perturbench,
    "replogle": read_replogle,
    "canonical": read_canonical,
    "essential_deltas": read_essential_deltas,
}


def detect_format(adata) -> str:
    """Name the format of a raw AnnData from its ``obs`` columns and label values."""
    obs = adata.obs

    def values(col):
        return set(obs[col].astype(str).unique()[:5000])

    if "perturbation" in obs and "n_targets" in obs:
        vals = values("perturbation")
        if CONTROL in vals and all(canonical_perturbation(v) == v for v in vals):
            return "canonical"
    if "test_split" in obs and not any(k in obs for k in ("condition", "perturbation")):
        return "essential_deltas"
    if "condition" in obs:
        vals = values("condition")
        if "ctrl" in vals or any(v.endswith("+ctrl") or v.startswith("ctrl+") for v in vals):
            return "gears"
        if "control" in vals:
            return "perturbench"
    if "perturbation" in obs and "control" in values("perturbation"):
        return "scperturb"
    if "gene" in obs and "non-targeting" in values("gene"):
        return "replogle"
    raise DataError(
        "could not recognise the file's format from obs columns "
        f"{list(obs.columns)[:12]}. Supported: {sorted(FORMATS)}; pass format=... explicitly, or convert "
        "the labels so that obs has a perturbation column with a control label."
    )


def read_h5ad(path, format: str = "auto", **kwargs):
    """Read any supported h5ad file into the canonical form.

    Parameters
    ----------
    path
        Path to an ``.h5ad`` file.
    format
        ``"auto"`` (detect) or one of :data:`FORMATS`.
    **kwargs
        Passed to the format's reader (e.g. ``batch_key=``, ``duplicate_genes='first'``).
    """
    if format == "auto":
        backed = _read(path, backed="r")
        try:
            format = detect_format(backed)
        finally:
            backed.file.close()
    if format not in FORMATS:
        raise DataError(f"unknown format {format!r}; use one of {sorted(FORMATS)} or 'auto'")
    return FORMATS[format](path, **kwargs)
