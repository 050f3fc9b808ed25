"""The package as others install it: declared dependencies, the wheel's contents, an install outside the checkout.

The fast tests read ``pyproject.toml``, ``environment.yml`` and the sources. The slow one
builds the wheel, installs it into a fresh virtual environment in a temporary folder (the
dependencies come from the environment running the tests, without a network install) and
runs ``python -m helpers datasets`` and ``python -m helpers run data`` from yet another folder.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "helpers"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEPENDENCIES = PYPROJECT["project"]["dependencies"]
DEV_DEPENDENCIES = PYPROJECT["project"]["optional-dependencies"]["dev"]
#: Runs in GEARS' own environment (helpers.models.gears.environment), whose pins are
#: GEARS_REQUIREMENTS: it imports gears, torch_geometric, ... which the suite does not depend on.
OWN_ENVIRONMENT = {PACKAGE / "models" / "gears" / "_worker.py"}
#: The two data-only packages that pyproject.toml maps onto the top-level folders.
DATA_PACKAGES = {"helpers._data": "data", "helpers._notebooks": "notebooks"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pin(text: str) -> tuple[str, str]:
    """``"name==version"`` -> (name, version); anything else fails, naming the entry."""
    match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)", text.strip())
    assert match, f"{text!r} in pyproject.toml: pin an exact version (name==version)"
    return match.group(1), match.group(2)


def _top_level_imports(source: str) -> list[tuple[int, str]]:
    """(line, top-level module) of every absolute import in ``source``, function bodies included."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def _notebook_code(path: Path) -> str:
    """The code cells of a notebook, IPython magics and shell lines left out."""
    cells = json.loads(path.read_text())["cells"]
    lines = [line for c in cells if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines()]
    return "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))


def _third_party_imports() -> dict[str, list[str]]:
    """Top-level third-party module -> where it is imported (the package and the notebooks it ships)."""
    sources = [(p, p.read_text()) for p in sorted(PACKAGE.rglob("*.py")) if p not in OWN_ENVIRONMENT and "__pycache__" not in p.parts]
    sources += [(p, _notebook_code(p)) for p in sorted((ROOT / "notebooks").glob("*.ipynb"))]
    found: dict[str, list[str]] = {}
    for path, source in sources:
        for line, module in _top_level_imports(source):
            if module in sys.stdlib_module_names or module == "helpers":
                continue
            found.setdefault(module, []).append(f"{path.relative_to(ROOT)}:{line}")
    return found


def test_every_imported_distribution_is_declared():
    declared = {_canonical(_pin(r)[0]) for r in DEPENDENCIES}
    providers = metadata.packages_distributions()
    imports = _third_party_imports()
    assert {"numpy", "torch", "requests", "threadpoolctl"} <= set(imports), "the import scan found too little"
    problems = []
    for module, places in sorted(imports.items()):
        dists = {_canonical(d) for d in providers.get(module, [])}
        if not dists:
            problems.append(f"{module} (imported at {places[0]}) is provided by no installed distribution")
        elif not dists & declared:
            problems.append(
                f"{module} (imported at {places[0]}) comes from {'/'.join(sorted(dists))}, which [project].dependencies does not declare"
            )
    assert not problems, "add the distributions to pyproject.toml and environment.yml with exact pins: " + "; ".join(problems)


def test_pins_are_exact_and_installed():
    for text in DEPENDENCIES + DEV_DEPENDENCIES:
        name, version = _pin(text)
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name} is declared but not installed; run `pip install -e '.[dev]'`")
        # a local build tag such as torch's +cpu satisfies the plain pin (PEP 440)
        assert installed.split("+")[0] == version, f"{text} is declared, {installed} is installed"


def test_environment_yml_pins_equal_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = {p for p in pip if not p.startswith("-e")}
    declared = set(DEPENDENCIES + DEV_DEPENDENCIES)
    assert pins == declared, (
        "environment.yml's pip section and pyproject.toml's dependencies (with dev) must list the same pins; "
        f"only in environment.yml: {sorted(pins - declared)}, only in pyproject.toml: {sorted(declared - pins)}"
    )
    assert len(pip) == len(pins) + 1, "environment.yml lists a pin twice, or lacks `-e .`"


def test_every_python_folder_is_a_listed_package():
    """pyproject.toml lists the packages explicitly (see its comment); a folder left out would be missing from the wheel."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(folders - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == DATA_PACKAGES
    stale = sorted(listed - folders - set(DATA_PACKAGES))
    assert not stale, f"[tool.setuptools] packages in pyproject.toml lists packages that do not exist: {stale}"
    assert (PACKAGE / "py.typed").is_file()


def test_a_build_in_the_checkout_leaves_only_ignored_files():
    """``pip install .`` / ``pip wheel .`` write build/, dist/ and the egg-info into the checkout."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    generated = [
        "build/lib/helpers/__init__.py",
        "dist/perturbation_benchmarks-0.1.0-py3-none-any.whl",
        "perturbation_benchmarks.egg-info/PKG-INFO",
    ]
    proc = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", *generated], capture_output=True, text=True, check=False)
    ignored = set(proc.stdout.split())
    assert ignored == set(generated), f"add to .gitignore: {sorted(set(generated) - ignored)}"


