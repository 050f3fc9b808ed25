"""Train/validation/test splits over perturbations, each seeded and printable.

Three protocols are implemented:

* :func:`gears_simulation_split` — the GEARS ``simulation`` split (unseen genes), used for
  single perturbations by Ahlmann-Eltze et al. and by Systema;
* :func:`double_perturbation_split` — all singles and half of the doubles in training,
  the rest split into test and validation (Ahlmann-Eltze et al., double perturbations);
* :func:`kfold_split` — k folds over perturbations (Cole et al. 2026).

Control is never held out: every split keeps the control cells in training, because
every model needs them as the reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .canonical import CONTROL, DataError, canonical_perturbation, target_genes


@dataclass(frozen=True)
class Split:
    """Named lists of perturbations for training, validation and test.

    ``subgroups`` holds finer labels of the held-out perturbations (e.g. GEARS'
    ``combo_seen0``). ``control`` is not listed; it always belongs to training.
    """

    name: str
    seed: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    subgroups: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def evaluated(self) -> tuple[str, ...]:
        """Test and validation perturbations (the published benchmarks evaluate both)."""
        return self.test + self.val

    def counts(self) -> pd.DataFrame:
        """Number of single and double perturbations in each part."""
        rows = {}
        for part in ("train", "val", "test"):
            names = getattr(self, part)
            k = np.array([len(target_genes(p)) for p in names], dtype=int)
            rows[part] = {"singles": int((k == 1).sum()), "doubles": int((k == 2).sum()), "total": len(names)}
        return pd.DataFrame(rows).T.rename_axis(f"{self.name} split, seed {self.seed}")

    def labels(self) -> pd.Series:
        """Part of every perturbation (``control`` included, as ``train``)."""
        out = {CONTROL: "train"}
        for part in ("train", "val", "test"):
            out.update({p: part for p in getattr(self, part)})
        return pd.Series(out, name="split")

    def subset(self, adata, part: str | Sequence[str] = "train", include_control: bool = True):
        """Cells of the perturbations in ``part`` (plus control cells by default)."""
        parts = [part] if isinstance(part, str) else list(part)
        keep = set()
        for p in parts:
            if p not in ("train", "val", "test"):
                raise ValueError(f"part must be 'train', 'val' or 'test', not {p!r}")
            keep.update(getattr(self, p))
        if include_control:
            keep.add(CONTROL)
        mask = adata.obs["perturbation"].astype(str).isin(keep).to_numpy()
        return adata[mask].copy()

    def __str__(self) -> str:
        return self.counts().to_string()


def _perturbation_list(perturbations) -> list[str]:
    """Canonical non-control perturbation names from a list or a screen's ``obs``."""
    if hasattr(perturbations, "obs"):
        perturbations = perturbations.obs["perturbation"].astype(str).unique()
    names = []
    for p in perturbations:
        c = canonical_perturbation(p)
        if c != p:
            raise DataError(f"perturbation {p!r} is not a canonical name (expected {c!r}); load data with helpers.data.")
        if c != CONTROL:
            names.append(c)
    if len(set(names)) != len(names):
        raise DataError("perturbation list has duplicates")
    if not names:
        raise DataError("no perturbations to split (only control cells?)")
    return sorted(names)


def _genes_of(perts: Iterable[str]) -> np.ndarray:
    return np.unique([g for p in perts for g in target_genes(p)])


def _simulation_round(perts: list[str], train_gene_frac: float, combo_seen2_train_frac: float, seed: int):
    """One call of GEARS' ``DataSplitter.get_simulation_split`` on canonical names."""
    singles = [p for p in perts if len(target_genes(p)) == 1]
    combos = [p for p in perts if len(target_genes(p)) == 2]
    genes = _genes_of(perts)
    rng = np.random.RandomState(seed)
    train_genes = set(rng.choice(genes, int(len(genes) * train_gene_frac), replace=False).tolist())

    def n_seen(p):
        return sum(g in train_genes for g in target_genes(p))

    single_train = [p for p in singles if n_seen(p) == 1]
    single_test = [p for p in singles if n_seen(p) == 0]
    combo_seen0 = [p for p in combos if n_seen(p) == 0]
    combo_seen1 = [p for p in combos if n_seen(p) == 1]
    both_seen = np.array(sorted(p for p in combos if n_seen(p) == 2))
    rng = np.random.RandomState(seed)  # GEARS reseeds before drawing the combos
    combo_train = rng.choice(both_seen, int(len(both_seen) * combo_seen2_train_frac), replace=False).tolist() if len(both_seen) else []
    combo_seen2 = sorted(set(both_seen.tolist()) - set(combo_train))
    train = sorted(single_train + combo_train)
    test = sorted(single_test + combo_seen0 + combo_seen1 + combo_seen2)
    groups = {"unseen_single": single_test, "combo_seen0": combo_seen0, "combo_seen1": combo_seen1, "combo_seen2": combo_seen2}
    return train, test, groups


