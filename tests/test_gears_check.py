"""CI's check that a shipped GEARS file is what the code produces: the reference it picks, and the real regeneration.

The regeneration itself (marker ``gears``) trains GEARS in its own environment and runs in
``make test-gears`` (which ``.ci/run`` calls after ``make test``). It lives in a module of its
own: the stand-in GEARS of ``test_gears_precomputed.py`` is installed for that whole module
and must not be what the check trains.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from helpers.benchmarks import gears_predictions as gp
from helpers.models import precomputed as P

KEY = (gp.CHECK_TARGET.chapter, gp.CHECK_TARGET.dataset, gp.CHECK_TARGET.seeds[0])


def _copy_with_cpu(folder, cpu: str):
    """The shipped CI file copied into ``folder`` with its record saying it was made on ``cpu``."""
    pred, rec = P.precomputed_files(*KEY)
    new_pred, new_rec = P.precomputed_files(*KEY, folder)
    new_rec.parent.mkdir(parents=True)
    shutil.copy(pred, new_pred)
    record = json.loads(rec.read_text())
    record["machine"]["cpu"] = cpu
    new_rec.write_text(json.dumps(record))
    return record


def test_the_reference_is_the_file_made_on_the_same_cpu_with_the_same_kernels(tmp_path):
    shipped, intel, amd = tmp_path / "shipped", tmp_path / "intel", tmp_path / "amd"
    _copy_with_cpu(shipped, "CPU A")
    _copy_with_cpu(intel, "CPU B")
    record = _copy_with_cpu(amd, "CPU C")
    folders = [shipped, intel, amd]
    assert gp._reference_for(KEY, {**record, "machine": {"cpu": "CPU B"}}, folders) == (intel, True)
    assert gp._reference_for(KEY, {**record, "machine": {"cpu": "CPU C"}}, folders) == (amd, True)
    other_kernels = {**record, "machine": {"cpu": "CPU B"}, "numerics": {**record["numerics"], "MKL_CBWR": "AVX512"}}
    assert gp._reference_for(KEY, other_kernels, folders) == (shipped, False), "other kernels on the same CPU are not the same path"
    assert gp._reference_for(KEY, {**record, "machine": {"cpu": "CPU D"}}, folders) == (shipped, False)


def test_every_shipped_reference_is_current_and_made_on_another_cpu_than_the_shipped_file():
    shipped_cpu = P.read_provenance(P.precomputed_files(*KEY)[1])["machine"]["cpu"]
    seen = {shipped_cpu}
    for folder in gp.reference_dirs()[1:]:
        table = gp.status(directory=folder)
        assert len(table) and (table["state"] == "current").all(), table.to_string()
        cpu = P.read_provenance(P.precomputed_files(*KEY, folder)[1])["machine"]["cpu"]
        assert cpu not in seen, f"{folder} holds a second reference for {cpu}"
        seen.add(cpu)


def test_change_correlations_against_the_closed_form():
    rng = np.random.default_rng(0)
    control = pd.Series(rng.normal(2, 0.5, 6), index=list("abcdef"))
    change = rng.normal(0, 1, (3, 6))
    new = pd.DataFrame(control.to_numpy() + change, index=["p", "q", "r"], columns=control.index)
    same, flipped, scaled = new.copy(), pd.DataFrame(control.to_numpy() - change, index=new.index, columns=new.columns), None
    scaled = pd.DataFrame(control.to_numpy() + 3 * change + 1, index=new.index, columns=new.columns)
    assert np.allclose(gp.change_correlations(new, same, control), 1)
    assert np.allclose(gp.change_correlations(new, flipped, control), -1)
    assert np.allclose(gp.change_correlations(new, scaled, control), 1), "Pearson's r ignores scale and shift"
    other = rng.normal(0, 1, 6)
    expected = np.corrcoef(change[1], other)[0, 1]
    mixed = same.copy()
    mixed.loc["q"] = control.to_numpy() + other
    assert np.isclose(gp.change_correlations(new, mixed, control)["q"], expected)


# ---------------------------------------------------------------------------------------
# CI: GEARS itself regenerates the smallest shipped file
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gears_environment():
    from helpers.models import gears as G

    if G.find_gears_python() is None:
        if os.environ.get(G.BUILD_ENV_VAR) != "1":
            pytest.skip(f"{G.gears_environment_status()}; or set {G.BUILD_ENV_VAR}=1 to let the tests build it")
        G.ensure_gears_environment()


@pytest.mark.gears
def test_ci_regenerates_the_shipped_file_within_tolerance(gears_environment):
    """GEARS trained again on the real Norman subset, seed 1: exact on a CPU with a reference, else the cross-CPU bounds."""
    if not P.precomputed_files(*KEY)[1].exists():
        pytest.fail(f"{gp.CHECK_TARGET} is not shipped; make it with `python scripts/make_gears_predictions.py --dataset {KEY[1]}`")
    table = gp.check(progress=False)
    with pd.option_context("display.max_colwidth", 200, "display.width", 250):
        print(table.to_string(index=False))
    assert len(table) == 1 and table["problems"].iloc[0] == "", table.to_string()
    if table["reference"].iloc[0].startswith("made on the same CPU"):
        assert table["max_abs_difference"].iloc[0] <= gp.CHECK_ATOL
    else:
        assert table["min_change_correlation"].iloc[0] >= gp.CROSS_CPU_BOUNDS["min"]
