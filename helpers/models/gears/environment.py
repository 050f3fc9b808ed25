"""GEARS' own Python environment: exact pins, built on first use, found again later.

GEARS 0.1.2 (``cell-gears``) needs ``scipy<1.15`` and therefore ``numpy<2.3``, which cannot live
beside the suite's pins, so it runs in a virtual environment of its own, :data:`GEARS_ENV_DIR`:
``$GEARS_ENV_DIR`` if set, else ``.venv-gears`` at the root of a checkout, else ``venv-gears`` in
the user cache folder (``~/.cache/perturbation-benchmarks/venv-gears``) for an installed package
(:func:`helpers.resources.gears_env_dir`). :func:`ensure_gears_environment` builds it with
:data:`GEARS_REQUIREMENTS`; :func:`find_gears_python` finds it; ``python -m helpers.models.gears
build|status`` does both from the command line.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path

from ...resources import gears_env_dir

#: Where the GEARS environment is built (read once, at import): ``$GEARS_ENV_DIR``, else
#: ``.venv-gears`` in a checkout (gitignored), else ``venv-gears`` in the user cache folder.
GEARS_ENV_DIR = gears_env_dir()
#: Set to a Python interpreter that has GEARS installed to use it instead of :data:`GEARS_ENV_DIR`.
PYTHON_ENV_VAR = "GEARS_PYTHON"
#: Set to 1 to let the tests build ``.venv-gears`` (about 1.8 GB, a minute with the local torch wheel).
BUILD_ENV_VAR = "GEARS_BUILD_ENV"
_MARKER = "helpers-gears-env.json"


#: Exact pins of the GEARS environment (``pip freeze`` of a working install, Python 3.11).
#: cell-gears declares neither torch_geometric (which it imports) nor an upper bound on
#: scipy (1.15+ breaks ``GEARS.__init__``); scipy 1.14.1 needs numpy < 2.3.
GEARS_REQUIREMENTS = (
    "cell-gears==0.1.2",
    "torch==2.13.0",
    "torch-geometric==2.8.1",
    "scipy==1.14.1",
    "numpy==2.2.6",
    "pandas==2.3.3",
    "anndata==0.12.19",
    "scanpy==1.11.5",
    "scikit-learn==1.9.1",
    "networkx==3.6.1",
    "dcor==0.7",
    "h5py==3.16.0",
    "tqdm==4.70.1",
    "numba==0.68.1",
    "llvmlite==0.50.0",
    "matplotlib==3.11.2",
    "seaborn==0.13.2",
    "statsmodels==0.15.0",
    "umap-learn==0.5.12",
    "pynndescent==0.7.0",
    "requests==2.34.2",
    "aiohttp==3.14.5",
    "zarr==3.1.6",
    "numcodecs==0.16.6",
    "joblib==1.6.0",
    "threadpoolctl==3.8.0",
    "sympy==1.14.0",
    "filelock==4.2.11",
    "fsspec==2026.9.0",
    "jinja2==3.1.6",
    "psutil==7.2.2",
    "pyparsing==3.3.3",
    "packaging==26.3",
    "natsort==8.4.0",
    "legacy-api-wrap==1.5",
    "session-info2==0.4.1",
    "patsy==1.0.3",
    "formulaic==1.2.2",
    "xxhash==4.1.0",
    "typing-extensions==4.16.0",
)


class GEARSEnvironmentError(RuntimeError):
    """The GEARS environment is missing, or could not be built."""


def _env_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def find_gears_python(env_dir: Path | str | None = None) -> Path | None:
    """The Python interpreter with GEARS, if one is ready; ``None`` otherwise.

    ``$GEARS_PYTHON`` wins if set; otherwise :data:`GEARS_ENV_DIR` counts as ready when it was
    completely built with the current :data:`GEARS_REQUIREMENTS`.
    """
    override = os.environ.get(PYTHON_ENV_VAR)
    if override:
        return Path(override)
    env_dir = Path(env_dir) if env_dir is not None else GEARS_ENV_DIR
    marker = env_dir / _MARKER
    try:
        recorded = json.loads(marker.read_text())["requirements"]
    except (OSError, ValueError, KeyError):
        return None
    if recorded != list(GEARS_REQUIREMENTS) or not _env_python(env_dir).exists():
        return None
    return _env_python(env_dir)


def gears_environment_status(env_dir: Path | str | None = None) -> str:
    """One line saying whether GEARS can run here, and how to make it so."""
    python = find_gears_python(env_dir)
    if python is not None:
        return f"GEARS environment ready: {python}"
    return (
        f"the GEARS environment is not built ({Path(env_dir or GEARS_ENV_DIR)}); build it once with "
        "`python -m helpers.models.gears build` (about 1.8 GB; needs the package registry), or point "
        f"${PYTHON_ENV_VAR} at a Python with cell-gears 0.1.2"
    )


def ensure_gears_environment(env_dir: Path | str | None = None, python: str | None = None, quiet: bool = False) -> Path:
    """Return the Python interpreter of the GEARS environment, building it if needed.

    The environment is a virtual environment at ``env_dir`` (default :data:`GEARS_ENV_DIR`)
    with exactly :data:`GEARS_REQUIREMENTS`. A marker file written last
    records the pins; an environment without it (interrupted build) or with other pins is
    rebuilt from scratch. A lock file serialises concurrent builds. If ``$GEARS_PYTHON``
    is set, that interpreter is used and nothing is built.

    Parameters
    ----------
    env_dir
        Where to build; default :data:`GEARS_ENV_DIR`.
    python
        Interpreter that creates the environment (Python 3.11); default: this one.
    quiet
        Do not print the one-line build notice.
    """
    ready = find_gears_python(env_dir)
    if ready is not None:
        if os.environ.get(PYTHON_ENV_VAR) and not ready.exists():
            raise GEARSEnvironmentError(f"${PYTHON_ENV_VAR}={ready} does not exist.")
        return ready
    env_dir = (Path(env_dir) if env_dir is not None else GEARS_ENV_DIR).resolve()
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    # Lock and log live in the temp folder, keyed by the environment's path, not in the project.
    key = hashlib.sha1(str(env_dir).encode()).hexdigest()[:12]
    scratch = Path(tempfile.gettempdir())
    with open(scratch / f"gears-env-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ready = find_gears_python(env_dir)  # another process may have built it meanwhile
        if ready is not None:
            return ready
        if env_dir.exists():
            shutil.rmtree(env_dir)
        if not quiet:
            print(f"Building the GEARS environment in {env_dir} (once; about a minute and 1.8 GB) ...", file=sys.stderr, flush=True)
        log = scratch / f"gears-env-{key}-build.log"
        steps = [
            [python or sys.executable, "-m", "venv", str(env_dir)],
            [str(_env_python(env_dir)), "-m", "pip", "install", "--no-input", *GEARS_REQUIREMENTS],
            [str(_env_python(env_dir)), "-c", "import gears, torch_geometric, scipy; print(scipy.__version__)"],
        ]
        with open(log, "w") as out:
            for cmd in steps:
                out.write("$ " + " ".join(cmd) + "\n")
                out.flush()
                result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
                if result.returncode != 0:
                    out.close()
                    tail = "".join(deque(open(log, errors="replace"), maxlen=15))
                    raise GEARSEnvironmentError(
                        f"building the GEARS environment failed at `{' '.join(cmd[:4])} ...` (exit {result.returncode}). "
                        f"Full log: {log}. Last lines:\n{tail}"
                    )
        (env_dir / _MARKER).write_text(json.dumps({"requirements": list(GEARS_REQUIREMENTS)}, indent=1))
        log.unlink(missing_ok=True)
    return _env_python(env_dir)


def _main(argv: list[str]) -> int:
    if argv[1:] == ["build"]:
        print(ensure_gears_environment())
        return 0
    if argv[1:] == ["status"]:
        print(gears_environment_status())
        return 0
    print("usage: python -m helpers.models.gears build|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
