"""A small neural network from the perturbation embedding to the change profile (torch, CPU).

The deep-learning comparator of the unseen-perturbation benchmark: the same input as the
linear model of Ahlmann-Eltze et al. (the embedding of the perturbed gene), but a
non-linear map to the response, trained by gradient descent instead of solved in closed
form. It asks whether flexibility buys anything over ``Y ≈ G W P + b`` when the perturbed
gene was never seen.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Self

import numpy as np
import pandas as pd

from ..data.canonical import CONTROL
from ..data.pseudobulk import pseudobulk
from ..errors import DataError
from .base import ModelTags, PerturbationModel
from .linear import TargetGeneEmbedding, _max_components, _top_pcs, clean_embedding_table

if TYPE_CHECKING:
    from anndata import AnnData


class MLPModel(PerturbationModel):
    """Multi-layer perceptron ``Δ̂_p = b + f_θ(s ⊙ (e_p − μ))``, trained on pseudobulk changes.

    Fit, on the training conditions ``p`` whose target gene has an embedding ``e_p``:

    1. ``Δ_p = x̄_p − x̄_c`` (pseudobulk change from control; with ``include_control`` the
       control is one more condition with ``Δ = 0`` and ``e = 0``, as in the linear model);
    2. ``b`` = mean of the ``Δ_p``; inputs standardised with the training mean ``μ`` and
       standard deviation (``s = 1/sd``) of the embeddings;
    3. ``f_θ``: Linear → ReLU (→ Dropout) per hidden layer, then Linear to all genes, last
       layer initialised at zero (the untrained network predicts the mean change ``b``);
       loss ``mean_p mean_g (Δ̂_pg − Δ_pg)²``; Adam with ``weight_decay``; mini-batches of
       ``batch_size`` conditions, shuffled each epoch, for ``max_epochs`` epochs.

    Predict: ``ŷ_p = x̄_c + b + f_θ(s ⊙ (e_p − μ))`` (mean log-normalised expression).

    The embedding is that of :class:`helpers.models.linear.LinearModel`: ``"training_pca"``
    (row ``g`` of the PCA of the training pseudobulk with genes as rows; a target gene that
    is not measured cannot be embedded), ``"random"`` or a genes x K DataFrame (e.g. a GO
    embedding). Doubles get the sum of their genes' embeddings.

    Determinism: all randomness (initialisation, shuffling, dropout) comes from generators
    seeded with ``seed`` (torch's global generator is restored afterwards); the fit runs with
    ``torch.use_deterministic_algorithms(True)`` and ``n_threads`` threads (both restored
    afterwards), so the same data and parameters give identical predictions. ``max_seconds``
    stops training early on a slow machine; that breaks reproducibility, so the default is
    generous and ``stopped_early_`` records whether it happened.

    Parameters
    ----------
    embedding
        ``"training_pca"``, ``"random"`` or a DataFrame (rows = gene symbols).
    n_components
        Dimension of the PCA / random embedding.
    hidden_sizes
        Widths of the hidden layers.
    dropout
        Dropout probability after each hidden layer.
    learning_rate, weight_decay
        Adam's step size and L2 penalty.
    batch_size
        Conditions per optimisation step.
    max_epochs
        Passes over the training conditions.
    max_seconds
        Wall-time bound of the training loop (``None``: no bound).
    include_control
        Use the control as one more training condition (change 0, embedding 0).
    seed
        Seed of the torch generator (and of the random embedding).
    n_threads
        Torch CPU threads during fit and predict.
    """

    name = "MLP (torch)"

    def __init__(
        self,
        embedding: str | pd.DataFrame = "training_pca",
        n_components: int = 10,
        hidden_sizes: Sequence[int] = (128,),
        dropout: float = 0.0,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 64,
        max_epochs: int = 100,
        max_seconds: float | None = 60.0,
        include_control: bool = True,
        seed: int = 0,
        n_threads: int = 1,
    ):
        self.embedding = embedding
        self.n_components = n_components
        self.hidden_sizes = hidden_sizes
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.max_seconds = max_seconds
        self.include_control = include_control
        self.seed = seed
        self.n_threads = n_threads

    # -- helpers ----------------------------------------------------------------------
    def _check_params(self) -> None:
        if isinstance(self.embedding, str) and self.embedding not in ("training_pca", "random"):
            raise ValueError(f"embedding must be 'training_pca', 'random' or a DataFrame, not {self.embedding!r}")
        if int(self.n_components) < 1:
            raise ValueError("n_components must be at least 1")
        if int(self.max_epochs) < 1 or int(self.batch_size) < 1:
            raise ValueError("max_epochs and batch_size must be at least 1")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")
        if any(int(h) < 1 for h in self.hidden_sizes):
            raise ValueError("hidden layer sizes must be positive")

    def _network(self, n_in: int, n_out: int):
        import torch
        from torch import nn

        layers, width = [], n_in
        for h in self.hidden_sizes:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            if self.dropout > 0:
                layers.append(nn.Dropout(self.dropout))
            width = int(h)
        last = nn.Linear(width, n_out)
        layers.append(last)
        net = nn.Sequential(*layers)  # float32
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
        return net

    class _TorchState:
        """Set torch's thread count and determinism flag for a block, then restore them."""

        def __init__(self, n_threads: int):
            self.n_threads = n_threads

        def __enter__(self):
            import torch

            self.threads = torch.get_num_threads()
            self.deterministic = torch.are_deterministic_algorithms_enabled()
            torch.set_num_threads(max(1, int(self.n_threads)))
            torch.use_deterministic_algorithms(True)
            return torch

        def __exit__(self, *exc):
            import torch

            torch.set_num_threads(self.threads)
            torch.use_deterministic_algorithms(self.deterministic)
            return False

    # -- fit / predict ----------------------------------------------------------------
    def tags(self) -> ModelTags:
        own_pca = isinstance(self.embedding, str) and self.embedding == "training_pca"
        return replace(super().tags(), all_genes=own_pca, embeds_targets=True, slow=True)

    def fit(self, train: AnnData) -> Self:
        self._check_params()
        pb = pseudobulk(train)
        table = pd.DataFrame(pb.X, index=pb.obs_names.copy(), columns=pb.var_names.copy())
        if CONTROL not in table.index:
            raise DataError("the training data have no control cells; the MLP predicts changes from them.")
        if not np.isfinite(table.to_numpy()).all():
            raise DataError("the training pseudobulk holds NaN or infinite values; clean the expression matrix first.")
        control = table.loc[CONTROL]
        perts = [p for p in table.index if p != CONTROL]
        if not perts:
            raise DataError("the training data hold no perturbed cells; the MLP needs some.")
        conditions = perts + ([CONTROL] if self.include_control else [])

        if isinstance(self.embedding, pd.DataFrame):
            emb = TargetGeneEmbedding("table", clean_embedding_table(self.embedding, "embedding"))
        elif self.embedding == "random":
            emb = TargetGeneEmbedding("random", dim=int(self.n_components), seed=int(self.seed))
        else:
            X = table.loc[conditions].to_numpy(dtype=np.float64).T
            k = min(int(self.n_components), _max_components(*X.shape))
            scores, _ = _top_pcs(X, k)
            emb = TargetGeneEmbedding(
                "training_pca", pd.DataFrame(scores, index=table.columns.copy(), columns=[f"PC{i + 1}" for i in range(k)])
            )
        E_all, missing = emb.vectors(conditions)
        excluded = {p: emb.reason(p) for p in missing}
        used = [p for p in conditions if p not in excluded]
        if sum(p != CONTROL for p in used) < 2:
            raise DataError(
                f"the MLP needs at least 2 training perturbations with an embedding; excluded: {dict(list(excluded.items())[:5])}"
            )
        E = E_all[:, [conditions.index(p) for p in used]].T  # conditions x K
        Y = (table.loc[used] - control).to_numpy(dtype=np.float64)  # conditions x genes
        b = Y.mean(axis=0)
        mu = E.mean(axis=0)
        sd = E.std(axis=0)
        scale = np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > 1e-12)

        with self._TorchState(self.n_threads) as torch, torch.random.fork_rng(devices=[]):
            # initialisation and dropout draw from torch's global generator: seed it here, restore it on exit
            torch.manual_seed(int(self.seed))
            gen = torch.Generator().manual_seed(int(self.seed))
            net = self._network(E.shape[1], Y.shape[1])
            inputs = torch.from_numpy(((E - mu) * scale).astype(np.float32))
            targets = torch.from_numpy((Y - b).astype(np.float32))
            opt = torch.optim.Adam(net.parameters(), lr=float(self.learning_rate), weight_decay=float(self.weight_decay))
            n = inputs.shape[0]
            start = time.perf_counter()
            losses, stopped = [], False
            net.train()
            for _epoch in range(int(self.max_epochs)):
                order = torch.randperm(n, generator=gen)
                total = 0.0
                for i in range(0, n, int(self.batch_size)):
                    idx = order[i : i + int(self.batch_size)]
                    opt.zero_grad()
                    loss = torch.mean((net(inputs[idx]) - targets[idx]) ** 2)
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(idx)
                losses.append(total / n)
                if self.max_seconds is not None and time.perf_counter() - start > float(self.max_seconds):
                    stopped = True
                    break
            net.eval()

        self.genes_ = table.columns.copy()
        self.control_ = control.copy()
        self.b_ = pd.Series(b, index=self.genes_, name="b")
        self.embedding_ = emb
        self.input_mean_ = mu
        self.input_scale_ = scale
        self.network_ = net
        self.training_conditions_ = pd.Index(used)
        self.excluded_ = excluded
        self.loss_history_ = np.array(losses)
        self.n_epochs_ = len(losses)
        self.stopped_early_ = stopped
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def unpredictable(self, perturbations: Sequence[str]) -> dict[str, str]:
        self._check_fitted()
        return self.embedding_.unpredictable(list(perturbations))

    def _predict(self, perturbations: list[str]) -> pd.DataFrame:
        E, _ = self.embedding_.vectors(perturbations)
        with self._TorchState(self.n_threads) as torch, torch.no_grad():
            x = ((E.T - self.input_mean_) * self.input_scale_).astype(np.float32)
            out = self.network_(torch.from_numpy(x)).numpy().astype(np.float64)
        values = out + (self.b_.to_numpy() + self.control_.to_numpy())[None, :]
        return pd.DataFrame(values, index=pd.Index(perturbations), columns=self.genes_)
