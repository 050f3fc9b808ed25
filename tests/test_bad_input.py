"""Bad screens: each kind is built here and must end in a message that names the problem and the fix.

(Bad parameters are in tests/test_runner.py and tests/test_params.py, faulty downloads in
tests/test_downloads.py.)
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from helpers.data import load_dataset, read_h5ad
from helpers.data.canonical import MAX_LOG_NORMALISED, make_canonical
from helpers.data.readers import options_file, reader_options
from helpers.errors import DataError, DataNote


def _screen(labels, X=None, column="condition", seed=0, n_genes=6):
    """Cells with the given labels (as written in a file), log-normalised X unless given."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(5.0, size=(len(labels), n_genes)).astype(np.float32) + 1
    if X is None:
        X = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    obs = pd.DataFrame({column: pd.array(labels, dtype="object")}, index=[f"c{i}" for i in range(len(labels))])
    return ad.AnnData(X=sp.csr_matrix(np.asarray(X, dtype=np.float32)), obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(n_genes)]))


def _write(adata, tmp_path, name="screen.h5ad"):
    path = tmp_path / name
    adata.write_h5ad(path)
    return path


LABELS = ["control"] * 4 + ["A"] * 3 + ["B"] * 3 + ["A+B"] * 2


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize("bad", ["", "  ", None, np.nan, "nan", "None"])
def test_empty_and_missing_labels_are_refused_with_the_count(tmp_path, bad):
    labels = LABELS[:5] + [bad, bad] + LABELS[7:]
    path = _write(_screen(labels), tmp_path)
    with pytest.raises(DataError) as err:
        read_h5ad(path)
    message = str(err.value)
    assert "2 of 12 cells have an empty or missing label in obs['condition']" in message
    assert "unlabelled='drop'" in message and "screen.reader.yaml" in message  # the option, and where to put it


def test_unlabelled_cells_can_be_dropped_with_a_note(tmp_path):
    path = _write(_screen(LABELS[:5] + ["", None] + LABELS[7:]), tmp_path)
    with pytest.warns(DataNote, match="2 of 12 cells had an empty or missing perturbation label and were dropped"):
        adata = read_h5ad(path, unlabelled="drop")
    assert adata.n_obs == 10 and "nan" not in set(adata.obs["perturbation"])
    assert any("dropped" in n for n in adata.uns["notes"])


def test_an_empty_label_is_never_read_as_control(tmp_path):
    # before: '' was a control label, so unlabelled perturbed cells joined the controls
    adata = _screen(LABELS)
    adata.obs["condition"] = adata.obs["condition"].replace({"control": ""})
    with pytest.raises(DataError, match="4 of 12 cells have an empty or missing label"):
        make_canonical(adata, "condition", "perturbench")


def test_a_missing_control_group_is_named_with_the_labels_and_the_option(tmp_path):
    path = _write(_screen(["NTC"] * 4 + LABELS[4:], column="gene"), tmp_path)
    with pytest.raises(DataError) as err:
        read_h5ad(path)
    message = str(err.value)
    assert message.startswith("screen.h5ad: no control cells: none of the 4 labels of obs['gene'] is a control label")
    assert "Labels seen (cells): 'NTC' (4), 'A' (3), 'B' (3), 'A+B' (2)" in message
    assert "control_labels=['LABEL']" in message and "screen.reader.yaml" in message
    assert "unrecognised" not in message and "format=" not in message

    adata = read_h5ad(path, control_labels=["NTC"])  # the fix, in Python
    assert (adata.obs["perturbation"] == "control").sum() == 4

    options_file(path).write_text("control_labels: [NTC]\n")  # the fix, for notebooks and the command line
    assert (load_dataset(str(path)).obs["perturbation"] == "control").sum() == 4


def test_no_control_with_an_explicit_format(tmp_path):
    path = _write(_screen(["A"] * 4 + ["B"] * 4), tmp_path)
    with pytest.raises(DataError, match=r"no control cells: none of the 2 labels of obs\['condition'\].*'A' \(4\), 'B' \(4\)"):
        read_h5ad(path, format="perturbench")


