"""Local false discovery rates with an empirical null (Efron's ``locfdr``), in Python.

Efron's two-groups model says that a value :math:`z` comes from the null with probability
:math:`p_0` and density :math:`f_0`, or from the non-null with density :math:`f_1`; the
mixture density is :math:`f = p_0 f_0 + (1 - p_0) f_1`. The *local false discovery rate*
is the posterior probability of the null,

.. math:: \\mathrm{fdr}(z) = \\frac{p_0 f_0(z)}{f(z)}.

:func:`locfdr` estimates it the way the R package ``locfdr`` (Efron, Turnbull &
Narasimhan, version 1.1-8) does:

1. **Mixture density** :math:`f`: the values are binned into ``bre - 1`` equal bins
   between their minimum and maximum, and the counts are fitted by a Poisson regression
   on a natural cubic spline of the bin centre with ``df`` degrees of freedom (knots at
   the quantiles of the bin centres, as ``splines::ns``). ``f`` is the fitted expected
   count per bin.
2. **Empirical null** :math:`f_0 = N(\\delta, \\sigma^2)`, three ways (``nulltype``):

   * ``0`` theoretical: :math:`N(0, 1)`, with :math:`p_0` from the central counts;
   * ``1`` maximum likelihood (the default, and what Ahlmann-Eltze et al. used): the
     values in a central window :math:`[m - b s, m + b s]` (``m`` the median, ``s`` the
     IQR-based scale, :math:`b = 4.3\\, e^{-0.26 \\log_{10} N}`) are modelled as a normal
     truncated to that window, and :math:`(\\delta, \\sigma)` are its maximum-likelihood
     estimates (Newton steps in the exponential-family parameters
     :math:`(\\delta/\\sigma^2, -1/(2\\sigma^2))`); then :math:`p_0 = (N_0/N) / P(\\text{window} \\mid N(\\delta, \\sigma^2))`.
     The fit is repeated once on the window centred on the first estimate, with half
     width :math:`b \\hat\\sigma`;
   * ``2`` central matching: a quadratic fitted to :math:`\\log f` over the central 50 %
     of the values.
3. :math:`\\mathrm{fdr} = \\min(1, p_0 f_0 / f)` per bin, with :math:`f_0` scaled to the same
   total as :math:`f`; set to 1 between the null's mode and the nearest bins where it is
   already 1, and (maximum-likelihood null) on :math:`[\\delta - \\sigma, \\delta + \\sigma]`.
   Each value gets the fdr of its position by linear interpolation between bin centres.

The implementation is written from the published algorithm; the natural spline basis and
the Poisson fit are done with numpy (the fitted ``f`` does not depend on the choice of
basis, only on the spline space).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import norm

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

#: Fewer values than this give a histogram too sparse to estimate a null from.
MIN_VALUES = 200


class LocfdrError(ValueError):
    """The local fdr could not be estimated (too few values, or the null fit failed)."""


@dataclass
class LocfdrResult:
    """Output of :func:`locfdr`.

    Attributes
    ----------
    fdr
        Local fdr of every input value (same order as the input).
    delta, sigma, p0
        The null used: :math:`f_0 = N(\\delta, \\sigma^2)` with weight :math:`p_0`.
    nulltype
        0 theoretical, 1 maximum likelihood, 2 central matching.
    bins
        One row per histogram bin: ``x`` (centre), ``count``, ``f`` (fitted mixture, expected
        count), ``p0f0`` (the null part :math:`p_0 f_0` in the same unit), ``fdr``.
    estimates
        The null estimated by each method that succeeded (rows ``theoretical``,
        ``maximum likelihood``, ``central matching``; columns ``delta, sigma, p0`` and
        ``reading``, a sentence saying what the null is, whether it was used, and whether its
        ``p0`` is impossible, e.g. ``N(0, 1)`` for values whose spread is far below 1).
    misfit
        Efron's check of the spline fit, :math:`\\sum (y - f)^2 / (f + 1)` over the inner bins
        divided by their degrees of freedom; above 1.5 the R package warns ("rerun with
        increased df").
    n
        Number of values.
    messages
        Warnings a user should see (misfit, failed estimates).
    """

    fdr: np.ndarray
    delta: float
    sigma: float
    p0: float
    nulltype: int
    bins: pd.DataFrame
    estimates: pd.DataFrame
    misfit: float
    n: int
    messages: list[str] = field(default_factory=list)

    def fdr_at(self, values: ArrayLike) -> np.ndarray:
        """Local fdr at arbitrary values (interpolated between bin centres, constant outside)."""
        return np.interp(np.asarray(values, dtype=float), self.bins["x"].to_numpy(), self.bins["fdr"].to_numpy())

    def summary(self) -> pd.Series:
        """The null parameters and fit diagnostics as a Series."""
        names = {0: "theoretical", 1: "maximum likelihood", 2: "central matching"}
        return pd.Series(
            {
                "null": names[self.nulltype],
                "delta": self.delta,
                "sigma": self.sigma,
                "p0": self.p0,
                "n_values": self.n,
                "misfit": self.misfit,
            }
        )


# ---------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------


def _reading(method: str, p0: float, used: bool) -> str:
    """One sentence on a null estimate for the table of :attr:`LocfdrResult.estimates`."""
    what = {
        "theoretical": "the standard normal N(0, 1), whatever the scale of the values",
        "maximum likelihood": "a normal fitted to the central values (truncated-normal likelihood)",
        "central matching": "a normal matched to the curvature of the histogram's centre",
    }[method]
    if p0 > 1:
        what += f"; p0 = {p0:.3g} is above 1, impossible for a share of null values: this null does not describe the values"
    return what + ("; used" if used else "; not used")


def _histogram(z: np.ndarray, lo: float, hi: float, bre: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts in ``bre - 1`` equal bins over [lo, hi], right-closed like R's ``hist``."""
    breaks = np.linspace(lo, hi, bre)
    zz = np.clip(z, lo, hi)
    idx = np.searchsorted(breaks, zz, side="left") - 1
    idx = np.clip(idx, 0, bre - 2)  # the lowest value belongs to the first bin
    counts = np.bincount(idx, minlength=bre - 1).astype(np.float64)
    mids = (breaks[1:] + breaks[:-1]) / 2
    return breaks, mids, counts


def natural_spline_basis(x: np.ndarray, df: int) -> np.ndarray:
    """A basis (with intercept) of the natural cubic splines that R's ``cbind(1, ns(x, df))`` spans.

    Knots: ``df - 1`` interior knots at the quantiles ``1/df, ..., (df-1)/df`` of ``x``,
    boundary knots at ``min(x)`` and ``max(x)``. The basis is the truncated-power form of
    Hastie, Tibshirani & Friedman (ESL eq. 5.4-5.5): ``1, x, d_k(x) - d_{K-1}(x)`` with
    ``d_k(x) = ((x - ξ_k)^3_+ - (x - ξ_K)^3_+) / (ξ_K - ξ_k)``, orthonormalised by QR (same
    column space, well conditioned). Returns ``len(x) x (df + 1)``.
    """
    x = np.asarray(x, dtype=float)
    lo, hi = x.min(), x.max()
    if hi <= lo:
        raise LocfdrError("all values are equal; no spline can be fitted")
    u = (x - lo) / (hi - lo)  # affine map: same spline space, better numbers
    interior = np.quantile(u, np.arange(1, df) / df)
    knots = np.concatenate([[0.0], interior, [1.0]])
    K = knots.size

    def d(k: int) -> np.ndarray:
        return (np.clip(u - knots[k], 0, None) ** 3 - np.clip(u - knots[K - 1], 0, None) ** 3) / (knots[K - 1] - knots[k])

    cols = [np.ones_like(u), u] + [d(k) - d(K - 2) for k in range(K - 2)]
    basis = np.column_stack(cols)
    q, _ = np.linalg.qr(basis)
    return q


def poisson_fit(X: np.ndarray, y: np.ndarray, max_iter: int = 50, tol: float = 1e-10) -> np.ndarray:
    """Fitted means of a Poisson GLM with log link (iteratively reweighted least squares).

    Starts from ``mu = y + 0.1`` and stops when the deviance changes by less than ``tol``
    relative, as R's ``glm.fit`` does (its default tolerance is 1e-8).
    """
    y = np.asarray(y, dtype=float)
    mu = y + 0.1
    eta = np.log(mu)
    dev_old = np.inf
    for _ in range(max_iter):
        w = mu
        zwork = eta + (y - mu) / mu
        sw = np.sqrt(w)
        beta, *_ = np.linalg.lstsq(X * sw[:, None], zwork * sw, rcond=None)
        eta = X @ beta
        mu = np.exp(np.clip(eta, -700, 700))
        with np.errstate(divide="ignore", invalid="ignore"):
            dev = 2 * np.sum(np.where(y > 0, y * np.log(y / mu), 0.0) - (y - mu))
        if abs(dev - dev_old) / (abs(dev) + 0.1) < tol:
            break
        dev_old = dev
    return mu


def truncated_normal_mle(
    z: np.ndarray,
    centre: float,
    half_width: float,
    delta: float = 0.0,
    sigma: float = 1.0,
    max_iter: int = 35,
    eps: float = 1e-5,
) -> tuple[float, float, float] | None:
    """Maximum-likelihood null from the values inside ``[centre - half_width, centre + half_width]``.

    The values in the window are modelled as :math:`N(\\delta, \\sigma^2)` truncated to the
    window; :math:`(\\delta, \\sigma)` maximise that truncated likelihood (Newton steps on the
    natural parameters :math:`\\beta = (\\delta/\\sigma^2, -1/(2\\sigma^2))`, damped by
    :math:`1/(1 + 1/j^2)` in step :math:`j`, starting at ``delta, sigma``), and
    :math:`p_0 = (N_0 / N) / (\\Phi(b') - \\Phi(a'))` with the standardised window ends
    :math:`a', b'`. Efron's ``locmle``.

    Returns
    -------
    (delta, sigma, p0), or None when the iteration fails (the window's values do not look
    like a truncated normal, e.g. too few of them).
    """
    z = np.asarray(z, dtype=float)
    a, b = centre - half_width, centre + half_width
    inside = z[(z >= a) & (z <= b)]
    if inside.size < 10:
        return None
    Y = np.array([inside.mean(), np.mean(inside**2)])
    share = inside.size / z.size
    d, s = float(delta), float(sigma)
    # E[(d + sW)^k] = s^k sum_j C(k, j) (d/s)^(k-j) E[W^j], W standard normal truncated to the window
    binom = np.array([[math.comb(k, j) if j <= k else 0 for j in range(5)] for k in range(5)], dtype=float)
    power = np.maximum(np.subtract.outer(np.arange(5), np.arange(5)), 0)
    bet_new = None
    for j in range(1, max_iter + 1):
        bet = np.array([d / s**2, -1.0 / (2 * s**2)])
        aa, bb = (a - d) / s, (b - d) / s
        H0 = norm.cdf(bb) - norm.cdf(aa)
        fa, fb = norm.pdf(aa), norm.pdf(bb)
        H = np.array(
            [
                H0,
                fa - fb,
                H0 + aa * fa - bb * fb,
                (2 + aa**2) * fa - (2 + bb**2) * fb,
                3 * H0 + (3 * aa + aa**3) * fa - (3 * bb + bb**3) * fb,
            ]
        )
        if not np.isfinite(H0) or H0 <= 0:
            return None
        r = d / s
        M = (s ** np.arange(5))[:, None] * binom * r**power
        E = M @ H / H0
        mu = E[1:3]
        V = np.array([[E[2] - E[1] ** 2, E[3] - E[1] * E[2]], [E[3] - E[1] * E[2], E[4] - E[2] ** 2]])
        try:
            step = np.linalg.solve(V, Y - mu) / (1 + 1 / j**2)
        except np.linalg.LinAlgError:
            return None
        bet_new = bet + step
        if bet_new[1] > 0:
            bet_new = bet + 0.1 * step
        if not np.isfinite(bet_new).all() or bet_new[1] >= 0:
            return None
        d = -bet_new[0] / (2 * bet_new[1])
        s = 1 / np.sqrt(-2 * bet_new[1])
        if np.sqrt(np.sum((bet_new - bet) ** 2)) < eps:
            break
    aa, bb = (a - d) / s, (b - d) / s
    H0 = norm.cdf(bb) - norm.cdf(aa)
    if not np.isfinite(H0) or H0 <= 0:
        return None
    return float(d), float(s), float(share / H0)


def _central_matching(x: np.ndarray, logf: np.ndarray, f: np.ndarray, z: np.ndarray, pct0: float):
    """Quadratic fit to log f over the central values (``nulltype=2``); None if not concave."""
    imax = int(np.argmax(logf))
    xmax = x[imax]
    lo0, hi0 = np.quantile(z, [pct0, 1 - pct0])
    i0 = (x > lo0) & (x < hi0)
    if i0.sum() < 3:
        return None
    X00 = np.column_stack([np.ones(i0.sum()), x[i0] - xmax, (x[i0] - xmax) ** 2])
    co, *_ = np.linalg.lstsq(X00, logf[i0], rcond=None)
    if not np.isfinite(co).all() or co[2] >= 0:
        return None
    delta = -co[1] / (2 * co[2]) + xmax
    sigma = 1 / np.sqrt(-2 * co[2])
    f0 = np.exp(np.column_stack([np.ones_like(x), x - xmax, (x - xmax) ** 2]) @ co)
    p0 = f0.sum() / f.sum()
    return float(delta), float(sigma), float(p0)


# ---------------------------------------------------------------------------------------
# the estimator
# ---------------------------------------------------------------------------------------


def polynomial_basis(x: np.ndarray, df: int) -> np.ndarray:
    """Orthonormal basis of the polynomials of degree ``df`` in ``x`` (with intercept), R's ``cbind(1, poly(x, df))``."""
    x = np.asarray(x, dtype=float)
    u = (x - x.mean()) / (x.std() or 1.0)
    q, _ = np.linalg.qr(np.vander(u, df + 1, increasing=True))
    return q


def locfdr(z: ArrayLike, bre: int = 120, df: int = 7, pct0: float = 0.25, nulltype: int = 1, basis: str = "spline") -> LocfdrResult:
    """Local false discovery rate of every value, with an empirical null (Efron's locfdr).

    See the module docstring for the method. Defaults are those of the R package
    (``bre = 120`` breaks, ``df = 7``, ``pct0 = 1/4``, ``nulltype = 1``: maximum-likelihood
    null), which Ahlmann-Eltze et al. call as ``locfdr(error, nulltype = 1)``.

    Parameters
    ----------
    z
        The values (any scale; they need not be z-scores when the null is estimated).
    bre
        Number of histogram breaks (``bre - 1`` bins) over the range of the values.
    df
        Degrees of freedom of the natural spline fitted to the counts.
    pct0
        Share of values below (and above) the central part used by central matching and
        the theoretical :math:`p_0`.
    nulltype
        0 theoretical :math:`N(0,1)`, 1 maximum likelihood, 2 central matching.
    basis
        ``"spline"`` (natural cubic spline, R's ``type = 0``, default) or ``"polynomial"``
        (R's ``type = 1``) for the Poisson regression of the counts.

    Raises
    ------
    LocfdrError
        Fewer than :data:`MIN_VALUES` finite values, all values equal, or the requested null
        could not be estimated (the message says why and what to try).
    """
    z = np.asarray(z, dtype=float).ravel()
    if nulltype not in (0, 1, 2):
        raise ValueError("nulltype must be 0 (theoretical), 1 (maximum likelihood) or 2 (central matching)")
    if basis not in ("spline", "polynomial"):
        raise ValueError("basis must be 'spline' or 'polynomial'")
    if not np.isfinite(z).all():
        raise LocfdrError(f"{int((~np.isfinite(z)).sum())} values are NaN or infinite; remove them first.")
    N = z.size
    if N < MIN_VALUES:
        raise LocfdrError(
            f"only {N} values: an empirical null needs a histogram of at least {MIN_VALUES} values (use more perturbations or genes)."
        )
    lo, hi = float(z.min()), float(z.max())
    if hi <= lo:
        raise LocfdrError("all values are equal; there is nothing to separate.")
    _, x, y = _histogram(z, lo, hi, bre)
    K = x.size
    design = natural_spline_basis(x, df) if basis == "spline" else polynomial_basis(x, df)
    f = poisson_fit(design, y)
    logf = np.log(f)
    misfit = float(np.sum(((y - f) / np.sqrt(f + 1))[1 : K - 1] ** 2) / (K - 2 - df))
    messages = []
    if misfit > 1.5:
        messages.append(
            f"the smooth curve fitted to the histogram of the values follows it poorly (misfit {misfit:.1f}, where a good "
            "fit stays below 1.5), so the estimated null may be off; a curve with more degrees of freedom (`df`) or "
            "more bins (`bre`) follows a sharp centre more closely."
        )

    estimates = {}
    # theoretical null: N(0, 1), p0 from the central bins
    lo0, hi0 = np.quantile(z, [pct0, 1 - pct0])
    i0 = (x > lo0) & (x < hi0)
    f00 = np.exp(-(x**2) / 2)
    f00 = f00 * f.sum() / f00.sum()
    p0theo = f[i0].sum() / f00[i0].sum() if i0.any() else np.nan
    estimates["theoretical"] = (0.0, 1.0, float(p0theo))
    cm = _central_matching(x, logf, f, z, pct0)
    if cm is not None:
        estimates["central matching"] = cm
    elif nulltype == 2:
        raise LocfdrError("central matching failed: the middle of the histogram is not concave (non-normal).")

    b = 4.3 * math.exp(-0.26 * math.log10(N))
    med = float(np.median(z))
    q25, q75 = np.quantile(z, [0.25, 0.75])
    scale = (q75 - q25) / (2 * norm.ppf(0.75))
    first = truncated_normal_mle(z, med, b * scale) if scale > 0 else None
    if N > 500_000 and first is not None:
        messages.append("more than 500,000 values: the ML window is wider than optimal (as in R's locfdr).")
        first = truncated_normal_mle(z, med, scale)
        b = 1.0
    mle = None
    if first is not None:
        mle = truncated_normal_mle(z, first[0], b * first[1], delta=first[0], sigma=first[1])
    if mle is not None:
        estimates["maximum likelihood"] = mle
    elif nulltype == 1:
        raise LocfdrError(
            "the maximum-likelihood null could not be fitted: the central values do not look like a "
            "truncated normal (too few distinct values, or a non-normal middle). Try nulltype=2."
        )

    name = {0: "theoretical", 1: "maximum likelihood", 2: "central matching"}[nulltype]
    delta, sigma, p0 = estimates[name]
    if nulltype == 0:
        f0 = f00
        p0 = float(p0theo)
    else:
        f0 = norm.pdf(x, delta, sigma)
        f0 = f0 * f.sum() / f0.sum()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # f ~ 0 in the tails: fdr is capped at 1
        fdr_bins = np.minimum(p0 * f0 / f, 1.0)
    fdr_bins[~np.isfinite(fdr_bins)] = 1.0
    # raise fdr to 1 between the mode and the nearest bins already at 1 (R: "raise fdr to 1 near xmax")
    xmax = delta if nulltype != 0 else x[int(np.argmax(logf))]
    left = x[(x <= xmax) & (fdr_bins == 1)]
    right = x[(x >= xmax) & (fdr_bins == 1)]
    xxlo = left.min() if left.size else xmax
    xxhi = right.max() if right.size else xmax
    fdr_bins[(x >= xxlo) & (x <= xxhi)] = 1.0
    if nulltype == 1:
        fdr_bins[(x >= delta - sigma) & (x <= delta + sigma)] = 1.0
    if p0 > 1:
        messages.append(f"the estimated null proportion p0 = {p0:.3f} exceeds 1 (no evidence of non-null values).")

    bins = pd.DataFrame({"x": x, "count": y, "f": f, "p0f0": p0 * f0, "fdr": fdr_bins})
    table = pd.DataFrame(estimates, index=["delta", "sigma", "p0"]).T
    table["reading"] = [_reading(method, row["p0"], method == name) for method, row in table.iterrows()]
    return LocfdrResult(
        fdr=np.interp(z, x, fdr_bins),
        delta=float(delta),
        sigma=float(sigma),
        p0=float(p0),
        nulltype=nulltype,
        bins=bins,
        estimates=table,
        misfit=misfit,
        n=N,
        messages=messages,
    )


def fdr_thresholds(z: ArrayLike, fdr: ArrayLike, target: float = 0.05, tolerance: float | None = None) -> tuple[float, float]:
    """The negative and the positive value whose local fdr is closest to ``target``.

    Ahlmann-Eltze et al.: ``upper`` = the positive value whose fdr is
    closest to 0.05, ``lower`` likewise among the negative values; values beyond them are
    called non-additive. Ties go to the first value in input order (R's ``which.min``).

    A side gets NaN (no threshold: nothing on that side reaches the target) when it has no
    values, or when the closest fdr differs from ``target`` by more than ``tolerance``
    (default ``target``, i.e. the closest fdr must lie in ``[0, 2 * target]``).
    """
    z = np.asarray(z, dtype=float)
    fdr = np.asarray(fdr, dtype=float)
    if z.shape != fdr.shape:
        raise ValueError("z and fdr must have the same shape")
    tolerance = target if tolerance is None else tolerance
    out = []
    for side in (z < 0, z > 0):
        idx = np.flatnonzero(side)
        if idx.size == 0:
            out.append(np.nan)
            continue
        gap = np.abs(fdr[idx] - target)
        best = idx[int(np.argmin(gap))]
        out.append(float(z[best]) if gap.min() <= tolerance else np.nan)
    return out[0], out[1]
