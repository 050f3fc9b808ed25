"""Generating a simulated screen: :func:`simulate_screen`, from parameters to AnnData.

The steps, each in its own module: the design (biology, singles and doubles, :mod:`.design`),
the truth of every context (:mod:`.effects`, :mod:`.doubles`), the blocks of cells drawn on
threads (:mod:`.cells`) and the AnnData with its ground truth (:mod:`.assembly`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING

from .assembly import Assembler, screen_anndata
from .biology import Biology
from .cells import context_blocks, draw_block, expected_nonzeros
from .design import biology_of, select_doubles, select_singles
from .effects import ContextTruth, context_means, context_truth, shared_table
from .params import SimulationParams

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp
    from anndata import AnnData


def plan_screen(params: SimulationParams, seed: int = 0) -> tuple[SimulationParams, Biology, list[ContextTruth], list[tuple]]:
    """Everything of a screen but its cells: ``(params, biology, truth of each context, blocks of cells)``.

    :func:`simulate_screen` draws the blocks into one AnnData; :func:`~.ondisk.write_screen`
    draws the same blocks straight into a file.
    """
    if not isinstance(params, SimulationParams):
        raise TypeError("params must be a SimulationParams")
    p = params if params.biology_seed is not None else replace(params, biology_seed=int(seed))
    p.validate()
    bio = biology_of(p)
    singles = select_singles(bio, p)
    pairs = select_doubles(bio, p, singles)

    truths, groups = [], []
    states = [context_means(bio, p, ci, ctx, singles, pairs, seed) for ci, ctx in enumerate(p.contexts)]
    table = shared_table(states, p)
    for ci, ctx in enumerate(p.contexts):
        truth, ctx_singles = context_truth(bio, p, states[ci], table)
        states[ci] = None  # free the intermediate arrays
        truths.append(truth)
        groups += context_blocks(ci, ctx, truth, ctx_singles)

    return p, bio, truths, groups


def simulate_screen(params: SimulationParams, seed: int = 0, n_jobs: int | None = None, progress: bool = False) -> AnnData:
    """Simulate a Perturb-seq screen with known ground truth.

    Parameters
    ----------
    params
        Every knob, see :class:`SimulationParams` and :class:`ContextParams`.
    seed
        Draws batches and cells (and the biology too when ``params.biology_seed`` is None).
        Same parameters and seed give identical data, whatever ``n_jobs``.
    n_jobs
        Threads that draw cells (default: up to 2).
    progress
        Show a progress bar over blocks of cells.

    Returns
    -------
    AnnData
        Canonical screen (``helpers.data.canonical.validate`` passes): ``obs['perturbation']``,
        ``obs['n_targets']``, ``obs['batch']`` (gem group), ``obs['context']`` when there are
        several contexts, and ``obs['ncounts']`` (the cell's library size over the whole simulated
        transcriptome, like the real files' column; the measured genes hold a share of it);
        ``X = log1p(counts · 1e4 / ncounts)`` (float32 CSR; with ``normalisation="panel"``,
        ``log_normalise(counts)``); ``layers['counts']`` the UMI counts; ``var`` has the gene's program, mean and dispersion.
        The ground truth is in ``uns['simulation']``; read it with :func:`true_changes`,
        :func:`systematic_component`, :func:`interaction_labels` and :func:`perturbation_truth`.
    """
    p, bio, truths, groups = plan_screen(params, seed)

    def make(group: tuple) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray, np.ndarray]:
        return draw_block(seed, p, truths, group)

    # expected non-zeros, to preallocate (an overestimate: detection is concave in the mean)
    estimate = expected_nonzeros(p, truths, groups)
    assembler = Assembler(bio.n_genes, int(estimate * 1.05) + 1000)
    obs_parts = []
    bar = None
    if progress:
        from ...console import progress_bar as tqdm

        bar = tqdm(total=len(groups), desc=f"simulating {p.name}", unit="block")
    with ThreadPoolExecutor(_n_jobs(n_jobs)) as pool:
        for group, (counts, x_data, batches, ncounts) in zip(groups, pool.map(make, groups)):
            ci = group[0]
            assembler.add(counts, x_data)
            obs_parts.append((ci, group[1], batches, ncounts))
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    X, counts = assembler.finish()
    return screen_anndata(p, seed, bio, truths, X, counts, obs_parts)


def _n_jobs(n_jobs: int | None) -> int:
    if n_jobs is not None:
        return max(1, int(n_jobs))
    return max(1, min(2, os.cpu_count() or 1))
