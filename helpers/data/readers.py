"""Readers for the published file formats, each returning the canonical screen.

| format | perturbation labels | expression | reader |
|---|---|---|---|
| GEARS (``perturb_processed.h5ad``) | ``obs['condition']``: ``ctrl``, ``A+ctrl``/``ctrl+A``, ``A+B`` | log-normalised X, symbols in ``var['gene_name']`` | :func:`read_gears` |
| scPerturb (Zenodo 7041849) | ``obs['perturbation']``: ``control``, ``A``, ``A_B`` | raw counts in X | :func:`read_scperturb` |
| PerturBench | ``obs['condition']``: ``control``, ``A``, ``A+B`` | log-normalised X (counts in ``layers['counts']`` if present) | :func:`read_perturbench` |
| Replogle 2022 single-cell | ``obs['gene']``: ``non-targeting``, ``A``; ``obs['gem_group']`` | raw UMI counts | :func:`read_replogle` |
| this suite (canonical) | ``obs['perturbation']`` canonical | log-normalised X, counts layer | :func:`read_canonical` |
| any other (``labels``) | the ``obs`` column named by ``perturbation_key`` | counts or log-normalised X | :func:`read_labels` |

:func:`read_h5ad` detects the format from the ``obs`` columns and their values.

Reader options
--------------
Every reader refuses what it cannot read unambiguously and names the option that resolves it:
``control_labels`` (labels of the control cells, added to ``control``, ``ctrl``,
``non-targeting``), ``perturbation_key`` and ``style`` (a file in none of the formats above),
``unlabelled='drop'`` (drop cells without a label, with a note), ``counts`` (``'yes'``/``'no'``
when the unit of X is not what it seems), ``duplicate_genes='first'``, ``batch_key``,
``context_key``, and ``format`` itself. In Python they are keyword arguments of
:func:`read_h5ad` and :func:`helpers.data.load_dataset`. Notebooks and the command line take a
screen by its path only, so the options of a file can also be written beside it, in YAML, in
``<stem>.reader.yaml`` (for ``my_screen.h5ad``: ``my_screen.reader.yaml``)::

    control_labels: [NTC]
    unlabelled: drop

which every reading of that file uses (options given in Python take precedence).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import DataError
from .canonical import (
    CONTROL,
    CONTROL_LABELS,
    _as_list,
    _check_finite,
    announce,
    canonical_perturbation,
    make_canonical,
    no_control_message,
    to_log_normalised,
    validate,
)

if TYPE_CHECKING:
    from anndata import AnnData


def _read(path: str | Path, backed: str | None = None) -> AnnData:
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


def _symbol_column(adata: AnnData) -> str | None:
    for key in ("gene_name", "gene_symbols", "gene_symbol", "symbol"):
        if key in adata.var:
            return key
    return None


def _dedupe_genes(adata: AnnData, duplicate_genes: str, key: str | None) -> AnnData:
    """Resolve duplicate gene symbols: ``error`` (default) or keep the ``first`` copy."""
    if duplicate_genes not in ("error", "first"):
        raise DataError(f"duplicate_genes={duplicate_genes!r} is not an option: use 'error' (refuse) or 'first' (keep the first copy).")
    names = adata.var[key].astype(str) if key else adata.var_names.to_series().astype(str)
    dup = names.duplicated(keep="first").to_numpy()
    if not dup.any():
        return adata
    if duplicate_genes == "first":
        return adata[:, ~dup].copy()
    raise DataError(
        f"{int(dup.sum())} gene symbols occur more than once (e.g. {names[dup].unique()[:3].tolist()}). "
        "Pass the reader option duplicate_genes='first' to keep the first copy of each, or make the names unique yourself."
    )


def read_gears(path: str | Path, duplicate_genes: str = "error", **kwargs) -> AnnData:
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


def read_scperturb(path: str | Path, batch_key: str | None = None, duplicate_genes: str = "error", **kwargs) -> AnnData:
    """Read a scPerturb h5ad (raw counts in X; ``obs['perturbation']`` = ``control``, ``A``, ``A_B``)."""
    raw = _read(path)
    raw = _dedupe_genes(raw, duplicate_genes, None)
    return make_canonical(raw, "perturbation", "scperturb", batch_key=batch_key, **kwargs)


def read_perturbench(path: str | Path, context_key: str | None = None, duplicate_genes: str = "error", **kwargs) -> AnnData:
    """Read a PerturBench h5ad (``obs['condition']`` = ``control``, ``A``, ``A+B``).

    Raw counts are taken from ``layers['counts']`` when present, otherwise ``X`` is used
    (counts or log-normalised values are detected).
    """
    raw = _read(path)
    raw = _dedupe_genes(raw, duplicate_genes, None)
    from_layer = "counts" in raw.layers
    if from_layer:
        raw.X = raw.layers["counts"]
    return make_canonical(raw, "condition", "perturbench", context_key=context_key, announce_counts=not from_layer, **kwargs)


def read_replogle(path: str | Path, duplicate_genes: str = "error", **kwargs) -> AnnData:
    """Read a Replogle 2022 single-cell file (``obs['gene']``, ``non-targeting`` controls, ``obs['gem_group']``)."""
    raw = _read(path)
    key = _symbol_column(raw)
    raw = _dedupe_genes(raw, duplicate_genes, key)
    batch = "gem_group" if "gem_group" in raw.obs else None
    return make_canonical(raw, "gene", "replogle", batch_key=batch, gene_symbol_key=key, **kwargs)


def read_labels(path: str | Path, perturbation_key: str, style: str = "perturbench", duplicate_genes: str = "error", **kwargs) -> AnnData:
    """Read an h5ad in none of the published layouts: labels in the ``obs`` column ``perturbation_key``.

    ``style`` names how two genes are joined (see :data:`helpers.data.canonical.NAMING_STYLES`:
    ``perturbench`` for ``A+B``, ``scperturb`` for ``A_B``); the controls are labelled
    ``control``, ``ctrl`` or ``non-targeting``, or as given by ``control_labels``.
    """
    raw = _read(path)
    raw = _dedupe_genes(raw, duplicate_genes, kwargs.get("gene_symbol_key"))
    return make_canonical(raw, perturbation_key, style, **kwargs)


def read_canonical(path: str | Path, counts: str = "auto") -> AnnData:
    """Read a screen written by this suite (e.g. a saved simulation), validate it and check the unit of X."""
    adata = _read(path)
    validate(adata)
    X, count_matrix, notes = to_log_normalised(adata.X, counts)
    if count_matrix is not None:
        adata.X = X
        adata.layers["counts"] = count_matrix
    announce(adata, notes)
    return adata


def read_essential_deltas(
    path: str | Path, perturbation_key: str | None = None, context_key: str | None = None, fold_key: str = "test_split"
) -> AnnData:
    """Read the precomputed essential-screen pseudobulk changes of Cole et al. (2026).

    The Hugging Face file ``essential_pseudobulk_deltas_all_perts.h5ad`` holds one row per
    (cell line, perturbation): the difference of log1p pseudobulk means from control, and
    the 5-fold assignment in ``obs['test_split']``. Returns an AnnData of changes (not
    cells) with ``obs['perturbation']``, ``obs['context']`` and ``obs['fold']``, and
    ``uns['kind'] = 'changes'``.
    """
    adata = _read(path)

    def pick(given: str | None, candidates: Iterable[str], what: str) -> str:
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
    "labels": read_labels,
}

#: The ``obs`` columns a file of each format must have (checked on download too).
REQUIRED_OBS = {
    "gears": ("condition",),
    "scperturb": ("perturbation",),
    "perturbench": ("condition",),
    "replogle": ("gene",),
    "canonical": ("perturbation", "n_targets"),
    "essential_deltas": ("test_split",),
}

#: Options of :func:`helpers.data.canonical.make_canonical` a reader sets itself (not passable).
_SET_BY_READER = {
    "gears": {"gene_symbol_key"},
    "replogle": {"batch_key", "gene_symbol_key"},
    "scperturb": set(),
    "perturbench": set(),
    "labels": set(),
}


def reader_options(format: str) -> list[str]:
    """The options a format's reader takes (keyword arguments of :func:`read_h5ad` and lines of ``<stem>.reader.yaml``)."""
    if format not in FORMATS:
        raise DataError(f"unknown format {format!r}; use one of {sorted(FORMATS)} or 'auto'")
    params = inspect.signature(FORMATS[format]).parameters
    names = {n for n, p in params.items() if n != "path" and p.kind is not inspect.Parameter.VAR_KEYWORD}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        canonical = inspect.signature(make_canonical).parameters
        names |= {n for n, p in canonical.items() if p.kind is inspect.Parameter.KEYWORD_ONLY} - _SET_BY_READER.get(format, set())
        names.discard("announce_counts")
    return sorted(names)


