"""PerturBench-style neural models, written in torch and sized for a CPU budget.

Three architectures of PerturBench (Wu et al., arXiv 2408.10609), all with
the multi-hot perturbation vector :math:`p` (one entry per gene perturbed anywhere in the
training data; a double has two ones) and no covariates:

* :class:`LinearAdditive` — :math:`\\hat{x} = \\operatorname{softplus}(x_{ctrl} + W p + b)`;
* :class:`LatentAdditive` — :math:`z = \\mathrm{Enc}_{gene}(x_{ctrl}) + \\mathrm{Enc}_{pert}(p)`,
  :math:`\\hat{x} = \\operatorname{softplus}(\\mathrm{Dec}(z))`;
* :class:`DecoderOnly` — :math:`\\hat{x} = \\mathrm{Dec}(p)` (no softplus; ignores the control
  cell, so it learns one profile per combination of perturbed genes).

Every MLP is ``Linear(in, w)`` followed by ``n_layers`` blocks ``[Linear(w, w),
LayerNorm(w, no affine), ReLU, Dropout]`` and a final ``Linear(w, out)`` (PerturBench's
``MLP``). The loss is the mean squared error on log-normalised expression.

**Training data** (``training=``):

* ``"cells"`` (PerturBench's protocol): every training cell is paired with a random
  control cell, which is the input :math:`x_{ctrl}`, and the cell itself is the target;
  control cells are paired the same way with :math:`p = 0`. A new random pairing is drawn
  every epoch (seeded).
* ``"pseudobulk"`` (the default here, for the CPU budget of the book): one example per
  training perturbation (and one for control, :math:`p = 0`); input = the control mean
  profile, target = the perturbation's mean profile. With MSE, the per-cell optimum for a
  fixed input is the mean of the targets, so this fits the same quantity the benchmark
  evaluates, with far fewer gradient steps; what is lost is the cell-to-cell variation of
  :math:`x_{ctrl}` as input (irrelevant for the decoder-only and the linear additive models,
  whose prediction of a mean is linear in it before the softplus).

**Stopping**: at most ``max_epochs`` epochs and ``max_seconds`` seconds; early stopping
when the validation loss has not improved for ``patience`` epochs, keeping the best
weights. The validation part is ``val_fraction`` of the training *doubles* (of all
training perturbations if fewer than 5 doubles), drawn with ``seed`` — never a test
perturbation. ``max_seconds`` is a safety bound: if it ends training, the result depends
on the machine's speed (``stopped_because_ == "time"``), so the defaults are chosen to
stop on the validation loss long before it.

**Prediction**: mean log-normalised expression per perturbation. ``"pseudobulk"``: the
model's output for the control mean profile. ``"cells"``: the average of the outputs
over a fixed, seeded sample of ``n_control_samples`` control cells.

The published Norman19 best models are much wider (latent additive: width 4,352, latent
512; decoder-only: 3 layers of width 3,328) and were trained per cell on a GPU for up to
500 epochs; the defaults here (width 128, latent 32, one hidden block, at most 300 epochs,
patience 20, batch 32, learning rates raised for the fewer steps of pseudobulk training)
fit a 2-core CPU in seconds. They are hyperparameters: pass larger ones (and
``training="cells"`` with the published learning rates) to get closer to the published
setup.

Determinism: weights, dropout, shuffling and pairing all draw from generators seeded
by ``seed`` inside :func:`torch.random.fork_rng` (the global torch state is left alone);
deterministic algorithms are enforced during fit and predict; ``n_threads`` fixes the
thread count (None keeps torch's current setting).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.canonical import CONTROL, target_genes
from ..data.pseudobulk import is_pseudobulk, pseudobulk
from ..errors import DataError
from .base import ModelTags, PerturbationModel

if TYPE_CHECKING:
    import torch
    from anndata import AnnData

TRAINING_MODES = ("pseudobulk", "cells")


def _torch():
    import torch

    return torch


@contextlib.contextmanager
def _torch_settings(n_threads: int | None):
    """Fixed thread count and deterministic algorithms, restored afterwards."""
    torch = _torch()
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        if n_threads is not None:
            torch.set_num_threads(int(n_threads))
        torch.use_deterministic_algorithms(True)
        yield torch
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def mlp(n_in: int, width: int, n_out: int, n_layers: int, dropout: float) -> torch.nn.Sequential:
    """PerturBench's MLP: ``Linear(in, w)``, ``n_layers`` x [``Linear(w, w)``, LayerNorm, ReLU, Dropout], ``Linear(w, out)``."""
    nn = _torch().nn
    layers = [nn.Linear(n_in, width)]
    for _ in range(n_layers):
        layers += [nn.Linear(width, width), nn.LayerNorm(width, elementwise_affine=False), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class _PerturBenchModel(PerturbationModel):
    """Shared data handling, training loop and prediction of the three architectures."""

    def _common(
        self,
        lr: float,
        weight_decay: float,
        batch_size: int,
        max_epochs: int,
        max_seconds: float,
        patience: int,
        val_fraction: float,
        training: str,
        n_control_samples: int,
        seed: int,
        n_threads: int | None,
    ) -> None:
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.max_seconds = max_seconds
        self.patience = patience
        self.val_fraction = val_fraction
        self.training = training
        self.n_control_samples = n_control_samples
        self.seed = seed
        self.n_threads = n_threads

    # -- the network (subclasses) -----------------------------------------------------
    def _build(self, n_genes: int, n_pert: int, control: torch.Tensor) -> torch.nn.Module:  # pragma: no cover - abstract
        """The network; ``control`` (the control mean profile) sets the output bias (see module docstring)."""
        raise NotImplementedError

    # -- helpers ----------------------------------------------------------------------
    def _encode(self, perturbations: Sequence[str]) -> np.ndarray:
        """Multi-hot perturbation vectors (perturbations x perturbed genes)."""
        index = self._gene_index
        out = np.zeros((len(perturbations), len(index)), dtype=np.float32)
        for i, p in enumerate(perturbations):
            for g in target_genes(p):
                out[i, index[g]] = 1.0
        return out

    def _check_params(self):
        if self.training not in TRAINING_MODES:
            raise ValueError(f"training must be one of {TRAINING_MODES}, not {self.training!r}")
        if int(self.max_epochs) < 1 or not self.max_seconds > 0:
            raise ValueError("max_epochs must be >= 1 and max_seconds > 0")
        if not 0 <= self.val_fraction < 1:
            raise ValueError("val_fraction must be in [0, 1)")

    def _validation_perturbations(self, perts: list[str]) -> list[str]:
        if self.val_fraction <= 0:
            return []
        doubles = [p for p in perts if len(target_genes(p)) == 2]
        pool = sorted(doubles if len(doubles) >= 5 else perts)
        n_val = int(round(self.val_fraction * len(pool)))
        if len(pool) < 5 or n_val < 1:
            return []
        rng = np.random.default_rng(int(self.seed))
        return sorted(rng.choice(pool, size=n_val, replace=False).tolist())

    # -- fit --------------------------------------------------------------------------
    _tags = ModelTags(slow=True)

    def tags(self) -> ModelTags:
        return replace(self._tags, training_data="cells" if self.training == "cells" else "pseudobulk")

    def fit(self, train: AnnData) -> Self:
        self._check_params()
        cells_mode = self.training == "cells"
        if cells_mode and is_pseudobulk(train):
            raise DataError(f"{type(self).__name__}(training='cells') needs single cells; got a pseudobulk. Use training='pseudobulk'.")
        pb = pseudobulk(train)
        table = pd.DataFrame(pb.X, index=pb.obs_names.astype(str), columns=pb.var_names.astype(str))
        if CONTROL not in table.index:
            raise DataError("the training data have no control cells; the PerturBench models need them as input.")
        if not np.isfinite(table.to_numpy()).all():
            raise DataError("the training pseudobulk holds NaN or infinite values.")
        perts = [p for p in table.index if p != CONTROL]
        if not perts:
            raise DataError("the training data hold no perturbed cells.")
        self.genes_ = table.columns.copy()
        self.control_ = table.loc[CONTROL].copy()
        self.perturbed_genes_ = pd.Index(sorted({g for p in perts for g in target_genes(p)}), name="gene")
        self._gene_index = {g: i for i, g in enumerate(self.perturbed_genes_)}
        val = self._validation_perturbations(perts)
        fit_perts = [p for p in perts if p not in set(val)]
        self.validation_perturbations_ = tuple(val)

        torch = _torch()
        start = time.perf_counter()
        with _torch_settings(self.n_threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            gen = torch.Generator().manual_seed(int(self.seed))
            ctrl_mean = torch.tensor(self.control_.to_numpy(), dtype=torch.float32)
            net = self._build(len(self.genes_), len(self.perturbed_genes_), ctrl_mean)

            if cells_mode:
                X = train.X
                labels = train.obs["perturbation"].astype(str).to_numpy()
                keep = np.isin(labels, fit_perts + [CONTROL])
                ctrl_rows = np.flatnonzero(labels == CONTROL)
                ctrl_cells = torch.tensor(_dense(X[ctrl_rows]), dtype=torch.float32)
                targets = torch.tensor(_dense(X[np.flatnonzero(keep)]), dtype=torch.float32)
                codes = self._encode(labels[keep])
                p_train = torch.tensor(codes)
                n_sample = min(int(self.n_control_samples), len(ctrl_rows))
                sample = torch.randperm(len(ctrl_rows), generator=gen)[:n_sample]
                self.control_sample_ = ctrl_cells[sample].clone()
            else:
                names = fit_perts + [CONTROL]
                targets = torch.tensor(table.loc[names].to_numpy(), dtype=torch.float32)
                p_train = torch.tensor(self._encode(names))
                self.control_sample_ = ctrl_mean[None, :].clone()

            val_targets = torch.tensor(table.loc[val].to_numpy(), dtype=torch.float32) if val else None
            p_val = torch.tensor(self._encode(val)) if val else None
            optim = torch.optim.Adam(net.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
            n = targets.shape[0]
            batch = max(1, min(int(self.batch_size), n))
            best, best_state, since_best = np.inf, None, 0
            history, stopped = [], "max_epochs"
            for epoch in range(int(self.max_epochs)):
                net.train()
                order = torch.randperm(n, generator=gen)
                if cells_mode:
                    partner = torch.randint(0, ctrl_cells.shape[0], (n,), generator=gen)
                total = 0.0
                for s in range(0, n, batch):
                    idx = order[s : s + batch]
                    # pseudobulk: every example shares the control mean; one row broadcasts over the batch
                    x_in = ctrl_cells[partner[idx]] if cells_mode else ctrl_mean[None, :]
                    loss = torch.mean((net(x_in, p_train[idx]) - targets[idx]) ** 2)
                    optim.zero_grad()
                    loss.backward()
                    optim.step()
                    total += float(loss.detach()) * len(idx)
                record = {"epoch": epoch + 1, "train_mse": total / n}
                if val:
                    net.eval()
                    with torch.no_grad():
                        vloss = float(torch.mean((self._mean_prediction(net, p_val) - val_targets) ** 2))
                    record["val_mse"] = vloss
                    if vloss < best - 1e-12:
                        best, since_best = vloss, 0
                        best_state = {k: v.clone() for k, v in net.state_dict().items()}
                    else:
                        since_best += 1
                history.append(record)
                if val and since_best >= int(self.patience):
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
        self.best_epoch_ = int(self.history_["val_mse"].idxmin()) if val else self.n_epochs_
        self.stopped_because_ = stopped
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _mean_prediction(self, net: torch.nn.Module, p: torch.Tensor, chunk: int = 65_536) -> torch.Tensor:
        """Average output over the stored control inputs, for every row of ``p`` (vectorised in chunks)."""
        torch = _torch()
        ctrl = self.control_sample_
        S = ctrl.shape[0]
        if S == 1:  # pseudobulk: the single control row broadcasts over the perturbations
            return net(ctrl, p)
        per_chunk = max(1, chunk // S)
        outs = []
        for start in range(0, p.shape[0], per_chunk):
            block = p[start : start + per_chunk]
            x = ctrl.repeat(block.shape[0], 1)
            out = net(x, block.repeat_interleave(S, dim=0))
            outs.append(out.view(block.shape[0], S, -1).mean(dim=1))
        return torch.cat(outs) if outs else torch.zeros((0, ctrl.shape[1]))

    # -- predict ----------------------------------------------------------------------
    def unpredictable(self, perturbations: Sequence[str]) -> dict[str, str]:
        """Perturbations with a target gene never perturbed in training (its weights are untrained)."""
        self._check_fitted()
        out = {}
        for p in perturbations:
            unseen = [g for g in target_genes(p) if g not in self._gene_index]
            if unseen:
                out[p] = f"target gene {', '.join(unseen)} not perturbed in the training data (no trained embedding)"
        return out

    def _predict(self, perturbations: list[str]) -> pd.DataFrame:
        torch = _torch()
        codes = torch.tensor(self._encode(list(perturbations)))
        with _torch_settings(self.n_threads), torch.no_grad():
            self.network_.eval()
            values = self._mean_prediction(self.network_, codes).numpy().astype(np.float64)
        return pd.DataFrame(values, index=pd.Index(list(perturbations)), columns=self.genes_)


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """``log(exp(y) - 1)``, the input whose softplus is ``y`` (y floored at 1e-4 for zeros)."""
    torch = _torch()
    y = torch.clamp(y, min=1e-4)
    return y + torch.log(-torch.expm1(-y))


def _dense(X: np.ndarray | sp.spmatrix) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)


# -----------------------------------------------------------------------------------------
# the three architectures
# -----------------------------------------------------------------------------------------


def _module(forward: Callable[..., torch.Tensor], **parts: object) -> torch.nn.Module:
    """A torch Module holding ``parts`` whose forward is ``forward(module, *inputs)``.

    The models here call it with ``(x_ctrl, p)``; the cell-level models of
    :mod:`helpers.models.cell_models` with ``(x_ctrl, p, c)``.
    """
    nn = _torch().nn

    class _Net(nn.Module):
        def __init__(self):
            super().__init__()
            for k, v in parts.items():
                setattr(self, k, v)

        def forward(self, *inputs: torch.Tensor | None) -> torch.Tensor:
            return forward(self, *inputs)

    return _Net()


class LinearAdditive(_PerturBenchModel):
    """PerturBench's linear additive model: ``x̂ = softplus(x_ctrl + W p + b)``.

    ``W`` (genes x perturbed genes) and ``b`` are learned; a double adds the columns of its
    two genes, so the model is additive in the pre-softplus scale by construction.
    Published Norman19 best: lr 4.7e-3, weight decay 1.8e-8 (per-cell training, many steps
    per epoch); the default lr here is larger because pseudobulk training takes about a
    hundred times fewer steps per epoch. See the module docstring for the training
    protocol and the other parameters.
    """

    name = "linear additive (torch)"

    def __init__(
        self,
        lr: float = 2e-2,
        weight_decay: float = 1.8e-8,
        batch_size: int = 32,
        max_epochs: int = 300,
        max_seconds: float = 60.0,
        patience: int = 20,
        val_fraction: float = 0.2,
        training: str = "pseudobulk",
        n_control_samples: int = 200,
        seed: int = 0,
        n_threads: int | None = 1,
    ):
        self._common(
            lr, weight_decay, batch_size, max_epochs, max_seconds, patience, val_fraction, training, n_control_samples, seed, n_threads
        )

    def _build(self, n_genes: int, n_pert: int, control: torch.Tensor) -> torch.nn.Module:
        torch = _torch()
        softplus = torch.nn.functional.softplus
        linear = torch.nn.Linear(n_pert, n_genes)
        with torch.no_grad():  # start at "no change": W = 0, softplus(x̄_c + b) = x̄_c
            linear.weight.zero_()
            linear.bias.copy_(_inverse_softplus(control) - control)
        return _module(lambda m, x, p: softplus(x + m.linear(p)), linear=linear)


class LatentAdditive(_PerturBenchModel):
    """PerturBench's latent additive model.

    ``z = Enc_gene(x_ctrl) + Enc_pert(p)``, ``x̂ = softplus(Dec(z))``, three MLPs of width
    ``width`` with ``n_layers`` hidden blocks and a ``latent``-dimensional bottleneck.
    Published Norman19 best: width 4,352, latent 512, 1 layer, dropout 0.1, lr 9.3e-5,
    weight decay 2.2e-8 (GPU, per cell); the defaults here are CPU-sized, with a larger lr for
    the far fewer steps of pseudobulk training (see module docstring).
    """

    name = "latent additive (torch)"

    def __init__(
        self,
        width: int = 128,
        latent: int = 32,
        n_layers: int = 1,
        dropout: float = 0.1,
        lr: float = 2e-3,
        weight_decay: float = 2.2e-8,
        batch_size: int = 32,
        max_epochs: int = 300,
        max_seconds: float = 60.0,
        patience: int = 20,
        val_fraction: float = 0.2,
        training: str = "pseudobulk",
        n_control_samples: int = 200,
        seed: int = 0,
        n_threads: int | None = 1,
    ):
        self.width, self.latent, self.n_layers, self.dropout = width, latent, n_layers, dropout
        self._common(
            lr, weight_decay, batch_size, max_epochs, max_seconds, patience, val_fraction, training, n_control_samples, seed, n_threads
        )

    def _build(self, n_genes: int, n_pert: int, control: torch.Tensor) -> torch.nn.Module:
        torch = _torch()
        softplus = torch.nn.functional.softplus
        w, k, L, d = int(self.width), int(self.latent), int(self.n_layers), float(self.dropout)
        decoder = mlp(k, w, n_genes, L, d)
        with torch.no_grad():  # output bias at the control profile (before the softplus)
            decoder[-1].bias.copy_(_inverse_softplus(control))
        return _module(
            lambda m, x, p: softplus(m.decoder(m.gene_encoder(x) + m.pert_encoder(p))),
            gene_encoder=mlp(n_genes, w, k, L, d),
            pert_encoder=mlp(n_pert, w, k, L, d),
            decoder=decoder,
        )


class DecoderOnly(_PerturBenchModel):
    """PerturBench's decoder-only model: ``x̂ = Dec(p)``, no softplus, the control cell ignored.

    Published Norman19 best: 3 layers of width 3,328, lr 1.4e-4, weight decay 4.4e-5; the
    defaults here are CPU-sized, with a larger lr for the far fewer steps of pseudobulk
    training (see module docstring).
    """

    name = "decoder only (torch)"

    def __init__(
        self,
        width: int = 128,
        n_layers: int = 1,
        dropout: float = 0.1,
        lr: float = 2e-3,
        weight_decay: float = 4.4e-5,
        batch_size: int = 32,
        max_epochs: int = 300,
        max_seconds: float = 60.0,
        patience: int = 20,
        val_fraction: float = 0.2,
        training: str = "pseudobulk",
        n_control_samples: int = 200,
        seed: int = 0,
        n_threads: int | None = 1,
    ):
        self.width, self.n_layers, self.dropout = width, n_layers, dropout
        self._common(
            lr, weight_decay, batch_size, max_epochs, max_seconds, patience, val_fraction, training, n_control_samples, seed, n_threads
        )

    def _build(self, n_genes: int, n_pert: int, control: torch.Tensor) -> torch.nn.Module:
        torch = _torch()
        w, L, d = int(self.width), int(self.n_layers), float(self.dropout)
        decoder = mlp(n_pert, w, n_genes, L, d)
        with torch.no_grad():  # output bias at the control profile
            decoder[-1].bias.copy_(control)
        return _module(lambda m, x, p: m.decoder(p), decoder=decoder)

    def _mean_prediction(self, net: torch.nn.Module, p: torch.Tensor) -> torch.Tensor:
        # the output does not depend on the control input: one pass per perturbation suffices
        return net(None, p)


#: The three models by their result-table names.
MODELS = {cls.name: cls for cls in (LinearAdditive, LatentAdditive, DecoderOnly)}
