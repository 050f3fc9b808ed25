"""The simulator's package (helpers.data.simulation): its modules import downward only, the
public entry point re-exports them, and a small screen keeps its numbers (a regression pin).

The behaviour of the simulator is tested in ``test_simulate.py``; this file guards its layout and
catches a refactor that changes a generated number without meaning to.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import helpers.data.simulate as simulate

PACKAGE = Path(__file__).resolve().parents[1] / "helpers" / "data" / "simulation"

#: Lowest first: a module may import only the modules listed before it.
ORDER = [
    "streams",
    "calibration",
    "truth",
    "sampling",
    "biology",
    "params",
    "design",
    "doubles",
    "effects",
    "cells",
    "assembly",
    "generate",
    "ondisk",
    "accessors",
]

#: What the simulator may import from the rest of the suite.
ALLOWED_OUTSIDE = {"helpers.errors", "helpers.console", "helpers.data.canonical", "helpers.data.annotations"}


def _suite_imports(path: Path) -> list[str]:
    """Absolute names of the suite modules ``path`` imports (function bodies too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ["helpers", "data", "simulation"][: 4 - node.level]
                found.append(".".join(base + ([node.module] if node.module else [])))
            elif (node.module or "").startswith("helpers"):
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("helpers")]
    return found


def test_every_module_has_a_place_in_the_order():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == set(ORDER)


@pytest.mark.parametrize("name", ORDER)
def test_modules_import_downward_only(name):
    own = ORDER.index(name)
    for target in _suite_imports(PACKAGE / f"{name}.py"):
        if target.startswith("helpers.data.simulation."):
            sibling = target.rsplit(".", 1)[1]
            assert ORDER.index(sibling) < own, f"{name} imports {sibling}, which is not below it"
        else:
            assert target in ALLOWED_OUTSIDE, f"{name} imports {target} from outside the simulator"


def test_the_entry_point_exports_the_objects_of_their_modules():
    from helpers.data.simulation import accessors, generate, params

    homes = {
        "simulate_screen": generate,
        "SimulationParams": params,
        "ContextParams": params,
        "INTERACTION_LABELS": params,
        **{n: accessors for n in ("true_changes", "systematic_component", "interaction_labels", "perturbation_truth", "simulation_params")},
    }
    for name, module in homes.items():
        assert getattr(simulate, name) is getattr(module, name)
    assert set(simulate.__all__) >= set(homes)


def test_a_small_screen_keeps_its_numbers():
    """Pinned from the simulator as of the module split: a refactor must not change them.

    The screen is made with ``LEGACY_MECHANISMS`` (the mechanisms added later switched to the
    values of that simulator), which must reproduce it exactly.

    Cell numbers and batches are integers drawn from the blocks' streams (a changed stream key
    changes them); the truth is pinned to a relative 1e-7; count totals loosely (float32 rounding
    on another CPU may flip a rare entry). Update the pins only for an intended change of the model.
    """
    contexts = (
        simulate.ContextParams("A", cells_per_perturbation=20, n_control_cells=600, n_singles=10),
        simulate.ContextParams("B", effect_scale=1.5, cells_per_perturbation=15, n_control_cells=300, library_scale=0.7),
    )
    p = simulate.SimulationParams(
        n_genes=300,
        n_programs=5,
        program_size=20,
        n_singles=12,
        n_doubles=6,
        n_batches=2,
        biology_seed=7,
        contexts=contexts,
        interaction_pair_share=1.0,
    ).with_overrides(**{**simulate.LEGACY_MECHANISMS, "interaction_pair_share": 1.0})
    adata = simulate.simulate_screen(p, seed=3)
    cells = adata.obs.groupby(["context", "perturbation"], observed=True).size()
    assert cells.loc["A"].to_dict() == {
        "control": 600,
        "CCDC181": 24,
        "CCDC181+RPS8": 32,
        "CREBBP": 27,
        "CXCR3": 14,
        "KIF1B": 14,
        "POLE": 13,
        "RALGDS": 19,
        "RALGDS+RAPGEF4": 19,
        "RAPGEF4": 13,
        "RPL14": 15,
        "RPL14+RPS8": 30,
        "RPS8": 21,
        "TULP3": 21,
    }
    assert cells.loc["B"].to_dict() == {
        "control": 300,
        "ATP6V0A4": 12,
        "ATP6V0A4+KIF1B": 14,
        "ATP6V0A4+RPS8": 9,
        "CCDC181": 12,
        "CCDC181+RPS8": 12,
        "CREBBP": 14,
        "CXCR3": 14,
        "KIF1B": 16,
        "POLE": 11,
        "RALGDS": 12,
        "RALGDS+RAPGEF4": 12,
        "RAPGEF4": 9,
        "RAPGEF4+TNFRSF13B": 16,
        "RPL14": 14,
        "RPL14+RPS8": 15,
        "RPS8": 16,
        "TNFRSF13B": 15,
        "TULP3": 15,
    }
    assert adata.obs["batch"].value_counts(sort=False).to_dict() == {"A_gem1": 411, "A_gem2": 451, "B_gem1": 262, "B_gem2": 276}
    counts = adata.layers["counts"]
    assert counts.sum() == pytest.approx(740492.0, rel=1e-3)
    assert counts.nnz == pytest.approx(122322, rel=1e-3)
    pins = {
        "A": (
            358.62003271278445,
            118.69738920408781,
            15.635408646303404,
            7.192549381132561,
            {"buffering": 34, "synergy": 13, "opposite": 7},
            {"designed": 46, "floor": 7, "saturation": 1},
        ),
        "B": (
            700.1076163214739,
            320.8543922766812,
            16.432701323443325,
            14.369889975065721,
            {"synergy": 144, "buffering": 89, "opposite": 64},
            {"normalisation": 166, "designed": 98, "floor": 26, "saturation": 7},
        ),
    }
    for context, (abs_sum, total, systematic, strength, labels, sources) in pins.items():
        truth = simulate.true_changes(adata, context).to_numpy(np.float64)
        assert np.abs(truth).sum() == pytest.approx(abs_sum, rel=1e-7)
        assert truth.sum() == pytest.approx(total, rel=1e-7)
        assert np.abs(simulate.systematic_component(adata, context).to_numpy(np.float64)).sum() == pytest.approx(systematic, rel=1e-7)
        assert simulate.perturbation_truth(adata, context)["strength"].sum() == pytest.approx(strength, rel=1e-9)
        found = simulate.interaction_labels(adata, context)
        assert found["label"].value_counts().to_dict() == labels
        assert found["source"].value_counts().to_dict() == sources