def options_file(path: str | Path) -> Path:
    """Where the reader options of a screen file are kept: ``<stem>.reader.yaml`` beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}.reader.yaml")


def _options_from_file(path: Path) -> dict:
    import yaml

    side = options_file(path)
    if not side.exists():
        return {}
    try:
        options = yaml.safe_load(side.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise DataError(f"the reader options {side} cannot be read ({type(err).__name__}: {err}); fix the file or delete it.") from None
    if options is None:
        return {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise DataError(
            f"the reader options {side} must be a YAML mapping of option: value (e.g. `control_labels: [NTC]`), not {options!r}"
        )
    return options


#: How each option is written in ``<stem>.reader.yaml``, for the messages.
_YAML_EXAMPLES = {
    "control_labels": "control_labels: [NTC]",
    "counts": 'counts: "yes"',
    "unlabelled": "unlabelled: drop",
    "perturbation_key": "perturbation_key: COLUMN",
    "duplicate_genes": "duplicate_genes: first",
}


def _hint(path: Path, message: str = "") -> str:
    import re

    named = re.search(r"reader option (\w+)", message)
    example = _YAML_EXAMPLES.get(named.group(1) if named else "", _YAML_EXAMPLES["control_labels"])
    return (
        f" Reader options are keyword arguments of load_dataset/read_h5ad in Python; for the notebooks and the command line, "
        f"write them into {options_file(path)} (YAML, e.g. `{example}`), which every reading of {path.name} uses."
    )


def _located(path: Path, err: DataError) -> DataError:
    """The error with the file's name in front (unless it names the file already) and, if it names an option, where options go."""
    message = str(err)
    if path.name not in message:
        message = f"{path.name}: {message}"
    if "reader option" in message:
        message += _hint(path, message)
    return DataError(message)


