"""Genetic interactions of double perturbations, and how well models detect them.

Ahlmann-Eltze, Huber & Anders (Nature Methods 2025) call a (double, gene)
pair *non-additive* when the observed expression of the double departs from the additive
expectation by more than an empirical null allows:

1. :func:`deviation_from_additive`: for double ``AB`` and gene ``g``,
   :math:`e = x_{AB} - (x_A + x_B - x_c)`, with pseudobulk profiles ``x`` and control ``c``.
2. :func:`fit_interaction_null`: a local-fdr fit (:func:`helpers.stats.locfdr.locfdr`,
   maximum-likelihood null) of all deviations; the thresholds are the negative and the
   positive deviation whose local fdr is closest to 0.05.
3. :func:`interaction_classes`: synergy / buffering / opposite / other / additive per pair.
4. Model-level detection (:func:`detection_pairs`, :func:`tpr_fdp_curve`,
   :func:`auc_scores`): a model "predicts an interaction" in proportion to how far its
   prediction departs from the additive one, :math:`|\\hat{x}_{AB,g} - a_{AB,g}|`; the pairs are
   ranked by it and compared with the observed non-additive pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..data.canonical import CONTROL, target_genes
from ..errors import DataError
from .locfdr import LocfdrError, LocfdrResult, fdr_thresholds, locfdr

if TYPE_CHECKING:
    from anndata import AnnData
    from numpy.typing import ArrayLike

#: Interaction classes, in display order.
CLASSES = ("synergy", "buffering", "opposite", "other", "additive")

#: The two classification rules of :func:`interaction_classes`.
RULES = {
    "published": "Ahlmann-Eltze et al. (A.5.3): synergy, buffering and 'cryptic' (here 'opposite') require both singles "
    "AND the double to change in the same direction; since a double that crosses control changes in the other "
    "direction, 'opposite' can never occur (the paper reports 0) and such pairs are counted as 'other'.",
    "suite": "as published, but the same-direction condition asks only that the two singles agree, so a double "
    "that crosses to the other side of control is 'opposite' (the paper's intended 'cryptic' class).",
}


# ---------------------------------------------------------------------------------------
# observed deviations from additivity
# ---------------------------------------------------------------------------------------


def doubles_with_singles(perturbations: Sequence[str], singles: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Split doubles into those whose two singles are measured and the others (with the reason)."""
    have = set(singles)
    ok, excluded = [], {}
    for p in perturbations:
        genes = target_genes(p)
        if len(genes) != 2:
            continue
        missing = [g for g in genes if g not in have]
        if missing:
            excluded[str(p)] = f"single perturbation {', '.join(missing)} not measured"
        else:
            ok.append(str(p))
    return ok, excluded


def additive_expectation(profiles: pd.DataFrame, doubles: Sequence[str], control: pd.Series | None = None) -> pd.DataFrame:
    """Additive expectation of every double: :math:`a_{AB} = x_c + (x_A - x_c) + (x_B - x_c)`.

    ``profiles`` holds the pseudobulk profiles (perturbations x genes) of at least the
    singles, and the control row unless ``control`` is given.
    """
    control = _control(profiles, control)
    ctrl = control.reindex(profiles.columns).to_numpy()
    rows = []
    for p in doubles:
        a, b = target_genes(p)
        for g in (a, b):
            if g not in profiles.index:
                raise DataError(f"the additive expectation of {p} needs the single perturbation {g}, which is not measured.")
        rows.append(profiles.loc[a].to_numpy() + profiles.loc[b].to_numpy() - ctrl)
    return pd.DataFrame(
        np.array(rows).reshape(len(rows), profiles.shape[1]),
        index=pd.Index(list(doubles), name="perturbation"),
        columns=profiles.columns.copy(),
    )


def deviation_from_additive(profiles: pd.DataFrame, doubles: Sequence[str], control: pd.Series | None = None) -> pd.DataFrame:
    """Observed deviation from additivity, :math:`e_{AB,g} = x_{AB,g} - (x_{A,g} + x_{B,g} - x_{c,g})` (doubles x genes)."""
    missing = [p for p in doubles if p not in profiles.index]
    if missing:
        raise DataError(f"no observed profile for {len(missing)} doubles, e.g. {missing[:3]}")
    add = additive_expectation(profiles, doubles, control)
    return profiles.loc[list(doubles)] - add


def _control(profiles: pd.DataFrame, control: pd.Series | None) -> pd.Series:
    if control is not None:
        return control
    if CONTROL not in profiles.index:
        raise DataError("pass the control profile or include a 'control' row in profiles.")
    return profiles.loc[CONTROL]


# ---------------------------------------------------------------------------------------
# the empirical null and its thresholds
# ---------------------------------------------------------------------------------------


