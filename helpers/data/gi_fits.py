"""Norman et al.'s own genetic-interaction fits (``data/norman2019_gi_fits.csv``).

Norman et al. (Science 2019) fitted, for each of 125 doubles, the double's expression change
as a linear combination of its two singles' changes, :math:`\\delta_{AB} \\approx c_1 \\delta_A + c_2 \\delta_B`,
over well-expressed genes: by least squares (``coef_first``, ``coef_second``, fit correlation
``corr_fit``) and robustly by Theil–Sen (``ts_coef_first``, ``ts_coef_second``), with the
magnitude ``ts_norm`` = :math:`(|c_1| + |c_2|)/2`, the dominance ratio ``ts_ratio`` = :math:`c_1/c_2`,
and the fit quality ``ts_linear_dcor`` (distance correlation of the Theil–Sen fit and the
double). The file is their ``data_sharing/regr_fits_final.csv`` (repository
thomasmaxwellnorman/Perturbseq_GI), copied unchanged; :func:`read_norman_gi_fits` reads and checks it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..resources import data_dir

FILENAME = "norman2019_gi_fits.csv"

#: The columns of the published file, in its order.
COLUMNS = (
    "first",
    "second",
    "coef_first",
    "coef_second",
    "corr_fit",
    "dcor",
    "dcor_singles",
    "ts_coef_first",
    "ts_coef_second",
    "ts_linear_dcor",
    "ts_norm",
    "ts_ratio",
    "ts_mad_explained",
    "de_double",
    "de_first",
    "de_second",
)

#: Number of doubles in the published file.
N_DOUBLES = 125


def read_norman_gi_fits(path: str | Path | None = None, expected_rows: int | None = N_DOUBLES) -> pd.DataFrame:
    """The published fits, one row per double, indexed by the canonical double name (``A+B``, sorted).

    ``first`` and ``second`` keep the published orientation: ``*_coef_first`` belongs to ``first``.
    Checks: every column of :data:`COLUMNS`, ``expected_rows`` rows (None: any number), no double
    twice, no double of one gene, numbers where numbers belong (all finite except the ``de_*``
    columns), and ``ts_norm`` and ``ts_ratio`` equal to their definitions from the Theil–Sen
    coefficients (to the file's five decimals). Raises :class:`~helpers.errors.DataError` naming
    the problem.
    """
    path = Path(path) if path is not None else data_dir() / FILENAME
    if not path.exists():
        raise DataError(f"no Norman et al. interaction fits at {path}; the file ships as data/{FILENAME}.")
    frame = pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path.name} lacks the columns {missing}; expected Norman et al.'s regr_fits_final.csv layout {list(COLUMNS)}.")
    if expected_rows is not None and len(frame) != expected_rows:
        raise DataError(f"{path.name} has {len(frame)} doubles, expected {expected_rows} (the published file).")
    first, second = frame["first"].astype(str).str.strip(), frame["second"].astype(str).str.strip()
    if (first == second).any() or (first == "").any() or (second == "").any():
        raise DataError(f"{path.name}: a double needs two different genes, e.g. row {int(np.flatnonzero(first == second)[0])}.")
    names = ["+".join(sorted(pair)) for pair in zip(first, second)]
    dup = pd.Series(names)[pd.Series(names).duplicated()]
    if len(dup):
        raise DataError(f"{path.name} lists the double(s) {sorted(set(dup))[:3]} more than once.")
    numbers = [c for c in COLUMNS if c not in ("first", "second")]
    values = frame[numbers].apply(pd.to_numeric, errors="coerce")
    bad = [c for c in numbers if not c.startswith("de_") and not np.isfinite(values[c]).all()]
    if bad:
        raise DataError(f"{path.name}: non-numeric or missing values in {bad}.")
    c1, c2 = values["ts_coef_first"], values["ts_coef_second"]
    if not np.allclose(values["ts_norm"], (c1.abs() + c2.abs()) / 2, atol=2e-5):
        raise DataError(f"{path.name}: ts_norm is not (|ts_coef_first| + |ts_coef_second|) / 2; is it the published file?")
    if not np.allclose(values["ts_ratio"], c1 / c2, rtol=1e-3, atol=2e-5):
        raise DataError(f"{path.name}: ts_ratio is not ts_coef_first / ts_coef_second; is it the published file?")
    out = pd.concat([pd.DataFrame({"first": first, "second": second}), values], axis=1)
    out.index = pd.Index(names, name="perturbation")
    return out


__all__ = ["COLUMNS", "FILENAME", "N_DOUBLES", "read_norman_gi_fits"]
