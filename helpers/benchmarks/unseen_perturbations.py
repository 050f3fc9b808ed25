"""The unseen-single-perturbation benchmark (Ahlmann-Eltze et al. 2025, Fig. 2), step by step.

The notebook ``notebooks/unseen_perturbations.ipynb`` calls these functions for every
dataset and split seed:

1. :class:`Screens` loads each screen once and keeps its single perturbations;
2. :func:`reference_embeddings` and :func:`go_embeddings` build the perturbation embeddings
   of the "P from another screen" and "P from GO" models, with what they cover;
3. :func:`run_benchmark` builds the models of the registry for each dataset and seed, and
   the evaluation engine (:func:`helpers.benchmarks.engine.run_models`) fits them on the
   training pseudobulk (cells for models that train on cells), predicts the held-out (test
   and validation) perturbations each can, records what each cannot predict with the
   reason, and gives the common set every model predicts (the paper's ``valid_perts``);
   the metrics are computed on the evaluation genes;
4. tables beside the published numbers, the ratio to the mean (Fig. 2c) and the
   sentences of the conclusion, computed from the run's numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..console import progress_bar
from ..data.canonical import CONTROL, target_genes
from ..data.genesets import top_expressed_genes
from ..data.pseudobulk import pseudobulk
from ..data.splits import gears_simulation_split
from ..errors import DataError
from ..models.precomputed import provenance_table, with_gears
from ..models.registry import build_model, build_models, check_model_names, model_tags
from ..params import SEED_MAX, Param, Schema
from ..published.ahlmann_eltze_singles import TABLES as PUBLISHED
from ..published.ahlmann_eltze_singles import published_for
from ..stats.bootstrap import ratio_to_reference
from .engine import TrainingData, run_models

if TYPE_CHECKING:
    from ..data.splits import Split

NAME = "unseen_perturbations"

#: Metrics of the benchmark: the paper's L2 (main metric) and PearsonΔ against control.
METRICS = ("l2", "pearson_delta_vs_control")

#: Registry models the chapter can run.
MODELS = (
    "no change",
    "mean",
    "mean (perturbations)",
    "linear",
    "linear (random G)",
    "linear (random P)",
    "linear (P from other screen)",
    "linear (P from GO)",
    "random forest + GO",
    "MLP (torch)",
    "GEARS",
)

#: The model every ratio is taken against.
REFERENCE_MODEL = "mean"

#: Which other screen's PCA gives P for "linear (P from other screen)" (Ahlmann-Eltze et al.): K562
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

#: How GEARS enters the chapter (parameter ``gears``).
GEARS_CHOICES = ("precomputed", "live", "off")
GEARS_MEANING = (
    'GEARS: "precomputed" (the shipped predictions of scripts/make_gears_predictions.py, used when they were made '
    'for this run\'s data and split), "live" (trained in this run; needs its environment) or "off"'
)

PARAMETERS = Schema(
    (
        Param(
            "datasets",
            "strs",
            ["adamson_like", "replogle_k562_like", "replogle_rpe1_like"],
            "registry names or .h5ad paths, run one after the other",
        ),
        Param("seeds", "ints", [1, 2], "seeds of the GEARS simulation split", minimum=0, maximum=SEED_MAX),
        Param("n_genes", "int", 1000, "evaluation genes: the n genes with the highest control mean", minimum=1),
        Param(
            "models",
            "strs",
            [m for m in MODELS if m not in ("mean (perturbations)", "GEARS")],
            "models to run (GEARS: see gears)",
            choices=MODELS,
        ),
        Param("gears", "str", "precomputed", GEARS_MEANING, choices=GEARS_CHOICES),
        Param("n_components", "int", 10, "K, dimension of the linear model's PCA embeddings (published: 10)", minimum=1),
        Param("ridge", "float", 0.1, "lambda, ridge penalty of the linear model on both sides (published: 0.1)", minimum=0),
        Param(
            "reference_datasets",
            "any",
            "auto",
            'screen whose PCA gives P for "P from other screen": "auto" (K562 for Adamson and RPE1, RPE1 for K562) or {dataset: reference}',
            none=True,
        ),
        Param("go_components", "int", 2, "dimension of the GO-graph adjacency embedding used as P (published: 2)", minimum=1),
        Param("rf_trees", "int", 100, "trees of the random forest + GO", minimum=1),
        Param("run_slow_models", "bool", True, "run the torch MLP (and live GEARS) when listed (False skips them)"),
        Param("max_seconds_per_fit", "float", 300, "time bound of each torch / GEARS fit, in seconds", minimum=1),
        Param("gears_epochs", "int", 2, "GEARS training epochs (shipped predictions: made with 2)", minimum=1),
        Param(
            "predictions",
            "any",
            None,
            'bring your own: a predictions file ("{dataset}" and "{seed}" are filled in) or {dataset: file}',
            none=True,
        ),
        Param("predictions_name", "str", None, "model name for the file's predictions (default: the file name's stem)", none=True),
        Param("predictions_values", "str", "expression", "what the file holds", choices=("expression", "change")),
        Param("n_bootstrap", "int", 10000, "bootstrap resamples of the ratio to the mean", minimum=100),
    )
)


def other_screen(dataset: str, overrides: Mapping[str, str | None] | None = None) -> str | None:
    """The reference screen for ``dataset`` (``overrides`` first, then :data:`OTHER_SCREEN`)."""
    if overrides and dataset in overrides:
        return overrides[dataset]
    return OTHER_SCREEN.get(str(dataset))


def chosen_models(models: Sequence[str], run_slow_models: bool, gears: str | None = None) -> tuple[list[str], list[str]]:
    """The models to run (in the order given) and those switched off by ``run_slow_models=False``.

    ``gears`` adds GEARS last (:func:`helpers.models.precomputed.with_gears`):
    ``"precomputed"`` (not slow: nothing is trained), ``"live"`` or ``"off"``; ``None``
    takes ``models`` as given, where "GEARS" is the live model.
    """
    check_model_names(models, MODELS)
    wanted = with_gears(models, gears)
    fast = {"GEARS"} if gears == "precomputed" else set()
    active = [m for m in wanted if run_slow_models or m in fast or not model_tags(m).slow]
    if REFERENCE_MODEL not in active:
        raise DataError(f"the comparison is made against {REFERENCE_MODEL!r}: keep it in `models`.")
    return active, [m for m in wanted if m not in active]


# ---------------------------------------------------------------------------------------
# the screens
# ---------------------------------------------------------------------------------------


@dataclass
class Screen:
    """One screen's single perturbations: cells, pseudobulk, profiles, and the doubles set aside."""

    cells: object
    pseudobulk: object
    profiles: pd.DataFrame
    doubles_dropped: list[str]

    @property
    def perturbations(self) -> list[str]:
        return [p for p in self.profiles.index if p != CONTROL]


