"""The blocks of cells of a screen, and how the cells of one block are drawn.

A block is a chunk of :data:`CONTROL_CHUNK` control cells or all cells of one perturbation in
one context (:func:`context_blocks`). Each block draws from its own random stream, keyed by
the context, the kind of block and the block's key (the chunk number, the single's pool index
or a hash of the double's name), so its cells depend only on the seed and that key: not on
the other blocks, their order or the threads that draw them (:func:`draw_block`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..canonical import CONTROL, TARGET_SUM
from .biology import rng_for, stable_hash
from .effects import ContextTruth
from .params import ContextParams, SimulationParams
from .sampling import sample_block
from .streams import STREAM_CELLS
from .truth import DISPERSION_GRID

CONTROL_CHUNK = 500  # control cells are drawn in blocks of this size, each with its own stream


def context_blocks(ci: int, ctx: ContextParams, truth: ContextTruth, ctx_singles: list[int]) -> list[tuple]:
    """The blocks of context ``ci``: ``(ci, perturbation, means, key, n_cells or None)`` each.

    Control cells come in chunks of fixed size; a perturbation's block has ``None`` cells (its
    number of cells is drawn with its cells, :func:`draw_n_cells`).
    """
    groups = []
    n_ctrl = int(ctx.n_control_cells)
    for chunk, start in enumerate(range(0, n_ctrl, CONTROL_CHUNK)):
        groups.append((ci, CONTROL, truth.control_mean, ("control", chunk), min(CONTROL_CHUNK, n_ctrl - start)))
    for row, name in enumerate(truth.perturbations):
        key = ("single", ctx_singles[row]) if row < len(ctx_singles) else ("double", stable_hash(name))
        groups.append((ci, name, truth.pert_means[row], key, None))
    return groups


def draw_block(
    seed: int, p: SimulationParams, truths: list[ContextTruth], group: tuple
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray, np.ndarray]:
    """Cells of one block: ``(counts, x_data, batches, ncounts)``, with ``x_data`` the values of ``X`` at the counts' entries."""
    ci, name, means, key, n_fixed = group
    kind = {"control": 0, "single": 1, "double": 2}[key[0]]
    rng = rng_for(seed, STREAM_CELLS, ci, kind, key[1])
    n_cells = n_fixed if n_fixed is not None else draw_n_cells(rng, p.contexts[ci].cells_per_perturbation, p)
    counts, batches, ncounts = draw_cells(rng, n_cells, means, truths[ci], p)
    return counts, log_normalise_data(counts, ncounts), batches, ncounts


def expected_nonzeros(p: SimulationParams, truths: list[ContextTruth], groups: list[tuple]) -> float:
    """Expected stored entries of all blocks, to preallocate (an overestimate: detection is concave in the mean)."""
    estimate = 0
    for ci, _name, means, _key, n_fixed in groups:
        n = n_fixed if n_fixed is not None else p.contexts[ci].cells_per_perturbation
        phi = DISPERSION_GRID[truths[ci].dispersion_index]
        estimate += n * float(np.sum(1.0 - (1.0 + phi * means) ** (-1.0 / phi)))
    return estimate


def draw_cells(
    rng: np.random.Generator, n_cells: int, means: np.ndarray, truth: ContextTruth, p: SimulationParams
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Batches, library sizes and counts of ``n_cells`` cells with mean UMIs ``means`` (at ``ℓ = 1``, before batch effects).

    Returns ``(counts, batches, ncounts)``: CSR counts, the batch of each cell and its library
    size over the whole simulated transcriptome.
    """
    batches = rng.integers(p.n_batches, size=n_cells)
    sd = p.calibration.library_log_sd
    ell = np.exp(rng.normal(-0.5 * sd**2, sd, n_cells))
    block_means = means[None, :] * truth.batch_factor[batches]
    counts = sample_block(rng, ell, block_means, DISPERSION_GRID[truth.dispersion_index])
    # library size over the whole simulated transcriptome, like obs['ncounts'] of real files: the
    # measured genes' UMIs plus the expected UMIs of the unmeasured rest (scaled by the cell's ℓ)
    ncounts = np.rint(ell * truth.rest * truth.batch_library[batches]) + np.asarray(counts.sum(axis=1)).ravel()
    return counts, batches, ncounts


def draw_n_cells(rng: np.random.Generator, mean_cells: int, p: SimulationParams) -> int:
    """Cells of one perturbation: log-normal around ``mean_cells`` with CV ``cells_cv``, at least ``min_cells``."""
    if p.cells_cv <= 0:
        return int(mean_cells)
    s = np.sqrt(np.log1p(p.cells_cv**2))
    return int(max(p.min_cells, round(mean_cells * rng.lognormal(-0.5 * s * s, s))))


def log_normalise_data(counts: sp.csr_matrix, totals: np.ndarray) -> np.ndarray:
    """``log1p(c · 1e4 / total)`` for the stored entries of a CSR block (float32)."""
    totals = np.asarray(totals, dtype=np.float64)
    scale = np.divide(TARGET_SUM, totals, out=np.zeros_like(totals), where=totals > 0).astype(np.float32)
    return np.log1p(counts.data * np.repeat(scale, np.diff(counts.indptr)))
