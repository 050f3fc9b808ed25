import numpy as np
import pytest
import scipy.sparse as sp

from helpers.data import as_pseudobulk, changes, control_profile, profiles, pseudobulk
from helpers.errors import DataError


def test_pseudobulk_means_by_hand(tiny_screen):
    pb = pseudobulk(tiny_screen)
    assert list(pb.obs_names) == ["A", "A+B", "B", "C", "control"]
    np.testing.assert_allclose(pb["C"].X.ravel(), [1.0, 2.0, 2.0])
    np.testing.assert_allclose(pb["A+B"].X.ravel(), [2.0, 1.0, 0.5])
    assert pb.obs.loc["C", "n_cells"] == 4
    assert pb.obs.loc["A+B", "n_targets"] == 2


def test_batches_are_weighted_equally(tiny_screen):
    # C has gene2 = 1, 1, 3 in batch b1 and 3 in batch b2: (5/3 + 3) / 2 = 7/3, not the cell mean 2.
    pb = pseudobulk(tiny_screen, batch_key="batch")
    assert pb["C"].X[0, 2] == pytest.approx(7 / 3)
    assert pb.obs.loc["C", "n_batches"] == 2


def test_changes_and_control(tiny_screen):
    ctrl = control_profile(tiny_screen)
    np.testing.assert_allclose(ctrl.to_numpy(), [1.0, 2.0, 0.0])
    delta = changes(tiny_screen)
    assert "control" not in delta.index
    np.testing.assert_allclose(delta.loc["A+B"].to_numpy(), [1.0, -1.0, 0.5])


def test_pseudobulk_is_idempotent_and_keeps_sparse_input(tiny_screen):
    pb = pseudobulk(tiny_screen)
    assert pseudobulk(pb) is pb
    assert sp.issparse(tiny_screen.X)
    np.testing.assert_allclose(profiles(pb).to_numpy(), profiles(tiny_screen).to_numpy())


def test_pseudobulk_of_a_dense_matrix(tiny_screen):
    dense = tiny_screen.copy()
    dense.X = dense.X.toarray()
    np.testing.assert_allclose(pseudobulk(dense).X, pseudobulk(tiny_screen).X)


def test_no_control_gives_clear_error(tiny_screen):
    with pytest.raises(DataError, match="control"):
        changes(tiny_screen[tiny_screen.obs["perturbation"] != "control"].copy())


def test_a_table_of_profiles_fits_models_like_cells(tiny_screen):
    from helpers.models import Additive, MeanBaseline

    counts = tiny_screen.obs["perturbation"].astype(str).value_counts()
    table = as_pseudobulk(profiles(tiny_screen), n_cells=counts)
    assert pseudobulk(table) is table
    for model in (Additive(), MeanBaseline("cell")):
        a = model.clone().fit(tiny_screen).predict(["A+B"])
        b = model.clone().fit(table).predict(["A+B"])
        np.testing.assert_allclose(a.to_numpy(), b.to_numpy())