@dataclass
class Screens:
    """Screens loaded once each (:func:`helpers.data.load_dataset`), singles and control only."""

    _loaded: dict = field(default_factory=dict)

    def __call__(self, name: str) -> Screen:
        if name not in self._loaded:
            from ..data.registry import load_dataset

            adata = load_dataset(name)
            n_targets = adata.obs["perturbation"].astype(str).map(lambda p: len(target_genes(p)))
            doubles = sorted(adata.obs["perturbation"][n_targets > 1].astype(str).unique())
            if doubles:
                adata = adata[(n_targets <= 1).to_numpy()].copy()
            pb = pseudobulk(adata)
            self._loaded[name] = Screen(adata, pb, pd.DataFrame(pb.X, index=pb.obs_names.copy(), columns=pb.var_names.copy()), doubles)
        return self._loaded[name]


def overview(screens: Screens, datasets: Sequence[str]) -> pd.DataFrame:
    """Cells, genes, single perturbations, measured targets, control cells and doubles set aside per screen."""
    rows = []
    for name in datasets:
        d = screens(name)
        perts = d.perturbations
        rows.append(
            {
                "dataset": name,
                "cells": d.cells.n_obs,
                "genes": d.cells.n_vars,
                "single perturbations": len(perts),
                "target gene measured": sum(p in d.profiles.columns for p in perts),
                "control cells": int((d.cells.obs["perturbation"] == CONTROL).sum()),
                "doubles set aside": len(d.doubles_dropped),
            }
        )
    return pd.DataFrame(rows).set_index("dataset")


