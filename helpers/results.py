"""Tidy results tables: one row per (dataset, seed, model, perturbation, metric).

Every benchmark notebook writes ``NAME.results.csv`` with at least the columns of
:data:`RESULT_COLUMNS`; notebooks may add more (e.g. ``context``, ``split``). A metric's
name states its reference, e.g. ``pearson_delta_vs_control``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

RESULT_COLUMNS = ["dataset", "seed", "model", "perturbation", "metric", "value"]


def tidy(per_perturbation: pd.DataFrame | pd.Series, metric: str | None = None, **labels) -> pd.DataFrame:
    """Turn per-perturbation metric values into tidy rows.

    Parameters
    ----------
    per_perturbation
        A Series (one metric, index = perturbation; give ``metric``) or a DataFrame
        (index = perturbation, one column per metric).
    metric
        Metric name when ``per_perturbation`` is a Series.
    **labels
        Constant columns to add, e.g. ``dataset="norman_like", seed=1, model="additive"``.

    Returns
    -------
    DataFrame
        Columns ``labels..., perturbation, metric, value``.
    """
    if isinstance(per_perturbation, pd.Series):
        if metric is None:
            metric = per_perturbation.name
        if metric is None:
            raise ValueError("give the metric name for a Series")
        frame = per_perturbation.rename(metric).to_frame()
    else:
        frame = per_perturbation
    long = frame.rename_axis("perturbation").reset_index().melt(id_vars="perturbation", var_name="metric", value_name="value")
    for key, value in reversed(list(labels.items())):
        long.insert(0, key, value)
    return long


def check_results(frame: pd.DataFrame) -> pd.DataFrame:
    """Validate a results table and return it in a deterministic row order."""
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"results table lacks columns {missing}; it needs at least {RESULT_COLUMNS}")
    if frame.empty:
        raise ValueError("results table is empty: the notebook evaluated nothing")
    if frame.duplicated([c for c in frame.columns if c != "value"]).any():
        dup = frame[frame.duplicated([c for c in frame.columns if c != "value"], keep=False)].head()
        raise ValueError(f"results table has duplicate rows for the same labels, e.g.\n{dup}")
    extra = [c for c in frame.columns if c not in RESULT_COLUMNS]
    order = RESULT_COLUMNS[:-2] + extra + ["metric", "value"]
    frame = frame[order]
    keys = [c for c in order if c != "value"]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def results_name(name: str, dataset: str | Path | None = None, default: str | None = None) -> str:
    """The stem of a chapter's results file: ``name`` on its default dataset, ``name-<dataset>`` on any other.

    ``<dataset>`` is a registry name, or a file's stem (``my_screen.h5ad`` -> ``my_screen``), so
    that runs of one chapter on several datasets write distinct files into one folder (the
    scoreboard reads them all).
    """
    if dataset is None:
        return name
    label = Path(str(dataset)).stem if str(dataset).endswith(".h5ad") else str(dataset)
    return name if label == default else f"{name}-{label}"


def write_results(frame: pd.DataFrame, output_dir: str | Path, name: str) -> Path:
    """Write ``output_dir/name.results.csv`` (validated, sorted, 10 significant digits)."""
    frame = check_results(frame)
    path = Path(output_dir) / f"{name}.results.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, float_format="%.10g")
    return path


def read_results(directory: str | Path) -> pd.DataFrame:
    """Concatenate every ``*.results.csv`` in ``directory``, with a ``notebook`` column."""
    frames = []
    for path in sorted(Path(directory).glob("*.results.csv")):
        frame = pd.read_csv(path)
        frame.insert(0, "notebook", path.name.removesuffix(".results.csv"))
        frames.append(frame)
    if not frames:
        raise FileNotFoundError(f"no *.results.csv in {directory}; run the notebooks first (make book)")
    return pd.concat(frames, ignore_index=True)


def summarise(frame: pd.DataFrame, by: Sequence[str] = ("dataset", "model", "metric")) -> pd.DataFrame:
    """Mean, median, standard error and count of ``value`` per group (NaN values skipped and counted)."""
    grouped = frame.groupby(list(by), observed=True, sort=True)["value"]
    out = grouped.agg(mean="mean", median="median", n="count")
    out["se"] = grouped.std(ddof=1) / np.sqrt(out["n"])
    out["n_missing"] = grouped.apply(lambda v: int(v.isna().sum()))
    return out.reset_index()
