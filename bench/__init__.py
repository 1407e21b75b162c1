"""Benchmarks: what routing in Python costs over native cfg script (see bench/README.md)."""