def make_splits(screens: Screens, datasets: Sequence[str], seeds: Sequence[int]) -> tuple[dict, pd.DataFrame]:
    """The GEARS simulation split of every dataset and seed, and a table of its sizes."""
    splits, rows = {}, []
    for name in datasets:
        perts = screens(name).perturbations
        for seed in seeds:
            split = gears_simulation_split(perts, seed=seed)
            splits[name, seed] = split
            rows.append(
                {
                    "dataset": name,
                    "seed": seed,
                    "train": len(split.train),
                    "val": len(split.val),
                    "test": len(split.test),
                    "evaluated (test + val)": len(split.evaluated),
                }
            )
    return splits, pd.DataFrame(rows).set_index(["dataset", "seed"])


# ---------------------------------------------------------------------------------------
# embeddings of the perturbations
# ---------------------------------------------------------------------------------------


def embedding_overlap(
    target_perturbations: Sequence[str], target_genes_measured: Sequence[str], reference: pd.DataFrame, reference_genes: Sequence[str]
) -> pd.Series:
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


def reference_of(datasets: Sequence[str], reference_datasets: str | Mapping[str, str | None] | None) -> dict[str, str | None]:
    """The reference screen of every dataset: ``"auto"`` (the published pairs), None (none) or ``{dataset: reference}``."""
    if reference_datasets == "auto" or reference_datasets is None:
        return {name: (other_screen(name) if reference_datasets == "auto" else None) for name in datasets}
    if not isinstance(reference_datasets, Mapping):
        raise DataError(f'reference_datasets = {reference_datasets!r}: give "auto", None or a mapping {{dataset: reference}}.')
    return {name: other_screen(name, dict(reference_datasets)) for name in datasets}


def reference_embeddings(
    screens: Screens, datasets: Sequence[str], references: Mapping[str, str | None], n_components: int
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, list[str]]:
    """The P of "linear (P from other screen)" for every dataset with a reference, the overlap table and notes.

    P is the PCA of every condition of the reference screen
    (:func:`helpers.models.linear.condition_pca_embedding`).
    """
    from ..models.linear import condition_pca_embedding

    embeddings, overlap, notes = {}, {}, []
    for name in datasets:
        ref = references.get(name)
        if ref is None:
            notes.append(
                f"{name}: no reference screen is known, so 'linear (P from other screen)' is not run on it "
                "(set reference_datasets = {dataset: reference})."
            )
            continue
        try:
            ref_data = screens(ref)
        except DataError as err:
            notes.append(f"{name}: the reference screen {ref} cannot be loaded ({err}); 'linear (P from other screen)' is skipped.")
            continue
        emb = condition_pca_embedding(ref_data.pseudobulk, n_components=n_components)
        embeddings[name] = emb
        target = screens(name)
        overlap[f"{name} ← P from {ref}"] = embedding_overlap(target.perturbations, target.profiles.columns, emb, ref_data.profiles.columns)
    return embeddings, pd.DataFrame(overlap), notes


