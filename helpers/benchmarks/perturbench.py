"""PerturBench's covariate-transfer task on real cells (Wu et al., arXiv 2408.10609), step by step.

The notebook ``notebooks/perturbench.ipynb`` calls these functions:

1. :func:`load_screen` and :func:`overview` — a screen with several cell lines
   (``obs['context']``), by default the McFaline-Figueroa et al. subset;
2. :func:`make_splits` — PerturBench's transfer split for every seed
   (:func:`helpers.data.splits.transfer_split`): in each line a share of the perturbations is
   held out, every held-out perturbation stays measured in another line; control cells are
   split 50/25/25;
3. :func:`run_benchmark` — for every seed the models of the registry are fitted by the engine
   (:func:`helpers.benchmarks.engine.run_models`) on the training cells of all lines at once and
   asked for the held-out conditions ``"perturbation@line"``; predicted cells are made from the
   line's held-out control cells (:meth:`helpers.models.cell_models.ContextModel.predict_cells`);
   :func:`score_run` computes the metrics per line;
4. :func:`summary_table`, :func:`side_by_side`, :func:`per_line_table` and :func:`conclusions` — the
   tables and the sentences of the chapter, from the run's numbers; PerturBench's claims are tested
   by the claims registry (:mod:`helpers.benchmarks.claims`, ``PB-2`` to ``PB-5``).

Evaluation protocol (PerturBench's, with the differences stated):

* evaluated: the validation **and** test held-out pairs (the subset is small; PerturBench
  reports test); the models stop early on validation cells carved from their training data,
  never on a held-out pair;
* reference: for each line, the mean of its held-out (validation and test) control cells; the
  observed and predicted log fold changes are both taken against it;
* ranks are computed within each line among its evaluated conditions (PerturBench's
  ``evaluate_rank`` per covariate), on the conditions every model predicts;
* predicted cells: the model applied to each held-out control cell of the line; models that
  predict only a mean shift the control cells to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..console import progress_bar
from ..data.canonical import CONTROL
from ..data.splits import condition_name, parse_condition, transfer_split
from ..errors import DataError
from ..metrics import evaluate
from ..metrics.distribution import PCASpace
from ..metrics.perturbench import cell_metrics
from ..models.cell_models import condition_profiles
from ..models.registry import build_model, build_models, check_model_names, model_tags
from ..params import Param, Schema
from ..published.perturbench import TABLES as PUBLISHED
from .engine import TrainingData, run_models

if TYPE_CHECKING:
    import scipy.sparse as sp
    from anndata import AnnData

    from ..data.splits import TransferSplit
    from .engine import Evaluation

NAME = "perturbench"

#: Registry models the chapter can run, in the order of its tables.
BASELINES = ("no change (line control)", "line mean", "mean effect in other lines")
SIMPLE_ARCHITECTURES = ("linear additive (cells, covariates)", "latent additive (cells, covariates)", "decoder only (cells, covariates)")
COMPLEX_ARCHITECTURES = ("CPA", "CPA (no adversary)")
MODE_COLLAPSE_EXAMPLE = "decoder-cov"
MODELS = BASELINES + SIMPLE_ARCHITECTURES + (MODE_COLLAPSE_EXAMPLE,) + COMPLEX_ARCHITECTURES
#: Model -> family, for the figures' colours (a predictions file is "other").
FAMILIES = (
    {m: "baseline" for m in BASELINES}
    | {m: "simple" for m in SIMPLE_ARCHITECTURES}
    | {MODE_COLLAPSE_EXAMPLE: "mode collapse"}
    | {m: "complex" for m in COMPLEX_ARCHITECTURES}
)

#: Pseudobulk metrics (registry names) and PerturBench's names for them.
PSEUDOBULK_METRICS = ("rmse", "rank_rmse", "cosine_logfc_vs_control", "rank_cosine_logfc_vs_control")
PUBLISHED_NAME = {
    "rmse": "rmse_average",
    "rank_rmse": "rmse_rank_average",
    "cosine_logfc_vs_control": "cosine_logfc",
    "rank_cosine_logfc_vs_control": "cosine_rank_logfc",
    "energy_distance_pca30": "mmd_pca",
    "rank_energy_distance_pca30": "mmd_rank_pca",
    "top50_recall_de_vs_control": "top_k_recall",
}
#: Our model names and those of PerturBench's Srivatsan20 transfer table.
PUBLISHED_MODEL = {
    "decoder-cov": "decoder-cov",
    "latent additive (cells, covariates)": "latent",
    "decoder only (cells, covariates)": "decoder",
    "linear additive (cells, covariates)": "linear",
}

#: How far from 0.5 a mean rank may be to count as "near 0.5" (chance, mode collapse).
NEAR_CHANCE = 0.1

PARAMETERS = Schema(
    (
        Param(
            "dataset",
            "str",
            "mcfaline2023_subset",
            "registry name or .h5ad with obs['context'] (cell lines); a simulated preset such as essential_like also works",
        ),
        Param(
            "scale",
            "float",
            None,
            "size of a simulated preset (e.g. 0.1); None: the preset's size; ignored for real data",
            minimum=0.001,
            none=True,
        ),
        Param("simulation_seed", "int", 0, "seed of a simulated screen's cells", minimum=0),
        Param("n_genes", "int", None, "evaluate on the n genes most expressed in control; None: every gene", minimum=10, none=True),
        Param("seeds", "ints", [0, 1, 2], "split seeds (PerturBench's splitter_seed); each also seeds the models", minimum=0),
        Param(
            "max_heldout_fraction",
            "float",
            0.5,
            "PerturBench's max_heldout_fraction_per_covariate: share of each line's labels held out (published default 0.3)",
            minimum=0.05,
            maximum=1.0,
        ),
        Param("models", "strs", list(MODELS), "models to run (registry names)", choices=MODELS),
        Param("run_slow_models", "bool", True, "train the torch models (False runs the baselines only)"),
        Param(
            "max_seconds_per_fit", "float", 300.0, "safety bound of each torch fit in seconds (early stopping ends them first)", minimum=1
        ),
        Param("n_pcs", "int", 30, "PCA dimensions of the distribution metric (PerturBench: 30)", minimum=2),
        Param("top_k", "int", 50, "genes of the top-k DE recall (PerturBench: 50)", minimum=1),
        Param(
            "predictions",
            "path",
            None,
            "bring your own: a table per (perturbation, line) (columns perturbation, context, genes...; '{seed}' is filled in)",
            none=True,
        ),
        Param("predictions_name", "str", None, "model name of those predictions (default: the file's stem)", none=True),
        Param(
            "predictions_values",
            "str",
            "expression",
            "what the file holds: mean expression or change from control",
            choices=("expression", "change"),
        ),
    )
)


# ---------------------------------------------------------------------------------------
# data and splits
# ---------------------------------------------------------------------------------------


def load_screen(dataset: str | Path, scale: float | None = None, simulation_seed: int = 0) -> tuple[AnnData, str]:
    """The screen and its name; a simulated preset is generated with ``scale`` and ``simulation_seed``."""
    from ..data.registry import load_dataset
    from ..data.simulate import PRESETS

    key = str(dataset)
    name = Path(key).stem if key.endswith(".h5ad") else key
    if key in PRESETS:
        options = {"seed": simulation_seed} | ({} if scale is None else {"scale": scale})
        adata = load_dataset(key, **options)
    else:
        if scale is not None:
            raise DataError(f"scale = {scale} sizes a simulated preset; {name} is not one (set scale = None).")
        adata = load_dataset(key)
    if "context" not in adata.obs:
        raise DataError(f"{name} has no obs['context']: the transfer task needs cells of several cell lines.")
    if adata.obs["context"].nunique() < 2:
        raise DataError(f"{name} has a single cell line; the transfer task needs at least two.")
    return adata, name


def evaluation_genes(adata: AnnData, n_genes: int | None) -> list[str]:
    """Every gene, or the ``n_genes`` most expressed in control (:func:`helpers.data.genesets.top_expressed_genes`)."""
    from ..data.genesets import top_expressed_genes

    return list(adata.var_names.astype(str)) if n_genes is None else top_expressed_genes(adata, n_genes)


def overview(adata: AnnData) -> pd.DataFrame:
    """Per cell line: perturbations, cells per perturbation (min, median, max), control cells."""
    obs = adata.obs
    rows = []
    for ctx, frame in obs.groupby(obs["context"].astype(str), sort=True):
        perts = frame[frame["perturbation"].astype(str) != CONTROL]
        sizes = perts.groupby(perts["perturbation"].astype(str)).size()
        rows.append(
            {
                "cell line": ctx,
                "perturbations": int(sizes.size),
                "cells per perturbation (min)": int(sizes.min()),
                "(median)": int(sizes.median()),
                "(max)": int(sizes.max()),
                "control cells": int((frame["perturbation"].astype(str) == CONTROL).sum()),
            }
        )
    return pd.DataFrame(rows).set_index("cell line")


def effect_similarity(adata: AnnData, genes: Sequence[str] | None = None) -> pd.DataFrame:
    """How much a perturbation's change carries over between lines, against how much all changes of a line share.

    With :math:`\\Delta_{p,k} = \\bar{x}_{p,k} - \\bar{x}_{ctrl,k}` (all cells of the screen), the mean
    Pearson correlation over genes of :math:`\\Delta_{p,k}` with :math:`\\Delta_{p,k'}` (the same
    perturbation in another line, what transfer can use) and with :math:`\\Delta_{q,k}` (another
    perturbation in the same line, what a line's mean captures), and the mean RMS change.
    """
    cells = adata if genes is None else adata[:, list(genes)]
    table, _ = condition_profiles(cells)
    pairs = [parse_condition(n) for n in table.index]
    lines = sorted({c for _, c in pairs})
    delta = {
        (p, c): table.loc[condition_name(p, c)].to_numpy() - table.loc[condition_name(CONTROL, c)].to_numpy()
        for p, c in pairs
        if p != CONTROL
    }

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a, b)[0, 1])

    across = [corr(d, delta[(p, k)]) for (p, c), d in delta.items() for k in lines if k != c and (p, k) in delta]
    within = [corr(d, delta[(q, c)]) for (p, c), d in delta.items() for q in sorted({q for q, _ in delta}) if q != p and (q, c) in delta]
    rms = [float(np.sqrt(np.mean(d**2))) for d in delta.values()]
    return pd.DataFrame(
        {
            "comparison": [
                "same perturbation, other line (what transfer can use)",
                "other perturbation, same line (what the line's mean captures)",
            ],
            "mean Pearson correlation of the changes": [np.mean(across) if across else np.nan, np.mean(within) if within else np.nan],
            "pairs": [len(across), len(within)],
        }
    ).assign(**{"mean RMS change from control": float(np.mean(rms))})


def make_splits(adata: AnnData, seeds: Sequence[int], max_heldout_fraction: float) -> tuple[dict[int, TransferSplit], pd.DataFrame]:
    """PerturBench's transfer split for every seed, and a table of the counts per line and part."""
    splits, frames = {}, []
    for seed in seeds:
        split = transfer_split(adata, seed=int(seed), max_heldout_fraction_per_covariate=max_heldout_fraction)
        check_split(adata, split)
        splits[int(seed)] = split
        frames.append(split.counts().rename_axis("cell line").reset_index().assign(seed=int(seed)))
    table = pd.concat(frames, ignore_index=True).set_index(["seed", "cell line"])
    return splits, table


def check_split(adata: AnnData, split: TransferSplit) -> None:
    """Refuse a split whose training cells include a held-out (perturbation, line) pair or a held-out control cell."""
    train = split.subset(adata, "train")
    seen = set(zip(train.obs["perturbation"].astype(str), train.obs["context"].astype(str)))
    leaked = sorted(seen & set(split.evaluated))
    if leaked:
        raise DataError(f"the transfer split puts held-out pairs in training: {leaked[:5]}")
    held_controls = set(split.controls.index[split.controls != "train"])
    if held_controls & set(train.obs_names):
        raise DataError("the transfer split puts held-out control cells in training.")


# ---------------------------------------------------------------------------------------
# fitting, predicting, scoring
# ---------------------------------------------------------------------------------------


def chosen_models(models: Sequence[str], run_slow_models: bool) -> tuple[list[str], list[str]]:
    """The models to run (in the order given) and those switched off by ``run_slow_models=False``."""
    check_model_names(models, MODELS)
    active = [m for m in models if run_slow_models or not model_tags(m).slow]
    if not active:
        raise DataError("no model left to run: keep a baseline in `models` or set run_slow_models = True.")
    return active, [m for m in models if m not in active]


def build_chapter_models(
    names: Sequence[str],
    seed: int,
    max_seconds: float,
    predictions: str | None = None,
    predictions_name: str | None = None,
    predictions_values: str = "expression",
) -> dict[str, object]:
    """The registry models for one seed, plus a predictions file (``{seed}`` filled in) if given."""
    models = build_models(names, seed=seed, max_seconds=max_seconds)
    if predictions is not None:
        path = str(predictions).replace("{seed}", str(seed))
        own = build_model("predictions file (contexts)", path=path, name=predictions_name, values=predictions_values)
        if own.name in models:
            raise DataError(f"predictions_name {own.name!r} is already a model of the chapter; choose another name.")
        models[own.name] = own
    return models


def hyperparameter_table(names: Sequence[str]) -> pd.DataFrame:
    """Each model's class, what it trains on and its hyperparameters (seed, time bound and threads left out)."""
    from ..models.registry import model_spec

    rows = []
    for name in names:
        model = build_model(name)
        params = {k: v for k, v in model.get_params().items() if k not in ("seed", "max_seconds", "n_threads")}
        rows.append(
            {
                "model": name,
                "class": type(model).__name__,
                "trains on": model.tags().training_data,
                "hyperparameters": ", ".join(f"{k}={v}" for k, v in params.items()) or "none",
                "summary": model_spec(name).summary,
            }
        )
    return pd.DataFrame(rows).set_index("model")


@dataclass
class SeedRun:
    """One seed: its split, the engine's evaluation, the observed data and the predicted cells.

    ``truth``: conditions x genes observed means of the held-out pairs; ``controls``: line ->
    mean of its held-out control cells (the reference); ``control_cells`` and
    ``observed_cells``: line / condition -> cells x genes (dense, evaluation genes);
    ``predicted_cells``: model -> condition -> cells x genes; ``space``: the PCA space of the
    observed evaluation cells.
    """

    seed: int
    split: TransferSplit
    evaluation: Evaluation
    truth: pd.DataFrame
    controls: dict[str, pd.Series]
    control_cells: dict[str, np.ndarray]
    observed_cells: dict[str, np.ndarray]
    predicted_cells: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    space: PCASpace | None = None


def _dense(X: np.ndarray | sp.spmatrix) -> np.ndarray:
    return np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float64)


