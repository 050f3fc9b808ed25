"""Models that see the covariate: predict a perturbation's effect in a given cell line.

PerturBench's covariate-transfer task (Wu et al., arXiv 2408.10609) asks for the response
to perturbation :math:`p` in cell line :math:`k` when :math:`(p, k)` was never measured but
:math:`p` was measured in other lines and :math:`k` with other perturbations. Every model
here is fitted on **cells** of all lines at once (``obs['perturbation']`` and
``obs['context']``) and predicts **conditions**: names ``"perturbation@context"`` built by
:func:`helpers.data.splits.condition_name` (``"MAPK1@A172"``). So the evaluation engine
stays generic: it passes the condition names where it passes perturbation names for the
other models, and :meth:`ContextModel.predict` returns a conditions x genes table of mean
log-normalised expression.

Besides the means, :meth:`ContextModel.predict_cells` returns predicted **cells** of a
condition from given control cells of its line (for distribution metrics). The torch models
apply their network to each control cell; the models that only predict a mean return the
control cells moved to the predicted mean, :math:`\\hat{x}_i = x_i - \\bar{x}_{ctrl} + \\hat{\\mu}`
(the control cloud's shape around the prediction).

Baselines (no training):

* :class:`ContextControl` — "no change (line control)": :math:`\\hat{x}_{p,k} = \\bar{x}^{k}_{ctrl}`;
* :class:`ContextMean` — "line mean": the mean of the line's training perturbations'
  profiles, :math:`\\frac{1}{|P_k|}\\sum_{q \\in P_k} \\bar{x}^{k}_{q}`;
* :class:`OtherContextsEffect` — "mean effect in other lines": this line's control plus the
  perturbation's mean change in the other lines where it was trained,
  :math:`\\bar{x}^{k}_{ctrl} + \\frac{1}{|K_p|}\\sum_{k' \\in K_p} (\\bar{x}^{k'}_{p} - \\bar{x}^{k'}_{ctrl})`.

The PerturBench family in torch (:class:`CellTorchModel`), :math:`p` the multi-hot vector of
the perturbed genes, :math:`c` the one-hot cell line, :math:`x_{ctrl}` a random control cell
of the same line paired with each training cell (a new pairing every epoch):

* :class:`LinearAdditiveCells` — :math:`\\hat{x} = \\operatorname{softplus}(x_{ctrl} + W[p; c] + b)`;
* :class:`LatentAdditiveCells` — :math:`z = \\mathrm{Enc}([x_{ctrl}; c]) + \\mathrm{Enc}_p(p)`,
  :math:`\\hat{x} = \\operatorname{softplus}(\\mathrm{Dec}([z; c]))`;
* :class:`DecoderOnlyCells` — :math:`\\hat{x} = \\mathrm{Dec}([p; c])` (ignores the control cell);
* :class:`DecoderCovariates` — "decoder-cov", :math:`\\hat{x} = \\mathrm{Dec}(c)`: ignores the
  perturbation, so it predicts one profile per line (PerturBench's mode-collapse example);
* :class:`CPA` — an autoencoder of each cell: :math:`z_b = \\mathrm{Enc}(x)`,
  :math:`\\hat{x} = \\mathrm{Dec}(z_b + \\mathrm{Emb}_p(p) + \\mathrm{Emb}_c(c))`, loss
  :math:`\\lVert \\hat{x} - x \\rVert^2` plus adversarial classifiers that predict the
  perturbation and the line from :math:`z_b`; the encoder is trained against them through a
  gradient-reversal layer of weight ``adversary_weight``. Counterfactual: encode a control
  cell of the line, add the target perturbation's embedding, decode.
  ``CPA(adversary_weight=0)`` is the paper's "no adversary" ablation: the same model and
  code, the adversary still trained but with no gradient reaching the encoder.

These differ from :mod:`helpers.models.perturbench` (the ``"... (torch)"`` models of the
double-perturbation chapter) in that they see the cell line, always train on cells, and
predict conditions; the MLP builder and the torch settings are shared.

Training (all torch models): Adam, mean squared error on log-normalised expression, mini-
batches of ``batch_size`` cells, at least ``min_epochs`` and at most ``max_epochs`` epochs.
Early stopping: ``val_fraction`` of the cells of every training (perturbation, line) group
(groups with at least 5 cells; never control cells) are held out, and the validation loss is
the mean squared error between the predicted mean of each group (the model's output averaged
over a fixed sample of the line's training control cells) and the held-out cells' mean; training
stops when it has not improved for ``patience`` epochs, and the best weights are kept.
``max_seconds`` is a safety bound: if it ends training (``stopped_because_ == "time"``) the
result depends on the machine's speed.

Determinism: weights, dropout, shuffling and pairing draw from generators seeded by ``seed``
inside :func:`torch.random.fork_rng` (the global torch state is left alone); deterministic
algorithms are enforced; ``n_threads`` fixes the thread count.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.canonical import CONTROL, canonical_perturbation, target_genes
from ..data.splits import CONTEXT_SEPARATOR, condition_name, parse_condition
from ..errors import DataError
from .base import ModelTags, NotFittedError, PerturbationModel
from .perturbench import _dense, _inverse_softplus, _module, _torch, _torch_settings, mlp

if TYPE_CHECKING:
    import torch
    from anndata import AnnData

#: The obs column that holds the cell line (covariate).
CONTEXT_KEY = "context"


def _labels(train: AnnData) -> tuple[np.ndarray, np.ndarray]:
    if CONTEXT_KEY not in train.obs:
        raise DataError(
            f"this model predicts per cell line and needs obs[{CONTEXT_KEY!r}]; the training cells have none. "
            "Use a screen with several contexts (e.g. mcfaline2023_subset) or add the column."
        )
    perts = train.obs["perturbation"].astype(str).to_numpy()
    contexts = train.obs[CONTEXT_KEY].astype(str).to_numpy()
    return perts, contexts


def condition_profiles(train: AnnData) -> tuple[pd.DataFrame, pd.Series]:
    """Mean log-normalised expression of every (perturbation, context) group of cells, and the group sizes.

    Returns a conditions x genes DataFrame (index: :func:`helpers.data.splits.condition_name`,
    float64) and a Series of cell counts, both sorted by context then perturbation.
    """
    perts, contexts = _labels(train)
    names = np.array([f"{p}{CONTEXT_SEPARATOR}{c}" for p, c in zip(perts, contexts)], dtype=object)
    groups = pd.Categorical(names)
    order = sorted(groups.categories, key=lambda n: parse_condition(n)[::-1])
    groups = groups.reorder_categories(order)
    codes = groups.codes.astype(np.int64)
    n = np.bincount(codes, minlength=len(order)).astype(np.float64)
    ind = sp.csr_matrix((np.ones(codes.size), (codes, np.arange(codes.size))), shape=(len(order), codes.size))
    X = train.X.astype(np.float64) if sp.issparse(train.X) else np.asarray(train.X, dtype=np.float64)
    sums = ind @ X
    sums = np.asarray(sums.toarray() if sp.issparse(sums) else sums)
    means = pd.DataFrame(sums / n[:, None], index=pd.Index(order, name="condition"), columns=train.var_names.astype(str))
    if not np.isfinite(means.to_numpy()).all():
        raise DataError("the training cells hold NaN or infinite values.")
    return means, pd.Series(n.astype(np.int64), index=means.index, name="cells")


class ContextModel(PerturbationModel):
    """Base class of the models that predict conditions ``"perturbation@context"``.

    Subclasses implement ``fit(train)`` (cells with ``obs['context']``), ``_predict_pairs``
    and optionally ``_unpredictable_pair`` and ``predict_cells``. Fitting must set
    ``genes_``, ``contexts_`` (the training lines) and ``control_`` (context -> the mean of
    its training control cells).
    """

    _tags = ModelTags(training_data="cells")

    # -- names -------------------------------------------------------------------------
    def _check_conditions(self, conditions: Sequence[str]) -> list[tuple[str, str]]:
        if isinstance(conditions, str):
            raise TypeError("pass a list of condition names, not a single string")
        names = [str(c) for c in conditions]
        if len(set(names)) != len(names):
            raise DataError("the condition list has duplicates")
        return [parse_condition(c) for c in names]

    def unpredictable(self, conditions: Sequence[str]) -> dict[str, str]:
        """Conditions this fitted model cannot predict (unknown line, untrained target gene, ...), with the reason."""
        self._check_fitted()
        out = {}
        for name, (pert, ctx) in zip(list(conditions), self._check_conditions(conditions)):
            if ctx not in self.contexts_:
                out[name] = f"cell line {ctx!r} has no training cells (lines: {', '.join(self.contexts_)})"
                continue
            why = self._unpredictable_pair(pert, ctx)
            if why:
                out[name] = why
        return out

    def _unpredictable_pair(self, perturbation: str, context: str) -> str | None:
        return None

    def predict(self, conditions: Sequence[str]) -> pd.DataFrame:
        """Predicted mean log-normalised expression, conditions x genes (index = the condition names)."""
        self._check_fitted()
        pairs = self._check_conditions(conditions)
        bad = self.unpredictable(conditions)
        if bad:
            listed = "; ".join(f"{p}: {why}" for p, why in list(bad.items())[:5])
            raise DataError(
                f"{type(self).__name__} cannot predict {len(bad)} of the requested conditions ({listed}"
                f"{' ...' if len(bad) > 5 else ''}). Exclude them, e.g. with model.unpredictable(conditions)."
            )
        values = self._predict_pairs(pairs)
        out = pd.DataFrame(values, index=pd.Index([str(c) for c in conditions], name="perturbation"), columns=self.genes_.copy())
        out.columns.name = "gene"
        return out

    def _predict_pairs(self, pairs: list[tuple[str, str]]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_cells(self, condition: str, control_cells: np.ndarray | sp.spmatrix) -> np.ndarray:
        """Predicted cells of ``condition`` (cells x genes), one per given control cell of its line.

        Default (models that predict a mean only): the control cells moved to the predicted
        mean, :math:`\\hat{x}_i = x_i - \\bar{x} + \\hat{\\mu}`, so their mean is :meth:`predict`'s.
        """
        ctrl = self._control_input(condition, control_cells)
        mean = self.predict([condition]).to_numpy(dtype=np.float64)[0]
        return ctrl - ctrl.mean(axis=0, keepdims=True) + mean[None, :]

    def _control_input(self, condition: str, control_cells: np.ndarray | sp.spmatrix) -> np.ndarray:
        self._check_fitted()
        ctrl = np.asarray(control_cells.toarray() if sp.issparse(control_cells) else control_cells, dtype=np.float64)
        if ctrl.ndim != 2 or ctrl.shape[1] != len(self.genes_) or ctrl.shape[0] == 0:
            raise DataError(
                f"control_cells must be a non-empty cells x {len(self.genes_)} array on the model's genes, got shape {ctrl.shape}."
            )
        parse_condition(condition)
        return ctrl

    def _check_fitted(self) -> None:
        if getattr(self, "genes_", None) is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(train) first.")

    def _fit_profiles(self, train: AnnData) -> pd.DataFrame:
        """Condition profiles of the training cells; sets ``genes_``, ``contexts_``, ``control_``, ``trained_``."""
        if not hasattr(train, "obs"):
            raise DataError(f"{type(self).__name__} trains on cells with obs['perturbation'] and obs['context'].")
        table, counts = condition_profiles(train)
        pairs = [parse_condition(n) for n in table.index]
        contexts = sorted({c for _, c in pairs})
        no_control = [c for c in contexts if (CONTROL, c) not in set(pairs)]
        if no_control:
            raise DataError(f"cell line(s) {no_control} have no training control cells; every line needs its own controls.")
        self.genes_ = table.columns.copy()
        self.contexts_ = tuple(contexts)
        self.control_ = {c: table.loc[condition_name(CONTROL, c)].to_numpy() for c in contexts}
        self.trained_ = tuple((p, c) for p, c in pairs if p != CONTROL)
        self.cell_counts_ = counts
        return table


# ----------------------------------------------------------------------------------------
# baselines
# ----------------------------------------------------------------------------------------


class ContextControl(ContextModel):
    """No change: the mean of the line's training control cells, :math:`\\hat{x}_{p,k} = \\bar{x}^{k}_{ctrl}`."""

    name = "no change (line control)"

    def fit(self, train: AnnData) -> Self:
        self._fit_profiles(train)
        return self

    def _predict_pairs(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        return np.array([self.control_[c] for _, c in pairs]).reshape(len(pairs), len(self.genes_))


class ContextMean(ContextModel):
    """The line's mean: the average of its training perturbations' profiles (each perturbation weighted equally)."""

    name = "line mean"

    def fit(self, train: AnnData) -> Self:
        table = self._fit_profiles(train)
        self.line_mean_ = {}
        for ctx in self.contexts_:
            rows = [condition_name(p, c) for p, c in self.trained_ if c == ctx]
            if rows:
                self.line_mean_[ctx] = table.loc[rows].to_numpy().mean(axis=0)
        return self

    def _unpredictable_pair(self, perturbation: str, context: str) -> str | None:
        return None if context in self.line_mean_ else f"cell line {context!r} has no perturbed training cells"

    def _predict_pairs(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        return np.array([self.line_mean_[c] for _, c in pairs]).reshape(len(pairs), len(self.genes_))


class OtherContextsEffect(ContextModel):
    """The perturbation's mean change in the other lines, added to this line's control.

    .. math:: \\hat{x}_{p,k} = \\bar{x}^{k}_{ctrl} + \\frac{1}{|K_p|}\\sum_{k' \\in K_p}
              (\\bar{x}^{k'}_{p} - \\bar{x}^{k'}_{ctrl})

    :math:`K_p`: the lines other than :math:`k` with training cells of :math:`p`. A
    perturbation trained in no other line cannot be predicted (and says so).
    """

    name = "mean effect in other lines"

    def fit(self, train: AnnData) -> Self:
        table = self._fit_profiles(train)
        self.effects_ = {}
        for p, c in self.trained_:
            self.effects_.setdefault(p, {})[c] = table.loc[condition_name(p, c)].to_numpy() - self.control_[c]
        return self

    def _others(self, perturbation: str, context: str) -> list[str]:
        return sorted(c for c in self.effects_.get(perturbation, {}) if c != context)

    def _unpredictable_pair(self, perturbation: str, context: str) -> str | None:
        return None if self._others(perturbation, context) else f"{perturbation} has no training cells in another cell line"

    def _predict_pairs(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        rows = []
        for p, c in pairs:
            change = np.mean([self.effects_[p][k] for k in self._others(p, c)], axis=0)
            rows.append(self.control_[c] + change)
        return np.array(rows).reshape(len(pairs), len(self.genes_))


# ----------------------------------------------------------------------------------------
# bring your own predictions, per (perturbation, context)
# ----------------------------------------------------------------------------------------


def read_condition_predictions(path: str | Path) -> pd.DataFrame:
    """Predictions per (perturbation, context) from a file: a conditions x genes DataFrame.

    Layouts: ``.csv`` / ``.tsv`` / ``.parquet`` with columns ``perturbation``, ``context`` and
    one column per gene (or a first column of condition names ``"MAPK1@A172"``); ``.h5ad`` with
    ``obs['perturbation']`` and ``obs['context']`` (or condition names as ``obs_names``) and the
    predictions in ``X``. Values: mean log-normalised expression (or changes, see
    :class:`ContextPredictionsFile`). Perturbation labels may be ``A+ctrl`` or ``A``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"predictions file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        frame = pd.read_csv(path, sep="," if suffix == ".csv" else "\t")
    elif suffix == ".parquet":
        frame = pd.read_parquet(path).reset_index()
        frame = frame.drop(columns=[c for c in ("index",) if c in frame.columns and c not in ("perturbation", "context")])
    elif suffix == ".h5ad":
        import anndata as ad

        adata = ad.read_h5ad(path)
        X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
        frame = pd.DataFrame(X, columns=adata.var_names.astype(str))
        if "perturbation" in adata.obs and CONTEXT_KEY in adata.obs:
            frame.insert(0, "context", adata.obs[CONTEXT_KEY].astype(str).to_numpy())
            frame.insert(0, "perturbation", adata.obs["perturbation"].astype(str).to_numpy())
        else:
            frame.insert(0, "condition", adata.obs_names.astype(str))
    else:
        raise DataError(f"cannot read predictions from {path.name}: use .csv, .tsv, .parquet or .h5ad.")
    if {"perturbation", "context"} <= set(frame.columns):
        perts = [canonical_perturbation(p, "gears") for p in frame.pop("perturbation").astype(str)]
        names = [condition_name(p, c) for p, c in zip(perts, frame.pop("context").astype(str))]
    else:
        first = frame.columns[0]
        labels = frame.pop(first).astype(str)
        pairs = [parse_condition(n) if CONTEXT_SEPARATOR in n else None for n in labels]
        if any(pc is None for pc in pairs):
            raise DataError(
                f"{path.name}: give the cell line of every row, as columns 'perturbation' and 'context' or as condition "
                f"names 'perturbation{CONTEXT_SEPARATOR}context' in the first column (e.g. 'MAPK1@A172')."
            )
        names = [condition_name(p, c) for p, c in pairs]
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DataError(f"{path.name} holds no predictions.")
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise DataError(f"{path.name}: columns {non_numeric[:3]} are not numeric; one numeric column per gene is expected.")
    frame.index = pd.Index(names, name="condition")
    if frame.index.duplicated().any():
        raise DataError(f"{path.name} has several rows for {frame.index[frame.index.duplicated()].unique()[:3].tolist()}.")
    values = frame.to_numpy(dtype=float)
    if not np.isfinite(values).all():
        bad = frame.index[~np.isfinite(values).all(axis=1)].tolist()
        raise DataError(f"{path.name} has NaN or infinite predictions for {len(bad)} conditions, e.g. {bad[:3]}.")
    frame.columns = frame.columns.astype(str)
    return frame.astype(float)


class ContextPredictionsFile(ContextModel):
    """Predictions made elsewhere, one row per (perturbation, cell line): see :func:`read_condition_predictions`.

    ``values="change"`` adds the training control mean of the row's line back. Predicted cells
    (:meth:`predict_cells`) are the line's control cells moved to the file's mean.
    """

    _tags = ModelTags(training_data="cells", external=True)

    def __init__(self, path: str | Path, name: str = "external", values: str = "expression"):
        self.path = path
        self.name = name
        self.values = values

    def fit(self, train: AnnData) -> Self:
        if self.values not in ("expression", "change"):
            raise ValueError(f"values must be 'expression' or 'change', not {self.values!r}")
        self._fit_profiles(train)
        table = read_condition_predictions(self.path)
        missing = self.genes_.difference(table.columns)
        if len(missing):
            raise DataError(
                f"the predictions in {Path(self.path).name} lack {len(missing)} of the {len(self.genes_)} evaluated genes "
                f"(e.g. {missing[:5].tolist()}); predict every gene of the dataset."
            )
        table = table[self.genes_]
        if self.values == "change":
            add = [self.control_.get(parse_condition(n)[1]) for n in table.index]
            unknown = [n for n, a in zip(table.index, add) if a is None]
            if unknown:
                raise DataError(f"{Path(self.path).name}: rows {unknown[:3]} name cell lines without training controls.")
            table = table + np.array(add)
        self.table_ = table
        return self

    def _unpredictable_pair(self, perturbation: str, context: str) -> str | None:
        name = condition_name(perturbation, context)
        return None if name in self.table_.index else f"not in {Path(self.path).name}"

    def _predict_pairs(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        return self.table_.loc[[condition_name(p, c) for p, c in pairs]].to_numpy(dtype=np.float64)


# ----------------------------------------------------------------------------------------
# the torch family
# ----------------------------------------------------------------------------------------


def _grad_reverse():
    """A gradient-reversal function: identity forward, gradient times ``-weight`` backward."""
    torch = _torch()

    class _Reverse(torch.autograd.Function):
        @staticmethod
        def forward(ctx: object, x: torch.Tensor, weight: float) -> torch.Tensor:
            ctx.weight = weight
            return x.view_as(x)

        @staticmethod
        def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
            return -ctx.weight * grad, None

    return _Reverse.apply


class CellTorchModel(ContextModel):
    """Shared data handling, training loop and prediction of the torch models (see the module docstring).

    Subclasses set ``_pairs_control`` (whether the input is a paired control cell; CPA
    autoencodes each cell instead) and implement ``_build`` and ``_forward``; CPA also
    overrides ``_loss``.
    """

    _tags = ModelTags(training_data="cells", slow=True)
    #: Whether the network reads the control cell (False: decoders; the prediction is the same for every control cell).
    _reads_control = True
    #: Whether training pairs each cell with a control cell of its line (False: CPA autoencodes each cell).
    _trains_on_pairs = True

    def _set_common(
        self,
        lr: float,
        weight_decay: float,
        batch_size: int,
        max_epochs: int,
        min_epochs: int,
        patience: int,
        val_fraction: float,
        max_seconds: float,
        n_control_samples: int,
        seed: int,
        n_threads: int | None,
    ) -> None:
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.min_epochs = min_epochs
        self.patience = patience
        self.val_fraction = val_fraction
        self.max_seconds = max_seconds
        self.n_control_samples = n_control_samples
        self.seed = seed
        self.n_threads = n_threads

    # -- the network (subclasses) ------------------------------------------------------
    def _build(self, n_genes: int, n_pert: int, n_ctx: int, control: torch.Tensor) -> torch.nn.Module:  # pragma: no cover
        raise NotImplementedError

    def _forward(self, net: torch.nn.Module, x_ctrl: torch.Tensor | None, p: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Predicted cells from control cells ``x_ctrl`` (None for models that do not read them)."""
        return net(x_ctrl, p, c)

    def _loss(
        self,
        net: torch.nn.Module,
        x_target: torch.Tensor,
        x_ctrl: torch.Tensor | None,
        p: torch.Tensor,
        c: torch.Tensor,
        labels: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """Training loss of one batch (mean squared error of the prediction from the paired control)."""
        torch = _torch()
        return torch.mean((self._forward(net, x_ctrl, p, c) - x_target) ** 2)

    def _extra_modules(self, n_genes: int, n_pert_classes: int, n_ctx: int) -> torch.nn.Module | None:
        """Modules trained beside the network with their own optimiser (CPA's adversary); None here."""
        return None

    # -- encodings ---------------------------------------------------------------------
    def _encode_perturbations(self, perts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(perts), len(self.perturbed_genes_)), dtype=np.float32)
        index = self._gene_index
        for i, p in enumerate(perts):
            for g in target_genes(p):
                if g in index:  # an untrained gene has no column (only decoder-cov, which ignores p, gets here)
                    out[i, index[g]] = 1.0
        return out

    def _encode_contexts(self, contexts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(contexts), len(self.contexts_)), dtype=np.float32)
        index = {c: i for i, c in enumerate(self.contexts_)}
        for i, c in enumerate(contexts):
            out[i, index[c]] = 1.0
        return out

    def _check_params(self) -> None:
        if int(self.max_epochs) < 1 or int(self.min_epochs) < 0 or not self.max_seconds > 0:
            raise ValueError("max_epochs must be >= 1, min_epochs >= 0 and max_seconds > 0")
        if not 0 <= self.val_fraction < 1:
            raise ValueError("val_fraction must be in [0, 1)")
        if int(self.batch_size) < 1 or int(self.n_control_samples) < 1:
            raise ValueError("batch_size and n_control_samples must be at least 1")

    def _unpredictable_pair(self, perturbation: str, context: str) -> str | None:
        unseen = [g for g in target_genes(perturbation) if g not in self._gene_index]
        if unseen:
            return f"target gene {', '.join(unseen)} not perturbed in the training data (no trained embedding)"
        return None

    # -- fit ---------------------------------------------------------------------------
    def fit(self, train: AnnData) -> Self:
        self._check_params()
        self._fit_profiles(train)
        perts, contexts = _labels(train)
        self.perturbed_genes_ = pd.Index(sorted({g for p in set(perts) for g in target_genes(p)}), name="gene")
        if len(self.perturbed_genes_) == 0:
            raise DataError("the training data hold no perturbed cells.")
        self._gene_index = {g: i for i, g in enumerate(self.perturbed_genes_)}
        classes = sorted(set(perts))
        self.perturbation_classes_ = tuple(classes)
        ctx_index = {c: i for i, c in enumerate(self.contexts_)}
        ctx_codes = np.array([ctx_index[c] for c in contexts], dtype=np.int64)
        class_codes = pd.Categorical(perts, categories=classes).codes.astype(np.int64)

        # held-out validation cells: val_fraction of each perturbed (perturbation, line) group with >= 5 cells
        rng = np.random.default_rng(int(self.seed))
        is_val = np.zeros(len(perts), dtype=bool)
        val_groups = []
        if self.val_fraction > 0:
            keys = pd.Series([f"{p}{CONTEXT_SEPARATOR}{c}" for p, c in zip(perts, contexts)])
            for name, idx in sorted(keys.groupby(keys).indices.items()):
                p, c = parse_condition(name)
                n_val = int(round(self.val_fraction * len(idx)))
                if p == CONTROL or len(idx) < 5 or n_val < 1:
                    continue
                chosen = np.sort(rng.choice(idx, size=n_val, replace=False))
                is_val[chosen] = True
                val_groups.append((p, c, chosen))
        X = train.X
        X = X.tocsr() if sp.issparse(X) else np.asarray(X, dtype=np.float32)
        fit_rows = np.flatnonzero(~is_val)
        ctrl_rows = np.flatnonzero(perts == CONTROL)
        ctrl_by_ctx = {c: ctrl_rows[ctx_codes[ctrl_rows] == i] for c, i in ctx_index.items()}
        sample = {}
        for c in self.contexts_:
            rows = ctrl_by_ctx[c]
            k = min(int(self.n_control_samples), len(rows))
            sample[c] = np.sort(rng.choice(rows, size=k, replace=False))
        self.control_sample_ = {c: _dense(X[sample[c]]) for c in self.contexts_}

        # partner controls: concatenated per line, start offset and count of each line
        ctrl_concat = np.concatenate([ctrl_by_ctx[c] for c in self.contexts_])
        counts = np.array([len(ctrl_by_ctx[c]) for c in self.contexts_], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        small = sp.issparse(X) and X.shape[0] * X.shape[1] <= 25_000_000
        dense_X = _dense(X) if (small or not sp.issparse(X)) else None

        def rows_of(idx: np.ndarray) -> np.ndarray:
            return dense_X[idx] if dense_X is not None else _dense(X[idx])

        P_all = self._encode_perturbations(perts)
        C_all = self._encode_contexts(contexts)
        torch = _torch()
        start = time.perf_counter()
        with _torch_settings(self.n_threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            gen = torch.Generator().manual_seed(int(self.seed))
            control_mean = torch.tensor(np.mean([self.control_[c] for c in self.contexts_], axis=0), dtype=torch.float32)
            net = self._build(len(self.genes_), len(self.perturbed_genes_), len(self.contexts_), control_mean)
            with torch.random.fork_rng(devices=[]):  # the adversary's initialisation does not move the main stream
                torch.manual_seed(int(self.seed) + 1)
                extra = self._extra_modules(len(self.genes_), len(classes), len(self.contexts_))
            optim = torch.optim.Adam(net.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
            extra_optim = None if extra is None else torch.optim.Adam(extra.parameters(), lr=float(self.lr))
            self.extra_ = extra
            P_t, C_t = torch.from_numpy(P_all), torch.from_numpy(C_all)
            labels_t = (torch.from_numpy(class_codes), torch.from_numpy(ctx_codes))
            val_p = torch.from_numpy(self._encode_perturbations([p for p, _, _ in val_groups]))
            val_c = [c for _, c, _ in val_groups]
            val_truth = (
                torch.tensor(np.array([_dense(X[idx]).mean(axis=0) for _, _, idx in val_groups]), dtype=torch.float32)
                if val_groups
                else None
            )
            n = len(fit_rows)
            batch = max(1, min(int(self.batch_size), n))
            best, best_state, since_best = np.inf, None, 0
            history, stopped = [], "max_epochs"
            for epoch in range(int(self.max_epochs)):
                net.train()
                if extra is not None:
                    extra.train()
                order = fit_rows[torch.randperm(n, generator=gen).numpy()]
                u = torch.rand(n, generator=gen, dtype=torch.float64).numpy()
                cc = ctx_codes[order]
                partner = ctrl_concat[starts[cc] + np.minimum((u * counts[cc]).astype(np.int64), counts[cc] - 1)]
                total = 0.0
                for s in range(0, n, batch):
                    idx = order[s : s + batch]
                    x_t = torch.from_numpy(rows_of(idx))
                    x_c = torch.from_numpy(rows_of(partner[s : s + batch])) if self._trains_on_pairs else None
                    ti = torch.from_numpy(idx)
                    loss = self._loss(net, x_t, x_c, P_t[ti], C_t[ti], (labels_t[0][ti], labels_t[1][ti]))
                    optim.zero_grad()
                    if extra_optim is not None:
                        extra_optim.zero_grad()
                    loss.backward()
                    optim.step()
                    if extra_optim is not None:
                        extra_optim.step()
                    total += float(loss.detach()) * len(idx)
                record = {"epoch": epoch + 1, "train_loss": total / n}
                if val_groups:
                    net.eval()
                    with torch.no_grad():
                        pred = self._mean_prediction(net, val_p, val_c)
                        vloss = float(torch.mean((pred - val_truth) ** 2))
                    record["val_mse"] = vloss
                    if vloss < best - 1e-12:
                        best, since_best = vloss, 0
                        best_state = {k: v.clone() for k, v in net.state_dict().items()}
                    else:
                        since_best += 1
                history.append(record)
                if val_groups and epoch + 1 >= int(self.min_epochs) and since_best >= int(self.patience):
                    stopped = "early_stopping"
                    break
                if time.perf_counter() - start > float(self.max_seconds):
                    stopped = "time"
                    break
            if best_state is not None:
                net.load_state_dict(best_state)
            net.eval()
        self.network_ = net
        self.history_ = pd.DataFrame(history).set_index("epoch")
        self.n_epochs_ = len(history)
        self.best_epoch_ = int(self.history_["val_mse"].idxmin()) if val_groups else self.n_epochs_
        self.stopped_because_ = stopped
        self.n_validation_cells_ = int(is_val.sum())
        self.fit_seconds_ = time.perf_counter() - start
        return self

    # -- predict -----------------------------------------------------------------------
    def _mean_prediction(self, net: torch.nn.Module, p: torch.Tensor, contexts: Sequence[str]) -> torch.Tensor:
        """Output averaged over the stored control sample of each row's line."""
        torch = _torch()
        out = torch.zeros((p.shape[0], len(self.genes_)), dtype=torch.float32)
        C = torch.from_numpy(self._encode_contexts(contexts))
        for ctx in sorted(set(contexts)):
            rows = [i for i, c in enumerate(contexts) if c == ctx]
            ri = torch.tensor(rows, dtype=torch.int64)
            if not self._reads_control:
                out[ri] = self._forward(net, None, p[ri], C[ri])
                continue
            ctrl = torch.from_numpy(self.control_sample_[ctx])
            S = ctrl.shape[0]
            per_chunk = max(1, 65_536 // S)
            for s in range(0, len(rows), per_chunk):
                part = ri[s : s + per_chunk]
                k = len(part)
                x = ctrl.repeat(k, 1)
                y = self._forward(net, x, p[part].repeat_interleave(S, dim=0), C[part].repeat_interleave(S, dim=0))
                out[part] = y.view(k, S, -1).mean(dim=1)
        return out

    def _predict_pairs(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        torch = _torch()
        p = torch.from_numpy(self._encode_perturbations([q for q, _ in pairs]))
        with _torch_settings(self.n_threads), torch.no_grad():
            self.network_.eval()
            return self._mean_prediction(self.network_, p, [c for _, c in pairs]).numpy().astype(np.float64)

    def predict_cells(self, condition: str, control_cells: np.ndarray | sp.spmatrix) -> np.ndarray:
        """The network's output for each given control cell of the condition's line (decoders: the same profile for every cell)."""
        ctrl = self._control_input(condition, control_cells)
        if self.unpredictable([condition]):
            raise DataError(f"{type(self).__name__} cannot predict {condition}: {self.unpredictable([condition])[condition]}")
        pert, ctx = parse_condition(condition)
        torch = _torch()
        n = ctrl.shape[0]
        p = torch.from_numpy(np.repeat(self._encode_perturbations([pert]), n, axis=0))
        c = torch.from_numpy(np.repeat(self._encode_contexts([ctx]), n, axis=0))
        x = torch.from_numpy(ctrl.astype(np.float32)) if self._reads_control else None
        with _torch_settings(self.n_threads), torch.no_grad():
            self.network_.eval()
            return self._forward(self.network_, x, p, c).numpy().astype(np.float64)


_COMMON_DOC = """
    Training parameters (all models of :class:`CellTorchModel`): ``lr``, ``weight_decay`` (Adam),
    ``batch_size`` (cells per step), ``max_epochs``, ``min_epochs``, ``patience`` (early
    stopping on the validation cells), ``val_fraction``, ``max_seconds`` (safety bound),
    ``n_control_samples`` (training control cells per line whose outputs are averaged for a
    predicted mean), ``seed``, ``n_threads``.
"""


class LinearAdditiveCells(CellTorchModel):
    """PerturBench's linear additive model with the cell line: ``x̂ = softplus(x_ctrl + W[p; c] + b)``.

    ``W`` starts at 0 and ``b`` so that the untrained model returns its input (no change).
    Published Norman19 best: lr 4.7e-3, weight decay 1.8e-8 (kept).
    """

    name = "linear additive (cells, covariates)"
    __doc__ += _COMMON_DOC

    def __init__(
        self,
        lr: float = 4.7e-3,
        weight_decay: float = 1.8e-8,
        batch_size: int = 128,
        max_epochs: int = 200,
        min_epochs: int = 5,
        patience: int = 10,
        val_fraction: float = 0.2,
        max_seconds: float = 60.0,
        n_control_samples: int = 100,
        seed: int = 0,
        n_threads: int | None = 1,
    ):
        self._set_common(
            lr, weight_decay, batch_size, max_epochs, min_epochs, patience, val_fraction, max_seconds, n_control_samples, seed, n_threads
        )

    def _build(self, n_genes: int, n_pert: int, n_ctx: int, control: torch.Tensor) -> torch.nn.Module:
        torch = _torch()
        softplus = torch.nn.functional.softplus
        linear = torch.nn.Linear(n_pert + n_ctx, n_genes)
        with torch.no_grad():
            linear.weight.zero_()
            linear.bias.copy_(_inverse_softplus(control) - control)
        return _module(lambda m, x, p, c: softplus(x + m.linear(torch.cat([p, c], dim=1))), linear=linear)


class LatentAdditiveCells(CellTorchModel):
    """PerturBench's latent additive model with covariates injected into encoder and decoder.

    ``z = Enc([x_ctrl; c]) + Enc_p(p)``, ``x̂ = softplus(Dec([z; c]))``: three MLPs of width
    ``width`` with ``n_layers`` hidden blocks, latent dimension ``latent``, dropout ``dropout``.
    Published Norman19 best: width 4,352, latent 512, 1 layer, dropout 0.1, lr 9.3e-5, weight
    decay 2.2e-8 (GPU, 500 epochs); here width 256, latent 64 and lr 1e-3 for a CPU budget.
    """

    name = "latent additive (cells, covariates)"
    __doc__ += _COMMON_DOC

    def __init__(
        self,
        width: int = 256,
        latent: int = 64,
        n_layers: int = 1,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 2.2e-8,
        batch_size: int = 128,
        max_epochs: int = 200,
        min_epochs: int = 5,
        patience: int = 10,
        val_fraction: float = 0.2,
        max_seconds: float = 60.0,
        n_control_samples: int = 100,
        seed: int = 0,
        n_threads: int | None = 1,
    ):
        self.width, self.latent, self.n_layers, self.dropout = width, latent, n_layers, dropout
        self._set_common(
            lr, weight_decay, batch_size, max_epochs, min_epochs, patience, val_fraction, max_seconds, n_control_samples, seed, n_threads
        )

    def _build(self, n_genes: int, n_pert: int, n_ctx: int, control: torch.Tensor) -> torch.nn.Module:
        torch = _torch()
        softplus = torch.nn.functional.softplus
        w, k, L, d = int(self.width), int(self.latent), int(self.n_layers), float(self.dropout)
        decoder = mlp(k + n_ctx, w, n_genes, L, d)
        with torch.no_grad():
            decoder[-1].bias.copy_(_inverse_softplus(control))

        def forward(m: torch.nn.Module, x: torch.Tensor, p: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            z = m.gene_encoder(torch.cat([x, c], dim=1)) + m.pert_encoder(p)
            return softplus(m.decoder(torch.cat([z, c], dim=1)))

        return _module(forward, gene_encoder=mlp(n_genes + n_ctx, w, k, L, d), pert_encoder=mlp(n_pert, w, k, L, d), decoder=decoder)


class DecoderOnlyCells(CellTorchModel):
    """PerturBench's decoder-only model with the cell line: ``x̂ = Dec([p; c])`` (no softplus; ignores the control cell).

    Published Norman19 best: 3 layers of width 3,328, lr 1.4e-4, weight decay 4.4e-5; here
    2 layers of width 256 and lr 1e-3. The output bias starts at the control mean.
    """

    name = "decoder only (cells, covariates)"
    _reads_control = False
    _trains_on_pairs = False
    __doc__ += _COMMON_DOC

    def __init__(
        self,
        width: int = 256,
        n_layers: int = 2,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 4.4e-5,
        batch_size: int = 128,
        max_epochs: int = 200,
        min_epochs: int = 5,
        patience: int = 10,
        val_fraction: float = 0.2,
        max_seconds: float = 60.0,
        n_control_samples: int = 100,
        seed: int = 0,
        n_threads: int | None = 1,
    ):
        self.width, self.n_layers, self.dropout = width, n_layers, dropout
        self._set_common(
            lr, weight_decay, batch_size, max_epochs, min_epochs, patience, val_fraction, max_seconds, n_control_samples, seed, n_threads
        )

    def _inputs(self, p: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return _torch().cat([p, c], dim=1)

    def _n_inputs(self, n_pert: int, n_ctx: int) -> int:
        return n_pert + n_ctx

    def _build(self, n_genes: int, n_pert: int, n_ctx: int, control: torch.Tensor) -> torch.nn.Module:
        torch = _torch()
        decoder = mlp(self._n_inputs(n_pert, n_ctx), int(self.width), n_genes, int(self.n_layers), float(self.dropout))
        with torch.no_grad():
            decoder[-1].bias.copy_(control)
        return _module(lambda m, x, p, c: m.decoder(self._inputs(p, c)), decoder=decoder)


class DecoderCovariates(DecoderOnlyCells):
    """ "decoder-cov": the decoder-only model fed the cell line only, ``x̂ = Dec(c)``.

    It ignores the perturbation, so it predicts one profile per line for every perturbation:
    a good RMSE where perturbations change little, and a rank metric near 0.5 (mode
    collapse), as in PerturBench's Srivatsan20 table. Same hyperparameters as
    :class:`DecoderOnlyCells`.
    """

    name = "decoder-cov"

    def _inputs(self, p: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return c

    def _n_inputs(self, n_pert: int, n_ctx: int) -> int:
        return n_ctx

    def _unpredictable_pair(self, perturbation: str, context: str) -> str | None:
        return None  # the perturbation is not an input


class CPA(CellTorchModel):
    """Compositional perturbation autoencoder (Lotfollahi et al. 2023) as PerturBench runs it, with an MSE loss.

    .. math:: z_b = \\mathrm{Enc}(x), \\qquad \\hat{x} = \\mathrm{Dec}(z_b + \\mathrm{Emb}_p(p) + \\mathrm{Emb}_c(c))

    Trained on every cell (control cells with :math:`p = 0`) to reconstruct itself:
    :math:`\\lVert \\hat{x} - x \\rVert^2 / G`, plus the adversary: two MLP classifiers
    predict the perturbation (one class per training label, control included) and the cell
    line from :math:`z_b` with cross-entropy losses. They see :math:`z_b` through a
    gradient-reversal layer: the classifiers minimise their loss, the encoder receives
    :math:`-w` times its gradient (``adversary_weight`` :math:`= w`) and so learns a basal
    state that hides the perturbation. The classifiers have their own Adam optimiser, no
    dropout, and are initialised from ``seed + 1`` in a forked random state, so with
    :math:`w = 0` they leave the autoencoder's training untouched: ``CPA(adversary_weight=0)``
    is the "no adversary" ablation, the same code with the adversarial loss weighted 0.

    Counterfactual: :math:`\\hat{x}_{p,k} = \\mathrm{Dec}(\\mathrm{Enc}(x_{ctrl}) + \\mathrm{Emb}_p(p) + \\mathrm{Emb}_c(k))`
    for control cells :math:`x_{ctrl}` of line :math:`k`.

    PerturBench's CPA defaults: latent 128, hidden 256, 3 encoder layers, 2 perturbation-
    embedding layers, adversary hidden 128 with 2 layers, lr 1e-3, weight decay 1e-8, dropout
    0.1, adversary weight 1, a gradient penalty of weight 10 and 7 adversary steps per
    autoencoder step (variational encoder). Here: deterministic encoder (PerturBench found MSE
    better than likelihoods), latent 32, width 128, 1 hidden block, adversary of width 64 with
    1 block, no gradient penalty, one joint step.
    """

    name = "CPA"
    _trains_on_pairs = False
    __doc__ += _COMMON_DOC

    def __init__(
        self,
        adversary_weight: float = 1.0,
        width: int = 128,
        latent: int = 32,
        n_layers: int = 1,
        dropout: float = 0.1,
        adversary_width: int = 64,
        adversary_layers: int = 1,
        lr: float = 1e-3,
        weight_decay: float = 1e-8,
        batch_size: int = 128,
        max_epochs: int = 200,
        min_epochs: int = 5,
        patience: int = 10,
        val_fraction: float = 0.2,
        max_seconds: float = 60.0,
        n_control_samples: int = 100,
        seed: int = 0,
        n_threads: int | None = 1,
    ):
        self.adversary_weight = adversary_weight
        self.width, self.latent, self.n_layers, self.dropout = width, latent, n_layers, dropout
        self.adversary_width, self.adversary_layers = adversary_width, adversary_layers
        self._set_common(
            lr, weight_decay, batch_size, max_epochs, min_epochs, patience, val_fraction, max_seconds, n_control_samples, seed, n_threads
        )

    def _check_params(self) -> None:
        super()._check_params()
        if not self.adversary_weight >= 0:
            raise ValueError("adversary_weight must be >= 0")

    def _build(self, n_genes: int, n_pert: int, n_ctx: int, control: torch.Tensor) -> torch.nn.Module:
        torch = _torch()
        w, k, L, d = int(self.width), int(self.latent), int(self.n_layers), float(self.dropout)
        decoder = mlp(k, w, n_genes, L, d)
        with torch.no_grad():
            decoder[-1].bias.copy_(control)
        net = _module(
            lambda m, x, p, c: m.decoder(m.encoder(x) + m.pert_embedding(p) + m.context_embedding(c)),
            encoder=mlp(n_genes, w, k, L, d),
            pert_embedding=mlp(n_pert, w, k, L, d),
            context_embedding=mlp(n_ctx, w, k, 0, d),
            decoder=decoder,
        )
        return net

    def _extra_modules(self, n_genes: int, n_pert_classes: int, n_ctx: int) -> torch.nn.Module | None:
        nn = _torch().nn
        w, k, L = int(self.adversary_width), int(self.latent), int(self.adversary_layers)
        return nn.ModuleDict({"perturbation": mlp(k, w, n_pert_classes, L, 0.0), "context": mlp(k, w, n_ctx, L, 0.0)})

    def _loss(
        self,
        net: torch.nn.Module,
        x_target: torch.Tensor,
        x_ctrl: torch.Tensor | None,
        p: torch.Tensor,
        c: torch.Tensor,
        labels: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        torch = _torch()
        z_basal = net.encoder(x_target)
        recon = net.decoder(z_basal + net.pert_embedding(p) + net.context_embedding(c))
        loss = torch.mean((recon - x_target) ** 2)
        adversary = self.extra_
        if adversary is None:  # only a subclass that builds no adversary gets here (tests compare it with weight 0)
            return loss
        reversed_z = _grad_reverse()(z_basal, float(self.adversary_weight))
        ce = torch.nn.functional.cross_entropy
        return loss + ce(adversary["perturbation"](reversed_z), labels[0]) + ce(adversary["context"](reversed_z), labels[1])


#: The models of this module by their result-table names.
MODELS = {
    cls.name: cls
    for cls in (
        ContextControl,
        ContextMean,
        OtherContextsEffect,
        LinearAdditiveCells,
        LatentAdditiveCells,
        DecoderOnlyCells,
        DecoderCovariates,
        CPA,
    )
}

__all__ = [
    "CONTEXT_KEY",
    "CPA",
    "MODELS",
    "CellTorchModel",
    "ContextControl",
    "ContextMean",
    "ContextModel",
    "ContextPredictionsFile",
    "DecoderCovariates",
    "DecoderOnlyCells",
    "LatentAdditiveCells",
    "LinearAdditiveCells",
    "OtherContextsEffect",
    "condition_profiles",
    "read_condition_predictions",
]
