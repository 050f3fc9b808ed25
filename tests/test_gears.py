"""GEARS as a model of the suite: data layout, GO graph, environment handling and a real run.

The tests that run GEARS itself (marker ``gears``, run by ``make test-gears``, not by ``make
test``) need its separate environment (``.venv-gears``). They are skipped, with the reason,
unless it is built or ``$GEARS_PYTHON`` names an interpreter with GEARS; ``GEARS_BUILD_ENV=1``
(set by ``make test-gears``) lets this file build it first (about 3 minutes, 1.8 GB). Every
other test runs in the suite's own environment without GEARS.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from helpers.data.canonical import make_canonical
from helpers.data.pseudobulk import pseudobulk
from helpers.errors import DataError
from helpers.knowledge import load_gene_go
from helpers.models import gears as G
from helpers.models.gears import GEARSModel, gears_condition, gears_go_edges, to_gears_anndata
from helpers.models.gears import environment as GE
from helpers.models.gears import model as GM

ROOT = Path(__file__).resolve().parents[1]
NORMAN = next((p for p in (ROOT / "data" / "norman2019_subset.h5ad", Path("/work/shared/data/norman2019_subset.h5ad")) if p.exists()), None)

# Python source that loads the GEARS worker file as module ``w`` (for code run in another interpreter)
LOAD_WORKER = f"import importlib.util, sys\nspec = importlib.util.spec_from_file_location('w', {str(GM.WORKER)!r})\nw = importlib.util.module_from_spec(spec); spec.loader.exec_module(w)\n"

TOY_GO = {
    "A": {"t1", "t2", "t3"},
    "B": {"t2", "t3", "t4"},
    "C": {"t1", "t5", "t6", "t7", "t8", "t9", "t10", "t11", "t12", "t13"},
    "D": {"t4"},
}


@pytest.fixture(scope="module")
def norman():
    if NORMAN is None:
        pytest.skip("the Norman subset (data/norman2019_subset.h5ad) is not available")
    return make_canonical(ad.read_h5ad(NORMAN), "condition", "perturbench")


def tiny(norman, perts, n_genes=60, n_cells=24):
    """A few perturbations of the real Norman subset, ``n_cells`` cells each, ``n_genes`` genes."""
    obs = norman.obs["perturbation"].astype(str)
    idx = np.concatenate([np.flatnonzero(obs.to_numpy() == p)[:n_cells] for p in ["control", *perts]])
    genes = norman.var_names[np.argsort(-np.asarray(norman.X.mean(axis=0)).ravel(), kind="stable")[:n_genes]]
    out = norman[idx, genes].copy()
    out.obs["perturbation"] = out.obs["perturbation"].astype(str).astype("category")
    return out


# -- data layout ---------------------------------------------------------------------------------


def test_gears_condition_names():
    assert gears_condition("control") == "ctrl"
    assert gears_condition("KLF1") == "KLF1+ctrl"
    assert gears_condition("KLF1+MAP2K6") == "KLF1+MAP2K6"
    with pytest.raises(DataError, match="one or two"):
        gears_condition("A+B+C")


def test_to_gears_anndata_layout(tiny_screen):
    g = to_gears_anndata(tiny_screen)
    assert list(g.obs["condition"].unique()) == ["ctrl", "A+ctrl", "B+ctrl", "A+B", "C+ctrl"]
    assert (g.obs["cell_type"] == "cells").all()
    assert list(g.var["gene_name"]) == list(g.var_names) == ["g0", "g1", "g2"]
    assert sp.isspmatrix_csr(g.X) and g.X.dtype == np.float32
    np.testing.assert_array_equal(g.X.toarray(), tiny_screen.X.toarray())
    ctx = tiny_screen.copy()
    ctx.obs["context"] = "K562"
    assert (to_gears_anndata(ctx).obs["cell_type"] == "K562").all()
    ctx.obs["context"] = ["K562", "RPE1"] * 10
    with pytest.raises(DataError, match="one cell type"):
        to_gears_anndata(ctx)
    with pytest.raises(DataError, match="single cells"):
        to_gears_anndata(pseudobulk(tiny_screen))


def test_go_edges_follow_make_go_by_hand():
    edges = gears_go_edges(["A", "B", "C", "D"], TOY_GO)
    # Jaccard: A-B 2/4, A-C 1/12 (below 0.1, dropped), B-D 1/3, self pairs 1; make_GO's order
    expected = [
        ("A", "A", 1.0),
        ("A", "B", 0.5),
        ("B", "A", 0.5),
        ("B", "B", 1.0),
        ("B", "D", 1 / 3),
        ("C", "C", 1.0),
        ("D", "B", 1 / 3),
        ("D", "D", 1.0),
    ]
    assert list(edges.columns) == ["source", "target", "importance"]
    assert [(s, t) for s, t, _ in expected] == list(zip(edges["source"], edges["target"]))
    np.testing.assert_allclose(edges["importance"], [w for _, _, w in expected])


# -- environment handling -------------------------------------------------------------------------


def test_environment_status_and_override(tmp_path, monkeypatch):
    monkeypatch.delenv(G.PYTHON_ENV_VAR, raising=False)
    env = tmp_path / "venv-gears"
    assert G.find_gears_python(env) is None
    assert "python -m helpers.models.gears build" in G.gears_environment_status(env)
    # a build that never finished (no marker) is not ready; a marker with other pins is stale
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").write_text("")
    assert G.find_gears_python(env) is None
    (env / GE._MARKER).write_text(json.dumps({"requirements": ["cell-gears==0.1.1"]}))
    assert G.find_gears_python(env) is None
    (env / GE._MARKER).write_text(json.dumps({"requirements": list(G.GEARS_REQUIREMENTS)}))
    assert G.find_gears_python(env) == env / "bin" / "python"
    monkeypatch.setenv(G.PYTHON_ENV_VAR, str(tmp_path / "nope" / "python"))
    with pytest.raises(G.GEARSEnvironmentError, match="does not exist"):
        G.ensure_gears_environment(env)


def test_pins_keep_torch_and_the_scipy_cap():
    pins = dict(r.split("==") for r in G.GEARS_REQUIREMENTS)
    assert pins["torch"] == "2.13.0"  # the CPU wheel on disk; never unpinned
    assert pins["cell-gears"] == "0.1.2"
    assert tuple(int(x) for x in pins["scipy"].split(".")[:2]) < (1, 15)
    assert "torch-geometric" in pins
    assert all("==" in r for r in G.GEARS_REQUIREMENTS)


def test_worker_refuses_network_connections():
    code = (
        LOAD_WORKER + "import urllib.request\n"
        "w.block_network()\n"
        "try:\n"
        "    urllib.request.urlopen('http://127.0.0.1:9/', timeout=30)\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "tried to reach the network" in out.stdout, out.stdout + out.stderr


def test_worker_seeds_do_not_depend_on_the_request():
    spec = __import__("importlib.util").util.spec_from_file_location("w", GM.WORKER)
    w = __import__("importlib.util").util.module_from_spec(spec)
    spec.loader.exec_module(w)
    assert w.pert_seed(1, "KLF1") == w.pert_seed(1, "KLF1") != w.pert_seed(2, "KLF1")
    assert w.pert_seed(1, "KLF1") != w.pert_seed(1, "MAP2K6")


# -- what the wrapper hands to GEARS (no GEARS needed) ----------------------------------------------


class _Captured(Exception):
    pass


class CapturingGEARS(GEARSModel):
    """Stops where the worker would start and keeps the files written for it."""

    def _run_worker(self, mode, workdir, description, total):
        with open(workdir / "split.pkl", "rb") as f:
            split = pickle.load(f)
        with open(workdir / "graph_genes.pkl", "rb") as f:
            graph = pickle.load(f)
        with open(workdir / "gears_data" / "gene2go_all.pkl", "rb") as f:
            gene2go = pickle.load(f)
        self.captured = {
            "split": split,
            "graph": graph,
            "gene2go": gene2go,
            "config": json.loads((workdir / "config.json").read_text()),
            "train": ad.read_h5ad(workdir / "train.h5ad"),
            "edges": pd.read_csv(workdir / "data" / "go_essential_suite.csv"),
        }
        raise _Captured


def test_fit_hands_gears_exactly_the_training_perturbations(norman):
    train = tiny(norman, ["KLF1", "MAP2K6", "TGFBR2", "IER5L", "KLF1+MAP2K6"])
    model = CapturingGEARS(epochs=3, seed=4, perturbable_genes=["MAP2K3", "IER5L"])
    with pytest.raises(_Captured):
        model.fit(train)
    c = model.captured
    assert c["split"] == {
        "train": ["ctrl", "KLF1+ctrl", "KLF1+MAP2K6", "MAP2K6+ctrl", "TGFBR2+ctrl"],
        "val": ["KLF1+ctrl", "KLF1+MAP2K6", "MAP2K6+ctrl", "TGFBR2+ctrl"],
        "test": [],
    }
    # IER5L has no GO terms: its cells are not passed, and it is not a graph node
    assert set(c["train"].obs["condition"]) == {"ctrl", "KLF1+ctrl", "MAP2K6+ctrl", "TGFBR2+ctrl", "KLF1+MAP2K6"}
    assert c["train"].n_obs == 5 * 24
    go = load_gene_go()
    expected_graph = sorted({g for g in list(train.var_names) + ["KLF1", "MAP2K6", "TGFBR2", "MAP2K3"] if go.get(g)})
    assert c["graph"] == expected_graph and "IER5L" not in c["graph"]
    assert set(c["gene2go"]) == set(expected_graph) and c["gene2go"]["KLF1"] == set(go["KLF1"])
    pd.testing.assert_frame_equal(c["edges"], gears_go_edges(expected_graph), check_exact=False, rtol=1e-12)
    assert c["config"]["epochs"] == 3 and c["config"]["seed"] == 4 and c["config"]["val_is_train"]


def test_held_out_validation_is_seeded_and_disjoint(norman):
    train = tiny(norman, ["KLF1", "MAP2K6", "TGFBR2", "MAPK1", "SGK1", "HK2", "FOXO4", "NIT1"])
    runs = []
    for seed in (1, 1, 2):
        model = CapturingGEARS(val_fraction=0.25, seed=seed)
        with pytest.raises(_Captured):
            model.fit(train)
        runs.append(model.captured["split"])
    a, b, c = runs
    assert a == b and a["val"] != c["val"]
    assert len(a["val"]) == 2 and not set(a["val"]) & set(a["train"])
    assert sorted(a["val"] + a["train"][1:]) == sorted(
        gears_condition(p) for p in ["KLF1", "MAP2K6", "TGFBR2", "MAPK1", "SGK1", "HK2", "FOXO4", "NIT1"]
    )


def test_fit_refuses_bad_input_before_starting_gears(norman, tiny_screen):
    never = "/nonexistent/python"
    no_ctrl = tiny(norman, ["KLF1", "MAP2K6"])
    no_ctrl = no_ctrl[no_ctrl.obs["perturbation"] != "control"].copy()
    with pytest.raises(DataError, match="control"):
        GEARSModel(python=never).fit(no_ctrl)
    with pytest.raises(DataError, match="batch_size"):
        GEARSModel(python=never, batch_size=500).fit(tiny(norman, ["KLF1", "MAP2K6"]))
    with pytest.raises(DataError, match="no GO terms|usable"):
        GEARSModel(python=never).fit(tiny(norman, ["IER5L"]))
    with pytest.raises(DataError, match="single cells"):
        GEARSModel(python=never).fit(pseudobulk(tiny_screen))
    with pytest.raises(ValueError, match="epochs"):
        GEARSModel(python=never, epochs=0).fit(tiny(norman, ["KLF1"]))


def test_worker_failure_reports_its_last_lines(norman):
    # The suite's own Python has no GEARS: the worker fails at `import gears`, and the
    # error says so instead of a bare exit code.
    model = GEARSModel(python=sys.executable, batch_size=8)
    with pytest.raises(G.GEARSWorkerError, match="No module named 'gears'"):
        model.fit(tiny(norman, ["KLF1", "MAP2K6"], n_cells=8))


# -- GEARS itself (needs the GEARS environment) --------------------------------------------------


@pytest.fixture(scope="module")
def gears_python():
    python = G.find_gears_python()
    if python is None:
        if os.environ.get(G.BUILD_ENV_VAR) == "1":
            python = G.ensure_gears_environment()
        else:
            pytest.skip(f"{G.gears_environment_status()}; or set {G.BUILD_ENV_VAR}=1 to let the tests build it")
    return str(python)


TINY_TRAIN = ["KLF1", "MAP2K6", "TGFBR2", "IER5L", "KLF1+MAP2K6"]
TINY_PREDICT = ["KLF1", "MAP2K3", "MAP2K6+TGFBR2"]  # seen single, unseen single, unseen double


@pytest.fixture(scope="module")
def fitted(norman, gears_python):
    """One short epoch of GEARS on a tiny screen, and its predictions (one fit, one predict)."""
    params = dict(epochs=1, batch_size=16, seed=3, perturbable_genes=["MAP2K3"], n_threads=1, python=gears_python)
    model = GEARSModel(**params).fit(tiny(norman, TINY_TRAIN))
    return model, model.predict(TINY_PREDICT)


@pytest.mark.gears
def test_gears_trains_one_epoch_and_predicts_named_profiles(fitted, norman):
    model, pred = fitted
    assert len(model.history_) == 1 and np.isfinite(model.history_["train_mse"]).all()
    assert model.excluded_ == {"IER5L": "target gene IER5L has no GO terms, so GEARS cannot perturb it"}
    assert list(model.train_perturbations_) == ["KLF1", "KLF1+MAP2K6", "MAP2K6", "TGFBR2"]
    bad = model.unpredictable(TINY_PREDICT + ["IER5L", "MAPK1", "control"])
    assert bad.keys() == {"IER5L", "MAPK1", "control"}
    assert "no GO terms" in bad["IER5L"] and "perturbable_genes" in bad["MAPK1"]
    with pytest.raises(DataError, match="MAPK1"):
        model.predict(["MAPK1"])
    assert list(pred.index) == TINY_PREDICT and list(pred.columns) == list(model.genes_)
    assert pred.index.name == "perturbation" and np.isfinite(pred.to_numpy()).all()
    # GEARS predicts expression (not the change): close to the control profile after one epoch
    ctrl = np.asarray(norman[norman.obs["perturbation"] == "control"][:, model.genes_].X.mean(axis=0)).ravel()
    assert np.corrcoef(pred.loc["KLF1"], ctrl)[0, 1] > 0.9
    assert model.resources_["fit_peak_memory_mb"] > 100 and model.resources_["train_seconds"] > 0


@pytest.mark.gears
def test_gears_is_deterministic_and_predictions_ignore_request_order(fitted, norman):
    model, pred = fitted
    twin = GEARSModel(**model.get_params()).fit(tiny(norman, TINY_TRAIN))
    pd.testing.assert_frame_equal(twin.history_.drop(columns="seconds"), model.history_.drop(columns="seconds"))
    # same seed -> same weights; each prediction is seeded by its own name, so order and company do not matter
    again = twin.predict(TINY_PREDICT[::-1][:2])
    pd.testing.assert_frame_equal(again, pred.loc[TINY_PREDICT[::-1][:2]])


@pytest.mark.gears
def test_our_go_graph_equals_gears_make_go(gears_python, tmp_path):
    genes = sorted(["KLF1", "MAP2K6", "MAP2K3", "TGFBR2", "MAPK1", "HBB", "HBA1", "GATA1", "TP53", "SGK1"])
    go = load_gene_go()
    (tmp_path / "data").mkdir()
    with open(tmp_path / "gene2go_all.pkl", "wb") as f:
        pickle.dump({g: set(go[g]) for g in genes}, f)
    code = (
        LOAD_WORKER + "w.stub_dcor()\n"
        "from gears.utils import make_GO\n"
        f"df = make_GO({str(tmp_path)!r}, {genes!r}, 'probe', num_workers=2, save=False)\n"
        "df.to_csv(sys.argv[1], index=False)\n"
    )
    out = tmp_path / "make_go.csv"
    run = subprocess.run([gears_python, "-P", "-c", code, str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    pd.testing.assert_frame_equal(pd.read_csv(out), gears_go_edges(genes), check_exact=False, rtol=1e-12)


@pytest.mark.gears
def test_missing_gears_input_is_an_error_not_a_download(norman, gears_python):
    class NoGO(GEARSModel):
        def _run_worker(self, mode, workdir, description, total):
            (workdir / "gears_data" / "gene2go_all.pkl").unlink()
            return super()._run_worker(mode, workdir, description, total)

    with pytest.raises(G.GEARSWorkerError, match="wanted to download"):
        NoGO(python=gears_python, batch_size=8).fit(tiny(norman, ["KLF1", "MAP2K6"], n_cells=8))


@pytest.mark.gears
def test_worker_evaluation_into_arrays_equals_gears_evaluate(gears_python, tmp_path):
    # GEARS' own evaluate and the worker's copy-into-arrays one on the same batches (a linear
    # net standing in for GEARS, a control cell whose top genes are GEARS' -1 filler, a last
    # incomplete batch kept or dropped): every array must be equal, not merely close.
    code = (
        LOAD_WORKER + "w.stub_dcor()\n"
        "import numpy as np, torch\n"
        "from torch_geometric.data import Data\n"
        "from torch_geometric.loader import DataLoader\n"
        "from gears.inference import evaluate\n"
        "torch.manual_seed(0); rng = np.random.default_rng(0)\n"
        "cells = [Data(x=torch.randn(7, 1), y=torch.randn(1, 7), de_idx=(np.full(3, -1) if i % 5 == 0 else rng.choice(7, 3, replace=False)),\n"
        "              pert=('ctrl' if i % 5 == 0 else f'G{i % 3}+ctrl')) for i in range(23)]\n"
        "net = torch.nn.Linear(7, 7)\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self): super().__init__(); self.lin = net\n"
        "    def forward(self, batch): return self.lin(batch.y) + batch.x.reshape(batch.num_graphs, -1)\n"
        "for drop_last in (False, True):\n"
        "    torch.manual_seed(1); a = evaluate(DataLoader(cells, batch_size=4, shuffle=True, drop_last=drop_last), Net(), False, 'cpu')\n"
        "    torch.manual_seed(1); b = w.evaluate_into_arrays(DataLoader(cells, batch_size=4, shuffle=True, drop_last=drop_last), Net(), False, 'cpu')\n"
        "    assert sorted(a) == sorted(b), (sorted(a), sorted(b))\n"
        "    for k in a:\n"
        "        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, (k, a[k].dtype, b[k].dtype, a[k].shape, b[k].shape)\n"
        "        assert np.array_equal(a[k], b[k]), k\n"
        "    assert len(a['pred']) == (20 if drop_last else 23)\n"
        "print('same')\n"
    )
    run = subprocess.run([gears_python, "-P", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "same"