@dataclass
class InteractionNull:
    """Thresholds for calling a deviation from additivity non-additive.

    ``lower``/``upper`` are NaN when no threshold could be set (the null fit failed, or no
    deviation reaches the target fdr on that side); ``message`` then says why. ``fit`` is
    the :class:`~helpers.stats.locfdr.LocfdrResult` (None when the fit failed).
    """

    lower: float
    upper: float
    target_fdr: float
    n_values: int
    n_doubles: int
    fit: LocfdrResult | None = None
    message: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether at least one threshold exists."""
        return not (np.isnan(self.lower) and np.isnan(self.upper))

    def is_nonadditive(self, deviation: ArrayLike) -> np.ndarray:
        """Boolean array: deviation beyond a threshold (a NaN threshold never calls)."""
        e = np.asarray(deviation, dtype=float)
        up = np.inf if np.isnan(self.upper) else self.upper
        lo = -np.inf if np.isnan(self.lower) else self.lower
        return (e > up) | (e < lo)

    def summary(self) -> pd.Series:
        out = {
            "n_doubles": self.n_doubles,
            "n_values": self.n_values,
            "target_fdr": self.target_fdr,
            "lower_threshold": self.lower,
            "upper_threshold": self.upper,
        }
        if self.fit is not None:
            out.update({"null_delta": self.fit.delta, "null_sigma": self.fit.sigma, "null_p0": self.fit.p0})
        return pd.Series(out)


def undetected_pairs(profiles: pd.DataFrame, doubles: Sequence[str], control: pd.Series | None = None) -> pd.DataFrame:
    """(double, gene) pairs whose gene is zero in the double, both singles and control (doubles x genes, bool).

    Their deviation from additivity is exactly 0 by construction, not by measurement: they
    say nothing about interactions, and a mass of exact zeros breaks the empirical-null fit.
    """
    control = _control(profiles, control)
    zero_c = control.reindex(profiles.columns).to_numpy() == 0
    rows = []
    for p in doubles:
        a, b = target_genes(p)
        rows.append(zero_c & (profiles.loc[p].to_numpy() == 0) & (profiles.loc[a].to_numpy() == 0) & (profiles.loc[b].to_numpy() == 0))
    return pd.DataFrame(
        np.array(rows).reshape(len(rows), profiles.shape[1]),
        index=pd.Index(list(doubles), name="perturbation"),
        columns=profiles.columns.copy(),
    )


def fit_interaction_null(
    deviation: pd.DataFrame | np.ndarray,
    target_fdr: float = 0.05,
    nulltype: int = 1,
    exclude: pd.DataFrame | np.ndarray | None = None,
    fallback: bool = True,
    **locfdr_kwargs,
) -> InteractionNull:
    """Fit the empirical null of the deviations and derive the thresholds.

    ``locfdr(e, nulltype = 1)`` on all values of ``deviation`` (except where ``exclude`` is
    True, e.g. :func:`undetected_pairs`); ``upper`` = the positive deviation whose local fdr
    is closest to ``target_fdr``, ``lower`` likewise among the negative ones
    (:func:`helpers.stats.locfdr.fdr_thresholds`). If the maximum-likelihood null cannot be
    fitted and ``fallback`` is set, the central-matching null (``nulltype = 2``) is tried and
    a note says so. Never raises on small or degenerate input: the result then has NaN
    thresholds and a ``message``.
    """
    values = np.asarray(deviation, dtype=float)
    n_doubles = values.shape[0] if values.ndim == 2 else 0
    notes = []
    if exclude is not None:
        mask = np.asarray(exclude, dtype=bool)
        if mask.shape != values.shape:
            raise ValueError("exclude must have the shape of deviation")
        if mask.any():
            notes.append(
                f"{int(mask.sum()):,} pairs whose gene is undetected in the double, both singles and control "
                "(deviation 0 by construction) are left out of the fit."
            )
        values = values[~mask]
    values = values.ravel()
    values = values[np.isfinite(values)]
    try:
        fit = locfdr(values, nulltype=nulltype, **locfdr_kwargs)
    except LocfdrError as err:
        fit, reason = None, str(err)
        if fallback and nulltype == 1:
            try:
                fit = locfdr(values, nulltype=2, **locfdr_kwargs)
                notes.append(f"the maximum-likelihood null failed ({err}); the central-matching null (nulltype=2) is used instead.")
            except LocfdrError as err2:
                reason = f"{err} The central-matching null failed too: {err2}"
        if fit is None:
            return InteractionNull(
                np.nan,
                np.nan,
                target_fdr,
                values.size,
                n_doubles,
                None,
                f"no empirical null could be fitted to {values.size} deviations: {reason}",
                notes,
            )
    lower, upper = fdr_thresholds(values, fit.fdr, target_fdr)
    message = ""
    if np.isnan(lower) and np.isnan(upper):
        message = f"no deviation reaches a local fdr near {target_fdr}: no pair can be called non-additive."
    elif np.isnan(lower) or np.isnan(upper):
        side = "negative" if np.isnan(lower) else "positive"
        message = f"no {side} deviation reaches a local fdr near {target_fdr}: none is called non-additive on that side."
    return InteractionNull(lower, upper, target_fdr, values.size, n_doubles, fit, message, notes + list(fit.messages))


# ---------------------------------------------------------------------------------------
# classes
# ---------------------------------------------------------------------------------------


def interaction_classes(
    profiles: pd.DataFrame,
    doubles: Sequence[str],
    lower: float,
    upper: float,
    control: pd.Series | None = None,
    rule: str = "published",
) -> pd.DataFrame:
    """Class of every (double, gene) pair relative to the additive expectation.

    With :math:`\\Delta_A = x_A - c`, :math:`\\Delta_B`, :math:`\\Delta_{AB}` the changes from
    control, :math:`a = \\Delta_A + \\Delta_B` the additive change and
    :math:`e = \\Delta_{AB} - a` the deviation:

    * **synergy**: same direction, and the double goes further than additive
      (:math:`a > 0, e > u` or :math:`a < 0, e < l`);
    * **opposite** (the paper's "cryptic"): same direction, the deviation points back towards
      control beyond the threshold, and the double ends on the other side of control;
    * **buffering**: same direction, deviation towards control beyond the threshold, not opposite;
    * **other**: beyond a threshold but not same direction;
    * **additive**: everything else.

    "Same direction" depends on ``rule`` (:data:`RULES`): ``"published"`` requires
    :math:`\\operatorname{sign}\\Delta_A = \\operatorname{sign}\\Delta_B = \\operatorname{sign}\\Delta_{AB}`
    (so "opposite" is empty by construction, as in the paper); ``"suite"`` requires only
    :math:`\\operatorname{sign}\\Delta_A = \\operatorname{sign}\\Delta_B \\ne 0`.
    A NaN threshold calls nothing on its side.

    Returns
    -------
    DataFrame
        Long table: ``perturbation, gene, change_double, change_additive, deviation, class``.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {sorted(RULES)}, not {rule!r}")
    control = _control(profiles, control)
    genes = profiles.columns
    ctrl = control.reindex(genes).to_numpy()
    dA = np.array([profiles.loc[target_genes(p)[0]].to_numpy() - ctrl for p in doubles]).reshape(len(doubles), len(genes))
    dB = np.array([profiles.loc[target_genes(p)[1]].to_numpy() - ctrl for p in doubles]).reshape(len(doubles), len(genes))
    dAB = profiles.loc[list(doubles)].to_numpy() - ctrl
    add = dA + dB
    e = dAB - add
    up = np.inf if np.isnan(upper) else upper
    lo = -np.inf if np.isnan(lower) else lower
    above, below = e > up, e < lo
    beyond = above | below
    sA, sB, sAB = np.sign(dA), np.sign(dB), np.sign(dAB)
    if rule == "published":
        same = (sA == sB) & (sAB == sA)
    else:
        same = (sA == sB) & (sA != 0)
    away = ((add > 0) & above) | ((add < 0) & below)
    toward = ((add > 0) & below) | ((add < 0) & above)
    crossed = sAB == -np.sign(add)
    synergy = same & away
    opposite = same & toward & crossed
    buffering = same & toward & ~opposite
    other = beyond & ~(synergy | opposite | buffering)
    label = np.select([synergy, opposite, buffering, other], ["synergy", "opposite", "buffering", "other"], "additive")
    return pd.DataFrame(
        {
            "perturbation": np.repeat(np.asarray(doubles, dtype=object), len(genes)),
            "gene": np.tile(np.asarray(genes, dtype=object), len(doubles)),
            "change_double": dAB.ravel(),
            "change_additive": add.ravel(),
            "deviation": e.ravel(),
            "class": pd.Categorical(label.ravel(), categories=list(CLASSES)),
        }
    )


def class_counts(classes: pd.DataFrame) -> pd.DataFrame:
    """Number and percentage of pairs per class (all classes listed, zeros included)."""
    counts = classes["class"].value_counts().reindex(list(CLASSES), fill_value=0)
    return pd.DataFrame({"pairs": counts.astype(int), "percent": 100 * counts / max(1, counts.sum())}).rename_axis("class")


def compare_with_truth(classes: pd.DataFrame, truth: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame]:
    """How well the observed-data analysis recovers known interactions (simulated data).

    ``truth`` is the long table of truly interacting pairs (``perturbation, gene, label``,
    e.g. :func:`helpers.data.simulate.interaction_labels`); every other pair of ``classes``
    is truly additive. A pair is *detected* when its class is not ``additive``.

    Returns
    -------
    (Series, DataFrame)
        ``precision`` (share of detected pairs that truly interact), ``recall`` (share of
        true interactions detected), the counts behind them; and the cross-table of true
        label (rows, ``none`` for truly additive) against called class (columns).
    """
    keys = ["perturbation", "gene"]
    lab = truth[keys + ["label"]].astype({"perturbation": str, "gene": str})
    merged = classes[keys + ["class"]].astype({"perturbation": str, "gene": str}).merge(lab, on=keys, how="left")
    merged["label"] = merged["label"].fillna("none")
    detected = merged["class"].astype(str) != "additive"
    true = merged["label"] != "none"
    tp = int((detected & true).sum())
    stats = pd.Series(
        {
            "pairs": len(merged),
            "true_interactions": int(true.sum()),
            "detected": int(detected.sum()),
            "detected_and_true": tp,
            "precision": tp / detected.sum() if detected.any() else np.nan,
            "recall": tp / true.sum() if true.any() else np.nan,
        }
    )
    table = pd.crosstab(merged["label"].rename("true label"), merged["class"].astype(str).rename("called class"))
    rows = [r for r in ("synergy", "buffering", "opposite", "none") if r in table.index] + [
        r for r in table.index if r not in ("synergy", "buffering", "opposite", "none")
    ]
    cols = [c for c in CLASSES if c in table.columns]
    return stats, table.loc[rows, cols]


# ---------------------------------------------------------------------------------------
# model-level detection: ranking (double, gene) pairs by |prediction - additive|
# ---------------------------------------------------------------------------------------

#: FDP grid of the published TPR-vs-FDP curves.
FDP_GRID = np.round(np.linspace(0, 1, 101), 10)


def detection_pairs(pred: pd.DataFrame, additive: pd.DataFrame, observed: pd.DataFrame, null: InteractionNull) -> pd.DataFrame:
    """Score and truth of every (double, gene) pair for one model.

    ``score`` = :math:`|\\hat{x} - a|` (the model's predicted departure from additivity);
    ``nonadditive`` = the observed deviation :math:`x - a` lies beyond the null's thresholds.
    The three tables must hold the same doubles and genes (rows are aligned to ``observed``).
    Order: doubles as in ``observed``, genes as in its columns (ties in the ranking keep it).
    """
    for name, frame in (("pred", pred), ("additive", additive)):
        if set(frame.index) != set(observed.index) or set(frame.columns) != set(observed.columns):
            raise DataError(f"{name} and observed must cover the same doubles and genes.")
    pred = pred.loc[observed.index, observed.columns]
    additive = additive.loc[observed.index, observed.columns]
    score = np.abs(pred.to_numpy() - additive.to_numpy())
    dev = observed.to_numpy() - additive.to_numpy()
    return pd.DataFrame(
        {
            "perturbation": np.repeat(observed.index.to_numpy(dtype=object), observed.shape[1]),
            "gene": np.tile(observed.columns.to_numpy(dtype=object), observed.shape[0]),
            "score": score.ravel(),
            "nonadditive": null.is_nonadditive(dev).ravel(),
        }
    )


def tpr_fdp_curve(score: ArrayLike, truth: ArrayLike, grid: np.ndarray | None = None) -> pd.Series:
    """True-positive rate against false-discovery proportion, on a fixed FDP grid.

    The published rules: rank pairs by ``score`` descending (stable:
    ties keep their input order); :math:`TP_k`, :math:`FP_k` = cumulative counts of true and
    false pairs; :math:`FDP_k = FP_k / \\max(1, TP_k + FP_k)`; sort by FDP (stable), replace TP by
    its running maximum, :math:`TPR = TP / \\#\\text{true}`; interpolate TPR linearly at the grid
    (default 0, 0.01, ..., 1), with 0 left of the first FDP and 1 right of the last, averaging
    TPR over tied FDP values (R's ``approx(..., yleft = 0, yright = 1)``, ``ties = mean``).

    Returns NaN everywhere when there is no true pair.
    """
    grid = FDP_GRID if grid is None else np.asarray(grid, dtype=float)
    score = np.asarray(score, dtype=float)
    truth = np.asarray(truth, dtype=bool)
    n_true = int(truth.sum())
    if n_true == 0:
        return pd.Series(np.nan, index=pd.Index(grid, name="fdp"), name="tpr")
    order = np.argsort(-score, kind="stable")
    t = truth[order]
    tp = np.cumsum(t)
    fp = np.cumsum(~t)
    fdp = fp / np.maximum(1, tp + fp)
    o2 = np.argsort(fdp, kind="stable")
    fdp = fdp[o2]
    tpr = np.maximum.accumulate(tp[o2]) / n_true
    ux, inverse = np.unique(fdp, return_inverse=True)
    y = np.bincount(inverse, weights=tpr) / np.bincount(inverse)
    return pd.Series(np.interp(grid, ux, y, left=0.0, right=1.0), index=pd.Index(grid, name="fdp"), name="tpr")


def _threshold_counts(score: np.ndarray, truth: np.ndarray):
    """Cumulative TP and FP at each distinct score, from the highest down (ties form one step)."""
    order = np.argsort(-score, kind="stable")
    s, t = score[order], truth[order]
    tp, fp = np.cumsum(t), np.cumsum(~t)
    last = np.r_[s[1:] != s[:-1], True]  # last position of each tie group
    return tp[last].astype(float), fp[last].astype(float)


def auc_scores(score: ArrayLike, truth: ArrayLike) -> pd.Series:
    """Area under the ROC and the precision-recall curves of a ranking, by the trapezoid rule.

    Points are taken at every distinct score, from the highest down (tied scores enter
    together). ROC: from (FPR, TPR) = (0, 0) through every threshold to (1, 1).
    Precision-recall: recall :math:`TP/P`, precision :math:`TP/(TP+FP)`, starting at recall 0 with
    the precision of the first threshold (no optimistic (0, 1) point); the area is then the
    trapezoid rule over recall. A random ranking scores AUROC ≈ 0.5 and AUPRC ≈ the share of
    true pairs. NaN when there are no true or no false pairs.
    """
    score = np.asarray(score, dtype=float)
    truth = np.asarray(truth, dtype=bool)
    P, N = int(truth.sum()), int((~truth).sum())
    if P == 0 or N == 0:
        return pd.Series({"auprc": np.nan, "auroc": np.nan, "positives": P, "negatives": N})
    tp, fp = _threshold_counts(score, truth)
    tpr, fpr = np.r_[0.0, tp / P], np.r_[0.0, fp / N]
    auroc = float(np.trapezoid(tpr, fpr))
    precision = tp / (tp + fp)
    recall = np.r_[0.0, tp / P]
    precision = np.r_[precision[0], precision]
    auprc = float(np.trapezoid(precision, recall))
    return pd.Series({"auprc": auprc, "auroc": auroc, "positives": P, "negatives": N})


def tpr_at_fdp(curve: pd.Series, fdp: float) -> float:
    """TPR of a :func:`tpr_fdp_curve` at one FDP (linear interpolation on the grid)."""
    return float(np.interp(fdp, curve.index.to_numpy(dtype=float), curve.to_numpy()))


# ---------------------------------------------------------------------------------------
# a per-gene noise model of the deviations: standard errors from the cells
# ---------------------------------------------------------------------------------------


def group_moments(adata: AnnData, groups: Sequence[str], genes: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Mean, sample variance (``ddof = 1``) and number of cells of every group (perturbation) on ``genes``.

    :math:`\\bar x_{kg} = \\frac{1}{n_k}\\sum_{c \\in k} x_{cg}`,
    :math:`s^2_{kg} = \\frac{1}{n_k - 1}\\sum_{c \\in k} (x_{cg} - \\bar x_{kg})^2`, from the sums of
    :math:`x` and :math:`x^2` (the sparse matrix is never densified). A group needs two cells.
    """
    import scipy.sparse as sp

    labels = adata.obs["perturbation"].astype(str).to_numpy()
    missing = [g for g in groups if g not in set(labels)]
    if missing:
        raise DataError(f"no cells of {missing[:5]} in the screen; the noise model needs the cells of every group.")
    cols = adata.var_names.get_indexer(list(genes))
    if (cols < 0).any():
        raise DataError(f"{int((cols < 0).sum())} genes are not in the screen, e.g. {[g for g, c in zip(genes, cols) if c < 0][:3]}")
    X = adata.X[:, cols]
    means, variances, counts = [], [], []
    for g in groups:
        rows = np.flatnonzero(labels == g)
        if rows.size < 2:
            raise DataError(f"{g} has {rows.size} cell(s); a variance needs at least two.")
        block = X[rows]
        if sp.issparse(block):
            s1 = np.asarray(block.sum(axis=0), dtype=np.float64).ravel()
            s2 = np.asarray(block.multiply(block).sum(axis=0), dtype=np.float64).ravel()
        else:
            block = np.asarray(block, dtype=np.float64)
            s1, s2 = block.sum(axis=0), (block**2).sum(axis=0)
        n = rows.size
        mean = s1 / n
        means.append(mean)
        variances.append(np.maximum(s2 - n * mean**2, 0.0) / (n - 1))
        counts.append(n)
    index = pd.Index(list(groups), name="perturbation")
    columns = pd.Index(list(genes))
    return (
        pd.DataFrame(np.array(means), index=index, columns=columns),
        pd.DataFrame(np.array(variances), index=index, columns=columns),
        pd.Series(counts, index=index, name="cells"),
    )


@dataclass
class DeviationNoise:
    """Deviations from additivity with their sampling standard errors (doubles x genes).

    ``deviation`` :math:`d = \\bar x_{AB} - \\bar x_A - \\bar x_B + \\bar x_c`; ``se`` its standard
    error; ``df`` the Welch–Satterthwaite degrees of freedom; ``z = d / se`` (NaN where the gene is
    constant in all four groups, ``se = 0``).
    """

    deviation: pd.DataFrame
    se: pd.DataFrame
    df: pd.DataFrame

    @property
    def z(self) -> pd.DataFrame:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.deviation / self.se.where(self.se > 0)


def deviation_noise(adata: AnnData, doubles: Sequence[str], genes: Sequence[str]) -> DeviationNoise:
    """The sampling noise of every deviation from additivity, from the cells of the four groups.

    The four groups (double, both singles, control) are independent samples of cells, so

    .. math:: \\operatorname{se}^2(d_{AB,g}) = \\frac{s^2_{AB,g}}{n_{AB}} + \\frac{s^2_{A,g}}{n_A} + \\frac{s^2_{B,g}}{n_B} + \\frac{s^2_{c,g}}{n_c}

    with the sample variances :math:`s^2` of :func:`group_moments`, and the Welch–Satterthwaite
    degrees of freedom :math:`\\nu = \\operatorname{se}^4 / \\sum_k (s^2_k/n_k)^2/(n_k - 1)`. Unlike a
    single null width for all genes, this gives a gene that is barely expressed (tiny variance)
    a tiny standard error and a well-expressed gene a large one.
    """
    doubles = [str(p) for p in doubles]
    singles = sorted({g for p in doubles for g in target_genes(p)})
    groups = [CONTROL, *singles, *doubles]
    mean, var, n = group_moments(adata, groups, genes)
    terms = var.div(n, axis=0)  # s²_k / n_k
    dev, se2, dfden = [], [], []
    for p in doubles:
        a, b = target_genes(p)
        dev.append(mean.loc[p] - mean.loc[a] - mean.loc[b] + mean.loc[CONTROL])
        parts = [terms.loc[k] for k in (p, a, b, CONTROL)]
        se2.append(sum(parts))
        dfden.append(sum(t**2 / (n[k] - 1) for t, k in zip(parts, (p, a, b, CONTROL))))
    index = pd.Index(doubles, name="perturbation")
    deviation = pd.DataFrame(dev, index=index)
    se2 = pd.DataFrame(se2, index=index)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = se2**2 / pd.DataFrame(dfden, index=index)
    return DeviationNoise(deviation, np.sqrt(se2), df)


def bootstrap_deviation_se(adata: AnnData, doubles: Sequence[str], genes: Sequence[str], n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Standard error of every deviation by a seeded cell-level bootstrap (an independent route to :func:`deviation_noise`).

    Each replicate resamples, with replacement and independently, the cells of the double, of
    both singles and of control, and recomputes :math:`d`; the result is the standard deviation
    of the replicates (``ddof = 1``). It estimates the plug-in standard error, which is
    :math:`\\sqrt{(n-1)/n}` times the one of :func:`deviation_noise` for equal group sizes ``n``.
    """
    rng = np.random.default_rng(seed)
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    cols = adata.var_names.get_indexer(list(genes))
    X = adata.X[:, cols]
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    X = X.astype(np.float64)
    out = []
    for p in doubles:
        a, b = target_genes(p)
        blocks = [X[labels == k] for k in (p, a, b, CONTROL)]
        reps = np.empty((n_boot, len(cols)))
        for r in range(n_boot):
            m = [blk[rng.integers(0, len(blk), len(blk))].mean(axis=0) for blk in blocks]
            reps[r] = m[0] - m[1] - m[2] + m[3]
        out.append(reps.std(axis=0, ddof=1))
    return pd.DataFrame(out, index=pd.Index(list(doubles), name="perturbation"), columns=pd.Index(list(genes)))


def standardised_calls(noise: DeviationNoise, fdr: float = 0.05, old: InteractionNull | None = None) -> pd.DataFrame:
    """Call non-additive pairs from the standardised deviations, beside the single-null call.

    ``p`` = two-sided Student-t p-value of :math:`z = d/\\operatorname{se}` with the Welch–Satterthwaite
    degrees of freedom; ``q`` = Benjamini–Hochberg over every pair with a defined ``z`` (pairs
    whose gene is constant in all four groups have none and are never called); ``called`` =
    :math:`q \\le` ``fdr``. With ``old`` (the empirical null of :func:`fit_interaction_null`),
    ``called_single_null`` is its call of the same deviation.

    Returns
    -------
    DataFrame
        Long: ``perturbation, gene, deviation, se, z, df, p, q, called`` (+ ``called_single_null``).
    """
    from scipy import stats as st

    z = noise.z
    frame = pd.DataFrame(
        {
            "perturbation": np.repeat(z.index.to_numpy(dtype=object), z.shape[1]),
            "gene": np.tile(z.columns.to_numpy(dtype=object), z.shape[0]),
            "deviation": noise.deviation.to_numpy().ravel(),
            "se": noise.se.to_numpy().ravel(),
            "z": z.to_numpy().ravel(),
            "df": noise.df.to_numpy().ravel(),
        }
    )
    ok = np.isfinite(frame["z"].to_numpy())
    p = np.full(len(frame), np.nan)
    p[ok] = 2 * st.t.sf(np.abs(frame["z"].to_numpy()[ok]), frame["df"].to_numpy()[ok])
    q = np.full(len(frame), np.nan)
    if ok.any():
        q[ok] = st.false_discovery_control(p[ok], method="bh")
    frame["p"], frame["q"] = p, q
    frame["called"] = ok & (np.nan_to_num(q, nan=1.0) <= fdr)
    if old is not None:
        frame["called_single_null"] = old.is_nonadditive(frame["deviation"].to_numpy())
    return frame


def call_comparison(calls: pd.DataFrame, fdr: float) -> pd.DataFrame:
    """How many pairs each noise model calls non-additive, and how many calls the two share (one row per count)."""
    ok = np.isfinite(calls["z"])
    rows = {
        "pairs with a defined standard error": int(ok.sum()),
        "pairs without (gene constant in all four groups)": int((~ok).sum()),
        f"called by the per-gene noise model (BH q <= {fdr})": int(calls["called"].sum()),
    }
    if "called_single_null" in calls:
        old = calls["called_single_null"].astype(bool)
        rows["called by the single empirical null"] = int(old.sum())
        rows["called by both"] = int((old & calls["called"]).sum())
        rows["single-null calls that the per-gene model does not confirm"] = int((old & ~calls["called"]).sum())
    return pd.Series(rows, name="pairs").to_frame()


# ---------------------------------------------------------------------------------------
# Norman et al.'s model of a double: delta_AB ~ c1 delta_A + c2 delta_B
# ---------------------------------------------------------------------------------------


def distance_correlation(x: ArrayLike, y: ArrayLike) -> float:
    """Székely's distance correlation of two samples (rows = observations).

    With :math:`a_{ij} = \\lVert x_i - x_j \\rVert`, double-centred
    :math:`A_{ij} = a_{ij} - \\bar a_{i\\cdot} - \\bar a_{\\cdot j} + \\bar a_{\\cdot\\cdot}` (and ``B`` from
    ``y``), :math:`\\mathrm{dCov}^2 = \\overline{AB}` and
    :math:`\\mathrm{dCor} = \\sqrt{\\mathrm{dCov}^2(x,y) / \\sqrt{\\mathrm{dCov}^2(x,x)\\,\\mathrm{dCov}^2(y,y)}}`
    (the biased V-statistic, as the ``dcor`` package's default). 1 for ``y`` a linear function
    of ``x``; near 0 for independent samples; 0 when either sample is constant.
    """
    from scipy.spatial.distance import cdist

    def centred(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        v = v.reshape(len(v), -1)
        d = cdist(v, v)
        return d - d.mean(axis=0) - d.mean(axis=1)[:, None] + d.mean()

    A, B = centred(np.asarray(x)), centred(np.asarray(y))
    if A.shape != B.shape:
        raise ValueError("x and y need the same number of observations")
    vx, vy = (A * A).mean(), (B * B).mean()
    if vx <= 0 or vy <= 0:
        return 0.0
    return float(np.sqrt(max((A * B).mean(), 0.0) / np.sqrt(vx * vy)))


def control_normalised_changes(adata: AnnData, perturbations: Sequence[str], genes: Sequence[str]) -> pd.DataFrame:
    """Mean change of every perturbation in units of the control cells' spread: :math:`(\\bar x_{pg} - \\bar x_{cg}) / s_{cg}`.

    Norman et al. z-score every cell against the control cells (per gene: minus the control mean,
    divided by the control standard deviation) before averaging; on the mean this is the same.
    Genes constant in control (:math:`s_c = 0`) must be left out by the caller.
    """
    mean, var, _ = group_moments(adata, [CONTROL, *perturbations], genes)
    sd = np.sqrt(var.loc[CONTROL])
    if (sd <= 0).any():
        raise DataError(f"{int((sd <= 0).sum())} genes are constant in control; leave them out before z-scoring.")
    return (mean.loc[list(perturbations)] - mean.loc[CONTROL]) / sd


def fit_genes(adata: AnnData, min_control_mean: float = 0.0, exclude: Sequence[str] = ()) -> list[str]:
    """Genes for Norman's fit: control mean above ``min_control_mean`` and not constant in control, minus ``exclude``.

    Norman et al. used the genes with a mean above 0.5 UMI per cell, without the targeted genes;
    on log-normalised data without counts the threshold is on the control mean of ``X``.
    """
    mean, var, _ = group_moments(adata, [CONTROL], list(adata.var_names))
    keep = (mean.loc[CONTROL] > min_control_mean) & (var.loc[CONTROL] > 0)
    drop = set(exclude)
    return [g for g in adata.var_names[keep.to_numpy()] if g not in drop]


def interaction_fit(first: ArrayLike, second: ArrayLike, double: ArrayLike, seed: int = 1000) -> dict[str, float]:
    """Norman et al.'s fit of one double over genes: :math:`\\delta_{AB} \\approx c_1 \\delta_A + c_2 \\delta_B` (no intercept).

    Least squares gives ``coef_first``, ``coef_second`` and ``corr_fit`` (Pearson correlation of
    the fit with :math:`\\delta_{AB}`); Theil–Sen (scikit-learn, ``fit_intercept=False``,
    ``max_subpopulation=1e5``, ``max_iter=1000``, ``random_state=seed``, Norman et al.'s settings)
    gives ``ts_coef_first``, ``ts_coef_second``, the magnitude ``ts_norm`` = :math:`(|c_1| + |c_2|)/2`,
    the dominance ``ts_ratio`` = :math:`c_1 / c_2`, and the fit quality ``ts_linear_dcor`` (distance
    correlation of the Theil–Sen fit and :math:`\\delta_{AB}`); ``dcor`` is the distance correlation
    of both singles with the double.
    """
    from sklearn.linear_model import TheilSenRegressor

    X = np.column_stack([np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)])
    y = np.asarray(double, dtype=np.float64)
    if len(y) < 3:
        raise DataError(f"a fit over {len(y)} genes is not possible; it needs at least 3 genes.")
    ols, *_ = np.linalg.lstsq(X, y, rcond=None)
    fit = X @ ols
    ts = TheilSenRegressor(fit_intercept=False, max_subpopulation=int(1e5), max_iter=1000, random_state=seed).fit(X, y)
    c1, c2 = (float(c) for c in ts.coef_)
    return {
        "coef_first": float(ols[0]),
        "coef_second": float(ols[1]),
        "corr_fit": float(np.corrcoef(fit, y)[0, 1]) if np.std(fit) > 0 and np.std(y) > 0 else np.nan,
        "ts_coef_first": c1,
        "ts_coef_second": c2,
        "ts_norm": (abs(c1) + abs(c2)) / 2,
        "ts_ratio": c1 / c2 if c2 != 0 else np.nan,
        "ts_linear_dcor": distance_correlation(ts.predict(X), y),
        "dcor": distance_correlation(X, y),
        "n_genes": len(y),
    }


def interaction_fits(
    adata: AnnData,
    pairs: Sequence[tuple[str, str]],
    min_control_mean: float = 0.0,
    seed: int = 1000,
    progress: bool = False,
) -> pd.DataFrame:
    """:func:`interaction_fit` of every double ``(first, second)`` on the cells of a screen.

    Changes are :func:`control_normalised_changes` on :func:`fit_genes` (every targeted gene of
    the screen left out, as Norman et al.); ``first`` and ``second`` give the orientation of the
    coefficients. One row per double, indexed by the canonical name ``A+B``.
    """
    from ..console import progress_bar

    perturbations = adata.obs["perturbation"].astype(str)
    targets = {g for p in perturbations.unique() if p != CONTROL for g in target_genes(p)}
    genes = fit_genes(adata, min_control_mean, exclude=sorted(targets))
    rows, names = [], []
    needed = sorted({g for pair in pairs for g in pair} | {"+".join(sorted(pair)) for pair in pairs})
    delta = control_normalised_changes(adata, needed, genes)
    for first, second in progress_bar(list(pairs), desc="interaction fits", disable=not progress):
        name = "+".join(sorted((first, second)))
        rows.append({"first": first, "second": second, **interaction_fit(delta.loc[first], delta.loc[second], delta.loc[name], seed)})
        names.append(name)
    return pd.DataFrame(rows, index=pd.Index(names, name="perturbation"))


#: The quantities compared with Norman et al.'s published fits, with their meaning.
FIT_QUANTITIES = {
    "ts_coef_first": "c1 (Theil–Sen)",
    "ts_coef_second": "c2 (Theil–Sen)",
    "ts_norm": "magnitude (|c1| + |c2|) / 2",
    "ts_ratio": "dominance c1 / c2",
    "ts_linear_dcor": "fit quality (distance correlation of fit and double)",
    "corr_fit": "fit quality (correlation of the least-squares fit and double)",
}


def compare_fits(ours: pd.DataFrame, published: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """This run's fits beside the published ones, for the doubles both hold, and their agreement.

    Returns ``(table, agreement)``: ``table`` with one row per double and columns
    ``(quantity, "this run" | "Norman et al.")``; ``agreement`` per quantity: the number of
    doubles, Pearson and Spearman correlations over doubles (NaN with fewer than 3), and the
    median absolute difference. Both tables must use the same orientation (first, second):
    a double written the other way round in ``ours`` is flipped (c1 and c2 swapped, ratio inverted).
    """
    both = [p for p in ours.index if p in published.index]
    ours = ours.loc[both].copy()
    flip = ours["first"].to_numpy() != published.loc[both, "first"].to_numpy()
    if flip.any():
        ours.loc[flip, ["ts_coef_first", "ts_coef_second"]] = ours.loc[flip, ["ts_coef_second", "ts_coef_first"]].to_numpy()
        ours.loc[flip, ["coef_first", "coef_second"]] = ours.loc[flip, ["coef_second", "coef_first"]].to_numpy()
        ours.loc[flip, "ts_ratio"] = 1 / ours.loc[flip, "ts_ratio"]
    table = pd.concat({q: pd.DataFrame({"this run": ours[q], "Norman et al.": published.loc[both, q]}) for q in FIT_QUANTITIES}, axis=1)
    rows = []
    for q, meaning in FIT_QUANTITIES.items():
        a, b = table[(q, "this run")].astype(float), table[(q, "Norman et al.")].astype(float)
        ok = np.isfinite(a) & np.isfinite(b)
        n = int(ok.sum())
        rows.append(
            {
                "quantity": q,
                "meaning": meaning,
                "doubles": n,
                "pearson": float(np.corrcoef(a[ok], b[ok])[0, 1]) if n >= 3 else np.nan,
                "spearman": float(a[ok].rank().corr(b[ok].rank())) if n >= 3 else np.nan,
                "median |difference|": float((a[ok] - b[ok]).abs().median()) if n else np.nan,
            }
        )
    return table, pd.DataFrame(rows).set_index("quantity")
