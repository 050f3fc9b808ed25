"""Shared fixtures: small screens in every published format, written by the tests themselves."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp


def pytest_sessionfinish(session, exitstatus):
    # A run that collects nothing is a broken run (wrong folder, import error hidden by a
    # filter): turn pytest's exit code 5 into a failure instead of letting it pass silently.
    if session.testscollected == 0 and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print("\nerror: no tests were collected; this is treated as a failure", flush=True)


def raw_counts_screen(labels: list[str], cells_per_label: int = 6, n_genes: int = 12, seed: int = 0):
    """Cells x genes of Poisson counts, ``cells_per_label`` cells for each label (as written in a file)."""
    rng = np.random.default_rng(seed)
    obs_labels = np.repeat(labels, cells_per_label)
    means = rng.gamma(2.0, 3.0, size=n_genes)
    counts = rng.poisson(means, size=(len(obs_labels), n_genes)).astype(np.float32)
    counts[:, 0] += 1  # no empty cells
    genes = [f"GENE{i}" for i in range(n_genes)]
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(len(obs_labels))])
    return counts, obs_labels, obs, genes


@pytest.fixture
def write_format(tmp_path):
    """Write a small screen in a named published format and return its path."""

    def _write(fmt: str, name: str | None = None):
        if fmt == "gears":
            labels = ["ctrl", "A+ctrl", "ctrl+B", "A+B"]
        elif fmt == "scperturb":
            labels = ["control", "A", "B", "B_A"]
        elif fmt == "perturbench":
            labels = ["control", "A", "B", "B+A"]
        elif fmt == "replogle":
            labels = ["non-targeting", "A", "B"]
        else:
            raise ValueError(fmt)
        counts, obs_labels, obs, genes = raw_counts_screen(labels)
        if fmt == "gears":
            X = sp.csr_matrix(np.log1p(counts / counts.sum(1, keepdims=True) * 1e4).astype(np.float32))
            obs["condition"] = obs_labels
            obs["condition_name"] = [f"K562_{c}_1+1" for c in obs_labels]
            var = pd.DataFrame({"gene_name": genes}, index=[f"ENSG{i:05d}" for i in range(len(genes))])
            adata = ad.AnnData(X=X, obs=obs, var=var)
            adata.uns["top_non_dropout_de_20"] = {"K562_A+ctrl_1+1": np.array(["ENSG00001", "ENSG00002"])}
        elif fmt == "scperturb":
            obs["perturbation"] = obs_labels
            obs["nperts"] = [0 if c == "control" else c.count("_") + 1 for c in obs_labels]
            adata = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=genes))
        elif fmt == "perturbench":
            obs["condition"] = obs_labels
            obs["cell_type"] = "K562"
            X = sp.csr_matrix(np.log1p(counts / counts.sum(1, keepdims=True) * 1e4).astype(np.float32))
            adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes), layers={"counts": sp.csr_matrix(counts)})
        else:  # replogle
            obs["gene"] = obs_labels
            obs["gem_group"] = np.tile([1, 2], len(obs_labels) // 2)
            var = pd.DataFrame({"gene_name": genes}, index=[f"ENSG{i:05d}" for i in range(len(genes))])
            adata = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)
        path = tmp_path / (name or f"{fmt}.h5ad")
        adata.write_h5ad(path)
        return path

    return _write


@pytest.fixture
def tiny_screen():
    """Canonical screen: control, A, B, A+B, C with 4 cells each, 3 genes, hand-checkable values."""
    X = np.array(
        [
            # control
            [1.0, 2.0, 0.0], [1.0, 2.0, 0.0], [1.0, 2.0, 0.0], [1.0, 2.0, 0.0],
            # A: gene0 +1
            [2.0, 2.0, 0.0], [2.0, 2.0, 0.0], [2.0, 2.0, 0.0], [2.0, 2.0, 0.0],
            # B: gene1 -1
            [1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0],
            # A+B: gene0 +1, gene1 -1, gene2 +0.5 (an interaction)
            [2.0, 1.0, 0.5], [2.0, 1.0, 0.5], [2.0, 1.0, 0.5], [2.0, 1.0, 0.5],
            # C: 2 cells at gene2=1, 2 cells at gene2=3 -> mean 2
            [1.0, 2.0, 1.0], [1.0, 2.0, 1.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0],
        ],
        dtype=np.float32,
    )
    perts = ["control"] * 4 + ["A"] * 4 + ["B"] * 4 + ["A+B"] * 4 + ["C"] * 4
    obs = pd.DataFrame({"perturbation": pd.Categorical(perts)}, index=[f"c{i}" for i in range(20)])
    obs["n_targets"] = [0] * 4 + [1] * 8 + [2] * 4 + [1] * 4
    obs["batch"] = pd.Categorical(["b1", "b1", "b1", "b2"] * 5)
    return ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=["g0", "g1", "g2"]))
