"""Benchmarks that are part of the product: ``rise bench learning`` (the paper's Table I per task)."""
