"""The book's cell rule and page footer (helpers.book.layout), on small notebooks built here."""

from __future__ import annotations

import json

import nbformat
import pytest

from helpers.book import layout, runner
from helpers.book.runner import parse_value, run_notebook
from helpers.params import Param, Schema


def _code(source: str, tags=(), outputs=()) -> dict:
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = list(tags)
    cell.outputs = [nbformat.from_dict(o) for o in outputs]
    return cell


MARKDOWN_OUT = {"output_type": "display_data", "data": {"text/markdown": "**3** of 4", "text/plain": "<Markdown>"}, "metadata": {}}
TABLE_OUT = {
    "output_type": "execute_result",
    "data": {"text/html": "<table></table>", "text/plain": "t"},
    "metadata": {},
    "execution_count": 1,
}
STREAM_OUT = {"output_type": "stream", "name": "stdout", "text": "hello\n"}


def _notebook(show_code: bool) -> dict:
    nb = nbformat.v4.new_notebook()
    nb.metadata["suite"] = {"show_code": show_code}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title"),
        _code("x = 1", tags=["parameters"]),
        _code("# Parameters\nx = 2", tags=["injected-parameters"]),
        _code("import pandas as pd"),  # the set-up cell
        _code("say(f'{x}')", outputs=[MARKDOWN_OUT]),
        _code("table", outputs=[TABLE_OUT]),
        _code("print('hello')", outputs=[STREAM_OUT, MARKDOWN_OUT]),
        _code("kept", tags=["remove-input"], outputs=[TABLE_OUT]),
        _code("taught", tags=["show-input"], outputs=[TABLE_OUT]),
    ]
    return nb


def test_the_cell_rule_in_a_chapter_that_hides_code():
    nb = _notebook(show_code=False)
    applied = layout.apply_tags(nb)
    assert applied == {
        1: "remove-cell",
        2: "remove-cell",
        3: "hide-input",
        4: "remove-input",  # only Markdown out: the code only formats text
        5: "hide-input",
        6: "hide-input",  # printed text as well: not only Markdown
        7: "remove-input",  # the source's own choice is kept
        8: "show-input",
    }
    assert nb.cells[1].metadata["tags"] == ["parameters", "remove-cell"]
    assert "tags" not in nb.cells[0].metadata or nb.cells[0].metadata["tags"] == []
    layout.apply_tags(nb)  # idempotent: no tag added twice
    assert all(len(c.metadata["tags"]) == len(set(c.metadata["tags"])) for c in nb.cells)


def test_the_cell_rule_in_a_chapter_whose_code_teaches():
    applied = layout.apply_tags(_notebook(show_code=True))
    assert applied[3] == "hide-input"  # the set-up cell stays folded
    assert applied[5] == applied[6] == "show-input"
    assert applied[4] == "remove-input" and applied[1] == "remove-cell"


@pytest.mark.parametrize(
    "value", [3, 0.5, 1e-3, True, False, None, "norman_like", "a,b", "3", "true", [1, 2], ["x y", "z"], {"a": "b.csv"}]
)
def test_shell_values_read_back_unchanged(value):
    import shlex

    (word,) = shlex.split(layout.shell_value(value))
    assert parse_value(word) == value


def test_rerun_command_lists_every_declared_parameter():
    schema = Schema(
        (Param("seeds", "ints", [1], "seeds"), Param("dataset", "str", "norman_like", "screen"), Param("fast", "bool", False, ""))
    )
    command = layout.rerun_command("chapter", {"seeds": [1, 2]}, schema)
    import shlex

    words = shlex.split(command.replace("\\\n", " "))
    assert words[:4] == ["python", "-m", "helpers", "run"] and words[4] == "chapter"
    given = dict(zip(words[6::3], words[7::3]))
    assert {k: parse_value(v) for k, v in given.items() if k != "DIR"} == {"seeds": [1, 2], "dataset": "norman_like", "fast": False}
    assert words[-2:] == ["--out", "DIR"]


