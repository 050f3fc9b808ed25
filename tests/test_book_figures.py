"""Figure and wording defects a reader of the book found, each checked where it is made."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from helpers.benchmarks.systema import _between
from helpers.plots import data as data_plots
from helpers.plots import systema as systema_plots


@pytest.fixture
def screen():
    perts = ["control"] * 5 + ["A"] * 3 + ["B"] * 2 + ["A+B"] * 4
    obs = pd.DataFrame({"perturbation": perts, "n_targets": [0 if p == "control" else p.count("+") + 1 for p in perts]})
    obs["ncounts"] = np.arange(1, len(perts) + 1) * 100.0
    obs.index = [f"c{i}" for i in range(len(perts))]
    return ad.AnnData(X=np.zeros((len(perts), 2)), obs=obs)


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_cells_per_perturbation_legend_has_one_colour_per_kind_outside_the_bars(screen):
    ax = data_plots.cells_per_perturbation(screen)
    legend = ax.get_legend()
    colours = {t.get_text(): to_hex(h.get_facecolor()) for t, h in zip(legend.get_texts(), legend.legend_handles)}
    assert colours == {"control": "#4d4d4d", "single": "#1f77b4", "double": "#d62728"}
    ax.figure.canvas.draw()
    assert legend.get_window_extent().y0 >= ax.get_window_extent().y1 - 1  # above the axes, never over a bar
    plt.close(ax.figure)


def test_per_cell_qc_title_keeps_the_acronym(screen):
    ax = data_plots.per_cell_qc(screen, "ncounts", "UMI counts per cell")
    assert ax.get_title() == "UMI counts per cell"
    plt.close(ax.figure)


def test_systema_sweep_and_calibration_legends_do_not_cover_the_axes():
    summary = pd.DataFrame(
        [
            {"model": "mean", "metric": m, "systematic_variation": sv, "value": v, "systematic_strength": s}
            for s, sv in ((0.0, 0.1), (1.0, 0.5), (2.0, 0.9))
            for m, v in (("pearson_delta_vs_control", 0.2 + sv), ("pearson_delta_vs_perturbed_mean", 0.0))
        ]
    )
    ax = systema_plots.sweep(summary, "mean")
    ax.figure.canvas.draw()
    assert not _overlap(ax.get_legend().get_window_extent(), ax.get_window_extent())
    plt.close(ax.figure)
    drf = pd.DataFrame({"drf_technical duplicate": [0.9, 0.1, -0.3], "drf_interpolated duplicate": [0.8, 0.0, -0.2]}, index=["a", "b", "c"])
    ax = systema_plots.calibration(drf)
    ax.figure.canvas.draw()
    assert not _overlap(ax.get_legend().get_window_extent(), ax.get_window_extent())
    plt.close(ax.figure)


def test_a_range_that_prints_as_one_number_is_said_as_one():
    assert _between(0.981, 0.984) == "at 0.98"
    assert _between(0.41, 0.523) == "between 0.41 and 0.52"


def test_the_locfdr_table_says_when_the_theoretical_null_cannot_describe_the_values():
    from helpers.stats.locfdr import locfdr

    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(0, 0.05, 5000), rng.normal(0.6, 0.05, 100)])  # values far narrower than N(0, 1)
    fit = locfdr(z, nulltype=1)
    theoretical = fit.estimates.loc["theoretical"]
    assert theoretical["p0"] > 1
    assert "impossible for a share of null values" in theoretical["reading"] and theoretical["reading"].endswith("not used")
    assert fit.estimates.loc["maximum likelihood", "reading"].endswith("; used")
