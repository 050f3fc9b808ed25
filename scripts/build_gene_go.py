#!/usr/bin/env python3
"""Build ``data/gene_go.tsv.gz`` (gene symbol -> Gene Ontology terms) from Bioconductor's org.Hs.eg.db.

The suite ships the built file, so nothing needs this script at run time. To rebuild it::

    apt-get install r-bioc-org.hs.eg.db      # Debian package with the SQLite database
    python scripts/build_gene_go.py

The output has one line per gene, ``symbol<TAB>GO:...;GO:...`` (terms sorted, all three
ontologies, every evidence code), after a header of ``#`` lines recording the source
database and its dates.
"""

from __future__ import annotations

import argparse
import gzip
import sqlite3
from collections import defaultdict
from pathlib import Path

DEFAULT_DB = "/usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "gene_go.tsv.gz"


def build(db: str, out: Path) -> int:
    if not Path(db).exists():
        raise SystemExit(f"{db} not found: install it with `apt-get install r-bioc-org.hs.eg.db` or pass --db")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    meta = dict(con.execute("select name, value from metadata"))
    terms: dict[str, set[str]] = defaultdict(set)
    for symbol, go_id in con.execute("select g.symbol, go.go_id from gene_info g join go on g._id = go._id"):
        terms[symbol].add(go_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the gzip bytes identical between rebuilds of the same database.
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        header = [
            "# gene symbol -> Gene Ontology terms (BP, MF, CC; all evidence codes)",
            "# source: Bioconductor org.Hs.eg.db (Debian package r-bioc-org.hs.eg.db), table go joined with gene_info",
            f"# Entrez Gene source date: {meta.get('GOEGSOURCEDATE', '?')}; GO ontology date: {meta.get('GOSOURCEDATE', '?')}",
            f"# genes: {len(terms)}; gene-term pairs: {sum(len(v) for v in terms.values())}",
        ]
        lines = header + [f"{g}\t{';'.join(sorted(t))}" for g, t in sorted(terms.items())]
        gz.write(("\n".join(lines) + "\n").encode())
    return len(terms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    n = build(args.db, args.out)
    print(f"wrote {args.out} ({n} genes, {args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
