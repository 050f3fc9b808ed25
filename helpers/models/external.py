"""Bring your own predictions: evaluate any model's output beside the suite's baselines.

A predictions file holds one row per perturbation and one column per gene: the predicted
MEAN log-normalised expression (log1p of counts per 10,000), the same unit as the
pseudobulk profiles — not the change from control; or predicted cells, which are averaged.
Accepted layouts (:mod:`helpers.models.predictions`):

* ``.csv`` / ``.tsv`` / ``.parquet``: first column = perturbation name, header = gene symbols
  (read as written: a gene repeated in the header is refused);
* ``.h5ad`` of perturbations: ``obs_names`` (or a perturbation column such as
  ``obs['perturbation']``/``obs['condition']``) = perturbation names, ``var_names`` = gene symbols;
* ``.h5ad`` of predicted cells (canonical or cell-eval layout, e.g. ``obs['target_gene']``):
  each perturbation's cells are averaged (raw counts are normalised first).

Perturbation names may be written in any supported convention (``A+ctrl``, ``A_B``, ...);
they are translated to canonical names. If the file predicts changes instead of profiles,
pass ``values="change"`` and the control profile of the training data is added back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Self

import pandas as pd

from ..data.canonical import CONTROL
from ..data.pseudobulk import control_profile
from ..errors import DataError
from .base import ModelTags, PerturbationModel
from .predictions import read_predictions_file

if TYPE_CHECKING:
    from anndata import AnnData


def read_predictions(path: str | Path, style: str = "gears", values: str = "expression") -> pd.DataFrame:
    """Read a predictions file into a perturbations x genes DataFrame with canonical names.

    Any layout of :func:`helpers.models.predictions.read_predictions_file` is read: a table
    (one row per perturbation) as it is, predicted cells as their mean profiles. A control row
    (or the predicted control cells' mean) is kept as the row ``control``. ``style`` is the
    naming convention of the perturbation labels; the default ``"gears"`` also accepts
    canonical names and ``A+ctrl``. Use ``"scperturb"`` for ``A_B``. ``values`` is
    ``"expression"`` (log-normalised; predicted cells may also hold raw counts, which are
    normalised) or ``"change"`` (a table of changes from control).
    """
    if values not in ("expression", "change"):
        raise DataError(f"values must be 'expression' or 'change', not {values!r}")
    found = read_predictions_file(path, values="auto" if values == "expression" else "change", style=style)
    frame = found.profiles
    if found.control is not None:
        frame = pd.concat([frame, found.control.to_frame().T])
        frame.index.name = "perturbation"
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

    _tags = ModelTags(external=True)

    def __init__(self, path: str | Path, name: str = "external", values: str = "expression", style: str = "gears"):
        self.path = path
        self.name = name
        self.values = values
        self.style = style

    def fit(self, train: AnnData) -> Self:
        if self.values not in ("expression", "change"):
            raise ValueError(f"values must be 'expression' or 'change', not {self.values!r}")
        table = read_predictions(self.path, self.style, self.values)
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

    def unpredictable(self, perturbations: Sequence[str]) -> dict[str, str]:
        self._check_fitted()
        held = self.table_.index
        missing = [p for p in perturbations if p not in held]
        reason = f"not in {Path(self.path).name}"
        if missing and len(missing) == len(perturbations):
            # none matches: show what the file does hold, the usual cause is a naming convention
            shown = ", ".join(repr(p) for p in held[:5]) + (", ..." if len(held) > 5 else "")
            reason += f" (which predicts {len(held)} other perturbations: {shown})"
        return {p: reason for p in missing}

    def _predict(self, perturbations: list[str]) -> pd.DataFrame:
        return self.table_.loc[list(perturbations)].copy()
