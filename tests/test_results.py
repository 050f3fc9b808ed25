import pandas as pd
import pytest

from helpers.results import RESULT_COLUMNS, check_results, read_results, summarise, tidy, write_results


def test_tidy_and_write_round_trip(tmp_path):
    wide = pd.DataFrame({"l2": [1.0, 2.0], "pearson_delta_vs_control": [0.5, float("nan")]}, index=["B", "A"])
    frame = tidy(wide, dataset="toy", seed=1, model="mean")
    assert list(frame.columns) == RESULT_COLUMNS
    assert len(frame) == 4
    path = write_results(frame, tmp_path, "toy")
    back = read_results(tmp_path)
    assert path.name == "toy.results.csv"
    assert back["notebook"].unique().tolist() == ["toy"]
    assert back.loc[(back.perturbation == "A") & (back.metric == "l2"), "value"].item() == 2.0
    assert back["value"].isna().sum() == 1


def test_check_results_refuses_bad_tables():
    with pytest.raises(ValueError, match="lacks columns"):
        check_results(pd.DataFrame({"model": ["x"]}))
    dup = tidy(pd.Series([1.0, 2.0], index=["A", "A"], name="l2"), dataset="d", seed=1, model="m")
    with pytest.raises(ValueError, match="duplicate"):
        check_results(dup)


def test_summarise_counts_missing_values():
    frame = tidy(pd.Series([1.0, 3.0, float("nan")], index=["A", "B", "C"], name="l2"), dataset="d", seed=1, model="m")
    row = summarise(frame).iloc[0]
    assert row["mean"] == 2.0 and row["n"] == 2 and row["n_missing"] == 1
    assert row["se"] == pytest.approx(2**0.5 / 2**0.5)
