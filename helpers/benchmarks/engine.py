"""The evaluation engine: fit models, predict held-out perturbations, record what each could not do.

Every benchmark chapter runs the same loop, here once:

1. :class:`TrainingData` holds the training part of a split in every form a model may ask
   for (cells, pseudobulk, a table of changes), each built on first use and shared;
2. :func:`run_models` fits every model on the form its tags ask for
   (:class:`helpers.models.ModelTags`), asks it which of the requested perturbations it
   cannot predict and why (``model.unpredictable``), predicts the others, and times both
   steps. A model whose ``fit`` or ``predict`` raises is recorded as failed with the error,
   and the other models go on; only a model tagged ``external`` (a user's predictions file)
   stops the run, because its error is a mistake in the user's input (so does an external model
   that covers none of the perturbations asked for: the error says what it does hold);
3. the returned :class:`Evaluation` holds the predictions, one table of exclusions
   (``model, perturbation, reason``), the failures, the fit log and the **common set**: the
   perturbations that every model with any prediction predicts. Models are compared on it;
   a model that predicts none of the perturbations is left out of it (and said so), so one
   model cannot empty the comparison;
4. :meth:`Evaluation.score` computes the metrics (:func:`helpers.metrics.evaluate`) as tidy
   rows with a ``common_set`` column.

:func:`run_folds` runs the same loop over cross-validation folds and joins the
out-of-fold predictions (the progress-bar chapter).
"""

from __future__ import annotations

import logging
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..data.canonical import CONTROL
from ..data.pseudobulk import as_pseudobulk, pseudobulk
from ..errors import DataError
from ..metrics import evaluate
from ..results import tidy

if TYPE_CHECKING:
    from anndata import AnnData

    from ..models.base import ModelTags

logger = logging.getLogger(__name__)

#: Columns of :attr:`Evaluation.exclusions`.
EXCLUSION_COLUMNS = ["model", "perturbation", "reason"]
#: Columns of :attr:`Evaluation.fits`.
FIT_COLUMNS = ["model", "status", "fit_seconds", "predict_seconds", "epochs", "stopped_because", "predicted", "excluded"]


class TrainingData:
    """The training part of a split, in the form each model asks for.

    Parameters
    ----------
    cells
        Canonical screen of the training cells, control included.
    pseudobulk
        Its pseudobulk, if already computed (e.g. once for a whole screen, then the training
        rows taken); computed from ``cells`` otherwise.
    changes
        A perturbations x genes table of changes from control (no control row), for models
        that learn from changes (the embedding regressors); models that ask for a pseudobulk
        then get these changes with a zero control profile.
    genes
        The evaluated genes. Models are fitted on these genes only, except models tagged
        ``all_genes``, which get every measured gene; predictions are restricted to them.
        None: every gene.
    """

    def __init__(
        self,
        cells: AnnData | None = None,
        *,
        pseudobulk: AnnData | None = None,
        changes: pd.DataFrame | None = None,
        genes: Sequence[str] | None = None,
    ):
        if cells is None and pseudobulk is None and changes is None:
            raise DataError("TrainingData needs the training cells, their pseudobulk or a table of changes.")
        self.cells = cells
        self._pseudobulk = pseudobulk
        self.changes = changes
        self.genes = None if genes is None else list(genes)
        self._views: dict[tuple[str, bool], object] = {}

    @property
    def pseudobulk(self) -> AnnData:
        """Pseudobulk of the training data (built once)."""
        if self._pseudobulk is None:
            if self.cells is not None:
                self._pseudobulk = pseudobulk(self.cells)
            else:
                table = self.changes
                zero = pd.DataFrame(0.0, index=[CONTROL], columns=table.columns)
                self._pseudobulk = as_pseudobulk(pd.concat([table, zero]))
        return self._pseudobulk

    def profiles(self) -> pd.DataFrame:
        """Training perturbations' profiles on the evaluated genes, control left out (perturbations x genes)."""
        pb = self.pseudobulk if self.genes is None else self._view("pseudobulk", True)
        frame = pd.DataFrame(pb.X, index=pb.obs_names.copy(), columns=pb.var_names.copy())
        return frame.drop(index=CONTROL, errors="ignore")

    def for_model(self, tags: ModelTags) -> AnnData | pd.DataFrame:
        """The training data a model with ``tags`` is fitted on (shared between models)."""
        restrict = self.genes is not None and not tags.all_genes
        key = (tags.training_data, restrict)
        if key not in self._views:
            self._views[key] = self._view(tags.training_data, restrict)
        return self._views[key]

    def _view(self, kind: str, restrict: bool):
        if kind == "cells":
            if self.cells is None:
                raise DataError("this model trains on single cells, but the training data hold no cells.")
            return self.cells[:, self.genes].copy() if restrict else self.cells
        if kind == "changes":
            if self.changes is None:
                raise DataError("this model learns from a table of changes, but none was given.")
            return self.changes[self.genes] if restrict else self.changes
        return self.pseudobulk[:, self.genes].copy() if restrict else self.pseudobulk


