"""The unseen-single-perturbation benchmark (Ahlmann-Eltze et al. 2025, Fig. 2), step by step.

The notebook ``notebooks/unseen_perturbations.ipynb`` calls these functions for every
dataset and split seed:

1. :func:`fit_predict` fits every model on the training pseudobulk and predicts the held-out
   (test and validation) perturbations it can; what a model cannot predict is returned
   with the reason, never dropped silently;
2. :func:`common_perturbations` is the set every model predicts (the paper's
   ``valid_perts``), on which the comparison is made;
3. :func:`evaluate_predictions` computes the metrics over the evaluation genes and returns
   tidy rows, marking which perturbations belong to the common set;
4. :func:`embedding_overlap` spells out what "P from another screen" can cover.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import pandas as pd

from .data.canonical import CONTROL, DataError, target_genes
from .metrics import evaluate
from .progress import progress
from .results import tidy

#: Metrics of the benchmark: the paper's L2 (main metric) and PearsonΔ against control.
METRICS = ("l2", "pearson_delta_vs_control")

#: Which other screen's PCA gives P for "linear (P from other screen)" (METHODS.md A.3): K562
#: for Adamson and RPE1, RPE1 for K562; the simulated presets mirror the published pairs.
OTHER_SCREEN = {
    "adamson2016": "replogle2022_k562_essential",
    "replogle2022_rpe1_essential": "replogle2022_k562_essential",
    "replogle2022_k562_essential": "replogle2022_rpe1_essential",
    "adamson_like": "replogle_k562_like",
    "replogle_rpe1_like": "replogle_k562_like",
    "replogle_k562_like": "replogle_rpe1_like",
    "adamson_like_full": "replogle_k562_like_full",
    "replogle_rpe1_like_full": "replogle_k562_like_full",
    "replogle_k562_like_full": "replogle_rpe1_like_full",
}


def other_screen(dataset: str, overrides: Mapping[str, str | None] | None = None) -> str | None:
    """The reference screen for ``dataset`` (``overrides`` first, then :data:`OTHER_SCREEN`)."""
    if overrides and dataset in overrides:
        return overrides[dataset]
    return OTHER_SCREEN.get(str(dataset))


def fit_predict(models: Mapping[str, object], train, perturbations: Sequence[str], show_progress: bool = False):
    """Fit every model on ``train`` and predict the ``perturbations`` it can.

    Parameters
    ----------
    models
        Model name -> unfitted model (``fit``/``unpredictable``/``predict``).
    train
        Training screen or pseudobulk (control included).
    perturbations
        Held-out perturbations to predict.

    Returns
    -------
    predictions : dict
        Model name -> perturbations x genes DataFrame (only the predictable perturbations).
    excluded : DataFrame
        Columns ``model, perturbation, reason``: what each model could not predict. A model
        whose ``fit`` raises :class:`DataError` (e.g. no training perturbation it can
        embed) is left out with that message as the reason for every perturbation.
    seconds : dict
        Model name -> wall time of fit + predict.
    """
    perts = list(perturbations)
    predictions, rows, seconds = {}, [], {}
    for name, model in progress(list(models.items()), desc="models", disable=not show_progress):
        start = time.perf_counter()
        try:
            model.fit(train)
        except DataError as err:  # the training data do not allow this model: every perturbation is excluded
            rows += [{"model": name, "perturbation": p, "reason": f"model could not be fitted: {err}"} for p in perts]
            seconds[name] = time.perf_counter() - start
            continue
        bad = model.unpredictable(perts)
        rows += [{"model": name, "perturbation": p, "reason": why} for p, why in bad.items()]
        keep = [p for p in perts if p not in bad]
        if keep:
            predictions[name] = model.predict(keep)
        seconds[name] = time.perf_counter() - start
    return predictions, pd.DataFrame(rows, columns=["model", "perturbation", "reason"]), seconds


def common_perturbations(predictions: Mapping[str, pd.DataFrame], perturbations: Sequence[str], models: Sequence[str] | None = None) -> list[str]:
    """Perturbations (in the order given) that every model of ``models`` (default all) predicted."""
    names = list(predictions) if models is None else list(models)
    out = []
    for p in perturbations:
        if all(m in predictions and p in predictions[m].index for m in names):
            out.append(p)
    return out


def evaluate_predictions(
    predictions: Mapping[str, pd.DataFrame],
    truth: pd.DataFrame,
    control: pd.Series,
    genes: Sequence[str],
    common: Sequence[str],
    split_of: Mapping[str, str] | None = None,
    metrics: Sequence[str] = METRICS,
    **labels,
) -> pd.DataFrame:
    """Tidy metric rows of every model on every perturbation it predicted.

    Metrics use the ``genes`` only (the paper: the 1,000 genes of highest control mean)
    and the control profile of the training data as reference. Columns: ``labels`` (e.g.
    ``dataset``, ``seed``), ``model``, ``perturbation``, ``split`` (test/val, from
    ``split_of``), ``common`` (whether the perturbation is in the common set), ``metric``,
    ``value``.
    """
    genes = list(genes)
    common_set = set(common)
    frames = []
    for name, pred in predictions.items():
        perts = list(pred.index)
        per_pert = evaluate(pred.loc[perts, genes], truth.loc[perts, genes], control[genes], metrics=list(metrics))
        rows = tidy(per_pert, **labels, model=name)
        rows.insert(rows.columns.get_loc("perturbation") + 1, "split",
                    rows["perturbation"].map(split_of or {}).fillna(""))
        rows.insert(rows.columns.get_loc("split") + 1, "common", rows["perturbation"].isin(common_set))
        frames.append(rows)
    if not frames:
        return pd.DataFrame(columns=[*labels, "model", "perturbation", "split", "common", "metric", "value"])
    return pd.concat(frames, ignore_index=True)


def embedding_overlap(target_perturbations: Sequence[str], target_genes_measured: Sequence[str], reference: pd.DataFrame,
                      reference_genes: Sequence[str]) -> pd.Series:
    """What "P from another screen" can cover: counts of shared perturbations and genes.

    Parameters
    ----------
    target_perturbations
        Perturbations of the screen to predict (control excluded).
    target_genes_measured, reference_genes
        Genes measured by the two screens.
    reference
        The reference screen's condition embedding (rows = its perturbations).

    Returns
    -------
    Series
        ``target perturbations``, ``with an embedding in the reference`` (perturbed in both
        screens), ``without`` (cannot be predicted by this model), ``reference
        perturbations``, ``target genes``, ``reference genes``, ``genes measured in both``.
    """
    perts = [p for p in target_perturbations if p != CONTROL]
    ref_index = set(reference.index)
    covered = [p for p in perts if p in ref_index or (len(target_genes(p)) > 1 and all(g in ref_index for g in target_genes(p)))]
    shared_genes = set(target_genes_measured) & set(reference_genes)
    return pd.Series(
        {
            "target perturbations": len(perts),
            "with an embedding in the reference": len(covered),
            "without (not perturbed in the reference)": len(perts) - len(covered),
            "reference perturbations": len([p for p in reference.index if p != CONTROL]),
            "target genes": len(set(target_genes_measured)),
            "reference genes": len(set(reference_genes)),
            "genes measured in both": len(shared_genes),
        },
        name="count",
    )
