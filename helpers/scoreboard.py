"""Gather every notebook's results into one comparison, beside the published numbers.

The scoreboard reads every ``*.results.csv`` of a run (:func:`helpers.results.read_results`),
summarises each (notebook, dataset, context, model, metric) over perturbations and seeds,
and joins the published numbers of :mod:`helpers.published`:

* ``same data`` — the run used the dataset the paper used (a downloaded dataset);
* ``simulated analogue`` — the run used the simulated preset shaped like that dataset;
  numbers are not expected to agree, only the qualitative picture (which model wins).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .published import published
from .results import read_results

#: Simulated presets and the real datasets whose shape they mimic (Systema used other
#: versions of the Replogle screens, named as in the paper).
ANALOGUES = {
    "norman_like": ("norman2019_scfoundation", "norman2019"),
    "adamson_like": ("adamson2016",),
    "replogle_k562_like": ("replogle2022_k562_essential", "ReplogleK562_gwps"),
    "replogle_rpe1_like": ("replogle2022_rpe1_essential", "ReplogleRPE1"),
    "essential_like": ("essential_pseudobulk",),
}

#: Which rows of each chapter's results form its headline comparison (the rest are
#: diagnostics: calibration controls, sweeps, per-fold values, truth on simulated data),
#: and metric names to align with the published tables.
SCOPES = {
    "double_perturbations": {"keep": {"common_set": True}, "metrics": ["l2", "pearson_delta_vs_control", "pearson_delta_vs_perturbed_mean"]},
    "double_perturbations_gi": {"notebook": "double_perturbations", "metrics": ["gi_auprc", "gi_auroc"]},
    "unseen_perturbations": {"keep": {"common": True}, "metrics": ["l2", "pearson_delta_vs_control"]},
    "systema": {"keep": {"analysis": "baselines", "subset": "1-gene test"},
                "metrics": ["pearson_delta_vs_control", "pearson_delta_vs_perturbed_mean", "rmse", "centroid_accuracy", "rank_rmse"]},
    "progress_bars": {"keep": {"fold": "all"}, "metrics": ["l2_median_over_folds", "fraction_gap_closed", "fraction_gap_closed_published"],
                      "rename": {"l2_median_over_folds": "l2"}},
}
for _name, _real in list(ANALOGUES.items()):
    ANALOGUES[f"{_name}_full"] = _real


def _context_key(context) -> str:
    """Contexts of simulated screens are named like the real cell line plus ``_like``."""
    if context is None or (isinstance(context, float) and np.isnan(context)):
        return ""
    return str(context).removesuffix("_like").replace("-", "").upper()


def headline_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of each chapter's headline comparison (:data:`SCOPES`), metric names aligned.

    Chapters without a scope (e.g. data descriptions) are left out.
    """
    parts = []
    for scope, rule in SCOPES.items():
        rows = results[results["notebook"] == rule.get("notebook", scope)]
        for column, value in rule.get("keep", {}).items():
            if column in rows:
                rows = rows[rows[column].astype(str) == str(value)]
        if "metrics" in rule:
            rows = rows[rows["metric"].isin(rule["metrics"])]
        rows = rows.assign(metric=rows["metric"].replace(rule.get("rename", {})))
        parts.append(rows)
    return pd.concat(parts, ignore_index=True)


