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

#: Simulated presets and the real datasets whose shape they mimic.
ANALOGUES = {
    "norman_like": ("norman2019_scfoundation", "norman2019"),
    "adamson_like": ("adamson2016",),
    "replogle_k562_like": ("replogle2022_k562_essential",),
    "replogle_rpe1_like": ("replogle2022_rpe1_essential",),
    "essential_like": ("essential_pseudobulk",),
}
for _name, _real in list(ANALOGUES.items()):
    ANALOGUES[f"{_name}_full"] = _real


def _context_key(context) -> str:
    """Contexts of simulated screens are named like the real cell line plus ``_like``."""
    if context is None or (isinstance(context, float) and np.isnan(context)):
        return ""
    return str(context).removesuffix("_like").replace("-", "").upper()


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
    per_seed = frame.groupby(keys + ["seed"], observed=True, sort=False)["value"].agg(
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


def ranking_agreement(comparison: pd.DataFrame, lower_is_better: dict[str, bool]) -> pd.DataFrame:
    """Does this run order the models as the paper did? One row per (dataset, context, metric).

    For each group with at least two models, the models are ordered by this run's value
    and by the published value (best first); ``same winner`` says whether the best model is
    the same, ``kendall tau`` measures the agreement of the two orders.
    """
    from scipy.stats import kendalltau

    rows = []
    for (dataset, context, metric, published_on), group in comparison.groupby(["dataset", "context", "metric", "published on"], sort=True):
        group = group.dropna(subset=["this run", "published"]).drop_duplicates("model")
        if len(group) < 2 or metric not in lower_is_better:
            continue
        sign = 1 if lower_is_better[metric] else -1
        ours = group.sort_values("this run", key=lambda v: sign * v)["model"].tolist()
        theirs = group.sort_values("published", key=lambda v: sign * v)["model"].tolist()
        tau = kendalltau(group["this run"], group["published"]).statistic if len(group) > 2 else np.nan
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
                "kendall tau": tau,
            }
        )
    return pd.DataFrame(rows)


def load_run(directory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a run's results and return (raw results, summary)."""
    results = read_results(directory)
    return results, summarise_run(results)