@pytest.fixture
def notebooks(tmp_path, monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1\noutput_dir = '.'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell("from IPython.display import Markdown, display"),
        nbformat.v4.new_code_cell("display(Markdown(f'x is **{x}**'))"),
        nbformat.v4.new_code_cell("open('tiny.results.csv', 'w').write('dataset\\n'); x * 2"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "tiny.ipynb")
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", folder)
    return folder


def test_the_runner_lays_out_the_page_and_reruns_it_exactly(notebooks, tmp_path):
    out = tmp_path / "out"
    run_notebook("tiny", {"x": 21}, out)
    nb = json.loads((out / "tiny.ipynb").read_text())
    tags = [c["metadata"].get("tags", []) for c in nb["cells"]]
    assert "remove-cell" in tags[0] and "remove-cell" in tags[1]  # parameters and papermill's injected copy
    assert tags[2] == ["hide-input"] and tags[3] == ["remove-input"] and tags[4] == ["hide-input"]
    footer = nb["cells"][-1]
    assert footer["cell_type"] == "markdown" and footer["metadata"]["tags"] == [layout.FOOTER_TAG]
    text = "".join(footer["source"])
    assert "{download}`tiny.results.csv <tiny.results.csv>`" in text
    assert "python -m helpers run tiny \\\n    -p x 21 \\\n    --out DIR" in text
    # the command in the footer gives the same page again
    run_notebook("tiny", {"x": 21}, tmp_path / "again")
    again = json.loads((tmp_path / "again" / "tiny.ipynb").read_text())
    assert [c["source"] for c in again["cells"]] == [c["source"] for c in nb["cells"]]
    assert sum(layout.FOOTER_TAG in c["metadata"].get("tags", []) for c in again["cells"]) == 1


def test_a_print_sent_in_pieces_is_one_output(notebooks, tmp_path):
    # the kernel's output thread may send "text" and its "\n" as two messages when the machine is busy;
    # flushing between the writes forces that split, and the page must still hold one output per stream
    nb = nbformat.read(notebooks / "tiny.ipynb", as_version=4)
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import sys, time\nfor part in ('one', ' two', '\\n'):\n    sys.stdout.write(part); sys.stdout.flush(); time.sleep(0.3)"
        )
    )
    nbformat.write(nb, notebooks / "tiny.ipynb")
    run_notebook("tiny", {"x": 2}, tmp_path / "out")
    cell = [c for c in json.loads((tmp_path / "out" / "tiny.ipynb").read_text())["cells"] if "time.sleep" in "".join(c["source"])][0]
    assert [(o["output_type"], o["name"], "".join(o["text"])) for o in cell["outputs"]] == [("stream", "stdout", "one two\n")]


def test_api_pages_are_the_generated_ones_and_in_the_table_of_contents():
    from helpers.book.api import API_PAGES, page_markdown
    from helpers.book.runner import ROOT, toc_files

    pages = toc_files()
    for stem in API_PAGES:
        assert (ROOT / "book" / f"{stem}.md").read_text() == page_markdown(stem), f"book/{stem}.md is stale: regenerate it"
        assert f"book/{stem}" in pages


def test_api_targets_find_the_documented_name_wherever_an_object_is_imported_from():
    from helpers.book.api import api_target, documented_members
    from helpers.models import LinearModel
    from helpers.models.linear import LinearModel as Defined

    assert LinearModel is Defined
    assert api_target("helpers.models.linear.LinearModel") == "helpers.models.LinearModel"  # defined in .linear, documented in models
    assert api_target("helpers.data.changes") == "helpers.data.changes"
    assert api_target("helpers.data.Split.subset") == "helpers.data.Split.subset"  # a documented method
    assert api_target("helpers.benchmarks.systema") == "helpers.benchmarks.systema"  # a documented module
    assert api_target("helpers.no_such_thing") is None and api_target("helpers.published.cole2026") is None
    assert "changes" in documented_members("helpers.data")  # __all__
    assert "bootstrap_error" in documented_members("helpers.stats.bootstrap")  # no __all__: its own public functions


