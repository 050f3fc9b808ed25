"""Benchmarks layer: the evaluation engine and one module per chapter, named like its notebook."""
