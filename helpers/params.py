"""Declared parameters: type, allowed values and meaning, checked before any work.

Every chapter declares its parameters once, as a :class:`Schema` of :class:`Param` in its
module of :mod:`helpers.benchmarks`; the notebook's ``parameters`` cell holds the same
names with their defaults (a test keeps the two in step), and its first code cell checks
the values it was given::

    params = SCHEMA.check(dict(dataset=dataset, seeds=seeds, ...))

A value that is not allowed raises :class:`helpers.errors.ParameterError` with a message
that names the parameter, the value given and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ParameterError

if TYPE_CHECKING:
    import pandas as pd

#: Kinds a parameter can have; several joined by ``|`` (e.g. ``"path|mapping"``) accept any of them.
KINDS = ("int", "float", "bool", "str", "ints", "floats", "strs", "path", "mapping", "any")

_LISTS = {"ints": "int", "floats": "float", "strs": "str"}

#: The largest seed numpy's and scikit-learn's legacy generators take (2**32 - 1): the ``maximum`` of every seed.
SEED_MAX = 2**32 - 1


def _number(bound: float) -> str:
    return f"{int(bound):,}" if float(bound).is_integer() else f"{bound:g}"


def _describe(kind: str) -> str:
    return {
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "str": "a text",
        "ints": "a list of integers",
        "floats": "a list of numbers",
        "strs": "a list of names",
        "path": "a file path",
        "mapping": "a mapping {name: text}",
        "any": "a value",
    }[kind]


def _path_exists(value: str) -> bool:
    """Whether ``value`` names an existing path; a template with ``{seed}`` needs one file per filled-in seed.

    The per-seed check happens where the seed is known (the chapter's reader names a missing file);
    here at least one file of the template must exist.
    """
    path = Path(value).expanduser()
    if "{seed}" not in value:
        return path.exists()
    return any(path.parent.glob(path.name.replace("{seed}", "*")))


class _Refused(Exception):
    """A value does not fit one kind; ``why`` says how (empty: only the kind is wrong)."""

    def __init__(self, why: str = ""):
        super().__init__(why)
        self.why = why


@dataclass(frozen=True)
class Param:
    """One parameter of a chapter.

    Attributes
    ----------
    name, default, meaning
        As in the notebook's ``parameters`` cell.
    kind
        One of :data:`KINDS`, or several joined by ``|``: ``"ints"``, ``"floats"`` and ``"strs"``
        are lists (a single value is accepted and wrapped in a list); ``"path"`` is a text naming a
        file; ``"mapping"`` a dict of names to texts (e.g. ``{dataset: file}``).
    choices
        Allowed values (of each element, for lists; of each value, for mappings).
    minimum, maximum
        Inclusive bounds of numbers (of each element, for lists).
    none
        Whether ``None`` is allowed (and what it means, in ``meaning``).
    nonempty
        For lists, mappings and texts: at least one element (a text: not blank).
    exists
        For paths: the file (or folder) must exist (relative paths from the current folder).
    sep
        For lists: a text is also accepted and split at ``sep`` (e.g. ``"a,b"`` with ``sep=","``).
    """

    name: str
    kind: str
    default: Any
    meaning: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    none: bool = False
    nonempty: bool = True
    exists: bool = True
    sep: str | None = None

    def __post_init__(self):
        bad = [k for k in self.kinds if k not in KINDS]
        if bad:
            raise ValueError(f"{self.name}: kind must be one of {KINDS} (or several joined by '|'), not {self.kind!r}")

    @property
    def kinds(self) -> list[str]:
        """The kinds a value may have (``kind`` split at ``|``)."""
        return self.kind.split("|")

    def _allowed_one(self, kind: str) -> str:
        text = _describe(kind)
        if self.choices is not None and kind not in ("bool", "any", "path"):
            if kind in _LISTS:
                text = "a list of " + ", ".join(map(repr, self.choices))
            elif kind == "mapping":
                text = "a mapping {name: one of " + ", ".join(map(repr, self.choices)) + "}"
            else:
                text = "one of " + ", ".join(map(repr, self.choices))
        if kind == "path" and self.exists:
            text = "an existing path"
        if kind in _LISTS and self.sep:
            text += f" (or one text, separated by {self.sep!r})"
        bounds = []
        if kind in ("int", "float", "ints", "floats"):
            if self.minimum is not None:
                bounds.append(f">= {_number(self.minimum)}")
            if self.maximum is not None:
                bounds.append(f"<= {_number(self.maximum)}")
        if bounds:
            text += " (" + " and ".join(bounds) + ")"
        return text

    def allowed(self) -> str:
        """What is allowed, in words."""
        text = ", or ".join(self._allowed_one(k) for k in self.kinds)
        if self.none:
            text += ", or None"
        return text

    def _refuse(self, value: object, why: str = "") -> ParameterError:
        detail = f" ({why})" if why else ""
        return ParameterError(f"parameter {self.name} = {value!r} is not allowed{detail}; expected {self.allowed()}.")

    def _scalar(self, value: object, kind: str, element: bool = False):
        """``value`` as ``kind``; raises :class:`_Refused`. An element of a list says which element is wrong."""
        prefix = f"{value!r} is " if element else ""
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
                if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                    value = int(value)
                else:
                    raise _Refused(f"{value!r} is not an integer" if element else "")
            value = int(value)
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _Refused(f"{value!r} is not a number" if element else "")
            value = float(value)
            if not math.isfinite(value):
                raise _Refused(f"{prefix}not a finite number")
        elif kind == "bool":
            if not isinstance(value, bool):
                raise _Refused()
        elif kind in ("str", "path"):
            if kind == "path" and hasattr(value, "__fspath__"):
                value = str(value)
            if not isinstance(value, str):
                raise _Refused(f"{value!r} is not a text" if element else "")
            if (self.nonempty or kind == "path") and not value.strip():
                raise _Refused(f"{prefix}empty")
            if kind == "path" and self.exists and not _path_exists(value):
                raise _Refused(f"no such file: {Path(value).expanduser().resolve()}")
        if self.choices is not None and kind not in ("bool", "path") and value not in self.choices:
            raise _Refused(f"{value!r} is not one of the choices" if element else "")
        if kind in ("int", "float"):
            if self.minimum is not None and value < self.minimum:
                raise _Refused(f"{prefix}below {_number(self.minimum)}")
            if self.maximum is not None and value > self.maximum:
                raise _Refused(f"{prefix}above {_number(self.maximum)}")
        return value

    def _one(self, value: object, kind: str) -> Any:
        if kind == "any":
            return value
        if kind in _LISTS:
            if self.sep and isinstance(value, str):
                value = [v.strip() for v in value.split(self.sep) if v.strip()]
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                value = [value]
            if not isinstance(value, Sequence) or isinstance(value, str):
                raise _Refused()
            out = [self._scalar(v, _LISTS[kind], element=True) for v in value]
            if self.nonempty and not out:
                raise _Refused("empty")
            duplicated = sorted({v for v in out if out.count(v) > 1}, key=str)
            if duplicated:
                raise _Refused(f"{duplicated} listed twice")
            return out
        if kind == "mapping":
            if not isinstance(value, Mapping):
                raise _Refused()
            if self.nonempty and not value:
                raise _Refused("empty")
            out = {}
            for key, item in value.items():
                if not isinstance(key, str) or not key.strip():
                    raise _Refused(f"key {key!r} is not a name")
                out[key] = self._scalar(item, "str", element=True)
            return out
        return self._scalar(value, kind)

    def check(self, value: object) -> Any:
        """The value, converted where unambiguous (e.g. ``"3"`` to 3 for an int); :class:`ParameterError` if not allowed."""
        if value is None:
            if self.none:
                return None
            raise self._refuse(value)
        reasons = []
        for kind in self.kinds:
            try:
                return self._one(value, kind)
            except _Refused as refused:
                reasons.append(refused.why)
        raise self._refuse(value, "; ".join(r for r in reasons if r))


@dataclass(frozen=True)
class Schema:
    """The parameters of one notebook, in the order of its ``parameters`` cell."""

    params: tuple[Param, ...]
    #: Parameters set by the runner, not by the reader (e.g. ``output_dir``).
    internal: tuple[str, ...] = field(default=("output_dir",))

    def __post_init__(self):
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"parameters declared twice: {sorted({n for n in names if names.count(n) > 1})}")

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def check(self, values: Mapping[str, Any], ignore: Iterable[str] = ()) -> dict[str, Any]:
        """Check every declared parameter of ``values``; unknown names are refused.

        Returns the checked values (converted where unambiguous) as a dict.
        """
        skip = set(ignore) | set(self.internal)
        unknown = sorted(set(values) - set(self.names) - skip)
        if unknown:
            raise ParameterError(f"unknown parameter(s) {unknown}; the parameters are: {', '.join(self.names)}")
        return {p.name: p.check(values[p.name]) for p in self.params if p.name in values}

    def table(self) -> pd.DataFrame:
        """The parameters as a table: name, default, allowed values and meaning."""
        import pandas as pd

        return pd.DataFrame(
            [{"parameter": p.name, "default": repr(p.default), "allowed": p.allowed(), "meaning": p.meaning} for p in self.params]
        )


__all__ = ["KINDS", "SEED_MAX", "Param", "Schema"]