def go_embeddings(screens: Screens, datasets: Sequence[str], go_components: int) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The P of "linear (P from GO)" for every dataset (GO adjacency spectral embedding of its targets) and its coverage."""
    from ..knowledge import go_embedding

    tables, rows = {}, {}
    for name in datasets:
        targets = sorted({g for p in screens(name).perturbations for g in target_genes(p)})
        emb = go_embedding(targets, n_components=go_components, method="adjacency")
        tables[name] = emb
        missing = emb.attrs.get("not_embedded", {})
        rows[name] = {
            "target genes": len(targets),
            "with a GO embedding": len(targets) - len(missing),
            "without (no GO terms)": len(missing),
            "examples without": ", ".join(list(missing)[:6]),
        }
    return tables, pd.DataFrame(rows).T


# ---------------------------------------------------------------------------------------
# the models and the loop
# ---------------------------------------------------------------------------------------


def predictions_path(predictions: str | Path | Mapping[str, str | Path] | None, dataset: str, seed: int) -> Path | None:
    """The predictions file of ``dataset`` and ``seed``: a template with ``{dataset}``/``{seed}``, or ``{dataset: file}``."""
    if predictions is None:
        return None
    if isinstance(predictions, Mapping):
        template = predictions.get(dataset)
        if template is None:
            return None
    else:
        template = str(predictions)
    return Path(str(template).format(dataset=dataset, seed=seed))


def models_for(
    dataset: str,
    seed: int,
    split: Split,
    names: Sequence[str],
    reference: Mapping[str, pd.DataFrame],
    go: Mapping[str, pd.DataFrame],
    n_components: int = 10,
    ridge: float = 0.1,
    rf_trees: int = 100,
    max_seconds: float = 300.0,
    gears_epochs: int = 2,
    predictions: str | Path | Mapping[str, str | Path] | None = None,
    predictions_name: str | None = None,
    predictions_values: str = "expression",
    gears: str | None = None,
) -> dict:
    """Fresh models of one dataset and seed from the registry, plus a predictions file if one is given for them.

    "linear (P from other screen)" is left out for a dataset without a reference embedding
    (the notebook says why), as is "linear (P from GO)" without a GO embedding. With
    ``gears="precomputed"``, "GEARS" is the shipped predictions of ``dataset`` and ``seed``
    (:class:`helpers.models.precomputed.PrecomputedPredictions`), which refuse themselves at
    fit time if they were made for other data or another split.
    """
    names = [
        n
        for n in names
        if not (n == "linear (P from other screen)" and dataset not in reference) and not (n == "linear (P from GO)" and dataset not in go)
    ]
    built = build_models(
        [n for n in names if not (n == "GEARS" and gears == "precomputed")],
        seed=seed,
        n_components=n_components,
        ridge=ridge,
        rf_trees=rf_trees,
        max_seconds=max_seconds,
        gears_epochs=gears_epochs,
        perturbations=list(split.evaluated),
        reference_embedding=reference.get(dataset),
        go_embedding=go.get(dataset),
    )
    models = {
        n: built[n]
        if n in built
        else build_model("GEARS (precomputed)", chapter=NAME, dataset=dataset, seed=seed, gears_epochs=gears_epochs)
        for n in names
    }
    path = predictions_path(predictions, dataset, seed)
    if path is not None:
        label = predictions_name or path.stem
        if label in models:
            raise DataError(f"the predictions' model name {label!r} clashes with a built-in model; set predictions_name.")
        models[label] = build_model("predictions file", path=path, name=label, values=predictions_values)
    return models


@dataclass
class Run:
    """Everything :func:`run_benchmark` produced.

    ``results``: tidy metric rows ``dataset, seed, model, perturbation, split, common_set,
    metric, value``; ``excluded``: ``dataset, seed, model, perturbation, reason``;
    ``failures``: ``dataset, seed, model, reason`` of models that produced nothing;
    ``common_counts``: held-out and common-set sizes per dataset and seed; ``fit_times``:
    ``dataset, seed, model, seconds`` (fit + predict); ``notes``: what the reader should know;
    ``evaluations``: the engine's :class:`helpers.benchmarks.engine.Evaluation` of every
    ``(dataset, seed)`` (predictions and fitted models).
    """

    results: pd.DataFrame
    excluded: pd.DataFrame
    failures: pd.DataFrame
    common_counts: pd.DataFrame
    fit_times: pd.DataFrame
    genes_of: dict[str, list[str]]
    notes: list[str]
    evaluations: dict = field(default_factory=dict)

    @property
    def compared(self) -> list[str]:
        """Datasets with a non-empty common set."""
        return [d for d in self.results["dataset"].unique() if (self.results["common_set"] & (self.results["dataset"] == d)).any()]


def run_benchmark(
    screens: Screens,
    datasets: Sequence[str],
    seeds: Sequence[int],
    splits: Mapping,
    names: Sequence[str],
    n_genes: int = 1000,
    progress: bool = True,
    **model_options,
) -> Run:
    """Fit, predict and score every model on every dataset and seed (:func:`models_for`, the engine).

    Metrics (:data:`METRICS`) use the ``n_genes`` genes of highest control mean of each
    dataset and the control profile of the screen as reference.
    """
    frames, excluded, failures, timing, common_rows, notes, genes_of, evaluations = [], [], [], [], [], [], {}, {}
    for name in datasets:
        n_measured = screens(name).cells.n_vars
        if n_measured < n_genes:
            notes.append(f"{name} measures only {n_measured} genes: the metrics use all of them instead of the top {n_genes}.")
        genes_of[name] = top_expressed_genes(screens(name).pseudobulk, min(n_genes, n_measured))
    for name, seed in progress_bar([(d, s) for d in datasets for s in seeds], desc="dataset x seed", disable=not progress):
        data = screens(name)
        split = splits[name, seed]
        train = TrainingData(split.subset(data.cells, "train"), pseudobulk=data.pseudobulk[list(split.train) + [CONTROL]].copy())
        held_out = list(split.evaluated)
        models = models_for(name, seed, split, names, **model_options)
        evaluation = run_models(models, train, held_out)
        evaluations[name, seed] = evaluation
        part = {p: "test" for p in split.test} | {p: "val" for p in split.val}
        scored = evaluation.score(data.profiles, data.profiles.loc[CONTROL], genes=genes_of[name], metrics=METRICS)
        scored.insert(0, "seed", seed)
        scored.insert(0, "dataset", name)
        scored.insert(scored.columns.get_loc("perturbation") + 1, "split", scored["perturbation"].map(part).fillna(""))
        frames.append(scored)
        excluded.append(evaluation.exclusions.assign(dataset=name, seed=seed))
        failures += [{"dataset": name, "seed": seed, "model": m, "reason": why} for m, why in evaluation.failures.items()]
        fits = evaluation.fits
        timing += [
            {"dataset": name, "seed": seed, "model": r.model, "seconds": np.nansum([r.fit_seconds, r.predict_seconds])}
            for r in fits.itertuples()
        ]
        common_rows.append({"dataset": name, "seed": seed, "held out (test + val)": len(held_out), "common set": len(evaluation.common)})
        for m, model in evaluation.models.items():
            if getattr(model, "stopped_early_", False):
                notes.append(
                    f"note: {m} on {name}, seed {seed} hit its time bound (max_seconds_per_fit = "
                    f"{model_options.get('max_seconds')}) after {model.n_epochs_} epochs; rerun with a larger bound "
                    "for reproducible numbers."
                )
    excluded = pd.concat(excluded, ignore_index=True)[["dataset", "seed", "model", "perturbation", "reason"]]
    run = Run(
        pd.concat(frames, ignore_index=True),
        excluded,
        pd.DataFrame(failures, columns=["dataset", "seed", "model", "reason"]),
        pd.DataFrame(common_rows).set_index(["dataset", "seed"]),
        pd.DataFrame(timing),
        genes_of,
        notes,
        evaluations,
    )
    for name in datasets:
        if name not in run.compared:
            run.notes.append(
                f"{name}: no held-out perturbation is predicted by every model, so it has no common set to compare on; "
                "the exclusions below say which model is responsible (drop it with `models` to compare the others)."
            )
    if not run.compared:
        worst = excluded.groupby("model").size().sort_values(ascending=False)
        raise DataError(
            "no dataset has a set of held-out perturbations that every model predicts, so nothing can be compared. "
            f"Perturbations each model could not predict: {worst.to_dict()}; drop the models that predict "
            "nothing with the `models` parameter (e.g. the PCA-embedding models when the target genes are not measured)."
        )
    return run


def gears_provenance(run: Run) -> pd.DataFrame:
    """Per dataset and seed, where GEARS' predictions came from (precomputed, refused with the reason, trained live)."""
    table = provenance_table(run.evaluations)
    keys = list(table["run"])
    table.insert(0, "dataset", [k[0] for k in keys])
    table.insert(1, "seed", [k[1] for k in keys])
    return table.drop(columns="run")