def test_code_spans_naming_documented_objects_become_links_outside_code_blocks():
    from helpers.book.api import link_api_names

    text = "Use `helpers.models.linear.LinearModel` or `helpers.data.changes()`; not `helpers.nope`, ``literal``.\n```\n`helpers.data.changes`\n```"
    assert link_api_names(text) == (
        "Use {py:obj}`helpers.models.linear.LinearModel <helpers.models.LinearModel>` or "
        "{py:obj}`helpers.data.changes() <helpers.data.changes>`; not `helpers.nope`, ``literal``.\n```\n`helpers.data.changes`\n```"
    )
    assert (
        link_api_names("{py:obj}`helpers.data.changes <helpers.data.changes>`") == "{py:obj}`helpers.data.changes <helpers.data.changes>`"
    )


def test_performance_tables_from_timings_gears_provenance_and_benchmark_files(tmp_path):
    from helpers.book.performance import comparison_tables, gears_timings, notebook_timings

    table = notebook_timings({"jobs": 2, "notebooks": {"a": 30.0, "b": 90.0}})
    assert table["notebook"].tolist() == ["b", "a"] and table["share of the summed time"].tolist() == ["75%", "25%"]
    assert notebook_timings({}).empty

    folder = tmp_path / "gears" / "double_perturbations" / "x"
    folder.mkdir(parents=True)
    record = {"model": "GEARS", "chapter": "double_perturbations", "dataset": "x", "seed": 2, "hyperparameters": {"epochs": 3}}
    (folder / "seed2.json").write_text(json.dumps({**record, "wall_seconds": {"fit": 10.0, "predict": 2.5, "total": 12.5}}))
    (folder / "other.json").write_text(json.dumps({"model": "GEARS"}))  # no timings: not a fit record
    gears = gears_timings(tmp_path / "gears")
    assert gears[["seed", "epochs", "fit (s)", "total (s)"]].to_dict("records") == [
        {"seed": 2, "epochs": 3, "fit (s)": 10.0, "total (s)": 12.5}
    ]
    assert gears_timings(tmp_path / "missing").empty

    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "latest.json").write_text(json.dumps({"steps": []}))
    runs = {
        "ours": {"seconds": 5.0, "cpu_seconds": 4.0, "peak_mb": 100, "steps_seconds": {"read": 1.0, "unused": 0.0}},
        "theirs": {"seconds": 9.0},
    }
    (bench / "vs.json").write_text(json.dumps({"when": "today", "cpus": 2, "runs": runs}))
    (caption, table, steps) = comparison_tables(bench)["vs"]
    assert set(comparison_tables(bench)) == {"vs"}
    assert caption == "measured today; 2 CPUs"
    assert table["wall time (s)"].tolist() == [5.0, 9.0]
    assert steps.index.tolist() == ["read"] and steps.loc["read", "ours"] == 1.0


def _book_texts():
    from helpers.book.runner import NOTEBOOK_DIR, ROOT

    for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "markdown":
                yield path.name, "".join(cell["source"])
    for path in sorted((ROOT / "book").glob("*.md")) + [ROOT / "README.md"]:
        yield path.name, path.read_text()


