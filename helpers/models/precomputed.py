"""Predictions the project made ahead of time, with their provenance, checked against every run.

GEARS needs an environment of its own (1.8 GB) and minutes of CPU per dataset, so the book
does not train it: ``scripts/make_gears_predictions.py`` trains it on the chapters' own
splits and seeds and ships its predictions in ``data/gears/``, one pair of files per
chapter, dataset and split seed::

    data/gears/<chapter>/<dataset>/seed<k>.h5ad   perturbations x genes, float32 (GEARS' own precision), gzip
    data/gears/<chapter>/<dataset>/seed<k>.json   the provenance record

The record (:data:`FORMAT`) says how the predictions were made (GEARS version and pins,
hyperparameters, seed, split, the suite's commit, wall time, machine) and what they were made
for: the genes GEARS was trained on, the split, and a **fingerprint** of the screen
(:func:`profile_fingerprint`): per condition, its number of cells, the mean of its profile
over the genes and a signed sketch :math:`s_p = \\sum_g w_g x_{pg} / \\sqrt{G}` with fixed
gene weights :math:`w_g \\in [-1, 1]` derived from the gene symbol (:func:`gene_weights`).

:class:`PrecomputedPredictions` is a model of the suite that serves such a file. Its ``fit``
receives the training data the run gives GEARS and refuses the file, naming the reason,
unless they are what GEARS was trained on: the same genes, the same training perturbations,
and every training condition with the same cell count and, within :data:`FINGERPRINT_RTOL`,
the same mean and sketch. The engine records a refused file as the model's failure, so a
chapter leaves GEARS out with that reason and goes on. A change of the screen (a new
simulator version, another file under the same name) therefore shows as "the data differ",
and ``python scripts/make_gears_predictions.py --status`` lists the stale files.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import pandas as pd

from ..data.canonical import CONTROL
from ..errors import DataError, ParameterError
from ..resources import data_dir
from .base import ModelTags, PerturbationModel

if TYPE_CHECKING:
    from anndata import AnnData

#: Version of the provenance record's layout; a record of another version is refused.
#: 2: the record says how many predicted values were clipped at 0 (``clipped``).
FORMAT = 2
#: The script that makes the files (named in every record and on the book's pages).
MADE_BY = "scripts/make_gears_predictions.py"
#: Relative tolerance on a condition's mean and sketch. Two routes to the same pseudobulk
#: (all cells of the screen, or the training cells only) differ in the last bits (~1e-15);
#: a changed screen moves them by orders of magnitude more (different cells: > 1e-4).
FINGERPRINT_RTOL = 1e-7
#: Absolute floor of that tolerance, for means and sketches near zero.
FINGERPRINT_ATOL = 1e-9


class PrecomputedMismatch(DataError):
    """A precomputed predictions file was made for other data, genes, split or settings than this run."""


class PrecomputedMissing(PrecomputedMismatch):
    """No precomputed predictions file was made for this chapter, dataset and seed."""


def precomputed_dir() -> Path:
    """The folder of the shipped precomputed predictions: ``data/gears`` (package data when installed)."""
    return data_dir() / "gears"


def precomputed_files(chapter: str, dataset: str, seed: int, directory: str | Path | None = None) -> tuple[Path, Path]:
    """The predictions file and the provenance record of one chapter, dataset and split seed."""
    folder = Path(directory) if directory is not None else precomputed_dir()
    base = folder / str(chapter) / str(dataset) / f"seed{int(seed)}"
    return base.with_suffix(".h5ad"), base.with_suffix(".json")


def shipped_records(directory: str | Path | None = None) -> list[Path]:
    """Every provenance record under ``directory`` (default :func:`precomputed_dir`), sorted."""
    folder = Path(directory) if directory is not None else precomputed_dir()
    return sorted(folder.glob("*/*/seed*.json")) if folder.exists() else []


# ---------------------------------------------------------------------------------------
# the fingerprint of a screen
# ---------------------------------------------------------------------------------------


def gene_weights(genes: Iterable[str]) -> np.ndarray:
    """Fixed weights in [-1, 1], one per gene, from the symbol alone: :math:`w_g = 2\\,\\mathrm{crc32}(g) / 2^{32} - 1`.

    They depend on nothing but the name, so the sketch of a profile does not depend on the
    order of the genes or on which other genes are measured.
    """
    return np.array([2.0 * zlib.crc32(str(g).encode()) / 2**32 - 1.0 for g in genes])


def genes_sha256(genes: Iterable[str]) -> str:
    """SHA-256 of the gene symbols in order, one per line (identifies a gene list exactly)."""
    return hashlib.sha256("\n".join(map(str, genes)).encode()).hexdigest()


def profile_fingerprint(profiles: pd.DataFrame, n_cells: Mapping[str, int] | pd.Series) -> dict[str, list]:
    """Per condition: ``[cells, mean, sketch]`` of its profile on the genes of ``profiles``.

    ``mean`` = :math:`\\bar x_p = \\frac1G \\sum_g x_{pg}`; ``sketch`` =
    :math:`s_p = \\frac{1}{\\sqrt G} \\sum_g w_g x_{pg}` with :func:`gene_weights`.
    Any change of a condition's cells changes its mean and its sketch; a change confined
    to genes with opposite weights would have to cancel in both to go unnoticed.
    """
    X = profiles.to_numpy(dtype=np.float64)
    w = gene_weights(profiles.columns)
    means = X.mean(axis=1)
    sketch = X @ w / np.sqrt(max(X.shape[1], 1))
    cells = pd.Series(n_cells)
    missing = [p for p in profiles.index if p not in cells.index]
    if missing:
        raise DataError(f"no cell counts for {missing[:3]}")
    return {str(p): [int(cells[p]), float(m), float(s)] for p, m, s in zip(profiles.index, means, sketch)}


def fingerprint_differences(recorded: Mapping[str, Sequence], current: Mapping[str, Sequence]) -> list[str]:
    """The conditions of ``current`` whose cells, mean or sketch differ from ``recorded`` (one line each)."""
    out = []
    for p, (cells, mean, sketch) in current.items():
        if p not in recorded:
            out.append(f"{p}: not in the recorded screen")
            continue
        r_cells, r_mean, r_sketch = recorded[p]
        if int(r_cells) != int(cells):
            out.append(f"{p}: {cells} cells, recorded {r_cells}")
        elif not (
            np.isclose(mean, r_mean, rtol=FINGERPRINT_RTOL, atol=FINGERPRINT_ATOL)
            and np.isclose(sketch, r_sketch, rtol=FINGERPRINT_RTOL, atol=FINGERPRINT_ATOL)
        ):
            out.append(f"{p}: profile mean {mean:.6g} and sketch {sketch:.6g}, recorded {r_mean:.6g} and {r_sketch:.6g}")
    return out


def pseudobulk_fingerprint(pseudobulk: AnnData, genes: Sequence[str] | None = None) -> dict[str, list]:
    """:func:`profile_fingerprint` of a pseudobulk AnnData (``obs['n_cells']``), on ``genes`` (default: all)."""
    frame = pd.DataFrame(np.asarray(pseudobulk.X), index=pseudobulk.obs_names.astype(str), columns=pseudobulk.var_names.astype(str))
    if genes is not None:
        frame = frame[list(genes)]
    return profile_fingerprint(frame, pd.Series(pseudobulk.obs["n_cells"].to_numpy(), index=frame.index))


# ---------------------------------------------------------------------------------------
# provenance records
# ---------------------------------------------------------------------------------------

#: Keys every record has.
RECORD_KEYS = (
    "format",
    "model",
    "chapter",
    "dataset",
    "seed",
    "made_by",
    "made_on",
    "suite",
    "gears",
    "hyperparameters",
    "wall_seconds",
    "machine",
    "split",
    "predicted",
    "excluded",
    "genes",
    "dataset_fingerprint",
    "clipped",
    "predictions_file",
    "predictions_sha256",
)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_provenance(path: str | Path) -> dict[str, Any]:
    """Read and check a provenance record; :class:`DataError` names what is wrong with it."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the provenance record {path}: {err}") from err
    if not isinstance(record, dict):
        raise DataError(f"{path} is not a provenance record (a JSON object).")
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise DataError(f"the provenance record {path} lacks {missing}; regenerate it with `python {MADE_BY}`.")
    if record["format"] != FORMAT:
        raise DataError(f"the provenance record {path} has format {record['format']}, this suite reads format {FORMAT}; regenerate it.")
    return record


