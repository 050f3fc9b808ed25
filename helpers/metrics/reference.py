"""Reference profiles and dataset-level descriptors.

* :func:`perturbed_mean` — the mean of the training perturbations' profiles, the
  "perturbed reference" of Systema and of Miller et al.;
* :func:`systematic_variation` — Systema's score of how much all perturbations move the
  cells the same way (high score: the mean baseline looks good under control-referenced
  metrics).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from ..data.canonical import CONTROL
from ..data.pseudobulk import pseudobulk
from ..errors import DataError
from ._inputs import _as_frame, _check_numeric, _examples

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)


def perturbed_mean(train_profiles: pd.DataFrame, weighting: str = "perturbation", n_cells: pd.Series | None = None) -> pd.Series:
    """Mean profile of the training perturbations: the perturbed reference.

    ``weighting="perturbation"`` (default; Systema's ``average_of_perturbation_centroids``,
    Miller et al.'s dataset mean):

    .. math:: \\bar{x}_{pert} = \\frac{1}{|T|} \\sum_{p \\in T} \\bar{x}_p

    ``weighting="cell"`` (the mean of all perturbed training cells, Systema's "non-control
    mean" baseline): :math:`\\sum_p n_p \\bar{x}_p / \\sum_p n_p`.

    Parameters
    ----------
    train_profiles
        Training perturbations x genes, mean log-normalised expression (e.g.
        ``profiles(split.subset(adata, "train"), include_control=False)``). It must hold the
        training perturbations only: using held-out perturbations here leaks test data.
        A ``"control"`` row is dropped (control is not a perturbation), with a log message.
    weighting
        ``"perturbation"`` or ``"cell"``.
    n_cells
        Cells per perturbation (Series indexed by perturbation), needed for ``"cell"``
        weighting, e.g. ``pseudobulk(train).obs["n_cells"]``.

    Returns
    -------
    Series
        Indexed by gene, named ``"perturbed_mean"``.
    """
    frame = _as_frame(train_profiles, "train_profiles")
    if CONTROL in frame.index:
        logger.info("perturbed_mean: dropped the %r row; the perturbed mean averages perturbations only.", CONTROL)
        frame = frame.drop(index=CONTROL)
    if frame.shape[0] == 0:
        raise DataError("train_profiles holds no perturbations; the perturbed mean needs at least one.")
    values = _check_numeric(frame, "train_profiles")
    if weighting == "perturbation":
        mean = values.mean(axis=0)
    elif weighting == "cell":
        if n_cells is None:
            raise DataError("weighting='cell' needs n_cells (cells per perturbation, e.g. pseudobulk(train).obs['n_cells']).")
        missing = frame.index.difference(pd.Index(n_cells.index), sort=False)
        if len(missing):
            raise DataError(f"n_cells lacks {len(missing)} training perturbations ({_examples(missing)}).")
        w = n_cells.reindex(frame.index).to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise DataError("n_cells must be non-negative finite counts with a positive total.")
        mean = w @ values / w.sum()
    else:
        raise ValueError(f"weighting must be 'perturbation' or 'cell', not {weighting!r}")
    return pd.Series(mean, index=frame.columns.copy(), name="perturbed_mean")


class SystematicVariation(NamedTuple):
    """Result of :func:`systematic_variation`: the dataset score and the per-perturbation cosines."""

    score: float
    cosines: pd.Series


def _row_cosines(A: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Cosine of every row of ``A`` with ``v``; NaN where a norm is zero."""
    norms = np.linalg.norm(A, axis=1) * np.linalg.norm(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (A @ v) / norms
    out[norms == 0] = np.nan
    return np.clip(out, -1.0, 1.0)


def systematic_variation(changes: pd.DataFrame) -> SystematicVariation:
    """Systema's systematic-variation score of a screen.

    .. math::

        \\bar{\\Delta} = \\frac{1}{N} \\sum_{q} \\Delta_q, \\qquad
        c_p = \\cos(\\Delta_p, \\bar{\\Delta}), \\qquad
        \\text{score} = \\frac{1}{N} \\sum_p c_p

    with :math:`\\Delta_p = \\bar{x}_p - \\bar{x}_{control}` and an unweighted mean over
    perturbations (so :math:`\\bar{\\Delta}` = average of centroids − control mean, Systema's
    ``avg_shift``). The score is near 1 when every perturbation shifts expression in the
    same direction, near 0 when the shifts are unrelated.

    Source: Viñas Torné et al., Nature Biotechnology 2025 (Systema),
    ``compute_shift_similarities`` in github.com/mlbio-epfl/systema. Reported values:
    Adamson ≈0.76, Norman ≈0.50, Replogle K562 ≈0.32, RPE1 ≈0.56.

    Parameters
    ----------
    changes
        Perturbations x genes table of :math:`\\Delta_p` (``helpers.data.changes(adata)``), all
        perturbations of the screen, no control row.

    Returns
    -------
    SystematicVariation
        ``score`` (float; mean of the defined cosines) and ``cosines`` (Series indexed by
        perturbation, named ``"systematic_variation_cosine"``). A perturbation with an
        all-zero change has an undefined cosine: it is NaN, left out of the mean, and
        logged as a warning.
    """
    frame = _as_frame(changes, "changes")
    if CONTROL in frame.index:
        raise DataError(f"changes has a {CONTROL!r} row: pass the changes from control (helpers.data.changes(adata)), not the profiles.")
    if frame.shape[0] == 0:
        raise DataError("changes holds no perturbations.")
    D = _check_numeric(frame, "changes")
    cos = _row_cosines(D, D.mean(axis=0))
    undefined = np.isnan(cos)
    if undefined.all():
        raise DataError("every change is zero (or the mean change is zero): systematic variation is undefined.")
    if undefined.any():
        logger.warning(
            "systematic_variation: %d perturbations have no change from control (%s); their cosine is undefined and left out of the score.",
            undefined.sum(),
            _examples(frame.index[undefined]),
        )
    cosines = pd.Series(cos, index=frame.index.copy(), name="systematic_variation_cosine")
    return SystematicVariation(score=float(np.nanmean(cos)), cosines=cosines)


@dataclass
class References:
    """Reference profiles computed on the training split (Systema computes them per seed).

    ``control``: mean of the control cells; ``perturbed_mean``: average of the training
    perturbations' centroids (Systema's ``pert_mean``, perturbation-weighted);
    ``cell_weighted_mean``: mean of all perturbed training cells (what Systema's
    non-control-mean baseline predicts); ``train_profiles`` and ``n_cells`` per training
    perturbation.
    """

    control: pd.Series
    perturbed_mean: pd.Series
    cell_weighted_mean: pd.Series
    train_profiles: pd.DataFrame
    n_cells: pd.Series


def training_references(train: AnnData) -> References:
    """Control mean, perturbed mean and cell-weighted perturbed mean of the training data.

    ``train``: the training cells (control included) or their pseudobulk.

    .. math::

        \\bar x_{pert} = \\frac{1}{|T|}\\sum_{p \\in T} \\bar x_p, \\qquad
        \\bar x_{cells} = \\frac{\\sum_{p \\in T} n_p \\bar x_p}{\\sum_{p \\in T} n_p}
    """
    pb = pseudobulk(train)
    table = pd.DataFrame(pb.X, index=pb.obs_names.copy(), columns=pb.var_names.copy())
    if CONTROL not in table.index:
        raise DataError("the training split has no control cells.")
    perts = table.drop(index=CONTROL)
    if perts.empty:
        raise DataError("the training split has no perturbations.")
    n = pb.obs["n_cells"].drop(index=CONTROL).astype(float)
    w = n.reindex(perts.index).to_numpy()
    return References(
        control=table.loc[CONTROL].rename("control"),
        perturbed_mean=pd.Series(perts.to_numpy().mean(axis=0), index=perts.columns.copy(), name="perturbed_mean"),
        cell_weighted_mean=pd.Series(w @ perts.to_numpy() / w.sum(), index=perts.columns.copy(), name="cell_weighted_mean"),
        train_profiles=perts,
        n_cells=n,
    )
