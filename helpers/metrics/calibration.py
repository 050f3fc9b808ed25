"""How well a metric separates a good prediction from an uninformative one (Miller et al.).

The dynamic range fraction (DRF) of a metric asks: of the range between an uninformative
prediction (negative control, e.g. the mean baseline) and a perfect one, how much does a
prediction as good as the data allow (positive control, e.g. a technical duplicate)
cover? A well-calibrated metric has DRF near 1; a metric where the mean baseline already
scores almost like the duplicate has DRF near 0 (or negative).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from ..data.canonical import DataError
from ._inputs import _examples

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
    ``analyses/calibration/calibration_analysis.py`` (METHODS.md E.2).

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
        from .registry import METRICS

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
