"""Exact expected log-normalised expression of negative-binomial counts.

The benchmarks compare pseudobulk means of ``X = log1p(c · 1e4 / S)``, where ``c`` is a
cell's UMI count of a gene and ``S`` the cell's total UMIs. The simulator puts its effects
into the negative-binomial *mean*, and ``E[log1p(·)]`` is not ``log`` of the mean (Jensen's
inequality, zeros, library-size normalisation). To state the true change in the unit the
analysis sees, this module computes

.. math::

    F_\\varphi(\\mu, \\kappa) = E\\big[\\log(1 + \\kappa\\, c / \\ell)\\big], \\qquad
    c \\mid \\ell \\sim \\mathrm{NB}(\\text{mean } \\ell\\mu, \\text{dispersion } \\varphi), \\qquad
    \\ell \\sim \\mathrm{LogNormal}(-s^2/2, s),

the expected ``X`` of a gene with mean ``μ`` UMIs at the average library size, in cells whose
relative library size ``ℓ`` (mean 1) is log-normal. ``κ = 1e4 / T`` with ``T`` the expected
total UMIs of the measured genes at the average library size, so that ``c · 1e4 / S ≈ κ c / ℓ``
(``S ≈ ℓ T``; the fluctuation of ``S`` around ``ℓ T`` is a relative 1–2 % and is neglected).

How it is computed (no sampling, so the truth is exact up to quadrature error < 1e-4):

* the NB is a Poisson–Gamma mixture, ``c ~ Poisson(λ)``, ``λ = ℓ μ γ``, ``γ ~ Gamma(r, 1/r)``,
  ``r = 1/φ``; the Gamma integral is a sum over a lattice of ``log γ`` with the exact Gamma
  probability of each lattice cell (the lattice step equals that of the ``log μ`` grid, so the
  integral over all ``μ`` is one sliding-window product), and the log-normal integral over
  ``ℓ`` uses Gauss–Hermite quadrature;
* ``H(λ, s) = E_{c ~ Poisson(λ)} log(1 + s c)`` is summed exactly on a fine grid of ``λ ≤ 60``
  and, above, taken from its fourth-order expansion around ``λ`` (error < 1e-5);
* ``F`` is tabulated on a log grid of ``μ`` (spacing 0.05 in ``log μ``) and of ``κ`` for every
  dispersion used, and read off by bilinear interpolation in ``(log κ, log μ)``.

Dispersions are snapped to the log grid :data:`DISPERSION_GRID` (steps of 16 %) when genes
are drawn, so every gene's ``F`` is tabulated exactly at its own dispersion.

:func:`kappas` gives the normalisation factor ``κ`` of a row of means in each batch, and
:func:`batched_values` the expected ``X`` averaged over a screen's batches (what the true
changes of :mod:`.effects` and :mod:`.doubles` are made of).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.signal import fftconvolve
from scipy.special import gammainc, gammaincinv, roots_hermitenorm
from scipy.stats import poisson

from ..canonical import TARGET_SUM

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

#: Dispersions a simulated gene can have (log grid from 0.01 to 20, steps of about 16 %).
DISPERSION_GRID = np.exp(np.linspace(np.log(0.01), np.log(20.0), 51))

_LAMBDA_SWITCH = 60.0
_LAMBDA_MIN = 1e-9
_LN_LAMBDA_STEP = 0.004


def snap_dispersion(phi: ArrayLike) -> np.ndarray:
    """Index into :data:`DISPERSION_GRID` of the grid value nearest (in log) to each ``phi``."""
    logs = np.log(DISPERSION_GRID)
    x = np.log(np.clip(np.asarray(phi, dtype=np.float64), DISPERSION_GRID[0], DISPERSION_GRID[-1]))
    step = logs[1] - logs[0]
    return np.clip(np.rint((x - logs[0]) / step).astype(np.int64), 0, len(logs) - 1)


def _poisson_log1p_table(s_values: np.ndarray):
    """Exact ``H(λ, s)`` for ``λ`` on a log grid up to :data:`_LAMBDA_SWITCH` (rows) and each ``s``."""
    ln_grid = np.arange(np.log(_LAMBDA_MIN), np.log(_LAMBDA_SWITCH) + _LN_LAMBDA_STEP, _LN_LAMBDA_STEP)
    lam = np.exp(ln_grid)
    k_max = int(_LAMBDA_SWITCH + 12 * np.sqrt(_LAMBDA_SWITCH) + 20)
    k = np.arange(k_max + 1)
    pmf = poisson.pmf(k[None, :], lam[:, None])
    table = pmf @ np.log1p(np.outer(k, s_values))
    return ln_grid, table


def _poisson_log1p_expansion(lam: np.ndarray, s: np.ndarray | float) -> np.ndarray:
    """``E log(1+s c)``, ``c ~ Poisson(λ)``, from the Taylor series around ``λ`` (4 central moments)."""
    u = 1.0 + s * lam
    q = s / u
    # E f(c) ≈ f(λ) + f''λ/2 + f'''λ/6 + f''''(3λ²+λ)/24, f = log(1+sc)
    return np.log(u) - 0.5 * lam * q**2 + lam * q**3 / 3.0 - 0.25 * (3 * lam**2 + lam) * q**4


class ExpectedLogTable:
    """Tabulated :math:`F_\\varphi(\\mu, \\kappa)` for a set of dispersions.

    Parameters
    ----------
    dispersion_indices
        Indices into :data:`DISPERSION_GRID` that need a table (one per distinct gene dispersion).
    kappa_range
        ``(κ_min, κ_max)`` that queries will use; the table covers it with ``n_kappa`` log-spaced nodes.
    library_log_sd
        SD ``s`` of the log relative library size.
    mu_max
        Largest mean (UMIs at average library size) that queries will use.
    """

    def __init__(
        self,
        dispersion_indices: ArrayLike,
        kappa_range: tuple[float, float],
        library_log_sd: float,
        mu_max: float,
        mu_min: float = 1e-6,
        ln_mu_step: float = 0.05,
        n_kappa: int = 9,
        n_ell: int = 14,
    ):
        self.dispersion_indices = np.unique(np.asarray(dispersion_indices, dtype=np.int64))
        lo, hi = float(kappa_range[0]), float(kappa_range[1])
        if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo <= hi):
            raise ValueError(f"bad kappa range {kappa_range}")
        if hi / lo < 1.02:
            lo, hi = lo / 1.01, hi * 1.01
        self.ln_kappa = np.linspace(np.log(lo), np.log(hi), n_kappa)
        self.ln_mu = np.arange(np.log(mu_min), np.log(max(mu_max, 1.0) * 1.05) + ln_mu_step, ln_mu_step)
        self.library_log_sd = float(library_log_sd)
        z, w = roots_hermitenorm(n_ell)
        w = w / w.sum()
        ell = np.exp(self.library_log_sd * z - 0.5 * self.library_log_sd**2)
        kappa = np.exp(self.ln_kappa)
        s_values = (kappa[:, None] / ell[None, :]).ravel()  # column (k, i) -> k * n_ell + i
        ln_lam_grid, h_table = _poisson_log1p_table(s_values)
        n_mu = self.ln_mu.size
        tables = np.zeros((self.dispersion_indices.size, n_kappa, n_mu))
        for d, di in enumerate(self.dispersion_indices):
            r = 1.0 / DISPERSION_GRID[di]
            # Gamma(r, 1) on a lattice of log x with the same step as log μ: cell masses are exact
            t_lo = np.log(max(gammaincinv(r, 1e-12), 1e-10))
            t_hi = np.log(gammaincinv(r, 1.0 - 1e-12))
            n_x = int(np.ceil((t_hi - t_lo) / ln_mu_step)) + 1
            t = t_lo + ln_mu_step * np.arange(n_x)
            edges = np.exp(np.concatenate([[-np.inf], t[:-1] + ln_mu_step / 2, [np.inf]]))
            mass = np.diff(gammainc(r, edges))
            for i in range(n_ell):
                # λ on the lattice ln μ_k + ln ℓ_i − ln r + t_j = base + (k + j) step
                base = self.ln_mu[0] + np.log(ell[i]) - np.log(r) + t_lo
                lam = np.exp(base + ln_mu_step * np.arange(n_mu + n_x - 1))
                cols = np.arange(n_kappa) * n_ell + i
                h = self._h(lam, s_values[cols], ln_lam_grid, h_table[:, cols])  # n_kappa x lattice
                # F(μ_k) = Σ_j mass_j h[k + j]: a correlation, done by FFT
                tables[d] += w[i] * fftconvolve(h, mass[::-1][None, :], mode="valid", axes=1)
        self.tables = tables
        self._row_of = {int(di): d for d, di in enumerate(self.dispersion_indices)}

    @staticmethod
    def _h(lam: np.ndarray, s: np.ndarray, ln_grid: np.ndarray, table: np.ndarray) -> np.ndarray:
        """``H(λ, s_k)`` for every ``λ`` in ``lam`` and every ``s_k`` -> shape ``(len(s),) + lam.shape``."""
        out = np.empty((s.size,) + lam.shape)
        small = lam <= _LAMBDA_SWITCH
        tiny = lam < _LAMBDA_MIN
        ln = np.log(np.clip(lam, _LAMBDA_MIN, _LAMBDA_SWITCH))
        pos = (ln - ln_grid[0]) / _LN_LAMBDA_STEP
        j = np.clip(np.floor(pos).astype(np.int64), 0, ln_grid.size - 2)
        f = pos - j
        for k in range(s.size):
            col = table[:, k]
            interp = col[j] * (1 - f) + col[j + 1] * f
            big = _poisson_log1p_expansion(lam, s[k])
            val = np.where(small, interp, big)
            val = np.where(tiny, lam * np.log1p(s[k]), val)
            out[k] = val
        return out

    def _rows(self, dispersion_index: ArrayLike) -> np.ndarray:
        idx = np.asarray(dispersion_index, dtype=np.int64)
        rows = np.searchsorted(self.dispersion_indices, idx)
        if np.any(rows >= self.dispersion_indices.size) or np.any(
            self.dispersion_indices[np.minimum(rows, self.dispersion_indices.size - 1)] != idx
        ):
            raise ValueError("a requested dispersion has no table")
        return rows

    def gene_tables(self, dispersion_index: ArrayLike) -> np.ndarray:
        """Row of :attr:`tables` of each gene (pass it to :meth:`values` and :meth:`at_kappa`)."""
        return self._rows(dispersion_index)

    def _kappa_weights(self, kappa: np.ndarray):
        pos = (np.log(kappa) - self.ln_kappa[0]) / (self.ln_kappa[1] - self.ln_kappa[0])
        pos = np.clip(pos, 0, self.ln_kappa.size - 1)
        k = np.clip(np.floor(pos).astype(np.int64), 0, self.ln_kappa.size - 2)
        return k, pos - k

    def at_kappa(self, gene_tables: np.ndarray, kappa: float) -> np.ndarray:
        """``F`` of every gene on the ``μ`` grid at one ``κ``: ``genes x n_mu``."""
        k, f = self._kappa_weights(np.asarray(kappa, dtype=np.float64))
        return self.tables[gene_tables, k, :] * (1 - f) + self.tables[gene_tables, k + 1, :] * f

    def values(self, gene_tables: np.ndarray, mu: np.ndarray, kappa: np.ndarray) -> np.ndarray:
        """``F_{φ_g}(μ[i, g], κ[i])`` for a ``n x genes`` array of means and ``n`` values of ``κ``.

        Bilinear interpolation in ``(log κ, log μ)``; below the smallest tabulated ``μ``,
        ``F`` is linear in ``μ`` (``F → 0`` as ``μ → 0``).
        """
        mu = np.atleast_2d(np.asarray(mu, dtype=np.float64))
        kappa = np.broadcast_to(np.asarray(kappa, dtype=np.float64), (mu.shape[0],))
        if np.any(kappa < np.exp(self.ln_kappa[0]) * 0.999) or np.any(kappa > np.exp(self.ln_kappa[-1]) * 1.001):
            raise ValueError(
                f"normalisation factor {kappa.min():.4g}..{kappa.max():.4g} outside the tabulated range "
                f"{np.exp(self.ln_kappa[0]):.4g}..{np.exp(self.ln_kappa[-1]):.4g}"
            )
        k, fk = self._kappa_weights(kappa)
        ln_mu0, step = self.ln_mu[0], self.ln_mu[1] - self.ln_mu[0]
        n = self.ln_mu.size
        with np.errstate(divide="ignore"):
            pos = (np.log(np.maximum(mu, 1e-300)) - ln_mu0) / step
        if np.any(pos > n - 1 + 1e-9):
            raise ValueError(f"mean {mu.max():.4g} exceeds the tabulated range {np.exp(self.ln_mu[-1]):.4g}")
        j = np.clip(np.floor(pos).astype(np.int64), 0, n - 2)
        fj = np.clip(pos - j, 0.0, 1.0)
        g = np.asarray(gene_tables)[None, :]
        gene_tables = self.tables
        kk = k[:, None]
        fk = fk[:, None]
        lo = gene_tables[g, kk, j] * (1 - fj) + gene_tables[g, kk, j + 1] * fj
        hi = gene_tables[g, kk + 1, j] * (1 - fj) + gene_tables[g, kk + 1, j + 1] * fj
        val = lo * (1 - fk) + hi * fk
        below = pos < 0
        if np.any(below):
            first = gene_tables[g, kk, 0] * (1 - fk) + gene_tables[g, kk + 1, 0] * fk
            val = np.where(below, first * mu / np.exp(ln_mu0), val)
        return val

    def invert(self, rows: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Means ``μ`` with ``F(μ) = target`` per gene, from the rows of :meth:`at_kappa`.

        ``F`` increases strictly with ``μ``, so the inverse is unique. Targets at or below 0
        give ``μ = 0`` (no expression is the floor); targets above the table raise ``ValueError``.
        """
        target = np.asarray(target, dtype=np.float64)
        ln_mu0, step = self.ln_mu[0], self.ln_mu[1] - self.ln_mu[0]
        n = rows.shape[1]
        j = (rows < target[:, None]).sum(axis=1) - 1
        if np.any(j >= n - 1):
            raise ValueError("target expression beyond the tabulated range")
        jj = np.clip(j, 0, n - 2)
        g = np.arange(rows.shape[0])
        lo, hi = rows[g, jj], rows[g, jj + 1]
        f = np.clip((target - lo) / (hi - lo), 0.0, 1.0)
        out = np.exp(ln_mu0 + (jj + f) * step)
        first = target <= rows[:, 0]
        out = np.where(first, np.exp(ln_mu0) * np.maximum(target, 0.0) / rows[:, 0], out)
        return np.where(target <= 0, 0.0, out)


