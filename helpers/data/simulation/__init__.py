"""Implementation of the screen simulator; the public entry point is :mod:`helpers.data.simulate`.

Modules, each importing only those above it in this list:

* :mod:`.streams`: identifiers of the screen's random streams;
* :mod:`.calibration`: count-model constants fitted to real cells;
* :mod:`.truth`: exact expected log-normalised expression of negative-binomial counts;
* :mod:`.sampling`: negative-binomial counts of a block of cells;
* :mod:`.biology`: genes, programs, targets and single-perturbation effects (from ``biology_seed``);
* :mod:`.params`: :class:`~.params.SimulationParams` and :class:`~.params.ContextParams`;
* :mod:`.design`: a screen's biology and its single and double perturbations;
* :mod:`.doubles`: interactions of the double perturbations, their means and labels;
* :mod:`.effects`: the truth of each context (means and true changes of every perturbation);
* :mod:`.cells`: the blocks of cells and how each is drawn;
* :mod:`.assembly`: the AnnData from the blocks, with the truth in ``uns['simulation']``;
* :mod:`.generate`: :func:`~.generate.simulate_screen`;
* :mod:`.ondisk`: :func:`~.ondisk.write_screen`, the same cells written to an ``.h5ad`` block by block;
* :mod:`.accessors`: reading the truth back (``true_changes``, ``interaction_labels``, ...);

``tests/test_simulation_package.py`` checks this order.
"""
