"""Putting a simulated screen together: blocks of cells into one AnnData, the truth into ``uns``.

:class:`Assembler` appends the sparse blocks of cells into ``X`` and ``layers['counts']``
without copying them twice; :func:`screen_anndata` adds ``obs`` (perturbation, targets, gem
group, context, library size), ``var`` (program, mean and dispersion of each gene) and the
ground truth in ``uns['simulation']`` (:func:`truth_uns`; :mod:`.accessors` reads it back).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..canonical import CONTROL
from .biology import Biology
from .effects import ContextTruth
from .params import SimulationParams
from .truth import DISPERSION_GRID

if TYPE_CHECKING:
    from anndata import AnnData


class Assembler:
    """Appends CSR blocks into preallocated arrays (grown when needed) to keep memory flat."""

    def __init__(self, n_genes: int, capacity: int):
        self.n_genes = n_genes
        self.counts = np.empty(capacity, dtype=np.float32)
        self.x = np.empty(capacity, dtype=np.float32)
        self.indices = np.empty(capacity, dtype=np.int32)
        self.indptr = [np.zeros(1, dtype=np.int64)]
        self.nnz = 0

    def add(self, block: sp.csr_matrix, x_data: np.ndarray) -> None:
        nnz = block.nnz
        if self.nnz + nnz > self.counts.size:
            new = int(max(self.nnz + nnz, self.counts.size * 1.25))
            for name in ("counts", "x", "indices"):
                getattr(self, name).resize(new, refcheck=False)
        sl = slice(self.nnz, self.nnz + nnz)
        self.counts[sl] = block.data
        self.indices[sl] = block.indices
        self.x[sl] = x_data
        self.indptr.append(self.nnz + block.indptr[1:].astype(np.int64))
        self.nnz += nnz

    def finish(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        for name in ("counts", "x", "indices"):
            getattr(self, name).resize(self.nnz, refcheck=False)
        indptr = np.concatenate(self.indptr)
        if self.nnz < np.iinfo(np.int32).max:
            indptr = indptr.astype(np.int32)
        n_cells = indptr.size - 1
        shape = (n_cells, self.n_genes)
        X = sp.csr_matrix((self.x, self.indices, indptr), shape=shape, copy=False)
        counts = sp.csr_matrix((self.counts, self.indices, indptr), shape=shape, copy=False)
        return X, counts


def screen_anndata(
    p: SimulationParams,
    seed: int,
    bio: Biology,
    truths: list[ContextTruth],
    X: sp.csr_matrix,
    counts: sp.csr_matrix,
    obs_parts: list[tuple],
) -> AnnData:
    """The screen's AnnData from its assembled matrices and ``(context index, perturbation, batches, ncounts)`` of each block."""
    import anndata as ad

    obs, var, uns = screen_annotations(p, seed, bio, truths, obs_parts)
    adata = ad.AnnData(X=X, obs=obs, var=var, layers={"counts": counts})
    adata.uns["simulation"] = uns
    return adata


def screen_annotations(
    p: SimulationParams, seed: int, bio: Biology, truths: list[ContextTruth], obs_parts: list[tuple]
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """``obs``, ``var`` and ``uns['simulation']`` of a screen from ``(context index, perturbation, batches, ncounts)`` of each block."""
    multi = len(p.contexts) > 1
    ctx_codes = np.concatenate([np.full(b.size, ci) for ci, _, b, _ in obs_parts])
    pert = np.concatenate([np.full(b.size, name, dtype=object) for _, name, b, _ in obs_parts])
    batch = np.concatenate([b for _, _, b, _ in obs_parts])
    ncounts = np.concatenate([n for _, _, _, n in obs_parts]).astype(np.float32)
    names = p.context_names()
    batch_labels = [f"{names[c]}_gem{b + 1}" if multi else f"gem{b + 1}" for c in range(len(names)) for b in range(p.n_batches)]
    obs = pd.DataFrame(index=pd.Index([f"cell{i:07d}" for i in range(pert.size)]))
    categories = [CONTROL] + sorted({n for t in truths for n in t.perturbations})
    obs["perturbation"] = pd.Categorical(pert, categories=categories)
    obs["n_targets"] = np.array([0 if n == CONTROL else n.count("+") + 1 for n in categories])[obs["perturbation"].cat.codes]
    obs["batch"] = pd.Categorical.from_codes(ctx_codes * p.n_batches + batch, categories=batch_labels)
    if multi:
        obs["context"] = pd.Categorical.from_codes(ctx_codes, categories=names)
    obs["ncounts"] = ncounts
    var = pd.DataFrame(index=pd.Index(bio.genes.astype(str)))
    var["program"] = [bio.programs[j].name if j >= 0 else "" for j in bio.gene_program]
    var["mean_umis"] = truths[0].control_mean.astype(np.float32)
    var["dispersion"] = DISPERSION_GRID[truths[0].dispersion_index].astype(np.float32)
    return obs, var, truth_uns(p, seed, bio, truths)


def truth_uns(p: SimulationParams, seed: int, bio: Biology, truths: list[ContextTruth]) -> dict:
    """``adata.uns['simulation']``: parameters, seed, genes and every context's truth (read by :mod:`.accessors`)."""
    names = p.context_names()
    programs = pd.DataFrame(
        {
            "program": [pr.name for pr in bio.programs],
            "go_term": [pr.go_term for pr in bio.programs],
            "n_members": [len(pr.members) for pr in bio.programs],
            "n_from_go_term": [pr.from_go for pr in bio.programs],
            "n_measured": [int((bio.gene_program == j).sum()) for j in range(len(bio.programs))],
            "members": [";".join(pr.members) for pr in bio.programs],
        }
    )
    records = pd.concat([t.records for t in truths], ignore_index=True)
    interactions = pd.concat([t.interactions.assign(context=n) for t, n in zip(truths, names)], ignore_index=True)
    params_dict = p.to_dict()
    return {
        "version": 1,
        "seed": int(seed),
        "params_json": json.dumps(params_dict),
        "params": _h5_safe(params_dict),
        "contexts": np.array(names, dtype=object),
        "genes": np.array(bio.genes, dtype=object),
        "true_changes": {n: t.changes.astype(np.float32) for n, t in zip(names, truths)},
        "perturbations": {n: np.array(t.perturbations, dtype=object) for n, t in zip(names, truths)},
        "systematic": {n: t.systematic.astype(np.float32) for n, t in zip(names, truths)},
        "systematic_log_mean": {n: t.systematic_log_mean.astype(np.float32) for n, t in zip(names, truths)},
        "control_mean_umis": {n: t.control_mean.astype(np.float32) for n, t in zip(names, truths)},
        "perturbation_truth": records,
        "interactions": interactions,
        "programs": programs,
    }


def _h5_safe(value: object) -> object:
    """Plain dict for ``uns``: drop ``None`` (h5ad cannot store it), lists become arrays."""
    if isinstance(value, dict):
        return {str(k): _h5_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, dict) for v in value):
            return {str(i): _h5_safe(v) for i, v in enumerate(value)}
        return np.array(value)
    return value
