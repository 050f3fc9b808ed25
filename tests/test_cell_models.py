"""The covariate-aware models of helpers.models.cell_models: baselines by hand, torch models on a known linear effect."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from helpers.data.splits import condition_name
from helpers.errors import DataError
from helpers.models import cell_models as cm
from helpers.models.registry import build_model, build_models

LINES = ("L1", "L2", "L3", "L4")
PERTS = ("A", "B", "C", "D", "E", "F")


def tiny_screen(n_cells=30, n_controls=40, n_genes=12, noise=0.05, seed=0, held=(("A", "L1"),)):
    """Dense log-expression far from 0: x = base_line + effect_perturbation + noise, the same effect in every line.

    Returns the cells without the ``held`` pairs, the true profiles of every pair and the effects.
    """
    rng = np.random.default_rng(seed)
    base = {k: rng.uniform(2.0, 4.0, n_genes) for k in LINES}
    effect = {p: np.where(rng.random(n_genes) < 0.5, rng.normal(0, 0.6, n_genes), 0.0) for p in PERTS}
    rows, labels, lines, truth = [], [], [], {}
    for k in LINES:
        rows.append(base[k] + rng.normal(0, noise, (n_controls, n_genes)))
        labels += ["control"] * n_controls
        lines += [k] * n_controls
        for p in PERTS:
            truth[condition_name(p, k)] = base[k] + effect[p]
            if (p, k) in held:
                continue
            rows.append(base[k] + effect[p] + rng.normal(0, noise, (n_cells, n_genes)))
            labels += [p] * n_cells
            lines += [k] * n_cells
    X = np.vstack(rows).astype(np.float32)
    obs = pd.DataFrame({"perturbation": labels, "context": lines}, index=[f"c{i}" for i in range(len(labels))])
    adata = ad.AnnData(sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))
    return adata, pd.DataFrame(truth, index=adata.var_names).T, effect, base


@pytest.fixture(scope="module")
def screen():
    return tiny_screen()


def _means(adata):
    X = adata.X.toarray().astype(np.float64)
    obs = adata.obs
    out = {}
    for (p, k), idx in obs.groupby(["perturbation", "context"]).indices.items():
        out[(p, k)] = X[idx].mean(axis=0)
    return out


def test_baselines_by_hand(screen):
    adata, _, _, _ = screen
    m = _means(adata)
    want_other = m[("control", "L1")] + np.mean([m[("A", k)] - m[("control", k)] for k in ("L2", "L3", "L4")], axis=0)
    want_line = np.mean([m[(p, "L1")] for p in PERTS[1:]], axis=0)
    conds = ["A@L1", "B@L2"]
    other = cm.OtherContextsEffect().fit(adata).predict(conds)
    np.testing.assert_allclose(other.loc["A@L1"], want_other, rtol=1e-6)
    # B is trained in L2 itself; the baseline uses the *other* lines only
    want_b = m[("control", "L2")] + np.mean([m[("B", k)] - m[("control", k)] for k in ("L1", "L3", "L4")], axis=0)
    np.testing.assert_allclose(other.loc["B@L2"], want_b, rtol=1e-6)
    np.testing.assert_allclose(cm.ContextMean().fit(adata).predict(["A@L1"]).loc["A@L1"], want_line, rtol=1e-6)
    np.testing.assert_allclose(cm.ContextControl().fit(adata).predict(["A@L1"]).loc["A@L1"], m[("control", "L1")], rtol=1e-6)


def test_conditions_are_checked_and_refused_with_reasons(screen):
    adata, _, _, _ = screen
    model = cm.OtherContextsEffect().fit(adata)
    bad = model.unpredictable(["A@L9", "Z@L1"])
    assert "no training cells" in bad["A@L9"] and "another cell line" in bad["Z@L1"]
    with pytest.raises(DataError, match="cannot predict 2"):
        model.predict(["A@L9", "Z@L1"])
    assert "not perturbed in the training data" in cm.DecoderOnlyCells(max_epochs=1).fit(adata).unpredictable(["Z@L1"])["Z@L1"]
    with pytest.raises(DataError, match="not a condition name"):
        model.predict(["A"])
    with pytest.raises(DataError, match="duplicates"):
        model.predict(["A@L1", "A@L1"])
    no_context = adata.copy()
    del no_context.obs["context"]
    with pytest.raises(DataError, match="context"):
        cm.ContextMean().fit(no_context)


def test_mean_models_shift_the_control_cells_to_their_prediction(screen):
    adata, _, _, _ = screen
    model = cm.ContextMean().fit(adata)
    ctrl = adata[(adata.obs["perturbation"] == "control") & (adata.obs["context"] == "L1")].X.toarray()
    cells = model.predict_cells("A@L1", ctrl)
    assert cells.shape == ctrl.shape
    np.testing.assert_allclose(cells.mean(axis=0), model.predict(["A@L1"]).iloc[0], rtol=1e-9)
    np.testing.assert_allclose(cells.std(axis=0), ctrl.std(axis=0), rtol=1e-5)


FAST = dict(max_epochs=150, patience=15, batch_size=64, n_control_samples=20, seed=3, max_seconds=600.0)  # bounded by epochs, not time
LEARNERS = {
    "linear additive (cells, covariates)": cm.LinearAdditiveCells(lr=2e-2, **FAST),
    "latent additive (cells, covariates)": cm.LatentAdditiveCells(width=64, latent=16, dropout=0.0, lr=3e-3, **FAST),
    "decoder only (cells, covariates)": cm.DecoderOnlyCells(width=64, dropout=0.0, lr=3e-3, **FAST),
    "CPA": cm.CPA(width=64, latent=16, dropout=0.0, lr=3e-3, **FAST),
    "CPA (no adversary)": cm.CPA(adversary_weight=0.0, width=64, latent=16, dropout=0.0, lr=3e-3, **FAST),
}


@pytest.mark.parametrize("name", list(LEARNERS))
def test_each_torch_model_learns_a_known_linear_effect(screen, name):
    adata, truth, effect, _ = screen
    model = LEARNERS[name].clone().fit(adata)
    assert model.stopped_because_ != "time"
    # a training pair is fitted closely
    seen = model.predict(["B@L2"]).iloc[0]
    assert np.sqrt(np.mean((seen - truth.loc["B@L2"]) ** 2)) < 0.15, name
    # the held-out pair: its effect was seen in L2 and L3 only; the error is a fraction of the effect
    pred = model.predict(["A@L1"]).iloc[0]
    err = np.sqrt(np.mean((pred - truth.loc["A@L1"]) ** 2))
    size = np.sqrt(np.mean(effect["A"] ** 2))
    assert err < 0.5 * size, f"{name}: error {err:.3f} vs effect {size:.3f}"


def test_the_covariate_only_decoder_predicts_one_profile_per_line(screen):
    adata, truth, _, base = screen
    model = cm.DecoderCovariates(width=64, dropout=0.0, lr=3e-3, **FAST).fit(adata)
    pred = model.predict(["A@L1", "B@L1", "C@L1", "Z@L1", "A@L2"])  # Z was never perturbed: decoder-cov can still "predict" it
    for p in ("B@L1", "C@L1", "Z@L1"):
        np.testing.assert_array_equal(pred.loc[p].to_numpy(), pred.loc["A@L1"].to_numpy())
    assert not np.allclose(pred.loc["A@L2"], pred.loc["A@L1"])
    ctrl = np.zeros((5, adata.n_vars))
    cells = model.predict_cells("A@L1", ctrl)
    assert (cells == cells[0]).all()  # one profile for every control cell


def test_torch_models_are_deterministic_and_leave_torch_alone(screen):
    import torch

    adata, _, _, _ = screen
    threads = torch.get_num_threads()
    state = torch.random.get_rng_state().clone()
    model = cm.LatentAdditiveCells(width=32, latent=8, max_epochs=8, n_control_samples=10, seed=5)
    a = model.clone().fit(adata).predict(["A@L1", "C@L3"])
    b = model.clone().fit(adata).predict(["A@L1", "C@L3"])
    c = cm.LatentAdditiveCells(width=32, latent=8, max_epochs=8, n_control_samples=10, seed=6).fit(adata).predict(["A@L1", "C@L3"])
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.to_numpy(), c.to_numpy())
    assert torch.get_num_threads() == threads and torch.equal(torch.random.get_rng_state(), state)


class _CPAWithoutAdversary(cm.CPA):
    """CPA with no adversary built at all (the adversary's classifiers and optimiser do not exist)."""

    def _extra_modules(self, n_genes, n_pert_classes, n_ctx):
        return None


def test_cpa_and_its_ablation_share_all_code_but_the_adversary(screen):
    adata, _, _, _ = screen
    # structurally: the registry's two CPAs are one class whose parameters differ only in the adversary's weight
    models = build_models(["CPA", "CPA (no adversary)"], seed=1)
    with_adv, without = models["CPA"], models["CPA (no adversary)"]
    assert type(with_adv) is type(without) is cm.CPA
    diff = {k for k, v in with_adv.get_params().items() if without.get_params()[k] != v}
    assert diff == {"adversary_weight"} and without.adversary_weight == 0
    # behaviourally: with weight 0 the trained adversary never reaches the autoencoder, so training is identical
    # to a CPA that has no adversary at all; with weight 1 it changes the model
    options = dict(width=32, latent=8, max_epochs=12, patience=50, n_control_samples=10, seed=2)
    conds = ["A@L1", "B@L3"]
    zero = cm.CPA(adversary_weight=0.0, **options).fit(adata)
    none = _CPAWithoutAdversary(adversary_weight=0.0, **options).fit(adata)
    one = cm.CPA(adversary_weight=1.0, **options).fit(adata)
    assert zero.extra_ is not None and none.extra_ is None
    for key, value in zero.network_.state_dict().items():
        assert torch_equal(value, none.network_.state_dict()[key]), key
    pd.testing.assert_frame_equal(zero.predict(conds), none.predict(conds))
    assert not np.allclose(one.predict(conds).to_numpy(), zero.predict(conds).to_numpy())
    # the adversary was trained in both registry variants (its loss is part of the training loss)
    assert (zero.history_["train_loss"] > none.history_["train_loss"]).all()


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)


