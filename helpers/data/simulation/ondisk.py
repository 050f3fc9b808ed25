"""Writing a simulated screen straight to disk, a few blocks of cells at a time.

:func:`write_screen` draws the same blocks as :func:`~.generate.simulate_screen` (the same
random streams, so the same cells) but appends each run of blocks to the sparse ``X`` of an
``.h5ad`` file as soon as it is drawn, so memory holds the screen's truth and a few blocks,
never the cell matrix. The file is a canonical screen that
:func:`helpers.data.streaming.open_screen` opens backed and ``anndata.read_h5ad`` reads whole.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from .assembly import screen_annotations
from .cells import draw_block, expected_nonzeros
from .generate import _n_jobs, plan_screen
from .params import SimulationParams

if TYPE_CHECKING:
    import h5py

#: Blocks drawn (in parallel) before they are appended to the file.
BLOCKS_PER_WRITE = 64


#: HDF5 chunk lengths (entries) of the appended CSR arrays. h5py's guess for a resizable array that
#: starts empty is 1,024 entries (4 KB); reading 2.7 billion entries in 4 KB chunks costs more in chunk
#: lookups than in reading (the full-size pseudobulk read X at 108 MB/s of a 512 MB/s disk).
DATA_CHUNK = 1 << 20  # 4 MB of float32 values or int32 gene indices
INDPTR_CHUNK = 1 << 16  # 512 KB of row pointers


def _empty_csr(f: h5py.File, key: str, n_genes: int, expected_entries: float | None = None) -> h5py.Group:
    """An empty, resizable CSR group of ``n_genes`` columns: 64-bit ``indptr``, chunks of MBs.

    anndata writes the empty matrix with the smallest index type (32 bits) and refuses to
    append past 2**31 stored entries; the genome-wide preset stores about 2.7 billion, so
    ``indptr`` is recreated as int64 before the first block (the gene indices stay 32-bit).
    All three arrays are recreated with chunks of :data:`DATA_CHUNK` / :data:`INDPTR_CHUNK`
    entries instead of the 4 KB h5py picks for an empty array (shorter for a small screen: at
    least ``expected_entries``, so a small file does not hold one mostly empty 4 MB chunk).
    """
    from anndata.io import write_elem

    write_elem(f, key, sp.csr_matrix((0, n_genes), dtype=np.float32))  # resizable: anndata writes sparse data with maxshape None
    group = f[key]
    for name, dtype, chunk, initial in (
        ("data", np.float32, DATA_CHUNK, 0),
        ("indices", np.int32, DATA_CHUNK, 0),
        ("indptr", np.int64, INDPTR_CHUNK, 1),
    ):
        if expected_entries is not None:
            chunk = int(min(chunk, max(1024, 2 ** np.ceil(np.log2(max(expected_entries, 1))))))
        del group[name]
        group.create_dataset(name, data=np.zeros(initial, dtype=dtype), maxshape=(None,), chunks=(chunk,))
    return group


def write_screen(
    params: SimulationParams,
    path: str | os.PathLike,
    seed: int = 0,
    counts: bool = False,
    n_jobs: int | None = None,
    progress: bool = False,
) -> Path:
    """Simulate a screen into ``path`` (``.h5ad``), block by block; returns the path.

    Parameters
    ----------
    params, seed
        As for :func:`~.generate.simulate_screen`; the cells are the same as there
        (``X`` identical, cell by cell).
    counts
        Also write the UMI counts as ``layers['counts']`` (doubles the file's size).
    n_jobs
        Threads that draw cells (default: up to 2).
    progress
        A progress bar over the blocks of cells.

    Notes
    -----
    ``X`` is written uncompressed (CSR, float32 values, int32 gene indices, int64 row pointers), the layout
    that reads fastest in one sequential pass. ``uns['simulation']`` holds the truth as in
    memory, and ``uns['expected_density']`` the expected share of stored entries.
    """
    import h5py
    from anndata.io import sparse_dataset, write_elem

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    p, bio, truths, groups = plan_screen(params, seed)
    n_genes = bio.n_genes
    expected_cells = sum(
        (n if n is not None else p.contexts[ci].cells_per_perturbation) for ci, _, _, _, n in groups
    )  # the drawn numbers of cells vary around this
    density = expected_nonzeros(p, truths, groups) / max(1, expected_cells) / n_genes
    bar = None
    if progress:
        from ...console import progress_bar

        bar = progress_bar(total=len(groups), desc=f"writing {p.name}", unit="block")
    obs_parts = []
    tmp = path.with_name(path.name + ".partial")
    with h5py.File(tmp, "w") as f:
        entries = density * expected_cells * n_genes
        X = sparse_dataset(_empty_csr(f, "X", n_genes, entries))
        write_elem(f, "layers", {})
        layers = {}
        if counts:
            layers["counts"] = sparse_dataset(_empty_csr(f, "layers/counts", n_genes, entries))

        def make(group: tuple) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray, np.ndarray]:
            return draw_block(seed, p, truths, group)

        with ThreadPoolExecutor(_n_jobs(n_jobs)) as pool:
            for start in range(0, len(groups), BLOCKS_PER_WRITE):
                chunk = groups[start : start + BLOCKS_PER_WRITE]
                drawn = list(pool.map(make, chunk))
                x_blocks = [sp.csr_matrix((x, c.indices, c.indptr), shape=c.shape) for c, x, _, _ in drawn]
                X.append(sp.vstack(x_blocks, format="csr").astype(np.float32))
                if counts:
                    layers["counts"].append(sp.vstack([c for c, _, _, _ in drawn], format="csr").astype(np.float32))
                obs_parts += [(g[0], g[1], b, n) for g, (_, _, b, n) in zip(chunk, drawn)]
                if bar is not None:
                    bar.update(len(chunk))
        if bar is not None:
            bar.close()
        obs, var, uns = screen_annotations(p, seed, bio, truths, obs_parts)
        write_elem(f, "obs", obs)
        write_elem(f, "var", var)
        write_elem(f, "uns", {"simulation": uns, "expected_density": float(density)})
        for key in ("obsm", "varm", "obsp", "varp"):
            write_elem(f, key, {})
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
    os.replace(tmp, path)  # a complete file or none: an interrupted run leaves only the .partial file
    return path
