"""How well a metric separates a good prediction from an uninformative one (Miller et al.).

The dynamic range fraction (DRF) of a metric asks: of the range between an uninformative
prediction (negative control, e.g. the mean baseline) and a perfect one, how much does a
prediction as good as the data allow (positive control, e.g. a technical duplicate)
cover? A well-calibrated metric has DRF near 1; a metric where the mean baseline already
scores almost like the duplicate has DRF near 0 (or negative).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
from scipy import optimize

from ..errors import DataError
from ..results import tidy
from ._inputs import _examples
from .genes import DEG_WEIGHTS, de_gene_sets
from .profile import deg_weights, rmse
from .registry import METRICS, evaluate

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ..models.controls import CalibrationControls

logger = logging.getLogger(__name__)

#: Added to the denominators, as in the published code, so a zero range does not divide by 0.
DRF_EPS = 1e-6


class DynamicRange(NamedTuple):
    """Result of :func:`dynamic_range_fraction`."""

    median: float
    values: pd.Series
    n_undefined: int


def dynamic_range_fraction(
    positive: pd.Series,
    negative: pd.Series,
    metric: str | None = None,
    *,
    higher_is_better: bool | None = None,
    perfect: float | None = None,
) -> DynamicRange:
    """Dynamic range fraction of a metric, per perturbation, and its median.

    With :math:`m^+_p` the metric of the positive control, :math:`m^-_p` of the negative
    control and :math:`m^*` the perfect value, :math:`\\epsilon = 10^{-6}`:

    * higher is better: :math:`DRF_p = \\dfrac{m^+_p - m^-_p}{(m^* - m^-_p) + \\epsilon}`
    * lower is better: :math:`DRF_p = \\dfrac{m^-_p - m^+_p}{(m^-_p - m^*) + \\epsilon}`
      (Miller et al. write :math:`(m^- - m^+)/(m^- + \\epsilon)`, the same for :math:`m^* = 0`)

    clipped to :math:`[-1, 1]`; summarised by the median over perturbations (NaN values,
    e.g. an undefined PearsonΔ, are left out and counted in ``n_undefined``).

    Miller et al. use the mean baseline as negative control (the control baseline for the
    PearsonΔ-vs-perturbed-mean family) and the technical duplicate as positive control.

    Source: Miller et al. 2025 (bioRxiv 10.1101/2025.10.20.683304),
    ``analyses/calibration/calibration_analysis.py``.

    Parameters
    ----------
    positive, negative
        Per-perturbation metric values (Series indexed by perturbation) of the positive and
        negative control; same perturbations.
    metric
        Metric name in :data:`helpers.metrics.METRICS`; supplies ``higher_is_better`` and
        ``perfect`` unless they are given.
    higher_is_better, perfect
        Direction and perfect value, for metrics outside the registry.

    Returns
    -------
    DynamicRange
        ``median``, ``values`` (Series named ``drf_{metric}``) and ``n_undefined``.
    """
    if metric is not None:
        if metric not in METRICS:
            raise DataError(f"unknown metric {metric!r}; known: {sorted(METRICS)}. Or pass higher_is_better= and perfect=.")
        info = METRICS[metric]
        higher_is_better = info.higher_is_better if higher_is_better is None else higher_is_better
        perfect = info.perfect if perfect is None else perfect
    if higher_is_better is None or perfect is None:
        raise DataError("give metric= (a registered metric name) or both higher_is_better= and perfect=.")
    for what, s in (("positive", positive), ("negative", negative)):
        if not isinstance(s, pd.Series):
            raise DataError(f"{what} must be a Series of per-perturbation metric values, not {type(s).__name__}.")
    only_pos = positive.index.difference(negative.index, sort=False)
    only_neg = negative.index.difference(positive.index, sort=False)
    if len(only_pos) or len(only_neg):
        raise DataError(
            "positive and negative controls must cover the same perturbations: "
            f"{len(only_pos)} only in positive ({_examples(only_pos)}), {len(only_neg)} only in negative "
            f"({_examples(only_neg)})."
        )
    pos = positive.to_numpy(dtype=np.float64)
    neg = negative.reindex(positive.index).to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if higher_is_better:
            drf = (pos - neg) / ((perfect - neg) + DRF_EPS)
        else:
            drf = (neg - pos) / ((neg - perfect) + DRF_EPS)
    drf = np.clip(drf, -1.0, 1.0)
    values = pd.Series(drf, index=positive.index.copy(), name=f"drf_{metric}" if metric else "drf")
    n_undefined = int(np.isnan(drf).sum())
    median = float(np.nanmedian(drf)) if n_undefined < drf.size else float("nan")
    return DynamicRange(median=median, values=values, n_undefined=n_undefined)


def negative_control_of(metric: str) -> str:
    """Negative control of a metric's dynamic range fraction (Miller et al.).

    The mean baseline, except for PearsonΔ against the perturbed mean, where the mean
    baseline's predicted change is exactly zero (Pearson undefined): there the control
    ("no change") baseline is the negative control.
    """
    if metric.startswith("pearson_delta") and metric.endswith("_vs_perturbed_mean"):
        return "no change"
    return "mean (perturbations)"


#: DRF cut-offs of this suite's calibration verdicts (Miller et al. show DRF distributions
#: without a fixed cut-off): at least 0.5 = well calibrated, below 0.2 = poorly calibrated.
WELL_CALIBRATED = 0.5


POORLY_CALIBRATED = 0.2


def verdict(drf: float) -> str:
    """``well``, ``partly`` or ``poorly`` calibrated for a median DRF (NaN -> ``undefined``)."""
    if not np.isfinite(drf):
        return "undefined"
    if drf >= WELL_CALIBRATED:
        return "well"
    if drf < POORLY_CALIBRATED:
        return "poorly"
    return "partly"


def fraction_gap_closed(l2_model: ArrayLike, l2_wap: ArrayLike, l2_bap: ArrayLike) -> np.ndarray | float:
    """``(L2_WAP − L2_model) / (L2_WAP − L2_BAP)``: 0 at the WAP, 1 at the BAP.

    Negative for a model worse than the WAP; above 1 for a model better than the BAP (possible
    because the bounds are estimates). NaN when the gap is not positive (no room to measure).
    """
    l2_model, l2_wap, l2_bap = (np.asarray(v, dtype=np.float64) for v in (l2_model, l2_wap, l2_bap))
    gap = l2_wap - l2_bap
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(gap > 0, (l2_wap - l2_model) / np.where(gap > 0, gap, 1.0), np.nan)
    return out if out.ndim else float(out)


def calibration_results(
    controls: CalibrationControls,
    de_genes: Mapping[str, Sequence[str]] | None = None,
    weights: str = "miller",
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Every metric of the four calibration controls, tidy (``model, perturbation, metric, value``).

    ``controls`` is a :class:`helpers.models.controls.CalibrationControls`. The ground truth
    is the first halves. DEG weights: ``weights="miller"`` uses ``controls.miller_t_scores``
    (Miller et al.'s test against the rest), ``"control"`` the Welch t against control
    (``controls.t_scores``). The top-20 DE genes are ``de_genes`` or, by default, each
    perturbation's own top 20 on its first-half cells (GEARS style,
    ``de_gene_sets(..., source="all")``); for the training-only choice pass
    ``de_gene_sets(adata, perts, source="train", train_perturbations=split.train)``.
    """
    perts = list(controls.truth.index)
    if weights not in DEG_WEIGHTS:
        raise ValueError(f"weights must be one of {sorted(DEG_WEIGHTS)}, not {weights!r}")
    needed = {k for m in (metrics or METRICS) if m in METRICS for k in METRICS[m].needs}
    if de_genes is None and "de_genes" in needed:
        de_genes = de_gene_sets(controls.halves.first, perts, source="all")
    t = controls.miller_t_scores if weights == "miller" else controls.t_scores.where(np.isfinite(controls.t_scores), 0.0)
    weight_table = deg_weights(t.loc[perts])
    frames = []
    for name, pred in controls.predictions.items():
        table = evaluate(
            pred, controls.truth, controls.control, controls.perturbed_mean, de_genes=de_genes, deg_weights=weight_table, metrics=metrics
        )
        frames.append(tidy(table, model=name))
    return pd.concat(frames, ignore_index=True)


