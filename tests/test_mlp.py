"""The torch MLP: determinism, the untrained network is the mean, it learns a non-linear map."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from helpers.data.pseudobulk import as_pseudobulk  # noqa: E402
from helpers.errors import DataError  # noqa: E402
from helpers.models.baselines import MeanBaseline  # noqa: E402
from helpers.models.mlp import MLPModel  # noqa: E402


def _pseudobulk(table: pd.DataFrame):
    return as_pseudobulk(table, n_cells=10)


def _nonlinear_screen(n_perts=160, n_genes=30, seed=0):
    """Changes that are a non-linear function of a 2-d embedding of the target gene, plus small noise."""
    rng = np.random.default_rng(seed)
    perts = [f"P{i}" for i in range(n_perts)]
    emb = pd.DataFrame(rng.uniform(-2, 2, size=(n_perts, 2)), index=perts, columns=["e1", "e2"])
    a, b = rng.normal(size=n_genes), rng.normal(size=n_genes)
    change = np.sin(2 * emb[["e1"]].to_numpy()) * a + (emb[["e2"]].to_numpy() ** 2 - 1.3) * b
    ctrl = rng.uniform(1, 3, n_genes)
    table = pd.DataFrame(ctrl + change + rng.normal(0, 0.05, size=change.shape), index=perts, columns=[f"g{j}" for j in range(n_genes)])
    table.loc["control"] = ctrl
    return table, emb


def test_same_seed_same_predictions_and_torch_state_restored():
    table, emb = _nonlinear_screen(n_perts=60)
    train = _pseudobulk(table.drop(index=["P0", "P1"]))
    threads, flag = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    kw = dict(embedding=emb, max_epochs=20, hidden_sizes=(16,), dropout=0.1)
    a = MLPModel(seed=3, **kw).fit(train).predict(["P0", "P1"])
    b = MLPModel(seed=3, **kw).fit(train).predict(["P0", "P1"])
    c = MLPModel(seed=4, **kw).fit(train).predict(["P0", "P1"])
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.to_numpy(), c.to_numpy())
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, flag)


def test_untrained_network_predicts_the_mean_baseline():
    """The last layer starts at zero, so without learning the prediction is b + control = the mean (incl. control)."""
    table, emb = _nonlinear_screen(n_perts=40)
    train = _pseudobulk(table.drop(index=["P0", "P1"]))
    model = MLPModel(embedding=emb, learning_rate=0.0, max_epochs=2).fit(train)
    mean = MeanBaseline(include_control=True).fit(train)
    np.testing.assert_allclose(model.predict(["P0", "P1"]).to_numpy(), mean.predict(["P0", "P1"]).to_numpy(), rtol=1e-12)


def test_learns_a_nonlinear_response_better_than_the_mean():
    table, emb = _nonlinear_screen()
    test = [f"P{i}" for i in range(120, 160)]
    train = _pseudobulk(table.drop(index=test))
    model = MLPModel(embedding=emb, hidden_sizes=(64,), learning_rate=1e-2, max_epochs=150, batch_size=32, seed=0).fit(train)
    mean = MeanBaseline(include_control=True).fit(train)
    truth = table.loc[test].to_numpy()
    err_mlp = np.sqrt(((model.predict(test).to_numpy() - truth) ** 2).sum(axis=1)).mean()
    err_mean = np.sqrt(((mean.predict(test).to_numpy() - truth) ** 2).sum(axis=1)).mean()
    assert err_mlp < 0.6 * err_mean
    assert model.loss_history_[-1] < 0.5 * model.loss_history_[0]


def test_training_pca_embedding_and_unmeasured_targets():
    rng = np.random.default_rng(1)
    genes = [f"G{i}" for i in range(20)]
    table = pd.DataFrame(rng.gamma(2, 1, size=(9, 20)), index=genes[:8] + ["control"], columns=genes)
    table = table.rename(index={"G7": "OUTSIDE"})
    model = MLPModel(n_components=3, max_epochs=3).fit(_pseudobulk(table))
    assert model.excluded_ == {"OUTSIDE": "target gene OUTSIDE not measured (no row in the training PCA)"}
    assert model.unpredictable(["G1", "NOPE"]) == {"NOPE": "target gene NOPE not measured (no row in the training PCA)"}
    pred = model.predict(["G10", "G11"])
    assert pred.shape == (2, 20) and np.isfinite(pred.to_numpy()).all()


def test_time_bound_stops_training_and_is_recorded():
    table, emb = _nonlinear_screen(n_perts=40)
    model = MLPModel(embedding=emb, max_epochs=50, max_seconds=0.0).fit(_pseudobulk(table))
    assert model.stopped_early_ and model.n_epochs_ == 1


def test_bad_input():
    table, emb = _nonlinear_screen(n_perts=10)
    with pytest.raises(DataError, match="control"):
        MLPModel(embedding=emb).fit(_pseudobulk(table.drop(index="control")))
    with pytest.raises(ValueError, match="embedding"):
        MLPModel(embedding="scgpt").fit(_pseudobulk(table))
    with pytest.raises(DataError, match="at least 2"):
        MLPModel(embedding=emb.iloc[:1]).fit(_pseudobulk(table))


def test_global_torch_generator_is_left_alone():
    table, emb = _nonlinear_screen(n_perts=20)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    MLPModel(embedding=emb, max_epochs=2).fit(_pseudobulk(table))
    assert torch.equal(torch.rand(3), expected)
