"""Gene Ontology annotations of human genes, from the file shipped in ``data/``.

``data/gene_go.tsv.gz`` is built by ``scripts/build_gene_go.py`` from Bioconductor's
org.Hs.eg.db (NCBI Entrez Gene annotations of 2022-09-12, GO release 2022-07-01):
about 20,700 gene symbols, each with its set of GO terms (all three ontologies).
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

from ..resources import data_dir

GENE_GO_PATH = data_dir() / "gene_go.tsv.gz"


@lru_cache(maxsize=2)
def _read(path: str) -> dict[str, frozenset[str]]:
    out = {}
    with gzip.open(path, "rt") as handle:
        for line in handle:
            if line.startswith("#") or not line.strip():
                continue
            gene, terms = line.rstrip("\n").split("\t")
            out[gene] = frozenset(terms.split(";")) if terms else frozenset()
    return out


def load_gene_go(path: str | Path | None = None) -> dict[str, frozenset[str]]:
    """Map gene symbol -> frozenset of GO term IDs (e.g. ``'GO:0005634'``).

    Parameters
    ----------
    path
        A file in the same format; default: the shipped ``data/gene_go.tsv.gz``.
    """
    path = Path(path) if path is not None else GENE_GO_PATH
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; rebuild it with `python scripts/build_gene_go.py`.")
    return dict(_read(str(path)))
