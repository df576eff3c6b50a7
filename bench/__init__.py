"""Benchmarks: every figure is reported as a ratio against a baseline measured in the same run."""
