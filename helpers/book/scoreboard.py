"""Gather every notebook's results into one comparison, beside the published numbers.

The scoreboard reads every ``*.results.csv`` of a run (:func:`helpers.results.read_results`),
summarises each (notebook, dataset, context, model, metric) over perturbations and seeds,
and joins the published numbers of :mod:`helpers.published`:

* ``same data`` — the run used the dataset the paper used (a downloaded dataset);
* ``simulated analogue`` — the run used the simulated preset shaped like that dataset;
  numbers are not expected to agree, only the qualitative picture (which model wins).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..published import published
from ..results import read_results

if TYPE_CHECKING:
    from pathlib import Path

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
    "double_perturbations": {
        "keep": {"common_set": True},
        "metrics": ["l2", "pearson_delta_vs_control", "pearson_delta_vs_perturbed_mean"],
    },
    "double_perturbations_gi": {"notebook": "double_perturbations", "metrics": ["gi_auprc", "gi_auroc"]},
    "unseen_perturbations": {"keep": {"common": True}, "metrics": ["l2", "pearson_delta_vs_control"]},
    "systema": {
        "keep": {"analysis": "baselines", "subset": "1-gene test"},
        "metrics": ["pearson_delta_vs_control", "pearson_delta_vs_perturbed_mean", "rmse", "centroid_accuracy", "rank_rmse"],
    },
    "progress_bars": {
        "keep": {"fold": "all"},
        "metrics": ["l2_median_over_folds", "fraction_gap_closed", "fraction_gap_closed_published"],
        "rename": {"l2_median_over_folds": "l2"},
    },
    # models scored with `python -m helpers evaluate`: every evaluate-<model>.results.csv of the run folder,
    # under the label "evaluate"; only the rows the command marks for the scoreboard (the model itself,
    # all observed cells, the real control as reference; never the example or the calibration controls)
    "evaluate": {"prefix": True, "keep": {"scoreboard": True}},
}
for _name, _real in list(ANALOGUES.items()):
    ANALOGUES[f"{_name}_full"] = _real

#: The task (chapter) whose protocol each paper module's numbers follow: a published number is only
#: put beside a run of the same task (never a doubles result beside a single-gene result of the
#: same dataset, model and metric name).
TASKS = {
    "ahlmann_eltze_doubles": "double_perturbations",
    "ahlmann_eltze_singles": "unseen_perturbations",
    "systema": "systema",
    "cole2026": "progress_bars",
    "perturbench": "perturbench",
}


def chapter_of(notebook: str) -> str:
    """The chapter (task) of a results file: its name, or the longest scope or claims chapter it starts with.

    ``double_perturbations-norman2019_subset`` -> ``double_perturbations``; an unknown name is returned unchanged.
    """
    from ..benchmarks.claims import CHAPTERS

    name = str(notebook)
    known = set(CHAPTERS) | {rule.get("notebook", scope) for scope, rule in SCOPES.items()}
    if name in known:
        return name
    hits = [c for c in known if name.startswith(c) and name[len(c)] in "-_.@ "]
    return max(hits, key=len) if hits else name


def _context_key(context: str | float | None) -> str:
    """Contexts of simulated screens are named like the real cell line plus ``_like``."""
    if context is None or (isinstance(context, float) and np.isnan(context)):
        return ""
    return str(context).removesuffix("_like").replace("-", "").upper()


def headline_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of each chapter's headline comparison (:data:`SCOPES`), metric names aligned.

    Chapters without a scope (e.g. data descriptions) are left out. A results file named
    ``<chapter>-<variant>`` (e.g. the chapter run on a real dataset) belongs to its chapter and keeps
    its name. A scope with ``prefix`` takes every ``<notebook>-<anything>`` file (one per model scored
    with ``python -m helpers evaluate``) and labels them ``<notebook>``.
    """
    parts = []
    chapters = results["notebook"].astype(str).map(chapter_of)
    for scope, rule in SCOPES.items():
        name = rule.get("notebook", scope)
        match = chapters == name
        if rule.get("prefix"):
            match |= results["notebook"].astype(str).str.startswith(f"{name}-")
        rows = results[match]
        if rule.get("prefix"):
            rows = rows.assign(notebook=name)
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
        mean=("mean", "mean"),
        median=("median", "mean"),
        n_seeds=("mean", "size"),
        n_perturbations=("n", "sum"),
        n_undefined=("n_undefined", "sum"),
    )
    return out.reset_index()


