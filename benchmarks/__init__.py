"""Benchmarks of the course: ``python -m benchmarks [--quick] [--only NAME ...]`` writes RESULTS.md and RESULTS.json."""
