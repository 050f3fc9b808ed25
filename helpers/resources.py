"""Where the suite's files are: the shipped data, the notebooks, the book, GEARS' environment.

The package runs either from a checkout of the repository (``make``, ``pip install -e .``
or ``PYTHONPATH``) or installed from a wheel (``pip install .``). A checkout is recognised
by the project's own ``pyproject.toml`` in the folder above ``helpers/``
(:func:`checkout_root`); an installed package has none there. Each resource is looked up
in one order:

shipped data (:func:`data_dir`) and notebooks (:func:`notebook_dir`)
    1. in a checkout: its top-level ``data/`` and ``notebooks/``;
    2. installed: the copies installed with the package, ``helpers/_data/`` and
       ``helpers/_notebooks/``, found with :mod:`importlib.resources`. The wheel carries
       the same two folders as package data (``[tool.setuptools]`` in ``pyproject.toml``).

the book (``_toc.yml``, ``book/``)
    only in a checkout; ``python -m helpers book`` refuses to run elsewhere.

GEARS' virtual environment (:func:`gears_env_dir`)
    1. ``$GEARS_ENV_DIR`` if set;
    2. in a checkout: ``.venv-gears`` at its root (gitignored);
    3. installed: ``venv-gears`` in the user cache folder (:func:`user_cache_dir`, e.g.
       ``~/.cache/perturbation-benchmarks/venv-gears``), never inside ``site-packages``.

This is a bottom-layer module: it imports nothing from the rest of the package.
"""

from __future__ import annotations

import os
import sys
import tomllib
from importlib import resources as _resources
from pathlib import Path

#: The folder above the package: the repository root in a checkout, ``site-packages`` when installed.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: The distribution name in ``pyproject.toml``; also the name of the user cache folder.
DISTRIBUTION = "perturbation-benchmarks"
#: Environment variable that moves GEARS' virtual environment.
GEARS_ENV_VAR = "GEARS_ENV_DIR"

_PACKAGE = __name__.split(".")[0]
#: Folders of the installed package that hold the copies of ``data/`` and ``notebooks/``.
INSTALLED_DATA = "_data"
INSTALLED_NOTEBOOKS = "_notebooks"


def checkout_root() -> Path | None:
    """The repository root if the package runs from a checkout, else ``None``.

    A checkout has the project's ``pyproject.toml`` (``name = "perturbation-benchmarks"``)
    beside the ``helpers`` folder; the name check keeps a stray file in ``site-packages``
    from counting.
    """
    try:
        name = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return PROJECT_ROOT if name == DISTRIBUTION else None


def in_checkout() -> bool:
    """Whether the package runs from a checkout of the repository (see :func:`checkout_root`)."""
    return checkout_root() is not None


def _installed(folder: str) -> Path:
    # A package installed by pip lies in a plain folder, so files() is a pathlib.Path; the data
    # are opened by h5py and gzip, which need real file paths, not a Traversable.
    return Path(str(_resources.files(_PACKAGE).joinpath(folder)))


def data_dir() -> Path:
    """The folder of the shipped data files.

    The checkout's ``data/``, or ``helpers/_data/`` of the installed package.
    """
    root = checkout_root()
    return root / "data" if root is not None else _installed(INSTALLED_DATA)


def notebook_dir() -> Path:
    """The folder of the source notebooks that ``python -m helpers run NAME`` executes.

    The checkout's ``notebooks/``, or ``helpers/_notebooks/`` of the installed package.
    """
    root = checkout_root()
    return root / "notebooks" if root is not None else _installed(INSTALLED_NOTEBOOKS)


def user_cache_dir() -> Path:
    """The user cache folder of the suite, e.g. ``~/.cache/perturbation-benchmarks``.

    The same folder as ``pooch.os_cache("perturbation-benchmarks")`` (platformdirs' rules),
    computed here so that this module needs no third-party import: ``$XDG_CACHE_HOME`` or
    ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%\\<name>\\<name>\\Cache``
    on Windows.
    """
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / DISTRIBUTION / DISTRIBUTION / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / DISTRIBUTION
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not base.strip():
        base = str(Path.home() / ".cache")
    return Path(base) / DISTRIBUTION


def gears_env_dir() -> Path:
    """Where GEARS' virtual environment lives: ``$GEARS_ENV_DIR``, else ``.venv-gears`` in a
    checkout, else ``venv-gears`` in :func:`user_cache_dir`."""
    override = os.environ.get(GEARS_ENV_VAR, "").strip()
    if override:
        return Path(override).expanduser().absolute()
    root = checkout_root()
    return root / ".venv-gears" if root is not None else user_cache_dir() / "venv-gears"


__all__ = [
    "DISTRIBUTION",
    "GEARS_ENV_VAR",
    "PROJECT_ROOT",
    "checkout_root",
    "data_dir",
    "gears_env_dir",
    "in_checkout",
    "notebook_dir",
    "user_cache_dir",
]