# --- the wheel, installed outside the checkout ----------------------------------------

_NOT_SOURCE = {
    ".git",
    ".venv",
    ".venv-gears",
    "_build",
    "build",
    "dist",
    "__pycache__",
    ".pytest_cache",
    ".ipynb_checkpoints",
    ".cache",
    ".ruff_cache",
}


def _shipped(folder: str, pattern: str) -> list[str]:
    """Files of a top-level folder that the wheel must carry, relative to it."""
    base = ROOT / folder
    return sorted(p.relative_to(base).as_posix() for p in base.glob(pattern) if p.is_file() and not p.name.startswith("."))


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would put the checkout on the fresh interpreter's path."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}}
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra)
    return env


def _run(cmd, cwd: Path, env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    if ok and proc.returncode != 0:
        pytest.fail(f"`{' '.join(map(str, cmd))}` failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.mark.slow
def test_wheel_installs_and_runs_the_data_notebook_outside_the_checkout(tmp_path):
    if ROOT in tmp_path.parents:
        pytest.skip("the temporary folder lies inside the checkout")
    pytest.importorskip("setuptools", reason="building the wheel without build isolation needs setuptools")
    env = _clean_env(PERTURB_DATA_CACHE=str(tmp_path / "cache"), GEARS_ENV_DIR="")

    # Build from a copy of the sources: an in-tree build would leave build/ and stale files behind.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=lambda _, names: [n for n in names if n in _NOT_SOURCE or n.endswith(".egg-info")])
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            str(source),
            "-w",
            tmp_path / "wheels",
        ],
        tmp_path,
        env,
    )
    (wheel,) = (tmp_path / "wheels").glob("perturbation_benchmarks-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"helpers/_data/{n}" for n in _shipped("data", "**/*")} | {
        f"helpers/_notebooks/{n}" for n in _shipped("notebooks", "*.ipynb")
    }
    expected |= {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts} | {"helpers/py.typed"}
    assert {"helpers/_data/norman2019_subset.h5ad", "helpers/_notebooks/data.ipynb"} <= expected
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"

    # A fresh venv sees this environment's packages through a plain path line: unlike
    # site.addsitedir, a .pth line does not run the .pth files there, so the editable
    # install's finder (which would import the checkout's helpers) stays inactive.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path, env).stdout.strip())
    deps = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site / "_test_dependencies.pth").write_text("".join(f"{p}\n" for p in deps))
    _run(
        [python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "--disable-pip-version-check", "-q", wheel],
        tmp_path,
        env,
    )

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = (
        "import json, helpers, helpers.resources as r, helpers.book.runner as run, helpers.data.registry as reg, helpers.data.annotations as ann;"
        "print(json.dumps({'helpers': helpers.__file__, 'checkout': str(r.checkout_root()), 'data': str(reg.DATA_DIR), 'go': str(ann.GENE_GO_PATH),"
        "'notebooks': str(run.NOTEBOOK_DIR), 'out': str(run.default_out_dir()), 'gears': str(r.gears_env_dir())}))"
    )
    where = json.loads(_run([python, "-c", probe], elsewhere, env).stdout)
    installed = site / "helpers"
    assert Path(where["helpers"]) == installed / "__init__.py", "the checkout's helpers was imported, not the wheel's"
    assert where["checkout"] == "None"
    assert Path(where["data"]) == Path(where["go"]).parent == installed / "_data"
    assert Path(where["notebooks"]) == installed / "_notebooks"
    assert Path(where["out"]) == elsewhere
    assert site not in Path(where["gears"]).parents

    listing = _run([python, "-m", "helpers", "datasets"], elsewhere, env).stdout
    assert "norman2019_subset" in listing and "yes (shipped)" in listing

    out = tmp_path / "out"
    done = _run([python, "-m", "helpers", "run", "data", "--out", out, "--quiet"], elsewhere, env)
    assert f"-> {out / 'data.ipynb'}" in done.stdout
    executed = json.loads((out / "data.ipynb").read_text())
    assert executed["metadata"]["papermill"]["input_path"] == str(installed / "_notebooks" / "data.ipynb")
    printed = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "3,375 cells x 500 genes" in printed  # the embedded Norman subset was loaded

    # The kernel read the installed copy of the data: without it the notebook fails, naming it;
    # with no --out the partial notebook lands in the current folder.
    hidden = installed / "_data" / "norman2019_subset.h5ad"
    hidden.rename(hidden.with_suffix(".hidden"))
    failed = _run([python, "-m", "helpers", "run", "data", "--quiet"], elsewhere, env, ok=False)
    assert failed.returncode == 1
    assert f"{hidden} does not exist" in failed.stderr and f"partial notebook at {elsewhere / 'data.ipynb'}" in failed.stderr

    book = _run([python, "-m", "helpers", "book"], elsewhere, env, ok=False)
    assert book.returncode == 1 and "needs a checkout of the repository" in book.stderr
    assert book.stderr.strip().count("\n") == 0