def run_seed(
    adata: AnnData,
    split: TransferSplit,
    models: Mapping[str, object],
    genes: Sequence[str],
    n_pcs: int = 30,
    on_model: Callable[[str], None] | None = None,
) -> SeedRun:
    """Fit every model on the training cells of all lines, predict the held-out conditions and their cells."""
    genes = list(genes)
    train = split.subset(adata, "train")
    conditions = split.conditions(("test", "val"))
    evaluation = run_models(models, TrainingData(cells=train, genes=genes), conditions, on_model=on_model)
    held = split.subset(adata, ["val", "test"])[:, genes]
    profiles, _ = condition_profiles(held)
    contexts = sorted({parse_condition(c)[1] for c in conditions})
    controls = {ctx: profiles.loc[condition_name(CONTROL, ctx)] for ctx in contexts}
    labels = pd.Series(
        [condition_name(p, c) for p, c in zip(held.obs["perturbation"].astype(str), held.obs["context"].astype(str))],
        index=held.obs_names,
    )
    X = _dense(held.X)
    cells = {name: X[(labels == name).to_numpy()] for name in conditions}
    control_cells = {ctx: X[(labels == condition_name(CONTROL, ctx)).to_numpy()] for ctx in contexts}
    space = PCASpace.fit(X, n_components=n_pcs)
    run = SeedRun(int(split.seed), split, evaluation, profiles.loc[conditions], controls, control_cells, cells, space=space)
    for name, model in evaluation.models.items():
        if name in evaluation.failures:
            continue
        run.predicted_cells[name] = {c: model.predict_cells(c, control_cells[parse_condition(c)[1]]) for c in evaluation.common}
    return run


