"""Benchmarks behind `fleetstream bench`: workloads, measurements and the docs/benchmarks.md report."""
