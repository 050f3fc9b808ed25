"""Where the suite finds its files: a checkout's folders, else the installed package's copies.

An installed package is simulated by pointing ``resources.PROJECT_ROOT`` at a folder
without the project's ``pyproject.toml``; the real installation is tested in
``test_packaging.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import helpers
from helpers import resources
from helpers.book import cli, runner
from helpers.errors import CheckoutRequired

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(helpers.__file__).resolve().parent


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Pretend the package is installed: the folder above it is a bare site-packages."""
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.setattr(resources, "PROJECT_ROOT", site)
    return site


def test_checkout_finds_its_own_folders():
    assert resources.checkout_root() == ROOT and resources.in_checkout()
    assert resources.data_dir() == ROOT / "data"
    assert resources.notebook_dir() == ROOT / "notebooks"
    assert (resources.data_dir() / "norman2019_subset.h5ad").is_file()
    assert (resources.notebook_dir() / "data.ipynb").is_file()
    assert runner.NOTEBOOK_DIR == ROOT / "notebooks"


def test_installed_package_uses_its_package_data(installed):
    assert resources.checkout_root() is None and not resources.in_checkout()
    assert resources.data_dir() == PACKAGE / "_data"
    assert resources.notebook_dir() == PACKAGE / "_notebooks"


@pytest.mark.parametrize(
    "text, counts",
    [
        ('[project]\nname = "perturbation-benchmarks"\n', True),
        ('[project]\nname = "someone-else"\n', False),  # another project's file beside the package
        ("[tool.black]\n", False),
        ("not toml [", False),
    ],
)
def test_a_checkout_is_recognised_by_the_projects_pyproject(installed, text, counts):
    (installed / "pyproject.toml").write_text(text)
    assert (resources.checkout_root() == installed) is counts


def test_user_cache_dir_is_poochs(monkeypatch, tmp_path):
    pooch = pytest.importorskip("pooch")
    for xdg in (None, str(tmp_path / "xdg")):
        if xdg is None:
            monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        else:
            monkeypatch.setenv("XDG_CACHE_HOME", xdg)
        assert resources.user_cache_dir() == Path(pooch.os_cache(resources.DISTRIBUTION))


def test_gears_env_dir_order(installed, monkeypatch, tmp_path):
    monkeypatch.delenv(resources.GEARS_ENV_VAR, raising=False)
    assert resources.gears_env_dir() == resources.user_cache_dir() / "venv-gears"
    monkeypatch.setattr(resources, "PROJECT_ROOT", ROOT)
    assert resources.gears_env_dir() == ROOT / ".venv-gears"
    monkeypatch.setenv(resources.GEARS_ENV_VAR, str(tmp_path / "gears"))
    assert resources.gears_env_dir() == tmp_path / "gears"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(resources.GEARS_ENV_VAR, "~/g")
    assert resources.gears_env_dir() == tmp_path / "g"


def test_run_writes_into_the_current_folder_when_installed(installed, monkeypatch, tmp_path):
    assert runner.default_out_dir() == Path.cwd()
    monkeypatch.chdir(tmp_path)
    assert runner.default_out_dir() == tmp_path
    monkeypatch.setattr(resources, "PROJECT_ROOT", ROOT)
    assert runner.default_out_dir() == runner.BOOK_DIR == ROOT / "book"


def test_book_needs_a_checkout(installed, capsys):
    with pytest.raises(CheckoutRequired, match="needs a checkout of the repository"):
        runner.toc_files()
    assert cli.main(["book", "--skip-run"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: `python -m helpers book` needs a checkout of the repository: ")
    assert "\n" not in err and "python -m helpers run NAME --out DIR" in err