def test_context_predictions_file_layouts(tmp_path, screen):
    adata, truth, _, _ = screen
    genes = list(adata.var_names)
    long = pd.DataFrame({"perturbation": ["A", "B+ctrl"], "context": ["L1", "L2"]})
    long = pd.concat([long, pd.DataFrame([truth.loc["A@L1"].to_numpy(), truth.loc["B@L2"].to_numpy()], columns=genes)], axis=1)
    long.to_csv(tmp_path / "long.csv", index=False)
    model = build_model("predictions file (contexts)", path=tmp_path / "long.csv").fit(adata)
    assert model.name == "long" and model.tags().external
    np.testing.assert_allclose(model.predict(["B@L2"]).iloc[0], truth.loc["B@L2"])
    assert "not in long.csv" in model.unpredictable(["C@L1"])["C@L1"]
    named = truth.loc[["A@L1"]] - truth.loc[["A@L1"]].to_numpy()  # a zero change
    named.rename_axis("condition").to_csv(tmp_path / "named.csv")
    change = cm.ContextPredictionsFile(tmp_path / "named.csv", values="change").fit(adata)
    np.testing.assert_allclose(change.predict(["A@L1"]).iloc[0], change.control_["L1"])
    pd.DataFrame({"perturbation": ["A"], "g0": [1.0]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="cell line of every row"):
        cm.ContextPredictionsFile(tmp_path / "bad.csv").fit(adata)
    long[["perturbation", "context", "g0"]].to_csv(tmp_path / "few.csv", index=False)
    with pytest.raises(DataError, match="lack 11"):
        cm.ContextPredictionsFile(tmp_path / "few.csv").fit(adata)
