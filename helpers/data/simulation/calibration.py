"""Calibration of the simulator's counts against real cells (the shipped Norman 2019 subset).

Three things decide what a simulated cell looks like, and all three are estimated from
the real K562 CRISPRa cells of ``data/norman2019_subset.h5ad`` (3,375 cells x 500 genes):

1. **Library sizes** (UMIs per cell): log-normal, ``log L ~ N(m, s)``, fitted to
   ``obs['ncounts']``.
2. **Dispersions**: the negative-binomial variance is ``Var = μ + φ μ²``. Per gene, ``φ`` is
   estimated by the method of moments within each condition (so that perturbation effects
   do not inflate it), with each cell's mean scaled by its library size, then pooled. A trend
   ``φ(μ) = a0 + a1 / μ`` is fitted to genes with mean ≥ 0.05 UMIs by least absolute deviations
   on the log scale, and the scatter around it (a robust SD on the log scale, from genes with
   mean ≥ 0.3 UMIs) becomes the gene-to-gene spread of the simulated dispersions.
3. **Gene abundances**: the subset's 500 genes are a selection of highly variable genes (half
   of them have no count at all), so their means do not describe a transcriptome. The
   abundance distribution is instead fitted to the *number of detected genes per cell*
   (``obs['ngenes']``, over the whole transcriptome) as a function of the library size: with
   ``N`` genes of log-normal relative abundance ``π_g`` (SD ``σ`` on the log scale, Σ π = 1), a
   cell with library ``L`` detects ``D(L) = Σ_g 1 − (1 + φ L π_g)^(−1/φ)`` genes. ``N`` and ``σ``
   are chosen so that ``D`` matches the median detected genes at the median library and the
   log-log slope of detected genes on library size.

:func:`calibrate` redoes the fit from the real file (``scripts/calibrate_simulator.py`` prints it);
:data:`DEFAULT_CALIBRATION` holds its result so that generating data never needs the file
(``tests/test_simulate.py`` checks that the two agree when the file is there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:
    from anndata import AnnData
    from numpy.typing import ArrayLike


@dataclass(frozen=True)
class Calibration:
    """Fitted count-model constants (see the module docstring for how each is estimated).

    Attributes
    ----------
    library_log_mean, library_log_sd
        Mean and SD of ``log`` library size (natural log) of the real cells.
    dispersion_a0, dispersion_a1
        Dispersion trend ``φ(μ) = a0 + a1 / μ`` (μ = mean UMIs of the gene per cell).
    dispersion_log_sd
        Gene-to-gene SD of ``log φ`` around the trend.
    abundance_log_sd
        SD ``σ`` of the log relative abundance of genes in the transcriptome.
    n_transcriptome
        Number ``N`` of genes in the fitted transcriptome.
    detected_median, detected_slope
        The statistics the abundance fit matched: median detected genes per cell and the
        slope of log detected genes on log library size.
    """

    library_log_mean: float
    library_log_sd: float
    dispersion_a0: float
    dispersion_a1: float
    dispersion_log_sd: float
    abundance_log_sd: float
    n_transcriptome: int
    detected_median: float
    detected_slope: float

    def as_dict(self) -> dict:
        return asdict(self)

    def dispersion_trend(self, mean: ArrayLike) -> np.ndarray:
        """``φ(μ) = a0 + a1 / μ`` (μ clipped at 1e-3 so that the trend stays finite)."""
        mean = np.maximum(np.asarray(mean, dtype=np.float64), 1e-3)
        return self.dispersion_a0 + self.dispersion_a1 / mean


#: Result of ``calibrate(load_dataset("norman2019_subset"))``, stored so generation needs no file.
DEFAULT_CALIBRATION = Calibration(
    library_log_mean=9.4788,
    library_log_sd=0.4109,
    dispersion_a0=0.3262,
    dispersion_a1=0.0,
    dispersion_log_sd=1.09,
    abundance_log_sd=2.49,
    n_transcriptome=25700,
    detected_median=3181.0,
    detected_slope=0.5575,
)


def recover_counts(adata: AnnData) -> sp.csr_matrix:
    """Raw UMI counts of log-normalised cells: ``round(expm1(X) / min_nonzero(expm1(X)))`` per cell.

    ``X = log1p(c · 1e4 / L)`` so ``expm1(X)`` is proportional to the counts; the smallest
    non-zero value of a cell is one UMI (this is exact where ``obs['ncounts']`` is off by the
    few UMIs that were filtered after normalisation, as in the Norman subset).
    """
    X = sp.csr_matrix(adata.X, dtype=np.float64, copy=True)
    X.data = np.expm1(X.data)
    lengths = np.diff(X.indptr)
    if np.any(lengths == 0):
        # cells without any count in the panel: leave them at zero
        pass
    starts = X.indptr[:-1][lengths > 0]
    unit = np.ones(X.shape[0])
    unit[lengths > 0] = np.minimum.reduceat(X.data, starts)
    X = sp.csr_matrix(sp.diags(1.0 / unit) @ X)
    X.data = np.round(X.data)
    X.eliminate_zeros()
    return X


def gene_statistics(counts: np.ndarray | sp.spmatrix, groups: ArrayLike | None = None, library: ArrayLike | None = None) -> pd.DataFrame:
    """Per-gene mean, variance, fraction of zeros and moment dispersion of a counts matrix.

    ``dispersion`` is the method-of-moments NB estimate pooled over ``groups`` (e.g. the
    perturbation of each cell), with cell ``c``'s expected count ``ℓ_c μ_{group,g}``
    (``ℓ_c`` = library size / mean library size):
    ``φ_g = Σ_c [(y_cg − ℓ_c μ_g)² − ℓ_c μ_g] / Σ_c (ℓ_c μ_g)²``.
    """
    counts = sp.csr_matrix(counts, dtype=np.float64)
    n = counts.shape[0]
    if library is None:
        library = np.asarray(counts.sum(axis=1)).ravel()
    ell = np.asarray(library, dtype=np.float64) / np.mean(library)
    groups = np.zeros(n, dtype=int) if groups is None else pd.Categorical(np.asarray(groups)).codes
    num = np.zeros(counts.shape[1])
    den = np.zeros(counts.shape[1])
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        block = counts[rows].toarray()
        ell_g = ell[rows]
        mu_g = block.sum(axis=0) / ell_g.sum()
        expected = np.outer(ell_g, mu_g)
        num += ((block - expected) ** 2 - expected).sum(axis=0)
        den += (expected**2).sum(axis=0)
    dense_mean = np.asarray(counts.mean(axis=0)).ravel()
    sq = counts.multiply(counts)
    var = np.asarray(sq.mean(axis=0)).ravel() - dense_mean**2
    var *= n / max(n - 1, 1)
    zeros = 1.0 - np.diff(counts.tocsc().indptr) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = np.where(den > 0, num / den, np.nan)
    return pd.DataFrame({"mean": dense_mean, "variance": var, "fraction_zero": zeros, "dispersion": phi})


def detected_genes(library: ArrayLike, n_genes: float, abundance_log_sd: float, trend: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Expected genes detected (≥ 1 UMI) at each library size for a log-normal transcriptome.

    ``D(L) = Σ_g 1 − (1 + φ_g L π_g)^(−1/φ_g)``, ``π_g`` the ``(g+0.5)/N`` quantiles of a
    log-normal with SD ``abundance_log_sd`` normalised to sum 1, ``φ_g = trend(L π_g)``.
    """
    from scipy.stats import norm

    q = norm.ppf((np.arange(int(n_genes)) + 0.5) / int(n_genes))
    pi = np.exp(abundance_log_sd * q)
    pi /= pi.sum()
    out = []
    for value in np.atleast_1d(library):
        mu = value * pi
        phi = trend(mu)
        out.append(np.sum(1.0 - (1.0 + phi * mu) ** (-1.0 / phi)))
    return np.array(out)


