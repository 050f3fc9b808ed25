"""Prior biological knowledge shipped with the suite (Gene Ontology annotations)."""

from ..data.annotations import GENE_GO_PATH, load_gene_go
from .go_features import genes_without_go, go_embedding, go_membership, go_similarity

__all__ = ["GENE_GO_PATH", "genes_without_go", "go_embedding", "go_membership", "go_similarity", "load_gene_go"]