def gears_simulation_split(
    perturbations, seed: int = 1, train_gene_set_size: float = 0.75, combo_seen2_train_frac: float = 0.75
) -> Split:
    """GEARS ``prepare_split(split='simulation', seed=seed)``, re-implemented.

    1. Draw ``int(0.75 · n_genes)`` training genes (``np.random.seed(seed)``, no
       replacement, from the sorted unique target genes).
    2. Training: singles of training genes and 75 % of the doubles whose two genes are
       both training genes. Test: singles of unseen genes, doubles with 0 or 1 seen gene
       (``combo_seen0``, ``combo_seen1``) and the other 25 % of doubles with both seen
       (``combo_seen2``).
    3. Validation is carved out of training by the same procedure with (0.9, 0.9).

    For 81 singles (Adamson) and seed 1 this gives 54 / 6 / 21 perturbations.

    Parameters
    ----------
    perturbations
        Canonical perturbation names, or a screen whose ``obs['perturbation']`` is used.
    seed
        Random seed (the published benchmarks use 1 and 2; Systema 1–3).
    """
    perts = _perturbation_list(perturbations)
    train, test, test_groups = _simulation_round(perts, train_gene_set_size, combo_seen2_train_frac, seed)
    train, val, val_groups = _simulation_round(train, 0.9, 0.9, seed)
    subgroups = {f"test_{k}": tuple(v) for k, v in test_groups.items()}
    subgroups.update({f"val_{k}": tuple(v) for k, v in val_groups.items()})
    return Split("GEARS simulation", seed, tuple(train), tuple(val), tuple(test), subgroups)


def double_perturbation_split(perturbations, seed: int = 1) -> Split:
    """Split of the double-perturbation benchmark of Ahlmann-Eltze et al. (2025).

    ``np.random.seed(seed)``; all singles go to training; ``n//2`` of the ``n`` doubles
    (drawn without replacement from the sorted list) also go to training; of the rest,
    ``len(rest)//2`` are test and the others validation. Both test and validation are
    evaluated (62 doubles per seed for Norman 2019).
    """
    perts = _perturbation_list(perturbations)
    singles = [p for p in perts if len(target_genes(p)) == 1]
    doubles = np.array([p for p in perts if len(target_genes(p)) == 2])
    if len(doubles) < 2:
        raise DataError(f"the double-perturbation split needs at least 2 doubles, found {len(doubles)}")
    rng = np.random.RandomState(seed)
    double_train = rng.choice(doubles, size=len(doubles) // 2, replace=False)
    rest = np.array(sorted(set(doubles) - set(double_train)))
    double_test = rng.choice(rest, size=len(rest) // 2, replace=False).tolist()
    double_val = sorted(set(rest.tolist()) - set(double_test))
    return Split(
        "double perturbation",
        seed,
        tuple(sorted(singles + double_train.tolist())),
        tuple(double_val),
        tuple(sorted(double_test)),
    )


def kfold_split(perturbations, n_folds: int = 5, seed: int = 42) -> list[Split]:
    """K folds over perturbations: a seeded permutation cut into ``n_folds`` near-equal parts.

    Fold ``k`` tests the ``k``-th part and trains on the rest (``np.random.seed(seed)``,
    ``np.random.permutation``, ``np.array_split``, as in Cole et al. 2026). No validation
    part: inner cross-validation happens within the training perturbations.
    """
    perts = np.array(_perturbation_list(perturbations))
    if n_folds < 2 or n_folds > len(perts):
        raise DataError(f"n_folds must be between 2 and the number of perturbations ({len(perts)}), got {n_folds}")
    order = np.random.RandomState(seed).permutation(len(perts))
    parts = np.array_split(perts[order], n_folds)
    folds = []
    for k, test in enumerate(parts):
        train = np.concatenate([p for j, p in enumerate(parts) if j != k])
        folds.append(Split(f"fold {k}", seed, tuple(sorted(train)), (), tuple(sorted(test))))
    return folds
