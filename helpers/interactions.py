"""Genetic interactions of double perturbations, and how well models detect them.

Ahlmann-Eltze, Huber & Anders (Nature Methods 2025, METHODS.md A.5) call a (double, gene)
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

import numpy as np
import pandas as pd

from .data.canonical import CONTROL, DataError, target_genes
from .stats.locfdr import LocfdrError, LocfdrResult, fdr_thresholds, locfdr

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
    return pd.DataFrame(np.array(rows).reshape(len(rows), profiles.shape[1]), index=pd.Index(list(doubles), name="perturbation"),
                        columns=profiles.columns.copy())


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

    def is_nonadditive(self, deviation) -> np.ndarray:
        """Boolean array: deviation beyond a threshold (a NaN threshold never calls)."""
        e = np.asarray(deviation, dtype=float)
        up = np.inf if np.isnan(self.upper) else self.upper
        lo = -np.inf if np.isnan(self.lower) else self.lower
        return (e > up) | (e < lo)

    def summary(self) -> pd.Series:
        out = {"n_doubles": self.n_doubles, "n_values": self.n_values, "target_fdr": self.target_fdr,
               "lower_threshold": self.lower, "upper_threshold": self.upper}
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
    return pd.DataFrame(np.array(rows).reshape(len(rows), profiles.shape[1]), index=pd.Index(list(doubles), name="perturbation"),
                        columns=profiles.columns.copy())


def fit_interaction_null(
    deviation: pd.DataFrame | np.ndarray,
    target_fdr: float = 0.05,
    nulltype: int = 1,
    exclude: pd.DataFrame | np.ndarray | None = None,
    fallback: bool = True,
    **locfdr_kwargs,
) -> InteractionNull:
    """Fit the empirical null of the deviations and derive the thresholds (METHODS.md A.5.2).

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
            notes.append(f"{int(mask.sum()):,} pairs whose gene is undetected in the double, both singles and control "
                         "(deviation 0 by construction) are left out of the fit.")
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
            return InteractionNull(np.nan, np.nan, target_fdr, values.size, n_doubles, None,
                                   f"no empirical null could be fitted to {values.size} deviations: {reason}", notes)
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
    :math:`e = \\Delta_{AB} - a` the deviation (METHODS.md A.5.3):

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
    rows = [r for r in ("synergy", "buffering", "opposite", "none") if r in table.index] + [r for r in table.index if r not in ("synergy", "buffering", "opposite", "none")]
    cols = [c for c in CLASSES if c in table.columns]
    return stats, table.loc[rows, cols]


# ---------------------------------------------------------------------------------------
# model-level detection: ranking (double, gene) pairs by |prediction - additive|
# ---------------------------------------------------------------------------------------

#: FDP grid of the published TPR-vs-FDP curves.
FDP_GRID = np.round(np.linspace(0, 1, 101), 10)


def detection_pairs(pred: pd.DataFrame, additive: pd.DataFrame, observed: pd.DataFrame, null: InteractionNull) -> pd.DataFrame:
    """Score and truth of every (double, gene) pair for one model (METHODS.md A.5.5).

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


def tpr_fdp_curve(score, truth, grid: np.ndarray | None = None) -> pd.Series:
    """True-positive rate against false-discovery proportion, on a fixed FDP grid.

    The published rules (METHODS.md A.5.5): rank pairs by ``score`` descending (stable:
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


def auc_scores(score, truth) -> pd.Series:
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
