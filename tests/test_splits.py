import numpy as np
import pandas as pd
import pytest

from helpers.data import double_perturbation_split, gears_simulation_split, kfold_split
from helpers.data.canonical import target_genes
from helpers.errors import DataError


def _singles(n):
    return [f"G{i:04d}" for i in range(n)]


@pytest.mark.parametrize(
    "n, expected",
    [(81, (54, 6, 21)), (1087, (733, 82, 272)), (1534, (1035, 115, 384))],
)
def test_gears_simulation_split_sizes_match_the_published_counts(n, expected):
    # METHODS.md section 0: Adamson 54/6/21, K562 733/82/272, RPE1 1035/115/384 (seed 1)
    split = gears_simulation_split(_singles(n), seed=1)
    assert (len(split.train), len(split.val), len(split.test)) == expected


def test_gears_split_is_a_partition_with_unseen_genes():
    perts = _singles(40) + [f"G{i:04d}+G{i + 1:04d}" for i in range(0, 38, 2)]
    split = gears_simulation_split(perts, seed=3)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert set().union(*parts) == set(perts)
    assert sum(len(p) for p in parts) == len(perts)
    train_genes = {g for p in split.train for g in target_genes(p)}
    for p in split.subgroups["test_unseen_single"]:
        assert p not in train_genes
    for p in split.subgroups["test_combo_seen0"]:
        assert not any(g in train_genes for g in target_genes(p))
    for p in split.subgroups["test_combo_seen1"]:
        # seen = among the genes chosen for training in the first round (val is carved out later)
        assert len(target_genes(p)) == 2


def test_splits_are_deterministic_and_depend_on_the_seed():
    perts = _singles(200)
    a, b, c = gears_simulation_split(perts, 1), gears_simulation_split(perts[::-1], 1), gears_simulation_split(perts, 2)
    assert a == b  # input order does not matter
    assert a.test != c.test


def test_double_perturbation_split_counts():
    singles = _singles(100)
    doubles = [f"{a}+{b}" for a, b in zip(singles[:124], singles[1:125])][:99] + [f"G{i:04d}+H{i:04d}" for i in range(25)]
    assert len(doubles) == 124
    split = double_perturbation_split(singles + doubles, seed=1)
    counts = split.counts()
    assert counts.loc["train", "singles"] == 100
    assert counts.loc["train", "doubles"] == 62
    assert counts.loc["test", "doubles"] == 31 and counts.loc["val", "doubles"] == 31
    assert len(split.evaluated) == 62
    assert all(type(p) is str for p in split.train + split.val + split.test)
    assert split == double_perturbation_split(singles + doubles, seed=1)
    assert split.test != double_perturbation_split(singles + doubles, seed=2).test


def test_kfold_split_partitions_every_perturbation_once():
    perts = _singles(23)
    folds = kfold_split(perts, n_folds=5, seed=42)
    tested = [p for f in folds for p in f.test]
    assert sorted(tested) == perts
    assert [len(f.test) for f in folds] == [5, 5, 5, 4, 4]
    for f in folds:
        assert not set(f.train) & set(f.test)
    # the published recipe: np.random.seed(42); permutation; array_split
    np.random.seed(42)
    order = np.random.permutation(len(perts))
    assert sorted(np.array_split(np.array(perts)[order], 5)[0]) == list(folds[0].test)


def test_split_subset_keeps_control(tiny_screen):
    split = double_perturbation_split(["A", "B", "C", "A+B", "A+C"], seed=1)
    train = split.subset(tiny_screen, "train")
    assert "control" in set(train.obs["perturbation"])
    assert set(train.obs["perturbation"]) - {"control"} <= set(split.train)


def test_bad_split_inputs():
    with pytest.raises(DataError):
        double_perturbation_split(["A", "B"], seed=1)
    with pytest.raises(DataError, match="canonical"):
        gears_simulation_split(["B+A"], seed=1)
    with pytest.raises(DataError, match="n_folds"):
        kfold_split(["A", "B"], n_folds=5)


def _published_double_draw(source_doubles: list[str], seed: int) -> tuple[set[str], set[str]]:
    """Ahlmann-Eltze et al.'s prepare_perturbation_data.py on the file's own names (np.unique, np.setdiff1d)."""
    np.random.seed(seed)
    double_pert = np.unique(source_doubles)
    train = np.random.choice(double_pert, size=len(double_pert) // 2, replace=False)
    rest = np.setdiff1d(double_pert, train)
    test = np.random.choice(rest, size=len(rest) // 2, replace=False)
    return set(train.tolist()), set(test.tolist())


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_double_split_draws_the_published_doubles_on_unsorted_names(seed):
    import anndata as ad
    import scipy.sparse as sp

    from helpers.data.canonical import canonical_perturbation, make_canonical

    singles = ["KLF1", "SET", "ZBTB10", "PTPN12", "SAMD1", "CEBPE", "MAPK1", "BPGM"]
    source_doubles = ["SET+KLF1", "ZBTB10+PTPN12", "SAMD1+PTPN12", "BPGM+SAMD1", "CEBPE+KLF1", "MAPK1+BPGM", "KLF1+MAPK1", "SET+CEBPE"]
    labels = ["ctrl"] * 3 + singles + source_doubles
    screen = ad.AnnData(
        sp.csr_matrix(np.ones((len(labels), 2))), obs=pd.DataFrame({"condition": labels}, index=[f"c{i}" for i in range(len(labels))])
    )
    canonical = make_canonical(screen, "condition", "canonical")
    split = double_perturbation_split(canonical, seed)
    train, test = _published_double_draw(source_doubles, seed)
    to_canonical = {s: canonical_perturbation(s) for s in source_doubles}
    assert {p for p in split.train if "+" in p} == {to_canonical[s] for s in train}
    assert set(split.test) == {to_canonical[s] for s in test}
    # on the canonical names alone (the suite's earlier behaviour) the draw differs for some seed
    if seed == 1:
        names = [p for p in canonical.obs["perturbation"].unique() if p != "control"]
        assert any(double_perturbation_split(names, s).test != double_perturbation_split(canonical, s).test for s in range(1, 6))
