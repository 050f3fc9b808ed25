"""The model registry: every model of the suite by its result-table name.

A name means one thing everywhere: the chapters build their models from here, so
``"mean"`` in one chapter is the same baseline as ``"mean"`` in another. Each entry is a
factory that takes keyword options (``seed``, ``max_seconds``, an embedding table, ...);
:func:`build_models` passes each factory the options it accepts and refuses a missing
required one by name.

>>> from helpers.models.registry import build_models, model_table
>>> models = build_models(["no change", "mean", "linear"], seed=1)   # doctest: +SKIP
>>> model_table()                                                     # doctest: +SKIP

Three variants of the mean baseline are told apart by name, because the published
benchmarks differ exactly there:

* ``mean`` — the mean of the training perturbations' profiles with the control profile
  counted as one more training condition (Ahlmann-Eltze et al., ``run_mean_prediction.R``);
* ``mean (perturbations)`` — the mean of the training perturbations' centroids
  (perturbation-weighted): Systema's ``pert_mean``, Miller et al.'s dataset mean, Cole et
  al.'s training mean;
* ``mean (cells)`` — the mean of all perturbed training cells (cell-weighted): Systema's
  non-control mean.

Register a model of your own with :func:`register` (see CONTRIBUTING.md).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from ..data.canonical import target_genes
from ..errors import ParameterError
from .base import ModelTags, PerturbationModel

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the registry: a name, a factory and a one-line description with its source."""

    name: str
    factory: Callable[..., PerturbationModel]
    summary: str
    source: str = ""

    @property
    def options(self) -> dict[str, object]:
        """The keyword options the factory accepts, with their defaults (``inspect.Parameter.empty`` if required)."""
        params = inspect.signature(self.factory).parameters.values()
        return {p.name: p.default for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}

    def build(self, strict: bool = True, **options) -> PerturbationModel:
        """A fresh, unfitted model built with ``options``.

        ``strict``: refuse an option the factory does not take (a misspelt option would
        otherwise be silently ignored); :func:`build_models` passes one set of options to
        several factories and checks instead that each option is taken by at least one.
        """
        accepted = self.options
        missing = [k for k, default in accepted.items() if default is inspect.Parameter.empty and k not in options]
        if missing:
            raise ParameterError(
                f"model {self.name!r} needs the option(s) {missing}; pass them to build_models (e.g. "
                f"build_models([{self.name!r}], {missing[0]}=...))."
            )
        unknown = sorted(set(options) - set(accepted))
        if strict and unknown:
            raise ParameterError(f"model {self.name!r} takes no option(s) {unknown}; its options are {sorted(accepted)}.")
        return self.factory(**{k: v for k, v in options.items() if k in accepted})


MODELS: dict[str, ModelSpec] = {}

#: Options a chapter may always pass to :func:`build_models`, even if none of its chosen models takes them.
SHARED_OPTIONS = (
    "seed",
    "perturbations",
    "max_seconds",
    "torch_training",
    "gears_epochs",
    "n_components",
    "ridge",
    "rf_trees",
    "reference_embedding",
    "go_embedding",
)


def register(name: str, summary: str, source: str = "") -> Callable:
    """Decorator: register ``factory`` under ``name`` (a result-table name, unique)."""

    def decorate(factory: Callable[..., PerturbationModel]) -> Callable[..., PerturbationModel]:
        if name in MODELS:
            raise ValueError(f"a model named {name!r} is already registered")
        MODELS[name] = ModelSpec(name, factory, summary, source)
        return factory

    return decorate


