"""Negative-binomial counts for blocks of cells, built straight into sparse rows.

Each block of cells (one perturbation, or one chunk of control cells) has its own random
stream, so a block's cells depend only on the seed and the block's key — not on how many
blocks there are, in which order or on how many threads they are made.

Counts are drawn per cell and gene from ``NB(mean μ, dispersion φ)`` (``Var = μ + φμ²``):

* genes whose largest mean in the block is below :data:`INVERSE_CDF_MAX_MEAN` (most genes)
  use one uniform number per entry and the inverse CDF: the entry is 0 when ``u ≤ P(0) =
  (1 + φμ)^(−1/φ)``, and only the few non-zero entries walk up the CDF with the recurrence
  ``P(k+1) = P(k) · (k + r)/(k + 1) · φμ/(1 + φμ)``;
* the other genes use the Poisson–Gamma mixture ``c ~ Poisson(μ · Gamma(r, 1/r))``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

INVERSE_CDF_MAX_MEAN = 4.0
_MAX_STEPS = 400


def _inverse_cdf_counts(u: np.ndarray, mu: np.ndarray, phi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """NB counts for the entries with ``u > P(0)`` (flat arrays), by walking up the CDF."""
    r = 1.0 / phi
    p = (phi * mu) / (1.0 + phi * mu)
    prob = np.exp(-r * np.log1p(phi * mu))
    cdf = prob.copy()
    counts = np.zeros(u.size, dtype=np.float32)
    active = np.arange(u.size)
    k = 0
    while active.size and k < _MAX_STEPS:
        prob = prob * (k + r[active]) / (k + 1) * p[active]
        k += 1
        cdf = cdf + prob
        done = u[active] <= cdf
        counts[active[done]] = k
        keep = ~done
        active, prob, cdf = active[keep], prob[keep], cdf[keep]
    if active.size:  # far tail (or rounding): draw those few directly
        counts[active] = rng.negative_binomial(r[active], 1.0 - p[active])
        counts[active] = np.maximum(counts[active], 1)
    return counts


def sample_block(rng: np.random.Generator, cell_scale: np.ndarray, gene_means: np.ndarray, phi: np.ndarray) -> sp.csr_matrix:
    """Counts of one block: ``cells x genes`` CSR (float32).

    Parameters
    ----------
    rng
        The block's own generator.
    cell_scale
        Per cell, the relative library size ``ℓ_c``.
    gene_means
        ``cells x genes`` or ``genes``: mean UMIs at ``ℓ = 1`` (rows may differ by batch).
    phi
        Dispersion of each gene.
    """
    n = cell_scale.size
    means = np.asarray(gene_means, dtype=np.float32)
    mu = cell_scale.astype(np.float32)[:, None] * (means if means.ndim == 2 else means[None, :])
    g = mu.shape[1]
    phi32 = phi.astype(np.float32)
    big_cols = np.flatnonzero(mu.max(axis=0) > INVERSE_CDF_MAX_MEAN)
    dense = np.zeros(mu.shape, dtype=np.float32)

    # P(0) = (1 + φμ)^(−1/φ), computed in place
    p0 = phi32[None, :] * mu
    np.log1p(p0, out=p0)
    p0 *= -(1.0 / phi32)[None, :]
    np.exp(p0, out=p0)
    u = rng.random(mu.shape, dtype=np.float32)
    nonzero = u > p0
    del p0
    nonzero[:, big_cols] = False
    flat = np.flatnonzero(nonzero)
    if flat.size:
        cols = flat % g
        dense.ravel()[flat] = _inverse_cdf_counts(
            u.ravel()[flat].astype(np.float64), mu.ravel()[flat].astype(np.float64), phi[cols].astype(np.float64), rng
        )

    if big_cols.size:
        r = (1.0 / phi[big_cols]).astype(np.float64)
        lam = mu[:, big_cols] * rng.gamma(np.broadcast_to(r, (n, big_cols.size)), 1.0 / np.broadcast_to(r, (n, big_cols.size)))
        dense[:, big_cols] = rng.poisson(lam)
    return _dense_to_csr(dense)


def _dense_to_csr(dense: np.ndarray) -> sp.csr_matrix:
    """CSR of a dense block, built from one pass over the non-zeros (row-major order)."""
    n, g = dense.shape
    flat = np.flatnonzero(dense)
    rows = flat // g
    indices = (flat - rows * g).astype(np.int32)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return sp.csr_matrix((dense.ravel()[flat], indices, indptr), shape=(n, g))