def score_run(run: SeedRun, dataset: str, top_k: int = 50) -> pd.DataFrame:
    """Every metric of every model on the conditions all models predict, per line, as tidy rows.

    Columns ``dataset, seed, model, perturbation, context, split, metric, value``. Pseudobulk
    metrics: :data:`PSEUDOBULK_METRICS` (:func:`helpers.metrics.evaluate`, against the line's
    held-out control mean); cell metrics: :func:`helpers.metrics.perturbench.cell_metrics`.
    """
    part = {condition_name(p, c): "test" for p, c in run.split.test} | {condition_name(p, c): "val" for p, c in run.split.val}
    common = list(run.evaluation.common)
    frames = []
    for model, pred in run.evaluation.predictions.items():
        for ctx in sorted({parse_condition(c)[1] for c in common}):
            rows = [c for c in common if parse_condition(c)[1] == ctx]
            table = evaluate(pred.loc[rows], run.truth.loc[rows], run.controls[ctx], metrics=list(PSEUDOBULK_METRICS))
            cells = cell_metrics(
                {c: run.predicted_cells[model][c] for c in rows},
                {c: run.observed_cells[c] for c in rows},
                run.control_cells[ctx],
                run.space,
                k=top_k,
            )
            table = table.join(cells)
            long = table.rename_axis("condition").reset_index().melt(id_vars="condition", var_name="metric", value_name="value")
            long["perturbation"] = [parse_condition(c)[0] for c in long["condition"]]
            long["context"] = ctx
            long["split"] = long["condition"].map(part)
            long["model"] = model
            frames.append(long.drop(columns="condition"))
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "seed", run.seed)
    out.insert(0, "dataset", dataset)
    return out[["dataset", "seed", "model", "perturbation", "context", "split", "metric", "value"]]


