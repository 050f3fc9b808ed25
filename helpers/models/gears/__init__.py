"""GEARS (Roohani et al. 2024) run for real in its own environment: the model, its layout, its environment."""

from .environment import (
    BUILD_ENV_VAR,
    GEARS_ENV_DIR,
    GEARS_REQUIREMENTS,
    PYTHON_ENV_VAR,
    GEARSEnvironmentError,
    ensure_gears_environment,
    find_gears_python,
    gears_environment_status,
)
from .layout import gears_condition, gears_go_edges, to_gears_anndata
from .model import GEARSModel, GEARSWorkerError

__all__ = [
    "BUILD_ENV_VAR",
    "GEARS_ENV_DIR",
    "GEARS_REQUIREMENTS",
    "PYTHON_ENV_VAR",
    "GEARSEnvironmentError",
    "GEARSModel",
    "GEARSWorkerError",
    "ensure_gears_environment",
    "find_gears_python",
    "gears_condition",
    "gears_environment_status",
    "gears_go_edges",
    "to_gears_anndata",
]