@dataclass
class Evaluation:
    """What :func:`run_models` returns.

    Attributes
    ----------
    perturbations
        The perturbations asked for, in order.
    predictions
        Model name -> perturbations x genes DataFrame, for every model that predicted at
        least one perturbation (only the perturbations it could predict).
    exclusions
        Tidy table ``model, perturbation, reason`` of every requested perturbation a model
        said it cannot predict.
    failures
        Model name -> why it has no predictions at all (its ``fit`` or ``predict`` raised,
        or it can predict none of the perturbations). These models are left out of the
        common set.
    fits
        One row per model: ``status`` (``"ok"`` or ``"failed"``), fit and predict seconds,
        epochs and stopping reason (models that train iteratively), counts predicted and
        excluded.
    common
        The perturbations (in the order asked for) that every model in ``predictions`` predicts.
    models
        Model name -> the fitted model.
    """

    perturbations: list[str]
    predictions: dict[str, pd.DataFrame]
    exclusions: pd.DataFrame
    failures: dict[str, str]
    fits: pd.DataFrame
    common: list[str]
    models: dict[str, object] = field(default_factory=dict)

    def excluded(self, model: str) -> dict[str, str]:
        """The perturbations ``model`` could not predict, with the reasons."""
        rows = self.exclusions[self.exclusions["model"] == model]
        return dict(zip(rows["perturbation"], rows["reason"]))

    def score(
        self,
        truth: pd.DataFrame,
        control: pd.Series,
        perturbed_mean: pd.Series | None = None,
        genes: Sequence[str] | None = None,
        metrics: Sequence[str] | None = None,
        common_only: bool = False,
        **side_inputs,
    ) -> pd.DataFrame:
        """Metrics of every model on the perturbations it predicted, as tidy rows.

        Parameters
        ----------
        truth
            Observed profiles (perturbations x genes) of at least the predicted perturbations.
        control, perturbed_mean
            The references of the metrics' changes (:func:`helpers.metrics.evaluate`).
        genes
            Evaluate on these genes only (default: the predictions' genes).
        metrics
            Metric names (default: every metric of :data:`helpers.metrics.METRICS`).
        common_only
            Score the common set only (needed by metrics that compare perturbations with
            each other, such as ranks and centroid accuracy, so that every model is ranked
            among the same perturbations).
        **side_inputs
            ``de_genes``, ``deg_weights``: passed to :func:`helpers.metrics.evaluate`.

        Returns
        -------
        DataFrame
            Columns ``model, perturbation, common_set, metric, value``.
        """
        common = set(self.common)
        frames = []
        for name, pred in self.predictions.items():
            perts = [p for p in pred.index if p in common] if common_only else list(pred.index)
            if not perts:
                continue
            cols = list(pred.columns) if genes is None else list(genes)
            ref = None if perturbed_mean is None else perturbed_mean.reindex(cols)
            table = evaluate(
                pred.loc[perts, cols],
                truth.loc[perts, cols],
                control.reindex(cols),
                perturbed_mean=ref,
                metrics=None if metrics is None else list(metrics),
                **side_inputs,
            )
            rows = tidy(table, model=name)
            rows.insert(rows.columns.get_loc("perturbation") + 1, "common_set", rows["perturbation"].isin(common))
            frames.append(rows)
        if not frames:
            return pd.DataFrame(columns=["model", "perturbation", "common_set", "metric", "value"])
        return pd.concat(frames, ignore_index=True)

    def exclusion_counts(self) -> pd.DataFrame:
        """Per model: perturbations asked for, predicted, excluded, and whether it is in the common set."""
        rows = []
        for name in self.fits["model"]:
            n_excluded = int((self.exclusions["model"] == name).sum())
            rows.append(
                {
                    "model": name,
                    "asked": len(self.perturbations),
                    "predicted": len(self.predictions.get(name, ())),
                    "excluded": n_excluded,
                    "in common set": name not in self.failures,
                }
            )
        return pd.DataFrame(rows)

    def report(self, width: int = 100, examples: int = 5) -> str:
        """Which perturbations were left out, by which model and why, and which models failed (wrapped text)."""
        lines = []
        for name in self.fits["model"]:
            if name in self.failures:
                lines.append(
                    textwrap.fill(f"{name} is left out of the comparison: {self.failures[name]}", width=width, subsequent_indent="    ")
                )
                continue
            bad = self.excluded(name)
            if bad:
                shown = "; ".join(f"{p} ({why})" for p, why in list(bad.items())[:examples])
                text = f"{name} cannot predict {len(bad)}: {shown}{' ...' if len(bad) > examples else ''}"
                lines.append(textwrap.fill(text, width=width, subsequent_indent="    "))
        head = f"Evaluated on {len(self.common)} perturbations that every model predicts."
        return head if not lines else head + "\n" + "\n".join(lines)


