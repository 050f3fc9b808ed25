"""Bring your own predictions: evaluate any model's output beside the suite's baselines.

A predictions file holds one row per perturbation and one column per gene: the predicted
MEAN log-normalised expression (log1p of counts per 10,000), the same unit as the
pseudobulk profiles — not the change from control. Accepted layouts:

* ``.csv`` / ``.tsv`` / ``.parquet``: first column = perturbation name, header = gene symbols;
* ``.h5ad``: ``obs_names`` (or ``obs['perturbation']``/``obs['condition']``) = perturbation
  names, ``var_names`` = gene symbols, ``X`` = predictions.

Perturbation names may be written in any supported convention (``A+ctrl``, ``A_B``, ...);
they are translated to canonical names. If the file predicts changes instead of profiles,
pass ``values="change"`` and the control profile of the training data is added back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.canonical import CONTROL, DataError, canonical_perturbation
from ..data.pseudobulk import control_profile
from .base import PerturbationModel


def read_predictions(path, style: str = "gears") -> pd.DataFrame:
    """Read a predictions file into a perturbations x genes DataFrame with canonical names.

    ``style`` is the naming convention of the perturbation labels; the default ``"gears"``
    also accepts canonical names and ``A+ctrl``. Use ``"scperturb"`` for ``A_B``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"predictions file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        frame = pd.read_csv(path, sep="\t" if suffix != ".csv" else ",", index_col=0)
    elif suffix == ".parquet":
        frame = pd.read_parquet(path)
        if isinstance(frame.index, pd.RangeIndex):  # names stored as the first column
            frame = frame.set_index(frame.columns[0])
    elif suffix == ".h5ad":
        import anndata as ad

        adata = ad.read_h5ad(path)
        labels = next((adata.obs[k] for k in ("perturbation", "condition") if k in adata.obs), adata.obs_names.to_series())
        X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
        frame = pd.DataFrame(X, index=labels.astype(str).to_numpy(), columns=adata.var_names.astype(str))
    else:
        raise DataError(f"cannot read predictions from {path.name}: use .csv, .tsv, .parquet or .h5ad (perturbations x genes).")
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise DataError(f"{path.name} holds no predictions (shape {frame.shape}); expected perturbations x genes.")
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise DataError(
            f"{path.name}: columns {non_numeric[:3]} are not numeric. The file must have the perturbation names in the "
            "first column and one numeric column per gene."
        )
    try:
        names = [canonical_perturbation(p, style) for p in frame.index.astype(str)]
    except DataError as err:
        raise DataError(f"{path.name}: {err}") from err
    frame.index = pd.Index(names, name="perturbation")
    if frame.index.duplicated().any():
        raise DataError(f"{path.name} has several rows for {frame.index[frame.index.duplicated()].unique()[:3].tolist()}.")
    if not frame.columns.is_unique:
        raise DataError(f"{path.name} has duplicate gene columns, e.g. {frame.columns[frame.columns.duplicated()][:3].tolist()}.")
    values = frame.to_numpy(dtype=float)
    if not np.isfinite(values).all():
        bad = frame.index[~np.isfinite(values).all(axis=1)].tolist()
        raise DataError(f"{path.name} has NaN or infinite predictions for {len(bad)} perturbations, e.g. {bad[:3]}.")
    frame.columns = frame.columns.astype(str)
    return frame.astype(float)


class PredictionsFile(PerturbationModel):
    """A model whose predictions were made elsewhere and saved to a file.

    ``fit(train)`` only checks that the file's genes cover the training genes (and keeps
    the training control profile for ``values="change"``); ``predict(perts)`` returns the
    file's rows in the training gene order. Perturbations missing from the file are
    reported by :meth:`unpredictable`.

    Parameters
    ----------
    path
        The predictions file (see module docstring for layouts).
    name
        Model name used in result tables.
    values
        ``"expression"`` (mean log-normalised expression) or ``"change"`` (minus control).
    style
        Naming convention of the perturbation labels in the file.
    """

    def __init__(self, path, name: str = "external", values: str = "expression", style: str = "gears"):
        self.path = path
        self.name = name
        self.values = values
        self.style = style

    def fit(self, train):
        if self.values not in ("expression", "change"):
            raise ValueError(f"values must be 'expression' or 'change', not {self.values!r}")
        table = read_predictions(self.path, self.style)
        genes = pd.Index(train.var_names.astype(str))
        missing = genes.difference(table.columns)
        if len(missing):
            raise DataError(
                f"the predictions in {Path(self.path).name} lack {len(missing)} of the {len(genes)} evaluated genes "
                f"(e.g. {missing[:5].tolist()}). Predict every gene of the dataset (or restrict the evaluation gene set "
                "to the genes you predicted)."
            )
        table = table[genes]
        if self.values == "change":
            table = table + control_profile(train).reindex(genes).to_numpy()
        self.genes_ = genes
        self.table_ = table.drop(index=CONTROL, errors="ignore")
        return self

    def unpredictable(self, perturbations):
        self._check_fitted()
        return {p: f"not in {Path(self.path).name}" for p in perturbations if p not in self.table_.index}

    def _predict(self, perturbations):
        return self.table_.loc[list(perturbations)].copy()
