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
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import DataError
from .canonical import CONTROL, canonical_perturbation, target_genes

if TYPE_CHECKING:
    from anndata import AnnData


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

    def subset(self, adata: AnnData, part: str | Sequence[str] = "train", include_control: bool = True) -> AnnData:
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


def _perturbation_list(perturbations: Iterable[str] | AnnData) -> list[str]:
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


def source_names(adata: AnnData) -> dict[str, str]:
    """Canonical name -> the name as the source file wrote it, for doubles written in another gene order.

    Readers record these in ``uns["source_names"]`` (e.g. ``{"KLF1+SET": "SET+KLF1"}``); a screen
    without the record (simulated, or every double already in canonical order) gives ``{}``.
    """
    names = adata.uns.get("source_names", {})
    return {str(k): str(v) for k, v in dict(names).items()}


def _genes_of(perts: Iterable[str]) -> np.ndarray:
    return np.unique([g for p in perts for g in target_genes(p)])


def _simulation_round(perts: list[str], train_gene_frac: float, combo_seen2_train_frac: float, seed: int):
    """One call of GEARS' ``DataSplitter.get_simulation_split`` on canonical names."""
    singles = [p for p in perts if len(target_genes(p)) == 1]
    combos = [p for p in perts if len(target_genes(p)) == 2]
    genes = _genes_of(perts)
    rng = np.random.RandomState(seed)
    train_genes = set(rng.choice(genes, int(len(genes) * train_gene_frac), replace=False).tolist())

    def n_seen(p: str) -> int:
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
    perturbations: Iterable[str] | AnnData, seed: int = 1, train_gene_set_size: float = 0.75, combo_seen2_train_frac: float = 0.75
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