@pytest.mark.parametrize("fmt", ["auto", "gears", "scperturb"])
def test_a_file_with_no_cells_is_not_an_unknown_format(tmp_path, fmt):
    adata = _screen(LABELS, column="condition" if fmt != "scperturb" else "perturbation")[:0].copy()
    path = _write(adata, tmp_path)
    with pytest.raises(DataError) as err:
        read_h5ad(path, format=fmt)
    assert "holds 0 cells" in str(err.value) and "recognise" not in str(err.value)


def test_an_unknown_layout_names_perturbation_key(tmp_path):
    path = _write(_screen(LABELS, column="guide_target"), tmp_path)
    with pytest.raises(DataError) as err:
        read_h5ad(path)
    message = str(err.value)
    assert "could not recognise the file's format" in message and "['guide_target']" in message
    assert "perturbation_key='COLUMN'" in message and "screen.reader.yaml" in message
    adata = read_h5ad(path, perturbation_key="guide_target")
    assert sorted(adata.obs["perturbation"].unique()) == ["A", "A+B", "B", "control"]
    options_file(path).write_text("perturbation_key: guide_target\n")
    assert load_dataset(str(path)).n_obs == 12


# --------------------------------------------------------------------------- the unit of X


def test_raw_counts_are_converted_with_a_note_the_user_sees(tmp_path):
    counts = np.random.default_rng(1).poisson(4.0, size=(12, 6)).astype(np.float32) + 1
    path = _write(_screen(LABELS, X=counts), tmp_path)
    with pytest.warns(DataNote, match=r"X holds raw counts \(whole numbers up to \d+\): they were normalised to 10,000 per cell"):
        adata = read_h5ad(path)
    np.testing.assert_allclose(adata.X.toarray(), np.log1p(counts / counts.sum(1, keepdims=True) * 1e4), rtol=1e-5)
    np.testing.assert_array_equal(adata.layers["counts"].toarray(), counts)
    assert "raw counts" in adata.uns["notes"][0]


def test_negative_values_are_refused(tmp_path):
    X = np.random.default_rng(2).normal(0, 1, size=(12, 6))
    path = _write(_screen(LABELS, X=X), tmp_path)
    with pytest.raises(DataError, match=r"X has \d+ negative values \(minimum -\d.*changes from control, scaled.*give the raw counts"):
        read_h5ad(path)


def test_normalised_but_not_logged_values_are_refused_or_converted_as_asked(tmp_path):
    counts = np.random.default_rng(3).poisson(4.0, size=(12, 6)).astype(np.float64) + 1
    normalised = counts / counts.sum(1, keepdims=True) * 1e4  # counts per 10,000, no log: max in the thousands
    assert normalised.max() > MAX_LOG_NORMALISED
    path = _write(_screen(LABELS, X=normalised), tmp_path)
    with pytest.raises(
        DataError, match=r"values up to \d+.*above log1p\(10,000\) = 9.21.*normalised but not log-transformed.*counts='yes'"
    ) as err:
        read_h5ad(path)
    assert str(err.value).startswith("screen.h5ad: X has values") and 'screen.reader.yaml (YAML, e.g. `counts: "yes"`)' in str(err.value)
    with pytest.warns(DataNote, match="normalised to 10,000 per cell and log1p-transformed, as asked"):
        adata = read_h5ad(path, counts="yes")
    np.testing.assert_allclose(adata.X.toarray(), np.log1p(normalised), rtol=1e-5)  # by hand: log1p of CP10k
    with pytest.warns(DataNote, match="used as they are, as asked .counts='no'.*not on the suite's scale"):
        read_h5ad(path, counts="no")
    options_file(path).write_text("counts: yes\n")  # unquoted YAML yes is true: understood
    with pytest.warns(DataNote):
        assert load_dataset(str(path)).X.max() < MAX_LOG_NORMALISED


def test_a_matrix_of_zeros_is_refused(tmp_path):
    path = _write(_screen(LABELS, X=np.zeros((12, 6))), tmp_path)
    with pytest.raises(DataError, match="X holds only zeros"):
        read_h5ad(path)


