"""How an executed notebook is laid out as a book page: which code is shown, and how the page ends.

The runner calls :func:`place_in_book` on every notebook it executes. It changes only metadata
and appends one Markdown cell, never a code cell or an output, so the executed notebook still
reruns (and validates with nbval) exactly as before.

**The cell rule** (:func:`visibility`), with Jupyter Book's cell tags:

1. the ``parameters`` cell and papermill's ``injected-parameters`` copy: ``remove-cell``
   (they are runner plumbing; the parameters of the run are listed at the end of the page);
2. a visibility tag the source notebook gives (``remove-cell``, ``remove-input``, ``hide-input``,
   ``hide-cell``, ``hide-output``, ``remove-output``, ``show-input``) is kept as it is;
3. a cell whose outputs are all Markdown (its only job is to display computed text):
   ``remove-input``;
4. in a chapter whose code teaches (notebook metadata ``suite.show_code: true``, the methods
   chapters), every other cell but the set-up cell (the first code cell after the parameters)
   is shown, and tagged ``show-input`` so that the page says so;
5. every other code cell: ``hide-input`` (the code is one click away).

A code cell shown on a built page therefore carries ``show-input``; the browser test checks this.

**Links**: code spans of the Markdown cells that name a documented object of the suite become
links to the API reference (:func:`helpers.book.api.link_api_names`).

**The end of the page** (:func:`footer_markdown`): the results table as a download (when the run
wrote ``NAME.results.csv``) and the exact command that reruns the page with the parameters it ran
with (:func:`rerun_command`, generated from the notebook's declared schema).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..params import Schema

#: Tags with which a source notebook decides a cell's visibility itself.
VISIBILITY_TAGS = frozenset({"remove-cell", "remove-input", "hide-input", "hide-cell", "hide-output", "remove-output", "show-input"})
PLUMBING_TAGS = frozenset({"parameters", "injected-parameters"})
#: Tag of the Markdown cell appended by :func:`place_in_book` (replaced, never duplicated, on a rerun).
FOOTER_TAG = "book-footer"


def _outputs_only_markdown(cell: Mapping[str, Any]) -> bool:
    outputs = cell.get("outputs") or []
    return bool(outputs) and all(
        o.get("output_type") in ("display_data", "execute_result") and "text/markdown" in o.get("data", {}) for o in outputs
    )


def visibility(cell: Mapping[str, Any], show_code: bool = False, setup: bool = False) -> str | None:
    """The visibility tag the book gives one cell (None: markdown, left as it is).

    Parameters
    ----------
    cell
        A notebook cell (nbformat 4 dict) with its outputs.
    show_code
        The chapter's code teaches (rule 4 of the module docstring).
    setup
        The cell is the set-up cell (first code cell after the parameters); hidden even when
        ``show_code``.
    """
    if cell.get("cell_type") != "code":
        return None
    tags = set(cell.get("metadata", {}).get("tags", []))
    if tags & PLUMBING_TAGS:
        return "remove-cell"
    given = sorted(tags & VISIBILITY_TAGS)
    if given:
        return given[0]
    if _outputs_only_markdown(cell):
        return "remove-input"
    if show_code and not setup:
        return "show-input"
    return "hide-input"


def apply_tags(nb: dict) -> dict:
    """Tag every code cell of an executed notebook by :func:`visibility`; returns ``{cell index: tag}``."""
    show_code = bool(nb.get("metadata", {}).get("suite", {}).get("show_code", False))
    applied = {}
    seen_parameters = False
    setup_done = False
    for index, cell in enumerate(nb["cells"]):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        is_setup = False
        if cell["cell_type"] == "code":
            if set(tags) & PLUMBING_TAGS:
                seen_parameters = True
            elif seen_parameters and not setup_done:
                is_setup, setup_done = True, True
        tag = visibility(cell, show_code, is_setup)
        if tag is None:
            continue
        if tag not in tags:
            tags.append(tag)
        applied[index] = tag
    return applied


def shell_value(value: object) -> str:
    """A parameter value as one shell word that :func:`helpers.book.runner.parse_value` reads back unchanged."""
    from .runner import parse_value

    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, (int, float)):
        text = repr(value)
    elif isinstance(value, str):
        text = value if parse_value(value) == value else json.dumps(value)
    else:
        text = json.dumps(value, ensure_ascii=False)
    if parse_value(text) != value:
        text = repr(value)
    return shlex.quote(text)


def rerun_command(name: str, parameters: Mapping[str, Any], schema: Schema, out: str = "DIR") -> str:
    """The command that reruns notebook ``name`` with every declared parameter set to its value in this run.

    Parameters not given take their declared default, so the command is exact even if a default
    changes later. Lines are continued with ``\\`` for reading.
    """
    words = [f"python -m helpers run {name}"]
    for p in schema.params:
        value = parameters.get(p.name, p.default)
        words.append(f"-p {p.name} {shell_value(value)}")
    words.append(f"--out {out}")
    return " \\\n    ".join(words)


def footer_markdown(name: str, parameters: Mapping[str, Any], schema: Schema, results_file: str | None) -> str:
    """The Markdown cell that ends a page: the results download and the command that reruns it."""
    parts = ["## Rerun this page"]
    if results_file:
        parts.append(
            f"**The results of this run:** {{download}}`{results_file} <{results_file}>` (one row per dataset, seed, model, "
            "perturbation and metric; every chapter's table is gathered on the scoreboard)."
        )
    intro = "with the parameters it ran with" if schema.params else "(it has no parameters)"
    parts.append(f"**The exact command** that reruns this page {intro}, from the repository's folder:")
    parts.append("```bash\n" + rerun_command(name, parameters, schema) + "\n```")
    if schema.params:
        parts.append(f"`python -m helpers run {name} --parameters` lists what each parameter may be; see also {{doc}}`rerun`.")
    return "\n\n".join(parts)


def place_in_book(path: Path, name: str, parameters: Mapping[str, Any], results_file: str | None = None) -> None:
    """Lay out the executed notebook at ``path`` as a book page (module docstring), in place."""
    import nbformat

    from .api import link_api_names
    from .runner import notebook_schema

    nb = nbformat.read(path, as_version=4)
    apply_tags(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = link_api_names(cell.source)
    nb.cells = [c for c in nb.cells if FOOTER_TAG not in c.metadata.get("tags", [])]
    schema = notebook_schema(name)
    if schema.params or results_file:
        footer = nbformat.v4.new_markdown_cell(footer_markdown(name, parameters, schema, results_file))
        footer.metadata["tags"] = [FOOTER_TAG]
        nb.cells.append(footer)
    nbformat.write(nb, path)


__all__ = ["FOOTER_TAG", "VISIBILITY_TAGS", "apply_tags", "footer_markdown", "place_in_book", "rerun_command", "shell_value", "visibility"]