def double_perturbation_split(perturbations: Iterable[str] | AnnData, seed: int = 1) -> Split:
    """Split of the double-perturbation benchmark of Ahlmann-Eltze et al. (2025).

    ``np.random.seed(seed)``; all singles go to training; ``n//2`` of the ``n`` doubles
    (drawn without replacement from the sorted list) also go to training; of the rest,
    ``len(rest)//2`` are test and the others validation. Both test and validation are
    evaluated (62 doubles per seed for Norman 2019).
    """
    perts = _perturbation_list(perturbations)
    source = source_names(perturbations) if hasattr(perturbations, "uns") else {}
    singles = [p for p in perts if len(target_genes(p)) == 1]
    # the published code draws from np.unique of the file's own names ("SET+KLF1" sorts after "SAMD1+...")
    doubles = np.array(sorted((p for p in perts if len(target_genes(p)) == 2), key=lambda p: source.get(p, p)))
    if len(doubles) < 2:
        raise DataError(f"the double-perturbation split needs at least 2 doubles, found {len(doubles)}")
    rng = np.random.RandomState(seed)
    double_train = rng.choice(doubles, size=len(doubles) // 2, replace=False)
    rest = np.array(sorted(set(doubles) - set(double_train), key=lambda p: source.get(p, p)))
    double_test = rng.choice(rest, size=len(rest) // 2, replace=False).tolist()
    double_val = sorted(set(rest.tolist()) - set(double_test))
    return Split(
        "double perturbation",
        seed,
        tuple(sorted(singles + double_train.tolist())),
        tuple(double_val),
        tuple(sorted(double_test)),
    )


def kfold_split(perturbations: Iterable[str] | AnnData, n_folds: int = 5, seed: int = 42) -> list[Split]:
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


# ---------------------------------------------------------------------------------------
# cross-context ("covariate transfer") split of PerturBench
# ---------------------------------------------------------------------------------------

#: Separates the perturbation from its context in a condition name (``"MAPK1@A172"``); not allowed in gene symbols.
CONTEXT_SEPARATOR = "@"


def condition_name(perturbation: str, context: str) -> str:
    """The name of a (perturbation, context) pair: ``"MAPK1@A172"``, ``"control@A172"``.

    Models that see covariates (cell lines) predict such names (see
    :class:`helpers.models.cell_models.ContextModel`); :func:`parse_condition` reverses it.
    """
    context = str(context)
    if CONTEXT_SEPARATOR in context or not context:
        raise DataError(f"context name {context!r} must be non-empty and must not contain {CONTEXT_SEPARATOR!r}.")
    c = canonical_perturbation(perturbation)
    if c != perturbation:
        raise DataError(f"perturbation {perturbation!r} is not a canonical name (expected {c!r}).")
    return f"{perturbation}{CONTEXT_SEPARATOR}{context}"


def parse_condition(name: str) -> tuple[str, str]:
    """``"MAPK1@A172"`` -> ``("MAPK1", "A172")``; a clear error for a name without a context."""
    text = str(name)
    pert, sep, context = text.rpartition(CONTEXT_SEPARATOR)
    if not sep or not pert or not context:
        raise DataError(
            f"{text!r} is not a condition name: expected 'perturbation{CONTEXT_SEPARATOR}context' (e.g. 'MAPK1@A172'); "
            "build one with helpers.data.splits.condition_name(perturbation, context)."
        )
    c = canonical_perturbation(pert)
    if c != pert:
        raise DataError(f"{text!r}: {pert!r} is not a canonical perturbation name (expected {c!r}).")
    return pert, context


@dataclass(frozen=True)
class TransferSplit:
    """Held-out (perturbation, context) pairs and a three-way split of the control cells.

    ``train``, ``val`` and ``test`` are tuples of ``(perturbation, context)``; ``dropped``
    holds held-out pairs left out of every part, with the reason (PerturBench drops the
    held-out pair of a context that would hold only one); ``controls`` maps each control
    cell's ``obs_name`` to ``"train"``, ``"val"`` or ``"test"``.
    """

    name: str
    seed: int
    train: tuple[tuple[str, str], ...]
    val: tuple[tuple[str, str], ...]
    test: tuple[tuple[str, str], ...]
    controls: pd.Series
    dropped: dict[tuple[str, str], str] = field(default_factory=dict)
    context_key: str = "context"

    def __post_init__(self):
        parts = {"train": set(self.train), "val": set(self.val), "test": set(self.test)}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            both = sorted(parts[a] & parts[b])
            if both:
                raise DataError(f"the transfer split puts pairs in both {a} and {b}: {both[:5]}; a held-out pair must never be trained on.")
        bad = sorted(set(self.controls.unique()) - {"train", "val", "test"})
        if bad:
            raise DataError(f"control cells must be 'train', 'val' or 'test', not {bad}.")

    @property
    def evaluated(self) -> tuple[tuple[str, str], ...]:
        """Test and validation pairs, sorted by context then perturbation."""
        return tuple(sorted(self.test + self.val, key=lambda pc: (pc[1], pc[0])))

    def conditions(self, part: str | Sequence[str] = ("test", "val")) -> list[str]:
        """Condition names (:func:`condition_name`) of the pairs of ``part``, sorted by context then perturbation."""
        parts = [part] if isinstance(part, str) else list(part)
        pairs = sorted((pc for p in parts for pc in getattr(self, p)), key=lambda pc: (pc[1], pc[0]))
        return [condition_name(p, c) for p, c in pairs]

    def cell_labels(self, adata: AnnData) -> pd.Series:
        """Part of every cell (``"train"``, ``"val"``, ``"test"``, or ``"none"`` for dropped pairs), indexed by obs_names."""
        perts = adata.obs["perturbation"].astype(str).to_numpy()
        contexts = adata.obs[self.context_key].astype(str).to_numpy()
        part_of = {pc: part for part in ("train", "val", "test") for pc in getattr(self, part)}
        labels = np.array([part_of.get((p, c), "none") for p, c in zip(perts, contexts)], dtype=object)
        is_control = perts == CONTROL
        if is_control.any():
            names = adata.obs_names[is_control]
            missing = names.difference(self.controls.index)
            if len(missing):
                raise DataError(
                    f"{len(missing)} control cells (e.g. {list(missing[:3])}) are not in this split; was it made for these data?"
                )
            labels[is_control] = self.controls.loc[names].to_numpy()
        return pd.Series(labels, index=adata.obs_names.copy(), name="split")

    def subset(self, adata: AnnData, part: str | Sequence[str] = "train", controls: bool = True) -> AnnData:
        """Cells of the pairs of ``part`` (and, by default, the control cells assigned to ``part``)."""
        parts = [part] if isinstance(part, str) else list(part)
        for p in parts:
            if p not in ("train", "val", "test"):
                raise ValueError(f"part must be 'train', 'val' or 'test', not {p!r}")
        labels = self.cell_labels(adata)
        keep = labels.isin(parts).to_numpy()
        if not controls:
            keep &= (adata.obs["perturbation"].astype(str) != CONTROL).to_numpy()
        return adata[keep].copy()

    def counts(self) -> pd.DataFrame:
        """Perturbations per context in each part, and control cells per part."""
        contexts = sorted({c for part in ("train", "val", "test") for _, c in getattr(self, part)} | {c for _, c in self.dropped})
        rows = {}
        for ctx in contexts:
            rows[ctx] = {part: sum(c == ctx for _, c in getattr(self, part)) for part in ("train", "val", "test")}
            rows[ctx]["dropped"] = sum(c == ctx for _, c in self.dropped)
        table = pd.DataFrame(rows).T
        table.index.name = f"{self.name} split, seed {self.seed}"
        ctrl = self.controls.value_counts()
        table.loc["control cells"] = [int(ctrl.get(p, 0)) for p in ("train", "val", "test")] + [0]
        return table.astype(int)


def transfer_split(
    adata: AnnData,
    seed: int = 54,
    max_heldout_fraction_per_covariate: float = 0.3,
    min_train_covariates: int = 1,
    max_heldout_covariates: int = 2,
    max_heldout_perturbations_per_covariate: int = 200,
    train_control_fraction: float = 0.5,
    test_fraction: float = 0.5,
    context_key: str = "context",
) -> TransferSplit:
    """PerturBench's covariate-transfer split (``PerturbationDataSplitter.split_covariates``), re-implemented.

    Each perturbation is held out in some contexts (cell lines) and kept in at least
    ``min_train_covariates`` others, so a model must transfer its effect from the lines
    where it was measured:

    1. Capacity of context :math:`k`: ``min(f · n_k, max_heldout_perturbations_per_covariate)``
       with :math:`f` = ``max_heldout_fraction_per_covariate`` and :math:`n_k` the number of
       distinct perturbation labels of :math:`k` — control included, as in PerturBench's
       code (``nunique`` over all labels).
    2. Perturbations in order of how many contexts they were measured in (most first;
       ties in name order). Seeds ``np.random.RandomState(seed).randint(100000)``, one per
       perturbation. For a perturbation measured in more than ``min_train_covariates``
       contexts, the pool is its contexts still below capacity; with Python's
       ``random.seed(seed_i)`` it draws ``randint(1, max(len(pool) − n_contexts +
       max_heldout_covariates, 1))`` of them (``random.sample``) to hold out.
    3. A context with a single held-out pair loses it (it is in no part: ``dropped``); the
       others are split into validation and test, stratified by context
       (``sklearn.model_selection.train_test_split(test_size=test_fraction, random_state=seed)``).
    4. Control cells, in the order of ``obs``, are shuffled with ``random.seed(seed)``
       (``random.sample``) and cut into ``train_control_fraction`` for training and the rest
       halved into validation and test (50/25/25 by default), over all contexts at once.

    Contexts are ordered by first appearance in ``obs`` (PerturBench's ``drop_duplicates``).

    Parameters
    ----------
    adata
        Canonical screen with ``obs[context_key]`` (e.g. the cell line).
    seed
        PerturBench's ``splitter_seed``.

    Returns
    -------
    TransferSplit
    """
    import random

    from sklearn.model_selection import train_test_split

    if context_key not in adata.obs:
        raise DataError(f"the transfer split needs obs[{context_key!r}] (the cell line of every cell); the screen has none.")
    if not 0 < max_heldout_fraction_per_covariate <= 1:
        raise DataError(f"max_heldout_fraction_per_covariate must be in (0, 1], got {max_heldout_fraction_per_covariate}")
    if not 0 < train_control_fraction < 1 or not 0 < test_fraction < 1:
        raise DataError("train_control_fraction and test_fraction must be between 0 and 1 (exclusive).")
    if min_train_covariates < 1 or max_heldout_covariates < 1:
        raise DataError("min_train_covariates and max_heldout_covariates must be at least 1.")
    obs = pd.DataFrame(
        {"perturbation": adata.obs["perturbation"].astype(str).to_numpy(), "context": adata.obs[context_key].astype(str).to_numpy()},
        index=adata.obs_names.copy(),
    )
    bad = sorted({c for c in obs["context"].unique() if CONTEXT_SEPARATOR in c or not c})
    if bad:
        raise DataError(f"context names {bad} are empty or contain {CONTEXT_SEPARATOR!r}; rename them first.")
    for p in obs["perturbation"].unique():
        if canonical_perturbation(p) != p:
            raise DataError(f"perturbation {p!r} is not a canonical name; load data with helpers.data.")
    if not (obs["perturbation"] == CONTROL).any():
        raise DataError("the transfer split needs control cells.")
    capacity = {
        ctx: min(max_heldout_fraction_per_covariate * frame["perturbation"].nunique(), max_heldout_perturbations_per_covariate)
        for ctx, frame in obs.groupby("context", sort=True)
    }
    perturbed = obs[obs["perturbation"] != CONTROL]
    contexts_of = {p: list(frame["context"].drop_duplicates()) for p, frame in perturbed.groupby("perturbation", sort=True)}
    order = sorted(contexts_of, key=lambda p: len(contexts_of[p]), reverse=True)  # stable: name order among ties
    rng = np.random.RandomState(seed)
    seeds = [rng.randint(100000) for _ in order]
    n_total = len(capacity)
    held = {ctx: 0 for ctx in capacity}
    train_pairs, heldout_pairs = [], []
    for i, pert in enumerate(order):
        contexts = contexts_of[pert]
        sampled = []
        if len(contexts) > min_train_covariates:
            pool = [c for c in contexts if held[c] < capacity[c]]
            if pool:
                draw = random.Random(int(seeds[i]))
                n = draw.randint(1, max(len(pool) - n_total + max_heldout_covariates, 1))
                sampled = draw.sample(pool, n)
                for c in sampled:
                    held[c] += 1
                heldout_pairs += [(pert, c) for c in sampled]
        train_pairs += [(pert, c) for c in contexts if c not in sampled]
    per_context = pd.Series([c for _, c in heldout_pairs], dtype=object).value_counts()
    dropped = {
        pc: "the only held-out pair of its context (PerturBench drops it: no stratified val/test split)"
        for pc in heldout_pairs
        if per_context[pc[1]] < 2
    }
    kept = [pc for pc in heldout_pairs if pc not in dropped]
    if len(kept) < 2:
        raise DataError(
            f"the transfer split holds out {len(kept)} usable (perturbation, context) pairs; raise "
            "max_heldout_fraction_per_covariate or use a screen with more perturbations per context."
        )
    val, test = train_test_split(kept, stratify=[c for _, c in kept], test_size=test_fraction, random_state=seed)
    controls = list(obs.index[obs["perturbation"] == CONTROL])
    shuffled = random.Random(seed).sample(controls, k=len(controls))
    n = len(shuffled)
    cut1 = int(train_control_fraction * n)
    cut2 = int(((1 - train_control_fraction) / 2 + train_control_fraction) * n)
    parts = ["train"] * cut1 + ["val"] * (cut2 - cut1) + ["test"] * (n - cut2)
    control_parts = pd.Series(parts, index=pd.Index(shuffled), name="split").loc[controls]
    key = lambda pc: (pc[1], pc[0])  # noqa: E731
    return TransferSplit(
        "transfer",
        seed,
        tuple(sorted(train_pairs, key=key)),
        tuple(sorted((tuple(v) for v in val), key=key)),
        tuple(sorted((tuple(t) for t in test), key=key)),
        control_parts,
        dropped,
        context_key,
    )