def run_benchmark(
    adata: AnnData,
    dataset: str,
    splits: Mapping[int, TransferSplit],
    model_names: Sequence[str],
    genes: Sequence[str],
    max_seconds: float = 300.0,
    n_pcs: int = 30,
    top_k: int = 50,
    predictions: str | None = None,
    predictions_name: str | None = None,
    predictions_values: str = "expression",
    progress: bool = True,
) -> tuple[list[SeedRun], pd.DataFrame, pd.DataFrame]:
    """Every seed: fit, predict, score. Returns the runs, the tidy results and the fit log (with times)."""
    runs, frames, fits = [], [], []
    n_models = len(model_names) + (predictions is not None)
    with progress_bar(total=len(splits) * n_models, desc="models x seeds", disable=not progress) as bar:
        for seed, split in splits.items():
            models = build_chapter_models(model_names, seed, max_seconds, predictions, predictions_name, predictions_values)

            def tick(name: str, _bar: object = bar, _seed: int = seed) -> None:
                _bar.set_postfix_str(f"seed {_seed}: {name}")
                _bar.update(1)

            run = run_seed(adata, split, models, genes, n_pcs=n_pcs, on_model=tick)
            runs.append(run)
            frames.append(score_run(run, dataset, top_k=top_k))
            fits.append(run.evaluation.fits.assign(seed=seed))
    return runs, pd.concat(frames, ignore_index=True), pd.concat(fits, ignore_index=True)