def beside_published(summary: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Put published numbers beside this run's where dataset (or its analogue), model and metric match.

    Only numbers of the same task are matched: a paper module's numbers (:data:`TASKS`) are set beside
    the rows of the chapter that runs its protocol. Returns one row per match with this run's value
    (mean or median, following the published ``statistic``), the published value, the difference,
    the published ``table`` and ``match`` = ``same data`` or ``simulated analogue``.
    """
    reference = published() if reference is None else reference
    ref = reference.copy()
    # summaries only: per-seed, per-fold, per-rank or per-FDP values have no counterpart here
    for column in ("seed", "fold", "fdp", "n_genes"):
        if column in ref:
            ref = ref[ref[column].isna()]
    ref["context_key"] = ref["context"].map(_context_key)
    ref["task"] = ref["paper"].map(TASKS) if "paper" in ref else np.nan
    ref["stat"] = ref["statistic"].astype(str).str.extract(r"^(mean|median)", expand=False)
    ref = ref.dropna(subset=["stat"])
    rows = []
    for _, run in summary.iterrows():
        same = ref["dataset"] == run["dataset"]
        analogue = ref["dataset"].isin(ANALOGUES.get(run["dataset"], ()))
        task = chapter_of(run["notebook"])
        same_task = ref["task"].isna() | (ref["task"] == task) if "paper" in ref else pd.Series(True, index=ref.index)
        hits = ref[
            (same | analogue)
            & same_task
            & (ref["model"] == run["model"])
            & (ref["metric"] == run["metric"])
            & (ref["context_key"] == _context_key(run["context"]))
        ]
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
                    "table": pub.get("table", ""),
                    "match": "same data" if pub["dataset"] == run["dataset"] else "simulated analogue",
                    "source": pub["source"],
                }
            )
    columns = [
        "notebook",
        "dataset",
        "context",
        "model",
        "metric",
        "statistic",
        "this run",
        "published",
        "difference",
        "published on",
        "table",
        "match",
        "source",
    ]
    return pd.DataFrame(rows, columns=columns)


def metric_directions() -> dict[str, bool]:
    """Whether lower is better, for every metric the scoreboard compares (from :data:`helpers.metrics.METRICS`)."""
    from ..metrics import METRICS

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
    keys = ["dataset", "context", "metric", "published on"] + (["table"] if "table" in comparison else [])
    for key, group in comparison.groupby(keys, sort=True):
        dataset, context, metric, published_on = key[:4]
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
                **({"table": key[4]} if len(key) > 4 else {}),
                "models": len(group),
                "best here": ours[0],
                "best published": theirs[0],
                "same winner": ours[0] == theirs[0],
                "published margin": margin,
                "kendall tau": tau,
            }
        )
    return pd.DataFrame(rows)


def load_run(directory: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a run's results and return (raw results, summary)."""
    results = read_results(directory)
    return results, summarise_run(headline_rows(results))


# ---------------------------------------------------------------------------------------
# claims: verdicts on every data source of the run
# ---------------------------------------------------------------------------------------


def claim_verdicts(results: pd.DataFrame) -> pd.DataFrame:
    """Every claim of :mod:`helpers.benchmarks.claims` on every data source of a run.

    ``results`` is :func:`helpers.results.read_results` output (with ``notebook``). Each results
    file belongs to one chapter (:func:`chapter_of`); a claim is tested only on the rows of its own
    chapter, one dataset at a time (task-wide claims on all datasets of the file), so a claim never
    sees results of another task. ``source`` is the dataset, with the file's name added when two
    files of the same chapter ran the same dataset.

    Returns :func:`helpers.benchmarks.claims.check_claims` rows plus ``notebook`` and ``source``.
    """
    from ..benchmarks.claims import CHAPTERS, check_claims, claims_of

    frames = []
    chapters = results["notebook"].astype(str).map(chapter_of)
    for notebook in sorted(results["notebook"].astype(str).unique()):
        chapter = chapter_of(notebook)
        if chapter not in CHAPTERS:
            continue
        rows = results[results["notebook"].astype(str) == notebook].drop(columns="notebook").dropna(axis=1, how="all")
        table = check_claims(rows, chapter, [c for c in claims_of(chapter) if c.scope == "dataset"])
        if table.empty:
            continue
        # a dataset run by another file of the same chapter: name the file too
        others = results[(chapters == chapter) & (results["notebook"].astype(str) != notebook)]["dataset"].astype(str).unique()
        table["notebook"] = notebook
        table["source"] = [f"{d} ({notebook})" if d in others or (d.startswith("all screens") and notebook != chapter) else d
                           for d in table["dataset"]]  # fmt: skip
        frames.append(table)
    # claims across screens: every file of the chapter together (e.g. the chapter on simulated and on real screens)
    for chapter in sorted(set(chapters) & set(CHAPTERS)):
        task_claims = [c for c in claims_of(chapter) if c.scope == "task"]
        if not task_claims:
            continue
        rows = results[chapters == chapter].drop(columns="notebook").dropna(axis=1, how="all")
        table = check_claims(rows, chapter, task_claims)
        files = sorted(results.loc[chapters == chapter, "notebook"].astype(str).unique())
        table["notebook"] = chapter
        table["source"] = "all screens of the run" + (f" ({', '.join(files)})" if len(files) > 1 else "")
        frames.append(table)
    if not frames:
        return pd.DataFrame(columns=["claim", "paper", "statement", "notebook", "source", "dataset", "kind", "status", "verdict"])
    return pd.concat(frames, ignore_index=True)


def claims_table(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Claim x data source: each cell the verdict with its effect size and interval (empty: the source's chapter has not that claim)."""
    from ..benchmarks.claims import CLAIMS

    if verdicts.empty:
        return pd.DataFrame()
    table = verdicts.pivot_table(index="claim", columns="source", values="verdict", aggfunc="first")
    order = [c for c in CLAIMS if c in table.index]
    table = table.loc[order].fillna("")
    table.insert(0, "statement", [CLAIMS[c].statement for c in order])
    table.insert(0, "paper", [CLAIMS[c].paper for c in order])
    return table


def _collapse(statuses: pd.Series) -> str:
    from ..benchmarks.claims import FAILS, HOLDS, UNTESTABLE

    tested = statuses[statuses != UNTESTABLE]
    if tested.empty:
        return UNTESTABLE
    if (tested == HOLDS).all():
        return HOLDS
    if (tested == FAILS).all():
        return FAILS
    return "mixed"


def paper_summary(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per paper: how many of its claims hold (on every source of that kind), fail, are mixed, on real cells and on simulated screens, and how many are untestable everywhere.

    A claim counts once per kind of source: ``holds`` when every testable verdict on that kind holds,
    ``fails`` when every one fails, ``mixed`` otherwise; ``untestable here`` when no source of the run
    can test it.
    """
    from ..benchmarks.claims import CLAIMS, UNTESTABLE

    rows = []
    papers = dict.fromkeys(c.paper for c in CLAIMS.values())
    for paper in papers:
        ids = [c.id for c in CLAIMS.values() if c.paper == paper]
        part = verdicts[verdicts["claim"].isin(ids)] if len(verdicts) else verdicts
        row = {"paper": paper, "claims": len(ids)}
        for kind in ("real", "simulated"):
            sub = part[part["kind"].astype(str).str.contains(kind)] if len(part) else part
            per = sub.groupby("claim")["status"].apply(_collapse) if len(sub) else pd.Series(dtype=str)
            for status in ("holds", "fails", "mixed"):
                row[f"{status} on {kind}"] = int((per == status).sum())
        tested = part[part["status"] != UNTESTABLE]["claim"].unique() if len(part) else []
        row["untestable here"] = len(ids) - len(tested)
        rows.append(row)
    return pd.DataFrame(rows).set_index("paper")


#: Per chapter: the task's main metric, whether lower is better, and the simplest baseline to beat.
TRUST = {
    "double_perturbations": ("double perturbations", "l2", True, "additive"),
    "unseen_perturbations": ("unseen single perturbations", "l2", True, "mean"),
    "perturbench": ("transfer to another cell line", "rmse", True, "line mean"),
}


def trust_summary(results: pd.DataFrame, verdicts: pd.DataFrame) -> list[str]:
    """ "Which model to trust for task X on data like mine": one sentence per (task, data source), computed.

    For the tasks of :data:`TRUST`: the model with the best mean of the task's metric on the common set,
    its paired difference from the simplest baseline (interval over seeds or a bootstrap over
    perturbations, :func:`helpers.benchmarks.claims.mean_statistic`), and the verdicts of the task's
    claims on that source. The advice: the best model if its interval excludes the baseline,
    otherwise the baseline (a near tie is not a reason to pay for a complex model). For the Systema
    chapter, the metrics whose calibration claims hold on the source.
    """
    from ..benchmarks.claims import FAILS, HOLDS, is_simulated, mean_statistic

    lines = []
    head = headline_rows(results)
    for chapter, (task, metric, lower, baseline) in TRUST.items():
        rows = head[(head["notebook"].astype(str).map(chapter_of) == chapter) & (head["metric"] == metric)]
        if chapter == "perturbench":
            rows = results[(results["notebook"].astype(str).map(chapter_of) == chapter) & (results["metric"] == metric)]
        for (notebook, dataset), part in rows.groupby(["notebook", "dataset"], sort=True):
            if "perturbation" in part and chapter == "double_perturbations":
                part = part[part["perturbation"].astype(str).str.contains(r"\+", regex=True)]
            key = ["seed", "perturbation"] + (["context"] if "context" in part and part["context"].notna().any() else [])
            wide = part.pivot_table(index=key, columns="model", values="value", aggfunc="first")
            if len(key) > 2:
                wide.index = pd.MultiIndex.from_arrays([wide.index.get_level_values(0), ["|".join(map(str, k[1:])) for k in wide.index]])
            means = wide.dropna().groupby(level=0).mean().mean()
            means = means[[m for m in means.index if "cheater" not in m and "true effect" not in m]]
            if means.empty or baseline not in means:
                continue
            best = means.idxmin() if lower else means.idxmax()
            kind = "simulated" if is_simulated(dataset) else "real"
            text = f"- **{task}**, {dataset} ({kind}): lowest mean {metric} {best} ({means[best]:.3g}); {baseline} {means[baseline]:.3g}."
            if best == baseline:
                text += f" No model beats {baseline}: trust **{baseline}**."
            else:
                pair = wide[[best, baseline]]
                est = mean_statistic(pair, lambda m, b=best, a=baseline: m[a] - m[b])
                clear = np.isfinite(est.low) and est.low > 0
                text += f" {best} is better by {est.effect:.3g} [{est.low:.3g}, {est.high:.3g}] ({est.how})" + (
                    f": trust **{best}** on data like these." if clear else f": within the noise, so **{baseline}** is as good here."
                )
            claims = verdicts[
                (verdicts["notebook"] == notebook) & (verdicts["dataset"] == dataset) & verdicts["status"].isin([HOLDS, FAILS])
            ]
            if len(claims):
                text += " Claims: " + ", ".join(f"{c} {s}" for c, s in zip(claims["claim"], claims["status"])) + "."
            lines.append(text)
    # progress bars: the embedding that closes most of the gap, per line
    from ..benchmarks.claims import fraction_closed

    for (_notebook, dataset), part in results[results["notebook"].astype(str).map(chapter_of) == "progress_bars"].groupby(
        ["notebook", "dataset"], sort=True
    ):
        parts = []
        for ctx, frame in fraction_closed(part).items():
            emb = frame[frame["kind"] == "embedding"].dropna(subset=["fraction"])
            if emb.empty:
                parts.append(f"{str(ctx).removesuffix('_like')}: no gap between the bounds")
                continue
            best = emb["fraction"].idxmax()
            lo, hi = emb.loc[best, "low"], emb.loc[best, "high"]
            verdict = "closes part of the gap" if np.isfinite(lo) and lo > 0 else "indistinguishable from the training mean"
            parts.append(f"{str(ctx).removesuffix('_like')}: {best} {emb.loc[best, 'fraction']:.2f} [{lo:.2f}, {hi:.2f}], {verdict}")
        if parts:
            kind = "simulated" if is_simulated(dataset) else "real"
            lines.append(f"- **embeddings for a new perturbation (progress bars)**, {dataset} ({kind}): " + "; ".join(parts) + ".")
    # metrics to trust (calibration claims)
    cal = verdicts[verdicts["claim"].str.startswith("MIL-") & verdicts["status"].isin([HOLDS, FAILS])] if len(verdicts) else verdicts
    for source, part in cal.groupby("source", sort=True) if len(cal) else []:
        well = [d for d, s, c in zip(part["detail"], part["status"], part["claim"]) if c in ("MIL-3", "MIL-4") and s == HOLDS]
        poor = [c for c, s in zip(part["claim"], part["status"]) if c in ("MIL-1", "MIL-2") and s == FAILS]
        text = f"- **which metric to trust**, {source}: "
        text += (
            ("well calibrated here: " + "; ".join(d.split(" (median DRF")[0] for d in well))
            if well
            else "no weighted or rank metric reached DRF 0.5"
        )
        if poor:
            text += f"; contrary to Miller et al., {' and '.join('PearsonΔ vs control' if c == 'MIL-1' else 'MSE' for c in poor)} separate the duplicate from the mean here (DRF ≥ 0.2)"
        lines.append(text + ".")
    return lines


def load_claims(directory: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a run's results and return (raw results, claim verdicts on every source)."""
    results = read_results(directory)
    return results, claim_verdicts(results)