def calibrate(adata: AnnData, library_key: str = "ncounts", detected_key: str = "ngenes", group_key: str = "perturbation") -> Calibration:
    """Fit the :class:`Calibration` constants to real log-normalised cells.

    Parameters
    ----------
    adata
        Real cells with log-normalised ``X`` (``log1p(counts · 1e4 / L)``), the library size of
        each cell in ``obs[library_key]`` and the detected genes in ``obs[detected_key]``, e.g.
        the shipped Norman 2019 subset.
    group_key
        ``obs`` column that groups cells of one condition (dispersions are estimated within
        groups).
    """
    from scipy.optimize import minimize

    counts = recover_counts(adata)
    library = adata.obs[library_key].to_numpy(dtype=np.float64)
    detected = adata.obs[detected_key].to_numpy(dtype=np.float64)
    groups = adata.obs[group_key].astype(str).to_numpy() if group_key in adata.obs else None
    stats = gene_statistics(counts, groups, library)

    log_lib = np.log(library)
    lib_mean, lib_sd = float(log_lib.mean()), float(log_lib.std(ddof=1))

    sel = (stats["mean"] >= 0.05) & (stats["dispersion"] > 0)
    mu_s, phi_s = stats["mean"][sel].to_numpy(), stats["dispersion"][sel].to_numpy()

    def lad(p: np.ndarray) -> float:
        a0, a1 = np.exp(p)
        return np.abs(np.log(phi_s) - np.log(a0 + a1 / mu_s)).sum()

    fit = minimize(lad, [np.log(0.2), np.log(0.05)], method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-8, "maxiter": 4000})
    a0, a1 = (float(v) for v in np.exp(fit.x))
    a1 = 0.0 if a1 < 1e-6 else a1
    high = (stats["mean"] >= 0.3) & (stats["dispersion"] > 0)
    resid = np.log(stats["dispersion"][high].to_numpy()) - np.log(a0 + a1 / stats["mean"][high].to_numpy())
    disp_sd = float(1.4826 * np.median(np.abs(resid - np.median(resid))))

    slope = float(np.polyfit(log_lib, np.log(detected), 1)[0])
    med_lib, med_det = float(np.median(library)), float(np.median(detected))
    cal0 = Calibration(lib_mean, lib_sd, a0, a1, disp_sd, 2.5, 25000, med_det, slope)

    def mismatch(p: np.ndarray) -> float:
        n_genes, sd = np.exp(p[0]), p[1]
        d = detected_genes([med_lib / 1.5, med_lib, med_lib * 1.5], n_genes, sd, cal0.dispersion_trend)
        s = np.log(d[2] / d[0]) / np.log(2.25)
        return (np.log(d[1] / med_det)) ** 2 + (s - slope) ** 2

    best = minimize(mismatch, [np.log(25000), 2.5], method="Nelder-Mead", options={"xatol": 1e-5, "fatol": 1e-12, "maxiter": 2000})
    n_genes, sd = float(np.exp(best.x[0])), float(best.x[1])
    return Calibration(
        library_log_mean=round(lib_mean, 4),
        library_log_sd=round(lib_sd, 4),
        dispersion_a0=round(a0, 4),
        dispersion_a1=round(a1, 4),
        dispersion_log_sd=round(disp_sd, 2),
        abundance_log_sd=round(sd, 2),
        n_transcriptome=int(round(n_genes, -2)),
        detected_median=med_det,
        detected_slope=round(slope, 4),
    )
