"""Small helpers for the book's teaching chapters.

:func:`same_result` compares a computation done by hand (numpy/pandas) with the suite's
function and prints ``same result: True``; it raises if they disagree, so a chapter whose
worked example no longer matches the suite stops instead of printing ``False``.

:func:`implemented_in` shows, below a worked example, which function of the suite does the
same computation: its import path, its signature and the first line of its docstring, e.g.

    Implemented in ``helpers.data.pseudobulk`` — ``pseudobulk(adata, batch_key=None, ...)``:
    Mean profile of every perturbation.

The path is resolved by importing it, so a chapter that names a function which was renamed
or moved fails to execute instead of pointing readers at nothing.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from IPython.lib.pretty import RepresentationPrinter


@dataclass(frozen=True)
class Implementation:
    """Where a computation lives in the suite (displayed as Markdown in a notebook)."""

    path: str
    signature: str
    summary: str
    #: Its documented name in the book's API reference (:func:`helpers.book.api.api_target`); None: not documented.
    target: str | None = None

    def markdown(self) -> str:
        name = f"[`{self.path}`](#{self.target})" if self.target else f"`{self.path}`"
        text = f"**Implemented in** {name} — `{self.signature}`"
        return text + (f": {self.summary}" if self.summary else "")

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def __str__(self) -> str:
        text = f"Implemented in {self.path} — {self.signature}"
        return text + (f": {self.summary}" if self.summary else "")

    def _repr_pretty_(self, p: RepresentationPrinter, cycle: bool) -> None:  # IPython's plain-text form
        p.text(str(self))


def resolve(path: str) -> object:
    """The object a dotted path such as ``"helpers.metrics.l2"`` names (a module, class or function).

    The path is walked from ``helpers`` one name at a time. An attribute of the object reached so
    far is tried first (so ``"helpers.data.pseudobulk"`` is the function that ``helpers.data``
    exports, not the module of the same name); if the rest of the path does not continue from it,
    the name is imported as a submodule instead (so ``"helpers.data.pseudobulk.control_profile"``
    works as well).

    Raises
    ------
    ValueError
        If the path does not start with ``helpers`` or does not name an existing object.
    """
    if not isinstance(path, str) or not re.fullmatch(r"helpers(\.[A-Za-z_][A-Za-z0-9_]*)*", path):
        raise ValueError(f"expected a dotted path inside the suite, e.g. 'helpers.data.pseudobulk', not {path!r}")
    parts = path.split(".")
    found = _walk(importlib.import_module(parts[0]), parts, 1)
    if found is _MISSING:
        root = importlib.import_module(parts[0])
        known = next(k for k in range(len(parts) - 1, 0, -1) if _walk(root, parts[:k], 1) is not _MISSING)
        raise ValueError(f"{path!r} does not exist: {'.'.join(parts[:known])!r} has no attribute or submodule {parts[known]!r}")
    return found


_MISSING = object()


def _walk(obj: object, parts: list[str], i: int) -> object:
    """Follow ``parts[i:]`` from ``obj``: attribute first, then submodule; ``_MISSING`` if neither leads on."""
    if i == len(parts):
        return obj
    name = parts[i]
    tried = getattr(obj, name, _MISSING)
    if tried is not _MISSING:
        found = _walk(tried, parts, i + 1)
        if found is not _MISSING:
            return found
    if inspect.ismodule(obj):
        module_name = ".".join(parts[: i + 1])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:  # a dependency inside an existing module is missing: say so
                raise
            return _MISSING
        if module is not tried:
            return _walk(module, parts, i + 1)
    return _MISSING


def _signature(obj: object, name: str) -> str:
    """``name(a, b=1, *, c=None)``: parameters with defaults, without annotations or ``self``."""
    try:
        sig = inspect.signature(obj)  # for a class: its constructor's parameters, without self
    except (TypeError, ValueError):
        return name
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values() if p.name != "self"]
    return f"{name}{sig.replace(parameters=params, return_annotation=inspect.Signature.empty)}"


_ROLE = re.compile(r":(?:py:)?[a-z]+:`~?([^`]+)`")


def summary_line(obj: object) -> str:
    """First paragraph of an object's docstring on one line (Sphinx roles removed), or ``""``.

    Instances (e.g. a dict of presets) have no docstring of their own; they get ``""``.
    """
    if not (inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj)):
        return ""
    doc = inspect.getdoc(obj) or ""
    first = doc.split("\n\n", 1)[0]
    text = " ".join(line.strip() for line in first.splitlines()).strip()
    return _ROLE.sub(lambda m: f"``{m.group(1)}``", text)


def implemented_in(path: str) -> Implementation:
    """Describe the suite's function (or class) at ``path``: signature and docstring summary.

    Parameters
    ----------
    path
        Dotted import path as a reader would type it, e.g. ``"helpers.data.pseudobulk"``
        or ``"helpers.models.LinearModel"``.

    Returns
    -------
    Implementation
        Renders as one Markdown line in a notebook, the path linked to the book's API reference
        when it documents the object; ``str()`` gives plain text.
    """
    from .api import api_target

    obj = resolve(path)
    if inspect.ismodule(obj):
        return Implementation(path, path, summary_line(obj), api_target(path))
    name = path.rsplit(".", 1)[-1]
    return Implementation(path, _signature(obj, name), summary_line(obj), api_target(path))


def _equal(a: object, b: object, rtol: float, atol: float) -> bool:
    """Numbers compared with a tolerance (pandas objects aligned by label first), the rest with ``==``."""
    if isinstance(a, pd.DataFrame | pd.Series) or isinstance(b, pd.DataFrame | pd.Series):
        if type(a) is not type(b) or set(a.index) != set(b.index):
            return False
        if isinstance(a, pd.DataFrame):
            if set(a.columns) != set(b.columns):
                return False
            b = b.reindex(index=a.index, columns=a.columns)
        else:
            b = b.reindex(a.index)
        a, b = a.to_numpy(), b.to_numpy()
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(_equal(a[k], b[k], rtol, atol) for k in a)
    if isinstance(a, set | frozenset) or isinstance(b, set | frozenset):
        return set(a) == set(b)
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    try:
        x = np.asarray(a, dtype=np.float64)
        y = np.asarray(b, dtype=np.float64)
    except (TypeError, ValueError):
        if isinstance(a, list | tuple | np.ndarray) and isinstance(b, list | tuple | np.ndarray):
            return len(a) == len(b) and all(_equal(u, v, rtol, atol) for u, v in zip(a, b))
        return bool(a == b)
    return x.shape == y.shape and bool(np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True))


def same_result(by_hand: object, by_suite: object, label: str = "same result", rtol: float = 1e-9, atol: float = 1e-12) -> None:
    """Print ``"{label}: True"`` when a hand computation and the suite's function agree.

    Numbers (arrays, Series, DataFrames) agree when they have the same shape (pandas objects:
    the same labels, in any order) and ``np.allclose(..., rtol, atol, equal_nan=True)`` holds;
    strings, lists of names, sets and dicts when they are equal.

    Raises
    ------
    AssertionError
        When they disagree, so an executed chapter never shows a failed check as ``False``.
    """
    ok = _equal(by_hand, by_suite, rtol, atol)
    print(f"{label}: {ok}")
    if not ok:
        raise AssertionError(f"{label}: the computation by hand and the suite's function disagree")
