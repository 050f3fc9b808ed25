"""Progress bars for long loops, the same in a terminal, a notebook and the book.

Text bars (``tqdm.std``) rather than ``tqdm.auto``: the widget bars of ``tqdm.auto`` need
ipywidgets, warn at import without it, and cannot be rendered in the static book. The book
build sets ``TQDM_DISABLE=1`` (tqdm reads it), so executed chapters carry no progress output.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from tqdm.std import tqdm


def progress_bar(iterable: Iterable | None = None, **kwargs) -> tqdm:
    """``tqdm`` with the suite's defaults (``leave=False``, ``mininterval=0.5``); kwargs override.

    ``TQDM_DISABLE=1`` in the environment switches every bar off, even one created with
    ``disable=False`` (tqdm itself only uses the variable as a default).
    """
    options = {"leave": False, "mininterval": 0.5, "dynamic_ncols": True}
    options.update(kwargs)
    if os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes"):
        options["disable"] = True
    return tqdm(iterable, **options)