def _fit_info(model: object) -> dict:
    return {"epochs": getattr(model, "n_epochs_", np.nan), "stopped_because": getattr(model, "stopped_because_", "")}


def run_models(
    models: Mapping[str, object],
    train: TrainingData,
    perturbations: Sequence[str],
    on_model: Callable[[str], None] | None = None,
) -> Evaluation:
    """Fit every model on ``train``, predict the ``perturbations`` it can, and record the rest.

    Parameters
    ----------
    models
        Model name -> unfitted model (``fit``/``unpredictable``/``predict``/``tags``), e.g.
        from :func:`helpers.models.registry.build_models`.
    train
        The training data (:class:`TrainingData`); each model gets the form its tags ask for.
    perturbations
        The perturbations to predict (e.g. a split's test and validation perturbations).
    on_model
        Called with each model's name before it is fitted (e.g. to update a progress bar).

    Returns
    -------
    Evaluation
    """
    perts = [str(p) for p in perturbations]
    if len(set(perts)) != len(perts):
        raise DataError("the perturbations to predict contain duplicates.")
    predictions, exclusions, failures, rows, fitted = {}, [], {}, [], {}
    for name, model in models.items():
        if on_model is not None:
            on_model(name)
        tags = model.tags()
        start = time.perf_counter()
        fit_seconds = predict_seconds = np.nan
        stage = "fitting"
        try:
            model.fit(train.for_model(tags))
            fit_seconds = time.perf_counter() - start
            stage = "predicting"
            bad = dict(model.unpredictable(perts))
            ok = [p for p in perts if p not in bad]
            if tags.external and perts and not ok:
                # a user's predictions that match nothing: say why here, not as a silent left-out model
                raise DataError(
                    f"{name}: the predictions cover none of the {len(perts)} perturbations asked for (e.g. "
                    f"{', '.join(repr(p) for p in perts[:3])}): {next(iter(bad.values()), 'no reason given')}. Check that the "
                    "perturbation names follow the dataset's (canonical 'A' / 'A+B'; GEARS 'A+ctrl' and scPerturb 'A_B' are "
                    "translated) and that the file was made for this dataset and split."
                )
            tick = time.perf_counter()
            pred = model.predict(ok) if ok else None
            predict_seconds = time.perf_counter() - tick
        except Exception as err:
            if tags.external:
                raise  # a user's predictions that do not fit the data are an input error, not a model failure
            if stage == "fitting":
                fit_seconds = time.perf_counter() - start
            failures[name] = f"{stage} failed: {type(err).__name__}: {err}"
            # recorded for Evaluation.report(), which the chapters print; a warning would repeat it as stderr on the page
            logger.info("%s: %s", name, failures[name])
            rows.append(
                {
                    "model": name,
                    "status": "failed",
                    "fit_seconds": fit_seconds,
                    "predict_seconds": predict_seconds,
                    "epochs": np.nan,
                    "stopped_because": "",
                    "predicted": 0,
                    "excluded": 0,
                }
            )
            continue
        fitted[name] = model
        exclusions += [{"model": name, "perturbation": p, "reason": why} for p, why in bad.items()]
        if pred is None:
            example = next(iter(bad.values()), "")
            failures[name] = f"cannot predict any of the {len(perts)} perturbations (e.g. {example})"
        else:
            if train.genes is not None:
                pred = pred.loc[:, train.genes]
            predictions[name] = pred
        rows.append(
            {
                "model": name,
                "status": "ok",
                "fit_seconds": fit_seconds,
                "predict_seconds": predict_seconds,
                **_fit_info(model),
                "predicted": len(ok),
                "excluded": len(bad),
            }
        )
    common = [p for p in perts if all(p in pred.index for pred in predictions.values())]
    return Evaluation(
        perturbations=perts,
        predictions=predictions,
        exclusions=pd.DataFrame(exclusions, columns=EXCLUSION_COLUMNS),
        failures=failures,
        fits=pd.DataFrame(rows, columns=FIT_COLUMNS),
        common=common,
        models=fitted,
    )