def exclusion_tables(run: Run) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counts of excluded held-out perturbations per dataset, seed and model, and the reasons with examples."""
    excluded = run.excluded
    counts = excluded.groupby(["dataset", "seed", "model"]).size().unstack("model", fill_value=0)
    reasons = (
        excluded.assign(reason=excluded["reason"].str.replace(r"target gene \S+", "target gene", regex=True))
        .groupby(["model", "reason"])
        .agg(n=("perturbation", "size"), examples=("perturbation", lambda s: ", ".join(sorted(set(s))[:6])))
        .reset_index()
    )
    return counts, reasons


# ---------------------------------------------------------------------------------------
# summaries, the ratio to the mean, the published numbers
# ---------------------------------------------------------------------------------------


def model_order(frame: pd.DataFrame, metric: str = "l2", reference: str = REFERENCE_MODEL) -> list[str]:
    """Models sorted by their mean ``metric`` over all datasets (best first), the reference first."""
    sub = frame[frame["metric"] == metric]
    means = sub.groupby("model", observed=True)["value"].mean().sort_values(ascending=metric == "l2" or metric.startswith("l2"))
    order = [m for m in means.index if m != reference]
    return ([reference] if reference in means.index else []) + order


def summary_table(on_common: pd.DataFrame) -> pd.DataFrame:
    """Mean L2 and mean PearsonΔ per dataset and model on the common set (``n`` = perturbation-seed pairs)."""
    summary = on_common.groupby(["dataset", "model", "metric"], observed=True)["value"].agg(["mean", "count"]).unstack("metric")
    table = pd.DataFrame(
        {
            "n": summary[("count", "l2")].astype(int),
            "mean L2": summary[("mean", "l2")],
            "mean PearsonΔ": summary[("mean", "pearson_delta_vs_control")],
        }
    ).reset_index()
    table["model"] = pd.Categorical(table["model"], model_order(on_common), ordered=True)
    return table.sort_values(["dataset", "model"]).set_index(["dataset", "model"])


def ratios_to_mean(on_common: pd.DataFrame, n_resamples: int) -> pd.DataFrame:
    """Mean per-perturbation ratio ``L2(model) / L2(mean)`` with a 95 % percentile bootstrap interval (Fig. 2c)."""
    return ratio_to_reference(
        on_common,
        reference_model=REFERENCE_MODEL,
        metric="l2",
        by=["dataset"],
        unit=["seed", "perturbation"],
        n_resamples=n_resamples,
        seed=0,
    )


def published_ratio_overlay(ratios: pd.DataFrame, compared: Sequence[str]) -> tuple[pd.DataFrame | None, bool]:
    """The published ratios to draw beside this run's (dataset renamed to this run's), and whether all are the same data."""
    pub_ratio = PUBLISHED["l2_ratio_to_mean"]
    overlay = []
    for name in compared:
        pub_name, _ = published_for(name)
        if pub_name is None:
            continue
        rows = pub_ratio[(pub_ratio["dataset"] == pub_name) & pub_ratio["model"].isin(ratios["model"])]
        overlay.append(rows.assign(dataset=name)[["dataset", "model", "value"]])
    same = all(published_for(name)[1] for name in compared)
    return (pd.concat(overlay, ignore_index=True) if overlay else None), same


def ratio_intervals(ratios: pd.DataFrame) -> pd.DataFrame:
    """The ratios with their interval as text, sorted by dataset and ratio."""
    return ratios.assign(interval=lambda t: [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(t["low"], t["high"])])[
        ["dataset", "model", "n", "mean_ratio", "interval"]
    ].sort_values(["dataset", "mean_ratio"])


def verdict(low: float, high: float) -> str:
    """Whether a ratio's 95 % interval lies below 1, above 1, or includes it."""
    if high < 1:
        return "beats the mean"
    if low > 1:
        return "worse than the mean"
    return "indistinguishable from the mean"