def detect_format(adata: AnnData, control_labels: Iterable[str] = ()) -> str:
    """Name the format of a raw AnnData from its ``obs`` columns and label values.

    A file whose label column is recognised but which has no control label is refused as such
    (the labels seen and the option ``control_labels``), not as an unknown format.
    """
    obs = adata.obs
    if adata.n_obs == 0:
        raise DataError(
            f"the file holds 0 cells (x {adata.n_vars:,} genes): there is nothing to analyse. Check that it was written "
            "completely and that no filter removed every cell."
        )
    extra = {c.lower() for c in _as_list(control_labels, "control_labels")}
    controls = {c.lower() for c in CONTROL_LABELS} | extra

    def values(col: str) -> set[str]:
        return set(obs[col].astype(str).unique()[:5000])

    def has_control(col: str) -> bool:
        return any(v.strip().lower() in controls for v in values(col))

    if "perturbation" in obs and "n_targets" in obs:
        vals = values("perturbation")
        if all(canonical_perturbation(v) == v for v in vals if v.strip().lower() not in {"", "nan"}):
            return "canonical"
    if "test_split" in obs and not any(k in obs for k in ("condition", "perturbation")):
        return "essential_deltas"
    if "condition" in obs:
        vals = values("condition")
        if "ctrl" in vals or any(v.endswith("+ctrl") or v.startswith("ctrl+") for v in vals):
            return "gears"
        if has_control("condition"):
            return "perturbench"
    if "perturbation" in obs and has_control("perturbation"):
        return "scperturb"
    if "gene" in obs and has_control("gene"):
        return "replogle"
    # a label column of a known format, but no control label in it: say so, not "unknown format"
    for column in ("condition", "perturbation", "gene"):
        if column in obs:
            raise DataError(no_control_message(obs[column].astype(str), column, controls))
    raise DataError(
        f"could not recognise the file's format: none of its obs columns {list(obs.columns)[:12]} is a label column of a "
        f"known format (condition, perturbation, gene; formats {sorted(set(FORMATS) - {'labels'})}). Name the column of "
        "perturbation labels with the reader option perturbation_key='COLUMN' (and style='scperturb' if two genes are "
        "joined by '_'; control_labels=['LABEL'] if the controls are not labelled control, ctrl or non-targeting)."
    )


def read_h5ad(path: str | Path, format: str = "auto", **kwargs) -> AnnData:
    """Read any supported h5ad file into the canonical form.

    Parameters
    ----------
    path
        Path to an ``.h5ad`` file.
    format
        ``"auto"`` (detect; ``"labels"`` when ``perturbation_key`` is given) or one of :data:`FORMATS`.
    **kwargs
        Options of the format's reader (:func:`reader_options`, e.g. ``control_labels=``,
        ``batch_key=``, ``duplicate_genes='first'``). Options written in the file's
        ``<stem>.reader.yaml`` (:func:`options_file`) are used too; these keyword arguments
        take precedence.
    """
    path = Path(path)
    options = {**_options_from_file(path), **kwargs}
    if format == "auto":
        format = options.pop("format", "auto")
    else:
        options.pop("format", None)
    if not isinstance(format, str) or (format != "auto" and format not in FORMATS):
        raise DataError(f"unknown format {format!r}; use one of {sorted(FORMATS)} or 'auto'.{_hint(path)}")
    if format == "auto":
        if "perturbation_key" in options:
            format = "labels"
        else:
            backed = _read(path, backed="r")
            try:
                format = detect_format(backed, options.get("control_labels", ()))
            except DataError as err:
                raise _located(path, err) from None
            finally:
                backed.file.close()
    allowed = reader_options(format)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(f"the {format} reader has no option(s) {unknown}; its options are: {', '.join(allowed) or 'none'}.{_hint(path)}")
    try:
        return FORMATS[format](path, **options)
    except DataError as err:
        raise _located(path, err) from None