def expected_zero_fraction(mean: ArrayLike, dispersion: ArrayLike, library_log_sd: float) -> np.ndarray:
    """Fraction of zeros of NB genes with cell-to-cell library variation.

    ``E_ℓ[(1 + φ ℓ μ)^(−1/φ)]`` with log-normal ``ℓ`` (mean 1, SD ``library_log_sd`` on the log
    scale), by Gauss–Hermite quadrature.
    """
    mean = np.asarray(mean, dtype=np.float64)
    phi = np.broadcast_to(np.asarray(dispersion, dtype=np.float64), mean.shape)
    z, w = roots_hermitenorm(20)
    w = w / w.sum()
    out = np.zeros(mean.shape)
    for zi, wi in zip(z, w):
        ell = np.exp(library_log_sd * zi - 0.5 * library_log_sd**2)
        out += wi * (1.0 + phi * ell * mean) ** (-1.0 / phi)
    return out


def kappas(means: np.ndarray, batch_factor: np.ndarray, remainder: np.ndarray) -> np.ndarray:
    """``κ = 1e4 / (R_b + T)`` per (row, batch).

    ``T = Σ_g mean_g · B_bg`` is the expected total of the measured genes at the average library
    size and ``R_b`` the expected UMIs of the unmeasured rest of the transcriptome (0 when ``X``
    is normalised over the measured genes only).
    """
    return TARGET_SUM / (np.asarray(remainder)[None, :] + means @ batch_factor.T)


def batched_values(
    table: ExpectedLogTable, gtab: np.ndarray, means: np.ndarray, batch_factor: np.ndarray, remainder: np.ndarray
) -> np.ndarray:
    """Batch-averaged ``F`` of every row of ``means`` (cells equally likely in each batch)."""
    kap = kappas(means, batch_factor, remainder)
    out = np.zeros(means.shape)
    for b in range(batch_factor.shape[0]):
        for start in range(0, means.shape[0], 256):
            sl = slice(start, start + 256)
            out[sl] += table.values(gtab, means[sl] * batch_factor[b], kap[sl, b])
    return out / batch_factor.shape[0]