def side_by_side(name: str, table: pd.DataFrame, ratios: pd.DataFrame, order: Sequence[str]) -> tuple[str, pd.DataFrame | None]:
    """The heading and the table of this run beside the paper for one dataset (None when there is no counterpart)."""
    pub_name, same = published_for(name)
    if pub_name is None:
        return f"**{name}**: no published counterpart.", None
    head = (
        f"**{name}** — the same data as the paper's `{pub_name}`: this run's numbers and the published ones side by side."
        if same
        else f"**{name}** — a simulated screen. The *published* columns are the paper's numbers on the real `{pub_name}`, "
        "shown as a labelled reference: this run is on a simulated screen and does not reproduce them; compare who "
        "beats the mean, not the values."
    )
    mine = table.loc[name].reset_index()
    mine["model"] = mine["model"].astype(str)
    mine["n"] = mine["n"].astype("Int64")
    r = ratios[ratios["dataset"] == name].set_index("model")
    mine["ratio to mean [95 % CI]"] = [
        f"{r.loc[m, 'mean_ratio']:.3f} [{r.loc[m, 'low']:.3f}, {r.loc[m, 'high']:.3f}]" if m in r.index else "" for m in mine["model"]
    ]
    mine["this run"] = [verdict(r.loc[m, "low"], r.loc[m, "high"]) if m in r.index else "reference" for m in mine["model"]]
    panel_a = PUBLISHED["single_perturbation_prediction"]
    pa = panel_a[panel_a["dataset"] == pub_name].pivot_table(index="model", columns="metric", values="value")
    pa = pa.rename(columns={"l2": "published mean L2", "pearson_delta_vs_control": "published mean PearsonΔ"})
    pub_ratio = PUBLISHED["l2_ratio_to_mean"]
    pr = pub_ratio[pub_ratio["dataset"] == pub_name].set_index("model")["value"].rename("published ratio to mean")
    side = mine.set_index("model").join(pa, how="outer").join(pr, how="outer")
    side["model order"] = [order.index(m) if m in order else len(order) for m in side.index]
    side = side.sort_values(["model order", "published ratio to mean"]).drop(columns="model order")
    side = side.astype({c: "object" for c in ("ratio to mean [95 % CI]", "this run")}).fillna(
        {"ratio to mean [95 % CI]": "", "this run": ""}
    )
    return head, side


