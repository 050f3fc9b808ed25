"""Efron's local fdr: building blocks against independent routes, and recovery of known mixtures."""

import numpy as np
import pytest
from scipy.interpolate import CubicSpline
from scipy.optimize import minimize
from scipy.stats import norm

from helpers.stats.locfdr import (
    LocfdrError,
    fdr_thresholds,
    locfdr,
    natural_spline_basis,
    poisson_fit,
    truncated_normal_mle,
)


def mixture(n, p0=0.9, alt=3.0, seed=1, scale=1.0):
    rng = np.random.default_rng(seed)
    n0 = int(round(p0 * n))
    return scale * np.concatenate([rng.normal(0, 1, n0), rng.normal(alt, 1, n - n0)])


def test_spline_basis_spans_natural_cubic_splines():
    # Any natural cubic spline with knots at min, the 1/7..6/7 quantiles and max of x lies in the span.
    x = np.sort(np.random.default_rng(0).uniform(-2, 5, 119))
    knots = np.concatenate([[x.min()], np.quantile(x, np.arange(1, 7) / 7), [x.max()]])
    B = natural_spline_basis(x, df=7)
    assert B.shape == (119, 8)
    for seed in range(3):
        values = np.random.default_rng(seed).normal(size=knots.size)
        target = CubicSpline(knots, values, bc_type="natural")(x)
        coef, *_ = np.linalg.lstsq(B, target, rcond=None)
        np.testing.assert_allclose(B @ coef, target, atol=1e-8)
    # ... and a plain cubic (not natural) does not
    cubic = x**3
    coef, *_ = np.linalg.lstsq(B, cubic, rcond=None)
    assert np.abs(B @ coef - cubic).max() > 0.1


def test_poisson_fit_solves_the_score_equations():
    rng = np.random.default_rng(3)
    x = np.linspace(-3, 3, 60)
    X = natural_spline_basis(x, df=5)
    y = rng.poisson(200 * np.exp(-(x**2) / 2)).astype(float)
    mu = poisson_fit(X, y)
    # maximum likelihood of a log-link Poisson GLM <=> X^T (y - mu) = 0
    np.testing.assert_allclose(X.T @ (y - mu), 0, atol=1e-6)
    assert np.isclose(mu.sum(), y.sum())  # the intercept is in the span


def test_truncated_mle_matches_direct_optimisation():
    z = mixture(5000, seed=4)
    a, b = -1.2, 1.2
    got = truncated_normal_mle(z, 0.0, 1.2)
    inside = z[(z >= a) & (z <= b)]

    def nll(theta):
        d, log_s = theta
        s = np.exp(log_s)
        mass = norm.cdf((b - d) / s) - norm.cdf((a - d) / s)
        return -(norm.logpdf(inside, d, s).sum() - inside.size * np.log(mass))

    opt = minimize(nll, x0=[0.1, 0.1], method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-10, "maxiter": 5000})
    d_ref, s_ref = opt.x[0], np.exp(opt.x[1])
    assert got[0] == pytest.approx(d_ref, abs=1e-4)
    assert got[1] == pytest.approx(s_ref, rel=1e-4)
    mass = norm.cdf((b - d_ref) / s_ref) - norm.cdf((a - d_ref) / s_ref)
    assert got[2] == pytest.approx(inside.size / z.size / mass, rel=1e-3)