def write_precomputed(
    predictions: pd.DataFrame, record: Mapping[str, Any], chapter: str, dataset: str, seed: int, directory: str | Path | None = None
) -> tuple[Path, Path]:
    """Write one predictions file (an ``.h5ad``: float32 ``X``, gzip) and its provenance record; returns both paths.

    An ``.h5ad`` is one of the layouts of :func:`helpers.models.external.read_predictions`
    (``obs_names`` = perturbations, ``var_names`` = genes) and, gzip-compressed, about 4
    bytes per value: a tenth of a parquet file, which stores every gene as a column.

    ``record`` holds every key of :data:`RECORD_KEYS` except the file's name and hash and
    ``clipped``, which are filled in here.

    Log-normalised expression cannot be negative, and the predictions reader refuses negative
    values; GEARS' output (control plus a predicted change) is unconstrained, and on genes
    that are silent in control it is often below 0 (real Norman subset, seed 1: 1,533 of the
    4,000 values, down to -0.27, nine in ten of them on the 397 genes with a zero control
    mean). They are written as
    :math:`\\max(\\hat x, 0)` (:func:`clip_predictions`) and the record's ``clipped`` says how
    many values were clipped, in how many perturbations, and the minimum before clipping, so
    that the chapters' provenance tables show it.
    """
    pred_path, record_path = precomputed_files(chapter, dataset, seed, directory)
    pred_path.parent.mkdir(parents=True, exist_ok=True)
    values = predictions.to_numpy(dtype=np.float64)
    as32 = values.astype(np.float32)
    if not np.array_equal(as32.astype(np.float64), values):
        raise DataError("the predictions are not float32 values; GEARS predicts in float32, anything else would be rounded here.")
    clipped_frame, clipped = clip_predictions(predictions)
    as32 = clipped_frame.to_numpy(dtype=np.float32)
    import anndata as ad

    table = ad.AnnData(as32)
    table.obs_names = pd.Index(predictions.index.astype(str), name="perturbation")
    table.var_names = pd.Index(predictions.columns.astype(str), name="gene")
    table.write_h5ad(pred_path, compression="gzip")
    full = {**record, "clipped": clipped, "predictions_file": pred_path.name, "predictions_sha256": file_sha256(pred_path)}
    missing = [k for k in RECORD_KEYS if k not in full]
    if missing:
        raise ValueError(f"the provenance record lacks {missing}")
    record_path.write_text(json.dumps(full, indent=1, ensure_ascii=False) + "\n")
    return pred_path, record_path


