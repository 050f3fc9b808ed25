"""One look for every figure of the book."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def set_style() -> None:
    """Readable defaults at book width: white grid, 11 pt labels, 110 dpi figures; whole texts in tables.

    pandas cuts text cells at 50 characters by default ("...screen with doub..."); the book shows
    them whole, wrapped by the page's CSS.
    """
    import matplotlib as mpl
    import pandas as pd
    import seaborn as sns

    pd.set_option("display.max_colwidth", None)

    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.95)
    mpl.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.dpi": 110,
            "figure.figsize": (7.5, 4.2),
            "axes.titleweight": "bold",
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.frameon": False,
            "figure.autolayout": False,
        }
    )


def boxplot(**kwargs) -> Axes:
    """``seaborn.boxplot`` without the deprecation notice of matplotlib 3.11.

    seaborn 0.13 still passes matplotlib's deprecated ``vert`` argument; the notice is
    harmless and would otherwise show in every chapter with a box plot.
    """
    import warnings

    import seaborn as sns

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*vert: bool was deprecated")
        return sns.boxplot(**kwargs)
