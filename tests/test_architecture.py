"""The package's layers: no module imports from a layer above its own (lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "helpers"

#: Lowest first. A module may import from its own layer and the layers below it.
LAYERS = [
    {"errors", "console", "results", "params", "published", "resources"},
    {"data"},
    {"stats"},
    {"knowledge"},
    {"models"},
    {"metrics"},
    {"plots"},
    {"benchmarks"},
    {"book", "__main__"},
]


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    for level, names in enumerate(LAYERS):
        if top in names:
            return level
    raise AssertionError(f"{module}: its top-level name {top!r} is in no layer; add it to LAYERS")


def _module_name(path: Path) -> str:
    parts = ["helpers", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every suite module imported anywhere in ``path`` (function bodies too), resolved to absolute names."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("helpers"):
                if target == "helpers" or (not node.module and node.level):
                    # "from . import x" or "from helpers import x": each name is a module
                    found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
                else:
                    found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("helpers")]
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_is_in_a_layer():
    assert len(MODULES) > 50, "the package's modules were not found"
    for path in MODULES:
        if _module_name(path) != "helpers":  # the package's own __init__ imports nothing
            _layer(_module_name(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_up_the_layers(path):
    name = _module_name(path)
    own = _layer(name) if name != "helpers" else 0
    upward = [(line, target) for line, target in _imports(path) if target != "helpers" and _layer(target) > own]
    assert not upward, f"{name} (layer {own}) imports from higher layers: " + ", ".join(
        f"{target} (line {line}, layer {_layer(target)})" for line, target in upward
    )


def test_the_check_sees_a_violation(tmp_path):
    # the checker itself: an upward import in a lower layer is found, a downward one is not
    fake = PACKAGE / "data" / "_layer_probe.py"
    try:
        fake.write_text("from ..metrics import rmse\nfrom ..errors import DataError\n")
        imports = [target for _, target in _imports(fake)]
        assert imports == ["helpers.metrics", "helpers.errors"]
        assert _layer("helpers.metrics") > _layer("helpers.data._layer_probe") >= _layer("helpers.errors")
    finally:
        fake.unlink()