def clip_predictions(predictions: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``predictions`` clipped at 0, :math:`\\max(\\hat x_{pg}, 0)`, and what was clipped.

    Returns the clipped table and ``{"values", "perturbations", "minimum"}``: the number of
    negative values set to 0, the number of rows that had any, and the smallest value before
    clipping (0.0 when none was negative).
    """
    values = predictions.to_numpy(dtype=np.float64)
    negative = values < 0
    info = {
        "values": int(negative.sum()),
        "perturbations": int(negative.any(axis=1).sum()),
        "minimum": float(values.min()) if negative.any() else 0.0,
    }
    out = predictions.clip(lower=0.0) if negative.any() else predictions.copy()
    return out, info


def clipped_note(record: Mapping[str, Any]) -> str:
    """What the record says was clipped: ``"14 negative values (in 3 perturbations; minimum -0.000304) clipped at 0"``, or ``"none clipped"``."""
    c = record["clipped"]
    if not c["values"]:
        return "no negative values, none clipped"
    return f"{c['values']} negative value{'s' if c['values'] != 1 else ''} (in {c['perturbations']} perturbation{'s' if c['perturbations'] != 1 else ''}; minimum {c['minimum']:.3g}) clipped at 0"


def made_on_date(record: Mapping[str, Any]) -> str:
    """The date (YYYY-MM-DD) the record's predictions were made."""
    return str(record["made_on"])[:10]


def provenance_line(record: Mapping[str, Any]) -> str:
    """One line: ``precomputed by <script>, <date>`` and what was trained, where and how long."""
    hp = record["hyperparameters"]
    wall = record["wall_seconds"]
    commit = str(record["suite"].get("commit") or "unknown")[:10]
    dirty = " + local changes" if record["suite"].get("dirty") else ""
    return (
        f"precomputed by {record['made_by']}, {made_on_date(record)} ({record['gears']['package']}, {hp['epochs']} epochs, "
        f"seed {record['seed']}; suite commit {commit}{dirty}; fit + predict {wall['fit'] + wall['predict']:.0f} s on "
        f"{record['machine'].get('cpu', 'an unknown CPU')})"
    )


# ---------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------


class PrecomputedPredictions(PerturbationModel):
    """Serve shipped predictions (:func:`precomputed_files`) after checking that they fit this run.

    ``fit(train)`` takes the pseudobulk of the training data the run would give the live
    model and refuses the file (:class:`PrecomputedMismatch`, with the reason) if it was
    made for other genes, another split or other data, or with other settings. It then
    serves the file's rows like :class:`helpers.models.external.PredictionsFile`; the
    perturbations the live model could not predict are unpredictable here with the live
    model's own reason.

    Not tagged ``external``: a refused file is recorded by the engine as this model's
    failure (the chapter leaves it out with the reason), not raised as an input error.

    Parameters
    ----------
    chapter, dataset, seed
        Which file: the chapter (``double_perturbations``, ``unseen_perturbations``), the
        dataset's name in the chapter's tables, and the split seed.
    name
        The model's name in the tables (the live model's name, ``"GEARS"``).
    epochs
        The training epochs the run asks for; a file made with other epochs is refused.
    directory
        Where the files are (default :func:`precomputed_dir`).

    Attributes
    ----------
    provenance_ : dict
        The provenance record.
    table_ : pandas.DataFrame
        The predictions on the training genes.
    genes_ : pandas.Index
        The genes.
    """

    name = "GEARS"
    _tags = ModelTags(training_data="pseudobulk")

    def __init__(
        self, chapter: str, dataset: str, seed: int, name: str = "GEARS", epochs: int | None = None, directory: str | Path | None = None
    ):
        self.chapter = chapter
        self.dataset = dataset
        self.seed = seed
        self.name = name
        self.epochs = epochs
        self.directory = directory

    def _files(self) -> tuple[Path, Path]:
        return precomputed_files(self.chapter, self.dataset, self.seed, self.directory)

    def _refuse(self, record: Mapping[str, Any] | None, why: str) -> PrecomputedMismatch:
        made = f" (made {made_on_date(record)})" if record is not None else ""
        return PrecomputedMismatch(
            f"precomputed {self.name} predictions for {self.dataset}, seed {self.seed}{made} refused: {why} "
            f'Set gears = "live" to train {self.name} in this run.'
        )

    def check(self, train: AnnData) -> dict[str, Any]:
        """The provenance record, if the file was made for exactly this training data; else :class:`PrecomputedMismatch`."""
        from ..data.pseudobulk import pseudobulk

        pred_path, record_path = self._files()
        if not record_path.exists() or not pred_path.exists():
            seeds: dict[str, list[int]] = {}
            for p in shipped_records(self.directory):
                if p.parts[-3] == self.chapter:
                    seeds.setdefault(p.parent.name, []).append(int(p.stem[4:]))
            shipped = [f"{d} (seed{'s' if len(v) > 1 else ''} {', '.join(map(str, sorted(v)))})" for d, v in sorted(seeds.items())]
            folder = Path(self.directory) if self.directory is not None else precomputed_dir()
            where = f"{folder.name}/{record_path.relative_to(folder)}"
            raise PrecomputedMissing(
                f"no precomputed {self.name} predictions for {self.dataset}, seed {self.seed} ({where} does not exist; "
                f"shipped for this chapter: {', '.join(shipped) or 'none'}); make them with "
                f'`python {MADE_BY} --dataset {self.dataset} --seeds {self.seed}`, or set gears = "live" to train '
                f"{self.name} in this run."
            )
        try:
            record = read_provenance(record_path)
        except DataError as err:  # unreadable, or another format: refused like any other mismatch
            raise self._refuse(None, str(err)) from err
        if (record["chapter"], record["dataset"], int(record["seed"])) != (self.chapter, self.dataset, int(self.seed)):
            raise self._refuse(
                record,
                f"the record says it was made for {record['chapter']}, {record['dataset']}, seed {record['seed']} "
                "(a file in the wrong place).",
            )
        if file_sha256(pred_path) != record["predictions_sha256"]:
            raise self._refuse(record, f"{pred_path.name} is not the file its record describes (SHA-256 differs).")
        if self.epochs is not None and int(record["hyperparameters"]["epochs"]) != int(self.epochs):
            raise self._refuse(record, f"made with {record['hyperparameters']['epochs']} training epochs, this run asks for {self.epochs}.")
        pb = pseudobulk(train)
        genes = [str(g) for g in pb.var_names]
        made_genes = list(record["genes"])
        if set(genes) != set(made_genes):
            extra = [g for g in genes if g not in set(made_genes)]
            lacking = [g for g in made_genes if g not in set(genes)]
            parts = ([f"{len(extra)} not among the file's genes, e.g. {', '.join(extra[:3])}"] if extra else []) + (
                [f"{len(lacking)} of the file's genes absent, e.g. {', '.join(lacking[:3])}"] if lacking else []
            )
            raise self._refuse(
                record,
                f"made for {record['model']} trained on {len(made_genes)} genes, this run trains it on {len(genes)} "
                f"({'; '.join(parts)}): the gene set differs (was n_genes changed?).",
            )
        conditions = [str(p) for p in pb.obs_names]
        if CONTROL not in conditions:
            raise self._refuse(record, "the training data have no control cells.")
        made_train = set(record["split"]["train"])
        now_train = {p for p in conditions if p != CONTROL}
        if now_train != made_train:
            new, gone = sorted(now_train - made_train), sorted(made_train - now_train)
            parts = ([f"{len(new)} not in that split, e.g. {', '.join(new[:3])}"] if new else []) + (
                [f"{len(gone)} of its training perturbations missing, e.g. {', '.join(gone[:3])}"] if gone else []
            )
            raise self._refuse(
                record,
                f"made for the {record['split']['name']} split with seed {record['split']['seed']} "
                f"({len(made_train)} training perturbations); this run trains on {len(now_train)} "
                f"({'; '.join(parts)}): the split differs (another seed or another screen).",
            )
        differences = fingerprint_differences(record["dataset_fingerprint"], pseudobulk_fingerprint(pb, made_genes))
        if differences:
            raise self._refuse(
                record,
                f"the training data differ from those {record['model']} was trained on: {len(differences)} of the "
                f"{len(conditions)} training conditions changed (e.g. {'; '.join(differences[:2])}). The screen "
                f"changed since the file was made (e.g. a new simulator version); regenerate it with "
                f"`python {MADE_BY} --dataset {self.dataset}`.",
            )
        return record

    def fit(self, train: AnnData) -> Self:
        from .external import read_predictions

        record = self.check(train)
        pred_path, _ = self._files()
        table = read_predictions(pred_path)
        genes = pd.Index([str(g) for g in train.var_names])
        self.provenance_ = record
        self.table_ = table[genes]
        self.excluded_ = dict(record["excluded"])
        self.genes_ = genes
        return self

    def unpredictable(self, perturbations: Sequence[str]) -> dict[str, str]:
        self._check_fitted()
        out = {}
        for p in perturbations:
            if p in self.excluded_:
                out[p] = self.excluded_[p]
            elif p not in self.table_.index:
                out[p] = f"not among the {len(self.table_)} perturbations {self.name} was asked for when the file was made"
        return out

    def _predict(self, perturbations: list[str]) -> pd.DataFrame:
        return self.table_.loc[list(perturbations)].copy()


#: Values of a chapter's ``gears`` parameter.
GEARS_MODES = ("precomputed", "live", "off")


def with_gears(models: Sequence[str], gears: str | None, name: str = "GEARS") -> list[str]:
    """The chapter's model list with GEARS added as its ``gears`` parameter says.

    ``"precomputed"`` and ``"live"`` add ``name``, ``"off"`` adds nothing, ``None`` keeps
    ``models`` as given. ``name`` listed in ``models`` means the live model, so it is refused
    unless ``gears="live"`` (or None): a reader who lists it expects it trained.
    """
    models = list(models)
    if gears is None:
        return models
    if gears not in GEARS_MODES:
        raise ParameterError(f"gears = {gears!r}: choose one of {list(GEARS_MODES)}.")
    if name in models and gears != "live":
        raise ParameterError(
            f'models lists "{name}", which trains {name} in this run, but gears = "{gears}". Set gears = "live" to train it, '
            f'or remove it from models (gears = "precomputed" shows the shipped predictions, "off" leaves {name} out).'
        )
    return models + [name] if gears != "off" and name not in models else models


def provenance_table(evaluations: Mapping[Any, Any], name: str = "GEARS") -> pd.DataFrame:
    """Where each split's ``name`` predictions came from: one row per key of ``evaluations``.

    ``evaluations`` maps a label (a seed, or a (dataset, seed) pair) to an engine
    :class:`helpers.benchmarks.engine.Evaluation`. Columns: ``run`` (the label), ``source``
    ("precomputed", "refused", "not made" (no file for this dataset and seed), "trained in this
    run", "failed"), ``made_on`` (the date of a precomputed file, else empty), ``detail`` (the provenance line, or why the file was
    refused or the model failed) and ``clipped at 0`` (for a precomputed file, how many negative
    predicted values were set to 0 when it was written, :func:`clipped_note`). Labels where
    ``name`` did not run are left out.
    """
    rows = []
    for key, evaluation in evaluations.items():
        model = evaluation.models.get(name)
        if name in evaluation.failures:
            why = evaluation.failures[name]
            source, detail = "failed", why
            for kind, label in ((PrecomputedMissing, "not made"), (PrecomputedMismatch, "refused")):
                if f"{kind.__name__}: " in why:
                    source, detail = label, why.split(f"{kind.__name__}: ", 1)[-1]
                    break
            rows.append({"run": key, "source": source, "made_on": "", "detail": detail, "clipped at 0": ""})
        elif isinstance(model, PrecomputedPredictions):
            record = model.provenance_
            rows.append(
                {
                    "run": key,
                    "source": "precomputed",
                    "made_on": made_on_date(record),
                    "detail": provenance_line(record),
                    "clipped at 0": clipped_note(record),
                }
            )
        elif model is not None:
            rows.append(
                {
                    "run": key,
                    "source": "trained in this run",
                    "made_on": "",
                    "detail": f"{type(model).__name__}({_short_params(model)})",
                    "clipped at 0": "not clipped (trained in this run)",
                }
            )
    return pd.DataFrame(rows, columns=["run", "source", "made_on", "detail", "clipped at 0"])


def _short_params(model: PerturbationModel) -> str:
    keep = ("epochs", "seed", "n_threads")
    return ", ".join(f"{k}={v!r}" for k, v in model.get_params().items() if k in keep)


def precomputed_note(table: pd.DataFrame, name: str = "GEARS") -> str:
    """The label of figures and tables: ``"GEARS: precomputed by <script>, <date>"`` (or why it is absent); '' if it did not run."""
    if table.empty:
        return ""
    sources = set(table["source"])
    if sources == {"precomputed"}:
        return f"{name}: precomputed by {MADE_BY}, {', '.join(sorted(set(table['made_on'])))} (not trained in this run)"
    if "precomputed" in sources:
        others = "; ".join(sorted(sources - {"precomputed"}))
        return f"{name}: precomputed by {MADE_BY} for some splits, left out of the others ({others}; see the provenance table)"
    if sources == {"trained in this run"}:
        return f"{name}: trained in this run"
    return f"{name}: left out ({'; '.join(sorted(set(table['source'])))}; see the provenance table)"


__all__ = [
    "FINGERPRINT_ATOL",
    "FINGERPRINT_RTOL",
    "FORMAT",
    "GEARS_MODES",
    "MADE_BY",
    "RECORD_KEYS",
    "PrecomputedMismatch",
    "PrecomputedMissing",
    "PrecomputedPredictions",
    "clip_predictions",
    "clipped_note",
    "file_sha256",
    "fingerprint_differences",
    "gene_weights",
    "genes_sha256",
    "made_on_date",
    "precomputed_dir",
    "precomputed_files",
    "precomputed_note",
    "profile_fingerprint",
    "provenance_line",
    "provenance_table",
    "pseudobulk_fingerprint",
    "read_provenance",
    "shipped_records",
    "with_gears",
    "write_precomputed",
]
