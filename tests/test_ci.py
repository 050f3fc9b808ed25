"""What CI runs: every test is selected by exactly one of the Makefile's test targets, and .ci/run calls them all."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

from _pytest.mark.expression import Expression

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("test", "test-slow", "test-gears")


def _recipe(target: str) -> str:
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", text, flags=re.M)
    assert match, f"the Makefile has no target {target}"
    return match.group(1)


def _marker_expression(target: str) -> str:
    words = shlex.split(_recipe(target).replace("$(PY)", "python"))
    assert "pytest" in words, f"make {target} does not run pytest"
    options = words[words.index("pytest") + 1 :]
    assert "-m" in options, f"make {target} runs pytest without a marker expression"
    return options[options.index("-m") + 1]


def test_every_kind_of_test_is_run_by_exactly_one_target():
    markers = re.findall(r'^\s*"(\w+):', (ROOT / "pyproject.toml").read_text().split("markers = [", 1)[1].split("]", 1)[0], flags=re.M)
    assert set(markers) == {"slow", "gears"}, markers
    expressions = {t: Expression.compile(_marker_expression(t)) for t in TARGETS}
    for n in range(len(markers) + 1):
        for present in itertools.combinations(markers, n):
            chosen = [t for t, e in expressions.items() if e.evaluate(lambda name, present=present: name in present)]
            assert len(chosen) == 1, f"a test marked {list(present) or 'with no marker'} is run by {chosen or 'no target'}"


def test_ci_runs_the_linter_and_every_test_target():
    lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    calls = [line for line in lines if line.startswith("make ")]
    assert calls == ["make lint"] + [f"make {t}" for t in TARGETS], calls
    assert "set -euo pipefail" in lines, "a failing step must fail CI"
