"""The evaluation engine and the model registry: one loop, one factory, for every chapter."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.benchmarks.engine import TrainingData, run_folds, run_models
from helpers.data import kfold_split, profiles, pseudobulk
from helpers.errors import DataError, ParameterError
from helpers.models import ModelTags, PerturbationModel
from helpers.models.baselines import MeanBaseline, NoChange
from helpers.models.registry import MODELS, build_model, build_models, model_table, model_tags


class Recorder(PerturbationModel):
    """A model that remembers what it was fitted on; predicts the training mean; can be told to fail."""

    def __init__(self, training_data: str = "pseudobulk", all_genes: bool = False, fail: str = "", external: bool = False):
        self.training_data = training_data
        self.all_genes = all_genes
        self.fail = fail
        self.external = external

    def tags(self) -> ModelTags:
        return ModelTags(training_data=self.training_data, all_genes=self.all_genes, external=self.external)

    def fit(self, train):
        if self.fail == "fit":
            raise RuntimeError("the fit blew up")
        self.seen_ = train
        self.genes_ = pd.Index(train.var_names if hasattr(train, "var_names") else train.columns)
        return self

    def unpredictable(self, perturbations):
        self._check_fitted()
        return {p: "not this one" for p in perturbations if p == "C"}

    def _predict(self, perturbations):
        if self.fail == "predict":
            raise ValueError("predict blew up")
        return pd.DataFrame(1.0, index=pd.Index(perturbations), columns=self.genes_)


def test_each_model_gets_the_training_data_its_tags_ask_for(tiny_screen):
    train = TrainingData(tiny_screen, genes=["g0", "g1"])
    models = {
        "cells": Recorder("cells"),
        "pb": Recorder("pseudobulk"),
        "all": Recorder("pseudobulk", all_genes=True),
        "cells all": Recorder("cells", all_genes=True),
    }
    run = run_models(models, train, ["A", "B", "C"])
    seen = {name: m.seen_ for name, m in run.models.items()}
    assert seen["cells"].n_obs == tiny_screen.n_obs and list(seen["cells"].var_names) == ["g0", "g1"]
    assert list(seen["pb"].obs_names) == sorted(set(tiny_screen.obs["perturbation"])) and list(seen["pb"].var_names) == ["g0", "g1"]
    assert list(seen["all"].var_names) == ["g0", "g1", "g2"] and list(seen["cells all"].var_names) == ["g0", "g1", "g2"]
    np.testing.assert_allclose(seen["pb"].X, pseudobulk(tiny_screen)[:, ["g0", "g1"]].X)
    # predictions are restricted to the evaluated genes, whatever the model was fitted on
    assert all(list(p.columns) == ["g0", "g1"] for p in run.predictions.values())
    # views are built once and shared
    assert seen["pb"] is train.for_model(ModelTags())


def test_a_failing_model_is_reported_and_the_others_keep_their_results(tiny_screen):
    train = TrainingData(tiny_screen)
    models = {"ok": Recorder(), "fit fails": Recorder(fail="fit"), "predict fails": Recorder(fail="predict"), "no change": NoChange()}
    run = run_models(models, train, ["A", "B", "C"])
    assert set(run.predictions) == {"ok", "no change"}
    assert run.failures["fit fails"] == "fitting failed: RuntimeError: the fit blew up"
    assert run.failures["predict fails"] == "predicting failed: ValueError: predict blew up"
    status = run.fits.set_index("model")["status"]
    assert status.to_dict() == {"ok": "ok", "fit fails": "failed", "predict fails": "failed", "no change": "ok"}
    # the failed models do not empty the common set: it is what every model with predictions predicts
    assert run.common == ["A", "B"]
    assert run.exclusions.to_dict("records") == [{"model": "ok", "perturbation": "C", "reason": "not this one"}]
    report = run.report()
    assert "fit fails is left out of the comparison: fitting failed" in report and "ok cannot predict 1: C (not this one)" in report
    scored = run.score(profiles(tiny_screen), profiles(tiny_screen).loc["control"], metrics=["l2"])
    assert set(scored["model"]) == {"ok", "no change"}
    assert scored.set_index(["model", "perturbation"])["common_set"].to_dict() == {
        ("ok", "A"): True,
        ("ok", "B"): True,
        ("no change", "A"): True,
        ("no change", "B"): True,
        ("no change", "C"): False,
    }


def test_a_model_that_predicts_nothing_is_left_out_of_the_common_set(tiny_screen):
    run = run_models({"only C is unpredictable": Recorder(), "mean": MeanBaseline()}, TrainingData(tiny_screen), ["C"])
    assert "cannot predict any of the 1 perturbations (e.g. not this one)" in run.failures["only C is unpredictable"]
    assert run.common == ["C"]


def test_an_external_models_error_is_the_users_and_is_raised(tiny_screen):
    with pytest.raises(RuntimeError, match="blew up"):
        run_models({"mine": Recorder(fail="fit", external=True)}, TrainingData(tiny_screen), ["A"])
    with pytest.raises(DataError, match="duplicates"):
        run_models({"ok": Recorder()}, TrainingData(tiny_screen), ["A", "A"])


def test_changes_become_a_pseudobulk_with_a_zero_control():
    changes = pd.DataFrame([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [7.0, 6.0]], index=list("ABCD"), columns=["g1", "g2"])
    folds = kfold_split(list("ABCD"), n_folds=2, seed=0)
    result = run_folds(
        folds,
        lambda k, split: build_models(["mean (perturbations)", "no change", "mean"]),
        lambda k, split: TrainingData(changes=changes.loc[list(split.train)]),
    )
    for split in folds:
        train = changes.loc[list(split.train)]
        for p in split.test:
            np.testing.assert_allclose(result.predictions["mean (perturbations)"].loc[p], train.mean())
            np.testing.assert_allclose(result.predictions["mean"].loc[p], train.sum() / (len(train) + 1))  # control row 0
            assert (result.predictions["no change"].loc[p] == 0).all()
    assert sorted(result.fold_of.index) == list("ABCD") and not result.failures


def test_run_folds_drops_a_model_that_fails_in_any_fold(tiny_screen):
    folds = kfold_split(["A", "B", "A+B"], n_folds=3, seed=0)
    fail_in = folds[1].test[0]
    result = run_folds(
        folds,
        lambda k, split: {"flaky": Recorder(fail="fit" if fail_in in split.test else ""), "ok": NoChange()},
        lambda k, split: TrainingData(tiny_screen),
    )
    assert "flaky" not in result.predictions and result.failures["flaky"].startswith("fold 1: fitting failed")
    assert sorted(result.predictions["ok"].index) == ["A", "A+B", "B"]


# ----------------------------------------------------------------------------- the registry


def test_registry_builds_each_model_with_the_options_it_takes():
    assert {"no change", "additive", "mean", "mean (perturbations)", "mean (cells)", "linear", "GEARS"} <= set(MODELS)
    linear = build_model("linear", seed=3, n_components=4)
    assert (linear.seed, linear.n_components, linear.ridge) == (3, 4, 0.1)
    with pytest.raises(ParameterError, match="takes no option"):
        build_model("linear", seeed=3)  # a typo is refused, not ignored
    with pytest.raises(ParameterError, match="needs the option"):
        build_model("linear (P from other screen)")
    with pytest.raises(ParameterError, match="no model of"):
        build_models(["no change"], n_componants=3)
    with pytest.raises(ParameterError, match="listed twice"):
        build_models(["mean", "mean"])
    models = build_models(["no change", "linear"], seed=2, n_components=5, max_seconds=9)  # shared options are fine
    assert models["linear"].n_components == 5
    # the three means are three different baselines, told apart by name
    assert (build_model("mean").include_control, build_model("mean (perturbations)").include_control) == (True, False)
    assert build_model("mean (cells)").weighting == "cell"
    table = model_table()
    assert list(table["model"]) == list(MODELS) and table["summary"].str.len().gt(10).all()
    assert model_tags("GEARS").environment == "gears" and model_tags("linear").all_genes


CHAPTER_MODULES = {
    "double_perturbations": "helpers/benchmarks/double_perturbations.py",
    "unseen_perturbations": "helpers/benchmarks/unseen_perturbations.py",
    "systema": "helpers/benchmarks/systema.py",
    "progress_bars": "helpers/benchmarks/progress_bars.py",
}
ROOT = Path(__file__).resolve().parents[1]
MODEL_CLASSES = {
    "NoChange",
    "Additive",
    "MeanBaseline",
    "MatchingMean",
    "LinearModel",
    "MLPModel",
    "GORandomForest",
    "LinearAdditive",
    "LatentAdditive",
    "DecoderOnly",
    "GEARSModel",
    "EmbeddingRegressor",
    "PredictionsFile",
}


@pytest.mark.parametrize("chapter", sorted(CHAPTER_MODULES))
def test_chapters_build_their_models_from_the_registry(chapter):
    # neither the chapter's module nor its notebook constructs a model class itself
    sources = [(ROOT / CHAPTER_MODULES[chapter]).read_text()]
    nb = json.loads((ROOT / "notebooks" / f"{chapter}.ipynb").read_text())
    sources += ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    for source in sources:
        calls = {
            node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute))
        }
        assert not calls & MODEL_CLASSES, f"{chapter} constructs {sorted(calls & MODEL_CLASSES)} itself instead of using the registry"


@pytest.mark.parametrize("chapter", sorted(CHAPTER_MODULES))
def test_every_chapter_model_is_a_registry_model(chapter):
    import importlib

    module = importlib.import_module(f"helpers.benchmarks.{chapter}")
    names = getattr(module, "MODELS", None) or module.NULL_MODELS
    assert set(names) <= set(MODELS)
