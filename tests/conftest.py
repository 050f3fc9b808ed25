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


def pytest_collection_modifyitems(session, config, items):
    # The main job (tests/test_book.py: every notebook, nbval, the HTML build) is the longest file by
    # far. Under `-n 2 --dist loadfile` files are handed to workers in collection order, a first batch
    # of several files to each worker: the main job goes first, then the files without slow tests, so
    # that the worker running the main job holds only quick files besides, and the other worker runs
    # the chapters' slow tests meanwhile (instead of the main job starting last).
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item) -> int:
        if item.path.name == "test_book.py":
            return 0
        return 2 if item.path in slow_files else 1

    items.sort(key=rank)  # stable: within a rank the files keep their order


def _sanitizers() -> list[tuple]:
    """The (pattern, replacement) pairs of ``nbval_sanitize.cfg``: what may differ between two runs."""
    import configparser
    import re
    from pathlib import Path

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).parent / "nbval_sanitize.cfg")
    return [(re.compile(cfg[s]["regex"]), cfg[s]["replace"]) for s in cfg.sections()]


def notebook_outputs(path) -> list[tuple[int, str]]:
    """(cell index, sanitised text) of every text output of an executed notebook, as nbval compares them.

    Cells tagged ``nbval-ignore-output`` are left out, as nbval does; figures are not compared
    (their numbers are the results tables').
    """
    import nbformat

    rules = _sanitizers()
    out = []
    for i, cell in enumerate(nbformat.read(str(path), as_version=4).cells):
        if cell.cell_type != "code" or "nbval-ignore-output" in cell.metadata.get("tags", []):
            continue
        for output in cell.get("outputs", []):
            texts = [output.get("text", "")] if output.get("output_type") == "stream" else []
            data = output.get("data", {})
            texts += [data[k] for k in ("text/plain", "text/html", "text/markdown", "text/latex") if k in data]
            if output.get("output_type") == "error":
                texts.append(f"{output.get('ename')}: {output.get('evalue')}")
            for text in texts:
                text = "".join(text) if isinstance(text, list) else text
                for pattern, replacement in rules:
                    text = pattern.sub(replacement, text)
                out.append((i, text))
    return out


def assert_same_outputs(first, second) -> None:
    """Two executed notebooks show the same outputs, cell by cell (after nbval's sanitising)."""
    a, b = notebook_outputs(first), notebook_outputs(second)
    assert len(a) == len(b), f"{first} and {second} have {len(a)} and {len(b)} outputs"
    for (cell, x), (_, y) in zip(a, b):
        assert x == y, f"cell {cell} shows different outputs in two runs with the same parameters:\n{x[:400]}\n---\n{y[:400]}"


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
            [1.0, 2.0, 0.0],
            [1.0, 2.0, 0.0],
            [1.0, 2.0, 0.0],
            [1.0, 2.0, 0.0],
            # A: gene0 +1
            [2.0, 2.0, 0.0],
            [2.0, 2.0, 0.0],
            [2.0, 2.0, 0.0],
            [2.0, 2.0, 0.0],
            # B: gene1 -1
            [1.0, 1.0, 0.0],
            [1.0, 1.0, 0.0],
            [1.0, 1.0, 0.0],
            [1.0, 1.0, 0.0],
            # A+B: gene0 +1, gene1 -1, gene2 +0.5 (an interaction)
            [2.0, 1.0, 0.5],
            [2.0, 1.0, 0.5],
            [2.0, 1.0, 0.5],
            [2.0, 1.0, 0.5],
            # C: 2 cells at gene2=1, 2 cells at gene2=3 -> mean 2
            [1.0, 2.0, 1.0],
            [1.0, 2.0, 1.0],
            [1.0, 2.0, 3.0],
            [1.0, 2.0, 3.0],
        ],
        dtype=np.float32,
    )
    perts = ["control"] * 4 + ["A"] * 4 + ["B"] * 4 + ["A+B"] * 4 + ["C"] * 4
    obs = pd.DataFrame({"perturbation": pd.Categorical(perts)}, index=[f"c{i}" for i in range(20)])
    obs["n_targets"] = [0] * 4 + [1] * 8 + [2] * 4 + [1] * 4
    obs["batch"] = pd.Categorical(["b1", "b1", "b1", "b2"] * 5)
    return ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=["g0", "g1", "g2"]))