def comparison_lines(ratios: pd.DataFrame, compared: Sequence[str]) -> list[str]:
    """Per dataset: the lowest ratio and the models below 1, in the paper and in this run."""
    pub_ratio = PUBLISHED["l2_ratio_to_mean"]
    lines = []
    for name in compared:
        pub_name, same = published_for(name)
        r = ratios[ratios["dataset"] == name].set_index("model")
        if pub_name is None or r.empty:
            continue
        p = pub_ratio[pub_ratio["dataset"] == pub_name].set_index("model")["value"]
        shared = [m for m in r.index if m in p.index]
        if not shared:
            continue
        pub_best, run_best = p[shared].idxmin(), r.loc[shared, "mean_ratio"].idxmin()
        pub_below = [m for m in shared if p[m] < 1]
        run_below = [m for m in shared if r.loc[m, "high"] < 1]
        where = "the same data" if same else f"the real {pub_name} (this run: simulated {name})"
        lines.append(
            f"**{name}** vs the paper on {where}, over the {len(shared)} models both report: lowest ratio to the mean — "
            f"paper: {pub_best} ({p[pub_best]:.3f}); this run: {run_best} ({r.loc[run_best, 'mean_ratio']:.3f}). "
            f"Below 1 in the paper (point estimate): {', '.join(pub_below) or 'none'}; "
            f"below 1 in this run (whole 95 % interval): {', '.join(run_below) or 'none'}."
        )
    return lines


