"""Benchmarking support shared by `python -m fastconv bench` and benchmarks/."""