# ---------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------


def metric_order(results: pd.DataFrame) -> list[str]:
    """The chapter's metrics in display order (pseudobulk first, then the cell metrics)."""
    present = list(dict.fromkeys(results["metric"]))
    first = [m for m in PSEUDOBULK_METRICS if m in present]
    return first + [m for m in present if m not in first]


def lower_is_better(metric: str) -> bool:
    """Direction of a chapter metric (ranks, errors and distances: lower; cosine and recall: higher)."""
    return not (metric.startswith("cosine") or "recall" in metric)


def seed_means(results: pd.DataFrame, by: Sequence[str] = ("model", "metric")) -> pd.DataFrame:
    """Mean over the evaluated conditions of each seed (PerturBench's first step of the summary)."""
    keys = ["seed", *by]
    return results.groupby(keys, sort=True, observed=True)["value"].mean().rename("value").reset_index()


def summary_table(results: pd.DataFrame, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Model x metric table of mean ± SD over seeds of the per-seed means (columns ``(metric, mean|sd)``)."""
    per_seed = seed_means(results)
    grouped = per_seed.groupby(["model", "metric"], sort=True)["value"]
    table = pd.DataFrame({"mean": grouped.mean(), "sd": grouped.std(ddof=1), "seeds": grouped.size()}).reset_index()
    wide = table.pivot(index="model", columns="metric", values=["mean", "sd"]).swaplevel(axis=1)
    metrics = metric_order(results)
    wide = wide.reindex(columns=pd.MultiIndex.from_product([metrics, ["mean", "sd"]]))
    order = [m for m in (models or MODELS) if m in wide.index] + [m for m in wide.index if m not in (models or MODELS)]
    return wide.loc[order]


def compact(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``mean ± sd`` strings of :func:`summary_table`, one column per metric."""
    out = {}
    for metric in dict.fromkeys(summary.columns.get_level_values(0)):
        m, s = summary[(metric, "mean")], summary[(metric, "sd")]
        out[metric] = [f"{a:.{digits}f} ± {b:.{digits}f}" if np.isfinite(b) else f"{a:.{digits}f}" for a, b in zip(m, s)]
    return pd.DataFrame(out, index=summary.index)


def published_table() -> pd.DataFrame:
    """PerturBench's Srivatsan20 (sciplex3) cell-type-transfer table: model x PerturBench metric (mean over runs)."""
    table = PUBLISHED["sciplex3_transfer"]
    return table.pivot(index="model", columns="published_metric", values="value")


def side_by_side(summary: pd.DataFrame) -> pd.DataFrame:
    """This run's means beside PerturBench's Srivatsan20 numbers (a different screen), for the models both have.

    Rows: our model names (with PerturBench's in ``published model``); columns: PerturBench's
    metric names, ``this run`` and ``Srivatsan20``. Our energy distance is halved to compare with
    PerturBench's ``mmd_pca`` (geomloss' energy loss is :math:`E/2`).
    """
    pub = published_table()
    rows = []
    for model, theirs in PUBLISHED_MODEL.items():
        if model not in summary.index:
            continue
        row = {("", "published model"): theirs}
        for metric, pub_name in PUBLISHED_NAME.items():
            key = next((m for m in summary.columns.get_level_values(0) if m == metric), None)
            if key is None or pub_name not in pub.columns:
                continue
            ours = summary.loc[model, (metric, "mean")]
            if metric.startswith("energy_distance"):
                ours = ours / 2
            row[(pub_name, "this run")] = ours
            row[(pub_name, "Srivatsan20")] = pub.loc[theirs, pub_name]
        rows.append(pd.Series(row, name=model))
    if not rows:
        return pd.DataFrame()
    out = pd.DataFrame(rows)
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    return out


def per_line_table(results: pd.DataFrame, metrics: Sequence[str] = ("rmse", "rank_rmse")) -> pd.DataFrame:
    """Mean over seeds of the per-seed, per-line means: (metric, line) columns, one row per model."""
    per_seed = seed_means(results[results["metric"].isin(metrics)], by=("model", "context", "metric"))
    table = per_seed.groupby(["model", "metric", "context"], sort=True)["value"].mean().unstack(["metric", "context"])
    table = table.reindex(columns=[c for c in table.columns if c[0] in metrics])
    order = [m for m in MODELS if m in table.index] + [m for m in table.index if m not in MODELS]
    return table.loc[order].reindex(columns=sorted(table.columns, key=lambda c: (list(metrics).index(c[0]), c[1])))


def mode_collapse_table(summary: pd.DataFrame, rank_metric: str = "rank_rmse", error_metric: str = "rmse") -> pd.DataFrame:
    """Per model: its error, its rank metric and whether the rank is within :data:`NEAR_CHANCE` of 0.5 (collapsed)."""
    out = pd.DataFrame(
        {
            error_metric: summary[(error_metric, "mean")],
            rank_metric: summary[(rank_metric, "mean")],
        }
    )
    out["error rank among models (1 = best)"] = out[error_metric].rank(method="min").astype(int)
    out["rank near 0.5 (mode collapse)"] = (out[rank_metric] - 0.5).abs() <= NEAR_CHANCE
    return out


# ---------------------------------------------------------------------------------------
# the claims, tested on this run's numbers
# ---------------------------------------------------------------------------------------


def _best(summary: pd.DataFrame, models: Sequence[str], metric: str) -> tuple[str, float, float]:
    present = [m for m in models if m in summary.index]
    values = summary.loc[present, (metric, "mean")]
    best = values.idxmin() if lower_is_better(metric) else values.idxmax()
    return best, float(values[best]), float(summary.loc[best, (metric, "sd")])


def _no_worse(a: float, b: float, sd: float, metric: str) -> bool:
    """``a`` is better than ``b`` or within one seed SD of it (``sd``: the larger of the two SDs)."""
    tol = 0.0 if not np.isfinite(sd) else sd
    return a <= b + tol if lower_is_better(metric) else a >= b - tol


def conclusions(summary: pd.DataFrame, claims: pd.DataFrame, dataset: str, n_seeds: int, similarity: pd.DataFrame | None = None) -> str:
    """The chapter's conclusion as Markdown, every statement computed from ``summary``, ``claims`` and ``similarity``.

    ``claims``: the verdicts of the chapter's claims on this run
    (:func:`helpers.benchmarks.claims.claims_box` ``.table``: ``claim, statement, status, effect, detail, ...``);
    ``similarity``: :func:`effect_similarity` of the screen (optional).
    """
    lines = [f"On **{dataset}** ({n_seeds} split seed{'s' if n_seeds != 1 else ''}):", ""]
    if similarity is not None:
        col = "mean Pearson correlation of the changes"
        across, within = similarity[col].iloc[0], similarity[col].iloc[1]
        lines.append(
            f"- **What there is to transfer**: a perturbation's change from control correlates {across:.2f} on average with its "
            f"change in another line, and {within:.2f} with the change of another perturbation in the same line."
        )
    if ("rank_rmse", "mean") in summary.columns:
        ranks = summary[("rank_rmse", "mean")]
        near = ranks[(ranks - 0.5).abs() <= NEAR_CHANCE]
        lines.append(
            f"- **Ranks**: {len(near)} of {len(ranks)} models have a mean `rank_rmse` within {NEAR_CHANCE} of 0.5 (chance); "
            f"the lowest is {ranks.idxmin()} ({ranks.min():.3f})."
        )
    if "rmse" in summary.columns.get_level_values(0):
        rmse = summary[("rmse", "mean")].sort_values()
        lines.append(f"- **Lowest RMSE**: {rmse.index[0]} ({rmse.iloc[0]:.4f}); the highest is {rmse.index[-1]} ({rmse.iloc[-1]:.4f}).")
        if "mean effect in other lines" in rmse.index and "line mean" in rmse.index:
            other, line = rmse["mean effect in other lines"], rmse["line mean"]
            verdict = "better" if other < line else "worse"
            lines.append(
                f"- **Transfer of the perturbation's own effect**: adding the perturbation's mean change in the other lines to "
                f"this line's control gives RMSE {other:.4f}, {verdict} than this line's mean of its training perturbations "
                f"({line:.4f}), which knows nothing about the held-out perturbation."
            )
    labels = {"PB-2": "Simple architectures vs CPA", "PB-3": "CPA without its adversary", "PB-4": "Mode collapse (decoder-cov)"}
    for claim_id, label in labels.items():
        part = claims[claims["claim"] == claim_id] if len(claims) else claims
        if not len(part) or part["status"].iloc[0] == "not testable here":
            continue
        row = part.iloc[0]
        lines.append(
            f"- **{label}** ({claim_id}): the claim *{row['statement'].rstrip('.')}* {'holds' if row['status'] == 'holds' else 'does not hold'} "
            f"on this run ({row['effect_name']} {row['effect']:.3g}; {row['detail']})."
        )
    return "\n".join(lines)


def example_condition(run: SeedRun) -> str:
    """The evaluated condition with the largest observed change from its line's control (the clearest to plot)."""
    common = list(run.evaluation.common)
    if not common:
        raise DataError("no condition was predicted by every model.")
    size = {c: float(np.sqrt(((run.truth.loc[c] - run.controls[parse_condition(c)[1]]) ** 2).mean())) for c in common}
    return max(common, key=lambda c: (size[c], c))


__all__ = [
    "BASELINES",
    "COMPLEX_ARCHITECTURES",
    "MODELS",
    "NAME",
    "PARAMETERS",
    "SIMPLE_ARCHITECTURES",
    "SeedRun",
    "check_split",
    "conclusions",
    "make_splits",
    "run_benchmark",
    "run_seed",
    "score_run",
    "side_by_side",
    "summary_table",
]