def summarise_run(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and median of every metric per notebook, dataset, context and model.

    Values are first averaged per seed (over perturbations), then summarised over seeds,
    so every seed weighs the same; ``n_perturbations`` counts (perturbation, seed) pairs
    with a defined value, ``n_undefined`` those without (e.g. PearsonΔ of no change).
    """
    frame = results.copy()
    if "context" not in frame:
        frame["context"] = ""
    frame["context"] = frame["context"].fillna("")
    keys = ["notebook", "dataset", "context", "model", "metric"]
    per_seed = frame.groupby(keys + ["seed"], observed=True, sort=False, dropna=False)["value"].agg(
        mean="mean", median="median", n="count", n_undefined=lambda v: int(v.isna().sum())
    )
    out = per_seed.groupby(level=keys, observed=True, sort=True).agg(
        mean=("mean", "mean"), median=("median", "mean"), n_seeds=("mean", "size"), n_perturbations=("n", "sum"), n_undefined=("n_undefined", "sum")
    )
    return out.reset_index()


def beside_published(summary: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Put published numbers beside this run's where dataset (or its analogue), model and metric match.

    Returns one row per match with this run's value (mean or median, following the
    published ``statistic``), the published value, the difference, and ``match`` =
    ``same data`` or ``simulated analogue``.
    """
    reference = published() if reference is None else reference
    ref = reference.copy()
    # summaries only: per-seed, per-fold, per-rank or per-FDP values have no counterpart here
    for column in ("seed", "fold", "fdp", "n_genes"):
        if column in ref:
            ref = ref[ref[column].isna()]
    ref["context_key"] = ref["context"].map(_context_key)
    ref["stat"] = ref["statistic"].astype(str).str.extract(r"^(mean|median)", expand=False)
    ref = ref.dropna(subset=["stat"])
    rows = []
    for _, run in summary.iterrows():
        same = ref["dataset"] == run["dataset"]
        analogue = ref["dataset"].isin(ANALOGUES.get(run["dataset"], ()))
        hits = ref[(same | analogue) & (ref["model"] == run["model"]) & (ref["metric"] == run["metric"]) & (ref["context_key"] == _context_key(run["context"]))]
        for _, pub in hits.iterrows():
            value = run[pub["stat"]]
            rows.append(
                {
                    "notebook": run["notebook"],
                    "dataset": run["dataset"],
                    "context": run["context"],
                    "model": run["model"],
                    "metric": run["metric"],
                    "statistic": pub["statistic"],
                    "this run": value,
                    "published": pub["value"],
                    "difference": value - pub["value"],
                    "published on": pub["dataset"],
                    "match": "same data" if pub["dataset"] == run["dataset"] else "simulated analogue",
                    "source": pub["source"],
                }
            )
    columns = ["notebook", "dataset", "context", "model", "metric", "statistic", "this run", "published", "difference", "published on", "match", "source"]
    return pd.DataFrame(rows, columns=columns)


def metric_directions() -> dict[str, bool]:
    """Whether lower is better, for every metric the scoreboard compares (from :data:`helpers.metrics.METRICS`)."""
    from .metrics import METRICS

    out = {name: not info.higher_is_better for name, info in METRICS.items()}
    out.update({"gi_auprc": False, "gi_auroc": False, "fraction_gap_closed": False, "fraction_gap_closed_published": False})
    return out


def ranking_agreement(comparison: pd.DataFrame, lower_is_better: dict[str, bool] | None = None) -> pd.DataFrame:
    """Does this run order the models as the paper did? One row per (dataset, context, metric).

    For each group with at least two models, the models are ordered by this run's value
    and by the published value (best first); ``same winner`` says whether the best model is
    the same, ``published margin`` is the relative gap between the best and the second
    published model (a small margin is a near tie that another screen may well reverse),
    ``kendall tau`` measures the agreement of the two orders. Performance bounds
    (the "cheater" methods of the progress bars, a simulation's true effect) are not models
    and are left out of the ranking.
    """
    from scipy.stats import kendalltau

    lower_is_better = metric_directions() if lower_is_better is None else lower_is_better
    rows = []
    for (dataset, context, metric, published_on), group in comparison.groupby(["dataset", "context", "metric", "published on"], sort=True):
        group = group.dropna(subset=["this run", "published"]).drop_duplicates("model")
        group = group[~group["model"].str.contains("cheater|true effect", regex=True)]
        if len(group) < 2 or metric not in lower_is_better:
            continue
        sign = 1 if lower_is_better[metric] else -1
        ours = group.sort_values("this run", key=lambda v: sign * v)["model"].tolist()
        theirs = group.sort_values("published", key=lambda v: sign * v)["model"].tolist()
        tau = kendalltau(group["this run"], group["published"]).statistic if len(group) > 2 else np.nan
        ranked = group.set_index("model").loc[theirs, "published"].to_numpy()
        margin = abs(ranked[1] - ranked[0]) / abs(ranked[0]) if ranked[0] else np.nan
        rows.append(
            {
                "dataset": dataset,
                "context": context,
                "metric": metric,
                "published on": published_on,
                "models": len(group),
                "best here": ours[0],
                "best published": theirs[0],
                "same winner": ours[0] == theirs[0],
                "published margin": margin,
                "kendall tau": tau,
            }
        )
    return pd.DataFrame(rows)


def load_run(directory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a run's results and return (raw results, summary)."""
    results = read_results(directory)
    return results, summarise_run(headline_rows(results))
