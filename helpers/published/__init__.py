"""Numbers published by the benchmarks this suite reproduces, as tidy tables.

Each module of this package holds the tables of one paper (values from ``METHODS.md``,
which gives the source of every number: paper figure, source-data sheet or notebook
printout). Every table is a DataFrame with at least the columns

``dataset``
    the registry name of the matching dataset (``python -m helpers datasets``), so a
    notebook can put the published value beside this run's value when the datasets match;
``model``
    the suite's model name where the model is one of ours (``no change``, ``additive``,
    ``mean``, ``linear``, ...), otherwise the published name (``GEARS``, ``scGPT``, ...);
``metric``
    the suite's metric name (``l2``, ``pearson_delta_vs_control``, ...);
``statistic``
    how the value summarises perturbations or seeds (``mean``, ``median``, ``mean ± se``, ...);
``value``, ``source``
    the number and where it comes from.

:func:`published` gathers all tables; notebooks filter them.
"""

from __future__ import annotations

import importlib
import pkgutil

import pandas as pd

COLUMNS = ["paper", "table", "dataset", "context", "model", "metric", "statistic", "value", "source"]


def published(paper: str | None = None) -> pd.DataFrame:
    """All published numbers (optionally of one paper module), one row per number.

    Each module of this package defines ``TABLES``: a dict of table name -> DataFrame.
    Missing optional columns (e.g. ``context``) are filled with empty strings.
    """
    frames = []
    for info in pkgutil.iter_modules(__path__):
        if paper is not None and info.name != paper:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for table, frame in getattr(module, "TABLES", {}).items():
            frame = frame.copy()
            frame.insert(0, "table", table)
            frame.insert(0, "paper", info.name)
            for col in COLUMNS:
                if col not in frame:
                    frame[col] = ""
            frames.append(frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS]])
    if not frames:
        raise KeyError(f"no published tables for {paper!r}")
    return pd.concat(frames, ignore_index=True)
