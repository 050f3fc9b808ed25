"""Models that predict unseen perturbations from prior knowledge about the target gene.

:class:`GORandomForest` is the "Random Forest + GO" baseline: a random forest maps the
Gene Ontology embedding of the perturbed gene (:func:`helpers.knowledge.go_embedding`) to
the principal-component scores of the perturbation's change from control.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Self

import numpy as np
import pandas as pd

from ..data.canonical import CONTROL, target_genes
from ..data.pseudobulk import pseudobulk
from ..errors import DataError
from ..knowledge.go_features import go_embedding
from .base import ModelTags, PerturbationModel

if TYPE_CHECKING:
    from anndata import AnnData

DOUBLE_REASON = "double perturbation: the GO random forest models single-gene perturbations only"


class GORandomForest(PerturbationModel):
    """Random forest on GO features of the target gene, predicting the change profile.

    Fit, on the single perturbations ``p`` of the training data whose gene ``g_p`` has a
    GO embedding:

    1. changes ``Δ_p = x̄_p − x̄_c`` (pseudobulk minus the control profile);
    2. PCA of the ``Δ_p`` (centred on their mean ``μ``): scores ``Z = (Δ − μ) V`` with
       ``V`` the first ``n_pcs`` loadings (at most the number of training perturbations);
    3. a multi-output random forest ``f`` from features ``e(g_p)`` (the
       ``go_components``-dimensional GO embedding, :func:`go_embedding`, ``"lsa"``) to ``Z``.

    Predict: ``ŷ_p = x̄_c + μ + f(e(g_p)) Vᵀ``, the mean log-normalised expression.

    Double perturbations are not modelled: training doubles are ignored and listed in
    ``excluded_``, and :meth:`unpredictable` lists requested doubles. Perturbations whose
    gene has no GO embedding (no GO terms) are excluded from training and unpredictable.

    Parameters
    ----------
    go_components
        Dimension of the GO embedding used as features.
    n_pcs
        Principal components of the change profiles the forest predicts.
    n_estimators, max_features, min_samples_leaf, bootstrap
        Passed to :class:`sklearn.ensemble.RandomForestRegressor`.
    seed
        Random state of the forest (the GO embedding itself is fixed).
    n_jobs
        Threads of the forest; results do not depend on it.
    """

    name = "random forest + GO"
    _tags = ModelTags(embeds_targets=True, predicts_doubles=False)

    def __init__(
        self,
        go_components: int = 32,
        n_pcs: int = 10,
        n_estimators: int = 500,
        max_features: float | str | None = 1.0,
        min_samples_leaf: int = 1,
        bootstrap: bool = True,
        seed: int = 0,
        n_jobs: int = 1,
    ):
        self.go_components = go_components
        self.n_pcs = n_pcs
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.bootstrap = bootstrap
        self.seed = seed
        self.n_jobs = n_jobs

    def _embed(self, genes: Sequence[str]) -> pd.DataFrame:
        return go_embedding(list(genes), n_components=self.go_components, method="lsa", seed=0)

    def fit(self, train: AnnData) -> Self:
        from sklearn.decomposition import PCA
        from sklearn.ensemble import RandomForestRegressor

        if self.n_pcs < 1:
            raise ValueError("n_pcs must be at least 1")
        pb = pseudobulk(train)
        table = pd.DataFrame(pb.X, index=pb.obs_names.copy(), columns=pb.var_names.copy())
        if CONTROL not in table.index:
            raise DataError("the training data have no control cells; the change profiles need them as reference.")
        control = table.loc[CONTROL]
        perts = [p for p in table.index if p != CONTROL]
        excluded = {p: DOUBLE_REASON for p in perts if len(target_genes(p)) != 1}
        singles = [p for p in perts if p not in excluded]
        emb = self._embed(singles) if singles else pd.DataFrame()
        for p, why in emb.attrs.get("not_embedded", {}).items():
            excluded[p] = f"target gene {p} cannot be embedded ({why})"
        used = [p for p in singles if p not in excluded]
        if len(used) < 2:
            raise DataError(
                f"the GO random forest needs at least 2 training single perturbations with GO terms, found {len(used)}"
                f" (excluded: {dict(list(excluded.items())[:5])})."
            )
        delta = table.loc[used] - control
        n_pcs = min(self.n_pcs, len(used), delta.shape[1])
        pca = PCA(n_components=n_pcs, svd_solver="full")
        scores = pca.fit_transform(delta.to_numpy())
        forest = RandomForestRegressor(
            n_estimators=self.n_estimators,
            max_features=self.max_features,
            min_samples_leaf=self.min_samples_leaf,
            bootstrap=self.bootstrap,
            random_state=self.seed,
            n_jobs=self.n_jobs,
        )
        # one component: pass a 1-d target, as scikit-learn expects
        forest.fit(emb.loc[used].to_numpy(), scores if n_pcs > 1 else scores.ravel())
        self.genes_ = table.columns.copy()
        self.control_ = control.copy()
        self.train_perturbations_ = pd.Index(used)
        self.excluded_ = excluded
        self.pca_ = pca
        self.forest_ = forest
        return self

    def unpredictable(self, perturbations: Sequence[str]) -> dict[str, str]:
        self._check_fitted()
        out = {}
        singles = []
        for p in perturbations:
            if p == CONTROL:
                continue
            if len(target_genes(p)) != 1:
                out[p] = DOUBLE_REASON
            else:
                singles.append(p)
        if singles:
            for p, why in self._embed(singles).attrs["not_embedded"].items():
                out[p] = f"target gene {p} has no GO embedding ({why})"
        return {p: out[p] for p in perturbations if p in out}

    def _predict(self, perturbations: list[str]) -> pd.DataFrame:
        rows = np.tile(self.control_.to_numpy(), (len(perturbations), 1))
        singles = [i for i, p in enumerate(perturbations) if p != CONTROL]
        if singles:
            emb = self._embed([perturbations[i] for i in singles])
            scores = self.forest_.predict(emb.to_numpy())
            rows[singles] += self.pca_.inverse_transform(scores.reshape(len(singles), -1))
        return pd.DataFrame(rows, index=pd.Index(perturbations), columns=self.genes_)
