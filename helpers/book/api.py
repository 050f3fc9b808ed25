"""The book's API reference: which modules it documents, on which page, and how a name links to it.

The reference pages (``book/api_*.md``) are generated from :data:`API_PAGES` by
:func:`page_markdown` (Sphinx autodoc reads the numpy-style docstrings; a test keeps the files
equal to what this module generates). :func:`api_target` finds the documented name of any object
of the suite, so that ``helpers.models.linear.LinearModel`` (where the class is defined) links to
``helpers.models.LinearModel`` (where the reference documents it); :func:`link_api_names` turns
the code spans of the book's Markdown that name such objects into links
(MyST ``{py:obj}`` roles), which the runner applies to every page (:mod:`helpers.book.layout`).

Which members a module's section documents follows autodoc's rule for ``:members:``: the names
in ``__all__`` when the module has one, else the public functions and classes defined in the
module itself.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re

#: page stem -> (title, introduction, documented modules), in the order of the reference.
API_PAGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "api_data": (
        "API: data",
        "Reading screens into the canonical form, pseudobulk profiles and changes, splits, gene sets and the simulator.",
        ("helpers.data", "helpers.data.simulate", "helpers.data.registry"),
    ),
    "api_stats": (
        "API: statistics and knowledge",
        "Differential expression, the local false discovery rate, bootstraps, genetic interactions, and gene features.",
        ("helpers.stats.de", "helpers.stats.locfdr", "helpers.stats.bootstrap", "helpers.stats.interactions", "helpers.knowledge"),
    ),
    "api_models": (
        "API: models",
        "Every model of the suite: baselines, linear models, torch models, GEARS and predictions from files, with their registry.",
        ("helpers.models", "helpers.models.baselines", "helpers.models.controls", "helpers.models.embedding_regressor"),
    ),
    "api_metrics": (
        "API: metrics",
        "Metrics comparing predicted and observed profiles, each named with its reference, their registry and the calibration checks.",
        ("helpers.metrics", "helpers.metrics.calibration"),
    ),
    "api_benchmarks": (
        "API: benchmarks and the book",
        "The evaluation engine, the chapters' steps, results tables, parameters, errors and the book's own helpers.",
        (
            "helpers.benchmarks.engine",
            "helpers.benchmarks.systema",
            "helpers.benchmarks.progress_bars",
            "helpers.results",
            "helpers.params",
            "helpers.errors",
            "helpers.book.teaching",
            "helpers.book.scoreboard",
            "helpers.book.runner",
            "helpers.book.layout",
            "helpers.book.api",
        ),
    ),
}


def documented_members(module_name: str) -> list[str]:
    """The names autodoc's ``:members:`` documents for a module (module docstring: ``__all__``, else own public objects)."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [
        n
        for n, obj in vars(module).items()
        if not n.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(obj, "__module__", None) == module_name
    ]


@functools.cache
def _index() -> tuple[dict[int, str], frozenset[str]]:
    """``id(object) -> documented full name`` for every documented member, and the documented modules."""
    objects: dict[int, str] = {}
    modules = set()
    for _, _, names in API_PAGES.values():
        for module_name in names:
            modules.add(module_name)
            module = importlib.import_module(module_name)
            for member in documented_members(module_name):
                obj = getattr(module, member, None)
                if obj is not None and (inspect.isfunction(obj) or inspect.isclass(obj)):
                    objects.setdefault(id(obj), f"{module_name}.{member}")
    return objects, frozenset(modules)


def api_target(path: str) -> str | None:
    """The documented full name of the object ``path`` names (a dotted path in ``helpers``), or None if undocumented.

    A documented module is its own target; a function or class is found by identity, wherever it is
    imported from; a method ``Class.name`` of a documented class links to the method when the class
    defines it with a docstring (autodoc documents it), else to the class.
    """
    from .teaching import resolve

    objects, modules = _index()
    if path in modules:
        return path
    try:
        obj = resolve(path)
    except (ValueError, ImportError):
        return None
    if id(obj) in objects:
        return objects[id(obj)]
    head, _, name = path.rpartition(".")
    if head and head.startswith("helpers."):
        try:
            parent = resolve(head)
        except (ValueError, ImportError):
            return None
        if inspect.isclass(parent) and id(parent) in objects:
            own = vars(parent).get(name)
            documented = own is not None and not name.startswith("_") and getattr(own, "__doc__", None)
            return f"{objects[id(parent)]}.{name}" if documented else objects[id(parent)]
    return None


_CODE_SPAN = re.compile(r"(?<![`{\w])`(helpers(?:\.[A-Za-z_][A-Za-z0-9_]*)+)(?:\(\))?`(?!`)")


def link_api_names(markdown: str) -> str:
    """Turn every code span naming a documented object (e.g. ``helpers.data.changes`` in backticks) into a link to the reference.

    Spans inside fenced code blocks are left alone; so are names the reference does not document.
    """
    out, fenced = [], False
    for line in markdown.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        if not fenced:

            def link(match: re.Match) -> str:
                target = api_target(match.group(1))
                if target is None:
                    return match.group(0)
                shown = match.group(0)[1:-1]
                return f"{{py:obj}}`{shown} <{target}>`"

            line = _CODE_SPAN.sub(link, line)
        out.append(line)
    return "\n".join(out)


def page_markdown(stem: str) -> str:
    """The Markdown of one reference page of :data:`API_PAGES` (autodoc directives, one section per module)."""
    title, intro, modules = API_PAGES[stem]
    parts = [
        "<!-- generated by helpers.book.api.page_markdown; edit API_PAGES there, not this file -->",
        f"# {title}",
        "",
        intro + " Every chapter's `helpers...` names link here; the {ref}`genindex` lists every documented name.",
    ]
    for module in modules:
        parts += ["", f"## `{module}`", "", "```{eval-rst}", f".. automodule:: {module}", "   :members:", "```"]
    return "\n".join(parts) + "\n"


__all__ = ["API_PAGES", "api_target", "documented_members", "link_api_names", "page_markdown"]
