"""Screens from disk: streamed profiles equal the in-memory ones; sampled cells are read alone."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from helpers.data import load_dataset
from helpers.data.pseudobulk import control_profile, pseudobulk
from helpers.data.streaming import (
    add_block_sums,
    batch_means,
    cell_counts,
    control_profile_streamed,
    iter_blocks,
    open_screen,
    pseudobulk_streamed,
    read_cells,
    sample_cells,
)
from helpers.errors import DataError


def _random_screen(n_cells: int = 403, n_genes: int = 37, seed: int = 3) -> ad.AnnData:
    """Unsorted cells of 6 perturbations in 4 batches (one perturbation missing from a batch), sparse log values."""
    rng = np.random.default_rng(seed)
    labels = np.array(["control", "A", "B", "A+B", "C", "D"])
    pert = labels[rng.integers(0, labels.size, n_cells)]
    batch = np.array([f"gem{b}" for b in rng.integers(1, 5, n_cells)], dtype=object)
    batch[(pert == "D") & (batch == "gem4")] = "gem3"  # D has cells in 3 of the 4 batches
    dense = rng.gamma(1.0, 1.0, (n_cells, n_genes)) * (rng.random((n_cells, n_genes)) < 0.3)
    obs = pd.DataFrame({"perturbation": pd.Categorical(pert), "batch": pd.Categorical(batch)}, index=[f"c{i}" for i in range(n_cells)])
    obs["n_targets"] = [0 if p == "control" else p.count("+") + 1 for p in pert]
    return ad.AnnData(
        X=sp.csr_matrix(np.log1p(dense).astype(np.float32)), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)])
    )


@pytest.fixture
def on_disk(tmp_path):
    adata = _random_screen()
    path = tmp_path / "screen.h5ad"
    adata.write_h5ad(path)
    return adata, path


@pytest.mark.parametrize("batch_key", [None, "batch"])
@pytest.mark.parametrize("block_cells", [29, 10_000])
def test_streamed_pseudobulk_equals_in_memory(on_disk, batch_key, block_cells):
    adata, path = on_disk
    backed = open_screen(path)
    assert backed.isbacked
    expected = pseudobulk(adata, batch_key=batch_key)
    got = pseudobulk_streamed(backed, batch_key=batch_key, block_cells=block_cells)
    assert list(got.obs_names) == list(expected.obs_names) and list(got.var_names) == list(expected.var_names)
    np.testing.assert_allclose(got.X, expected.X, rtol=0, atol=1e-12)
    pd.testing.assert_frame_equal(got.obs, expected.obs)
    assert got.uns["pseudobulk"] == expected.uns["pseudobulk"]


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_block_sums_equal_a_dense_loop(monkeypatch, index_dtype):
    # sub-blocks of 7 cells split groups across them; code -1 cells are skipped; an empty row and an empty block
    monkeypatch.setattr("helpers.data.streaming.SUB_BLOCK_CELLS", 7)
    rng = np.random.default_rng(5)
    dense = (rng.random((40, 11)) < 0.3) * rng.gamma(1.0, 1.0, (40, 11))
    dense[3] = 0.0
    block = sp.csr_matrix(dense.astype(np.float32))
    block.indices = block.indices.astype(index_dtype)
    codes = rng.integers(-1, 5, 40)
    weights = rng.random(40)
    expected = np.zeros((5, 11))
    for c in range(40):
        if codes[c] >= 0:
            expected[codes[c]] += weights[c] * dense[c].astype(np.float32).astype(np.float64)
    out = np.zeros((5, 11))
    add_block_sums(out, block, codes, weights)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    add_block_sums(out, block[:0], codes[:0], weights[:0])
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


def test_by_hand_on_the_tiny_screen(tiny_screen, tmp_path):
    """Batches weighted equally: C has cells at gene2 = 1, 1, 3 (b1) and 3 (b2) -> (5/3 + 3) / 2."""
    tiny_screen.write_h5ad(tmp_path / "tiny.h5ad")
    pb = pseudobulk_streamed(open_screen(tmp_path / "tiny.h5ad"), batch_key="batch", block_cells=3)
    assert pb[["C"]].X[0, 2] == pytest.approx((5 / 3 + 3) / 2, abs=1e-12)
    assert pb.obs.loc["C", "n_batches"] == 2 and pb.obs.loc["C", "n_cells"] == 4
    plain = pseudobulk_streamed(open_screen(tmp_path / "tiny.h5ad"), block_cells=3)
    assert plain[["C"]].X[0, 2] == pytest.approx(2.0, abs=1e-12)


def test_pseudobulk_and_load_dataset_stream_a_backed_screen(on_disk):
    adata, path = on_disk
    backed = load_dataset(path, backed=True)
    assert backed.isbacked
    np.testing.assert_allclose(pseudobulk(backed, batch_key="batch").X, pseudobulk(adata, batch_key="batch").X, rtol=0, atol=1e-12)
    with pytest.raises(DataError, match="reader options"):
        load_dataset(path, backed=True, format="replogle")


@pytest.mark.parametrize("batch_key", [None, "batch"])
def test_control_profile_reads_the_control_cells(on_disk, batch_key):
    adata, path = on_disk
    got = control_profile_streamed(open_screen(path), batch_key=batch_key, block_cells=17)
    pd.testing.assert_series_equal(got, control_profile(adata, batch_key=batch_key), rtol=0, atol=1e-12)


def test_batch_means_and_cell_counts(on_disk):
    adata, path = on_disk
    backed = open_screen(path)
    dense = pd.DataFrame(adata.X.toarray().astype(np.float64), columns=adata.var_names)
    expected = dense.groupby(adata.obs["batch"].astype(str).to_numpy()).mean()
    got = batch_means(backed, "batch", block_cells=64)
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-12)
    counts = cell_counts(backed)
    assert counts.sum() == adata.n_obs and counts["control"] == (adata.obs["perturbation"] == "control").sum()
    table = cell_counts(backed, "batch")
    assert table.loc["D", "gem4"] == 0 and table.to_numpy().sum() == adata.n_obs


@pytest.mark.parametrize("storage", ["csr", "dense"])
def test_blocks_cover_every_cell_once(on_disk, tmp_path, storage):
    # CSR is read as h5py slices, a dense matrix through the dask array: the same blocks either way
    adata, path = on_disk
    if storage == "dense":
        stored = adata.copy()
        stored.X = adata.X.toarray()
        path = tmp_path / "dense.h5ad"
        stored.write_h5ad(path)
    blocks = list(iter_blocks(open_screen(path), block_cells=100))
    assert [(a, b) for a, b, _ in blocks] == [(0, 100), (100, 200), (200, 300), (300, 400), (400, 403)]
    assert all(sp.isspmatrix_csr(b) for _, _, b in blocks)
    assert (sp.vstack([b for _, _, b in blocks]) != adata.X).nnz == 0


def test_a_matrix_stored_by_gene_is_refused_with_the_fix(on_disk, tmp_path):
    adata, _ = on_disk
    stored = adata.copy()
    stored.X = sp.csc_matrix(adata.X)
    stored.write_h5ad(tmp_path / "csc.h5ad")
    with pytest.raises(DataError, match=r"by gene \(CSC\).*tocsr\(\)"):
        pseudobulk_streamed(open_screen(tmp_path / "csc.h5ad"))


def test_read_cells_reads_only_the_rows_asked_for(on_disk):
    adata, path = on_disk
    backed = open_screen(path)
    rows = np.array([402, 5, 6, 7, 5, 0, 200])  # unsorted, a run, a repeat
    cells = read_cells(backed, rows)
    assert not cells.isbacked
    np.testing.assert_array_equal(cells.X.toarray(), adata.X[rows].toarray())
    assert list(cells.obs["perturbation"]) == list(adata.obs["perturbation"].iloc[rows]) and cells.obs_names.is_unique
    drawn = sample_cells(backed, "A", 5, np.random.default_rng(0))
    assert drawn.n_obs == 5 and set(drawn.obs["perturbation"]) == {"A"}
    with pytest.raises(DataError, match="fewer than"):
        sample_cells(backed, "A", 10_000, np.random.default_rng(0))
    with pytest.raises(DataError, match="must lie in"):
        read_cells(backed, [adata.n_obs])


def test_a_file_that_is_not_canonical_is_refused(tmp_path, write_format):
    path = write_format("replogle")
    with pytest.raises(DataError, match="obs\\['perturbation'\\]"):
        open_screen(path)
    with pytest.raises(DataError, match="does not exist"):
        open_screen(tmp_path / "missing.h5ad")


def test_bootstrap_of_a_screen_on_disk_equals_in_memory(on_disk):
    """The bootstrap reads each perturbation's cells from disk and gives the same distances."""
    from helpers.stats.bootstrap import bootstrap_error

    adata, path = on_disk
    expected = bootstrap_error(adata, n_batch_resamples=3, n_cell_resamples=2, seed=7)
    got = bootstrap_error(open_screen(path), n_batch_resamples=3, n_cell_resamples=2, seed=7)
    pd.testing.assert_frame_equal(got, expected, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_genome_wide_preset_written_to_disk_scaled_down(tmp_path):
    """The genome-wide preset at 1/500 of its size, written block by block: its shape, sparsity and cells."""
    import h5py

    from helpers.data.canonical import validate
    from helpers.data.simulate import GENOME_WIDE

    params = GENOME_WIDE.params
    assert params.n_genes == 8000 and params.n_singles == 9800
    full_cells = params.n_singles * params.contexts[0].cells_per_perturbation + params.contexts[0].n_control_cells
    assert 1.9e6 < full_cells < 2.1e6
    scale = 0.002
    path = GENOME_WIDE.write(tmp_path / "gw.h5ad", scale=scale, seed=0)
    assert not list(tmp_path.glob("*.partial"))
    screen = open_screen(path)
    assert screen.n_vars == 8000
    assert screen.obs["perturbation"].nunique() == round(9800 * scale) + 1  # the singles and control
    assert (screen.obs["perturbation"] == "control").sum() == round(75_000 * scale)
    # cells per perturbation vary around 195 (log-normal), so the total lies near the stated size
    assert abs(screen.n_obs - full_cells * scale) < 0.15 * full_cells * scale
    with h5py.File(path) as f:
        density = f["X/data"].shape[0] / (screen.n_obs * screen.n_vars)
        assert f["X/data"].compression is None
        # the full preset stores ~2.7 billion entries: 32-bit row pointers would overflow past 2**31
        assert f["X/indptr"].dtype == np.int64
    # sparse like a real screen: most entries zero, within a tenth of the simulator's expectation
    assert 0.05 < density < 0.5
    assert density == pytest.approx(float(screen.uns["expected_density"]), rel=0.1)
    validate(ad.read_h5ad(path))


@pytest.mark.slow
def test_a_screen_written_block_by_block_equals_the_one_simulated_in_memory(tmp_path):
    from helpers.data.simulate import simulation_params, true_changes
    from helpers.data.simulation.generate import simulate_screen
    from helpers.data.simulation.ondisk import write_screen
    from helpers.data.simulation.params import ContextParams, SimulationParams

    ctx = (ContextParams("K562_like", cells_per_perturbation=40, n_control_cells=700),)  # two chunks of control cells
    params = SimulationParams(
        n_genes=150, n_programs=3, program_size=15, n_singles=70, n_doubles=4, n_batches=3, biology_seed=3, contexts=ctx
    )
    memory = simulate_screen(params, seed=4)
    path = write_screen(params, tmp_path / "s.h5ad", seed=4, counts=True, n_jobs=2)
    disk = ad.read_h5ad(path)
    assert disk.shape == memory.shape and (disk.X != memory.X).nnz == 0
    assert (disk.layers["counts"] != memory.layers["counts"]).nnz == 0
    pd.testing.assert_frame_equal(disk.obs, memory.obs)
    pd.testing.assert_frame_equal(disk.var, memory.var)
    pd.testing.assert_frame_equal(true_changes(disk), true_changes(memory))
    assert simulation_params(disk) == simulation_params(memory)
    no_counts = ad.read_h5ad(write_screen(params, tmp_path / "x.h5ad", seed=4))
    assert "counts" not in no_counts.layers and (no_counts.X != memory.X).nnz == 0


def test_the_written_matrix_has_64_bit_row_pointers_and_appends_like_anndatas(tmp_path):
    """anndata refuses to append past 2**31 entries to a 32-bit indptr; the writer's empty matrix has a 64-bit one."""
    import h5py
    import scipy.sparse as sp
    from anndata.io import read_elem, sparse_dataset

    from helpers.data.simulation.ondisk import DATA_CHUNK, INDPTR_CHUNK, _empty_csr

    rng = np.random.default_rng(0)
    parts = [sp.random(n, 7, density=0.3, format="csr", dtype=np.float32, random_state=rng) for n in (4, 0, 5)]
    with h5py.File(tmp_path / "m.h5", "w") as f:
        X = sparse_dataset(_empty_csr(f, "X", 7))
        for part in parts:
            X.append(part)
        assert f["X/indptr"].dtype == np.int64 and f["X/indices"].dtype == np.int32
        # chunks of MBs, not h5py's 4 KB guess for an empty array (a full-size read was chunk-lookup bound)
        assert f["X/data"].chunks == (DATA_CHUNK,) and f["X/indices"].chunks == (DATA_CHUNK,)
        assert f["X/indptr"].chunks == (INDPTR_CHUNK,) and DATA_CHUNK * 4 >= 1 << 22
        back = read_elem(f["X"])
    expected = sp.vstack(parts, format="csr")
    assert back.shape == (9, 7) and (back != expected).nnz == 0
    assert np.array_equal(back.indptr, expected.indptr)
