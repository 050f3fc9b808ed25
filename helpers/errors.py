"""The exceptions of the suite.

Every layer raises :class:`DataError` when its input cannot be used as it is; the message
names the problem and what to do about it. It subclasses :class:`ValueError`, so code that
already catches ``ValueError`` keeps working.
"""

from __future__ import annotations


class DataError(ValueError):
    """Raised when input data cannot be used as it is; the message says what to do."""


class ParameterError(DataError):
    """A parameter value is not allowed; the message names the parameter, the value and what is allowed."""


class DataNote(UserWarning):
    """Something was done to the input that the user should know of (e.g. raw counts were normalised).

    Shown as a warning where the data is read (in a notebook, under the cell) and kept in
    ``adata.uns['notes']``.
    """


class CheckoutRequired(RuntimeError):
    """A command needs files that only a checkout of the repository has (the book's sources)."""


__all__ = ["CheckoutRequired", "DataError", "DataNote", "ParameterError"]
