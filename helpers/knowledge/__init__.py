"""Prior biological knowledge shipped with the suite (Gene Ontology annotations)."""

from .go import GENE_GO_PATH, load_gene_go

__all__ = ["GENE_GO_PATH", "load_gene_go"]
