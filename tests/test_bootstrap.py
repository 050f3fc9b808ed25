"""The vectorised percentile bootstrap against cases with a known bootstrap distribution."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from helpers.errors import DataError
from helpers.stats.bootstrap import bootstrap_mean_ci, bootstrap_means, ratio_to_reference


def test_two_point_sample_gives_a_binomial_bootstrap_distribution():
    """For k ones among n values, the bootstrap mean is exactly Binomial(n, k/n) / n."""
    n, k = 26, 12
    values = np.r_[np.zeros(n - k), np.ones(k)]
    boot = bootstrap_means(values, n_resamples=10_000, seed=1)
    support = np.arange(n + 1)
    empirical = np.array([(np.round(boot * n) <= j).mean() for j in support])
    exact = stats.binom.cdf(support, n, k / n)
    # Dvoretzky-Kiefer-Wolfowitz: P(sup |F_B - F| > 0.02) <= 2 exp(-2 B 0.02^2) < 0.001
    assert np.abs(empirical - exact).max() < 0.02
    # the percentile interval is the binomial quantiles (this case keeps them off CDF jumps)
    lo, hi = stats.binom.ppf([0.025, 0.975], n, k / n)
    assert stats.binom.cdf(lo - 1, n, k / n) < 0.014 and stats.binom.cdf(lo, n, k / n) > 0.036
    assert stats.binom.cdf(hi - 1, n, k / n) < 0.965 and stats.binom.cdf(hi, n, k / n) > 0.985  # >= 7 Monte-Carlo SDs of margin
    ci = bootstrap_mean_ci(values, seed=1)
    assert ci.estimate == pytest.approx(k / n)
    assert (ci.low, ci.high) == pytest.approx((lo / n, hi / n))


def test_bootstrap_spread_matches_the_plug_in_standard_error():
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 1.0, size=200)
    boot = bootstrap_means(values, n_resamples=10_000, seed=1)
    se = np.sqrt(np.mean((values - values.mean()) ** 2) / values.size)  # exact SD of the bootstrap mean
    assert boot.std() == pytest.approx(se, rel=0.03)
    assert boot.mean() == pytest.approx(values.mean(), abs=4 * se / 100)  # 4 Monte-Carlo SDs


def test_constant_values_give_a_degenerate_interval():
    ci = bootstrap_mean_ci(np.full(17, 0.8), n_resamples=500)
    assert (ci.estimate, ci.low, ci.high) == pytest.approx((0.8, 0.8, 0.8))


def test_seeded_and_paired_across_columns():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=50), rng.normal(size=50)
    both = bootstrap_means(np.column_stack([a, b]), n_resamples=3000, seed=7)
    np.testing.assert_allclose(both[:, 0], bootstrap_means(a, 3000, seed=7))
    np.testing.assert_allclose(both[:, 1], bootstrap_means(b, 3000, seed=7))
    assert not np.array_equal(bootstrap_means(a, 3000, seed=7), bootstrap_means(a, 3000, seed=8))


def test_bad_values_are_refused():
    with pytest.raises(DataError, match="NaN"):
        bootstrap_means([1.0, np.nan])
    with pytest.raises(DataError, match="empty"):
        bootstrap_means([])


def _tidy(rows):
    return pd.DataFrame(rows, columns=["dataset", "seed", "model", "perturbation", "metric", "value"])


def test_ratio_to_reference_pairs_units_and_averages_ratios():
    rows = []
    for seed in (1, 2):
        for p, ref, lin in [("A", 2.0, 1.0), ("B", 4.0, 4.0), ("C", 5.0, 10.0)]:
            rows.append(("d1", seed, "mean", p, "l2", ref))
            if not (seed == 2 and p == "C"):  # the linear model misses one unit
                rows.append(("d1", seed, "linear", p, "l2", lin))
            rows.append(("d1", seed, "linear", p, "pearson_delta_vs_control", 0.5))
    out = ratio_to_reference(_tidy(rows), n_resamples=2000)
    assert list(out["model"]) == ["linear"]
    row = out.iloc[0]
    ratios = [0.5, 1.0, 2.0, 0.5, 1.0]
    assert row["n"] == 5
    assert row["mean_ratio"] == pytest.approx(np.mean(ratios))
    assert row["low"] <= row["mean_ratio"] <= row["high"]
    assert min(ratios) <= row["low"] and row["high"] <= max(ratios)
    assert row["log2_mean_ratio"] == pytest.approx(np.log2(np.mean(ratios)))


def test_ratio_to_reference_needs_the_reference():
    with pytest.raises(DataError, match="reference model"):
        ratio_to_reference(_tidy([("d", 1, "linear", "A", "l2", 1.0)]))