def model_spec(name: str) -> ModelSpec:
    """The registry entry of ``name``; a clear error listing the known names otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise ParameterError(
            f"unknown model {name!r}; the registry has {sorted(MODELS)} (give a model of your own as a predictions file)."
        ) from None


def build_model(name: str, /, **options) -> PerturbationModel:
    """A fresh model by its registry name (:func:`model_spec`), built with ``options`` (each must be one it takes)."""
    return model_spec(name).build(**options)


def build_models(names: Iterable[str], **options) -> dict[str, PerturbationModel]:
    """Fresh models by name, in the order given: ``{name: model}``.

    Every factory receives the ``options`` it accepts (e.g. ``seed``, ``max_seconds``,
    ``perturbations`` = the perturbations to predict); unknown names and missing required
    options raise :class:`helpers.errors.ParameterError`.
    """
    names = list(names)
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ParameterError(f"models listed twice: {duplicated}")
    specs = [model_spec(name) for name in names]
    taken = set().union(*(spec.options for spec in specs)) if specs else set()
    unused = sorted(set(options) - taken - set(SHARED_OPTIONS))
    if unused:
        raise ParameterError(f"no model of {names} takes the option(s) {unused}.")
    return {spec.name: spec.build(strict=False, **options) for spec in specs}


def check_model_names(names: Sequence[str], allowed: Sequence[str], parameter: str = "models") -> list[str]:
    """Refuse names outside ``allowed`` (a chapter's choice of registry models), naming the parameter."""
    names = list(names)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ParameterError(
            f"{parameter} = {names!r}: {unknown} cannot run in this chapter; choose from {list(allowed)} "
            "(your own model's predictions go in the `predictions` parameter)."
        )
    return names


def _placeholder(name: str) -> PerturbationModel:
    """A model built with its defaults (required options as None), to read its class and tags."""
    spec = model_spec(name)
    return spec.build(**{k: None for k, v in spec.options.items() if v is inspect.Parameter.empty})


def model_tags(name: str) -> ModelTags:
    """The tags of a registry model with its default hyperparameters."""
    return _placeholder(name).tags()


def model_table(names: Sequence[str] | None = None) -> pd.DataFrame:
    """The registry as a table: name, class, tags, options, summary and source."""
    rows = []
    for name in names if names is not None else MODELS:
        spec = model_spec(name)
        options = {k: v for k, v in spec.options.items() if k != "seed"}
        model = _placeholder(name)
        tags = model.tags()
        rows.append(
            {
                "model": name,
                "class": type(model).__name__,
                "trains on": tags.training_data,
                "all genes": tags.all_genes,
                "doubles": tags.predicts_doubles,
                "slow": tags.slow,
                "environment": tags.environment or "",
                "options": ", ".join(options),
                "summary": spec.summary,
                "source": spec.source,
            }
        )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- the baselines

AHLMANN_ELTZE = "Ahlmann-Eltze, Huber & Anders, Nature Methods 2025"
SYSTEMA = "Viñas Torné et al. (Systema), Nature Biotechnology 2025"
PERTURBENCH = "Wu et al. (PerturBench), arXiv 2408.10609"


@register("no change", "the control profile for every perturbation", AHLMANN_ELTZE)
def _no_change():
    from .baselines import NoChange

    return NoChange()


@register("additive", "control plus the sum of the single perturbations' changes", AHLMANN_ELTZE)
def _additive():
    from .baselines import Additive

    return Additive()


@register("mean", "mean of the training profiles, the control profile counted as one more condition", AHLMANN_ELTZE)
def _mean():
    from .baselines import MeanBaseline

    return MeanBaseline(weighting="perturbation", include_control=True)


@register("mean (perturbations)", "mean of the training perturbations' centroids (perturbation-weighted)", SYSTEMA)
def _mean_perturbations():
    from .baselines import MeanBaseline

    return MeanBaseline(weighting="perturbation")


@register("mean (cells)", "mean of all perturbed training cells (cell-weighted; Systema's non-control mean)", SYSTEMA)
def _mean_cells():
    from .baselines import MeanBaseline

    return MeanBaseline(weighting="cell")


@register("matching mean", "mean of the training profiles of the targeted genes, the cell-weighted mean for unseen ones", SYSTEMA)
def _matching_mean():
    from .baselines import MatchingMean

    return MatchingMean()


# ----------------------------------------------------------------------------- the linear model family


@register("linear", "Y ≈ G W P + b, G and P from a PCA of the training pseudobulk over genes (K = 10, λ = 0.1)", AHLMANN_ELTZE)
def _linear(seed: int = 0, n_components: int = 10, ridge: float = 0.1):
    from .linear import LinearModel

    return LinearModel(n_components=n_components, ridge=ridge, seed=seed)


@register("linear (random G)", "the linear model with a standard-normal gene embedding G", AHLMANN_ELTZE)
def _linear_random_g(seed: int = 0, n_components: int = 10, ridge: float = 0.1):
    from .linear import LinearModel

    return LinearModel(n_components=n_components, ridge=ridge, gene_embedding="random", seed=seed)


@register("linear (random P)", "the linear model with a standard-normal perturbation embedding P", AHLMANN_ELTZE)
def _linear_random_p(seed: int = 0, n_components: int = 10, ridge: float = 0.1):
    from .linear import LinearModel

    return LinearModel(n_components=n_components, ridge=ridge, perturbation_embedding="random", seed=seed)


@register("linear (P from other screen)", "the linear model with P = the PCA of every condition of another screen", AHLMANN_ELTZE)
def _linear_other_screen(reference_embedding: pd.DataFrame, seed: int = 0, n_components: int = 10, ridge: float = 0.1):
    from .linear import LinearModel

    return LinearModel(n_components=n_components, ridge=ridge, perturbation_embedding=reference_embedding, seed=seed)


@register("linear (P from GO)", "the linear model with P = an adjacency spectral embedding of the GO graph", AHLMANN_ELTZE)
def _linear_go(go_embedding: pd.DataFrame, seed: int = 0, n_components: int = 10, ridge: float = 0.1):
    from .linear import LinearModel

    return LinearModel(n_components=n_components, ridge=ridge, perturbation_embedding=go_embedding, seed=seed)


@register("random forest + GO", "random forest from a GO embedding of the target gene to the PCs of its change", AHLMANN_ELTZE)
def _random_forest_go(seed: int = 0, rf_trees: int = 100):
    from .knowledge import GORandomForest

    return GORandomForest(n_estimators=rf_trees, seed=seed)


# ----------------------------------------------------------------------------- neural networks


@register("MLP (torch)", "one-hidden-layer network from the linear model's PCA embedding to the change", AHLMANN_ELTZE)
def _mlp(seed: int = 0, n_components: int = 10, max_seconds: float = 60.0):
    from .mlp import MLPModel

    return MLPModel(n_components=n_components, seed=seed, max_seconds=max_seconds)


@register("linear additive (torch)", "PerturBench's linear additive model, x̂ = softplus(x_ctrl + W p)", PERTURBENCH)
def _linear_additive(seed: int = 0, max_seconds: float = 60.0, torch_training: str = "pseudobulk"):
    from .perturbench import LinearAdditive

    return LinearAdditive(seed=seed, max_seconds=max_seconds, training=torch_training)


@register("latent additive (torch)", "PerturBench's latent additive model, z = Enc(x_ctrl) + Enc(p), x̂ = Dec(z)", PERTURBENCH)
def _latent_additive(seed: int = 0, max_seconds: float = 60.0, torch_training: str = "pseudobulk"):
    from .perturbench import LatentAdditive

    return LatentAdditive(seed=seed, max_seconds=max_seconds, training=torch_training)


@register("decoder only (torch)", "PerturBench's decoder-only model, x̂ = Dec(p)", PERTURBENCH)
def _decoder_only(seed: int = 0, max_seconds: float = 60.0, torch_training: str = "pseudobulk"):
    from .perturbench import DecoderOnly

    return DecoderOnly(seed=seed, max_seconds=max_seconds, training=torch_training)


@register(
    "GEARS",
    "GEARS 0.1.2 (graph network on GO and co-expression), trained in its own environment",
    "Roohani et al., Nature Biotechnology 2024",
)
def _gears(seed: int = 0, gears_epochs: int = 2, perturbations: Sequence[str] = ()):
    from .gears import GEARSModel

    # GEARS fixes its graph of perturbable genes before training: the targets to be predicted go in it
    genes = sorted({g for p in perturbations or () for g in target_genes(p)}) or None
    return GEARSModel(epochs=gears_epochs, seed=seed, n_threads=1, perturbable_genes=genes)


@register(
    "GEARS (precomputed)",
    "GEARS' predictions made ahead of time by scripts/make_gears_predictions.py (data/gears), refused unless made for this run",
    "Roohani et al., Nature Biotechnology 2024",
)
def _gears_precomputed(chapter: str, dataset: str, seed: int = 0, gears_epochs: int = 2):
    from .precomputed import PrecomputedPredictions

    return PrecomputedPredictions(chapter=chapter, dataset=dataset, seed=seed, name="GEARS", epochs=gears_epochs)


# ----------------------------------------------------------------------------- embedding regressors


@register(
    "kNN on an embedding",
    "StandardScaler, PCA(100), k-nearest neighbours (k by inner 5-fold CV) from the target gene's embedding",
    "Cole et al. 2026",
)
def _knn_regressor(
    embedding: pd.DataFrame,
    seed: int = 42,
    n_components: int = 100,
    preprocess: bool = True,
    k_grid: Sequence[int] | None = None,
    inner_folds: int = 5,
):
    from .embedding_regressor import KNN_GRID, EmbeddingRegressor

    return EmbeddingRegressor(
        embedding,
        head="knn",
        n_components=n_components,
        seed=seed,
        preprocess=preprocess,
        k_grid=KNN_GRID if k_grid is None else k_grid,
        inner_folds=inner_folds,
    )


@register(
    "Lasso on an embedding", "StandardScaler, PCA(100), Lasso (α by inner 5-fold CV) from the target gene's embedding", "Cole et al. 2026"
)
def _lasso_regressor(
    embedding: pd.DataFrame,
    seed: int = 42,
    n_components: int = 100,
    preprocess: bool = True,
    alpha_grid: Sequence[float] | None = None,
    inner_folds: int = 5,
):
    from .embedding_regressor import LASSO_GRID, EmbeddingRegressor

    return EmbeddingRegressor(
        embedding,
        head="lasso",
        n_components=n_components,
        seed=seed,
        preprocess=preprocess,
        alpha_grid=LASSO_GRID if alpha_grid is None else alpha_grid,
        inner_folds=inner_folds,
    )


#: The registry name of each embedding-regressor head.
EMBEDDING_HEADS = {"knn": "kNN on an embedding", "lasso": "Lasso on an embedding"}


# ----------------------------------------------------------------------------- predictions made elsewhere


@register("predictions file", "predictions made elsewhere, read from a file (bring your own model)")
def _predictions_file(path: str | Path, name: str | None = None, values: str = "expression"):
    from pathlib import Path

    from .external import PredictionsFile

    return PredictionsFile(path, name=name or Path(str(path)).stem, values=values)


# ----------------------------------------------------------------------------- per cell line (covariate transfer)
# These predict conditions "perturbation@context" from cells of several lines (helpers.models.cell_models).


@register("no change (line control)", "the mean of the line's training control cells", PERTURBENCH)
def _context_control():
    from .cell_models import ContextControl

    return ContextControl()


@register("line mean", "the mean of the line's training perturbations' profiles", PERTURBENCH)
def _context_mean():
    from .cell_models import ContextMean

    return ContextMean()


@register("mean effect in other lines", "the line's control plus the perturbation's mean change in the other lines", PERTURBENCH)
def _other_contexts_effect():
    from .cell_models import OtherContextsEffect

    return OtherContextsEffect()


@register("linear additive (cells, covariates)", "x̂ = softplus(x_ctrl + W[p; line]), trained on cell pairs", PERTURBENCH)
def _linear_additive_cells(seed: int = 0, max_seconds: float = 60.0):
    from .cell_models import LinearAdditiveCells

    return LinearAdditiveCells(seed=seed, max_seconds=max_seconds)


@register(
    "latent additive (cells, covariates)", "z = Enc([x_ctrl; line]) + Enc(p), x̂ = softplus(Dec([z; line])), on cell pairs", PERTURBENCH
)
def _latent_additive_cells(seed: int = 0, max_seconds: float = 60.0):
    from .cell_models import LatentAdditiveCells

    return LatentAdditiveCells(seed=seed, max_seconds=max_seconds)


@register("decoder only (cells, covariates)", "x̂ = Dec([p; line]), trained on cells", PERTURBENCH)
def _decoder_only_cells(seed: int = 0, max_seconds: float = 60.0):
    from .cell_models import DecoderOnlyCells

    return DecoderOnlyCells(seed=seed, max_seconds=max_seconds)


@register("decoder-cov", "x̂ = Dec(line): ignores the perturbation (PerturBench's mode-collapse example)", PERTURBENCH)
def _decoder_cov(seed: int = 0, max_seconds: float = 60.0):
    from .cell_models import DecoderCovariates

    return DecoderCovariates(seed=seed, max_seconds=max_seconds)


@register("CPA", "compositional perturbation autoencoder with its adversary (MSE loss)", "Lotfollahi et al. 2023; " + PERTURBENCH)
def _cpa(seed: int = 0, max_seconds: float = 60.0):
    from .cell_models import CPA

    return CPA(adversary_weight=1.0, seed=seed, max_seconds=max_seconds)


@register("CPA (no adversary)", "the same CPA with the adversarial loss weighted 0 (PerturBench's ablation)", PERTURBENCH)
def _cpa_no_adversary(seed: int = 0, max_seconds: float = 60.0):
    from .cell_models import CPA

    return CPA(adversary_weight=0.0, seed=seed, max_seconds=max_seconds)


@register("predictions file (contexts)", "predictions made elsewhere, one row per (perturbation, cell line)")
def _context_predictions_file(path: str | Path, name: str | None = None, values: str = "expression"):
    from pathlib import Path

    from .cell_models import ContextPredictionsFile

    return ContextPredictionsFile(path, name=name or Path(str(path)).stem, values=values)


__all__ = [
    "EMBEDDING_HEADS",
    "MODELS",
    "ModelSpec",
    "build_model",
    "build_models",
    "check_model_names",
    "model_spec",
    "model_table",
    "model_tags",
    "register",
]
