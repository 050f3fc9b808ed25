"""Energy distance and the PCA space, against independent computations."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats
from scipy.spatial.distance import cdist

from helpers.errors import DataError
from helpers.metrics.distribution import PCASpace, energy_distance, perturbench_mmd


def _brute(x, y):
    return 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()


def test_energy_distance_equals_a_brute_force_computation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(37, 5)), rng.normal(0.5, 1.3, size=(23, 5))
    assert energy_distance(x, y) == pytest.approx(_brute(x, y), rel=1e-12)
    assert energy_distance(x, y) == pytest.approx(energy_distance(y, x), rel=1e-12)
    assert perturbench_mmd(x, y) == pytest.approx(_brute(x, y) / 2, rel=1e-12)
    # blocks of rows give the same sum as one block
    from helpers.metrics import distribution

    assert distribution._mean_pairwise(x, y, block=4) == pytest.approx(cdist(x, y).mean(), rel=1e-12)


def test_in_one_dimension_it_is_the_square_of_scipys_energy_distance():
    rng = np.random.default_rng(1)
    u, v = rng.exponential(size=50), rng.normal(2, 1, size=70)
    assert energy_distance(u, v) == pytest.approx(stats.energy_distance(u, v) ** 2, rel=1e-10)


def test_identical_clouds_have_distance_zero_and_shifts_grow_it():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 3))
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    assert energy_distance(x, sp.csr_matrix(x)) == pytest.approx(0.0, abs=1e-12)
    distances = [energy_distance(x, x + shift) for shift in (0.5, 1.0, 2.0)]
    assert distances == sorted(distances) and distances[0] > 0
    # a point mass at the right mean is still far from a spread-out cloud: the collapsed prediction is caught
    assert energy_distance(x, np.tile(x.mean(axis=0), (40, 1))) > 0.1


def test_bad_input_is_refused():
    with pytest.raises(DataError, match="different dimensions"):
        energy_distance(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(DataError, match="NaN"):
        energy_distance(np.array([[np.nan, 1.0]]), np.zeros((2, 2)))
    with pytest.raises(DataError, match="non-empty"):
        energy_distance(np.zeros((0, 2)), np.zeros((2, 2)))


def test_pca_space_matches_sklearn_up_to_sign():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    cells = rng.normal(size=(60, 12)) @ rng.normal(size=(12, 12))
    space = PCASpace.fit(cells, n_components=4)
    ours = space.transform(cells)
    theirs = PCA(n_components=4, svd_solver="full").fit_transform(cells)
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), atol=1e-9)
    assert PCASpace.fit(cells[:3], n_components=30).components.shape == (2, 12)  # capped at cells - 1
    with pytest.raises(DataError, match="genes"):
        space.transform(np.zeros((2, 5)))
