import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from helpers.data.canonical import (
    DataError,
    canonical_perturbation,
    log_normalise,
    looks_like_counts,
    make_canonical,
    target_genes,
    validate,
)


@pytest.mark.parametrize(
    "label, style, expected",
    [
        ("ctrl", "gears", "control"),
        ("KLF1+ctrl", "gears", "KLF1"),
        ("ctrl+KLF1", "gears", "KLF1"),
        ("MAP2K6+KLF1", "gears", "KLF1+MAP2K6"),
        ("control", "scperturb", "control"),
        ("MAP2K6_KLF1", "scperturb", "KLF1+MAP2K6"),
        ("non-targeting", "replogle", "control"),
        ("RPL3", "replogle", "RPL3"),
        ("B+A", "perturbench", "A+B"),
        ("A+B", "canonical", "A+B"),
        ("HLA-DRB1", "canonical", "HLA-DRB1"),
        ("GTF2H2C_2", "canonical", "GTF2H2C_2"),
        ("ctrl+GTF2H2C_2", "gears", "GTF2H2C_2"),
    ],
)
def test_canonical_names(label, style, expected):
    assert canonical_perturbation(label, style) == expected


def test_bad_label_and_style_are_refused():
    with pytest.raises(DataError, match="does not parse"):
        canonical_perturbation("KLF1 MAP2K6", "gears")
    with pytest.raises(DataError, match="'KLF1_MAP2K6' is not a gene symbol"):
        canonical_perturbation("KLF1_MAP2K6", "perturbench")
    with pytest.raises(DataError, match="unknown naming style"):
        canonical_perturbation("A", "seurat")


def test_target_genes():
    assert target_genes("control") == ()
    assert target_genes("A+B") == ("A", "B")


def test_log_normalise_matches_hand_computation():
    counts = np.array([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0], [5.0, 5.0, 10.0]])
    X = log_normalise(sp.csr_matrix(counts)).toarray()
    expected = np.array(
        [[np.log1p(2500.0), np.log1p(7500.0), 0.0], [0.0, 0.0, 0.0], [np.log1p(2500.0), np.log1p(2500.0), np.log1p(5000.0)]]
    )
    np.testing.assert_allclose(X, expected, rtol=1e-6)
    assert X.dtype == np.float32


def test_counts_detection():
    assert looks_like_counts(sp.csr_matrix(np.array([[0, 40, 3], [1, 0, 2]], dtype=float)))
    assert not looks_like_counts(sp.csr_matrix(np.array([[0, 2.3, 1.1]], dtype=float)))
    assert looks_like_counts(sp.csr_matrix(np.array([[0, 2, 1]], dtype=float)))
    assert not looks_like_counts(sp.csr_matrix(np.array([[0, 1, 1]], dtype=float)))  # binary: ambiguous -> not counts


def _screen(labels, X=None, genes=None):
    n = len(labels)
    X = np.ones((n, 3), dtype=np.float32) if X is None else X
    obs = pd.DataFrame({"condition": labels}, index=[f"c{i}" for i in range(n)])
    return ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=genes or ["a", "b", "c"]))


def test_make_canonical_counts_and_names():
    X = np.array([[10, 30, 0], [0, 50, 50], [100, 0, 0]], dtype=np.float32)
    out = make_canonical(_screen(["ctrl", "B+ctrl", "B+A"], X), "condition", "gears")
    assert out.obs["perturbation"].tolist() == ["control", "B", "A+B"]
    assert out.obs["n_targets"].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(out.layers["counts"].toarray(), X)
    np.testing.assert_allclose(out.X.toarray()[0, 0], np.log1p(2500), rtol=1e-6)


def test_missing_control_is_refused():
    with pytest.raises(DataError, match="no control cells"):
        make_canonical(_screen(["A", "B"]), "condition", "perturbench")


def test_missing_perturbation_column_is_refused():
    with pytest.raises(DataError, match="no column 'guide'"):
        make_canonical(_screen(["control", "A"]), "guide", "perturbench")


def test_nan_is_refused():
    X = np.ones((2, 3), dtype=np.float32)
    X[1, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        make_canonical(_screen(["control", "A"], X), "condition", "perturbench")


@pytest.mark.filterwarnings("ignore:Variable names are not unique")  # anndata's own notice about the input we refuse
def test_duplicate_genes_are_refused():
    with pytest.raises(DataError, match="not unique"):
        make_canonical(_screen(["control", "A"], genes=["a", "a", "c"]), "condition", "perturbench")


def test_validate_rejects_non_canonical_names(tiny_screen):
    validate(tiny_screen)
    bad = tiny_screen.copy()
    bad.obs["perturbation"] = bad.obs["perturbation"].astype(str).replace("A+B", "B+A")
    with pytest.raises(DataError, match="not canonical"):
        validate(bad)


def test_validate_requires_controls_in_every_context(tiny_screen):
    screen = tiny_screen.copy()
    screen.obs["context"] = ["K562"] * 4 + ["RPE1"] * 16
    with pytest.raises(DataError, match="RPE1"):
        validate(screen)


def test_expression_scale_tells_the_units_apart():
    import numpy as np
    import scipy.sparse as sp

    from helpers.data.canonical import MAX_LOG_NORMALISED, expression_scale, log_normalise

    rng = np.random.default_rng(0)
    counts = rng.poisson(3.0, size=(50, 40)).astype(np.float32)
    assert expression_scale(sp.csr_matrix(counts)) == "counts"
    assert expression_scale(log_normalise(counts)) == "log-normalised"
    normalised = counts / counts.sum(axis=1, keepdims=True) * 1e4  # normalised, not logged: up to hundreds
    assert normalised.max() > MAX_LOG_NORMALISED and expression_scale(normalised) == "not log-transformed"
    assert expression_scale(log_normalise(counts).toarray() - 1.0) == "negative"
    assert expression_scale(np.zeros((0, 3))) == "empty"
    assert MAX_LOG_NORMALISED == np.log1p(1e4)
