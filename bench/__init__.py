"""Benchmarks: busway's bus path against the same work done directly."""
