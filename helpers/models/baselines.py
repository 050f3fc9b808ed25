"""Deliberately simple baselines that the published benchmarks found hard to beat.

All of them work on pseudobulk profiles (``x̄_p``, mean log-normalised expression of
perturbation ``p``) and the control profile ``x̄_c``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Self

import numpy as np
import pandas as pd

from ..data.canonical import CONTROL, target_genes
from ..data.pseudobulk import pseudobulk
from ..errors import DataError
from .base import PerturbationModel

if TYPE_CHECKING:
    from anndata import AnnData


class _ProfileModel(PerturbationModel):
    """Shared fit step: store the training profiles and the control profile."""

    def fit(self, train: AnnData) -> Self:
        pb = pseudobulk(train)
        table = pd.DataFrame(pb.X, index=pb.obs_names.copy(), columns=pb.var_names.copy())
        if CONTROL not in table.index:
            raise DataError("the training data have no control cells; every baseline needs them as reference.")
        self.genes_ = table.columns.copy()
        self.control_ = table.loc[CONTROL].copy()
        self.train_profiles_ = table.drop(index=CONTROL)
        self.train_n_cells_ = pb.obs["n_cells"].drop(index=CONTROL).astype(float)
        self._fit_extra()
        return self

    def _fit_extra(self) -> None:
        pass

    def _cell_weighted_mean(self) -> pd.Series:
        """Mean of all perturbed training cells: ``Σ_p n_p x̄_p / Σ_p n_p``."""
        w = self.train_n_cells_.reindex(self.train_profiles_.index).to_numpy()
        return pd.Series(w @ self.train_profiles_.to_numpy() / w.sum(), index=self.genes_)

    def _repeat(self, profile: pd.Series, perturbations: list[str]) -> pd.DataFrame:
        values = np.tile(profile.to_numpy(), (len(perturbations), 1))
        return pd.DataFrame(values, index=pd.Index(perturbations), columns=self.genes_)


class NoChange(_ProfileModel):
    """Predict the control profile for every perturbation: ``ŷ_p = x̄_c``.

    Its PearsonΔ against control is undefined (the predicted change is all zeros).
    """

    name = "no change"

    def _predict(self, perturbations: list[str]) -> pd.DataFrame:
        return self._repeat(self.control_, perturbations)


class MeanBaseline(_ProfileModel):
    """Predict the same average perturbed profile for every perturbation.

    ``weighting="perturbation"``: ``ŷ = (1/|T|) Σ_{p ∈ T} x̄_p``, the mean of the training
    perturbations' centroids (Ahlmann-Eltze et al.; Systema's ``pert_mean``).
    ``weighting="cell"``: ``ŷ = Σ_p n_p x̄_p / Σ_p n_p``, the mean of all perturbed training
    cells (Systema's "non-control mean"). The weighting decides whether PearsonΔ against
    the perturbation-weighted perturbed mean is exactly 0 for this baseline.

    ``include_control=True`` adds the control profile as one more "training condition",
    as the published R code of Ahlmann-Eltze et al. does (perturbation weighting only).
    """

    name = "mean"

    def __init__(self, weighting: str = "perturbation", include_control: bool = False):
        self.weighting = weighting
        self.include_control = include_control

    def _fit_extra(self):
        if self.weighting not in ("perturbation", "cell"):
            raise ValueError(f"weighting must be 'perturbation' or 'cell', not {self.weighting!r}")
        perts = self.train_profiles_
        if perts.empty:
            raise DataError("the training data hold no perturbed cells; the mean baseline needs some.")
        if self.weighting == "cell":
            if self.include_control:
                raise ValueError("include_control is defined for perturbation weighting only")
            self.mean_profile_ = self._cell_weighted_mean()
        else:
            rows = perts.to_numpy()
            if self.include_control:
                rows = np.vstack([rows, self.control_.to_numpy()])
            self.mean_profile_ = pd.Series(rows.mean(axis=0), index=self.genes_)

    def _predict(self, perturbations: list[str]) -> pd.DataFrame:
        return self._repeat(self.mean_profile_, perturbations)


class Additive(_ProfileModel):
    """Sum of the single-perturbation changes: ``ŷ_AB = x̄_c + (x̄_A − x̄_c) + (x̄_B − x̄_c)``.

    For a single perturbation seen in training it returns that perturbation's profile.
    It cannot predict a double unless both singles are in the training data.
    """

    name = "additive"

    def unpredictable(self, perturbations: Sequence[str]) -> dict[str, str]:
        self._check_fitted()
        seen = set(self.train_profiles_.index)
        out = {}
        for p in perturbations:
            missing = [g for g in target_genes(p) if g not in seen]
            if p == CONTROL:
                continue
            if missing:
                out[p] = f"single perturbation {', '.join(missing)} not in training data"
        return out

    def _predict(self, perturbations: list[str]) -> pd.DataFrame:
        ctrl = self.control_.to_numpy()
        rows = []
        for p in perturbations:
            row = ctrl.copy()
            for g in target_genes(p):
                row += self.train_profiles_.loc[g].to_numpy() - ctrl
            rows.append(row)
        return pd.DataFrame(np.array(rows), index=pd.Index(perturbations), columns=self.genes_)


class MatchingMean(_ProfileModel):
    """Systema's matching mean: average the training profiles of the targeted genes.

    ``ŷ_AB = (m_A + m_B) / 2`` where ``m_g = x̄_g`` if single ``g`` was in training and the
    cell-weighted non-control mean otherwise (Viñas Torné et al. 2025,
    ``run_matching-mean.py``). For a single, ``ŷ_A = m_A``.
    """

    name = "matching mean"

    def _fit_extra(self):
        self.fallback_ = self._cell_weighted_mean()

    def _predict(self, perturbations: list[str]) -> pd.DataFrame:
        rows = []
        for p in perturbations:
            parts = [self.train_profiles_.loc[g] if g in self.train_profiles_.index else self.fallback_ for g in target_genes(p)]
            rows.append(np.mean([r.to_numpy() for r in parts], axis=0) if parts else self.control_.to_numpy())
        return pd.DataFrame(np.array(rows), index=pd.Index(perturbations), columns=self.genes_)
