"""Benchmarks. Not part of the installed package: run them from a checkout, e.g.
``python -m bench.upload``."""