def test_recovers_known_mixture():
    # 90 % N(0,1) + 10 % N(3,1): null parameters and the local fdr itself
    z = mixture(20_000)
    fit = locfdr(z)
    assert fit.nulltype == 1
    assert fit.delta == pytest.approx(0.0, abs=0.1)
    assert fit.sigma == pytest.approx(1.0, abs=0.08)
    assert fit.p0 == pytest.approx(0.9, abs=0.04)
    grid = np.array([1.5, 2.0, 2.5, 3.0, 3.5, 4.0])
    true_fdr = 0.9 * norm.pdf(grid) / (0.9 * norm.pdf(grid) + 0.1 * norm.pdf(grid - 3))
    np.testing.assert_allclose(fit.fdr_at(grid), true_fdr, atol=0.1)
    assert fit.fdr_at([0.0])[0] == 1.0  # the centre is null
    assert (fit.fdr[z > 4.5] < 0.02).all()  # the far tail is almost surely non-null
    # R's polynomial alternative (type = 1) gives the same null and nearly the same fdr
    poly = locfdr(z, basis="polynomial")
    assert poly.delta == fit.delta and poly.sigma == fit.sigma and poly.p0 == fit.p0  # the ML null ignores the histogram
    np.testing.assert_allclose(poly.fdr_at(grid), fit.fdr_at(grid), atol=0.05)
    # the other nulls are estimated too and roughly agree
    assert set(fit.estimates.index) == {"theoretical", "central matching", "maximum likelihood"}
    assert fit.estimates.loc["central matching", "sigma"] == pytest.approx(1.0, abs=0.15)


def test_scale_equivariance():
    # deviations in log-expression are ~0.05 wide: the fit must not care about units
    z = mixture(10_000, p0=0.85, alt=-3.5, seed=7)
    a, b = locfdr(z), locfdr(0.05 * z)
    assert b.delta == pytest.approx(0.05 * a.delta, abs=1e-5)
    assert b.sigma == pytest.approx(0.05 * a.sigma, rel=1e-4)
    assert b.p0 == pytest.approx(a.p0, rel=1e-4)
    np.testing.assert_allclose(a.fdr, b.fdr, atol=1e-6)


def test_pure_null_has_no_discoveries():
    z = np.random.default_rng(11).normal(0.02, 0.05, 20_000)
    fit = locfdr(z)
    assert fit.delta == pytest.approx(0.02, abs=0.005)
    assert fit.sigma == pytest.approx(0.05, rel=0.08)
    assert fit.p0 == pytest.approx(1.0, abs=0.05)
    assert np.mean(fit.fdr < 0.2) < 0.002


def test_thresholds_two_sided_mixture():
    rng = np.random.default_rng(5)
    z = np.concatenate([rng.normal(0, 1, 17_000), rng.normal(-4, 1, 1_500), rng.normal(4, 1, 1_500)])
    fit = locfdr(z)
    lower, upper = fdr_thresholds(z, fit.fdr, 0.05)
    # true fdr = 0.05 where 0.8075 phi(z) = 0.00375 phi(z - 4), i.e. exp(4z - 8) = 0.8075 / 0.00375
    true_upper = (8 + np.log(0.8075 / 0.00375)) / 4  # 3.34
    assert upper == pytest.approx(true_upper, abs=0.25)
    assert lower == pytest.approx(-true_upper, abs=0.25)
    assert fit.fdr_at([upper])[0] == pytest.approx(0.05, abs=0.02)


def test_fdr_thresholds_by_hand():
    z = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])
    fdr = np.array([0.01, 0.06, 0.9, 0.8, 0.04, 0.001])
    assert fdr_thresholds(z, fdr) == (-2.0, 2.0)
    # ties go to the first value in input order
    lo, up = fdr_thresholds(np.array([2.0, 1.0]), np.array([0.05, 0.05]))
    assert np.isnan(lo) and up == 2.0
    # nothing near 0.05: no threshold
    lo, up = fdr_thresholds(z, np.ones(6))
    assert np.isnan(lo) and np.isnan(up)


def test_errors_are_clear():
    with pytest.raises(LocfdrError, match="at least"):
        locfdr(np.arange(50.0))
    with pytest.raises(LocfdrError, match="equal"):
        locfdr(np.zeros(500))
    with pytest.raises(LocfdrError, match="NaN"):
        locfdr(np.r_[mixture(500), np.nan])
    with pytest.raises(ValueError):
        locfdr(mixture(500), nulltype=5)