def drf_table(results: pd.DataFrame, positives: Sequence[str] = ("technical duplicate", "interpolated duplicate")) -> pd.DataFrame:
    """Median dynamic range fraction of every metric, for each positive control.

    ``results`` are tidy rows ``model, perturbation, metric, value`` (optionally with
    ``seed``; DRF is computed per perturbation and seed and the median taken over all),
    holding the positive controls and the negative controls ``mean`` and ``no change``.
    The negative control of each metric is :func:`negative_control_of`; direction and
    perfect value come from :data:`helpers.metrics.METRICS`.

    Returns
    -------
    DataFrame
        Index ``metric``; columns ``reference``, ``higher_is_better``, ``negative_control``,
        ``drf_<positive>`` (median), ``n_<positive>`` (defined values), and ``calibration``
        (:func:`verdict` of the technical duplicate's DRF).
    """
    keys = [c for c in ("seed", "perturbation") if c in results.columns]
    rows = []
    for metric in [m for m in METRICS if m in set(results["metric"])]:
        info = METRICS[metric]
        neg_name = negative_control_of(metric)
        sub = results[results["metric"] == metric]
        wide = sub.pivot_table(index=keys, columns="model", values="value", aggfunc="first", dropna=False)
        row = {
            "metric": metric,
            "reference": info.reference or "none",
            "higher_is_better": info.higher_is_better,
            "negative_control": neg_name,
        }
        for pos in positives:
            if pos not in wide or neg_name not in wide:
                raise DataError(f"drf_table needs rows of {pos!r} and {neg_name!r} for {metric}.")
            idx = pd.Index(["|".join(map(str, k)) if isinstance(k, tuple) else str(k) for k in wide.index])
            drf = dynamic_range_fraction(
                pd.Series(wide[pos].to_numpy(), index=idx), pd.Series(wide[neg_name].to_numpy(), index=idx), metric
            )
            row[f"drf_{pos}"] = drf.median
            row[f"n_{pos}"] = int(drf.values.notna().sum())
        row["calibration"] = verdict(row[f"drf_{positives[0]}"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("metric")


def noisy_duplicate(duplicate: pd.DataFrame, truth: pd.DataFrame, target_rmse: float, seed: int) -> tuple[pd.DataFrame, float]:
    """A good prediction made worse with noise until its mean RMSE equals ``target_rmse``.

    ``duplicate + σ Z`` with :math:`Z_{pg} \\sim N(0, 1)` (seeded) and :math:`\\sigma \\ge 0`
    solved so that :math:`\\frac1N\\sum_p \\mathrm{RMSE}_p = ` ``target_rmse``. The noise is
    independent of the perturbation, so the prediction still points at the right
    perturbation: RMSE cannot tell it from a mode-collapsed prediction with the same RMSE,
    ranking metrics can. If the duplicate's RMSE already exceeds the target, σ = 0.

    Returns
    -------
    (prediction, sigma)
    """
    P = duplicate.reindex(index=truth.index, columns=truth.columns).to_numpy(dtype=np.float64)
    T = truth.to_numpy(dtype=np.float64)
    if not np.isfinite(P).all():
        raise DataError("duplicate does not cover the perturbations and genes of truth.")
    Z = np.random.default_rng(int(seed)).standard_normal(T.shape)
    E = P - T

    def mean_rmse(sigma: float) -> float:
        return float(np.sqrt(((E + sigma * Z) ** 2).mean(axis=1)).mean())

    if mean_rmse(0.0) >= target_rmse:
        sigma = 0.0
    else:
        hi = max(target_rmse, 1e-12)
        while mean_rmse(hi) < target_rmse:
            hi *= 2.0
        sigma = float(optimize.brentq(lambda s: mean_rmse(s) - target_rmse, 0.0, hi, xtol=1e-12, rtol=1e-12))
    return pd.DataFrame(P + sigma * Z, index=truth.index.copy(), columns=truth.columns.copy()), sigma


class RMSEMatched(NamedTuple):
    """Result of :func:`rmse_matched_duplicate`."""

    prediction: pd.DataFrame
    method: str  # "noise", "shrinkage" or "none"
    parameter: float  # σ of the noise, or the shrinkage factor λ
    target: float  # mean RMSE of the collapsed prediction

    def describe(self) -> str:
        if self.method == "noise":
            return f"the technical duplicate plus Gaussian noise of SD {self.parameter:.3g}"
        if self.method == "shrinkage":
            return (
                f"the collapsed prediction plus {self.parameter:.2f} x (technical duplicate − collapsed prediction): "
                "the duplicate is noisier than the collapsed prediction here, so it is shrunk towards it"
            )
        return "the technical duplicate unchanged (its RMSE could not be matched)"


def _shrink_to_rmse(duplicate: np.ndarray, collapsed: np.ndarray, truth: np.ndarray, target: float) -> float | None:
    """Largest λ in (0, 1] with mean RMSE of ``collapsed + λ (duplicate − collapsed)`` equal to ``target``."""
    D = duplicate - collapsed
    E = collapsed - truth

    def excess(lam: float) -> float:
        return float(np.sqrt(((E + lam * D) ** 2).mean(axis=1)).mean()) - target

    best = optimize.minimize_scalar(excess, bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-10})
    if excess(best.x) >= -1e-12 * max(target, 1e-300) or excess(1.0) < 0:
        return None
    return float(optimize.brentq(excess, best.x, 1.0, xtol=1e-12, rtol=1e-12))


def rmse_matched_duplicate(duplicate: pd.DataFrame, collapsed: pd.DataFrame, truth: pd.DataFrame, seed: int) -> RMSEMatched:
    """An informative prediction with the same mean RMSE as a collapsed one.

    Target: :math:`\\frac1N\\sum_p \\mathrm{RMSE}_p` of ``collapsed``. If the technical
    duplicate is closer than that, it is made worse with noise (:func:`noisy_duplicate`).
    If it is farther (few cells per half: its sampling noise exceeds the collapsed
    prediction's error), it is shrunk towards the collapsed prediction,
    :math:`\\hat x = c + \\lambda (d - c)` with the largest :math:`\\lambda \\in (0, 1]` that
    matches the target (RMSE is convex in :math:`\\lambda` and equals the target at 0). Either
    way the result keeps the duplicate's perturbation-specific information.
    """
    target = float(rmse(collapsed, truth).mean())
    if float(rmse(duplicate, truth).mean()) < target:
        pred, sigma = noisy_duplicate(duplicate, truth, target, seed)
        return RMSEMatched(pred, "noise", sigma, target)
    cols, rows = truth.columns, truth.index
    lam = _shrink_to_rmse(
        duplicate.reindex(index=rows, columns=cols).to_numpy(dtype=np.float64),
        collapsed.reindex(index=rows, columns=cols).to_numpy(dtype=np.float64),
        truth.to_numpy(dtype=np.float64),
        target,
    )
    if lam is None:
        logger.warning("rmse_matched_duplicate: the duplicate cannot be brought to the collapsed prediction's RMSE.")
        return RMSEMatched(duplicate.reindex(index=rows, columns=cols).copy(), "none", float("nan"), target)
    c = collapsed.reindex(index=rows, columns=cols)
    pred = c + lam * (duplicate.reindex(index=rows, columns=cols) - c)
    return RMSEMatched(pred, "shrinkage", lam, target)
