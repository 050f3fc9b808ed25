import numpy as np
import pandas as pd
import pytest

from helpers.data import pseudobulk
from helpers.errors import DataError
from helpers.models import Additive, MatchingMean, MeanBaseline, NoChange, NotFittedError, PredictionsFile


def test_no_change_predicts_control(tiny_screen):
    pred = NoChange().fit(tiny_screen).predict(["A", "A+B"])
    np.testing.assert_allclose(pred.to_numpy(), [[1.0, 2.0, 0.0], [1.0, 2.0, 0.0]])
    assert list(pred.columns) == ["g0", "g1", "g2"]


def test_additive_by_hand(tiny_screen):
    train = tiny_screen[tiny_screen.obs["perturbation"] != "A+B"].copy()
    model = Additive().fit(train)
    # ctrl + (A - ctrl) + (B - ctrl) = [1,2,0] + [1,0,0] + [0,-1,0]
    np.testing.assert_allclose(model.predict(["A+B"]).to_numpy(), [[2.0, 1.0, 0.0]])
    np.testing.assert_allclose(model.predict(["A+C"]).to_numpy(), [[2.0, 2.0, 2.0]])
    assert model.unpredictable(["A+D", "A+B"]) == {"A+D": "single perturbation D not in training data"}
    with pytest.raises(DataError, match="cannot predict 1"):
        model.predict(["A+D"])


def test_mean_baseline_weightings(tiny_screen):
    train = tiny_screen[tiny_screen.obs["perturbation"].isin(["control", "A", "C"])].copy()
    train = train[:-1].copy()  # C now has 3 cells: gene2 = 1, 1, 3 -> mean 5/3
    pert = MeanBaseline("perturbation").fit(train).predict(["B"]).to_numpy()[0]
    cell = MeanBaseline("cell").fit(train).predict(["B"]).to_numpy()[0]
    with_ctrl = MeanBaseline("perturbation", include_control=True).fit(train).predict(["B"]).to_numpy()[0]
    np.testing.assert_allclose(pert, [(2 + 1) / 2, 2.0, (0 + 5 / 3) / 2])
    np.testing.assert_allclose(cell, [(4 * 2 + 3 * 1) / 7, 2.0, (0 * 4 + 5) / 7])
    np.testing.assert_allclose(with_ctrl, [(2 + 1 + 1) / 3, 2.0, (0 + 5 / 3 + 0) / 3])


def test_models_fit_on_pseudobulk_equal_fit_on_cells(tiny_screen):
    for model in (NoChange(), MeanBaseline(), MeanBaseline("cell"), Additive(), MatchingMean()):
        a = model.clone().fit(tiny_screen).predict(["A+B", "C"])
        b = model.clone().fit(pseudobulk(tiny_screen)).predict(["A+B", "C"])
        pd.testing.assert_frame_equal(a, b)


def test_matching_mean(tiny_screen):
    train = tiny_screen[tiny_screen.obs["perturbation"].isin(["control", "A", "B"])].copy()
    model = MatchingMean().fit(train)
    np.testing.assert_allclose(model.predict(["A+B"]).to_numpy(), [[(2 + 1) / 2, (2 + 1) / 2, 0.0]])
    # unseen gene D contributes the cell-weighted non-control mean [1.5, 1.5, 0]
    np.testing.assert_allclose(model.predict(["A+D"]).to_numpy(), [[(2 + 1.5) / 2, (2 + 1.5) / 2, 0.0]])


def test_unfitted_and_bad_names(tiny_screen):
    with pytest.raises(NotFittedError):
        NoChange().predict(["A"])
    model = NoChange().fit(tiny_screen)
    with pytest.raises(DataError, match="not a canonical"):
        model.predict(["B+A"])
    with pytest.raises(TypeError):
        model.predict("A")


def test_refit_leaves_no_state(tiny_screen):
    model = MeanBaseline()
    first = model.fit(tiny_screen).predict(["A"])
    model.fit(tiny_screen[tiny_screen.obs["perturbation"].isin(["control", "A"])].copy())
    assert not np.allclose(model.predict(["A"]).to_numpy(), first.to_numpy())
    assert model.get_params() == {"weighting": "perturbation", "include_control": False}


def _write_predictions(tmp_path, frame, suffix):
    path = tmp_path / f"pred{suffix}"
    if suffix == ".csv":
        frame.to_csv(path)
    elif suffix == ".parquet":
        frame.reset_index().to_parquet(path)
    else:
        import anndata as ad

        ad.AnnData(X=frame.to_numpy(), obs=pd.DataFrame(index=frame.index), var=pd.DataFrame(index=frame.columns)).write_h5ad(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".h5ad", ".parquet"])
def test_predictions_file_round_trip(tiny_screen, tmp_path, suffix):
    frame = pd.DataFrame(
        [[1.5, 2.5, 0.1], [0.2, 0.3, 0.4]], index=pd.Index(["B+A", "C+ctrl"], name="condition"), columns=["g2", "g0", "g1"]
    )
    model = PredictionsFile(_write_predictions(tmp_path, frame, suffix), name="mine").fit(tiny_screen)
    pred = model.predict(["A+B", "C"])
    assert list(pred.columns) == ["g0", "g1", "g2"]
    np.testing.assert_allclose(pred.loc["A+B"].to_numpy(), [2.5, 0.1, 1.5])
    assert model.unpredictable(["A", "C"]) == {"A": f"not in pred{suffix}"}


def test_predictions_file_errors(tiny_screen, tmp_path):
    frame = pd.DataFrame([[1.0, 2.0]], index=["A"], columns=["g0", "g1"])
    with pytest.raises(DataError, match="lack 1 of the 3 evaluated genes"):
        PredictionsFile(_write_predictions(tmp_path, frame, ".csv")).fit(tiny_screen)
    frame = pd.DataFrame([[1.0, np.nan, 0.0]], index=["A"], columns=["g0", "g1", "g2"])
    with pytest.raises(DataError, match="NaN"):
        PredictionsFile(_write_predictions(tmp_path, frame, ".csv")).fit(tiny_screen)
    with pytest.raises(DataError, match="does not exist"):
        PredictionsFile(tmp_path / "nope.csv").fit(tiny_screen)
    (tmp_path / "pred.json").write_text("{}")
    with pytest.raises(DataError, match="use .csv"):
        PredictionsFile(tmp_path / "pred.json").fit(tiny_screen)


def test_predictions_as_changes(tiny_screen, tmp_path):
    frame = pd.DataFrame([[1.0, -1.0, 0.5]], index=["A+B"], columns=["g0", "g1", "g2"])
    model = PredictionsFile(_write_predictions(tmp_path, frame, ".csv"), values="change").fit(tiny_screen)
    np.testing.assert_allclose(model.predict(["A+B"]).to_numpy(), [[2.0, 1.0, 0.5]])
