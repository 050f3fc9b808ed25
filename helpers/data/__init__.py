"""The data layer: canonical screens, readers, the dataset registry, pseudobulk, splits and gene sets."""

from .canonical import CONTROL, canonical_perturbation, log_normalise, target_genes, validate
from .genesets import highly_variable_genes, top_expressed_genes
from .pseudobulk import as_pseudobulk, changes, control_profile, profiles, pseudobulk
from .readers import read_h5ad
from .registry import cache_dir, dataset_info, fetch, list_datasets, load_dataset
from .splits import Split, double_perturbation_split, gears_simulation_split, kfold_split

__all__ = [
    "CONTROL",
    "as_pseudobulk",
    "Split",
    "cache_dir",
    "canonical_perturbation",
    "changes",
    "control_profile",
    "dataset_info",
    "double_perturbation_split",
    "fetch",
    "gears_simulation_split",
    "highly_variable_genes",
    "kfold_split",
    "list_datasets",
    "load_dataset",
    "log_normalise",
    "profiles",
    "pseudobulk",
    "read_h5ad",
    "target_genes",
    "top_expressed_genes",
    "validate",
]