def conclusions(ratios: pd.DataFrame, run: Run) -> list[str]:
    """The paragraphs of "What this run shows", one per dataset, computed from the ratios."""
    lines = []
    for name in run.compared:
        r = ratios[ratios["dataset"] == name].set_index("model")
        if r.empty:
            continue
        beat = [m for m in r.index if r.loc[m, "high"] < 1]
        worse = [m for m in r.index if r.loc[m, "low"] > 1]
        best = r["mean_ratio"].idxmin()
        n = int(run.common_counts.loc[name, "common set"].sum())
        text = (
            f"**{name}** ({n} perturbation-seed pairs in the common set): the lowest mean ratio is {best} "
            f"({r.loc[best, 'mean_ratio']:.3f}). "
        )
        text += (
            f"Models whose 95 % interval lies below 1 (they beat the mean): {', '.join(beat)}. "
            if beat
            else "No model's 95 % interval lies entirely below 1: none reliably beats the mean. "
        )
        if worse:
            text += f"Reliably worse than the mean: {', '.join(worse)}. "
        if "linear" in r.index:
            text += (
                f"The self-trained linear model's ratio is {r.loc['linear', 'mean_ratio']:.3f} "
                f"[{r.loc['linear', 'low']:.3f}, {r.loc['linear', 'high']:.3f}]. "
            )
        if "linear (P from other screen)" in r.index:
            o = r.loc["linear (P from other screen)"]
            n_out = int(((run.excluded["dataset"] == name) & (run.excluded["model"] == "linear (P from other screen)")).sum())
            text += f"With P from the other screen it is {o['mean_ratio']:.3f} [{o['low']:.3f}, {o['high']:.3f}]"
            text += (
                f"; it could not embed {n_out} held-out perturbation-seed pairs (not perturbed in the reference screen), "
                "which are therefore outside the comparison. "
                if n_out
                else ". "
            )
        lines.append(text)
    return lines


def timing_table(run: Run) -> pd.DataFrame:
    """Fit + predict seconds per model: mean, max and total over datasets and seeds."""
    return run.fit_times.groupby("model")["seconds"].agg(["mean", "max", "sum"]).sort_values("sum", ascending=False)


__all__ = [
    "METRICS",
    "MODELS",
    "NAME",
    "OTHER_SCREEN",
    "PARAMETERS",
    "REFERENCE_MODEL",
    "Run",
    "Screen",
    "Screens",
    "chosen_models",
    "comparison_lines",
    "conclusions",
    "embedding_overlap",
    "exclusion_tables",
    "gears_provenance",
    "go_embeddings",
    "make_splits",
    "model_order",
    "models_for",
    "other_screen",
    "overview",
    "predictions_path",
    "published_ratio_overlay",
    "ratio_intervals",
    "ratios_to_mean",
    "reference_embeddings",
    "reference_of",
    "run_benchmark",
    "side_by_side",
    "summary_table",
    "timing_table",
    "verdict",
]
