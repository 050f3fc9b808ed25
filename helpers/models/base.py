"""The interface every model of the suite shares.

Following scikit-learn: hyperparameters go to ``__init__`` and are stored unchanged;
``fit(train)`` learns from a canonical screen (cells, or a pseudobulk made by
:func:`helpers.data.pseudobulk`) and returns ``self``; ``predict(perturbations)``
returns a perturbations x genes DataFrame of predicted mean log-normalised expression
(not the change: subtract the control profile for that). Learned state lives in
attributes ending in ``_`` and is replaced by every ``fit`` call, so nothing leaks
between calls.

What a model needs is said by its **tags** (:class:`ModelTags`, in the spirit of
scikit-learn's estimator tags), never by its name or class: the evaluation engine
(:mod:`helpers.benchmarks.engine`) reads ``model.tags()`` to decide whether to hand it
cells or a pseudobulk, all genes or only the evaluated ones, and whether its errors are
the model's (recorded, the other models go on) or the user's (raised).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

import pandas as pd

from ..data.canonical import canonical_perturbation
from ..errors import DataError

if TYPE_CHECKING:
    from anndata import AnnData


class NotFittedError(RuntimeError):
    """Raised when ``predict`` is called before ``fit``."""


#: What ``fit`` can learn from.
TRAINING_DATA = ("pseudobulk", "cells", "changes")


@dataclass(frozen=True)
class ModelTags:
    """What a model needs and can do.

    Attributes
    ----------
    training_data
        What ``fit`` learns from: ``"pseudobulk"`` (one mean profile per training
        perturbation, control included), ``"cells"`` (the single cells) or ``"changes"``
        (a perturbations x genes table of changes from control, no control row).
    all_genes
        Fit on every measured gene, not only the evaluated ones: the model embeds a target
        gene by that gene's row of a PCA over genes, so a target outside the evaluated
        genes would otherwise have no embedding.
    embeds_targets
        Predicts from an embedding of the target gene(s); a perturbation whose target has
        no embedding is unpredictable (and says so).
    predicts_doubles
        Can predict two-gene perturbations.
    environment
        Name of another Python environment the model runs in (e.g. ``"gears"``), or None.
    slow
        Trains for seconds to minutes (the chapters can switch such models off).
    external
        Its predictions were made elsewhere (a file): an error in ``fit`` is a mistake in
        the user's input and is raised, never recorded as the model's failure.
    """

    training_data: str = "pseudobulk"
    all_genes: bool = False
    embeds_targets: bool = False
    predicts_doubles: bool = True
    environment: str | None = None
    slow: bool = False
    external: bool = False

    def __post_init__(self):
        if self.training_data not in TRAINING_DATA:
            raise ValueError(f"training_data must be one of {TRAINING_DATA}, not {self.training_data!r}")


class PerturbationModel:
    """Base class: parameter handling, input checks and the ``unpredictable`` contract.

    Subclasses implement ``fit`` and ``_predict``. A model that cannot predict some
    perturbations (e.g. the additive model without both singles, or an embedding model
    whose target gene has no embedding) overrides :meth:`unpredictable` to say which and
    why; :meth:`predict` then refuses them with that reason.
    """

    #: Short name used in result tables; subclasses override.
    name = "model"
    #: Tags shared by every instance; :meth:`tags` may refine them from the hyperparameters.
    _tags = ModelTags()

    def tags(self) -> ModelTags:
        """What this model needs and can do (:class:`ModelTags`); may depend on its hyperparameters."""
        return self._tags

    @classmethod
    def _param_names(cls) -> list[str]:
        if cls.__init__ is object.__init__:
            return []
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        params = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in params if p.name != "self" and p.kind in kinds]

    def get_params(self) -> dict:
        """Hyperparameters as given to ``__init__``."""
        return {k: getattr(self, k) for k in self._param_names()}

    def clone(self) -> Self:
        """A new, unfitted model with the same hyperparameters."""
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- contract ---------------------------------------------------------------------
    def fit(self, train: AnnData | pd.DataFrame) -> Self:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, perturbations: list[str]) -> pd.DataFrame:  # pragma: no cover - abstract
        raise NotImplementedError

    def unpredictable(self, perturbations: Sequence[str]) -> dict[str, str]:
        """Perturbations this fitted model cannot predict, mapped to the reason."""
        self._check_fitted()
        return {}

    def predict(self, perturbations: Sequence[str]) -> pd.DataFrame:
        """Predicted mean log-normalised expression, perturbations x genes.

        Raises :class:`helpers.errors.DataError` naming the perturbations the model cannot
        predict; call :meth:`unpredictable` first to exclude them explicitly.
        """
        self._check_fitted()
        perts = _check_names(perturbations)
        bad = self.unpredictable(perts)
        if bad:
            listed = "; ".join(f"{p}: {why}" for p, why in list(bad.items())[:5])
            raise DataError(
                f"{type(self).__name__} cannot predict {len(bad)} of the requested perturbations ({listed}"
                f"{' ...' if len(bad) > 5 else ''}). Exclude them, e.g. with model.unpredictable(perts)."
            )
        out = self._predict(perts)
        out.index.name = "perturbation"
        out.columns.name = "gene"
        return out

    def _check_fitted(self) -> None:
        if getattr(self, "genes_", None) is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(train) first.")


def _check_names(perturbations: Sequence[str]) -> list[str]:
    if isinstance(perturbations, str):
        raise TypeError("pass a list of perturbation names, not a single string")
    perts = list(perturbations)
    for p in perts:
        if canonical_perturbation(p) != p:
            raise DataError(f"{p!r} is not a canonical perturbation name (expected {canonical_perturbation(p)!r}).")
    if len(set(perts)) != len(perts):
        raise DataError("the perturbation list has duplicates")
    return perts