def test_every_command_and_parameter_the_book_shows_exists():
    """`python -m helpers run NAME -p KEY VALUE` in any page or the README: NAME is a notebook, KEY its parameter,
    VALUE allowed (files named as examples need not exist); a bare `-p KEY` belongs to some notebook."""
    import re
    import shlex

    from helpers.book.runner import NOTEBOOK_DIR, notebook_schema
    from helpers.errors import ParameterError

    schemas = {p.stem: notebook_schema(p.stem) for p in NOTEBOOK_DIR.glob("*.ipynb")}
    every_name = {n for s in schemas.values() for n in s.names}
    commands, bare, problems = 0, 0, []
    for source, text in _book_texts():
        text = text.replace("\\\n", " ")
        for match in re.finditer(r"helpers run ([a-z_]+)((?: +-p +\S+ +(?:'[^']*'|\"[^\"]*\"|[^\s`]+))+)", text):
            name, rest = match.group(1), match.group(2)
            commands += 1
            if name not in schemas:
                problems.append(f"{source}: no notebook {name!r}")
                continue
            words = shlex.split(rest)
            for flag, key, value in zip(words[0::3], words[1::3], words[2::3]):
                assert flag == "-p"
                if key not in schemas[name].names:
                    problems.append(f"{source}: {name} has no parameter {key!r}")
                    continue
                try:
                    schemas[name][key].check(parse_value(value))
                except ParameterError as err:
                    if "no such file" not in str(err):
                        problems.append(f"{source}: {err}")
        for key in re.findall(r"`-p ([a-z_]+)\b", text):
            bare += 1
            if key not in every_name:
                problems.append(f"{source}: `-p {key}` is no notebook's parameter")
    assert commands >= 3 and bare >= 2, (commands, bare)
    assert not problems, "\n".join(problems)


def test_the_rerun_command_of_every_notebook_is_accepted_by_its_schema():
    import shlex

    from helpers.book.runner import NOTEBOOK_DIR, notebook_schema

    for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):
        schema = notebook_schema(path.stem)
        words = shlex.split(layout.rerun_command(path.stem, {}, schema).replace("\\\n", " "))
        given = {key: parse_value(value) for flag, key, value in zip(words[5::3], words[6::3], words[7::3]) if flag == "-p"}
        assert list(given) == schema.names, path.stem
        checked = schema.check({k: v for k, v in given.items() if not (schema[k].kind == "path" and v == schema[k].default)})
        for name, value in checked.items():
            default = schema[name].check(schema[name].default) if schema[name].default is not None else None
            assert value == default, (path.stem, name, value, default)


def test_scale_table_reads_the_measurements_and_judges_only_the_full_screen(tmp_path):
    import json

    from helpers.book.performance import scale_table

    record = {
        "scale": 1.0,
        "screen": {"cells": 2_000_000, "x_bytes": 21.5e9},
        "disk_read": {"mb_per_s": 200.0},
        "pseudobulk": {"seconds": 150.0, "peak_over_baseline_mb": 900.0, "mb_per_s": 143.3, "read_share_of_disk_speed": 0.7165},
        "targets": {"pseudobulk_seconds": 120, "pseudobulk_peak_over_baseline_mb": 2048},
    }
    (tmp_path / "scale.json").write_text(json.dumps(record))
    small = {
        **record,
        "scale": 0.01,
        "sweep": {"runs": 8, "workers": 2, "sequential_seconds": 100.0, "local_cluster_seconds": 60.0, "speedup": 5 / 3},
    }
    (tmp_path / "scale_scale0.01.json").write_text(json.dumps(small))
    table = scale_table(tmp_path)
    full = table[table["file"] == "scale.json"].set_index("measurement")
    assert list(table["file"].unique()) == ["scale.json", "scale_scale0.01.json"], "the full screen comes first"
    assert full.loc["streamed pseudobulk: wall time", ["value", "target", "met"]].tolist() == ["150.0 s", "< 120.0 s", "no"]
    assert full.loc["streamed pseudobulk: memory over the baseline", "met"] == "yes"
    assert full.loc["screen size on disk (X)", "value"] == "21.50 GB"
    assert full.loc["streamed pseudobulk: share of the disk's speed", "value"] == "72 %"
    assert "sweep speed-up (sequential / cluster)" not in full.index
    part = table[table["file"] == "scale_scale0.01.json"].set_index("measurement")
    assert part.loc["streamed pseudobulk: wall time", "met"] == "the target is for the full screen"
    assert part.loc["sweep speed-up (sequential / cluster)", "value"] == "1.67 x"
    assert scale_table(tmp_path / "none").empty