@dataclass
class FoldResults:
    """What :func:`run_folds` returns: out-of-fold predictions joined over the folds.

    ``predictions``: model -> every tested perturbation x genes (models that succeeded in
    every fold); ``fold_of``: perturbation -> fold number; ``failures``: model -> reason, for
    models left out because they failed in a fold; ``evaluations``: the per-fold
    :class:`Evaluation` objects (fitted models included, e.g. for leakage checks).
    """

    predictions: dict[str, pd.DataFrame]
    fold_of: pd.Series
    failures: dict[str, str]
    evaluations: list[Evaluation]


def run_folds(
    folds: Sequence,
    models_for_fold: Callable[[int, object], Mapping[str, object]],
    train_for_fold: Callable[[int, object], TrainingData],
    perturbations: Sequence[str] | None = None,
) -> FoldResults:
    """Cross-validation over perturbations with :func:`run_models` in every fold.

    Parameters
    ----------
    folds
        :class:`helpers.data.Split` objects; each fold's test perturbations are predicted
        by models fitted on its training perturbations.
    models_for_fold
        ``(k, split) -> {name: unfitted model}``: fresh models for fold ``k`` (an embedding
        built from the fold's training labels, for example).
    train_for_fold
        ``(k, split) -> TrainingData`` of fold ``k``.
    perturbations
        Restrict each fold's test set to these (default: all of the fold's test perturbations).

    A model that fails (or predicts nothing) in any fold is left out entirely, with the
    fold and reason; a perturbation it could not predict in one fold is an exclusion.
    """
    keep = None if perturbations is None else set(perturbations)
    parts: dict[str, list[pd.DataFrame]] = {}
    failures: dict[str, str] = {}
    fold_of: dict[str, int] = {}
    evaluations = []
    for k, split in enumerate(folds):
        test = [p for p in split.test if keep is None or p in keep]
        if not test:
            continue
        result = run_models(models_for_fold(k, split), train_for_fold(k, split), test)
        evaluations.append(result)
        for name, why in result.failures.items():
            failures.setdefault(name, f"fold {k}: {why}")
        for name, pred in result.predictions.items():
            parts.setdefault(name, []).append(pred)
        fold_of.update({p: k for p in test})
    predictions = {name: pd.concat(frames) for name, frames in parts.items() if name not in failures}
    return FoldResults(predictions, pd.Series(fold_of, name="fold", dtype="int64"), failures, evaluations)


__all__ = ["EXCLUSION_COLUMNS", "FIT_COLUMNS", "Evaluation", "FoldResults", "TrainingData", "run_folds", "run_models"]
