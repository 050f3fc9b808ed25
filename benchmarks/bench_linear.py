"""The linear model of Ahlmann-Eltze et al. at the size of the Replogle K562 essential screen.

Setup (not timed): the ``replogle_k562_like_full`` simulated screen (5,000 genes, 1,087
single perturbations; 20 cells per perturbation instead of 140 to keep the setup short —
the pseudobulk has the published shape either way), its pseudobulk and the GEARS
simulation split of seed 1. Timed: ``LinearModel().fit(train pseudobulk)`` and the
prediction of every held-out perturbation it can embed. Target: under 2 s.
"""

from harness import Step

TARGET = "fit + predict < 2 s"


def _k562_full_pseudobulk():
    from helpers.data import gears_simulation_split, pseudobulk
    from helpers.data.simulate import PRESETS

    adata = PRESETS["replogle_k562_like_full"].generate(seed=0, cells_per_perturbation=20)
    pb = pseudobulk(adata)
    perts = [p for p in pb.obs_names if p != "control"]
    split = gears_simulation_split(perts, seed=1)
    train = pb[list(split.train) + ["control"]].copy()
    return train, list(split.evaluated)


def _fit_predict(data, **params):
    from helpers.models.linear import LinearModel

    train, held_out = data
    model = LinearModel(**params).fit(train)
    bad = model.unpredictable(held_out)
    pred = model.predict([p for p in held_out if p not in bad])
    assert pred.shape[1] == train.n_vars == 5000, pred.shape
    assert train.n_obs + len(held_out) > 1000


STEPS = [
    Step(
        "linear model fit + predict, K562-like pseudobulk 5,000 genes x 1,087 perturbations (seed-1 split)",
        _fit_predict,
        _k562_full_pseudobulk,
        TARGET,
    ),
    Step(
        "linear model (random G and P) fit + predict, same data",
        lambda d: _fit_predict(d, gene_embedding="random", perturbation_embedding="random"),
        _k562_full_pseudobulk,
        TARGET,
    ),
]
