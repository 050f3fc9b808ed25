"""Evaluate your own model: a predictions file against observed cells, every metric the inputs allow.

The steps of ``python -m helpers evaluate`` and of the ``evaluate`` report notebook:

1. :func:`load_inputs` reads the predictions in any layout (:mod:`helpers.models.predictions`:
   a pseudobulk table, cells in the canonical layout, cells in the cell-eval / Virtual Cell
   Challenge layout) and the truth (a registry dataset or an ``.h5ad`` of cells), checks that
   both describe the same genes (any order) and perturbations, and lists every perturbation
   left out with the reason;
2. :func:`run_evaluation` computes

   * every profile metric of :data:`helpers.metrics.METRICS` (each named after its reference,
     the control or the perturbed mean), the predicted changes taken against the **real**
     control cells; and, when the predictions hold control cells, the control-referenced
     metrics once more with the predicted changes taken against the **predicted** control
     cells, as cell-eval does (cell-eval issues #175, #183, #196);
   * with predicted cells: the energy distance in the principal components of the real cells
     and cell-eval's DE metrics (:data:`helpers.metrics.registry.CELL_METRICS`), with the
     predicted DE computed against the predicted and against the real control cells;
   * the calibration controls of Miller et al. (technical duplicate, interpolated duplicate,
     mean, no change) on the first halves of the real cells, with the model scored on the same
     first halves beside them: a floor and a ceiling for every metric;

3. the results are tidy rows (:data:`RESULT_COLUMNS`) written as ``evaluate[-MODEL].results.csv``;
   the model's headline rows (``scoreboard`` = True) join the book's scoreboard under its name.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..console import progress_bar
from ..data.canonical import CONTROL, NAMING_STYLES
from ..errors import DataError, ParameterError
from ..metrics import METRICS, deg_weights, evaluate
from ..metrics.calibration import dynamic_range_fraction
from ..metrics.de import (
    DEResult,
    differential_expression,
    energy_distances,
    fit_pca,
)
from ..metrics.registry import CELL_METRICS
from ..models.controls import INTERPOLATED_DUPLICATE, MEAN, NO_CHANGE, TECHNICAL_DUPLICATE, interpolated_duplicate, split_halves
from ..models.predictions import VALUES, Predictions, cells_from_anndata, read_predictions_file
from ..params import Param, Schema
from ..results import tidy
from ..stats.de import group_moments

if TYPE_CHECKING:
    from anndata import AnnData

NAME = "evaluate"

#: Model name of the example made on the fly when ``predictions="example"``.
EXAMPLE_MODEL = "example (half own cells, half pooled)"

#: The columns of the results table, in order.
RESULT_COLUMNS = [
    "dataset",
    "seed",
    "model",
    "perturbation",
    "ground_truth",
    "reference_of_prediction",
    "scoreboard",
    "metric",
    "value",
]

#: Values of ``ground_truth``: the model against all observed cells, and everything against the first halves.
ALL_CELLS = "all cells"
FIRST_HALF = "first half of the cells"

#: Values of ``reference_of_prediction``: what the predicted change is taken against.
REAL_CONTROL = "control (real cells)"
PREDICTED_CONTROL = "control (predicted cells)"
REAL_PERTURBED_MEAN = "perturbed mean (real cells)"
NO_REFERENCE = "none"

#: The calibration controls, positive first.
CONTROLS = (TECHNICAL_DUPLICATE, INTERPOLATED_DUPLICATE, MEAN, NO_CHANGE)

PARAMETERS = Schema(
    (
        Param(
            "predictions",
            "path",
            "example",
            "the predictions: an .h5ad of predicted cells or of perturbations, or a .csv/.tsv/.parquet table; "
            "'example' makes a small example from the truth",
            exists=False,  # 'example' is not a file; a missing file is refused by the reader with its name
        ),
        Param("truth", "str", "norman2019_subset", "observed cells: a dataset name (python -m helpers datasets) or an .h5ad file"),
        Param("model_name", "str", None, "the model's name in the results and on the scoreboard (default: the file name)", none=True),
        Param("control", "str", None, "label of the control cells as written in the files (default: detected)", none=True),
        Param("perturbation_column", "str", None, "obs column with each cell's perturbation (default: detected)", none=True),
        Param("values", "str", "auto", "what the predictions hold", choices=VALUES),
        Param("style", "str", "gears", "naming convention of the perturbation labels", choices=tuple(NAMING_STYLES)),
        Param(
            "evaluate_on",
            "str",
            "all",
            "'all': every perturbation of the truth must be predicted; 'predicted': only the predicted ones (the rest are listed)",
            choices=("all", "predicted"),
        ),
        Param(
            "perturbed_mean_from",
            "str",
            "evaluated",
            "the perturbed-mean reference: mean of the evaluated perturbations' observed profiles, or of the truth's other ones",
            choices=("evaluated", "others"),
        ),
        Param("calibration", "bool", True, "score the calibration controls of Miller et al. beside the model"),
        Param("seed", "int", 1, "seed of the halves of the calibration controls, of the PCA's cells and of the example", minimum=0),
        Param("n_pcs", "int", 30, "principal components of the energy distance", minimum=2),
        Param("fdr", "float", 0.05, "significance threshold of the DE metrics (BH-adjusted p)", minimum=1e-6, maximum=0.5),
        Param("add_to_scoreboard", "bool", True, "the model's headline rows join the scoreboard (never for the example)"),
    )
)

#: Metrics of the scoreboard's headline rows (all cells, real control as reference).
SCOREBOARD_METRICS = (
    "l2",
    "mae",
    "pearson_delta_vs_control",
    "pearson_delta_vs_perturbed_mean",
    "weighted_r2_delta_vs_perturbed_mean",
    "discrimination_score_l1_vs_control",
    "energy_distance_pca",
    "de_overlap_at_n_vs_control",
)


def results_name(model: str, example: bool = False) -> str:
    """Stem of the results file: ``evaluate`` for the example, ``evaluate-<model>`` for a model (a safe file name)."""
    if example:
        return NAME
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", model).strip("_") or "model"
    return f"{NAME}-{slug}"


# ----------------------------------------------------------------------------- inputs


def _registry_names() -> set[str]:
    from ..data import list_datasets

    return set(list_datasets()["name"])


def load_truth(
    truth: str | Path | AnnData, perturbation_column: str | None = None, control: str | None = None, style: str = "gears"
) -> Predictions:
    """The observed cells as :class:`Predictions` (cells, profiles, control profile).

    ``truth`` is a registry dataset (canonical form), an ``.h5ad`` of cells (canonical, cell-eval
    layout, or a published format :func:`helpers.data.load_dataset` reads) or an AnnData. The
    truth must hold cells of one context with control cells.
    """
    from ..data import load_dataset
    from ..data.readers import detect_format
    from ..models.predictions import PERTURBATION_COLUMNS

    if not isinstance(truth, str | Path):
        adata, source = truth, "in memory"
        column, label = perturbation_column, control
    elif str(truth) in _registry_names():
        adata, source = load_dataset(str(truth)), str(truth)
        column, label = "perturbation", "control"
    else:
        path = Path(str(truth)).expanduser()
        if path.suffix.lower() != ".h5ad":
            raise DataError(f"truth {truth!r} is neither a dataset name (python -m helpers datasets) nor an .h5ad file of observed cells.")
        if not path.exists():
            raise DataError(f"truth file {path} does not exist.")
        import anndata as ad

        adata, source = ad.read_h5ad(path), path.name
        column = (
            perturbation_column if perturbation_column in adata.obs else next((c for c in PERTURBATION_COLUMNS if c in adata.obs), None)
        )
        try:
            known = detect_format(adata) if perturbation_column is None else None
        except DataError:
            known = None
        if column is None or known is not None:
            adata = load_dataset(path)  # a published format (GEARS, scPerturb, Replogle, ...) with its own reader
            column, label = "perturbation", "control"
        else:
            # the control label given for the predictions applies to the truth when the truth uses it too
            label = control if control is not None and control in set(adata.obs[column].astype(str)) else None
    if "context" in adata.obs and adata.obs["context"].nunique() > 1:
        raise DataError(
            f"{source} holds cells of {adata.obs['context'].nunique()} contexts (cell lines); evaluate one at a time "
            "(subset the truth and the predictions to one context)."
        )
    found = cells_from_anndata(adata, source, column, label, "auto", style, require_control=True)
    if not found.is_cells:
        raise DataError(f"{source} holds one row per perturbation; the truth must be observed cells (an .h5ad of cells).")
    return found


@dataclass
class Inputs:
    """What :func:`load_inputs` read and checked.

    ``evaluated`` are the perturbations scored (in the truth's order); ``excluded`` lists every
    perturbation left out (``perturbation, where, reason``); ``notes`` what the reader should know.
    """

    predictions: Predictions
    truth: Predictions
    dataset: str
    model: str
    example: bool
    evaluated: list[str]
    excluded: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        """The inputs table of the report: one row for the predictions, one for the truth."""
        rows = [{"input": "predictions", **self.predictions.describe()}, {"input": "truth", **self.truth.describe()}]
        return pd.DataFrame(rows).set_index("input")


def example_predictions(truth: AnnData, seed: int = 1) -> AnnData:
    """A small example of predicted cells in the cell-eval layout (``target_gene``, ``non-targeting``).

    A pretend model whose cells are a mixture: each predicted cell of perturbation :math:`p` is,
    with probability 1/2, one of :math:`p`'s observed cells and otherwise one of the observed
    cells of all perturbations pooled (drawn with replacement, seeded), so its mean profile is
    about :math:`\tfrac12 \bar x_p + \tfrac12 \bar x_{pooled}`; as many cells as observed. Its
    control cells are the observed control cells, resampled. It uses the truth, so it is not a
    model to compare with: it shows what the report looks like.
    """
    import anndata as ad

    rng = np.random.default_rng(seed)
    labels = truth.obs["perturbation"].astype(str).to_numpy()
    perturbed = np.flatnonzero(labels != CONTROL)
    rows, names = [], []
    for p in pd.unique(labels):
        own = np.flatnonzero(labels == p)
        if p == CONTROL:
            rows.append(rng.choice(own, own.size, replace=True))
        else:
            mine = rng.random(own.size) < 0.5
            rows.append(np.where(mine, rng.choice(own, own.size, replace=True), rng.choice(perturbed, own.size, replace=True)))
        names += ["non-targeting" if p == CONTROL else p] * own.size
    X = sp.csr_matrix(truth.X[np.concatenate(rows)], dtype=np.float32)
    obs = pd.DataFrame({"target_gene": names}, index=[f"pred_{i}" for i in range(len(names))])
    return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=truth.var_names.copy()))


def _mismatch(kind: str, only_pred: Sequence[str], only_truth: Sequence[str]) -> str:
    def ex(names: Sequence[str]) -> str:
        names = list(names)
        return ", ".join(repr(n) for n in names[:5]) + (f", ... ({len(names)} in total)" if len(names) > 5 else "")

    parts = []
    if len(only_pred):
        parts.append(f"{len(only_pred)} {kind}s of the predictions are not in the truth ({ex(only_pred)})")
    if len(only_truth):
        parts.append(f"{len(only_truth)} {kind}s of the truth are not in the predictions ({ex(only_truth)})")
    return "; ".join(parts)


def load_inputs(
    predictions: str | Path | AnnData | pd.DataFrame = "example",
    truth: str | Path | AnnData = "norman2019_subset",
    model_name: str | None = None,
    control: str | None = None,
    perturbation_column: str | None = None,
    values: str = "auto",
    style: str = "gears",
    evaluate_on: str = "all",
    seed: int = 1,
) -> Inputs:
    """Read and check the predictions and the truth (see the module docstring).

    Raises :class:`DataError` when the genes differ (the same genes are needed, in any order),
    when the predictions name perturbations the truth does not have, or, with
    ``evaluate_on="all"``, when the truth has perturbations the predictions lack.
    """
    if evaluate_on not in ("all", "predicted"):
        raise ParameterError(f"evaluate_on must be 'all' or 'predicted', not {evaluate_on!r}.")
    truth_found = load_truth(truth, perturbation_column, control, style)
    dataset = truth_found.source if isinstance(truth, str) and truth_found.source == str(truth) else Path(str(truth)).stem
    if not isinstance(truth, str | Path):
        dataset = "in memory"
    example = isinstance(predictions, str) and predictions == "example"
    notes = []
    if example:
        model = model_name or EXAMPLE_MODEL
        found = cells_from_anndata(
            example_predictions(truth_found.cells, seed), "example (made on the fly)", perturbation_column, control, values, style
        )
        notes.append(
            "The predictions are an example made from the truth: each predicted cell is one of the perturbation's own observed "
            "cells or, as often, one of all perturbed cells pooled. It shows the report; it is not a model."
        )
    else:
        model = model_name or (Path(str(predictions)).stem if isinstance(predictions, str | Path) else "model")
        found = read_predictions_file(predictions, perturbation_column, control, values, style)
    # genes: the same set, any order
    pg, tg = pd.Index(found.profiles.columns), pd.Index(truth_found.profiles.columns)
    if set(pg) != set(tg):
        raise DataError(
            "the predictions and the truth do not have the same genes: "
            + _mismatch("gene", pg.difference(tg), tg.difference(pg))
            + ". Predict exactly the truth's genes (any order): add the missing genes, or restrict the truth to the genes you "
            "predicted and say so."
        )
    pp, tp = pd.Index(found.profiles.index), pd.Index(truth_found.profiles.index)
    unknown = pp.difference(tp, sort=False)
    if len(unknown):
        raise DataError(
            "the predictions name perturbations the truth does not have: "
            + _mismatch("perturbation", unknown, [])
            + f". The names are translated with the naming style {style!r} ({NAMING_STYLES[style]}); pass --style, check the "
            "control label (--control) and that the predictions were made for this dataset."
        )
    not_predicted = tp.difference(pp, sort=False)
    excluded = []
    if len(not_predicted):
        if evaluate_on == "all":
            raise DataError(
                "the truth has perturbations the predictions lack: "
                + _mismatch("perturbation", [], not_predicted)
                + ". Predict them, or pass evaluate_on='predicted' (--evaluate-on predicted) to score only the predicted "
                "perturbations; the others are then listed in the report."
            )
        excluded += [{"perturbation": p, "where": "truth", "reason": "not in the predictions"} for p in not_predicted]
    evaluated = [p for p in tp if p in set(pp)]
    if found.values == "change":
        notes.append("The predictions are changes from control: the truth's control profile is added back to each row.")
    if found.is_cells and found.control is None:
        notes.append(
            "The predicted cells include no control cells, so predicted changes are taken against the real control cells "
            "only (cell-eval needs predicted control cells)."
        )
    if found.control_label and truth_found.control_label and found.control_label != truth_found.control_label:
        notes.append(
            f"The control cells are labelled {found.control_label!r} in the predictions and {truth_found.control_label!r} in "
            "the truth; both are the control group."
        )
    return Inputs(
        predictions=found,
        truth=truth_found,
        dataset=dataset,
        model=model,
        example=example,
        evaluated=evaluated,
        excluded=pd.DataFrame(excluded, columns=["perturbation", "where", "reason"]),
        notes=notes,
    )


# ----------------------------------------------------------------------------- pieces


def top_de_from(de: DEResult, control_mean: np.ndarray, means: pd.DataFrame, k: int = 20) -> dict[str, list[str]]:
    """GEARS' ``top_non_dropout_de_20`` from a DE result: top ``k`` |t| genes (infinite t set to 0), dropouts removed.

    A dropout is a gene with mean 0 in the perturbation and not in control
    (:func:`helpers.stats.de.top_de_genes`, here from precomputed t statistics and means).
    """
    t = de.t.to_numpy(dtype=np.float64)
    t = np.where(np.isfinite(t), t, 0.0)
    genes = de.t.columns.to_numpy()
    ctrl_zero = np.asarray(control_mean) == 0
    out = {}
    M = means.reindex(index=de.t.index, columns=de.t.columns).to_numpy()
    for i, p in enumerate(de.t.index):
        order = np.argsort(-np.abs(t[i]), kind="stable")
        dropout = (M[i] == 0) & ~ctrl_zero
        order = order[~dropout[order]]
        out[p] = genes[order[:k]].tolist()
    return out


def miller_t_chunked(cells: AnnData, perturbations: Sequence[str], chunk: int = 20_000) -> pd.DataFrame:
    """:func:`helpers.stats.de.miller_t_scores` (scanpy's ``t-test_overestim_var`` against the rest), a block of cells at a time.

    Group sums and sums of squares are additive over blocks of cells, so the float64 copy of the
    matrix that :func:`helpers.stats.de.group_moments` makes is bounded by ``chunk`` cells:

    .. math:: t_{pg} = \\frac{\\bar x_{pg} - \\bar x_{rg}}{\\sqrt{s^2_{pg}/n_p + s^2_{rg}/n_p}}

    with :math:`r` all other cells. Infinite values are set to 0.
    """
    groups = pd.Categorical(cells.obs["perturbation"].astype(str).to_numpy())
    k = len(groups.categories)
    sums = np.zeros((k, cells.n_vars))
    sumsq = np.zeros((k, cells.n_vars))
    n = np.zeros(k)
    for start in range(0, cells.n_obs, chunk):
        part = cells[start : start + chunk]
        sub = pd.Categorical(groups[start : start + chunk], categories=groups.categories)
        with np.errstate(invalid="ignore", divide="ignore"):  # groups without cells in this block
            mean, var, m = group_moments(part, sub)
            s = np.nan_to_num(mean) * m[:, None]
            sums += s
            sumsq += np.nan_to_num(var) * np.clip(m[:, None] - 1, 0, None) + m[:, None] * np.nan_to_num(mean) ** 2
        n += m
    mean = sums / n[:, None]
    var = np.clip((sumsq - n[:, None] * mean**2) / (n[:, None] - 1), 0.0, None)
    idx = [list(groups.categories).index(p) for p in perturbations]
    n_p = n[idx][:, None]
    n_r = n.sum() - n_p
    mean_r = (sums.sum(axis=0) - sums[idx]) / n_r
    var_r = np.clip((sumsq.sum(axis=0) - sumsq[idx] - n_r * mean_r**2) / (n_r - 1), 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (mean[idx] - mean_r) / np.sqrt(var[idx] / n_p + var_r / n_p)
    t[~np.isfinite(t)] = 0.0
    return pd.DataFrame(t, index=pd.Index(list(perturbations), name="perturbation"), columns=cells.var_names.copy())


def _reference_label(metric: str) -> str:
    ref = METRICS[metric].reference
    return {"control": REAL_CONTROL, "perturbed_mean": REAL_PERTURBED_MEAN}.get(ref, NO_REFERENCE)


def score_profiles(
    pred: pd.DataFrame,
    truth: pd.DataFrame,
    control: pd.Series,
    perturbed_mean: pd.Series,
    de_genes: dict | None,
    weights: pd.DataFrame | None,
    predicted_control: pd.Series | None = None,
) -> pd.DataFrame:
    """Every profile metric as tidy rows ``perturbation, reference_of_prediction, metric, value``.

    With ``predicted_control``, the control-referenced metrics are computed once more on
    :math:`\\hat x_p - \\hat x_c + x_c`, whose change from the real control is the predicted
    change from the predicted control, :math:`\\hat x_p - \\hat x_c` (cell-eval's convention).
    """
    table = evaluate(pred, truth, control, perturbed_mean, de_genes=de_genes, deg_weights=weights)
    rows = tidy(table)
    rows.insert(1, "reference_of_prediction", rows["metric"].map(_reference_label))
    frames = [rows]
    if predicted_control is not None:
        names = [m for m in table.columns if METRICS[m].reference == "control"]
        shifted = pred - predicted_control.reindex(pred.columns).to_numpy() + control.reindex(pred.columns).to_numpy()
        alt = evaluate(shifted, truth, control, perturbed_mean, de_genes=de_genes, deg_weights=weights, metrics=names)
        alt_rows = tidy(alt)
        alt_rows.insert(1, "reference_of_prediction", PREDICTED_CONTROL)
        frames.append(alt_rows)
    return pd.concat(frames, ignore_index=True)


def score_de(real: DEResult, pred: DEResult, fdr: float) -> pd.DataFrame:
    """cell-eval's DE metrics (:data:`CELL_METRICS`) as tidy rows, ``reference_of_prediction`` = the predicted DE's reference."""
    columns = {}
    for name, info in CELL_METRICS.items():
        if info.needs == ("de",):
            columns[name] = info.function(real, pred, fdr=fdr)
    rows = tidy(pd.DataFrame(columns).rename_axis("perturbation"))
    rows.insert(1, "reference_of_prediction", pred.reference)
    return rows


def _with_real_controls(pred_cells: AnnData, truth_cells: AnnData) -> AnnData:
    """The predicted perturbed cells and the real control cells in one AnnData (the reference of the suite's convention)."""
    import anndata as ad

    p = pred_cells[pred_cells.obs["perturbation"].astype(str).to_numpy() != CONTROL]
    c = truth_cells[truth_cells.obs["perturbation"].astype(str).to_numpy() == CONTROL]
    out = ad.concat([p, c], join="inner", index_unique="-")
    return out[:, truth_cells.var_names].copy() if not out.var_names.equals(truth_cells.var_names) else out


def _reorder_genes(cells: AnnData, genes: pd.Index) -> AnnData:
    return cells if cells.var_names.equals(genes) else cells[:, genes].copy()


@dataclass
class Calibration:
    """The calibration controls on the first halves of the real cells (:func:`calibration_inputs`)."""

    truth_cells: AnnData  # first halves + all control cells
    truth: pd.DataFrame  # first-half profiles
    de: DEResult  # DE of the first halves against control
    second_rows: np.ndarray  # rows of the screen in the second halves
    profiles: dict[str, pd.DataFrame]  # control name -> predicted profiles
    cells: dict[str, Callable[[], AnnData]]  # control name -> its predicted cells (+ the real control cells), built on demand
    excluded: dict[str, str]


def calibration_inputs(truth_cells: AnnData, perturbations: Sequence[str], perturbed_mean: pd.Series, seed: int) -> Calibration:
    """Miller et al.'s four controls for the evaluated perturbations, as profiles and (three of them) as cells.

    The cells of each perturbation are halved (:func:`helpers.models.controls.split_halves`,
    ``seed``); the first halves are the ground truth. Profiles: technical duplicate = the
    second halves' means; interpolated duplicate from the BH-adjusted p of the DE of the first
    halves against control (:func:`helpers.metrics.de.differential_expression`); mean = the perturbed-mean reference; no change = the
    control mean. Cells: technical duplicate = the second-half cells; mean = as many cells drawn
    (seeded, without replacement) from the pooled second halves of all evaluated perturbations;
    no change = as many control cells drawn (with replacement). Every cell-level control's
    control cells are the real control cells.
    """
    import anndata as ad

    from ..data import profiles

    halves = split_halves(truth_cells, seed, perturbations)
    kept = [p for p in perturbations if p not in halves.excluded]
    truth = profiles(halves.first, include_control=False).loc[kept]
    duplicate = profiles(halves.second, include_control=False).loc[kept]
    control = profiles(truth_cells).loc[CONTROL]
    genes = truth.columns
    first_de = differential_expression(halves.first, kept, REAL_CONTROL)

    def repeat(profile: pd.Series) -> pd.DataFrame:
        return pd.DataFrame(np.tile(profile.reindex(genes).to_numpy(), (len(kept), 1)), index=truth.index.copy(), columns=genes.copy())

    p_adj = first_de.padj.reindex(index=kept, columns=genes)
    prof = {
        TECHNICAL_DUPLICATE: duplicate,
        INTERPOLATED_DUPLICATE: interpolated_duplicate(duplicate, perturbed_mean, p_adj),
        MEAN: repeat(perturbed_mean),
        NO_CHANGE: repeat(control),
    }
    rng = np.random.default_rng([int(seed), 7])
    labels = truth_cells.obs["perturbation"].astype(str).to_numpy()
    control_rows = np.flatnonzero(labels == CONTROL)
    second_labels = labels[halves.second_rows]
    mean_rows, mean_labels, none_rows = [], [], []
    for p in kept:
        n = int((second_labels == p).sum())
        mean_rows.append(rng.choice(halves.second_rows, n, replace=False))
        none_rows.append(rng.choice(control_rows, n, replace=True))
        mean_labels += [p] * n

    def cells_of(rows: np.ndarray, names: list[str]) -> Callable[[], AnnData]:
        def build() -> AnnData:
            part = truth_cells.X[np.concatenate([control_rows, rows])]
            index = [f"c{i}" for i in range(part.shape[0])]
            obs = pd.DataFrame({"perturbation": pd.Categorical([CONTROL] * control_rows.size + names)}, index=index)
            return ad.AnnData(X=part, obs=obs, var=pd.DataFrame(index=truth_cells.var_names.copy()))

        return build

    # built one at a time when scored, so that only one control's cells are held at once
    cells = {
        TECHNICAL_DUPLICATE: lambda: halves.second,
        MEAN: cells_of(np.concatenate(mean_rows), mean_labels),
        NO_CHANGE: cells_of(np.concatenate(none_rows), mean_labels),
    }
    return Calibration(halves.first, truth, first_de, halves.second_rows, prof, cells, dict(halves.excluded))


# ----------------------------------------------------------------------------- the evaluation


@dataclass
class Evaluated:
    """What :func:`run_evaluation` returns.

    ``results``: tidy rows (:data:`RESULT_COLUMNS`); ``skipped``: metric -> why it was not
    computed; ``excluded``: perturbations left out (``perturbation, where, reason``); ``notes``;
    ``seconds``: step -> wall time; ``de_counts``: significant genes per perturbation (real and
    predicted, by reference); ``control_shift``: L2 distance of the predicted control profile from
    the real one (None without predicted controls), and for scale the median L2 of the observed
    changes from control.
    """

    inputs: Inputs
    results: pd.DataFrame
    skipped: dict[str, str]
    excluded: pd.DataFrame
    notes: list[str]
    seconds: dict[str, float]
    de_counts: pd.DataFrame | None
    control_shift: tuple[float, float] | None

    @property
    def model(self) -> str:
        return self.inputs.model


def run_evaluation(
    inputs: Inputs,
    perturbed_mean_from: str = "evaluated",
    calibration: bool = True,
    seed: int = 1,
    n_pcs: int = 30,
    fdr: float = 0.05,
    add_to_scoreboard: bool = True,
    progress: bool = True,
    pca_cells: int = 5_000,
) -> Evaluated:
    """Score the predictions of :func:`load_inputs` with every metric the inputs allow (see the module docstring).

    References: the control profile is the mean of the real control cells; the perturbed mean
    is the mean of the observed profiles of the evaluated perturbations (``"evaluated"``;
    each perturbation's own profile counts with weight 1/N, as in cell-eval's mean baseline) or
    of the truth's perturbations that are not evaluated (``"others"``, e.g. the training
    perturbations when the truth is the whole screen). DEG weights: Miller et al.'s t statistics
    against the rest on the real cells; top-20 DE genes: GEARS' per-perturbation choice on the
    real cells.
    """
    seconds, notes, skipped = {}, list(inputs.notes), {}
    tick = time.perf_counter()
    pred, truth = inputs.predictions, inputs.truth
    perts = list(inputs.evaluated)
    genes = truth.profiles.columns
    excluded = inputs.excluded.copy()
    truth_cells = truth.cells
    control = truth.control.reindex(genes)
    if perturbed_mean_from == "evaluated":
        perturbed_mean = truth.profiles.loc[perts].mean().rename("perturbed_mean")
        pm_note = f"the mean of the {len(perts)} evaluated perturbations' observed profiles"
    elif perturbed_mean_from == "others":
        others = [p for p in truth.profiles.index if p not in set(perts)]
        if not others:
            raise ParameterError(
                "perturbed_mean_from='others' needs perturbations in the truth that are not evaluated (e.g. the training "
                "perturbations, with evaluate_on='predicted'); here every perturbation of the truth is evaluated."
            )
        perturbed_mean = truth.profiles.loc[others].mean().rename("perturbed_mean")
        pm_note = f"the mean of the observed profiles of the {len(others)} perturbations of the truth that are not evaluated"
    else:
        raise ParameterError(f"perturbed_mean_from must be 'evaluated' or 'others', not {perturbed_mean_from!r}.")
    notes.append(
        f"Perturbed-mean reference: {pm_note}. Control reference: the mean of the {int((truth_cells.obs['perturbation'] == CONTROL).sum()):,} real control cells."
    )

    pred_profiles = pred.profiles.reindex(columns=genes).loc[perts]
    if pred.values == "change":
        pred_profiles = pred_profiles + control.to_numpy()
    pred_control = pred.control.reindex(genes) if pred.control is not None and pred.values != "change" else None
    steps = ["real DE", "profile metrics", "cell metrics", "calibration controls"]
    bar = progress_bar(total=len(steps), desc="evaluate", disable=not progress)

    def step(name: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        seconds[name] = now - tick
        tick = now
        bar.set_postfix_str(name)
        bar.update(1)

    seconds["reading and checks"] = 0.0
    # the real DE of every evaluated perturbation against control (top-20 genes, DE metrics)
    keep = truth_cells.obs["perturbation"].astype(str).isin(set(perts) | {CONTROL}).to_numpy()
    real_cells = truth_cells if keep.all() else truth_cells[keep].copy()
    real_de = differential_expression(real_cells, perts, REAL_CONTROL)
    means = truth.profiles.loc[perts]
    de_genes = top_de_from(real_de, control.to_numpy(), means)
    weights = deg_weights(miller_t_chunked(truth_cells, perts))
    step("real DE")

    frames = []

    def add(rows: pd.DataFrame, model: str, ground_truth: str) -> None:
        rows = rows.copy()
        rows.insert(0, "model", model)
        rows.insert(2, "ground_truth", ground_truth)
        frames.append(rows)

    add(score_profiles(pred_profiles, means, control, perturbed_mean, de_genes, weights, pred_control), inputs.model, ALL_CELLS)
    step("profile metrics")

    de_counts = None
    control_shift = None
    if pred_control is not None:
        observed = np.sqrt(((means.to_numpy() - control.to_numpy()) ** 2).sum(axis=1))
        control_shift = (float(np.sqrt(((pred_control - control) ** 2).sum())), float(np.median(observed)))
    space = None
    pred_de = {}
    if pred.is_cells:
        pcells = _reorder_genes(pred.cells, genes)
        keep = pcells.obs["perturbation"].astype(str).isin(set(perts) | {CONTROL}).to_numpy()
        pcells = pcells if keep.all() else pcells[keep].copy()
        space = fit_pca(real_cells, n_pcs, max_cells=pca_cells, seed=seed)
        ed = energy_distances(pcells, real_cells, space, perts).to_frame()
        ed_rows = tidy(ed)
        ed_rows.insert(1, "reference_of_prediction", NO_REFERENCE)
        add(ed_rows, inputs.model, ALL_CELLS)
        if pred.control is not None:
            pred_de[PREDICTED_CONTROL] = differential_expression(pcells, perts, PREDICTED_CONTROL)
        pred_de[REAL_CONTROL] = differential_expression(_with_real_controls(pcells, real_cells), perts, REAL_CONTROL)
        for de in pred_de.values():
            add(score_de(real_de, de, fdr), inputs.model, ALL_CELLS)
        counts = {("real", REAL_CONTROL): real_de.significant(fdr)}
        counts.update({("predicted", ref): de.significant(fdr) for ref, de in pred_de.items()})
        de_counts = pd.DataFrame(counts)
        de_counts.columns.names = ["cells", "reference"]
    else:
        for name in CELL_METRICS:
            skipped[name] = "needs predicted cells; the predictions are a table of profiles"
    step("cell metrics")

    if calibration:
        small = [p for p in perts if int((truth_cells.obs["perturbation"] == p).sum()) < 4]
        cal_perts = [p for p in perts if p not in set(small)]
        excluded = pd.concat(
            [
                excluded,
                pd.DataFrame(
                    [
                        {"perturbation": p, "where": "calibration controls", "reason": "fewer than 4 observed cells, too few to halve"}
                        for p in small
                    ],
                    columns=excluded.columns,
                ),
            ],
            ignore_index=True,
        )
        if len(cal_perts) < 2:
            notes.append("The calibration controls need at least 2 perturbations with 4 or more observed cells; none were scored.")
        else:
            cal = calibration_inputs(truth_cells, cal_perts, perturbed_mean, seed)
            cal_perts = list(cal.truth.index)
            first_de, first_means = cal.de, cal.truth
            first_genes = top_de_from(first_de, control.to_numpy(), first_means)
            without_second = np.ones(truth_cells.n_obs, dtype=bool)
            without_second[cal.second_rows] = False
            first_weights = deg_weights(miller_t_chunked(truth_cells[without_second], cal_perts))
            pc = pred_profiles.loc[cal_perts]
            add(
                score_profiles(pc, first_means, control, perturbed_mean, first_genes, first_weights, pred_control), inputs.model, FIRST_HALF
            )
            for name, prof in cal.profiles.items():
                add(score_profiles(prof, first_means, control, perturbed_mean, first_genes, first_weights), name, FIRST_HALF)
            if pred.is_cells:
                first_cells = cal.truth_cells
                ed_rows = tidy(energy_distances(pcells, first_cells, space, cal_perts).to_frame())
                ed_rows.insert(1, "reference_of_prediction", NO_REFERENCE)
                add(ed_rows, inputs.model, FIRST_HALF)
                for de in pred_de.values():
                    sub = DEResult(
                        de.lfc.loc[cal_perts],
                        de.t.loc[cal_perts],
                        de.p.loc[cal_perts],
                        de.padj.loc[cal_perts],
                        de.reference,
                        de.n_cells.loc[cal_perts],
                    )
                    add(score_de(first_de, sub, fdr), inputs.model, FIRST_HALF)
                for name, build in cal.cells.items():
                    cells = build()
                    ed_rows = tidy(energy_distances(cells, first_cells, space, cal_perts).to_frame())
                    ed_rows.insert(1, "reference_of_prediction", NO_REFERENCE)
                    add(ed_rows, name, FIRST_HALF)
                    add(score_de(first_de, differential_expression(cells, cal_perts, REAL_CONTROL), fdr), name, FIRST_HALF)
            if cal.excluded:
                notes.append(f"{len(cal.excluded)} perturbations could not be halved: {cal.excluded}.")
    step("calibration controls")
    bar.close()

    results = pd.concat(frames, ignore_index=True)
    results.insert(0, "seed", seed)
    results.insert(0, "dataset", inputs.dataset)
    results["scoreboard"] = (
        bool(add_to_scoreboard and not inputs.example)
        & (results["model"] == inputs.model)
        & (results["ground_truth"] == ALL_CELLS)
        & results["reference_of_prediction"].isin([REAL_CONTROL, REAL_PERTURBED_MEAN, NO_REFERENCE])
        & results["metric"].isin(SCOREBOARD_METRICS)
    )
    results = results[RESULT_COLUMNS]
    return Evaluated(inputs, results, skipped, excluded, notes, seconds, de_counts, control_shift)


# ----------------------------------------------------------------------------- tables and sentences


def metric_info(metric: str) -> dict[str, object]:
    """Reference, direction and perfect value of a metric of either registry."""
    info = METRICS.get(metric) or CELL_METRICS.get(metric)
    if info is None:
        return {"reference": None, "higher_is_better": None, "perfect": np.nan, "description": ""}
    return {
        "reference": info.reference or "none",
        "higher_is_better": info.higher_is_better,
        "perfect": info.perfect,
        "description": info.description,
    }


def summary_table(results: pd.DataFrame, ground_truth: str = ALL_CELLS, model: str | None = None) -> pd.DataFrame:
    """Mean and median over perturbations per model, reference of the prediction and metric (undefined values counted)."""
    rows = results[results["ground_truth"] == ground_truth]
    if model is not None:
        rows = rows[rows["model"] == model]
    g = rows.groupby(["model", "reference_of_prediction", "metric"], sort=False)["value"]
    out = g.agg(mean="mean", median="median", n="count")
    out["n_undefined"] = g.apply(lambda v: int(v.isna().sum()))
    out = out.reset_index()
    out["higher_is_better"] = out["metric"].map(lambda m: metric_info(m)["higher_is_better"])
    order = {m: i for i, m in enumerate(list(METRICS) + list(CELL_METRICS))}
    out["_o"] = out["metric"].map(order)
    return out.sort_values(["model", "_o", "reference_of_prediction"], kind="stable").drop(columns="_o").reset_index(drop=True)


def floor_and_ceiling(results: pd.DataFrame, model: str) -> pd.DataFrame:
    """The model beside the calibration controls, on the first halves (mean over perturbations).

    One row per metric and reference of the prediction. ``floor`` is the better of the two
    negative controls (mean, no change), ``ceiling`` the technical duplicate; ``position`` =
    (model − floor) / (ceiling − floor): 0 at the floor, 1 at the ceiling, above 1 better than a
    technical duplicate, below 0 worse than an uninformative prediction. ``drf`` is the dynamic
    range fraction of the metric (Miller et al.; median over perturbations, technical duplicate
    against the negative control of :func:`helpers.metrics.calibration.negative_control_of`,
    registry metrics only): how well the metric separates the ceiling from the floor.
    """
    from ..metrics.calibration import negative_control_of

    rows = results[results["ground_truth"] == FIRST_HALF]
    if rows.empty:
        return pd.DataFrame()
    out = []
    for (metric, ref), sub in rows.groupby(["metric", "reference_of_prediction"], sort=False):
        means = sub.groupby("model")["value"].mean()
        if model not in means or TECHNICAL_DUPLICATE not in means:
            continue
        info = metric_info(metric)
        higher = bool(info["higher_is_better"])
        negs = [means.get(MEAN, np.nan), means.get(NO_CHANGE, np.nan)]
        defined = [v for v in negs if np.isfinite(v)]
        floor = (max(defined) if higher else min(defined)) if defined else np.nan
        ceiling = means[TECHNICAL_DUPLICATE]
        with np.errstate(invalid="ignore", divide="ignore"):
            position = (means[model] - floor) / (ceiling - floor) if np.isfinite(floor) and ceiling != floor else np.nan
        drf = np.nan
        if metric in METRICS:
            neg_name = negative_control_of(metric)
            wide = sub.pivot_table(index="perturbation", columns="model", values="value", aggfunc="first", dropna=False)
            if neg_name in wide and TECHNICAL_DUPLICATE in wide:
                drf = dynamic_range_fraction(wide[TECHNICAL_DUPLICATE], wide[neg_name], metric).median
        out.append(
            {
                "metric": metric,
                "reference_of_prediction": ref,
                "higher_is_better": higher,
                "model": means[model],
                TECHNICAL_DUPLICATE: ceiling,
                INTERPOLATED_DUPLICATE: means.get(INTERPOLATED_DUPLICATE, np.nan),
                MEAN: means.get(MEAN, np.nan),
                NO_CHANGE: means.get(NO_CHANGE, np.nan),
                "floor": floor,
                "position": position,
                "drf": drf,
            }
        )
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    order = {m: i for i, m in enumerate(list(METRICS) + list(CELL_METRICS))}
    frame["_o"] = frame["metric"].map(order)
    return (
        frame.sort_values(["_o", "reference_of_prediction"], kind="stable")
        .drop(columns="_o")
        .set_index(["metric", "reference_of_prediction"])
    )


def reference_comparison(results: pd.DataFrame, model: str) -> pd.DataFrame:
    """The model's mean of each control-referenced metric with the predicted changes against the real and the predicted controls."""
    rows = results[(results["ground_truth"] == ALL_CELLS) & (results["model"] == model)]
    rows = rows[rows["reference_of_prediction"].isin([REAL_CONTROL, PREDICTED_CONTROL])]
    if rows.empty or PREDICTED_CONTROL not in set(rows["reference_of_prediction"]):
        return pd.DataFrame()
    wide = rows.groupby(["metric", "reference_of_prediction"], sort=False)["value"].mean().unstack("reference_of_prediction")
    wide = wide.dropna(subset=[PREDICTED_CONTROL])
    wide["difference"] = wide[PREDICTED_CONTROL] - wide[REAL_CONTROL]
    return wide[[REAL_CONTROL, PREDICTED_CONTROL, "difference"]]


def conclusions(evaluated: Evaluated, table: pd.DataFrame) -> list[str]:
    """Sentences of the report, computed from the run's numbers (``table``: :func:`floor_and_ceiling`)."""
    model = evaluated.model
    lines = []
    n = len(evaluated.inputs.evaluated)
    lines.append(
        f"**{model}** was scored on {n} perturbations of {evaluated.inputs.dataset} "
        f"({evaluated.inputs.predictions.layout}; {evaluated.inputs.predictions.values_note})."
    )
    if len(evaluated.excluded):
        lines.append(f"{len(evaluated.excluded)} perturbation entries were left out; the table above gives each reason.")
    if table is not None and not table.empty:
        t = table[table["position"].notna()]
        above_floor = int((t["position"] > 0).sum())
        at_ceiling = int((t["position"] >= 1).sum())
        lines.append(
            f"Against the first halves of the cells, the model is better than both uninformative controls (mean and no change) "
            f"on {above_floor} of {len(t)} metric-reference pairs, and as good as the technical duplicate or better on {at_ceiling}."
        )
        if len(t):
            best = t["position"].idxmax()
            worst = t["position"].idxmin()
            lines.append(
                f"Its position between floor and ceiling ranges from {t.loc[worst, 'position']:.2f} ({worst[0]}, {worst[1]}) to "
                f"{t.loc[best, 'position']:.2f} ({best[0]}, {best[1]})."
            )
        poor = table[(table["drf"].notna()) & (table["drf"] < 0.2)]
        if len(poor):
            names = ", ".join(sorted({m for m, _ in poor.index}))
            lines.append(
                f"On this dataset the technical duplicate barely beats the negative control on {names} (dynamic range fraction "
                "below 0.2): these metrics hardly tell a good prediction from an uninformative one here, so read them with care."
            )
    comp = reference_comparison(evaluated.results, model)
    if not comp.empty:
        big = comp["difference"].abs().idxmax()
        lines.append(
            f"Taking the predicted changes against the predicted instead of the real control cells changes the control-referenced "
            f"metrics by up to {comp.loc[big, 'difference']:+.3f} ({big})."
        )
    if evaluated.control_shift is not None:
        shift, typical = evaluated.control_shift
        lines.append(
            f"The predicted control profile lies at L2 = {shift:.3f} from the real one; the median observed change of a perturbation "
            f"from control is L2 = {typical:.3f}."
        )
    return lines


__all__ = [
    "ALL_CELLS",
    "CONTROLS",
    "EXAMPLE_MODEL",
    "FIRST_HALF",
    "Evaluated",
    "Inputs",
    "NAME",
    "PARAMETERS",
    "PREDICTED_CONTROL",
    "REAL_CONTROL",
    "RESULT_COLUMNS",
    "calibration_inputs",
    "conclusions",
    "example_predictions",
    "floor_and_ceiling",
    "load_inputs",
    "load_truth",
    "miller_t_chunked",
    "reference_comparison",
    "results_name",
    "run_evaluation",
    "score_de",
    "score_profiles",
    "summary_table",
    "top_de_from",
]
