"""Tests of helpers.metrics against values computed by hand or by an independent route."""

import numpy as np
import pandas as pd
import pytest

from helpers.data.canonical import DataError
from helpers.metrics import perturbed_mean, systematic_variation


def frame(values, perts=None, genes=None):
    values = np.asarray(values, dtype=float)
    perts = perts or [f"P{i}" for i in range(values.shape[0])]
    genes = genes or [f"g{j}" for j in range(values.shape[1])]
    return pd.DataFrame(values, index=perts, columns=genes)


# --- systematic variation -------------------------------------------------------------

def test_systematic_variation_by_hand():
    # mean change = (2/3, 1/3, 2/3), norm 1: cosines 2/3, (2/3 + 1/3)/sqrt(2), (4/3)/2
    changes = frame([[1, 0, 0], [1, 1, 0], [0, 0, 2]])
    result = systematic_variation(changes)
    expected = [2 / 3, 1 / np.sqrt(2), 2 / 3]
    np.testing.assert_allclose(result.cosines.to_numpy(), expected)
    assert result.score == pytest.approx(np.mean(expected))
    assert result.cosines.name == "systematic_variation_cosine"


def test_systematic_variation_identical_shifts_is_one_and_zero_change_is_nan():
    changes = frame([[1, 2, 3], [2, 4, 6], [0, 0, 0]])
    result = systematic_variation(changes)
    assert np.isnan(result.cosines["P2"])
    assert result.score == pytest.approx(1.0)


def test_systematic_variation_refuses_profiles_with_control_row():
    with pytest.raises(DataError, match="changes"):
        systematic_variation(frame([[1, 0], [0, 1]], perts=["control", "A"]))


# --- perturbed mean --------------------------------------------------------------------

def test_perturbed_mean_weightings():
    profiles = frame([[1, 0, 0], [1, 1, 0], [0, 0, 2]], perts=["A", "B", "C"])
    np.testing.assert_allclose(perturbed_mean(profiles).to_numpy(), [2 / 3, 1 / 3, 2 / 3])
    n = pd.Series({"A": 1, "B": 1, "C": 2})
    # (1*[1,0,0] + 1*[1,1,0] + 2*[0,0,2]) / 4
    np.testing.assert_allclose(perturbed_mean(profiles, "cell", n).to_numpy(), [0.5, 0.25, 1.0])
    assert perturbed_mean(profiles).name == "perturbed_mean"
    with pytest.raises(DataError, match="n_cells"):
        perturbed_mean(profiles, "cell")
