"""Plotting functions used by the book, one module per topic.

Each function draws on a given matplotlib ``Axes`` (or makes a figure) with titles, axis
labels and units, and returns the figure or axes so notebooks can adjust them.
"""

from .style import set_style

__all__ = ["set_style"]