def test_a_canonical_file_is_checked_too(tiny_screen, tmp_path):
    bad = tiny_screen.copy()
    bad.X = sp.csr_matrix(bad.X.toarray() - 5)
    path = _write(bad, tmp_path)
    with pytest.raises(DataError, match="negative values"):
        read_h5ad(path)


def test_the_shipped_datasets_read_without_notes():
    # the book's default data: no note under any cell (its build counts stderr output as an error)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataNote)
        for name in ("norman2019_subset", "mcfaline2023_subset"):
            load_dataset(name)  # a note would raise here


# --------------------------------------------------------------------------- reader options


def test_unknown_and_bad_reader_options_are_named(tmp_path):
    path = _write(_screen(LABELS), tmp_path)
    with pytest.raises(
        DataError, match=r"the perturbench reader has no option\(s\) \['contol_labels'\]; its options are: .*control_labels"
    ):
        read_h5ad(path, contol_labels=["x"])
    with pytest.raises(DataError, match="counts='maybe' is not an option"):
        read_h5ad(path, counts="maybe")
    with pytest.raises(DataError, match="unlabelled='keep' is not an option"):
        read_h5ad(path, unlabelled="keep")
    with pytest.raises(DataError, match="duplicate_genes='last' is not an option"):
        read_h5ad(path, duplicate_genes="last")
    with pytest.raises(DataError, match="control_labels must be a list of labels, not 5"):
        read_h5ad(path, control_labels=5)
    with pytest.raises(DataError, match="unknown format 'h5'"):
        read_h5ad(path, format="h5")
    assert "batch_key" in reader_options("scperturb") and "gene_symbol_key" not in reader_options("gears")


@pytest.mark.parametrize(
    "content, message",
    [
        ("control_labels: [NTC\n", "cannot be read .*YAMLError|cannot be read .*ScannerError|cannot be read .*ParserError"),
        ("- NTC\n", "must be a YAML mapping"),
    ],
)
def test_a_bad_options_file_is_named(tmp_path, content, message):
    path = _write(_screen(LABELS), tmp_path)
    options_file(path).write_text(content)
    with pytest.raises(DataError, match=message):
        read_h5ad(path)


def test_paths_that_are_not_screens(tmp_path):
    with pytest.raises(DataError, match="is a folder, not an .h5ad file"):
        load_dataset(str(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "screen.h5ad"))
    with pytest.raises(DataError, match="unknown dataset 'norman_lik'.*did you mean 'norman_like'"):
        load_dataset("norman_lik")
    with pytest.raises(DataError, match="takes no options"):
        load_dataset("norman2019_subset", control_labels=["x"])


# --------------------------------------------------------------------------- a chapter on too small a screen


def test_progress_bars_on_too_few_perturbations_for_the_folds():
    # before: KeyError: 'model' (no embedding could be fitted anywhere, and the empty fit log had no columns)
    from helpers.benchmarks.progress_bars import run_contexts
    from helpers.models.embedding_regressor import fixed_source

    rng = np.random.default_rng(0)
    perts = [f"G{i}" for i in range(8)]
    changes = pd.DataFrame(rng.normal(size=(8, 5)), index=perts, columns=[f"X{j}" for j in range(5)])
    embedding = pd.DataFrame(rng.normal(size=(8, 3)), index=perts)
    cells = ad.AnnData(X=np.zeros((1, 1)))
    with pytest.raises(
        DataError, match=r"no embedding model could be fitted with n_folds=2 \(1 left out, e.g. e \(kNN\) on K.*use more folds"
    ):
        run_contexts(cells, {"K": changes}, {("K", 1): [fixed_source("e", embedding)]}, [1], ["knn"], 2, 3, has_cells=True)


def test_detection_looks_at_every_label_column(tmp_path):
    # a scPerturb-like file with another 'condition' column (no control in it) is still read by its 'perturbation'
    adata = _screen(["control"] * 4 + ["A"] * 4 + ["A_B"] * 4, column="perturbation")
    adata.obs["condition"] = "treated"
    out = read_h5ad(_write(adata, tmp_path))
    assert sorted(out.obs["perturbation"].unique()) == ["A", "A+B", "control"]
