"""Identifiers of the random streams a screen draws from, apart from the biology's own.

Every random quantity of a screen comes from its own stream, ``rng_for(seed, stream, *key)``
(:func:`~.biology.rng_for`), so it does not depend on how many other quantities are drawn or
in which order. :mod:`.biology` uses the streams ``0`` to ``5`` under ``biology_seed`` (and
sub-streams keyed under them for the barely expressed genes, the capacities and the wiring, so
that switching one of those mechanisms off leaves every other draw unchanged); the
identifiers below are the screen's other streams and must stay distinct from those (the two
seeds are the same number when ``biology_seed`` is ``None``). Changing a value changes every
generated screen.
"""

from __future__ import annotations

#: Cells of each block (under the screen's ``seed``; key: context, kind of block, block key).
STREAM_CELLS = 100
#: Gene-wise batch effects and batch library factors of a context (under ``seed``).
STREAM_BATCH = 101
#: Pairs of singles that form the doubles, and the interactions of each double (under ``biology_seed``).
STREAM_PAIRS = 102
