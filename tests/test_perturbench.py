"""PerturBench-style torch models: shapes, determinism, learning an additive problem, exclusions."""

import itertools

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from helpers.data import profiles, pseudobulk
from helpers.errors import DataError
from helpers.metrics import l2
from helpers.models.baselines import NoChange
from helpers.models.perturbench import MODELS, DecoderOnly, LatentAdditive, LinearAdditive

torch = pytest.importorskip("torch")

GENE_TARGETS = [f"T{i}" for i in range(6)]
FAST = dict(max_epochs=600, max_seconds=120, patience=100)


def additive_screen(seed=0, n_genes=30, cells=12, noise=0.05):
    """Cells whose mean log-expression is control + the sum of the targeted genes' effects."""
    rng = np.random.default_rng(seed)
    control = rng.uniform(1.0, 3.0, n_genes)
    effects = {g: rng.normal(0, 0.6, n_genes) * (rng.random(n_genes) < 0.5) for g in GENE_TARGETS}
    singles = list(GENE_TARGETS)
    doubles = ["+".join(sorted(p)) for p in itertools.combinations(GENE_TARGETS, 2)]
    means = {"control": control}
    for p in singles + doubles:
        means[p] = np.clip(control + sum(effects[g] for g in p.split("+")), 0.05, None)
    labels, rows = [], []
    for p, mu in means.items():
        n = 60 if p == "control" else cells
        rows.append(mu + rng.normal(0, noise, (n, n_genes)))
        labels += [p] * n
    X = np.clip(np.vstack(rows), 0, None).astype(np.float32)
    obs = pd.DataFrame({"perturbation": pd.Categorical(labels)}, index=[f"c{i}" for i in range(len(labels))])
    obs["n_targets"] = [0 if p == "control" else len(p.split("+")) for p in labels]
    adata = ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
    test = doubles[::2]
    train = adata[~adata.obs["perturbation"].isin(test).to_numpy()].copy()
    return adata, train, test


@pytest.fixture(scope="module")
def screen():
    return additive_screen()


@pytest.mark.parametrize("cls", [LinearAdditive, LatentAdditive, DecoderOnly])
def test_learns_an_additive_problem(screen, cls):
    adata, train, test = screen
    truth = profiles(adata).loc[test]
    model = cls(**FAST).fit(train)
    pred = model.predict(test)
    assert pred.shape == (len(test), adata.n_vars)
    assert list(pred.index) == test and list(pred.columns) == list(adata.var_names)
    err = l2(pred, truth).mean()
    baseline = l2(NoChange().fit(train).predict(test), truth).mean()
    # the linear additive model is additive by construction; the MLPs must find it from 13 examples
    assert err < (0.15 if cls is LinearAdditive else 0.4) * baseline, (cls.__name__, err, baseline)
    assert model.stopped_because_ in ("early_stopping", "max_epochs")
    assert set(model.history_.columns) == {"train_mse", "val_mse"}
    # validation doubles come from the training data only
    assert set(model.validation_perturbations_) <= set(train.obs["perturbation"].astype(str))
    assert not set(model.validation_perturbations_) & set(test)


@pytest.mark.parametrize("cls", [LinearAdditive, LatentAdditive, DecoderOnly])
def test_deterministic_and_seeded(screen, cls):
    _, train, test = screen
    kw = dict(max_epochs=15, patience=100, batch_size=4)  # several batches: the shuffling matters
    a = cls(seed=3, **kw).fit(train).predict(test)
    b = cls(seed=3, **kw).fit(train).predict(test)
    c = cls(seed=4, **kw).fit(train).predict(test)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.to_numpy(), c.to_numpy())


def test_global_torch_state_is_restored(screen):
    _, train, _ = screen
    threads = torch.get_num_threads()
    flag = torch.are_deterministic_algorithms_enabled()
    state = torch.get_rng_state()
    LatentAdditive(max_epochs=2, n_threads=1).fit(train)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == flag
    assert torch.equal(torch.get_rng_state(), state)


def test_untrained_linear_additive_predicts_control(screen):
    # W = 0 and softplus(x_c + b) = x_c at initialisation: with lr = 0 the model is "no change"
    _, train, test = screen
    model = LinearAdditive(lr=0.0, max_epochs=1, val_fraction=0.0).fit(train)
    control = profiles(train).loc["control"].to_numpy()
    np.testing.assert_allclose(model.predict(test).to_numpy(), np.tile(control, (len(test), 1)), rtol=1e-5, atol=1e-5)
    assert model.stopped_because_ == "max_epochs" and model.n_epochs_ == 1


def test_unseen_gene_is_unpredictable(screen):
    _, train, _ = screen
    model = DecoderOnly(max_epochs=2).fit(train)
    bad = model.unpredictable(["T0+T1", "T0+ZZZ", "ZZZ"])
    assert set(bad) == {"T0+ZZZ", "ZZZ"} and "ZZZ" in bad["T0+ZZZ"]
    with pytest.raises(DataError, match="cannot predict"):
        model.predict(["T0+ZZZ"])
    assert list(model.perturbed_genes_) == GENE_TARGETS


def test_cell_level_training(screen):
    adata, train, test = screen
    model = LatentAdditive(training="cells", max_epochs=20, n_control_samples=25, patience=100).fit(train)
    assert model.control_sample_.shape == (25, adata.n_vars)
    pred = model.predict(test)
    baseline = l2(NoChange().fit(train).predict(test), profiles(adata).loc[test]).mean()
    assert l2(pred, profiles(adata).loc[test]).mean() < baseline
    # the control sample is seeded: same seed, same sample and predictions
    again = LatentAdditive(training="cells", max_epochs=20, n_control_samples=25, patience=100).fit(train)
    pd.testing.assert_frame_equal(pred, again.predict(test))
    with pytest.raises(DataError, match="single cells"):
        LatentAdditive(training="cells").fit(pseudobulk(train))


def test_pseudobulk_input_equals_cells_input(screen):
    _, train, test = screen
    a = DecoderOnly(max_epochs=5).fit(train).predict(test)
    b = DecoderOnly(max_epochs=5).fit(pseudobulk(train)).predict(test)
    pd.testing.assert_frame_equal(a, b)


def test_parameters_and_names():
    assert set(MODELS) == {"linear additive (torch)", "latent additive (torch)", "decoder only (torch)"}
    model = LatentAdditive(width=16, latent=4)
    assert model.get_params()["width"] == 16 and model.clone().get_params() == model.get_params()
    assert "width" not in LinearAdditive().get_params()
    with pytest.raises(ValueError, match="training"):
        DecoderOnly(training="gpu").fit(additive_screen()[1])
