import numpy as np
import pytest

from helpers.data import read_h5ad
from helpers.data.readers import detect_format, read_essential_deltas
from helpers.errors import DataError


@pytest.mark.parametrize("fmt", ["gears", "scperturb", "perturbench", "replogle"])
def test_every_format_reads_into_the_canonical_form(write_format, fmt):
    path = write_format(fmt)
    adata = read_h5ad(path)
    names = set(adata.obs["perturbation"])
    assert "control" in names and "A" in names and "B" in names
    if fmt != "replogle":
        assert "A+B" in names
    assert adata.var_names[0] == "GENE0"  # symbols, not Ensembl IDs
    assert adata.X.dtype == np.float32
    # log-normalised: expm1 of every cell sums to 1e4
    np.testing.assert_allclose(np.expm1(adata.X.toarray().astype(float)).sum(1), 1e4, rtol=1e-4)
    if fmt in ("scperturb", "replogle", "perturbench"):
        assert "counts" in adata.layers
        assert float(adata.layers["counts"].max()) > 1
    if fmt == "replogle":
        assert set(adata.obs["batch"]) == {"1", "2"}


def test_explicit_format_and_detection(write_format):
    import anndata as ad

    path = write_format("gears")
    assert detect_format(ad.read_h5ad(path)) == "gears"
    adata = read_h5ad(path, format="gears")
    assert adata.uns["gears_top_de_20"] == {"A": ["GENE1", "GENE2"]}


def test_canonical_files_round_trip(tiny_screen, tmp_path):
    path = tmp_path / "screen.h5ad"
    tiny_screen.write_h5ad(path)
    back = read_h5ad(path)
    np.testing.assert_array_equal(back.X.toarray(), tiny_screen.X.toarray())


def test_wrong_file_gives_clear_error(tmp_path):
    bad = tmp_path / "screen.h5ad"
    bad.write_text("perturbation,gene1\ncontrol,1\n")
    with pytest.raises(DataError, match="could not be read as an AnnData"):
        read_h5ad(bad)
    with pytest.raises(DataError, match="does not exist"):
        read_h5ad(tmp_path / "missing.h5ad")


def test_unrecognised_format(tmp_path):
    import anndata as ad
    import pandas as pd

    adata = ad.AnnData(X=np.ones((2, 2), dtype=np.float32), obs=pd.DataFrame({"guide": ["x", "y"]}, index=["a", "b"]))
    path = tmp_path / "x.h5ad"
    adata.write_h5ad(path)
    with pytest.raises(DataError, match="could not recognise"):
        read_h5ad(path)


def test_essential_deltas_reader(tmp_path):
    import anndata as ad
    import pandas as pd

    obs = pd.DataFrame({"gene": ["A", "B", "A"], "cell_line": ["K562", "K562", "RPE1"], "test_split": [0, 1, 0]}, index=["r0", "r1", "r2"])
    adata = ad.AnnData(X=np.arange(6, dtype=np.float32).reshape(3, 2), obs=obs, var=pd.DataFrame(index=["G1", "G2"]))
    path = tmp_path / "essential.h5ad"
    adata.write_h5ad(path)
    out = read_essential_deltas(path)
    assert out.obs["perturbation"].tolist() == ["A", "B", "A"]
    assert out.obs["context"].tolist() == ["K562", "K562", "RPE1"]
    assert out.obs["fold"].tolist() == [0, 1, 0]
    assert out.uns["kind"] == "changes"
    assert detect_format(adata) == "essential_deltas"


def test_essential_deltas_with_nan_are_refused(tmp_path):
    import anndata as ad
    import pandas as pd

    obs = pd.DataFrame({"gene": ["A", "B"], "cell_line": ["K562", "K562"], "test_split": [0, 1]}, index=["r0", "r1"])
    X = np.array([[1.0, np.nan], [0.0, 1.0]], dtype=np.float32)  # dense, as such files are written
    path = tmp_path / "essential.h5ad"
    ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=["G1", "G2"])).write_h5ad(path)
    with pytest.raises(DataError, match="contains 1 NaN or infinite values"):
        read_essential_deltas(path)
